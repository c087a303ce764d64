//! The run queue: starts queued runs in submission order while fewer than
//! `max_concurrent_runs` run, watches each run's process to its end, cancels, and, when the
//! service starts, reconciles the runs a previous service left `running`.
//!
//! A run is moved to `running` in the database before its process starts
//! ([`Store::claim_next`]); if the service dies between the two, the next start finds a
//! `running` run without a live process and marks it `lost`. So no run ever starts twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::Notify;
use weir_engine::FailureKind;
use weir_jobs::run::result_file::{ResultState, RunResult, kind_name};

use super::executor::{Executor, Exit, Launch, RunHandle};
use super::schedules::{Clock, schedule_pass};
use super::store::{Ending, NewRun, Run, RunState, Store};

/// The queue and the runs in flight.
pub struct Scheduler {
    pub store: Arc<Store>,
    executor: Arc<dyn Executor>,
    clock: Arc<dyn Clock>,
    state_dir: PathBuf,
    max_running: usize,
    /// Worker threads of a run that does not ask for a number.
    default_workers: usize,
    grace: Duration,
    wake: Notify,
}

impl Scheduler {
    pub fn new(
        store: Arc<Store>,
        executor: Arc<dyn Executor>,
        clock: Arc<dyn Clock>,
        state_dir: &Path,
        max_running: usize,
        grace: Duration,
    ) -> Arc<Scheduler> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Arc::new(Scheduler {
            store,
            executor,
            clock,
            state_dir: state_dir.to_path_buf(),
            max_running: max_running.max(1),
            default_workers: (cores / max_running.max(1)).max(1),
            grace,
            wake: Notify::new(),
        })
    }

    /// The folder of run `id`: its job file, log and result.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("runs").join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.run_dir(id).join("log")
    }

    /// The scheduler's time (its clock's).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Wakes the queue (after a submission or a cancellation).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Reconciles what a previous service left running, then runs the queue forever.
    pub async fn run(self: Arc<Self>) {
        self.reconcile().await;
        loop {
            match schedule_pass(&self.store, self.clock.now()) {
                Ok(pass) => {
                    for (job, tick) in &pass.submitted {
                        tracing::info!("scheduled a run of '{job}' for the tick at {tick}");
                    }
                }
                Err(error) => tracing::error!("the schedules cannot read the database: {error}"),
            }
            if let Err(error) = super::backfill::backfill_pass(&self.store) {
                tracing::error!("the backfills cannot read the database: {error}");
            }
            loop {
                match self.store.claim_next(self.max_running) {
                    Ok(Some(run)) => self.clone().start(run),
                    Ok(None) => break,
                    Err(error) => {
                        tracing::error!("the queue cannot read the database: {error}");
                        break;
                    }
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Runs left `running` by a previous service: re-attached if their process lives, else
    /// finished from their result file, else lost.
    async fn reconcile(self: &Arc<Self>) {
        let running = match self.store.runs_in(RunState::Running) {
            Ok(runs) => runs,
            Err(error) => {
                tracing::error!("cannot reconcile the runs in flight: {error}");
                return;
            }
        };
        for run in running {
            let handle =
                run.pid.and_then(|pid| u32::try_from(pid).ok()).and_then(|pid| self.executor.reattach(&run.id, pid));
            match handle {
                Some(handle) => {
                    tracing::info!("re-attached run {} (pid {})", run.id, handle.pid());
                    self.clone().watch(run.id.clone(), handle);
                }
                None if self.run_dir(&run.id).join("result.json").exists() => self.complete(&run.id, Exit::Unknown),
                None => {
                    let (state, ending) = match clean_up_lost_run(&run).await {
                        Ok(true) => (
                            RunState::Succeeded,
                            Ending {
                                exit_code: Some(0),
                                error: Some(
                                    "the run's process ended while publishing its decided commit; the service completed it".into(),
                                ),
                                ..Ending::default()
                            },
                        ),
                        Ok(false) => (
                            RunState::Lost,
                            Ending {
                                error: Some(
                                    "the service stopped while the run was in flight, and its process is gone; what it had staged was removed"
                                        .into(),
                                ),
                                ..Ending::default()
                            },
                        ),
                        Err(cleanup) => (
                            RunState::Lost,
                            Ending {
                                error: Some(format!(
                                    "the service stopped while the run was in flight, and its process is gone; what it staged could not be removed ({cleanup}); the next run on its output removes it once its lease expires"
                                )),
                                ..Ending::default()
                            },
                        ),
                    };
                    if let Err(error) = self.store.finish(&run.id, state, &ending) {
                        tracing::error!("cannot record the end of run {}: {error}", run.id);
                    }
                }
            }
        }
    }

    fn start(self: Arc<Self>, run: Run) {
        let dir = self.run_dir(&run.id);
        let launch = Launch {
            run_id: run.id.clone(),
            job_file: dir.join("job.toml"),
            vars: run.vars.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect(),
            workers: run.workers.and_then(|w| usize::try_from(w).ok()).unwrap_or(self.default_workers).max(1),
            log: dir.join("log"),
            result: dir.join("result.json"),
            base_dir: std::env::current_dir().unwrap_or_default(),
            allowed_keys: run.allowed_keys.clone(),
        };
        let started = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&launch.job_file, &run.definition))
            .map_err(|error| format!("cannot write {}: {error}", launch.job_file.display()))
            .and_then(|()| self.executor.start(&launch));
        match started {
            Ok(handle) => {
                if let Err(error) = self.store.set_pid(&run.id, handle.pid()) {
                    tracing::error!("cannot record the pid of run {}: {error}", run.id);
                }
                // A cancel that came between the claim and the start.
                if self.store.run(&run.id).ok().flatten().is_some_and(|r| r.cancel_requested) {
                    self.executor.signal(handle.pid(), Signal::SIGTERM);
                }
                self.watch(run.id, handle);
            }
            Err(error) => {
                let ending = Ending {
                    exit_class: Some(kind_name(FailureKind::Internal)),
                    error: Some(error),
                    ..Ending::default()
                };
                if let Err(error) = self.store.finish(&run.id, RunState::Failed, &ending) {
                    tracing::error!("cannot record the failure of run {}: {error}", run.id);
                }
            }
        }
    }

    fn watch(self: Arc<Self>, id: String, handle: Box<dyn RunHandle>) {
        tokio::spawn(async move {
            let exit = handle.wait().await;
            self.complete(&id, exit);
            self.wake();
        });
    }

    /// Records how run `id` ended, from its result file and its exit.
    fn complete(&self, id: &str, exit: Exit) {
        let result = RunResult::read(&self.run_dir(id).join("result.json"));
        let cancel_requested = self.store.run(id).ok().flatten().is_some_and(|run| run.cancel_requested);
        // Why a failed run failed: its result's kind, else a fault of Weir's.
        let mut failure = None;
        let state = match &result {
            Some(result) if result.state == ResultState::Succeeded => RunState::Succeeded,
            Some(result) if result.state == ResultState::Cancelled || cancel_requested => RunState::Cancelled,
            None if cancel_requested => RunState::Cancelled,
            Some(result) => {
                failure = Some(result.kind.unwrap_or(FailureKind::Internal));
                RunState::Failed
            }
            None => {
                failure = Some(FailureKind::Internal);
                RunState::Failed
            }
        };
        let exit_class = failure.map(kind_name);
        let ending = match (result, state) {
            (Some(result), RunState::Succeeded) => Ending {
                exit_code: Some(0),
                rows_in: result.rows_in,
                rows_out: result.rows_out,
                summary: Some(serde_json::Value::Object(result.summary)),
                ..Ending::default()
            },
            (Some(result), RunState::Cancelled) => {
                Ending { exit_code: result.exit_code, error: result.message, ..Ending::default() }
            }
            (Some(result), _) => {
                Ending { exit_class, exit_code: result.exit_code, error: result.message, ..Ending::default() }
            }
            (None, RunState::Cancelled) => Ending { error: Some(describe(exit)), ..Ending::default() },
            (None, _) => Ending {
                exit_class,
                exit_code: match exit {
                    Exit::Code(code) => Some(code.into()),
                    _ => None,
                },
                error: Some(format!("the run's process ended without a result ({})", describe(exit))),
                ..Ending::default()
            },
        };
        // Another attempt may succeed where the outside world failed, or the input was not
        // there yet.
        let retry = matches!(failure, Some(FailureKind::External | FailureKind::InputNotReady));
        let next = if retry { self.next_attempt(id, &ending) } else { None };
        match self.store.finish_with_next(id, state, &ending, next.as_ref()) {
            Ok(true) => {
                if let Some(next) = next {
                    tracing::info!("run {id} failed for an external reason; attempt {} queued", next.attempt);
                }
            }
            Ok(false) => {}
            Err(error) => tracing::error!("cannot record the end of run {id}: {error}"),
        }
    }

    /// The next attempt of run `id`, which is ending as `ending` (failed for an External
    /// reason or because its input was not ready): queued with the failure in one
    /// transaction if its job's `retries` allow one, or, for input not ready, while its job's
    /// `wait_for_input_s` (from the first attempt) lasts; to start `retry_delay_s` from now.
    /// Every attempt is its own run.
    fn next_attempt(&self, id: &str, ending: &Ending) -> Option<NewRun> {
        let Ok(Some(mut failed)) = self.store.run(id) else { return None };
        failed.exit_class = ending.exit_class.clone();
        let policy = retry_policy(&failed.definition);
        let first = failed.retry_of.clone().unwrap_or_else(|| failed.id.clone());
        let again = if failed.exit_class == Some(kind_name(FailureKind::InputNotReady)) {
            let started = self.store.run(&first).ok().flatten().and_then(|run| run.started_at);
            let waited = started
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok())
                .map(|at| (self.clock.now() - at.with_timezone(&chrono::Utc)).num_seconds().max(0) as u64)
                .unwrap_or(u64::MAX);
            waited.saturating_add(policy.delay_s) <= policy.wait_for_input_s
        } else {
            failed.attempt <= i64::from(policy.retries)
        };
        if !again {
            return None;
        }
        let delay = policy.delay_s;
        let not_before = self.clock.now() + chrono::Duration::seconds(delay as i64);
        let next = NewRun {
            id: weir_jobs::vars::new_run_id(),
            job: failed.job.clone(),
            job_version: failed.job_version,
            job_sha256: failed.job_sha256.clone(),
            definition: failed.definition.clone(),
            vars: failed.vars.clone(),
            idempotency_key: failed.idempotency_key.as_ref().map(|key| format!("{key}/attempt-{}", failed.attempt + 1)),
            submitted_by: failed.submitted_by.clone(),
            workers: failed.workers,
            output_uri: failed.output_uri.clone().unwrap_or_default(),
            attempt: failed.attempt + 1,
            retry_of: Some(first),
            not_before: Some(not_before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            allowed_keys: failed.allowed_keys.clone(),
        };
        Some(next)
    }

    /// Cancels a running run: SIGTERM to its process group now, SIGKILL after the grace.
    pub fn cancel_running(self: &Arc<Self>, run: &Run) {
        let Some(pid) = run.pid.and_then(|pid| u32::try_from(pid).ok()) else { return };
        self.executor.signal(pid, Signal::SIGTERM);
        let this = self.clone();
        let id = run.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.grace).await;
            if this.store.run(&id).ok().flatten().is_some_and(|run| run.state == RunState::Running) {
                this.executor.signal(pid, Signal::SIGKILL);
            }
        });
    }
}

/// For a run whose process died with the service: completes a commit it had decided (then
/// the output is committed: `Ok(true)`), else removes what it staged under its output's
/// `_weir/runs/<run_id>.*/` (`Ok(false)`). Only the run's own attempt directories are touched.
async fn clean_up_lost_run(run: &Run) -> Result<bool, String> {
    let mut pairs: Vec<(String, String)> =
        run.vars.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect();
    pairs.push(("run_id".into(), run.id.clone()));
    let job =
        weir_jobs::planning::load_job_text("definition", &run.definition, &weir_jobs::vars::Variables::new(&pairs))
            .map_err(|error| error.to_string())?;
    let output = weir_connectors::Location::parse(&job.spec.sink.uri, &job.spec.storage).map_err(|e| e.to_string())?;
    let mut committed = false;
    for attempt in weir_connectors::lease::attempts_of_run(&output, &run.id).await.map_err(|e| e.to_string())? {
        if weir_connectors::commit::complete_decided(&output, &attempt).await.map_err(|e| e.to_string())?.is_some() {
            committed = true;
        }
        weir_connectors::lease::remove_attempt(&output, &attempt).await.map_err(|e| e.to_string())?;
    }
    // A rejects output's attempts: those of a committed run were completed with it above;
    // what is left was staged by a run that did not commit.
    if let Some(uri) = &job.spec.sink.rejects {
        let rejects = weir_connectors::Location::parse(uri, &job.spec.storage).map_err(|e| e.to_string())?;
        for attempt in weir_connectors::lease::attempts_of_run(&rejects, &run.id).await.map_err(|e| e.to_string())? {
            weir_connectors::lease::remove_attempt(&rejects, &attempt).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(committed)
}

/// When a job's failed runs are tried again.
#[derive(Debug, Default)]
struct RetryPolicy {
    retries: u32,
    delay_s: u64,
    wait_for_input_s: u64,
}

/// A definition's `retries`, `retry_delay_s` and `wait_for_input_s` (none when it cannot
/// be read).
fn retry_policy(definition: &str) -> RetryPolicy {
    let vars = weir_jobs::vars::Variables::new(&[]);
    vars.parse_and_substitute("definition", definition)
        .ok()
        .and_then(|document| weir_jobs::spec::JobSpec::from_document(document, definition).ok())
        .map(|spec| RetryPolicy {
            retries: spec.retries,
            delay_s: spec.retry_delay_s.unwrap_or(weir_jobs::spec::DEFAULT_RETRY_DELAY_S),
            wait_for_input_s: spec.wait_for_input_s,
        })
        .unwrap_or_default()
}

fn describe(exit: Exit) -> String {
    match exit {
        Exit::Code(code) => format!("exit status {code}"),
        Exit::Signal(signal) => format!("killed by signal {signal}"),
        Exit::Unknown => "exit status unknown".into(),
    }
}
