//! Reading an ONNX model's graph: its nodes (inputs, outputs, attributes) and initializers.
//! The `explain` step uses it to recognise models it can explain exactly from their
//! parameters (linear models, affine maps, tree ensembles).
//!
//! ONNX models are Protocol Buffers (`onnx.proto`). Weir reads the few fields it needs
//! straight from the wire format (varints, fixed 32/64-bit values and length-delimited
//! fields, ~100 lines) rather than through a protobuf crate: the project has no protobuf
//! code generator, and ONNX Runtime, which runs the model, exposes no graph. Unknown fields
//! are skipped, so any valid model reads; a malformed one is an error, never a panic.

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
    let mut graph = Graph::default();
    // ModelProto.graph = 7; GraphProto.node = 1, .initializer = 5.
    for (field, value) in fields(model)? {
        if let (7, Value::Bytes(bytes)) = (field, value) {
            for (field, value) in fields(bytes)? {
                match (field, value) {
                    (1, Value::Bytes(node)) => graph.nodes.push(read_node(node)?),
                    (5, Value::Bytes(tensor)) => graph.initializers.push(read_tensor(tensor)?),
                    _ => {}
                }
            }
        }
    }
    Ok(graph)
}

/// A `TensorProto` of float, double, the integer types or uint8 (its elements as `f64`).
fn read_tensor(bytes: &[u8]) -> Result<Tensor, String> {
    let mut tensor = Tensor::default();
    let (mut data_type, mut raw, mut values) = (0u64, None, Vec::new());
    for (field, value) in fields(bytes)? {
        match (field, value) {
            (1, Value::Varint(v)) => tensor.dims.push(v as i64),
            (1, Value::Bytes(mut packed)) => {
                while !packed.is_empty() {
                    tensor.dims.push(varint(&mut packed)? as i64);
                }
            }
            (2, Value::Varint(v)) => data_type = v,
            (4, Value::Fixed32(v)) => values.push(f32::from_bits(v) as f64),
            (4, Value::Bytes(packed)) => values
                .extend(packed.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()) as f64)),
            (5 | 7, Value::Varint(v)) => values.push(v as i64 as f64),
            (5 | 7, Value::Bytes(mut packed)) => {
                while !packed.is_empty() {
                    values.push(varint(&mut packed)? as i64 as f64);
                }
            }
            (8, Value::Bytes(b)) => tensor.name = text(b)?,
            (9, Value::Bytes(b)) => raw = Some(b),
            (10, Value::Bytes(packed)) => {
                values.extend(packed.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())))
            }
            _ => {}
        }
    }
    if let Some(raw) = raw {
        // TensorProto.DataType: FLOAT 1, UINT8 2, INT8 3, INT32 6, INT64 7, DOUBLE 11.
        values = match data_type {
            1 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()) as f64).collect(),
            11 => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())).collect(),
            2 => raw.iter().map(|&b| b as f64).collect(),
            3 => raw.iter().map(|&b| b as i8 as f64).collect(),
            6 => raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()) as f64).collect(),
            7 => raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()) as f64).collect(),
            other => return Err(format!("tensor '{}' has data type {other}, which Weir does not read", tensor.name)),
        };
    }
    let expected = tensor.dims.iter().try_fold(1usize, |count, &d| count.checked_mul(usize::try_from(d).ok()?));
    if expected != Some(values.len()) {
        return Err(format!("tensor '{}' holds {} values for dimensions {:?}", tensor.name, values.len(), tensor.dims));
    }
    tensor.values = values;
    Ok(tensor)
}

fn read_node(bytes: &[u8]) -> Result<Node, String> {
    let mut node = Node::default();
    for (field, value) in fields(bytes)? {
        match (field, value) {
            (1, Value::Bytes(b)) => node.inputs.push(text(b)?),
            (2, Value::Bytes(b)) => node.outputs.push(text(b)?),
            (4, Value::Bytes(b)) => node.op_type = text(b)?,
            (7, Value::Bytes(b)) => node.domain = text(b)?,
            (5, Value::Bytes(b)) => node.attributes.push(read_attribute(b)?),
            _ => {}
        }
    }
    Ok(node)
}

fn read_attribute(bytes: &[u8]) -> Result<Attribute, String> {
    let mut attribute = Attribute::default();
    for (field, value) in fields(bytes)? {
        match (field, value) {
            (1, Value::Bytes(b)) => attribute.name = text(b)?,
            (2, Value::Fixed32(v)) => attribute.f = Some(f32::from_bits(v)),
            (3, Value::Varint(v)) => attribute.i = Some(v as i64),
            (4, Value::Bytes(b)) => attribute.s = Some(b.to_vec()),
            (5, Value::Bytes(b)) => attribute.t = Some(read_tensor(b)?),
            (7, Value::Fixed32(v)) => attribute.floats.push(f32::from_bits(v)),
            (7, Value::Bytes(packed)) => {
                if packed.len() % 4 != 0 {
                    return Err("a packed float list has a length that is not a multiple of 4".into());
                }
                attribute
                    .floats
                    .extend(packed.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default())));
            }
            (8, Value::Varint(v)) => attribute.ints.push(v as i64),
            (8, Value::Bytes(mut packed)) => {
                while !packed.is_empty() {
                    attribute.ints.push(varint(&mut packed)? as i64);
                }
            }
            (9, Value::Bytes(b)) => attribute.strings.push(b.to_vec()),
            _ => {}
        }
    }
    Ok(attribute)
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
}

/// A field's value on the wire.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    /// A fixed 64-bit value: no field Weir reads has one.
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

fn varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or("a varint runs past the end")?;
        *bytes = rest;
        if shift == 63 && byte > 1 {
            return Err("a varint is longer than 64 bits".into());
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint is longer than 64 bits".into())
}

fn take<'a>(bytes: &mut &'a [u8], count: usize) -> Result<&'a [u8], String> {
    if bytes.len() < count {
        return Err("a field runs past the end".into());
    }
    let (taken, rest) = bytes.split_at(count);
    *bytes = rest;
    Ok(taken)
}

/// The (field number, value) pairs of one message.
fn fields(mut bytes: &[u8]) -> Result<Vec<(u64, Value<'_>)>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut bytes)?),
            1 => {
                take(&mut bytes, 8)?;
                Value::Fixed64
            }
            2 => {
                let length = usize::try_from(varint(&mut bytes)?).map_err(|_| "a length overflows")?;
                Value::Bytes(take(&mut bytes, length)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(take(&mut bytes, 4)?.try_into().unwrap_or_default())),
            other => return Err(format!("wire type {other} is not used by ONNX")),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
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
