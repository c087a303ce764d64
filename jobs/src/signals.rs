//! Stopping a run from outside: SIGINT and SIGTERM, and (for a process of a local cluster)
//! the launcher going away.
//!
//! The first signal sets the process's abort flag: workers stop reading, every worker's
//! pass ends as cancelled, the leader deletes what the run staged and releases the lease,
//! and the binary exits 130 (SIGINT) or 143 (SIGTERM). If that has not happened within
//! [`GRACE`], or a second signal comes, the process exits at once with the same code; its
//! lease then expires by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

/// How long a stopped run may take to clean up before the process exits anyway.
pub const GRACE: Duration = Duration::from_secs(30);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// A process's stop request: the abort flag workers watch, and the signal that set it.
#[derive(Clone, Default)]
pub struct Stop {
    abort: Arc<AtomicBool>,
    signal: Arc<AtomicI32>,
}

impl Stop {
    /// Listens for SIGINT and SIGTERM on `runtime`.
    pub fn install(runtime: &tokio::runtime::Runtime) -> Stop {
        let stop = Stop::default();
        for (kind, number) in [(SignalKind::interrupt(), SIGINT), (SignalKind::terminate(), SIGTERM)] {
            let stop = stop.clone();
            runtime.spawn(async move {
                let Ok(mut signals) = signal(kind) else {
                    tracing::warn!(signal = number, "cannot listen for the signal");
                    return;
                };
                while signals.recv().await.is_some() {
                    let first = stop.signal.compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst).is_ok();
                    if !first {
                        std::process::exit(stop.exit_code().unwrap_or(1));
                    }
                    stop.request(&format!("received {}", if number == SIGINT { "SIGINT" } else { "SIGTERM" }));
                }
            });
        }
        stop
    }

    /// Asks the run to stop, and makes sure the process ends within [`GRACE`].
    pub fn request(&self, why: &str) {
        if self.abort.swap(true, Ordering::SeqCst) {
            return;
        }
        eprintln!("weir: {why}: stopping the run and removing what it staged");
        let stop = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(GRACE);
            eprintln!("weir: the run did not stop within {} s; exiting", GRACE.as_secs());
            std::process::exit(stop.exit_code().unwrap_or(1));
        });
    }

    /// The flag the engine's workers watch.
    pub fn abort_flag(&self) -> Arc<AtomicBool> {
        self.abort.clone()
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    /// 130 after SIGINT, 143 after SIGTERM, `None` without a signal.
    pub fn exit_code(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            number => Some(128 + number),
        }
    }
}
