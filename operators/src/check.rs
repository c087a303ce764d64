//! `check`: data expectations, as dbt's tests, Great Expectations or Deequ state them.
//!
//! ```toml
//! [[step]]
//! op = "check"
//! name = "orders are sane"                 # optional: in the results and the error
//! on_fail = "fail"                         # fail (default) | warn | reject
//! not_null = ["order_id", "amount"]        # names or globs: one expectation per column
//! unique = ["order_id"]                    # one key (several columns: their combination)
//! accepted_values = { status = ["new", "paid", "shipped"] }
//! range = { amount = { min = 0, max = 10000 } }   # inclusive; either bound may be left out
//! row_count = { min = 1000 }               # rows reaching the step; min and/or max
//! expression = "amount >= discount"        # the expression language; a row breaks it when false
//! ```
//!
//! A check step passes its rows on unchanged: it only counts. Every expectation is counted
//! over the whole input of the step, across all workers and processes, and the results (one
//! per expectation: rows seen, rows breaking it, passed or not) go into the run's summary
//! and the manifest's `checks`. With `on_fail = "fail"` a failed expectation fails the run
//! before anything is committed, naming the step and each failed expectation with its
//! counts; with `"warn"` the run goes on and the results say what failed. Neither the
//! results nor the errors ever show a value, only column names and counts, so a check may
//! look at a column that a later `mask` hides.
//!
//! What breaks each expectation, for a row:
//!
//! - `not_null`: the value is null (a float NaN is a value, not a null, as in SQL and
//!   Arrow; use `range` to refuse NaN);
//! - `unique`: a row with the same key came before it, so the count is pandas'
//!   `df.duplicated(subset=key).sum()` over the rows whose key has no null (rows with a null
//!   in a key column are not checked, as in dbt's `unique`). Keys compare by value as
//!   `dedupe` compares them. The count is distributed: keys are exchanged by hash, as for
//!   `dedupe`, so no worker holds more than its share;
//! - `accepted_values`: the value is not null and not one of the list (nulls pass, as in
//!   dbt). Strings go with string columns, numbers with numeric columns (an integer column
//!   refuses `1.5`), booleans with boolean columns; a date or timestamp column takes
//!   strings, parsed as `cast` parses them;
//! - `range`: the value (of a numeric column, compared as `Float64`) is not null and is
//!   below `min`, above `max`, or NaN;
//! - `expression`: the predicate is false; a null result passes, as in SQL's `CHECK`;
//! - `row_count` counts no rows: it fails when the step sees fewer than `min` or more than
//!   `max` rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, Scalar, StringArray};
use arrow::compute::kernels::boolean::or_kleene;
use arrow::compute::kernels::cmp;
use arrow::compute::{CastOptions, cast, cast_with_options};
use arrow::datatypes::{DataType, Float64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};
use serde::{Deserialize, Serialize};

use crate::filter::{Filter, FilterSpec};
use crate::rejects::{Rejected, split_rows};
use crate::{BoundStep, OpError, selector};

/// What a failed expectation does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFail {
    /// Fail the run before it commits.
    #[default]
    Fail,
    /// Record the failure in the results and go on.
    Warn,
    /// Take the rows that break a row-level expectation out of the output, into
    /// `sink.rejects`, and go on.
    Reject,
}

impl OnFail {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFail::Fail => "fail",
            OnFail::Warn => "warn",
            OnFail::Reject => "reject",
        }
    }
}

/// One value of an `accepted_values` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AcceptedValue {
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
}

/// The bounds of a `range` expectation, both inclusive.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueBounds {
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// The bounds of a `row_count` expectation, both inclusive.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowCountBounds {
    #[serde(default)]
    pub min: Option<u64>,
    #[serde(default)]
    pub max: Option<u64>,
}

/// `op = "check"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// A name for the results and errors.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub on_fail: OnFail,
    #[serde(default)]
    pub not_null: Vec<String>,
    /// The key columns of one uniqueness expectation.
    #[serde(default)]
    pub unique: Vec<String>,
    #[serde(default)]
    pub accepted_values: BTreeMap<String, Vec<AcceptedValue>>,
    #[serde(default)]
    pub range: BTreeMap<String, ValueBounds>,
    #[serde(default)]
    pub row_count: Option<RowCountBounds>,
    #[serde(default)]
    pub expression: Option<String>,
}

/// The most values an `accepted_values` list may hold: each is one vectorised comparison
/// per batch, so the list stays a list of categories, not a table.
const MAX_ACCEPTED_VALUES: usize = 1_000;

/// The longest `name` a check step may have.
const MAX_NAME_CHARS: usize = 200;

impl CheckSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<Check, OpError> {
        if let Some(name) = &self.name
            && (name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control))
        {
            return Err(OpError::InvalidSpec(format!("`name` must be 1 to {MAX_NAME_CHARS} printable characters")));
        }
        let mut rules = Vec::new();
        for index in selector::resolve(&self.not_null, input)? {
            rules.push(RowRule { column: Some(index), test: RowTest::NotNull });
        }
        for (column, values) in &self.accepted_values {
            let index = column_index(input, column)?;
            let accepted = accepted_array(column, input.field(index).data_type(), values)?;
            rules.push(RowRule { column: Some(index), test: RowTest::AcceptedValues(accepted) });
        }
        for (column, bounds) in &self.range {
            let index = column_index(input, column)?;
            let data_type = input.field(index).data_type();
            if !data_type.is_numeric() {
                return Err(OpError::InvalidSpec(format!("range: column '{column}' is {data_type}, not a number")));
            }
            let (min, max) = (bounds.min.unwrap_or(f64::NEG_INFINITY), bounds.max.unwrap_or(f64::INFINITY));
            if bounds.min.is_none() && bounds.max.is_none() || min.is_nan() || max.is_nan() || min > max {
                return Err(OpError::InvalidSpec(format!(
                    "range of column '{column}' needs `min` and/or `max`, numbers with min <= max"
                )));
            }
            rules.push(RowRule { column: Some(index), test: RowTest::Range { min, max } });
        }
        if let Some(expression) = &self.expression {
            let filter = FilterSpec { expr: expression.clone() }.bind(input)?;
            rules.push(RowRule { column: None, test: RowTest::Expression(expression.clone(), Box::new(filter)) });
        }
        if let Some(bounds) = &self.row_count
            && (bounds.min.is_none() && bounds.max.is_none() || bounds.min > bounds.max && bounds.max.is_some())
        {
            return Err(OpError::InvalidSpec("row_count needs `min` and/or `max`, with min <= max".into()));
        }
        let unique = if self.unique.is_empty() {
            None
        } else {
            let columns = selector::resolve(&self.unique, input)?;
            let fields = columns.iter().map(|&i| SortField::new(input.field(i).data_type().clone())).collect();
            let converter = RowConverter::new(fields).map_err(|e| {
                OpError::InvalidSpec(format!("unique cannot compare the key columns {:?}: {e}", self.unique))
            })?;
            Some(UniqueKey { columns, converter })
        };
        if rules.is_empty() && unique.is_none() && self.row_count.is_none() {
            return Err(OpError::InvalidSpec(
                "a check step needs at least one of not_null, unique, accepted_values, range, row_count, expression"
                    .into(),
            ));
        }
        if self.on_fail == OnFail::Reject && (unique.is_some() || self.row_count.is_some()) {
            return Err(OpError::InvalidSpec(
                "on_fail = \"reject\" sets rows aside one by one: it takes not_null, accepted_values, range and expression, not unique or row_count (put those in a check step of their own)".into(),
            ));
        }
        Ok(Check {
            schema: input.clone(),
            name: self.name.clone(),
            on_fail: self.on_fail,
            rules: Arc::new(rules),
            unique,
            row_count: self.row_count.clone(),
        })
    }
}

fn column_index(input: &SchemaRef, column: &str) -> Result<usize, OpError> {
    input.index_of(column).map_err(|_| OpError::NoMatchingColumn {
        selector: column.to_string(),
        available: selector::column_list(input),
    })
}

/// The accepted values of `column` as an array of the column's own value type (the value
/// type of a dictionary), refusing values that the type cannot hold exactly.
fn accepted_array(column: &str, data_type: &DataType, values: &[AcceptedValue]) -> Result<ArrayRef, OpError> {
    let value_type = match data_type {
        DataType::Dictionary(_, value) => value.as_ref(),
        other => other,
    };
    let mismatch = |kind: &str| {
        OpError::InvalidSpec(format!(
            "accepted_values of column '{column}' ({data_type}): {kind} do not go with this column's type"
        ))
    };
    if values.is_empty() || values.len() > MAX_ACCEPTED_VALUES {
        return Err(OpError::InvalidSpec(format!(
            "accepted_values of column '{column}' needs 1 to {MAX_ACCEPTED_VALUES} values"
        )));
    }
    let literals: ArrayRef = if values.iter().all(|v| matches!(v, AcceptedValue::Text(_))) {
        if value_type.is_numeric() || *value_type == DataType::Boolean {
            return Err(mismatch("strings"));
        }
        Arc::new(StringArray::from_iter_values(values.iter().filter_map(|v| match v {
            AcceptedValue::Text(text) => Some(text.as_str()),
            _ => None,
        })))
    } else if values.iter().all(|v| matches!(v, AcceptedValue::Bool(_))) {
        if *value_type != DataType::Boolean {
            return Err(mismatch("booleans"));
        }
        Arc::new(BooleanArray::from(
            values.iter().map(|v| matches!(v, AcceptedValue::Bool(true))).collect::<Vec<bool>>(),
        ))
    } else if values.iter().all(|v| matches!(v, AcceptedValue::Integer(_))) {
        if !value_type.is_numeric() {
            return Err(mismatch("numbers"));
        }
        Arc::new(Int64Array::from_iter_values(values.iter().filter_map(|v| match v {
            AcceptedValue::Integer(n) => Some(*n),
            _ => None,
        })))
    } else if values.iter().all(|v| matches!(v, AcceptedValue::Integer(_) | AcceptedValue::Float(_))) {
        if !value_type.is_numeric() {
            return Err(mismatch("numbers"));
        }
        Arc::new(Float64Array::from_iter_values(values.iter().filter_map(|v| match v {
            AcceptedValue::Integer(n) => Some(*n as f64),
            AcceptedValue::Float(x) => Some(*x),
            _ => None,
        })))
    } else {
        return Err(OpError::InvalidSpec(format!(
            "accepted_values of column '{column}' mixes strings, numbers and booleans"
        )));
    };
    let strict = CastOptions { safe: false, ..Default::default() };
    let typed = cast_with_options(&literals, value_type, &strict)
        .map_err(|e| OpError::InvalidSpec(format!("accepted_values of column '{column}' ({data_type}): {e}")))?;
    // Numbers must survive the trip exactly: `1.5` is no value of an integer column.
    if value_type.is_numeric() {
        let back = cast(&typed, literals.data_type())?;
        if back.as_ref() != literals.as_ref() {
            return Err(OpError::InvalidSpec(format!(
                "accepted_values of column '{column}' ({data_type}) holds a number the column cannot hold exactly"
            )));
        }
    }
    Ok(typed)
}

/// What a row-level expectation tests.
#[derive(Debug)]
enum RowTest {
    NotNull,
    AcceptedValues(ArrayRef),
    Range {
        min: f64,
        max: f64,
    },
    /// The expression's text and its compiled predicate.
    Expression(String, Box<Filter>),
}

/// A row-level expectation: a test, on one column or (an expression) on the row.
#[derive(Debug)]
struct RowRule {
    column: Option<usize>,
    test: RowTest,
}

/// The key of a `unique` expectation.
#[derive(Debug)]
struct UniqueKey {
    columns: Vec<usize>,
    converter: RowConverter,
}

/// A `check` step bound to its input.
#[derive(Debug)]
pub struct Check {
    schema: SchemaRef,
    name: Option<String>,
    on_fail: OnFail,
    rules: Arc<Vec<RowRule>>,
    unique: Option<UniqueKey>,
    row_count: Option<RowCountBounds>,
}

/// What one worker has counted: the rows it saw and, for each row-level expectation in
/// order, the rows that break it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckCounts {
    pub rows: u64,
    pub failing: Vec<u64>,
}

impl CheckCounts {
    pub fn merge(&mut self, other: &CheckCounts) {
        self.rows += other.rows;
        for (into, add) in self.failing.iter_mut().zip(&other.failing) {
            *into += add;
        }
    }
}

/// The keys of one batch's rows for a `unique` expectation.
pub struct UniqueKeys {
    /// Row `i`'s key is `keys.row(i)`: equal keys have equal bytes.
    pub keys: Rows,
    /// Whether row `i` is checked (no key column is null).
    pub checked: Vec<bool>,
}

/// What the cluster counted for a `unique` expectation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UniqueCount {
    /// Rows whose key has no null.
    pub rows: u64,
    /// Distinct keys among them.
    pub distinct: u64,
}

/// The outcome of one expectation over the whole input of its step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// `not_null`, `unique`, `accepted_values`, `range`, `row_count` or `expression`.
    pub expectation: String,
    /// The columns it looks at (none for `row_count` and `expression`).
    pub columns: Vec<String>,
    /// Rows the step saw.
    pub rows: u64,
    /// Rows that break it (`None` for `row_count`, which tests the count itself).
    pub failing_rows: Option<u64>,
    pub passed: bool,
    /// What was found, in words, with counts and never a value.
    pub message: String,
}

impl Check {
    /// A check keeps its input as it is.
    pub fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn on_fail(&self) -> OnFail {
        self.on_fail
    }

    /// With `on_fail = "reject"`, the map step that sets aside the rows breaking an
    /// expectation, for the chain after the check's stage.
    pub fn rejecter(&self) -> Option<RejectFailing> {
        (self.on_fail == OnFail::Reject).then(|| RejectFailing {
            schema: self.schema.clone(),
            rules: self.rules.clone(),
            reasons: self.rules.iter().map(|rule| rule.reason(&self.schema)).collect(),
        })
    }

    /// Whether the step has a `unique` expectation, which the engine counts across workers.
    pub fn has_unique(&self) -> bool {
        self.unique.is_some()
    }

    /// Counts for no rows yet.
    pub fn new_counts(&self) -> CheckCounts {
        CheckCounts { rows: 0, failing: vec![0; self.rules.len()] }
    }

    /// Counts the rows of `batch` and those breaking each row-level expectation.
    pub fn fold(&self, counts: &mut CheckCounts, batch: &RecordBatch) -> Result<(), OpError> {
        counts.rows += batch.num_rows() as u64;
        for (rule, failing) in self.rules.iter().zip(counts.failing.iter_mut()) {
            *failing += rule.count_failing(batch)?;
        }
        Ok(())
    }

    /// The `unique` keys of `batch`'s rows, when the step has that expectation.
    pub fn unique_keys(&self, batch: &RecordBatch) -> Result<Option<UniqueKeys>, OpError> {
        let Some(unique) = &self.unique else { return Ok(None) };
        let columns: Vec<ArrayRef> = unique.columns.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = unique.converter.convert_columns(&columns)?;
        let checked = (0..batch.num_rows()).map(|row| columns.iter().all(|c| c.is_valid(row))).collect();
        Ok(Some(UniqueKeys { keys, checked }))
    }

    /// The result of every expectation, in the order: `not_null`, `accepted_values`,
    /// `range`, `expression` (each in the order written), then `unique`, then `row_count`.
    pub fn results(&self, counts: &CheckCounts, unique: Option<UniqueCount>) -> Vec<ExpectationResult> {
        let rows = counts.rows;
        let mut results = Vec::new();
        for (rule, &failing) in self.rules.iter().zip(&counts.failing) {
            let columns: Vec<String> = rule.column.iter().map(|&i| self.schema.field(i).name().clone()).collect();
            let (expectation, what) = match &rule.test {
                RowTest::NotNull => ("not_null", "are null".to_string()),
                RowTest::AcceptedValues(_) => ("accepted_values", "hold a value outside the accepted list".into()),
                RowTest::Range { min, max } => ("range", format!("lie outside [{min}, {max}] or are NaN")),
                RowTest::Expression(text, _) => ("expression", format!("make `{text}` false")),
            };
            let subject = columns.first().map(|c| format!(" of column '{c}'")).unwrap_or_default();
            results.push(ExpectationResult {
                expectation: expectation.into(),
                columns,
                rows,
                failing_rows: Some(failing),
                passed: failing == 0,
                message: format!("{failing} of {rows} rows{subject} {what}"),
            });
        }
        if let (Some(key), Some(count)) = (&self.unique, unique) {
            let columns: Vec<String> = key.columns.iter().map(|&i| self.schema.field(i).name().clone()).collect();
            let repeats = count.rows.saturating_sub(count.distinct);
            results.push(ExpectationResult {
                expectation: "unique".into(),
                message: format!(
                    "{repeats} of {} rows with a key repeat an earlier row's key ({} distinct keys of {})",
                    count.rows,
                    count.distinct,
                    columns.join(", ")
                ),
                columns,
                rows,
                failing_rows: Some(repeats),
                passed: repeats == 0,
            });
        }
        if let Some(bounds) = &self.row_count {
            let low = bounds.min.is_some_and(|min| rows < min);
            let high = bounds.max.is_some_and(|max| rows > max);
            let message = match (low, high) {
                (true, _) => format!("{rows} rows, fewer than the minimum {}", bounds.min.unwrap_or_default()),
                (_, true) => format!("{rows} rows, more than the maximum {}", bounds.max.unwrap_or_default()),
                _ => format!("{rows} rows, within the bounds"),
            };
            results.push(ExpectationResult {
                expectation: "row_count".into(),
                columns: vec![],
                rows,
                failing_rows: None,
                passed: !(low || high),
                message,
            });
        }
        results
    }

    /// With `on_fail = "fail"`, the error for results of which some failed: it names the
    /// step's `name` and every failed expectation with its counts.
    pub fn failure(&self, results: &[ExpectationResult]) -> Option<OpError> {
        let failed: Vec<&ExpectationResult> = results.iter().filter(|r| !r.passed).collect();
        if self.on_fail != OnFail::Fail || failed.is_empty() {
            return None;
        }
        let named = self.name.as_ref().map(|n| format!(" '{n}'")).unwrap_or_default();
        let list: Vec<String> = failed
            .iter()
            .map(|r| match r.columns.is_empty() {
                true => format!("{}: {}", r.expectation, r.message),
                false => format!("{}({}): {}", r.expectation, r.columns.join(", "), r.message),
            })
            .collect();
        Some(OpError::CheckFailed(format!(
            "check{named}: {} of {} expectations failed: {}",
            failed.len(),
            results.len(),
            list.join("; ")
        )))
    }
}

impl RowRule {
    /// The rows of `batch` that break the rule.
    fn count_failing(&self, batch: &RecordBatch) -> Result<u64, OpError> {
        match (&self.test, self.column) {
            (RowTest::NotNull, Some(column)) => Ok(batch.column(column).null_count() as u64),
            _ => Ok(self.failing(batch)?.true_count() as u64),
        }
    }

    /// Whether each row of `batch` breaks the rule (no nulls).
    fn failing(&self, batch: &RecordBatch) -> Result<BooleanArray, OpError> {
        let column = self.column.map(|i| batch.column(i));
        Ok(match (&self.test, column) {
            (RowTest::NotNull, Some(column)) => (0..column.len()).map(|row| Some(column.is_null(row))).collect(),
            (RowTest::AcceptedValues(accepted), Some(column)) => {
                let values = match column.data_type() {
                    DataType::Dictionary(_, value) => cast(column, value)?,
                    _ => column.clone(),
                };
                let mut any: Option<BooleanArray> = None;
                for i in 0..accepted.len() {
                    let equal = cmp::eq(&values, &Scalar::new(accepted.slice(i, 1)))?;
                    any = Some(match any {
                        None => equal,
                        Some(acc) => or_kleene(&acc, &equal)?,
                    });
                }
                let any = any.unwrap_or_else(|| BooleanArray::from(vec![false; values.len()]));
                (0..values.len()).map(|row| Some(values.is_valid(row) && !any.value(row))).collect()
            }
            (RowTest::Range { min, max }, Some(column)) => {
                let values = cast(column, &DataType::Float64)?;
                let values = values.as_primitive::<Float64Type>();
                values.iter().map(|x| Some(x.is_some_and(|x| !(x >= *min && x <= *max)))).collect()
            }
            (RowTest::Expression(_, filter), _) => {
                let truth = filter.mask(batch)?;
                (0..truth.len()).map(|row| Some(truth.is_valid(row) && !truth.value(row))).collect()
            }
            (_, None) => return Err(OpError::Internal("a column expectation lost its column".into())),
        })
    }

    /// How a rejected row breaks the rule, in the rejects output's reason.
    fn reason(&self, schema: &SchemaRef) -> String {
        let column = self.column.map(|i| schema.field(i).name().as_str()).unwrap_or_default();
        match &self.test {
            RowTest::NotNull => format!("not_null: '{column}' is null"),
            RowTest::AcceptedValues(_) => format!("accepted_values: '{column}' is not in the accepted list"),
            RowTest::Range { min, max } => format!("range: '{column}' is outside [{min}, {max}] or NaN"),
            RowTest::Expression(text, _) => format!("expression: {text} is false"),
        }
    }
}

/// A `check` with `on_fail = "reject"` in the step chain: it takes the rows that break one of
/// its row-level expectations out of the flow, for the rejects output (after its check stage
/// counted them).
#[derive(Debug)]
pub struct RejectFailing {
    schema: SchemaRef,
    rules: Arc<Vec<RowRule>>,
    /// The reason of each rule, in order.
    reasons: Vec<String>,
}

impl BoundStep for RejectFailing {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        Ok(self.apply_rejecting(batch)?.0)
    }

    fn apply_rejecting(&self, batch: RecordBatch) -> Result<(RecordBatch, Option<Rejected>), OpError> {
        let failing: Vec<BooleanArray> =
            self.rules.iter().map(|rule| rule.failing(&batch)).collect::<Result<_, _>>()?;
        let Some(first) = failing.first() else { return Ok((batch, None)) };
        let mut any = first.clone();
        for broken in &failing[1..] {
            any = arrow::compute::or(&any, broken)?;
        }
        let reason = |row: usize| {
            let broken = failing.iter().zip(&self.reasons).filter(|(broken, _)| broken.value(row));
            broken.map(|(_, reason)| reason.as_str()).collect::<Vec<_>>().join("; ")
        };
        split_rows(&batch, &batch, &any, reason)
    }

    fn rejected_schema(&self) -> Option<SchemaRef> {
        Some(self.schema.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("status", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(2), None, Some(5)])),
                Arc::new(StringArray::from(vec![Some("new"), Some("odd"), None, Some("paid"), Some("new")])),
                Arc::new(Float64Array::from(vec![Some(1.0), Some(f64::NAN), Some(-3.0), None, Some(50.0)])),
            ],
        )
        .unwrap()
    }

    fn spec(toml_like: serde_json::Value) -> CheckSpec {
        serde_json::from_value(toml_like).unwrap()
    }

    #[test]
    fn reject_sets_aside_the_rows_that_break_a_row_expectation_with_each_reason() {
        let batch = batch();
        let check = spec(serde_json::json!({
            "on_fail": "reject",
            "not_null": ["id"],
            "accepted_values": { "status": ["new", "paid"] },
            "range": { "amount": { "min": 0, "max": 10 } },
        }))
        .bind(&batch.schema())
        .unwrap();
        let rejecter = check.rejecter().unwrap();
        let (kept, rejected) = rejecter.apply_rejecting(batch).unwrap();
        assert_eq!(kept.num_rows(), 1);
        let rejected = rejected.unwrap();
        let reasons: Vec<&str> = rejected.reasons.iter().map(Option::unwrap).collect();
        assert_eq!(
            reasons,
            [
                "accepted_values: 'status' is not in the accepted list; range: 'amount' is outside [0, 10] or NaN",
                "range: 'amount' is outside [0, 10] or NaN",
                "not_null: 'id' is null",
                "range: 'amount' is outside [0, 10] or NaN",
            ]
        );
        assert_eq!(rejected.rows.num_rows(), 4);
    }

    #[test]
    fn reject_refuses_the_expectations_of_the_whole_input() {
        for extra in [serde_json::json!({ "unique": ["id"] }), serde_json::json!({ "row_count": { "min": 1 } })] {
            let mut spec_json = serde_json::json!({ "on_fail": "reject", "not_null": ["id"] });
            spec_json.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            let error = spec(spec_json).bind(&batch().schema()).unwrap_err().to_string();
            assert!(error.contains("reject") && error.contains("unique or row_count"), "{error}");
        }
        let warn = spec(serde_json::json!({ "on_fail": "warn", "not_null": ["id"] })).bind(&batch().schema()).unwrap();
        assert!(warn.rejecter().is_none());
    }

    #[test]
    fn counts_each_row_expectation() {
        let batch = batch();
        let check = spec(serde_json::json!({
            "not_null": ["id", "status"],
            "accepted_values": { "status": ["new", "paid"] },
            "range": { "amount": { "min": 0, "max": 10 } },
            "expression": "amount < 40",
            "row_count": { "min": 6 },
        }))
        .bind(&batch.schema())
        .unwrap();
        let mut counts = check.new_counts();
        check.fold(&mut counts, &batch).unwrap();
        let results = check.results(&counts, None);
        let failing: Vec<(&str, Option<u64>, bool)> =
            results.iter().map(|r| (r.expectation.as_str(), r.failing_rows, r.passed)).collect();
        assert_eq!(
            failing,
            vec![
                ("not_null", Some(1), false),
                ("not_null", Some(1), false),
                ("accepted_values", Some(1), false),
                // -3 and 50 outside, NaN too; the null passes.
                ("range", Some(3), false),
                // 50 breaks it; NaN < 40 is false in Arrow's order (NaN is largest); null passes.
                ("expression", Some(2), false),
                ("row_count", None, false),
            ]
        );
        let error = check.failure(&results).unwrap().to_string();
        assert!(error.contains("6 of 6 expectations failed") && error.contains("not_null(id)"), "{error}");
    }

    #[test]
    fn refuses_values_the_column_cannot_hold() {
        let schema = batch().schema();
        for (values, expected) in [
            (serde_json::json!({ "id": [1.5] }), "cannot hold exactly"),
            (serde_json::json!({ "id": ["a"] }), "strings"),
            (serde_json::json!({ "status": [1] }), "numbers"),
            (serde_json::json!({ "status": ["a", 1] }), "mixes"),
        ] {
            let error = spec(serde_json::json!({ "accepted_values": values })).bind(&schema).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        let error = spec(serde_json::json!({})).bind(&schema).unwrap_err().to_string();
        assert!(error.contains("at least one"), "{error}");
    }

    #[test]
    fn unique_keys_skip_rows_with_a_null_key() {
        let batch = batch();
        let check = spec(serde_json::json!({ "unique": ["id"], "on_fail": "warn" })).bind(&batch.schema()).unwrap();
        let keys = check.unique_keys(&batch).unwrap().unwrap();
        assert_eq!(keys.checked, vec![true, true, true, false, true]);
        assert_eq!(keys.keys.row(1), keys.keys.row(2));
        let results = check.results(&check.new_counts(), Some(UniqueCount { rows: 4, distinct: 3 }));
        assert_eq!(results[0].failing_rows, Some(1));
        // warn never fails the run.
        assert!(check.failure(&results).is_none());
    }
}
