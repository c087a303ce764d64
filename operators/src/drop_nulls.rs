//! `drop_nulls`: remove rows with nulls (or NaN, with `nan = true`) in the selected columns
//! (all columns by default); `how = "any"` (default, like Spark's `na.drop`) or `"all"`.

use arrow::array::{Array, ArrayRef, BooleanArray, Float32Array, Float64Array, PrimitiveArray};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::boolean::{and, or};
use arrow::compute::{filter_record_batch, is_not_null};
use arrow::datatypes::{ArrowPrimitiveType, DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::{BoundStep, OpError, selector};

/// Whether a row is dropped when any or all of the selected values are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    #[default]
    Any,
    All,
}

/// `op = "drop_nulls"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropNullsSpec {
    /// Columns to look at; all columns when absent.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub how: How,
    /// Also treat floating-point NaN as missing.
    #[serde(default)]
    pub nan: bool,
}

impl DropNullsSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<DropNulls, OpError> {
        let indices = match &self.columns {
            Some(columns) => selector::resolve(columns, input)?,
            None => (0..input.fields().len()).collect(),
        };
        Ok(DropNulls { indices, how: self.how, nan: self.nan, schema: input.clone() })
    }
}

#[derive(Debug)]
pub struct DropNulls {
    indices: Vec<usize>,
    how: How,
    nan: bool,
    schema: SchemaRef,
}

impl DropNulls {
    /// True where the value is present (not null, and not NaN when `nan` is set).
    fn present(&self, column: &ArrayRef) -> Result<BooleanArray, OpError> {
        let not_null = is_not_null(column.as_ref())?;
        if !self.nan {
            return Ok(not_null);
        }
        let not_nan: Option<BooleanArray> = match column.data_type() {
            DataType::Float64 => Some(not_nan_mask(column.as_any().downcast_ref::<Float64Array>().unwrap())),
            DataType::Float32 => Some(not_nan_mask(column.as_any().downcast_ref::<Float32Array>().unwrap())),
            _ => None,
        };
        Ok(match not_nan {
            Some(mask) => and(&not_null, &mask)?,
            None => not_null,
        })
    }
}

/// True where the float is not NaN (null slots hold arbitrary values; they are masked
/// separately by the validity bitmap).
fn not_nan_mask<T>(array: &PrimitiveArray<T>) -> BooleanArray
where
    T: ArrowPrimitiveType,
    T::Native: Into<f64>,
{
    let values = array.values();
    BooleanArray::new(BooleanBuffer::collect_bool(values.len(), |i| !values[i].into().is_nan()), None)
}

impl BoundStep for DropNulls {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mut keep: Option<BooleanArray> = None;
        for &index in &self.indices {
            let column = batch.column(index);
            if column.null_count() == 0 && !self.nan {
                if self.how == How::All {
                    return Ok(batch);
                }
                continue;
            }
            let present = self.present(column)?;
            keep = Some(match (keep, self.how) {
                (None, _) => present,
                (Some(acc), How::Any) => and(&acc, &present)?,
                (Some(acc), How::All) => or(&acc, &present)?,
            });
        }
        match keep {
            None => Ok(batch),
            Some(mask) if mask.true_count() == batch.num_rows() => Ok(batch),
            Some(mask) => Ok(filter_record_batch(&batch, &mask)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("c", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3), None])),
                Arc::new(StringArray::from(vec![Some("x"), Some("y"), None, None])),
                Arc::new(Float64Array::from(vec![Some(f64::NAN), Some(1.0), Some(2.0), None])),
            ],
        )
        .unwrap()
    }

    fn ids(batch: &RecordBatch) -> Vec<Option<i64>> {
        batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap().iter().collect()
    }

    fn run(spec: DropNullsSpec) -> RecordBatch {
        let input = batch();
        spec.bind(&input.schema()).unwrap().apply(input).unwrap()
    }

    #[test]
    fn any_over_all_columns() {
        let out = run(DropNullsSpec { columns: None, how: How::Any, nan: false });
        assert_eq!(ids(&out), vec![Some(1)]);
    }

    #[test]
    fn nan_counts_as_missing_when_asked() {
        let out = run(DropNullsSpec { columns: None, how: How::Any, nan: true });
        assert_eq!(out.num_rows(), 0);
    }

    #[test]
    fn all_over_two_columns() {
        let spec = DropNullsSpec { columns: Some(vec!["a".into(), "b".into()]), how: How::All, nan: false };
        let out = run(spec);
        assert_eq!(ids(&out), vec![Some(1), None, Some(3)]);
    }
}
