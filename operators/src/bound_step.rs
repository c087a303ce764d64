//! The trait every map operator implements once bound to its input schema.

use std::fmt;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::OpError;
use crate::rejects::Rejected;

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

    /// Maps one batch, setting aside the rows the step rejects (a `cast` with
    /// `on_error = "reject"`, a `check` with `on_fail = "reject"`) with the reason of each,
    /// as they reached the step. Only rejecting steps override it; `apply` of such a step
    /// drops the rejected rows. The engine calls this one, and writes what it sets aside
    /// to `sink.rejects` in the final pass ([`crate::rejects`]).
    fn apply_rejecting(&self, batch: RecordBatch) -> Result<(RecordBatch, Option<Rejected>), OpError> {
        Ok((self.apply(batch)?, None))
    }

    /// For a step that may reject rows (see [`BoundStep::apply_rejecting`]): the schema of
    /// the rows it rejects (its input's, or what it made of its input before judging it).
    fn rejected_schema(&self) -> Option<SchemaRef> {
        None
    }

    /// Whether the step keeps every row, in order, and which of its output columns are
    /// input columns it passes through unchanged: for each output column, the index of the
    /// input column it is, or `None` for a column the step computes. `None` (the default)
    /// for a step that may drop or add rows. The sink uses this to copy the source's
    /// encoded column chunks of unchanged columns instead of re-encoding them.
    fn unchanged_columns(&self) -> Option<Vec<Option<usize>>> {
        None
    }
}
