//! A worker's step chain: the steps that can map batches so far. It grows as a run goes
//! through its stages: plain map steps come from the plan, fitted steps join once their
//! parameters are known, and a dedupe joins as a filter that keeps the rows that won
//! their key on this worker's shards.
//!
//! Rows are located by `(shard, position)`, where the position counts the rows of the
//! shard that reach the step, in order. Steps are pure and a worker reads a shard's
//! batches in order, so the same row has the same position in every pass.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;
use weir_connectors::fetched_chunks::FetchedChunks;
use weir_operators::{BoundStep, OpError};

use crate::JobFailure;
use crate::metrics::{Stage, StepWork, WorkerMetrics};
use crate::plan::EnginePlan;

/// A batch on the map path, with the shard it came from.
#[derive(Clone)]
pub(crate) struct SourceBatch {
    pub shard: usize,
    pub batch: RecordBatch,
    /// The source's column chunks the shard's read fetched, on the shard's first batch
    /// when the sink copies unchanged columns' chunks ([`weir_connectors::chunk_copy`]).
    pub fetched: Option<Arc<FetchedChunks>>,
    /// The rows that steps rejected from this batch, as rows of the rejects output; only
    /// while the chain collects them (the final pass of a job with `sink.rejects`). `batch`
    /// may then have no row.
    pub rejected: Vec<RecordBatch>,
}

/// Counts the rows of the current shard that pass a point of the chain.
#[derive(Debug, Default)]
pub(crate) struct RowCursor {
    shard: Cell<Option<usize>>,
    next: Cell<u64>,
}

impl RowCursor {
    /// The position of the first row of `rows` rows of `shard` arriving now.
    pub fn advance(&self, shard: usize, rows: usize) -> u64 {
        if self.shard.get() != Some(shard) {
            self.shard.set(Some(shard));
            self.next.set(0);
        }
        let first = self.next.get();
        self.next.set(first + rows as u64);
        first
    }
}

/// The rows of this worker's shards that survive a dedupe: sorted positions per shard.
#[derive(Debug, Default)]
pub(crate) struct KeptRows {
    by_shard: HashMap<usize, Vec<u64>>,
}

impl KeptRows {
    /// From the dedupe's winners, `(shard, position)` sorted.
    pub fn new(winners: Vec<(u32, u64)>) -> Self {
        let mut by_shard: HashMap<usize, Vec<u64>> = HashMap::new();
        for (shard, row) in winners {
            by_shard.entry(shard as usize).or_default().push(row);
        }
        for rows in by_shard.values_mut() {
            rows.sort_unstable();
        }
        KeptRows { by_shard }
    }

    /// The mask of the rows `first .. first + len` of `shard` to keep.
    fn mask(&self, shard: usize, first: u64, len: usize) -> BooleanArray {
        let kept = self.by_shard.get(&shard).map(Vec::as_slice).unwrap_or(&[]);
        let start = kept.partition_point(|&row| row < first);
        let mut mask = vec![false; len];
        for &row in &kept[start..] {
            let offset = row - first;
            if offset >= len as u64 {
                break;
            }
            mask[offset as usize] = true;
        }
        BooleanArray::from(mask)
    }
}

enum Link {
    Map(Arc<dyn BoundStep>),
    Keep { kept: KeptRows, cursor: RowCursor },
}

struct ChainStep {
    number: usize,
    op: &'static str,
    link: Link,
    /// For a chain of fitted steps applied as one map, each member's step number and op,
    /// in order (the first is `number`, `op`); empty for a single step.
    members: Vec<(usize, &'static str)>,
}

/// The chain of one worker; see the module documentation. Steps join between passes
/// (through a shared reference, as a pass's dataflow holds one too).
#[derive(Default)]
pub(crate) struct Chain {
    steps: RefCell<Vec<ChainStep>>,
    /// Whether rejected rows are kept for the rejects output (the final pass) or dropped.
    collect_rejects: Cell<bool>,
}

impl Chain {
    pub fn push_map(&self, number: usize, op: &'static str, step: Arc<dyn BoundStep>) {
        self.steps.borrow_mut().push(ChainStep { number, op, link: Link::Map(step), members: Vec::new() });
    }

    /// Adds the map of a chain of fitted steps (`members`: their numbers and ops, in order,
    /// at least two); its errors name their member ([`OpError::chain_member`]).
    pub fn push_chain(&self, members: Vec<(usize, &'static str)>, step: Arc<dyn BoundStep>) {
        let (number, op) = members.first().copied().unwrap_or((0, "chain"));
        self.steps.borrow_mut().push(ChainStep { number, op, link: Link::Map(step), members });
    }

    pub fn push_keep(&self, number: usize, kept: KeptRows) {
        let link = Link::Keep { kept, cursor: RowCursor::default() };
        self.steps.borrow_mut().push(ChainStep { number, op: "dedupe", link, members: Vec::new() });
    }

    /// Keeps the rows that steps reject in each mapped batch (for the final pass, or the
    /// pass that an `aggregate` consumes).
    pub fn collect_rejects(&self) {
        self.collect_rejects.set(true);
    }

    /// Empties the chain: after an `aggregate`, the passes read its groups, which no step
    /// before it applies to.
    pub fn reset(&self) {
        self.steps.borrow_mut().clear();
        self.collect_rejects.set(false);
    }

    /// Forgets where the row cursors were (before a new pass over the shards).
    pub fn rewind(&self) {
        for step in self.steps.borrow().iter() {
            if let Link::Keep { cursor, .. } = &step.link {
                cursor.shard.set(None);
                cursor.next.set(0);
            }
        }
    }

    /// Applies every step to one batch, timing each on `metrics`; `None` when no row is left.
    pub fn apply(
        &self,
        plan: &EnginePlan,
        metrics: &WorkerMetrics,
        item: SourceBatch,
    ) -> Result<Option<SourceBatch>, JobFailure> {
        let mut batch = item.batch;
        let mut rejected = Vec::new();
        let layout = plan.rejects.as_ref().map(|rejects| &rejects.layout).filter(|_| self.collect_rejects.get());
        for step in self.steps.borrow().iter() {
            let work = match step.members.last() {
                Some(&(last, last_op)) if step.members.len() > 1 => StepWork::ApplyChain { last, last_op },
                _ => StepWork::Apply,
            };
            let stage = Stage::Step { number: step.number, op: step.op, work };
            batch = metrics.time(stage, || match &step.link {
                Link::Map(map) => {
                    let failure = |error: OpError| {
                        let (member, inner) = match step.members.is_empty() {
                            true => (None, &error),
                            false => {
                                let (member, inner) = error.chain_member();
                                (step.members.get(member), inner)
                            }
                        };
                        let (number, op) = member.copied().unwrap_or((step.number, step.op));
                        step_failure(plan, number, op, item.shard, inner)
                    };
                    let (kept, rejects) = map.apply_rejecting(batch).map_err(failure)?;
                    if let (Some(layout), Some(rejects)) = (layout, rejects) {
                        rejected.push(layout.rows(step.number, step.op, &rejects).map_err(failure)?);
                    }
                    Ok(kept)
                }
                Link::Keep { kept, cursor } => {
                    let first = cursor.advance(item.shard, batch.num_rows());
                    let mask = kept.mask(item.shard, first, batch.num_rows());
                    filter_record_batch(&batch, &mask)
                        .map_err(|error| step_failure(plan, step.number, step.op, item.shard, &OpError::Arrow(error)))
                }
            })?;
            if batch.num_rows() == 0 {
                break;
            }
        }
        if batch.num_rows() == 0 && rejected.is_empty() {
            return Ok(None);
        }
        Ok(Some(SourceBatch { shard: item.shard, batch, fetched: item.fetched, rejected }))
    }
}

/// A step's failure on a batch of `shard`, naming the step, the file and the row group (or,
/// after an `aggregate`, the groups: [`EnginePlan::groups_shard`]).
pub(crate) fn step_failure(plan: &EnginePlan, number: usize, op: &str, shard: usize, error: &OpError) -> JobFailure {
    let at = match plan.shards.get(shard) {
        Some(source_shard) => plan.source.describe_shard(source_shard),
        None => {
            let aggregate = plan
                .steps
                .iter()
                .rfind(|step| step.number < number && matches!(step.kind, crate::plan::StepKind::Aggregate(_)))
                .map_or(0, |step| step.number);
            format!("the groups of step {aggregate} (aggregate) on worker {}", shard - plan.shards.len())
        }
    };
    let message = format!("step {number} ({op}) failed on {at}: {error}");
    if error.is_user_error() { JobFailure::user(message) } else { JobFailure::internal(message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_rows_mask_a_window_of_a_shard() {
        let kept = KeptRows::new(vec![(1, 7), (0, 2), (1, 3), (0, 9)]);
        let mask = kept.mask(1, 3, 5);
        assert_eq!(mask.iter().map(|v| v.unwrap()).collect::<Vec<_>>(), vec![true, false, false, false, true]);
        assert_eq!(kept.mask(2, 0, 3).true_count(), 0);
    }

    #[test]
    fn cursors_restart_at_each_shard() {
        let cursor = RowCursor::default();
        assert_eq!(cursor.advance(0, 10), 0);
        assert_eq!(cursor.advance(0, 5), 10);
        assert_eq!(cursor.advance(3, 4), 0);
        assert_eq!(cursor.advance(3, 1), 4);
    }
}
