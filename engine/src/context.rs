//! What a process's workers share while they run a plan ([`ProcessContext`]), and what a
//! committed run reports ([`RunSummary`]). Kept apart from [`crate::run`], which starts the
//! workers, so that the modules the workers use do not import the module that starts them.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use weir_connectors::manifest::{CheckResult, RejectsInfo, StageTime};
use weir_connectors::parquet_sink::PartFile;

use crate::{JobFailure, Progress};

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
    /// The results of the job's `check` steps, as the manifest holds them.
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    /// `sink.rejects`: where the rows the steps rejected went, and how many.
    #[serde(default)]
    pub rejects: Option<RejectsInfo>,
}
