//! Running a plan on this process's share of a cluster.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use timely::WorkerConfig;
use weir_connectors::manifest::{ClusterInfo, StageTime};
use weir_connectors::parquet_sink::PartFile;

use crate::plan::SharedPlan;
use crate::worker::run_worker;
use crate::{ClusterSetup, JobFailure, Progress};

/// What the workers of a process share besides the plan.
#[derive(Clone)]
pub struct ProcessContext {
    /// Drives the connectors' async I/O from the worker threads.
    pub runtime: tokio::runtime::Handle,
    pub progress: Arc<Progress>,
    /// Set when a worker of this process fails, so its siblings stop reading.
    pub abort: Arc<AtomicBool>,
    /// Called once per failing worker, as soon as it fails (before the run winds down).
    pub on_failure: Arc<dyn Fn(&JobFailure) + Send + Sync>,
    /// The cluster's shared secret (`WEIR_CLUSTER_SECRET`), proven by every process that
    /// joins; empty when none was given.
    pub cluster_secret: Vec<u8>,
    /// How long the processes of a cluster wait for each other.
    pub connect_timeout: std::time::Duration,
}

/// The outcome of a committed run, known to every worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub rows_in: u64,
    pub rows_out: u64,
    pub bytes: u64,
    pub files: Vec<PartFile>,
    /// Where the time went, summed over all workers (as in the manifest).
    pub stages: Vec<StageTime>,
    /// Passes over the source.
    pub passes: u32,
}

/// Runs `plan` on this process's workers of the cluster `setup` describes, and returns
/// once the run is committed or has failed everywhere.
pub fn execute(plan: SharedPlan, setup: ClusterSetup, context: ProcessContext) -> Result<RunSummary, JobFailure> {
    let cluster = ClusterInfo { processes: setup.processes(), workers_per_process: setup.workers_per_process() };
    let handshake = crate::cluster::Handshake {
        attempt: plan.attempt.clone(),
        secret: context.cluster_secret.clone(),
        workers: setup.workers_per_process(),
        timeout: context.connect_timeout,
    };
    let (builders, others) = setup.connect(&handshake)?;
    let guards = timely::execute::execute_from(builders, others, WorkerConfig::default(), move |worker| {
        run_worker(worker, &plan, &context, &cluster)
    })
    .map_err(|e| JobFailure::internal(format!("cannot start the workers: {e}")))?;
    let mut outcome = None;
    for result in guards.join() {
        let result = result.map_err(|panic| JobFailure::internal(format!("a worker panicked: {panic}")))?;
        match result {
            Err(failure) => return Err(failure),
            Ok(summary) => outcome = outcome.or(Some(summary)),
        }
    }
    outcome.ok_or_else(|| JobFailure::internal("no worker ran"))
}
