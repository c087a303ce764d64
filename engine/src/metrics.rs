//! Where a run's time goes. Each worker times what it does to every batch — reading it
//! (fetch and decode), each step's work on it (apply, fit fold, dedupe keys), and writing it
//! (encode and upload) — plus what the leader does between passes (finishing fits) and the
//! keyed dedupe reduction. The clocks of all workers are summed at commit into
//! worker-seconds per stage, in the order the work happens; what no clock covers (waiting
//! for other workers at a round, scheduling) is reported as one remainder.
//!
//! Timing costs one `Instant::now()` pair per batch and stage (batches are thousands of
//! rows), so the clocks always run.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weir_connectors::manifest::StageTime;

/// What a clock times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// Waiting for the next batch fetched and decoded from the store, in every pass (the
    /// read-ahead does the work, [`crate::read_ahead`]).
    Read,
    /// The read-ahead's own fetching and decoding, on the process's I/O threads: work that
    /// overlaps the worker's, so it is not part of the worker's time.
    ReadAhead,
    /// Taking source batches from the cache ([`crate::cache`]).
    ReadCached,
    /// Reading source batches back from the local spill files ([`crate::cache`]).
    ReadSpilled,
    /// Keeping the batches read from the store for later passes: in memory, or written to
    /// a local spill file.
    Spill,
    /// Work of the step numbered `number`.
    Step { number: usize, op: &'static str, work: StepWork },
    /// Encoding the output and uploading it.
    Write,
}

/// The kinds of work a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum StepWork {
    /// Folding batches into the step's partial statistics.
    Fold,
    /// Merging the partials and computing the parameters (worker 0).
    Finish,
    /// Folding batches for a chain of fitted steps fitted in one pass, from this step to
    /// step `last` ([`weir_operators::linear_chain`]).
    FoldChain { last: usize, last_op: &'static str },
    /// Merging and finishing such a chain (worker 0).
    FinishChain { last: usize, last_op: &'static str },
    /// Mapping batches with such a chain once fitted, as one step (in every later pass).
    ApplyChain { last: usize, last_op: &'static str },
    /// Counting a check's expectations (and encoding its `unique` key).
    Count,
    /// Encoding each row's key for a dedupe.
    Keys,
    /// The keyed reduction that picks each key's winner.
    Reduce,
    /// Mapping batches with the step (fitted or not), in every pass after it joined.
    Apply,
    /// Folding rows into an aggregate's group table (map-side combining).
    Combine,
    /// Exchanging an aggregate's partial groups by key, merging them and making the rows
    /// (spilled runs of merged groups included).
    Merge,
    /// Writing an aggregate's groups to local disk past its memory budget (the time is the
    /// partial side's; the counts are both sides').
    SpillGroups,
}

impl Stage {
    fn label(&self) -> String {
        match self {
            Stage::Read => "read (wait for fetch + decode)".to_string(),
            Stage::ReadAhead => OVERLAPPED_READ.to_string(),
            Stage::ReadCached => "read (from the cache)".to_string(),
            Stage::ReadSpilled => "read (from local spill files)".to_string(),
            Stage::Spill => "cache (keep in memory or spill to local disk)".to_string(),
            Stage::Write => "write (encode + upload)".to_string(),
            Stage::Step { number, op, work } => {
                let step = |what: &str| format!("step {number} {op}: {what}");
                let steps = |last: &usize, last_op: &str, what: &str| {
                    format!("steps {number}-{last} {op} to {last_op}: {what}")
                };
                let chain = |last: &usize, last_op: &str, what: &str| {
                    steps(last, last_op, &format!("fit in one pass ({what})"))
                };
                match work {
                    StepWork::Fold => step("fit (fold partials)"),
                    StepWork::Count => step("check (count expectations)"),
                    StepWork::Finish => step("fit (merge + finish, worker 0)"),
                    StepWork::Keys => step("dedupe keys"),
                    StepWork::Reduce => step("dedupe reduce"),
                    StepWork::Apply => step("apply"),
                    StepWork::Combine => step("combine rows per worker"),
                    StepWork::Merge => step("exchange + merge groups"),
                    StepWork::SpillGroups => step("spill groups to local disk"),
                    StepWork::FoldChain { last, last_op } => chain(last, last_op, "fold partials"),
                    StepWork::FinishChain { last, last_op } => chain(last, last_op, "merge + finish, worker 0"),
                    StepWork::ApplyChain { last, last_op } => steps(last, last_op, "apply"),
                }
            }
        }
    }
}

/// The label of the read-ahead's own time (overlapping the workers' clocks).
pub(crate) const OVERLAPPED_READ: &str = "read ahead (fetch + decode on I/O threads, overlapped)";

/// The label of the time no clock covers.
pub(crate) const OTHER: &str = "other (rounds, waiting on other workers)";

#[derive(Debug, Default, Clone, Copy)]
struct Clock {
    elapsed: Duration,
    batches: u64,
    rows: u64,
    bytes: u64,
}

/// One worker's clocks.
#[derive(Debug)]
pub(crate) struct WorkerMetrics {
    started: Instant,
    clocks: RefCell<BTreeMap<Stage, Clock>>,
    passes: Cell<u32>,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics { started: Instant::now(), clocks: RefCell::default(), passes: Cell::new(0) }
    }
}

impl WorkerMetrics {
    /// Runs `work`, adding its duration (as one batch) to `stage`'s clock.
    pub fn time<T>(&self, stage: Stage, work: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let result = work();
        self.add(stage, start.elapsed());
        result
    }

    pub fn add(&self, stage: Stage, elapsed: Duration) {
        let mut clocks = self.clocks.borrow_mut();
        let clock = clocks.entry(stage).or_default();
        clock.elapsed += elapsed;
        clock.batches += 1;
    }

    /// Adds `rows` and `bytes` moved to `stage`'s counts (not its time or batches).
    pub fn count(&self, stage: Stage, rows: u64, bytes: u64) {
        if rows == 0 && bytes == 0 {
            return;
        }
        let mut clocks = self.clocks.borrow_mut();
        let clock = clocks.entry(stage).or_default();
        clock.rows += rows;
        clock.bytes += bytes;
    }

    /// Counts a pass over the source.
    pub fn pass_started(&self) {
        self.passes.set(self.passes.get() + 1);
    }

    pub fn passes(&self) -> u32 {
        self.passes.get()
    }

    /// The clocks so far, in stage order, with the rest of this worker's time since it
    /// started as [`OTHER`] (the read-ahead's overlapped time does not count against it).
    pub fn report(&self) -> Vec<StageTime> {
        let clocks = self.clocks.borrow();
        let mut stages: Vec<StageTime> = clocks
            .iter()
            .map(|(stage, clock)| StageTime {
                stage: stage.label(),
                worker_seconds: clock.elapsed.as_secs_f64(),
                batches: clock.batches,
                rows: clock.rows,
                bytes: clock.bytes,
            })
            .collect();
        let timed: f64 = stages.iter().filter(|s| s.stage != OVERLAPPED_READ).map(|s| s.worker_seconds).sum();
        let other = (self.started.elapsed().as_secs_f64() - timed).max(0.0);
        stages.push(StageTime { stage: OTHER.to_string(), worker_seconds: other, batches: 0, rows: 0, bytes: 0 });
        stages
    }
}

/// Sums the workers' reports stage by stage, keeping the order the stages first appear in
/// (every worker has the same stages in the same order, unless some had no rows).
pub(crate) fn sum_reports(reports: impl IntoIterator<Item = Vec<StageTime>>) -> Vec<StageTime> {
    let mut total: Vec<StageTime> = Vec::new();
    for report in reports {
        for stage in report {
            match total.iter_mut().find(|t| t.stage == stage.stage) {
                Some(sum) => {
                    sum.worker_seconds += stage.worker_seconds;
                    sum.batches += stage.batches;
                    sum.rows += stage.rows;
                    sum.bytes += stage.bytes;
                }
                None => total.push(stage),
            }
        }
    }
    // Keep `OTHER` last even when a later worker brought a stage the first one lacked.
    if let Some(at) = total.iter().position(|t| t.stage == OTHER) {
        let other = total.remove(at);
        total.push(other);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_reported_in_the_order_work_happens() {
        let metrics = WorkerMetrics::default();
        let apply = Stage::Step { number: 1, op: "impute", work: StepWork::Apply };
        let fold = Stage::Step { number: 2, op: "pca", work: StepWork::Fold };
        let finish = Stage::Step { number: 1, op: "impute", work: StepWork::Finish };
        metrics.add(Stage::Write, Duration::from_millis(5));
        metrics.add(fold, Duration::from_millis(3));
        metrics.add(apply, Duration::from_millis(2));
        metrics.add(apply, Duration::from_millis(2));
        metrics.add(finish, Duration::from_millis(1));
        metrics.add(Stage::Read, Duration::from_millis(7));
        let report = metrics.report();
        let labels: Vec<&str> = report.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(
            labels,
            [
                "read (wait for fetch + decode)",
                "step 1 impute: fit (merge + finish, worker 0)",
                "step 1 impute: apply",
                "step 2 pca: fit (fold partials)",
                "write (encode + upload)",
                OTHER
            ]
        );
        assert_eq!(report[2].batches, 2);
        assert!((report[2].worker_seconds - 0.004).abs() < 1e-9);
    }

    #[test]
    fn sums_add_up_stage_by_stage_and_keep_other_last() {
        let stage = |name: &str, seconds: f64| StageTime {
            stage: name.to_string(),
            worker_seconds: seconds,
            batches: 1,
            rows: 0,
            bytes: 0,
        };
        let first = vec![stage("read (fetch + decode)", 1.0), stage(OTHER, 0.5)];
        let second =
            vec![stage("read (fetch + decode)", 2.0), stage("write (encode + upload)", 1.0), stage(OTHER, 0.25)];
        let total = sum_reports([first, second]);
        let labels: Vec<&str> = total.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(labels, ["read (fetch + decode)", "write (encode + upload)", OTHER]);
        assert_eq!(total[0].worker_seconds, 3.0);
        assert_eq!(total[0].batches, 2);
        assert_eq!(total[2].worker_seconds, 0.75);
    }
}
