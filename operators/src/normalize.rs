//! `normalize`: scale each row of some columns to unit norm, like scikit-learn's
//! `Normalizer`.
//!
//! ```toml
//! [[step]]
//! op = "normalize"
//! columns = ["tf_*"]
//! norm = "l2"            # "l1", "l2" or "max"
//! ```
//!
//! Each row's values in the named columns are divided by that row's norm over them: the sum
//! of absolute values (`l1`), the square root of the sum of squares (`l2`), or the largest
//! absolute value (`max`). A row whose norm is 0 is left as it is (scikit-learn's rule). The
//! step is stateless: nothing is fitted. Where scikit-learn refuses missing values, Weir
//! gives a row with a null in any named column nulls in all of them (SQL's rule for a
//! computation over the row), and a NaN propagates to the row's results as in NumPy. Integer
//! columns become `Float64`; float columns keep their width.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::fit_columns::{NumericColumns, as_f64, numeric_step_schema};
use crate::{BoundStep, OpError};

/// Which norm a row is divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    L1,
    #[default]
    L2,
    Max,
}

/// `op = "normalize"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeSpec {
    pub columns: Vec<String>,
    #[serde(default)]
    pub norm: Norm,
}

impl NormalizeSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<Normalize, OpError> {
        Ok(Normalize { columns: numeric_step_schema(&self.columns, input, "normalize")?, norm: self.norm })
    }
}

/// A [`NormalizeSpec`] bound to its input schema.
#[derive(Debug)]
pub struct Normalize {
    columns: NumericColumns,
    norm: Norm,
}

impl BoundStep for Normalize {
    fn output_schema(&self) -> SchemaRef {
        self.columns.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let rows = batch.num_rows();
        let inputs: Vec<Float64Array> =
            self.columns.indices.iter().map(|&index| as_f64(batch.column(index))).collect::<Result<_, _>>()?;
        let mut norms = vec![0.0f64; rows];
        for input in &inputs {
            let values = input.values();
            match self.norm {
                Norm::L1 => norms.iter_mut().zip(values.iter()).for_each(|(norm, x)| *norm += x.abs()),
                Norm::L2 => norms.iter_mut().zip(values.iter()).for_each(|(norm, x)| *norm += x * x),
                // NaN wins, as numpy's `max` of a row holding one.
                Norm::Max => norms.iter_mut().zip(values.iter()).for_each(|(norm, x)| {
                    *norm = if norm.is_nan() || x.is_nan() { f64::NAN } else { norm.max(x.abs()) }
                }),
            }
        }
        if self.norm == Norm::L2 {
            norms.iter_mut().for_each(|norm| *norm = norm.sqrt());
        }
        // scikit-learn's `_handle_zeros_in_scale`: a zero norm divides by 1.
        norms.iter_mut().filter(|norm| **norm == 0.0).for_each(|norm| *norm = 1.0);
        // A null anywhere in the row makes the whole row's results null.
        let nulls = inputs
            .iter()
            .fold(None, |nulls: Option<NullBuffer>, input| NullBuffer::union(nulls.as_ref(), input.nulls()));
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for ((input, &index), to) in inputs.iter().zip(&self.columns.indices).zip(&self.columns.output_types) {
            let scaled: Vec<f64> = input.values().iter().zip(&norms).map(|(x, norm)| x / norm).collect();
            let scaled: ArrayRef = Arc::new(Float64Array::new(scaled.into(), nulls.clone()));
            columns[index] = if to == &DataType::Float64 { scaled } else { cast(&scaled, to)? };
        }
        Ok(RecordBatch::try_new(self.columns.output.clone(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{Field, Float64Type, Int32Type, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Float64, true),
            Field::new("b", DataType::Int32, true),
            Field::new("id", DataType::Int32, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from(vec![Some(3.0), Some(0.0), None, Some(-1.0)])),
                Arc::new(arrow::array::Int32Array::from(vec![Some(-4), Some(0), Some(1), Some(1)])),
                Arc::new(arrow::array::Int32Array::from(vec![0, 1, 2, 3])),
            ],
        )
        .unwrap()
    }

    fn normalized(norm: Norm) -> Vec<Vec<Option<f64>>> {
        let spec = NormalizeSpec { columns: vec!["a".into(), "b".into()], norm };
        let input = batch();
        let out = spec.bind(&input.schema()).unwrap().apply(input).unwrap();
        assert_eq!(out.column(2).as_primitive::<Int32Type>().values().to_vec(), vec![0, 1, 2, 3]);
        (0..2).map(|c| out.column(c).as_primitive::<Float64Type>().iter().collect()).collect()
    }

    #[test]
    fn rows_are_divided_by_their_norm_and_zero_rows_stay() {
        assert_eq!(
            normalized(Norm::L2),
            [
                vec![Some(0.6), Some(0.0), None, Some(-1.0 / 2f64.sqrt())],
                vec![Some(-0.8), Some(0.0), None, Some(1.0 / 2f64.sqrt())]
            ]
        );
        assert_eq!(
            normalized(Norm::L1),
            [vec![Some(3.0 / 7.0), Some(0.0), None, Some(-0.5)], vec![Some(-4.0 / 7.0), Some(0.0), None, Some(0.5)]]
        );
        assert_eq!(
            normalized(Norm::Max),
            [vec![Some(0.75), Some(0.0), None, Some(-1.0)], vec![Some(-1.0), Some(0.0), None, Some(1.0)]]
        );
    }
}
