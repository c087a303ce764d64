//! The trait every map operator implements once bound to its input schema.

use std::fmt;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::OpError;

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

    /// Whether the step keeps every row, in order, and which of its output columns are
    /// input columns it passes through unchanged: for each output column, the index of the
    /// input column it is, or `None` for a column the step computes. `None` (the default)
    /// for a step that may drop or add rows. The sink uses this to copy the source's
    /// encoded column chunks of unchanged columns instead of re-encoding them.
    fn unchanged_columns(&self) -> Option<Vec<Option<usize>>> {
        None
    }
}
