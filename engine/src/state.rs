//! What one worker keeps from pass to pass ([`WorkerState`]): its step chain, its clocks
//! and its cache of decoded shards. Shared by reference with each pass's dataflow and
//! consumer, which run on the worker's own thread.

use std::rc::Rc;

use crate::cache::SourceCache;
use crate::chain::Chain;
use crate::metrics::WorkerMetrics;

pub(crate) struct WorkerState {
    pub chain: Chain,
    pub metrics: WorkerMetrics,
    pub cache: SourceCache,
}

impl WorkerState {
    pub fn new(cache: SourceCache) -> Rc<WorkerState> {
        Rc::new(WorkerState { chain: Chain::default(), metrics: WorkerMetrics::default(), cache })
    }
}
