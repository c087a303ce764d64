//! `cast`: `columns = { age = "float64", "f_*" = "float32" }` with Arrow's cast kernels.
//!
//! `on_error = "fail"` (default) stops at the first value that cannot be represented in the
//! target type and names the column and the value; `on_error = "null"` turns such values
//! into nulls (Spark's non-ANSI behaviour). Float → integer casts truncate toward zero, as
//! in Spark and SQL; out-of-range values cannot be cast.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::{Deserialize, Serialize};

use crate::types::parse_type;
use crate::{BoundStep, OpError, selector};

/// What a value that cannot be cast becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Fail,
    Null,
}

/// `op = "cast"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CastSpec {
    /// Column name or glob → type name.
    pub columns: BTreeMap<String, String>,
    #[serde(default)]
    pub on_error: OnError,
}

impl CastSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<Cast, OpError> {
        let mut targets: Vec<Option<DataType>> = vec![None; input.fields().len()];
        for (selector, type_name) in &self.columns {
            let to = parse_type(type_name)?;
            for index in selector::resolve_one(selector, input)? {
                let field = input.field(index);
                if !can_cast_types(field.data_type(), &to) {
                    return Err(OpError::UncastableColumn {
                        column: field.name().clone(),
                        from: field.data_type().to_string(),
                        to: to.to_string(),
                    });
                }
                targets[index] = Some(to.clone());
            }
        }
        let fields: Vec<Field> = input
            .fields()
            .iter()
            .zip(&targets)
            .map(|(field, target)| match target {
                Some(to) => Field::new(field.name(), to.clone(), field.is_nullable() || self.on_error == OnError::Null),
                None => field.as_ref().clone(),
            })
            .collect();
        let casts = targets
            .into_iter()
            .enumerate()
            .filter_map(|(index, target)| {
                let to = target?;
                (input.field(index).data_type() != &to).then_some((index, to))
            })
            .collect();
        Ok(Cast {
            casts,
            on_error: self.on_error,
            output: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
        })
    }
}

#[derive(Debug)]
pub struct Cast {
    /// Column index → target type, for the columns whose type changes.
    casts: Vec<(usize, DataType)>,
    on_error: OnError,
    output: SchemaRef,
}

impl Cast {
    fn cast_column(&self, name: &str, column: &ArrayRef, to: &DataType) -> Result<ArrayRef, OpError> {
        let options = CastOptions { safe: true, ..Default::default() };
        let cast = cast_with_options(column, to, &options)?;
        if self.on_error == OnError::Fail && cast.null_count() > column.null_count() {
            let row = (0..column.len()).find(|&row| column.is_valid(row) && cast.is_null(row)).unwrap_or(0);
            let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?;
            let value = formatter.value(row).to_string();
            let value = if matches!(column.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
                format!("'{value}'")
            } else {
                value
            };
            return Err(OpError::UncastableValue { column: name.to_string(), value, to: to.to_string() });
        }
        Ok(cast)
    }
}

impl BoundStep for Cast {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mut columns = batch.columns().to_vec();
        for (index, to) in &self.casts {
            let name = self.output.field(*index).name();
            columns[*index] = self.cast_column(name, &columns[*index], to)?;
        }
        Ok(RecordBatch::try_new_with_options(
            self.output.clone(),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("age", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("41"), None, Some("x7"), Some("2.5")])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap()
    }

    fn spec(on_error: OnError) -> CastSpec {
        CastSpec {
            columns: [("age".to_string(), "float64".to_string()), ("n".to_string(), "double".to_string())].into(),
            on_error,
        }
    }

    #[test]
    fn fail_names_the_column_and_the_value() {
        let input = batch();
        let err = spec(OnError::Fail).bind(&input.schema()).unwrap().apply(input).unwrap_err();
        assert!(err.is_user_error());
        let message = err.to_string();
        assert!(message.contains("'age'") && message.contains("'x7'") && message.contains("Float64"), "{message}");
    }

    #[test]
    fn null_turns_bad_values_into_nulls_and_keeps_existing_nulls() {
        let input = batch();
        let out = spec(OnError::Null).bind(&input.schema()).unwrap().apply(input).unwrap();
        let age = out.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(age.iter().collect::<Vec<_>>(), vec![Some(41.0), None, None, Some(2.5)]);
        let n = out.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(n.values().to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
        assert!(out.schema().field(0).is_nullable());
    }

    #[test]
    fn impossible_casts_are_refused_at_bind_time() {
        let schema = Arc::new(Schema::new(vec![Field::new("d", DataType::Date32, true)]));
        let spec = CastSpec { columns: [("d".to_string(), "bool".to_string())].into(), on_error: OnError::Fail };
        assert!(spec.bind(&schema).unwrap_err().to_string().contains("'d'"));
    }
}
