//! One pass of a worker over its own shards: read, run the step chain, hand each mapped
//! batch to a consumer (the Parquet sink, a fitted step's fold, or a dedupe's key feed).
//! No data crosses workers here.
//!
//! Shards come from the store, or from the worker's cache of decoded batches (in memory or
//! spilled to local disk) when an earlier pass kept them ([`crate::cache`]).
//!
//! Pacing: batch `t` enters the dataflow at time `t`; before reading batch `t + 1` the
//! worker steps until the probe on the consumer shows every batch before `t + 1 - K`
//! consumed, so at most `K = max_batches_in_flight` batches are read but unconsumed.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::JobFailure;
use crate::cache::{CacheUse, CachedShard};
use crate::chain::SourceBatch;
use crate::context::ProcessContext;
use crate::metrics::Stage;
use crate::plan::SharedPlan;
use crate::read_ahead::ReadAhead;
use crate::rounds::PARK;
use crate::state::WorkerState;
use weir_connectors::source::Shard;

/// How many shards ahead of the one being read a pass starts reading their spill files.
const SPILL_PREFETCH_SHARDS: usize = 2;

/// What a pass does with each mapped batch.
pub(crate) type Consumer = Box<dyn FnMut(SourceBatch) -> Result<(), JobFailure>>;

/// Records the first failure of this worker and tells the process about it at once.
pub(crate) fn record(slot: &RefCell<Option<JobFailure>>, context: &ProcessContext, failure: JobFailure) {
    let mut slot = slot.borrow_mut();
    if slot.is_none() {
        context.abort.store(true, Ordering::Relaxed);
        (context.on_failure)(&failure);
        *slot = Some(failure);
    }
}

/// Where a shard's batches come from in this pass.
enum ShardBatches {
    Cached(CachedShard),
    /// From the store, through the pass's read-ahead.
    Store,
}

/// Which pass a run makes over its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PassKind {
    /// A fit or dedupe stage's pass: it fills the cache for the passes after it.
    Stage,
    /// An `aggregate`'s pass: the last over the source (the passes after it read the
    /// groups), so the progress counters follow it and it releases each cached shard.
    Aggregate,
    /// The final pass into the sink: the one the progress counters follow (unless an
    /// aggregate's pass read the source); it releases each cached shard as it reads it.
    Final,
}

/// Runs one pass of `kind` (see the module documentation) and returns the rows read.
pub(crate) fn run_pass(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    state: Rc<WorkerState>,
    consumer: Consumer,
    kind: PassKind,
) -> Result<u64, JobFailure> {
    let groups = state.groups.borrow().is_some();
    let progress = kind != PassKind::Stage && !groups;
    let usage = match kind {
        PassKind::Stage => CacheUse::Fill,
        PassKind::Aggregate | PassKind::Final => CacheUse::Drain,
    };
    let index = worker.index();
    let peers = worker.peers();
    let failure: Rc<RefCell<Option<JobFailure>>> = Rc::new(RefCell::new(None));
    let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<SourceBatch>>>::new();
    let probe = ProbeHandle::new();
    state.chain.rewind();
    // Passes over an aggregate's groups are not passes over the source.
    if !groups {
        state.metrics.pass_started();
    }
    let step_state = state.clone();

    worker.dataflow::<u64, _, _>(|scope| {
        let (step_plan, step_failure, step_context) = (plan.clone(), failure.clone(), context.clone());
        let mapped = input.to_stream(scope).unary::<CapacityContainerBuilder<Vec<SourceBatch>>, _, _, _>(
            Pipeline,
            "Steps",
            move |_capability, _info| {
                move |input, output| {
                    input.for_each(|time, data| {
                        let mut session = output.session(&time);
                        for item in data.drain(..) {
                            if step_failure.borrow().is_some() {
                                continue;
                            }
                            match step_state.chain.apply(&step_plan, &step_state.metrics, item) {
                                Ok(Some(mapped)) => session.give(mapped),
                                Ok(None) => {}
                                Err(failure) => record(&step_failure, &step_context, failure),
                            }
                        }
                    });
                }
            },
        );
        let (sink_failure, sink_context) = (failure.clone(), context.clone());
        let mut consumer = consumer;
        mapped
            .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Consume", move |_capability, _info| {
                move |input, _output| {
                    input.for_each(|_time, data| {
                        for item in data.drain(..) {
                            if sink_failure.borrow().is_some() {
                                continue;
                            }
                            if let Err(failure) = consumer(item) {
                                record(&sink_failure, &sink_context, failure);
                            }
                        }
                    });
                }
            })
            .probe_with(&probe);
    });

    let mut rows_in = 0u64;
    let mut time = 0u64;
    if groups {
        // After an aggregate: this worker's groups (the final pass frees them as it goes),
        // from memory or from the file they were spilled to.
        let (batches, spilled) = match kind {
            PassKind::Final => {
                let groups = state.groups.borrow_mut().take();
                groups.map(|groups| (groups.batches, groups.spilled)).unwrap_or_default()
            }
            _ => {
                let groups = state.groups.borrow();
                let batches = groups.as_ref().map(|groups| groups.batches.clone()).unwrap_or_default();
                // The file is kept by the state; this pass only reads it.
                (batches, None)
            }
        };
        let reread = match &spilled {
            Some(rows) => Some(rows.batches()),
            None => {
                state.groups.borrow().as_ref().and_then(|groups| groups.spilled.as_ref().map(|rows| rows.batches()))
            }
        };
        let from_file: Box<dyn Iterator<Item = Result<RecordBatch, String>>> = match reread {
            Some(Ok(batches)) => Box::new(batches),
            Some(Err(error)) => Box::new(std::iter::once(Err(error))),
            None => Box::new(std::iter::empty()),
        };
        let shard = plan.groups_shard(index);
        for batch in batches.into_iter().map(Ok).chain(from_file) {
            if failure.borrow().is_some() || context.abort.load(Ordering::Relaxed) {
                break;
            }
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    record(&failure, context, JobFailure::external(error));
                    break;
                }
            };
            rows_in += batch.num_rows() as u64;
            let item = SourceBatch { shard, batch, fetched: None, rejected: Vec::new() };
            feed(worker, &mut input, &probe, &mut time, plan.max_batches_in_flight, item);
        }
    }
    let shards: Vec<Shard> = match groups {
        true => Vec::new(),
        false => plan.shards_of(index, peers).copied().collect(),
    };
    let from_store: Vec<Shard> = shards.iter().filter(|s| !state.cache.holds(s.index)).copied().collect();
    let mut ahead = (!from_store.is_empty()).then(|| ReadAhead::start(&context.runtime, plan, from_store));
    // Start reading the first spill files now, and keep the next `SPILL_PREFETCH_SHARDS`
    // being read ahead of the worker (spill files bypass the page cache: see `spill_file`).
    for shard in shards.iter().take(SPILL_PREFETCH_SHARDS) {
        state.cache.prefetch(shard.index);
    }
    'shards: for (position, shard) in shards.iter().enumerate() {
        if failure.borrow().is_some() || context.abort.load(Ordering::Relaxed) {
            break;
        }
        let cache = &state.cache;
        if let Some(ahead) = shards.get(position + SPILL_PREFETCH_SHARDS) {
            cache.prefetch(ahead.index);
        }
        let mut started = Instant::now();
        let (mut batches, stage) = match cache.take(shard.index, usage) {
            Some(cached) => {
                let stage = if cached.spilled() { Stage::ReadSpilled } else { Stage::ReadCached };
                (ShardBatches::Cached(cached), stage)
            }
            None => (ShardBatches::Store, Stage::Read),
        };
        let mut collector = match batches {
            ShardBatches::Store => cache.collector(usage, shard.index),
            ShardBatches::Cached(_) => None,
        };
        loop {
            let next = match (&mut batches, ahead.as_mut()) {
                (ShardBatches::Cached(cached), _) => {
                    cached.next().map(|r| r.map(|b| (b, None)).map_err(JobFailure::external))
                }
                (ShardBatches::Store, Some(ahead)) => ahead.next(&context.runtime),
                (ShardBatches::Store, None) => Some(Err(JobFailure::internal("a shard to read has no read-ahead"))),
            };
            let Some(next) = next else { break };
            state.metrics.add(stage, started.elapsed());
            let (batch, fetched) = match next {
                Ok(batch) => batch,
                Err(error) => {
                    record(&failure, context, error);
                    break 'shards;
                }
            };
            if let Some(collector) = collector.as_mut() {
                state.metrics.time(Stage::Spill, || collector.push(cache, &batch));
            }
            rows_in += batch.num_rows() as u64;
            if progress {
                context.progress.rows_read(batch.num_rows());
            }
            let item = SourceBatch { shard: shard.index, batch, fetched, rejected: Vec::new() };
            feed(worker, &mut input, &probe, &mut time, plan.max_batches_in_flight, item);
            if failure.borrow().is_some() || context.abort.load(Ordering::Relaxed) {
                break 'shards;
            }
            started = Instant::now();
        }
        if let Some(collector) = collector {
            state.metrics.time(Stage::Spill, || cache.keep(collector));
        }
        if progress {
            context.progress.shard_done();
        }
    }
    if let Some(ahead) = ahead.take() {
        state.metrics.add(Stage::ReadAhead, ahead.busy());
    }
    input.close();
    while !probe.done() {
        worker.step_or_park(Some(PARK));
    }
    match failure.borrow_mut().take() {
        Some(failure) => Err(failure),
        // Stopped early by a sibling's failure or a signal: never a partial success.
        None if context.abort.load(Ordering::Relaxed) => Err(JobFailure::cancelled()),
        None => Ok(rows_in),
    }
}

/// Sends `item` into the pass at `time` (then the next time), and steps the worker until at
/// most `in_flight` batches are sent but not consumed (see the module documentation).
fn feed(
    worker: &mut Worker,
    input: &mut InputHandle<u64, CapacityContainerBuilder<Vec<SourceBatch>>>,
    probe: &ProbeHandle<u64>,
    time: &mut u64,
    in_flight: u64,
    item: SourceBatch,
) {
    input.send(item);
    *time += 1;
    input.advance_to(*time);
    worker.step();
    let horizon = time.saturating_sub(in_flight);
    while probe.less_than(&horizon) {
        worker.step_or_park(Some(PARK));
    }
}
