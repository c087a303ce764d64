//! What one worker keeps from pass to pass ([`WorkerState`]): its step chain, its clocks,
//! its cache of decoded shards and, after an `aggregate`, the groups that replace its
//! shards as the input of the passes after it. Shared by reference with each pass's
//! dataflow and consumer, which run on the worker's own thread.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use arrow::record_batch::RecordBatch;

use crate::cache::SourceCache;
use crate::chain::Chain;
use crate::group_spill::SpilledRows;
use crate::metrics::WorkerMetrics;

/// The rows an `aggregate` step left on this worker: the groups whose key hashes to it.
/// The passes after the step read these instead of the source's shards: from memory, or,
/// when the step spilled, from a local file ([`SpilledRows`]).
pub(crate) struct Groups {
    pub batches: Vec<RecordBatch>,
    pub spilled: Option<SpilledRows>,
}

pub(crate) struct WorkerState {
    pub chain: Chain,
    pub metrics: WorkerMetrics,
    pub cache: SourceCache,
    /// After an `aggregate`: the passes' input.
    pub groups: RefCell<Option<Groups>>,
    /// Rows read from the source by the pass that consumed it (an aggregate's), for the
    /// run's summary once later passes read groups.
    pub source_rows: Cell<Option<u64>>,
    /// Rows rejected before an `aggregate` (with `sink.rejects`), as rows of the rejects
    /// output, written by the final pass.
    pub rejected: RefCell<Vec<RecordBatch>>,
}

impl WorkerState {
    pub fn new(cache: SourceCache) -> Rc<WorkerState> {
        Rc::new(WorkerState {
            chain: Chain::default(),
            metrics: WorkerMetrics::default(),
            cache,
            groups: RefCell::new(None),
            source_rows: Cell::new(None),
            rejected: RefCell::new(Vec::new()),
        })
    }
}
