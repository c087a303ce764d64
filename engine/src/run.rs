//! Running a plan on this process's share of a cluster.

use timely::WorkerConfig;
use weir_connectors::manifest::ClusterInfo;

use crate::context::{ProcessContext, RunSummary};
use crate::plan::SharedPlan;
use crate::worker::run_worker;
use crate::{ClusterSetup, JobFailure};

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
