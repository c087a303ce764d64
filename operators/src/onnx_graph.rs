//! Reading an ONNX model's graph: its nodes (inputs, outputs, attributes) and initializers.
//! The `explain` step uses it to recognise models it can explain exactly from their
//! parameters (linear models, affine maps, tree ensembles).
//!
//! ONNX models are Protocol Buffers (`onnx.proto`, proto2). The few messages and fields
//! Weir reads are declared below with `prost`'s derive (no code generator needed) and
//! decoded by it: unknown fields are skipped, so any valid model reads; a malformed one, or
//! one nested deeper than prost's recursion limit, is an error, never a panic. They are then
//! turned into the plain types here, with every tensor's values widened to `f64`.

use proto::Message;

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<Attribute>,
}

/// One attribute of a node (the kinds the linear and tree ops use).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attribute {
    pub name: String,
    pub f: Option<f32>,
    pub i: Option<i64>,
    pub s: Option<Vec<u8>>,
    pub t: Option<Tensor>,
    pub floats: Vec<f32>,
    pub ints: Vec<i64>,
    pub strings: Vec<Vec<u8>>,
}

/// A tensor (an initializer or a tensor attribute) of a numeric type, its values widened to
/// `f64`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub values: Vec<f64>,
}

/// The graph: nodes in order and initializers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub initializers: Vec<Tensor>,
}

impl Graph {
    pub fn initializer(&self, name: &str) -> Option<&Tensor> {
        self.initializers.iter().find(|t| t.name == name)
    }
}

impl Node {
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }
}

/// The nodes of the model's main graph, in order.
pub fn nodes(model: &[u8]) -> Result<Vec<Node>, String> {
    Ok(graph(model)?.nodes)
}

/// The model's main graph.
pub fn graph(model: &[u8]) -> Result<Graph, String> {
    let model = proto::ModelProto::decode(model).map_err(|error| format!("not an ONNX model: {error}"))?;
    let graph = model.graph.unwrap_or_default();
    Ok(Graph {
        nodes: graph.node.into_iter().map(read_node).collect::<Result<_, _>>()?,
        initializers: graph.initializer.into_iter().map(read_tensor).collect::<Result<_, _>>()?,
    })
}

/// A `TensorProto` of float, double, the integer types or uint8 (its elements as `f64`).
fn read_tensor(tensor: proto::TensorProto) -> Result<Tensor, String> {
    let name = tensor.name;
    let values: Vec<f64> = if !tensor.raw_data.is_empty() {
        let raw = &tensor.raw_data;
        // TensorProto.DataType: FLOAT 1, UINT8 2, INT8 3, INT32 6, INT64 7, DOUBLE 11.
        match tensor.data_type {
            1 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()) as f64).collect(),
            11 => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())).collect(),
            2 => raw.iter().map(|&b| b as f64).collect(),
            3 => raw.iter().map(|&b| b as i8 as f64).collect(),
            6 => raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()) as f64).collect(),
            7 => raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()) as f64).collect(),
            other => return Err(format!("tensor '{name}' has data type {other}, which Weir does not read")),
        }
    } else {
        let floats = tensor.float_data.iter().map(|&v| v as f64);
        let ints = tensor.int32_data.iter().map(|&v| v as f64).chain(tensor.int64_data.iter().map(|&v| v as f64));
        floats.chain(ints).chain(tensor.double_data.iter().copied()).collect()
    };
    let dims = tensor.dims;
    let expected = dims.iter().try_fold(1usize, |count, &d| count.checked_mul(usize::try_from(d).ok()?));
    if expected != Some(values.len()) {
        return Err(format!("tensor '{name}' holds {} values for dimensions {dims:?}", values.len()));
    }
    Ok(Tensor { name, dims, values })
}

fn read_node(node: proto::NodeProto) -> Result<Node, String> {
    Ok(Node {
        op_type: node.op_type,
        domain: node.domain,
        inputs: node.input,
        outputs: node.output,
        attributes: node.attribute.into_iter().map(read_attribute).collect::<Result<_, _>>()?,
    })
}

fn read_attribute(attribute: proto::AttributeProto) -> Result<Attribute, String> {
    Ok(Attribute {
        name: attribute.name,
        f: attribute.f,
        i: attribute.i,
        s: attribute.s,
        t: attribute.t.map(read_tensor).transpose()?,
        floats: attribute.floats,
        ints: attribute.ints,
        strings: attribute.strings,
    })
}

/// The fields of `onnx.proto` that Weir reads, with their numbers there.
mod proto {
    pub use prost::Message;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "4")]
        pub op_type: String,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
        #[prost(string, tag = "7")]
        pub domain: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(float, optional, tag = "2")]
        pub f: Option<f32>,
        #[prost(int64, optional, tag = "3")]
        pub i: Option<i64>,
        #[prost(bytes = "vec", optional, tag = "4")]
        pub s: Option<Vec<u8>>,
        #[prost(message, optional, tag = "5")]
        pub t: Option<TensorProto>,
        #[prost(float, repeated, tag = "7")]
        pub floats: Vec<f32>,
        #[prost(int64, repeated, tag = "8")]
        pub ints: Vec<i64>,
        #[prost(bytes = "vec", repeated, tag = "9")]
        pub strings: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        #[prost(int32, repeated, tag = "5")]
        pub int32_data: Vec<i32>,
        #[prost(int64, repeated, tag = "7")]
        pub int64_data: Vec<i64>,
        #[prost(string, tag = "8")]
        pub name: String,
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
        #[prost(double, repeated, tag = "10")]
        pub double_data: Vec<f64>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(field: u64, wire: u64) -> Vec<u8> {
        encode_varint((field << 3) | wire)
    }

    fn encode_varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(field: u64, payload: &[u8]) -> Vec<u8> {
        [key(field, 2), encode_varint(payload.len() as u64), payload.to_vec()].concat()
    }

    #[test]
    fn tensors_read_raw_and_typed_data_and_refuse_impossible_dimensions() {
        let raw: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let dims = [key(1, 0), encode_varint(2), key(1, 0), encode_varint(3)].concat();
        let tensor = [dims.clone(), key(2, 0), encode_varint(1), bytes_field(8, b"w"), bytes_field(9, &raw)].concat();
        let model = bytes_field(7, &bytes_field(5, &tensor));
        let graph = graph(&model).unwrap();
        let w = graph.initializer("w").unwrap();
        assert_eq!((w.dims.clone(), w.values.clone()), (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        // Dimensions whose product overflows, or disagrees with the data, are errors.
        let huge = [key(1, 0), encode_varint(i64::MAX as u64), key(1, 0), encode_varint(4)].concat();
        for dims in [huge, [key(1, 0), encode_varint(5)].concat()] {
            let tensor = [dims, key(2, 0), encode_varint(1), bytes_field(9, &raw)].concat();
            assert!(graph_of(&tensor).is_err());
        }
    }

    fn graph_of(tensor: &[u8]) -> Result<Graph, String> {
        graph(&bytes_field(7, &bytes_field(5, tensor)))
    }

    #[test]
    fn reads_nodes_and_attributes_and_refuses_truncated_input() {
        let floats: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let attribute =
            [bytes_field(1, b"coefficients"), bytes_field(7, &floats), key(3, 0), encode_varint(300)].concat();
        let ints = [encode_varint(0), encode_varint(1)].concat();
        let labels = [bytes_field(1, b"classlabels_ints"), bytes_field(8, &ints)].concat();
        let node = [
            bytes_field(1, b"X"),
            bytes_field(2, b"label"),
            bytes_field(2, b"probabilities"),
            bytes_field(4, b"LinearClassifier"),
            bytes_field(7, b"ai.onnx.ml"),
            bytes_field(5, &attribute),
            bytes_field(5, &labels),
        ]
        .concat();
        let model = [key(1, 0), encode_varint(9), bytes_field(7, &bytes_field(1, &node))].concat();
        let found = nodes(&model).unwrap();
        assert_eq!(found.len(), 1);
        let node = &found[0];
        assert_eq!((node.op_type.as_str(), node.domain.as_str()), ("LinearClassifier", "ai.onnx.ml"));
        assert_eq!(node.outputs, ["label", "probabilities"]);
        let coefficients = node.attribute("coefficients").unwrap();
        assert_eq!((coefficients.floats.clone(), coefficients.i), (vec![1.5, -2.0], Some(300)));
        assert_eq!(node.attribute("classlabels_ints").unwrap().ints, [0, 1]);
        for cut in 1..model.len() {
            let _ = nodes(&model[..cut]); // never panics
        }
        assert!(nodes(&model[..model.len() - 3]).is_err());
    }
}
