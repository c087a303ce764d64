//! `weir run --processes P`: starts P local `weir worker` processes that form one timely
//! cluster on 127.0.0.1, and watches them.
//!
//! The launcher and its children speak JSON lines: each child binds its own port and
//! reports it ([`ChildEvent::Listening`]); the launcher answers every child with all the
//! addresses on its stdin; children then report progress, their first failure, and their
//! result. On the first failure, or when a child dies, the launcher stops the others and
//! removes the run's directory `_weir/runs/<attempt>/` (its lease and staged files), so
//! nothing half-written stays behind.
//!
//! Children watch their stdin ([`watch_launcher`]): the launcher closes it to stop them
//! (after SIGINT/SIGTERM, or when another child failed), and the kernel closes it when the
//! launcher dies, even by SIGKILL. Either way the children cancel the run and never commit.
//! A leader that dies while publishing a decided commit leaves the decision behind; the
//! launcher completes it ([`complete_decided`]) and the run has succeeded.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_connectors::Location;
use weir_connectors::commit::complete_decided;
use weir_connectors::lease::remove_attempt;
use weir_engine::{JobFailure, ProgressSnapshot, RunSummary};

use crate::report::ProgressView;
use crate::signals::Stop;
use crate::vars::Variables;

/// The environment variable holding a cluster's shared secret. A launcher whose
/// environment has none gives its children a fresh random one.
pub const CLUSTER_SECRET_ENV: &str = "WEIR_CLUSTER_SECRET";

/// How long children have to report their ports.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long stopped children have to clean up and exit before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A message from a child to its launcher (one JSON line on the child's stdout).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildEvent {
    Listening { port: u16 },
    Progress(ProgressSnapshot),
    Failed(JobFailure),
    Done(RunSummary),
}

/// The launcher's one message to each child (one JSON line on its stdin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterAddresses {
    pub addresses: Vec<String>,
}

/// The child's end of the protocol: writes events to stdout, one line each.
#[derive(Clone, Default)]
pub struct EventSink {
    lock: Arc<Mutex<()>>,
}

impl EventSink {
    pub fn send(&self, event: &ChildEvent) {
        let _guard = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut stdout = std::io::stdout().lock();
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
    }
}

/// The child's side of the start-up: bind a port, report it, learn every address.
pub fn join_local_cluster(events: &EventSink) -> std::io::Result<(TcpListener, Vec<String>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    events.send(&ChildEvent::Listening { port: listener.local_addr()?.port() });
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let addresses: ClusterAddresses = serde_json::from_str(&line).map_err(std::io::Error::other)?;
    Ok((listener, addresses.addresses))
}

/// The child's side of being stopped: reads stdin after the addresses until it closes,
/// then asks the run to stop.
pub fn watch_launcher(stop: Stop) {
    std::thread::spawn(move || {
        let mut line = String::new();
        let stdin = std::io::stdin();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        stop.request("the launcher closed the connection");
    });
}

enum Message {
    Event(usize, ChildEvent),
    Closed(usize),
}

/// What the launcher needs to know about the run it starts.
pub struct LaunchPlan<'a> {
    pub job_path: &'a str,
    pub vars: &'a Variables,
    pub processes: usize,
    pub workers: usize,
    /// `--force`, passed on to every child.
    pub force: bool,
    /// `--base-dir`, passed on to every child.
    pub base_dir: Option<&'a std::path::Path>,
    pub sink: Location,
    /// `sink.rejects`, committed with the sink under the same attempt id.
    pub rejects: Option<Location>,
    /// The attempt id every child uses (the leader's lease and staging directory).
    pub attempt: String,
    pub runtime: &'a tokio::runtime::Runtime,
    pub stop: &'a Stop,
}

/// Runs the job on `processes` local processes and returns the leader's summary.
pub fn launch_local(plan: LaunchPlan<'_>, view: &ProgressView) -> Result<RunSummary, JobFailure> {
    let exe = std::env::current_exe().map_err(|e| JobFailure::internal(format!("cannot find the weir binary: {e}")))?;
    let (sender, receiver) = mpsc::channel();
    let mut children: Vec<Child> = Vec::with_capacity(plan.processes);
    let secret = match std::env::var(CLUSTER_SECRET_ENV) {
        Ok(secret) if !secret.is_empty() => secret,
        _ => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|e| JobFailure::internal(format!("no randomness for a cluster secret: {e}")))?;
            hex::encode(bytes)
        }
    };
    for process in 0..plan.processes {
        let mut command = Command::new(&exe);
        command
            .arg("worker")
            .arg(plan.job_path)
            .args(["--local-cluster", "--quiet"])
            .args(["--process", &process.to_string()])
            .args(["--processes", &plan.processes.to_string()])
            .args(["--workers", &plan.workers.to_string()])
            .args(["--attempt", &plan.attempt]);
        if plan.force {
            command.arg("--force");
        }
        if let Some(base) = plan.base_dir {
            command.arg("--base-dir").arg(base);
        }
        for (key, value) in plan.vars.pairs() {
            command.arg("--var").arg(format!("{key}={value}"));
        }
        command.env(CLUSTER_SECRET_ENV, &secret);
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                kill_all(&mut children);
                return Err(JobFailure::internal(format!("cannot start worker process {process}: {e}")));
            }
        };
        if let Some(stdout) = child.stdout.take() {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    match serde_json::from_str::<ChildEvent>(&line) {
                        Ok(event) => {
                            let _ = sender.send(Message::Event(process, event));
                        }
                        Err(_) => eprintln!("[process {process}] {line}"),
                    }
                }
                let _ = sender.send(Message::Closed(process));
            });
        }
        children.push(child);
    }
    drop(sender);

    let outcome = supervise(&mut children, &receiver, plan.processes, view, plan.stop);
    let outcome = match outcome {
        Ok(summary) => Ok(summary),
        // A child died: the others cannot finish without it.
        Err(Ending::Died(failure)) => {
            kill_all(&mut children);
            Err(failure)
        }
        // A child failed cleanly, or we were asked to stop: let the others wind down (the
        // leader then releases the lease itself) before killing what is left.
        Err(Ending::Failed(failure)) => {
            stop_all(&mut children);
            Err(failure)
        }
    };
    outcome.or_else(|failure| finish_failed_run(&plan, failure))
}

/// After a run's processes ended without a result: if the leader had decided the commit
/// (every worker had succeeded) and died while publishing, completes it, and the run has
/// succeeded; otherwise removes the attempt's directory.
fn finish_failed_run(plan: &LaunchPlan<'_>, failure: JobFailure) -> Result<RunSummary, JobFailure> {
    match plan.runtime.block_on(complete_decided(&plan.sink, &plan.attempt)) {
        Ok(Some(manifest)) => {
            eprintln!("weir: the leader process ended while publishing a decided commit; the launcher completed it");
            remove_attempts(plan);
            return Ok(RunSummary {
                rows_in: manifest.inputs.iter().map(|input| input.rows).sum(),
                rows_out: manifest.rows,
                bytes: manifest.bytes,
                files: manifest.files,
                stages: manifest.stages,
                passes: manifest.passes,
                checks: manifest.checks,
                rejects: manifest.rejects,
            });
        }
        Ok(None) => remove_attempts(plan),
        // The decision stays for the next run on the prefix, which completes it.
        Err(error) => tracing::warn!(%error, "could not complete the run's decided commit; the next run will"),
    }
    Err(failure)
}

/// Removes the attempt's directories under the sink and the rejects output (best effort:
/// the leases expire by themselves).
fn remove_attempts(plan: &LaunchPlan<'_>) {
    for output in std::iter::once(&plan.sink).chain(plan.rejects.as_ref()) {
        if let Err(error) = plan.runtime.block_on(remove_attempt(output, &plan.attempt)) {
            tracing::warn!(%error, output = %output.uri(), "could not remove the run's directory; its lease will expire");
        }
    }
}

/// Closes every child's stdin (asking it to stop), waits for them up to [`STOP_TIMEOUT`],
/// then kills those still running.
fn stop_all(children: &mut [Child]) {
    for child in children.iter_mut() {
        drop(child.stdin.take());
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline && children.iter_mut().any(|child| matches!(child.try_wait(), Ok(None))) {
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_all(children);
}

/// How a run that did not succeed ended, as the launcher saw it.
enum Ending {
    /// A child process ended without reporting a result.
    Died(JobFailure),
    /// A child reported a failure, or the launcher was asked to stop.
    Failed(JobFailure),
}

fn supervise(
    children: &mut [Child],
    receiver: &mpsc::Receiver<Message>,
    processes: usize,
    view: &ProgressView,
    stop: &Stop,
) -> Result<RunSummary, Ending> {
    let mut ports: Vec<Option<u16>> = vec![None; processes];
    let started = Instant::now();
    while ports.iter().any(Option::is_none) {
        if stop.requested() {
            return Err(Ending::Failed(JobFailure::cancelled()));
        }
        match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(Message::Event(process, ChildEvent::Listening { port })) => ports[process] = Some(port),
            Ok(Message::Event(_, ChildEvent::Failed(failure))) => return Err(Ending::Failed(failure)),
            Ok(Message::Closed(process)) => return Err(Ending::Died(died(children, process))),
            Ok(Message::Event(..)) => {}
            Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() > START_TIMEOUT => {
                return Err(Ending::Died(JobFailure::external("worker processes did not start in time")));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Ending::Died(JobFailure::internal("lost every worker process")));
            }
        }
    }
    let addresses =
        ClusterAddresses { addresses: ports.iter().flatten().map(|port| format!("127.0.0.1:{port}")).collect() };
    let line = serde_json::to_string(&addresses).map_err(|e| Ending::Died(JobFailure::internal(e.to_string())))?;
    for (process, child) in children.iter_mut().enumerate() {
        let written = child.stdin.as_mut().map(|stdin| writeln!(stdin, "{line}").and_then(|_| stdin.flush()));
        if !matches!(written, Some(Ok(()))) {
            return Err(Ending::Died(died(children, process)));
        }
    }

    let mut progress = vec![ProgressSnapshot::default(); processes];
    let mut summaries: Vec<Option<RunSummary>> = vec![None; processes];
    let mut open = processes;
    // Once asked to stop, the children are told (their stdin closes) and the launcher keeps
    // listening: the leader may have committed before it heard, and then the run succeeded.
    let mut stopping: Option<Instant> = None;
    while open > 0 {
        if stopping.is_none() && stop.requested() {
            for child in children.iter_mut() {
                drop(child.stdin.take());
            }
            stopping = Some(Instant::now());
        }
        if stopping.is_some_and(|since| since.elapsed() > STOP_TIMEOUT) {
            return Err(Ending::Failed(JobFailure::cancelled()));
        }
        match receiver.recv_timeout(Duration::from_millis(50)) {
            Ok(Message::Event(process, ChildEvent::Progress(snapshot))) => progress[process] = snapshot,
            Ok(Message::Event(_, ChildEvent::Failed(_))) if stopping.is_some() => {}
            Ok(Message::Event(_, ChildEvent::Failed(failure))) => return Err(Ending::Failed(failure)),
            Ok(Message::Event(process, ChildEvent::Done(summary))) => summaries[process] = Some(summary),
            Ok(Message::Event(_, ChildEvent::Listening { .. })) => {}
            Ok(Message::Closed(process)) => {
                if summaries[process].is_none() {
                    return Err(match stopping {
                        Some(_) => Ending::Failed(JobFailure::cancelled()),
                        None => Ending::Died(died(children, process)),
                    });
                }
                open -= 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let mut total = ProgressSnapshot::default();
        progress.iter().for_each(|p| total.add(p));
        view.update(&total);
    }
    for (process, child) in children.iter_mut().enumerate() {
        match child.wait() {
            Ok(status) if status.success() => {}
            _ => return Err(Ending::Died(died(children, process))),
        }
    }
    summaries
        .into_iter()
        .next()
        .flatten()
        .ok_or_else(|| Ending::Died(JobFailure::internal("the leader process reported no result")))
}

/// The failure for a child that ended without reporting one.
fn died(children: &mut [Child], process: usize) -> JobFailure {
    let status = children[process].wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
    JobFailure::external(format!("worker process {process} ended unexpectedly ({status}); the run was not committed"))
}

fn kill_all(children: &mut [Child]) {
    for child in children.iter_mut() {
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}
