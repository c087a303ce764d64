//! `bucketize`: numbers to the index of the bucket they fall in, between fixed boundaries
//! (NumPy's `digitize`, Spark's `Bucketizer` with open ends).
//!
//! ```toml
//! [[step]]
//! op = "bucketize"
//! columns = ["age"]
//! boundaries = [18, 30, 50, 65]   # strictly increasing
//! # output = "{col}_bucket"       # keep the raw column (see `output_columns`)
//! ```
//!
//! With boundaries `b_0 < b_1 < … < b_{n-1}`, a value `x` becomes the number of boundaries
//! at or below it: `0` for `x < b_0`, `i` for `b_{i-1} <= x < b_i`, `n` for `x >= b_{n-1}`,
//! exactly `numpy.digitize(x, boundaries)` (`right=False`), as a `Float64`. A null, or a
//! NaN (which has no bucket), becomes null. Integer columns are compared as `Float64`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::fit_columns::{as_f64, numeric_columns, replace_columns, schema_with_types};
use crate::{BoundStep, OpError};

/// `op = "bucketize"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketizeSpec {
    pub columns: Vec<String>,
    pub boundaries: Vec<f64>,
    /// Keep the input columns; see [`crate::output_columns`].
    #[serde(default)]
    pub output: Option<String>,
}

/// The most boundaries a step may have.
const MAX_BOUNDARIES: usize = 10_000;

impl BucketizeSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<Bucketize, OpError> {
        let increasing = self.boundaries.windows(2).all(|pair| pair[0] < pair[1]);
        if self.boundaries.is_empty()
            || self.boundaries.len() > MAX_BOUNDARIES
            || !increasing
            || self.boundaries.iter().any(|b| b.is_nan())
        {
            return Err(OpError::InvalidSpec(format!(
                "boundaries must be 1 to {MAX_BOUNDARIES} strictly increasing numbers"
            )));
        }
        let indices = numeric_columns(&self.columns, input, "bucketize")?;
        let output = schema_with_types(input, &indices.iter().map(|&i| (i, DataType::Float64)).collect::<Vec<_>>());
        Ok(Bucketize { indices, boundaries: self.boundaries.clone(), output })
    }
}

/// A `bucketize` step bound to its input.
#[derive(Debug)]
pub struct Bucketize {
    indices: Vec<usize>,
    boundaries: Vec<f64>,
    output: SchemaRef,
}

impl BoundStep for Bucketize {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mut replacements = Vec::with_capacity(self.indices.len());
        for &index in &self.indices {
            let values = as_f64(batch.column(index))?;
            let buckets: Float64Array = values
                .iter()
                .map(|value| value.filter(|x| !x.is_nan()).map(|x| self.boundaries.partition_point(|&b| b <= x) as f64))
                .collect();
            replacements.push((index, Arc::new(buckets) as ArrayRef));
        }
        replace_columns(&batch, &self.output, replacements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{Field, Float64Type, Schema};

    #[test]
    fn buckets_as_numpy_digitize_with_nulls_and_nan_null() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        let values = vec![Some(-5.0), Some(18.0), Some(29.9), Some(30.0), Some(99.0), None, Some(f64::NAN)];
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(values))]).unwrap();
        let spec = BucketizeSpec { columns: vec!["x".into()], boundaries: vec![18.0, 30.0, 65.0], output: None };
        let out = spec.bind(&schema).unwrap().apply(batch).unwrap();
        let got: Vec<Option<f64>> = out.column(0).as_primitive::<Float64Type>().iter().collect();
        assert_eq!(got, vec![Some(0.0), Some(1.0), Some(1.0), Some(2.0), Some(3.0), None, None]);
        let bad = BucketizeSpec { boundaries: vec![3.0, 3.0], ..spec };
        assert!(bad.bind(&schema).unwrap_err().to_string().contains("strictly increasing"));
    }
}
