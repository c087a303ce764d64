//! The operator registry: one [`StepSpec`] variant per `op = "…"`, and the [`BoundStep`]
//! trait every operator implements once bound to its input schema.

use std::fmt;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::OpError;
use crate::cast::CastSpec;
use crate::drop_columns::DropSpec;
use crate::drop_nulls::DropNullsSpec;
use crate::filter::FilterSpec;
use crate::rename::RenameSpec;
use crate::select::SelectSpec;

/// A stateless map step bound to the schema that reaches it.
///
/// Contract: `apply` is a pure function of the batch (no I/O, no state between batches),
/// does no per-row allocation, and preserves the order of the rows it keeps. Its output
/// always has exactly [`BoundStep::output_schema`]. It must not panic on any batch of the
/// bound input schema: bad values become an [`OpError`] naming the column.
pub trait BoundStep: Send + Sync + fmt::Debug {
    /// The schema of every batch `apply` returns.
    fn output_schema(&self) -> SchemaRef;

    /// Maps one batch.
    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError>;
}

/// One `[[step]]` of a job, as written in the job's TOML (`op` selects the variant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StepSpec {
    Select(SelectSpec),
    Drop(DropSpec),
    Rename(RenameSpec),
    Cast(CastSpec),
    Filter(FilterSpec),
    DropNulls(DropNullsSpec),
}

impl StepSpec {
    /// The `op` name as written in the job.
    pub fn op_name(&self) -> &'static str {
        match self {
            StepSpec::Select(_) => "select",
            StepSpec::Drop(_) => "drop",
            StepSpec::Rename(_) => "rename",
            StepSpec::Cast(_) => "cast",
            StepSpec::Filter(_) => "filter",
            StepSpec::DropNulls(_) => "drop_nulls",
        }
    }

    /// Resolves selectors and types against `input`; the result maps batches of that schema.
    pub fn bind(&self, input: &SchemaRef) -> Result<Box<dyn BoundStep>, OpError> {
        Ok(match self {
            StepSpec::Select(spec) => Box::new(spec.bind(input)?),
            StepSpec::Drop(spec) => Box::new(spec.bind(input)?),
            StepSpec::Rename(spec) => Box::new(spec.bind(input)?),
            StepSpec::Cast(spec) => Box::new(spec.bind(input)?),
            StepSpec::Filter(spec) => Box::new(spec.bind(input)?),
            StepSpec::DropNulls(spec) => Box::new(spec.bind(input)?),
        })
    }
}

/// A step that failed to bind, with its 1-based position in the job.
#[derive(Debug, thiserror::Error)]
#[error("step {number} ({op}): {source}")]
pub struct BindError {
    pub number: usize,
    pub op: &'static str,
    #[source]
    pub source: OpError,
}

/// Binds a chain of steps, each to the output schema of the one before it.
pub fn bind_steps(steps: &[StepSpec], input: &SchemaRef) -> Result<Vec<Box<dyn BoundStep>>, BindError> {
    let mut schema = input.clone();
    let mut bound = Vec::with_capacity(steps.len());
    for (index, spec) in steps.iter().enumerate() {
        let step = spec.bind(&schema).map_err(|source| BindError { number: index + 1, op: spec.op_name(), source })?;
        schema = step.output_schema();
        bound.push(step);
    }
    Ok(bound)
}
