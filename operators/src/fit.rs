//! Fitted steps: the reduce half of MapReduce.
//!
//! A fitted step (`impute` mean/median/most_frequent, `standardize`, `minmax`, `clip` with
//! quantiles, `pca`) cannot map a batch before it has seen the data. Bound to its input
//! schema it implements [`Fit`], with its own partial and parameter types, which the engine
//! drives in four moves:
//!
//! 1. every worker starts from [`Fit::new_partial`] and folds each of its batches into it
//!    ([`Fit::fold`]): counts, Welford/Chan moments, min/max, quantile sketches, co-moments;
//! 2. the partials travel to one worker and are merged there ([`Fit::merge`]);
//! 3. the merged partial is finished into parameters ([`Fit::finish`]), which are broadcast
//!    back to every worker and saved in `_weir/fitted.json` as JSON;
//! 4. every worker turns the parameters into an ordinary [`BoundStep`] ([`Fit::with_params`]).
//!
//! A fit that needs more passes over the same input (an exact quantile) says so in
//! [`Fit::next_pass`]. A step given `fitted = "URI"` skips 1–3: the planner reads its
//! parameters from the [`crate::fitted_file::FittedFile`] of an earlier run.
//!
//! The engine sees every fitted step through one object-safe adapter, [`FitStep`], made by
//! [`erase`]: partials become opaque [`Partial`]s, encoded with bincode (exact for every
//! `f64`, NaN included) when they cross workers, and parameters become JSON. Adding a fitted
//! op is its own file (spec, `bind`, `impl Fit`, parity test) plus its line in the
//! [`crate::step`] registry.

use std::any::Any;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{BoundStep, OpError};

/// What the engine and the planner need to know of a fitted step before fitting it.
#[derive(Debug, Clone)]
pub struct FitShape {
    /// The schema of the batches the fitted step will return.
    pub output: SchemaRef,
    /// The columns the step reads, in order (for most fitted steps also the ones it rewrites).
    pub columns: Vec<String>,
    /// Every column the step's output adds, rewrites or removes. The engine fits a later
    /// step in the same pass only if it reads none of them.
    pub written: Vec<String>,
    /// Whether the step maps rows one to one. A step that may drop rows ends its fit pass:
    /// later steps must be fitted on what it leaves.
    pub keeps_every_row: bool,
    /// The strategy, for the ops that have one (`impute`); checked when parameters are reused.
    pub strategy: Option<String>,
    /// The step's output columns depend on its parameters (`onehot`'s categories), so
    /// `output` is only its input until it is fitted: [`crate::bind_steps`] binds no step
    /// after it, and the planner binds the rest once the parameters are known.
    pub open: bool,
}

impl FitShape {
    /// A step that rewrites the columns it reads, keeps every row and has no strategy.
    pub fn rewriting(output: SchemaRef, columns: Vec<String>) -> FitShape {
        FitShape { output, written: columns.clone(), columns, keeps_every_row: true, strategy: None, open: false }
    }
}

/// A fitted step bound to its input schema, before its parameters are known; see the module
/// documentation.
pub trait Fit: Send + Sync + std::fmt::Debug + 'static {
    /// What one worker has folded so far. It crosses processes, so it serialises.
    type Partial: Serialize + DeserializeOwned + Send + 'static;
    /// The fitted parameters, saved in `fitted.json`.
    type Params: Serialize + DeserializeOwned;

    fn shape(&self) -> FitShape;

    /// An empty partial for one worker.
    fn new_partial(&self) -> Self::Partial;

    /// Folds one batch of the step's input schema into `partial`.
    fn fold(&self, partial: &mut Self::Partial, batch: &RecordBatch) -> Result<(), OpError>;

    /// Merges `other` into `into`.
    fn merge(&self, into: &mut Self::Partial, other: Self::Partial) -> Result<(), OpError>;

    /// For a fit that needs another pass over the same input (an exact quantile): given the
    /// merged partial of the pass just made (which it may update with what it found), the
    /// empty partial every worker folds the next pass into; `None` when [`Fit::finish`] can
    /// conclude from `merged`.
    fn next_pass(&self, merged: &mut Self::Partial) -> Result<Option<Self::Partial>, OpError> {
        let _ = merged;
        Ok(None)
    }

    /// Turns the merged partial of the whole input into parameters. Errors are the data's:
    /// a column with no value to fit on, or an infinity where a finite value is needed.
    fn finish(&self, partial: Self::Partial) -> Result<Self::Params, OpError>;

    /// The step that applies `params` (from [`Fit::finish`] or a `fitted.json`). Parameters
    /// that do not fit this step (another column set, range, …) are an error.
    fn with_params(&self, params: Self::Params) -> Result<Box<dyn BoundStep>, OpError>;
}

/// A partial of some fitted step, opaque to the engine: only the [`FitStep`] that made it
/// can fold into it, merge it, encode it or finish it.
pub struct Partial(Box<dyn Any + Send>);

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Partial(..)")
    }
}

/// A fitted step as the engine drives it: [`Fit`] with its types erased.
pub trait FitStep: Send + Sync + std::fmt::Debug {
    fn shape(&self) -> &FitShape;
    /// The typed fit behind the adapter, for [`crate::linear_chain`] to recognise.
    fn as_any(&self) -> &dyn Any;
    fn new_partial(&self) -> Partial;
    fn fold(&self, partial: &mut Partial, batch: &RecordBatch) -> Result<(), OpError>;
    fn merge(&self, into: &mut Partial, other: Partial) -> Result<(), OpError>;
    fn next_pass(&self, merged: &mut Partial) -> Result<Option<Partial>, OpError>;
    /// The parameters as JSON, the form `fitted.json` holds.
    fn finish(&self, partial: Partial) -> Result<serde_json::Value, OpError>;
    /// The step that applies parameters read back from JSON; parameters of another shape
    /// are an error.
    fn with_params(&self, params: &serde_json::Value) -> Result<Box<dyn BoundStep>, OpError>;
    /// The bytes a partial travels as between workers.
    fn encode(&self, partial: &Partial) -> Result<Vec<u8>, OpError>;
    fn decode(&self, bytes: &[u8]) -> Result<Partial, OpError>;
}

/// The engine's view of a typed fitted step.
pub fn erase<F: Fit>(fit: F) -> Box<dyn FitStep> {
    let shape = fit.shape();
    Box::new(Erased { fit, shape })
}

#[derive(Debug)]
struct Erased<F> {
    fit: F,
    shape: FitShape,
}

impl<F: Fit> Erased<F> {
    fn typed<'a>(&self, partial: &'a mut Partial) -> Result<&'a mut F::Partial, OpError> {
        partial.0.downcast_mut::<F::Partial>().ok_or_else(foreign_partial)
    }

    fn owned(&self, partial: Partial) -> Result<F::Partial, OpError> {
        partial.0.downcast::<F::Partial>().map(|typed| *typed).map_err(|_| foreign_partial())
    }
}

fn foreign_partial() -> OpError {
    OpError::Internal("a fitted step was given another step's partial".into())
}

impl<F: Fit> FitStep for Erased<F> {
    fn shape(&self) -> &FitShape {
        &self.shape
    }

    fn as_any(&self) -> &dyn Any {
        &self.fit
    }

    fn new_partial(&self) -> Partial {
        Partial(Box::new(self.fit.new_partial()))
    }

    fn fold(&self, partial: &mut Partial, batch: &RecordBatch) -> Result<(), OpError> {
        self.fit.fold(self.typed(partial)?, batch)
    }

    fn merge(&self, into: &mut Partial, other: Partial) -> Result<(), OpError> {
        let other = self.owned(other)?;
        self.fit.merge(self.typed(into)?, other)
    }

    fn next_pass(&self, merged: &mut Partial) -> Result<Option<Partial>, OpError> {
        Ok(self.fit.next_pass(self.typed(merged)?)?.map(|next| Partial(Box::new(next))))
    }

    fn finish(&self, partial: Partial) -> Result<serde_json::Value, OpError> {
        let params = self.fit.finish(self.owned(partial)?)?;
        serde_json::to_value(&params).map_err(|e| OpError::Internal(format!("fitted parameters do not serialise: {e}")))
    }

    fn with_params(&self, params: &serde_json::Value) -> Result<Box<dyn BoundStep>, OpError> {
        let typed: F::Params = serde_json::from_value(params.clone())
            .map_err(|e| OpError::InvalidSpec(format!("the fitted parameters are malformed for this step: {e}")))?;
        self.fit.with_params(typed)
    }

    fn encode(&self, partial: &Partial) -> Result<Vec<u8>, OpError> {
        let typed = partial.0.downcast_ref::<F::Partial>().ok_or_else(foreign_partial)?;
        bincode::serialize(typed).map_err(|e| OpError::Internal(format!("a fit's partial does not encode: {e}")))
    }

    fn decode(&self, bytes: &[u8]) -> Result<Partial, OpError> {
        let typed: F::Partial = bincode::deserialize(bytes)
            .map_err(|e| OpError::Internal(format!("a fit's partial does not decode: {e}")))?;
        Ok(Partial(Box::new(typed)))
    }
}

/// Fits `fit` the way the engine does, in one process: each batch folded into its own
/// partial (as if on its own worker), encoded and decoded as between processes, the
/// partials merged, more passes while the step asks for them, then finished. For unit tests.
#[cfg(test)]
pub(crate) fn fit_in_process(fit: &dyn FitStep, batches: &[RecordBatch]) -> serde_json::Value {
    let mut template = fit.encode(&fit.new_partial()).unwrap();
    loop {
        let mut merged: Option<Partial> = None;
        for batch in batches {
            let mut partial = fit.decode(&template).unwrap();
            fit.fold(&mut partial, batch).unwrap();
            let travelled = fit.decode(&fit.encode(&partial).unwrap()).unwrap();
            match merged.as_mut() {
                None => merged = Some(travelled),
                Some(merged) => fit.merge(merged, travelled).unwrap(),
            }
        }
        let mut merged = merged.expect("fit_in_process needs at least one batch");
        match fit.next_pass(&mut merged).unwrap() {
            Some(next) => template = fit.encode(&next).unwrap(),
            None => return fit.finish(merged).unwrap(),
        }
    }
}
