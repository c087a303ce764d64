//! `hash_encode`: the hashing trick, like scikit-learn's `FeatureHasher(input_type="dict")`.
//!
//! ```toml
//! [[step]]
//! op = "hash_encode"
//! columns = ["city", "device", "clicks"]
//! n_features = 64            # output columns hash_0 … hash_63 (at most 1,024)
//! # alternate_sign = true
//! # output = "hash"
//! # keep_inputs = false
//! ```
//!
//! Each row is the dictionary `{column: value}` of its non-null values. A string value is
//! the feature `"column=value"` with the value 1; a number (or a boolean, as 0/1) is the
//! feature `"column"` with its own value. A feature goes to column
//! `|murmurhash3_32(feature, seed 0)| % n_features` of the output, added with the sign of
//! the hash when `alternate_sign` is on, so the columns equal scikit-learn's matrix
//! (densified) on the same rows: the same MurmurHash3, the same special case of the most
//! negative hash. Nulls are left out (scikit-learn has no null); a NaN number is added as
//! NaN. The step is stateless: nothing is fitted. The outputs are `Float64` columns
//! `{output}_0…`, appended; the input columns are dropped unless `keep_inputs = true`.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::{BoundStep, OpError};

/// The most output columns a `hash_encode` step may write: each is a dense `Float64` column,
/// so a batch of 8,192 rows holds `8 * 8192 * n_features` bytes of them (64 MiB at this
/// bound; a job definition must not be able to ask for gigabytes per batch).
pub const MAX_FEATURES: usize = 1 << 10;

fn hash_prefix() -> String {
    "hash".into()
}

/// `op = "hash_encode"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashEncodeSpec {
    pub columns: Vec<String>,
    pub n_features: usize,
    #[serde(default = "crate::fit_columns::default_true")]
    pub alternate_sign: bool,
    #[serde(default = "hash_prefix")]
    pub output: String,
    #[serde(default)]
    pub keep_inputs: bool,
}

/// How one input column turns into features.
#[derive(Debug, Clone)]
enum Input {
    /// String values: `"name=value"` with the value 1.
    Strings { index: usize, prefix: String },
    /// Numbers: the feature `name`, at a fixed output column, with the value itself.
    Numbers { index: usize, column: usize, sign: f64 },
}

impl HashEncodeSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<HashEncode, OpError> {
        if self.n_features == 0 || self.n_features > MAX_FEATURES {
            return Err(OpError::InvalidSpec(format!(
                "hash_encode: n_features must be within 1 and {MAX_FEATURES}, not {}",
                self.n_features
            )));
        }
        if self.output.is_empty() {
            return Err(OpError::InvalidSpec("hash_encode: output (the prefix of the output columns) is empty".into()));
        }
        let indices = crate::selector::resolve(&self.columns, input)?;
        let mut inputs = Vec::with_capacity(indices.len());
        for &index in &indices {
            let field = input.field(index);
            let name = field.name();
            let value_type = match field.data_type() {
                DataType::Dictionary(_, values) => values.as_ref(),
                other => other,
            };
            inputs.push(match value_type {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    Input::Strings { index, prefix: format!("{name}=") }
                }
                t if t.is_integer() || t.is_floating() || t == &DataType::Boolean => {
                    let (column, sign) = self.slot(name.as_bytes());
                    Input::Numbers { index, column, sign }
                }
                other => {
                    return Err(OpError::InvalidSpec(format!(
                        "hash_encode: column '{name}' is {other}; it takes strings, numbers and booleans"
                    )));
                }
            });
        }
        let kept: Vec<usize> = (0..input.fields().len()).filter(|i| self.keep_inputs || !indices.contains(i)).collect();
        let names: Vec<String> = (0..self.n_features).map(|i| format!("{}_{i}", self.output)).collect();
        if let Some(clash) = names.iter().find(|name| kept.iter().any(|&i| input.field(i).name() == *name)) {
            return Err(OpError::InvalidSpec(format!(
                "hash_encode: output column '{clash}' already exists in the input; choose another output prefix"
            )));
        }
        let mut fields: Vec<Field> = kept.iter().map(|&i| input.field(i).as_ref().clone()).collect();
        fields.extend(names.iter().map(|name| Field::new(name, DataType::Float64, false)));
        Ok(HashEncode {
            inputs,
            kept,
            n_features: self.n_features,
            alternate_sign: self.alternate_sign,
            output: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
        })
    }

    /// The output column and sign of a feature.
    fn slot(&self, feature: &[u8]) -> (usize, f64) {
        slot(feature, self.n_features, self.alternate_sign)
    }
}

/// scikit-learn's `_hashing_fast.transform`: the column `|h| % n` (with its special case of
/// the most negative `h`) and the sign of `h`, for `h` the signed MurmurHash3 of `feature`.
fn slot(feature: &[u8], n_features: usize, alternate_sign: bool) -> (usize, f64) {
    // Reading from a byte slice cannot fail.
    let hash = murmur3::murmur3_32(&mut std::io::Cursor::new(feature), 0).unwrap_or_default() as i32;
    let n = n_features as i64;
    let column = if hash == i32::MIN { (i64::from(i32::MAX) - (n - 1)) % n } else { i64::from(hash).abs() % n };
    let sign = if alternate_sign && hash < 0 { -1.0 } else { 1.0 };
    (column as usize, sign)
}

/// A [`HashEncodeSpec`] bound to its input schema.
#[derive(Debug)]
pub struct HashEncode {
    inputs: Vec<Input>,
    /// The input columns passed through, in order.
    kept: Vec<usize>,
    n_features: usize,
    alternate_sign: bool,
    output: SchemaRef,
}

impl BoundStep for HashEncode {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let rows = batch.num_rows();
        let mut sums = vec![vec![0.0f64; rows]; self.n_features];
        let mut feature = Vec::new();
        for input in &self.inputs {
            match input {
                Input::Strings { index, prefix } => {
                    let strings = cast(batch.column(*index), &DataType::Utf8)?;
                    let strings = strings.as_string::<i32>();
                    for (row, value) in strings.iter().enumerate() {
                        let Some(value) = value else { continue };
                        feature.clear();
                        feature.extend_from_slice(prefix.as_bytes());
                        feature.extend_from_slice(value.as_bytes());
                        let (column, sign) = slot(&feature, self.n_features, self.alternate_sign);
                        sums[column][row] += sign;
                    }
                }
                Input::Numbers { index, column, sign } => {
                    let values = cast(batch.column(*index), &DataType::Float64)?;
                    let values = values.as_primitive::<arrow::datatypes::Float64Type>();
                    let target = &mut sums[*column];
                    for (row, value) in values.iter().enumerate() {
                        // scikit-learn skips a zero value; adding it changes nothing.
                        if let Some(value) = value {
                            target[row] += sign * value;
                        }
                    }
                }
            }
        }
        let mut columns: Vec<ArrayRef> = self.kept.iter().map(|&i| batch.column(i).clone()).collect();
        columns.extend(sums.into_iter().map(|sum| Arc::new(Float64Array::from(sum)) as ArrayRef));
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Float64Type;

    /// The batch of scikit-learn's example above: `FeatureHasher(n_features=8,
    /// input_type="dict").transform([{"city": "Berlin", "n": 2.5}, {"city": "Zürich"}])` is
    /// `[[-1, 0, 0, 0, -2.5, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1]]`.
    #[test]
    fn equals_scikit_learns_feature_hasher() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("city", DataType::Utf8, true),
            Field::new("n", DataType::Float64, true),
            Field::new("id", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("Berlin"), Some("Zürich")])),
                Arc::new(Float64Array::from(vec![Some(2.5), None])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let spec: HashEncodeSpec =
            serde_json::from_value(serde_json::json!({ "columns": ["city", "n"], "n_features": 8 })).unwrap();
        let out = spec.bind(&schema).unwrap().apply(batch).unwrap();
        assert_eq!(out.schema().field(0).name(), "id");
        let row = |r: usize| (1..9).map(|c| out.column(c).as_primitive::<Float64Type>().value(r)).collect::<Vec<_>>();
        assert_eq!(row(0), [-1.0, 0.0, 0.0, 0.0, -2.5, 0.0, 0.0, 0.0]);
        assert_eq!(row(1), [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        let bad: HashEncodeSpec =
            serde_json::from_value(serde_json::json!({ "columns": ["city"], "n_features": 0 })).unwrap();
        assert!(bad.bind(&schema).is_err());
    }
}
