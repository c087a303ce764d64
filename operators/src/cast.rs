//! `cast`: `columns = { age = "float64", "f_*" = "float32" }` with Arrow's cast kernels.
//!
//! `on_error = "fail"` (default) stops at the first value that cannot be represented in the
//! target type and names the column and the value; `on_error = "null"` turns such values
//! into nulls (Spark's non-ANSI behaviour); `on_error = "reject"` takes the rows holding such
//! values out of the output and into `sink.rejects` ([`crate::rejects`]), the reason naming
//! each column that failed and its target type, never the value. Float → integer casts truncate toward zero, as
//! in Spark and SQL; out-of-range values cannot be cast.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::{Deserialize, Serialize};

use crate::rejects::{Rejected, split_rows};
use crate::types::parse_type;
use crate::{BoundStep, OpError, selector};

/// What a value that cannot be cast becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Fail,
    Null,
    /// Set the row aside for the rejects output.
    Reject,
}

/// `op = "cast"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CastSpec {
    /// Column name or glob → type name.
    pub columns: BTreeMap<String, String>,
    #[serde(default)]
    pub on_error: OnError,
    /// Columns whose values errors must not show (masked later, or encrypted by the sink):
    /// set by [`crate::bind_steps`], never by the job.
    #[serde(skip)]
    pub hidden: Vec<String>,
    /// Keep the input columns and write the results to new ones named by this pattern
    /// (`"{col}_z"`); see [`crate::output_columns`].
    #[serde(default)]
    pub output: Option<String>,
}

impl CastSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<Cast, OpError> {
        let mut targets: Vec<Option<DataType>> = vec![None; input.fields().len()];
        for (selector, type_name) in &self.columns {
            let to = parse_type(type_name)?;
            for index in selector::resolve_one(selector, input)? {
                let field = input.field(index);
                // A timestamp names an instant: a cast to another unit keeps the column's zone.
                let to = match (field.data_type(), &to) {
                    (DataType::Timestamp(_, Some(zone)), DataType::Timestamp(unit, None)) => {
                        DataType::Timestamp(*unit, Some(zone.clone()))
                    }
                    _ => to.clone(),
                };
                if !can_cast_types(field.data_type(), &to) {
                    return Err(OpError::UncastableColumn {
                        column: field.name().clone(),
                        from: field.data_type().to_string(),
                        to: to.to_string(),
                    });
                }
                targets[index] = Some(to);
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
            hidden: self.hidden.clone(),
            input: input.clone(),
            output: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
        })
    }
}

#[derive(Debug)]
pub struct Cast {
    /// Column index → target type, for the columns whose type changes.
    casts: Vec<(usize, DataType)>,
    on_error: OnError,
    /// Columns whose values errors do not show.
    hidden: Vec<String>,
    input: SchemaRef,
    output: SchemaRef,
}

impl Cast {
    /// Casts `column`; with `on_error = "reject"`, also the rows whose value could not be cast
    /// (the cast holds a null or an overflow there).
    fn cast_column(
        &self,
        name: &str,
        column: &ArrayRef,
        to: &DataType,
    ) -> Result<(ArrayRef, Option<BooleanArray>), OpError> {
        let options = CastOptions { safe: true, ..Default::default() };
        let cast = cast_with_options(column, to, &options)?;
        // Arrow turns a finite value too large for a narrower float into an infinity; that
        // value cannot be represented either.
        let overflow = overflowed(column, &cast)?;
        let source_nulls = column.logical_nulls();
        let cast_nulls = cast.logical_nulls();
        let lost = |row: usize| {
            source_nulls.as_ref().is_none_or(|n| n.is_valid(row))
                && (cast_nulls.as_ref().is_some_and(|n| n.is_null(row))
                    || overflow.as_ref().is_some_and(|o| o.value(row)))
        };
        let Some(row) = (0..column.len()).find(|&row| lost(row)) else { return Ok((cast, None)) };
        match self.on_error {
            OnError::Null => {
                let cast = match overflow {
                    Some(overflow) => arrow::compute::nullif(&cast, &overflow)?,
                    None => cast,
                };
                return Ok((cast, None));
            }
            OnError::Reject => {
                let lost: BooleanArray = (0..column.len()).map(|row| Some(lost(row))).collect();
                return Ok((cast, Some(lost)));
            }
            OnError::Fail => {}
        }
        if self.hidden.iter().any(|hidden| hidden == name) {
            return Err(OpError::UncastableValue {
                column: name.to_string(),
                value: format!("in row {row} of the batch (not shown: the column is masked or encrypted later)"),
                to: to.to_string(),
            });
        }
        let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?;
        let value = formatter.value(row).to_string();
        let value = if matches!(column.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            format!("'{value}'")
        } else {
            value
        };
        Err(OpError::UncastableValue { column: name.to_string(), value, to: to.to_string() })
    }
}

/// For a cast to `Float32` or `Float16`: true where the source held a finite number and the
/// cast holds an infinity. `None` for other casts.
fn overflowed(column: &ArrayRef, cast: &ArrayRef) -> Result<Option<BooleanArray>, OpError> {
    if !matches!(cast.data_type(), DataType::Float32 | DataType::Float16) || !column.data_type().is_numeric() {
        return Ok(None);
    }
    let source = cast_with_options(column, &DataType::Float64, &CastOptions::default())?;
    let target = cast_with_options(cast, &DataType::Float64, &CastOptions::default())?;
    let (source, target) = (source.as_primitive::<Float64Type>(), target.as_primitive::<Float64Type>());
    Ok(Some(
        source
            .iter()
            .zip(target.iter())
            .map(|(s, t)| Some(matches!((s, t), (Some(s), Some(t)) if s.is_finite() && t.is_infinite())))
            .collect(),
    ))
}

impl BoundStep for Cast {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        Ok(self.apply_rejecting(batch)?.0)
    }

    fn apply_rejecting(&self, batch: RecordBatch) -> Result<(RecordBatch, Option<Rejected>), OpError> {
        let mut columns = batch.columns().to_vec();
        // For each column with values that could not be cast, the rows that hold one.
        let mut failed: Vec<(usize, BooleanArray)> = Vec::new();
        for (index, to) in &self.casts {
            let name = self.output.field(*index).name();
            let (cast, lost) = self.cast_column(name, &columns[*index], to)?;
            columns[*index] = cast;
            failed.extend(lost.map(|lost| (*index, lost)));
        }
        let output = RecordBatch::try_new_with_options(
            self.output.clone(),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?;
        if failed.is_empty() {
            return Ok((output, None));
        }
        let mut any = failed[0].1.clone();
        for (_, lost) in &failed[1..] {
            any = arrow::compute::or(&any, lost)?;
        }
        let reason = |row: usize| {
            failed
                .iter()
                .filter(|(_, lost)| lost.value(row))
                .map(|(index, _)| {
                    let field = self.output.field(*index);
                    format!("cannot cast '{}' to {}", field.name(), field.data_type())
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        // The kept rows leave cast; the rejected ones leave as they came.
        split_rows(&output, &batch, &any, reason)
    }

    fn rejected_schema(&self) -> Option<SchemaRef> {
        (self.on_error == OnError::Reject).then(|| self.input.clone())
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
            hidden: Vec::new(),
            output: None,
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
    fn reject_sets_aside_the_rows_it_cannot_cast_as_they_came() {
        let input = batch();
        let cast = spec(OnError::Reject).bind(&input.schema()).unwrap();
        assert_eq!(cast.rejected_schema(), Some(input.schema()));
        let (kept, rejected) = cast.apply_rejecting(input).unwrap();
        let age = kept.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(age.iter().collect::<Vec<_>>(), vec![Some(41.0), None, Some(2.5)], "a null is no failure");
        let rejected = rejected.unwrap();
        let raw = rejected.rows.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(raw.iter().collect::<Vec<_>>(), vec![Some("x7")]);
        assert_eq!(rejected.reasons.value(0), "cannot cast 'age' to Float64");
        assert!(spec(OnError::Null).bind(&batch().schema()).unwrap().rejected_schema().is_none());
    }

    #[test]
    fn impossible_casts_are_refused_at_bind_time() {
        let schema = Arc::new(Schema::new(vec![Field::new("d", DataType::Date32, true)]));
        let spec = CastSpec {
            columns: [("d".to_string(), "bool".to_string())].into(),
            on_error: OnError::Fail,
            hidden: Vec::new(),
            output: None,
        };
        assert!(spec.bind(&schema).unwrap_err().to_string().contains("'d'"));
    }

    fn one_column(array: ArrayRef) -> RecordBatch {
        RecordBatch::try_new(Arc::new(Schema::new(vec![Field::new("x", array.data_type().clone(), true)])), vec![array])
            .unwrap()
    }

    fn cast_x(to: &str, on_error: OnError) -> CastSpec {
        CastSpec {
            columns: BTreeMap::from([("x".to_string(), to.to_string())]),
            on_error,
            hidden: Vec::new(),
            output: None,
        }
    }

    #[test]
    fn a_float64_too_large_for_float32_is_not_an_infinity() {
        let input = one_column(Arc::new(Float64Array::from(vec![
            Some(1.5),
            Some(1e300),
            None,
            Some(f64::INFINITY),
            Some(f64::NAN),
        ])));
        let err = cast_x("float32", OnError::Fail).bind(&input.schema()).unwrap().apply(input.clone()).unwrap_err();
        assert!(err.to_string().contains("'x'") && err.to_string().contains("1e300"), "{err}");
        let out = cast_x("float32", OnError::Null).bind(&input.schema()).unwrap().apply(input).unwrap();
        let out = out.column(0).as_primitive::<arrow::datatypes::Float32Type>();
        assert_eq!(out.value(0), 1.5);
        assert!(out.is_null(1) && out.is_null(2), "the overflow becomes null, the null stays");
        assert!(out.value(3).is_infinite() && out.value(4).is_nan(), "infinities and NaN were representable");
    }

    #[test]
    fn an_all_null_column_casts_to_nulls() {
        let input = one_column(Arc::new(arrow::array::NullArray::new(3)));
        let out = cast_x("int64", OnError::Fail).bind(&input.schema()).unwrap().apply(input).unwrap();
        assert_eq!(out.column(0).null_count(), 3);
        assert_eq!(out.column(0).data_type(), &DataType::Int64);
    }
}
