//! Running a plan on this process's worker threads (alone, or as one process of a
//! cluster), with its progress shown on a [`ProgressView`] and/or sent to a launcher.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir_engine::{ClusterSetup, EnginePlan, JobFailure, ProcessContext, Progress, RunSummary, execute};

use crate::launcher::{CLUSTER_SECRET_ENV, ChildEvent, EventSink};
use crate::report::ProgressView;
use crate::signals::Stop;

/// Runs a plan on this process's workers, showing progress on `view` and/or sending it as
/// events to a launcher.
pub fn run_in_process(
    plan: EnginePlan,
    setup: ClusterSetup,
    runtime: &tokio::runtime::Runtime,
    view: &ProgressView,
    events: Option<EventSink>,
    stop: &Stop,
) -> Result<RunSummary, JobFailure> {
    let progress = Arc::new(Progress::default());
    let failure_events = events.clone();
    let context = ProcessContext {
        runtime: runtime.handle().clone(),
        progress: progress.clone(),
        abort: stop.abort_flag(),
        on_failure: Arc::new(move |failure: &JobFailure| {
            if let Some(events) = &failure_events {
                events.send(&ChildEvent::Failed(failure.clone()));
            }
        }),
        cluster_secret: std::env::var(CLUSTER_SECRET_ENV).unwrap_or_default().into_bytes(),
        connect_timeout: std::env::var("WEIR_CONNECT_TIMEOUT_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(weir_engine::cluster::DEFAULT_CONNECT_TIMEOUT),
    };
    let finished = Arc::new(AtomicBool::new(false));
    let outcome = std::thread::scope(|scope| {
        let (finished_flag, reporter_progress) = (finished.clone(), progress.clone());
        let reporter = scope.spawn(move || {
            while !finished_flag.load(Ordering::Relaxed) {
                let snapshot = reporter_progress.snapshot();
                view.update(&snapshot);
                if let Some(events) = &events {
                    events.send(&ChildEvent::Progress(snapshot));
                }
                // Woken early when the run ends, so a short run is not stretched to a tick.
                std::thread::park_timeout(Duration::from_millis(200));
            }
        });
        let outcome = execute(Arc::new(plan), setup, context);
        finished.store(true, Ordering::Relaxed);
        reporter.thread().unpark();
        outcome
    });
    view.update(&progress.snapshot());
    outcome
}
