//! Live counters of a process's workers, read by whatever shows progress (a terminal bar,
//! or JSON events to a launcher).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Counters shared by the workers of one process.
#[derive(Debug, Default)]
pub struct Progress {
    shards_done: AtomicU64,
    rows_in: AtomicU64,
    rows_out: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressSnapshot {
    pub shards_done: u64,
    pub rows_in: u64,
    pub rows_out: u64,
}

impl Progress {
    pub fn shard_done(&self) {
        self.shards_done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rows_read(&self, rows: usize) {
        self.rows_in.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub fn rows_written(&self, rows: usize) {
        self.rows_out.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            shards_done: self.shards_done.load(Ordering::Relaxed),
            rows_in: self.rows_in.load(Ordering::Relaxed),
            rows_out: self.rows_out.load(Ordering::Relaxed),
        }
    }
}

impl ProgressSnapshot {
    /// Adds another process's counters.
    pub fn add(&mut self, other: &ProgressSnapshot) {
        self.shards_done += other.shards_done;
        self.rows_in += other.rows_in;
        self.rows_out += other.rows_out;
    }
}
