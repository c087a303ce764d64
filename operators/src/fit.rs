//! Fitted steps: the reduce half of MapReduce.
//!
//! A fitted step (`impute` mean/median/most_frequent, `standardize`, `minmax`, `clip` with
//! quantiles, `pca`) cannot map a batch before it has seen the data. Bound to its input
//! schema it is a [`FitStep`], which the engine drives in four moves:
//!
//! 1. every worker starts from [`FitStep::new_partial`] and folds each of its batches into
//!    it ([`FitStep::fold`]): counts, Welford/Chan moments, min/max, quantile sketches,
//!    co-moments;
//! 2. the partials travel to one worker and are merged there ([`FitStep::merge`]);
//! 3. the merged partial is finished into parameters ([`FitStep::finish`]), plain JSON that
//!    is broadcast back to every worker and saved in `_weir/fitted.json`;
//! 4. every worker turns the parameters into an ordinary [`BoundStep`]
//!    ([`FitStep::with_params`]).
//!
//! A step given `fitted = "URI"` skips 1–3: its parameters come from the [`FittedFile`] of
//! an earlier run, matched by [`FittedFile::find`].
//!
//! A fitted step says which columns it reads ([`FitStep::columns`]) and which its output
//! changes ([`FitStep::written_columns`]), and whether it keeps every row; that is what lets
//! the engine fit several of them in one pass when doing so is exactly equivalent.

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::exact_quantile::{COLLECT_LIMIT, ExactQuantiles};
use crate::pca::CoMoments;
use crate::quantile_sketch::QuantileSketch;
use crate::stats::{Moments, Range, ValueCounts};
use crate::{BoundStep, OpError};

/// The version of the `fitted.json` format this build writes and reads.
pub const FITTED_FORMAT_VERSION: u32 = 1;

/// A fitted step bound to its input schema, before its parameters are known.
pub trait FitStep: Send + Sync + std::fmt::Debug {
    /// The schema of the batches the fitted step will return (known before fitting).
    fn output_schema(&self) -> SchemaRef;

    /// The strategy, for the ops that have one (`impute`); checked when parameters are reused.
    fn strategy(&self) -> Option<String> {
        None
    }

    /// The columns the step reads, in order (for most fitted steps, also the ones it rewrites).
    fn columns(&self) -> Vec<String>;

    /// Every column the step's output adds, rewrites or removes. The engine fits a later
    /// step in the same pass only if it reads none of them.
    fn written_columns(&self) -> Vec<String> {
        self.columns()
    }

    /// Whether the step maps rows one to one (no row dropped). A step that may drop rows
    /// ends its fit pass: later steps must be fitted on what it leaves.
    fn keeps_every_row(&self) -> bool {
        true
    }

    /// The `fitted = "URI"` this step reuses, if any.
    fn fitted_uri(&self) -> Option<&str>;

    /// An empty partial for one worker.
    fn new_partial(&self) -> Partial;

    /// Folds one batch of the step's input schema into `partial`.
    fn fold(&self, partial: &mut Partial, batch: &RecordBatch) -> Result<(), OpError>;

    /// Merges `other` into `into`.
    fn merge(&self, into: &mut Partial, other: Partial) -> Result<(), OpError>;

    /// For a fit that needs another pass over the same input (an exact quantile): given the
    /// merged partial of the pass just made (which it may update, e.g. with what it found),
    /// the empty partial every worker folds the next pass into; `None` when
    /// [`FitStep::finish`] can conclude from `merged`.
    fn next_pass(&self, merged: &mut Partial) -> Result<Option<Partial>, OpError> {
        let _ = merged;
        Ok(None)
    }

    /// Turns the merged partial of the whole input into parameters. Errors are the data's:
    /// a column with no value to fit on, or an infinity where a finite value is needed.
    fn finish(&self, partial: Partial) -> Result<serde_json::Value, OpError>;

    /// The step that applies `params` (from [`FitStep::finish`] or a `fitted.json`).
    /// Parameters that do not fit this step (another column set, range, …) are an error.
    fn with_params(&self, params: &serde_json::Value) -> Result<Box<dyn BoundStep>, OpError>;
}

/// What one worker has folded so far: one entry per column of the step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Partial {
    Moments(Vec<Moments>),
    Ranges(Vec<Range>),
    Sketches(Vec<QuantileSketch>),
    Counts(Vec<ValueCounts>),
    /// One set of co-moments over all the step's columns (`pca`).
    CoMoments(CoMoments),
    /// The searches of exact quantiles over later passes, per column (`None`: the column
    /// has no value).
    Exact(Vec<Option<ExactQuantiles>>),
}

/// The shared `next_pass` of fitted quantiles with `exact = true` (impute's median, clip's
/// bounds): after the sketch pass, plan the searches (a column whose sketch held every value
/// needs none); after a search pass, advance them; another pass while any goes on.
pub fn exact_quantiles_next_pass(merged: &mut Partial, quantiles: &[f64]) -> Result<Option<Partial>, OpError> {
    let searches: &mut Vec<Option<ExactQuantiles>> = match merged {
        Partial::Sketches(sketches) => {
            let planned: Vec<Option<ExactQuantiles>> =
                sketches.iter().map(|sketch| ExactQuantiles::plan(sketch, quantiles, COLLECT_LIMIT)).collect();
            if planned.iter().flatten().all(ExactQuantiles::done) {
                return Ok(None); // every sketch held all its values: they answer exactly
            }
            // Columns whose sketch held every value carry their answers along.
            return Ok(Some(Partial::Exact(planned)));
        }
        Partial::Exact(searches) => searches,
        other => return Err(wrong_partial("sketches or exact quantile searches", other)),
    };
    let mut more = false;
    for search in searches.iter_mut().flatten() {
        more |= !search.advance();
    }
    Ok(more.then(|| Partial::Exact(searches.clone())))
}

impl Partial {
    pub fn moments(&mut self) -> Result<&mut Vec<Moments>, OpError> {
        match self {
            Partial::Moments(inner) => Ok(inner),
            other => Err(wrong_partial("moments", other)),
        }
    }

    pub fn ranges(&mut self) -> Result<&mut Vec<Range>, OpError> {
        match self {
            Partial::Ranges(inner) => Ok(inner),
            other => Err(wrong_partial("ranges", other)),
        }
    }

    pub fn sketches(&mut self) -> Result<&mut Vec<QuantileSketch>, OpError> {
        match self {
            Partial::Sketches(inner) => Ok(inner),
            other => Err(wrong_partial("sketches", other)),
        }
    }

    pub fn counts(&mut self) -> Result<&mut Vec<ValueCounts>, OpError> {
        match self {
            Partial::Counts(inner) => Ok(inner),
            other => Err(wrong_partial("counts", other)),
        }
    }

    pub fn exact(&mut self) -> Result<&mut Vec<Option<ExactQuantiles>>, OpError> {
        match self {
            Partial::Exact(inner) => Ok(inner),
            other => Err(wrong_partial("exact quantile searches", other)),
        }
    }

    pub fn co_moments(&mut self) -> Result<&mut CoMoments, OpError> {
        match self {
            Partial::CoMoments(inner) => Ok(inner),
            other => Err(wrong_partial("co-moments", other)),
        }
    }
}

fn wrong_partial(expected: &str, found: &Partial) -> OpError {
    let found = match found {
        Partial::Moments(_) => "moments",
        Partial::Ranges(_) => "ranges",
        Partial::Sketches(_) => "sketches",
        Partial::Counts(_) => "counts",
        Partial::CoMoments(_) => "co-moments",
        Partial::Exact(_) => "exact quantile searches",
    };
    OpError::Internal(format!("a fitted step expected a partial of {expected}, got {found}"))
}

/// `_weir/fitted.json`: the parameters of every fitted step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedFile {
    pub format_version: u32,
    pub weir_version: String,
    pub job: String,
    pub run_id: String,
    pub steps: Vec<FittedStep>,
}

/// One fitted step's entry in [`FittedFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedStep {
    /// 1-based position of the step in the job that fitted it.
    pub step: usize,
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    pub columns: Vec<String>,
    /// Where the parameters came from when this run reused them (`fitted = "…"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    pub params: serde_json::Value,
}

/// The SHA-256 (hex) that identifies fitted parameters, for pinning a model to the ones it
/// was trained on (`score`'s `fitted_sha256`): over each step's op, strategy, columns and
/// parameters, in order, as compact JSON; not over step numbers, run ids or where reused
/// parameters came from, so a run that reuses a fit gets the fit's hash.
pub fn params_sha256(steps: &[FittedStep]) -> String {
    use sha2::{Digest, Sha256};
    let canonical: Vec<serde_json::Value> =
        steps.iter().map(|s| serde_json::json!([s.op, s.strategy, s.columns, s.params])).collect();
    let digest = Sha256::digest(serde_json::Value::Array(canonical).to_string().as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl FittedFile {
    /// Parses a `fitted.json`; `uri` names it in errors.
    pub fn parse(uri: &str, bytes: &[u8]) -> Result<FittedFile, OpError> {
        let file: FittedFile = serde_json::from_slice(bytes)
            .map_err(|e| OpError::InvalidSpec(format!("'{uri}' is not a Weir fitted.json: {e}")))?;
        if file.format_version != FITTED_FORMAT_VERSION {
            return Err(OpError::InvalidSpec(format!(
                "'{uri}' has fitted.json format version {}, this Weir reads version {FITTED_FORMAT_VERSION}",
                file.format_version
            )));
        }
        Ok(file)
    }

    /// The entry a step reuses: the `occurrence`-th (0-based) entry with the step's op and
    /// columns. A missing entry, or one fitted with another strategy, is an error that says
    /// what the file has.
    pub fn find(
        &self,
        uri: &str,
        op: &str,
        strategy: Option<&str>,
        columns: &[String],
        occurrence: usize,
    ) -> Result<&FittedStep, OpError> {
        let candidates: Vec<&FittedStep> = self.steps.iter().filter(|s| s.op == op && s.columns == columns).collect();
        let Some(found) = candidates.get(occurrence) else {
            let has: Vec<String> = self
                .steps
                .iter()
                .map(|s| format!("step {} {} over [{}]", s.step, s.op, short_list(&s.columns)))
                .collect();
            return Err(OpError::InvalidSpec(format!(
                "'{uri}' has no {op} step over columns [{}]; it has: {}",
                short_list(columns),
                if has.is_empty() { "nothing".to_string() } else { has.join("; ") }
            )));
        };
        if found.strategy.as_deref() != strategy {
            return Err(OpError::InvalidSpec(format!(
                "'{uri}' step {} was fitted with strategy {}, this step asks for {}",
                found.step,
                found.strategy.as_deref().unwrap_or("none"),
                strategy.unwrap_or("none")
            )));
        }
        Ok(found)
    }
}

/// Names for an error message: all of them when there are few, else the first five.
fn short_list(names: &[String]) -> String {
    if names.len() <= 6 {
        names.join(", ")
    } else {
        format!("{}, … ({} columns)", names[..5].join(", "), names.len())
    }
}

/// A numeric column as `Float64`, the type every fitted statistic is computed in.
pub fn as_f64(column: &ArrayRef) -> Result<Float64Array, OpError> {
    let float =
        if column.data_type() == &DataType::Float64 { column.clone() } else { cast(column, &DataType::Float64)? };
    Ok(float.as_primitive().clone())
}

/// True for the types a numeric fitted step accepts: integers and floats.
pub fn is_numeric(data_type: &DataType) -> bool {
    data_type.is_integer() || data_type.is_floating()
}

/// The type a numeric fitted step writes for an input column: floats keep their width,
/// integers become `Float64` (as scikit-learn's transformers return floats).
pub fn float_output_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Float16 | DataType::Float32 => data_type.clone(),
        _ => DataType::Float64,
    }
}

/// Resolves a numeric step's column selectors: the indices, and an error naming the first
/// column that is not an integer or float.
pub fn numeric_columns(selectors: &[String], input: &Schema, op: &str) -> Result<Vec<usize>, OpError> {
    let indices = crate::selector::resolve(selectors, input)?;
    for &index in &indices {
        let field = input.field(index);
        if !is_numeric(field.data_type()) {
            return Err(OpError::InvalidSpec(format!(
                "{op} needs numeric columns; column '{}' is {} (cast it first)",
                field.name(),
                field.data_type()
            )));
        }
    }
    Ok(indices)
}

/// The input schema with the given columns' types replaced.
pub fn schema_with_types(input: &Schema, types: &[(usize, DataType)]) -> SchemaRef {
    let fields: Vec<Field> = input
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| match types.iter().find(|(i, _)| *i == index) {
            Some((_, to)) => Field::new(field.name(), to.clone(), field.is_nullable()),
            None => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

/// `batch` with the given columns replaced, as a batch of `schema`.
pub fn replace_columns(
    batch: &RecordBatch,
    schema: &SchemaRef,
    replacements: Vec<(usize, ArrayRef)>,
) -> Result<RecordBatch, OpError> {
    let mut columns = batch.columns().to_vec();
    for (index, array) in replacements {
        columns[index] = array;
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The names of `indices` in `schema`.
pub fn names(schema: &Schema, indices: &[usize]) -> Vec<String> {
    indices.iter().map(|&i| schema.field(i).name().clone()).collect()
}

/// Reads `params["columns"][name]` for every column, deserialized as `T`; a missing column
/// or a malformed entry is an error naming it.
pub fn column_params<T: for<'a> Deserialize<'a>>(
    params: &serde_json::Value,
    columns: &[String],
) -> Result<Vec<T>, OpError> {
    let table = params
        .get("columns")
        .and_then(|c| c.as_object())
        .ok_or_else(|| OpError::InvalidSpec("fitted parameters have no \"columns\" table".to_string()))?;
    columns
        .iter()
        .map(|name| {
            let entry = table
                .get(name)
                .ok_or_else(|| OpError::InvalidSpec(format!("fitted parameters have no entry for column '{name}'")))?;
            serde_json::from_value(entry.clone())
                .map_err(|e| OpError::InvalidSpec(format!("fitted parameters of column '{name}': {e}")))
        })
        .collect()
}

/// Builds `{"columns": {name: entry, …}}` plus `extra` fields.
pub fn params_json<T: Serialize>(
    columns: &[String],
    entries: &[T],
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value, OpError> {
    let mut table = serde_json::Map::new();
    for (name, entry) in columns.iter().zip(entries) {
        let value = serde_json::to_value(entry).map_err(|e| OpError::Internal(e.to_string()))?;
        table.insert(name.clone(), value);
    }
    let mut object = extra;
    object.insert("columns".to_string(), serde_json::Value::Object(table));
    Ok(serde_json::Value::Object(object))
}

/// A fitted value that must be finite (a mean, a bound): an infinity in the data makes
/// it an error naming the column.
pub fn no_infinity(column: &str, what: &str, has_infinity: bool) -> Result<(), OpError> {
    if has_infinity {
        return Err(OpError::InvalidSpec(format!(
            "column '{column}' holds an infinite value, so its {what} is undefined (filter or clip it first)"
        )));
    }
    Ok(())
}

/// A column with no non-missing value cannot be fitted.
pub fn all_missing(column: &str, what: &str) -> OpError {
    OpError::InvalidSpec(format!("column '{column}' has no non-missing value (all null or NaN) to fit its {what} on"))
}

/// What a numeric fitted step does to each value of one column, in `f64`. The order of the
/// arithmetic follows scikit-learn's, so results agree to the last bit where it can.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FloatTransform {
    /// `(x - mean) / scale` (`StandardScaler`).
    Standardize { mean: f64, scale: f64 },
    /// `x * scale + offset` (`MinMaxScaler`).
    Linear { scale: f64, offset: f64 },
    /// `x` held within `[lower, upper]`; NaN stays NaN.
    Clamp { lower: f64, upper: f64 },
}

impl FloatTransform {
    fn apply(self, column: &Float64Array) -> Float64Array {
        match self {
            FloatTransform::Standardize { mean, scale } => column.unary(|x| (x - mean) / scale),
            FloatTransform::Linear { scale, offset } => column.unary(|x| x * scale + offset),
            FloatTransform::Clamp { lower, upper } => column.unary(|x| {
                if x < lower {
                    lower
                } else if x > upper {
                    upper
                } else {
                    x
                }
            }),
        }
    }
}

/// A numeric fitted step with its parameters: one [`FloatTransform`] per column, computed
/// in `f64` and written in the column's output type. Nulls stay null.
#[derive(Debug)]
pub struct FloatColumnsMap {
    pub output: SchemaRef,
    /// Column index, output type, transform.
    pub columns: Vec<(usize, DataType, FloatTransform)>,
}

impl BoundStep for FloatColumnsMap {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mut replacements = Vec::with_capacity(self.columns.len());
        for (index, to, transform) in &self.columns {
            let mapped: ArrayRef = Arc::new(transform.apply(&as_f64(batch.column(*index))?));
            let mapped = if to == &DataType::Float64 { mapped } else { cast(&mapped, to)? };
            replacements.push((*index, mapped));
        }
        replace_columns(&batch, &self.output, replacements)
    }
}

/// The input schema and per-column output types of a numeric fitted step over `selectors`.
pub fn numeric_step_schema(selectors: &[String], input: &SchemaRef, op: &str) -> Result<NumericColumns, OpError> {
    let indices = numeric_columns(selectors, input, op)?;
    let types: Vec<(usize, DataType)> =
        indices.iter().map(|&i| (i, float_output_type(input.field(i).data_type()))).collect();
    Ok(NumericColumns {
        names: names(input, &indices),
        output: schema_with_types(input, &types),
        output_types: types.into_iter().map(|(_, t)| t).collect(),
        indices,
    })
}

/// The columns of a numeric fitted step, resolved.
#[derive(Debug, Clone)]
pub struct NumericColumns {
    pub names: Vec<String>,
    pub indices: Vec<usize>,
    pub output_types: Vec<DataType>,
    pub output: SchemaRef,
}

impl NumericColumns {
    /// The present (non-null, non-NaN) values of column `position` of `batch`, found by name.
    pub fn present(&self, batch: &RecordBatch, position: usize, into: &mut Vec<f64>) -> Result<(), OpError> {
        let name = &self.names[position];
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| OpError::Internal(format!("column '{name}' missing from a batch")))?;
        crate::stats::present_values(&as_f64(column)?, into);
        Ok(())
    }

    /// Folds the present values of each column of `batch` into that column's accumulator.
    pub fn fold_each<T>(
        &self,
        batch: &RecordBatch,
        accumulators: &mut [T],
        mut fold: impl FnMut(&mut T, &[f64]),
    ) -> Result<(), OpError> {
        let mut values = Vec::new();
        for (position, accumulator) in accumulators.iter_mut().enumerate() {
            self.present(batch, position, &mut values)?;
            fold(accumulator, &values);
        }
        Ok(())
    }

    /// The step that applies one transform per column.
    pub fn map(&self, transforms: Vec<FloatTransform>) -> Box<dyn BoundStep> {
        Box::new(FloatColumnsMap {
            output: self.output.clone(),
            columns: self
                .indices
                .iter()
                .zip(&self.output_types)
                .zip(transforms)
                .map(|((&i, t), f)| (i, t.clone(), f))
                .collect(),
        })
    }
}

/// Fits `fit` the way the engine does, in one process: each batch folded into its own
/// partial (as if on its own worker), the partials merged, then finished. For unit tests.
#[cfg(test)]
pub(crate) fn fit_in_process(fit: &dyn FitStep, batches: &[RecordBatch]) -> serde_json::Value {
    let mut total = fit.new_partial();
    for batch in batches {
        let mut partial = fit.new_partial();
        fit.fold(&mut partial, batch).unwrap();
        fit.merge(&mut total, partial).unwrap();
    }
    fit.finish(total).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> FittedFile {
        let entry = |step, op: &str, strategy: Option<&str>, columns: &[&str]| FittedStep {
            step,
            op: op.to_string(),
            strategy: strategy.map(str::to_string),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            reused_from: None,
            params: serde_json::json!({}),
        };
        FittedFile {
            format_version: FITTED_FORMAT_VERSION,
            weir_version: "0".into(),
            job: "j".into(),
            run_id: "r".into(),
            steps: vec![
                entry(2, "impute", Some("median"), &["a", "b"]),
                entry(3, "standardize", None, &["a"]),
                entry(5, "standardize", None, &["a"]),
            ],
        }
    }

    #[test]
    fn entries_are_matched_by_op_columns_and_occurrence() {
        let file = file();
        let cols = |c: &[&str]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(file.find("u", "impute", Some("median"), &cols(&["a", "b"]), 0).unwrap().step, 2);
        assert_eq!(file.find("u", "standardize", None, &cols(&["a"]), 1).unwrap().step, 5);
        let missing = file.find("u", "standardize", None, &cols(&["b"]), 0).unwrap_err().to_string();
        assert!(missing.contains("no standardize step over columns [b]") && missing.contains("step 3"), "{missing}");
        let strategy = file.find("u", "impute", Some("mean"), &cols(&["a", "b"]), 0).unwrap_err().to_string();
        assert!(strategy.contains("strategy median") && strategy.contains("asks for mean"), "{strategy}");
    }

    #[test]
    fn other_format_versions_are_refused() {
        let mut file = file();
        file.format_version = 99;
        let text = serde_json::to_vec(&file).unwrap();
        let err = FittedFile::parse("s3://b/fitted.json", &text).unwrap_err().to_string();
        assert!(err.contains("version 99") && err.contains("s3://b/fitted.json"), "{err}");
    }
}
