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

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::co_moments::CoMoments;
use crate::exact_quantile::{COLLECT_LIMIT, ExactQuantiles};
use crate::quantile_sketch::QuantileSketch;
use crate::stats::{Moments, Range, ValueCounts};
use crate::{BoundStep, OpError};

// The `fitted.json` format and the column helpers fitted ops share live in files of their
// own; they are re-exported here, where the fitted ops look for them.
pub use crate::fit_columns::{
    FloatColumnsMap, FloatTransform, NumericColumns, all_missing, as_f64, column_params, float_output_type, is_numeric,
    names, no_infinity, numeric_columns, numeric_step_schema, params_json, replace_columns, schema_with_types,
};
pub use crate::fitted_file::{FITTED_FORMAT_VERSION, FittedFile, FittedStep, params_sha256};

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
