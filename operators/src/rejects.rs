//! Rows that steps reject, and the layout of the rejects output (`sink.rejects`).
//!
//! A `cast` with `on_error = "reject"` rejects a row holding a value it cannot cast; a
//! `check` with `on_fail = "reject"` rejects a row that breaks a row-level expectation.
//! Either takes the row out of the flow (later steps never see it) and hands it, with its
//! reason, to the engine ([`crate::BoundStep::apply_rejecting`]).
//!
//! The rejects output has one schema for every rejecting step of a job, whatever each
//! step's input schema: one column per column name of those inputs, in order of first
//! appearance, each a nullable string holding the value as Arrow displays it (a null stays
//! null), then [`STEP_COLUMN`] (the step's 1-based number), [`OP_COLUMN`] and
//! [`REASON_COLUMN`]. Text, because a rejected row is one whose values did not fit the types
//! the job wanted, and because the same name may have another type at another step (a
//! `check` after a `cast` sees the cast column).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int32Array, StringArray, StringBuilder, new_null_array};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::OpError;

/// The column of a rejected row's step number.
pub const STEP_COLUMN: &str = "_reject_step";
/// The column of a rejected row's step op (`cast`, `check`).
pub const OP_COLUMN: &str = "_reject_op";
/// The column of why a row was rejected.
pub const REASON_COLUMN: &str = "_reject_reason";

/// The rows one step rejected from one batch, as they reached it, and why.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub rows: RecordBatch,
    /// One reason per row of `rows`.
    pub reasons: StringArray,
}

/// Splits a step's rows by `rejected` (true: the row is rejected; no nulls): the rows of
/// `output` (what the step made of its input) it keeps and, if any row is rejected, those of
/// `input` (as they reached the step) it rejects, with their reasons (`reason` of each
/// rejected row's index). `output` and `input` have the same rows.
pub fn split_rows(
    output: &RecordBatch,
    input: &RecordBatch,
    rejected: &BooleanArray,
    reason: impl Fn(usize) -> String,
) -> Result<(RecordBatch, Option<Rejected>), OpError> {
    if rejected.true_count() == 0 {
        return Ok((output.clone(), None));
    }
    let kept = arrow::compute::not(rejected)?;
    let reasons: StringArray =
        (0..rejected.len()).filter(|&row| rejected.value(row)).map(|row| Some(reason(row))).collect();
    let rejected = Rejected { rows: filter_record_batch(input, rejected)?, reasons };
    Ok((filter_record_batch(output, &kept)?, Some(rejected)))
}

/// The schema of a job's rejects output and the conversion of rejected rows to it.
#[derive(Debug, Clone)]
pub struct RejectsLayout {
    schema: SchemaRef,
}

impl RejectsLayout {
    /// The layout for rejecting steps whose inputs are `inputs`. A data column named like
    /// one of the reject columns is refused.
    pub fn new<'a>(inputs: impl IntoIterator<Item = &'a SchemaRef>) -> Result<RejectsLayout, OpError> {
        let mut names: Vec<String> = Vec::new();
        for schema in inputs {
            for field in schema.fields() {
                if [STEP_COLUMN, OP_COLUMN, REASON_COLUMN].contains(&field.name().as_str()) {
                    return Err(OpError::InvalidSpec(format!(
                        "column '{}' has the name of a column the rejects output adds; rename it",
                        field.name()
                    )));
                }
                if !names.contains(field.name()) {
                    names.push(field.name().clone());
                }
            }
        }
        let mut fields: Vec<Field> = names.iter().map(|name| Field::new(name, DataType::Utf8, true)).collect();
        fields.push(Field::new(STEP_COLUMN, DataType::Int32, false));
        fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(REASON_COLUMN, DataType::Utf8, false));
        Ok(RejectsLayout { schema: Arc::new(Schema::new(fields)) })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The rows `rejected` by step `step` (`op`) as rows of the rejects output.
    pub fn rows(&self, step: usize, op: &str, rejected: &Rejected) -> Result<RecordBatch, OpError> {
        let rows = rejected.rows.num_rows();
        let data_columns = self.schema.fields().len() - 3;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(data_columns + 3);
        for field in &self.schema.fields()[..data_columns] {
            columns.push(match rejected.rows.column_by_name(field.name()) {
                Some(column) => as_text(column)?,
                None => new_null_array(&DataType::Utf8, rows),
            });
        }
        let step = i32::try_from(step).map_err(|_| OpError::Internal(format!("step number {step} out of range")))?;
        columns.push(Arc::new(Int32Array::from(vec![step; rows])));
        columns.push(Arc::new(StringArray::from(vec![op; rows])));
        columns.push(Arc::new(rejected.reasons.clone()));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// A column's values as text, nulls kept.
fn as_text(column: &ArrayRef) -> Result<ArrayRef, OpError> {
    if matches!(column.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        return Ok(cast(column, &DataType::Utf8)?);
    }
    let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?;
    let mut text = StringBuilder::with_capacity(column.len(), column.len() * 8);
    for row in 0..column.len() {
        match column.is_valid(row) {
            true => text.append_value(formatter.value(row).to_string()),
            false => text.append_null(),
        }
    }
    Ok(Arc::new(text.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Float64Array, Int64Array};

    #[test]
    fn rejected_rows_become_text_under_the_union_of_the_inputs() {
        let first = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("age", DataType::Utf8, true),
        ]));
        let second = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("age", DataType::Int64, true),
            Field::new("amount", DataType::Float64, true),
        ]));
        let layout = RejectsLayout::new([&first, &second]).unwrap();
        let names: Vec<&str> = layout.schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "age", "amount", STEP_COLUMN, OP_COLUMN, REASON_COLUMN]);
        let batch = RecordBatch::try_new(
            second,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(Int64Array::from(vec![Some(40), None, Some(7)])),
                Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN), None])),
            ],
        )
        .unwrap();
        let mask = BooleanArray::from(vec![false, true, true]);
        let (kept, rejected) = split_rows(&batch, &batch, &mask, |row| format!("row {row}")).unwrap();
        assert_eq!(kept.num_rows(), 1);
        let rows = layout.rows(3, "check", &rejected.unwrap()).unwrap();
        let text = |i: usize| rows.column(i).as_string::<i32>().iter().map(|v| v.map(String::from)).collect::<Vec<_>>();
        assert_eq!(text(0), [Some("2".to_string()), Some("3".into())]);
        assert_eq!(text(1), [None, Some("7".to_string())]);
        assert_eq!(text(2), [Some("NaN".to_string()), None]);
        assert_eq!(text(5), [Some("row 1".to_string()), Some("row 2".into())]);
        assert_eq!(rows.column(3).as_primitive::<arrow::datatypes::Int32Type>().values().to_vec(), [3, 3]);
    }

    #[test]
    fn a_column_named_like_a_reject_column_is_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new(REASON_COLUMN, DataType::Utf8, true)]));
        assert!(RejectsLayout::new([&schema]).unwrap_err().to_string().contains("rename it"));
    }
}
