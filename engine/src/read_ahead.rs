//! Decoding a worker's shards ahead of it. In a pass, the shards a worker reads from the
//! store are fetched and decoded by one task on the process's I/O runtime, in the worker's
//! order, into a bounded channel ([`READ_AHEAD_BATCHES`] batches), so that decoding the
//! next batch overlaps the worker applying the steps to the current one and writing it.
//! Memory stays bounded: at most that many decoded batches wait, plus the one being decoded.
//!
//! The worker's `read (wait for fetch + decode)` clock then measures what it waits for a batch; the
//! task's own time is reported beside it as overlapped work ([`crate::metrics`]). A failure
//! ends the task after sending it; a worker that stops early drops its `ReadAhead`, which
//! stops the task (no batch is decoded for nobody for long: the channel is full after a few).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use weir_connectors::fetched_chunks::FetchedChunks;
use weir_connectors::source::Shard;

use crate::JobFailure;
use crate::plan::SharedPlan;

/// Decoded batches that may wait for the worker.
pub(crate) const READ_AHEAD_BATCHES: usize = 2;

/// A decoded batch, and on its shard's first batch the column chunks the shard's read
/// kept (when the sink copies them: [`weir_connectors::chunk_copy`]).
pub(crate) type ReadBatch = (RecordBatch, Option<Arc<FetchedChunks>>);

enum Ahead {
    Batch(ReadBatch),
    /// The current shard has no more rows.
    ShardEnd,
    Failed(JobFailure),
}

/// The read-ahead of one worker's pass; see the module documentation.
pub(crate) struct ReadAhead {
    receiver: mpsc::Receiver<Ahead>,
    task: tokio::task::JoinHandle<()>,
    /// Nanoseconds the task spent fetching and decoding.
    busy: Arc<AtomicU64>,
}

impl ReadAhead {
    /// Starts reading `shards`, in this order.
    pub fn start(runtime: &Handle, plan: &SharedPlan, shards: Vec<Shard>) -> ReadAhead {
        let (sender, receiver) = mpsc::channel(READ_AHEAD_BATCHES);
        let busy = Arc::new(AtomicU64::new(0));
        let (plan, clock) = (plan.clone(), busy.clone());
        let task = runtime.spawn(async move {
            let timed = |started: Instant| clock.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            for shard in shards {
                let started = Instant::now();
                let mut keep = plan.part_options.copy_columns.is_some().then(|| Arc::new(FetchedChunks::default()));
                let mut stream = match plan.source.read_shard(&shard, plan.batch_size, keep.clone()) {
                    Ok(stream) => stream,
                    Err(error) => {
                        let _ = sender.send(Ahead::Failed(JobFailure::from_connector(&error))).await;
                        return;
                    }
                };
                timed(started);
                loop {
                    let started = Instant::now();
                    let next = stream.next().await;
                    timed(started);
                    let item = match next {
                        // The first batch's read fetched the row group's chunks.
                        Some(Ok(batch)) => Ahead::Batch((batch, keep.take())),
                        Some(Err(error)) => Ahead::Failed(JobFailure::from_connector(&error)),
                        None => Ahead::ShardEnd,
                    };
                    let last = !matches!(item, Ahead::Batch(_));
                    let failed = matches!(item, Ahead::Failed(_));
                    if sender.send(item).await.is_err() || failed {
                        return;
                    }
                    if last {
                        break;
                    }
                }
            }
        });
        ReadAhead { receiver, task, busy }
    }

    /// The next batch of the current shard, with the chunks its read kept; `None` at the
    /// shard's end.
    pub fn next(&mut self, runtime: &Handle) -> Option<Result<ReadBatch, JobFailure>> {
        match runtime.block_on(self.receiver.recv()) {
            Some(Ahead::Batch(read)) => Some(Ok(read)),
            Some(Ahead::ShardEnd) => None,
            Some(Ahead::Failed(failure)) => Some(Err(failure)),
            None => Some(Err(JobFailure::internal("the read-ahead of a pass ended before its shards did"))),
        }
    }

    /// The time the task has spent fetching and decoding so far.
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy.load(Ordering::Relaxed))
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}
