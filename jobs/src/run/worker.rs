//! `weir worker`: one process of a cluster. Of a multi-host cluster, from a hostfile (or a
//! Kubernetes Indexed Job's environment), every process deriving the same run id and
//! attempt from what they share; or of a local cluster that `weir run --processes` started,
//! talking to its launcher on stdin and stdout.

use weir_engine::{ClusterSetup, JobFailure, RunSummary};

use super::in_process::run_in_process;
use super::plan::{Planned, default_workers, in_job, load_and_plan, nothing_new, print_warnings, with_run_date};
use crate::kubernetes::KubernetesCluster;
use crate::launcher::{ChildEvent, EventSink, join_local_cluster, watch_launcher};
use crate::planning::{RunOptions, sha256_hex};
use crate::report::{OutputMode, ProgressView, SummaryReport};
use crate::signals::Stop;
use crate::vars::Variables;

/// What `weir worker` is asked to do.
pub struct WorkerRequest<'a> {
    /// The job file (the same on every process).
    pub job: &'a str,
    /// A hostfile's path, or `kubernetes`.
    pub hostfile: Option<String>,
    /// This process's index.
    pub process: Option<usize>,
    /// Worker threads in this process (default: the cores).
    pub workers: Option<usize>,
    /// `--var`s (the same on every process).
    pub vars: Vec<(String, String)>,
    pub force: bool,
    pub base_dir: Option<&'a str>,
    pub mode: OutputMode,
    /// Started by `weir run --processes`: talk to the launcher on stdin/stdout.
    pub local_cluster: bool,
    /// The size of the local cluster.
    pub processes: Option<usize>,
    /// The attempt id the launcher chose.
    pub attempt: Option<String>,
}

/// Runs this process's part of a cluster's run.
pub fn run_worker(
    request: WorkerRequest<'_>,
    runtime: &tokio::runtime::Runtime,
    stop: &Stop,
) -> Result<(), JobFailure> {
    let WorkerRequest {
        job,
        hostfile,
        process,
        workers,
        vars,
        force,
        base_dir,
        mode,
        local_cluster,
        processes,
        attempt,
    } = request;
    let role = WorkerRole {
        hostfile,
        process: process.unwrap_or(0),
        processes,
        workers: workers.unwrap_or_else(|| default_workers(1)).max(1),
        local_cluster,
    };
    let options = RunOptions { attempt, force, base_dir: base_dir.map(Into::into), fit_output: None };
    let vars = if local_cluster { vars } else { with_run_date(job, vars)? };
    worker(job, role, vars, options, mode, runtime, stop)
}

/// Which process of which cluster a `weir worker` is.
struct WorkerRole {
    hostfile: Option<String>,
    process: usize,
    processes: Option<usize>,
    workers: usize,
    local_cluster: bool,
}

fn worker(
    path: &str,
    role: WorkerRole,
    mut pairs: Vec<(String, String)>,
    mut options: RunOptions,
    mode: OutputMode,
    runtime: &tokio::runtime::Runtime,
    stop: &Stop,
) -> Result<(), JobFailure> {
    let WorkerRole { hostfile, process, processes, workers, local_cluster } = role;
    if local_cluster {
        let events = EventSink::default();
        let cluster = LocalCluster { process, processes: processes.unwrap_or(1), workers };
        let outcome = local_cluster_worker(path, cluster, &pairs, &options, runtime, &events, stop);
        match &outcome {
            Ok(summary) => events.send(&ChildEvent::Done(summary.clone())),
            Err(failure) => events.send(&ChildEvent::Failed(failure.clone())),
        }
        return outcome.map(|_| ());
    }
    let hostfile = hostfile.unwrap_or_default();
    let kubernetes = if hostfile == "kubernetes" {
        Some(KubernetesCluster::from_env(|name| std::env::var(name).ok()).map_err(JobFailure::user)?)
    } else {
        None
    };
    let process = kubernetes.as_ref().map_or(process, |cluster| cluster.process);
    let hosts = match &kubernetes {
        Some(cluster) => cluster.hostfile(),
        None => std::fs::read_to_string(&hostfile)
            .map_err(|e| JobFailure::user(format!("cannot read hostfile '{hostfile}': {e}")))?,
    };
    let addresses = hostfile_addresses(&hosts);
    if process >= addresses.len() {
        return Err(JobFailure::user(format!(
            "--process {process} is not a line of hostfile '{hostfile}' ({} processes)",
            addresses.len()
        )));
    }
    let vars = agree_on_run(path, &hosts, &mut pairs, &mut options);
    let (job, plan) = match load_and_plan(path, &vars, &options, runtime)? {
        (job, Planned::Run(plan)) => (job, *plan),
        (job, Planned::NothingNew(nothing)) => {
            // Every process sees the same ledger; process 0 says so.
            if process == 0 {
                nothing_new(&job, &nothing, mode);
            }
            return Ok(());
        }
    };
    if process == 0 {
        print_warnings(&plan, mode);
    }
    let output = plan.sink.uri();
    let view = ProgressView::new(plan.shards.len() as u64, if process == 0 { mode } else { OutputMode::SILENT });
    let setup = match &kubernetes {
        // A pod listens on all its interfaces: its own DNS name may not resolve yet.
        Some(cluster) => {
            let listener = std::net::TcpListener::bind(("0.0.0.0", cluster.port))
                .map_err(|e| JobFailure::external(format!("cannot listen on port {}: {e}", cluster.port)))?;
            ClusterSetup::LocalProcess { workers, process, addresses, listener }
        }
        None => ClusterSetup::Hosts { workers, process, addresses },
    };
    let summary = run_in_process(plan, setup, runtime, &view, None, stop);
    view.finish();
    let summary = summary.map_err(in_job(&job))?;
    if process == 0 {
        SummaryReport::new(&job.spec.name, vars.run_id(), output, &summary, view.elapsed()).print(mode);
    }
    Ok(())
}

/// The addresses of a hostfile: one `host:port` a line, blank lines and `#` comments
/// skipped.
pub fn hostfile_addresses(hosts: &str) -> Vec<String> {
    hosts.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).map(str::to_string).collect()
}

/// Every process must agree on the run id and the attempt without talking: derives them
/// from what they share (the job file, the hostfile, the variables), unless given.
fn agree_on_run(path: &str, hosts: &str, pairs: &mut Vec<(String, String)>, options: &mut RunOptions) -> Variables {
    let job_text = std::fs::read_to_string(path).unwrap_or_default();
    let hex = sha256_hex(format!("{job_text}\n{hosts}\n{pairs:?}").as_bytes())[..16].to_string();
    if !pairs.iter().any(|(key, _)| key == "run_id") {
        pairs.push(("run_id".to_string(), hex.clone()));
    }
    let vars = Variables::new(pairs);
    if options.attempt.is_none() {
        options.attempt = Some(format!("{}.{}", vars.run_id(), &hex[..8]));
    }
    vars
}

/// Which process of a local cluster this is.
struct LocalCluster {
    process: usize,
    processes: usize,
    workers: usize,
}

fn local_cluster_worker(
    path: &str,
    cluster: LocalCluster,
    pairs: &[(String, String)],
    options: &RunOptions,
    runtime: &tokio::runtime::Runtime,
    events: &EventSink,
    stop: &Stop,
) -> Result<RunSummary, JobFailure> {
    let LocalCluster { process, processes, workers } = cluster;
    let (listener, addresses) =
        join_local_cluster(events).map_err(|e| JobFailure::external(format!("cannot join the local cluster: {e}")))?;
    if addresses.len() != processes {
        return Err(JobFailure::internal("the launcher sent a cluster of the wrong size"));
    }
    // The launcher holds our stdin: when it closes (it stopped us, or died), stop.
    watch_launcher(stop.clone());
    let plan = match load_and_plan(path, &Variables::new(pairs), options, runtime)? {
        (_, Planned::Run(plan)) => *plan,
        // The launcher planned first and found new files; the output moved on since.
        (_, Planned::NothingNew(nothing)) => return Err(nothing.to_failure()),
    };
    let view = ProgressView::new(0, OutputMode::SILENT);
    let setup = ClusterSetup::LocalProcess { workers, process, addresses, listener };
    run_in_process(plan, setup, runtime, &view, Some(events.clone()), stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostfile_lines_skip_blanks_and_comments() {
        let hosts = "# the cluster\n10.0.0.1:7000\n\n  10.0.0.2:7000  \n";
        assert_eq!(hostfile_addresses(hosts), ["10.0.0.1:7000", "10.0.0.2:7000"]);
    }
}
