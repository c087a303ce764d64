//! What a run shows: a progress bar on a terminal (shards done, rows, rows/s), a summary at
//! the end (human text on stderr, or JSON on stdout with `--json`), nothing with `--quiet`.
//! With `--metrics` the human summary adds where the time went, stage by stage (the JSON
//! summary and the manifest always carry it).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use weir_connectors::manifest::{CheckResult, RejectsInfo, StageTime};
use weir_engine::{ProgressSnapshot, RunSummary};

/// How output is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputMode {
    pub quiet: bool,
    pub json: bool,
    /// Print the per-stage breakdown after the human summary.
    pub metrics: bool,
    /// Off a terminal, a progress line this often.
    pub progress_every: Duration,
}

impl OutputMode {
    /// Nothing on the terminal (processes other than the leader, children of a launcher).
    pub const SILENT: OutputMode =
        OutputMode { quiet: true, json: false, metrics: false, progress_every: PROGRESS_LINE_EVERY };
}

/// A progress display for one run: a bar on a terminal; elsewhere (cron, a service's log)
/// a line on stderr every `--progress-every-s` ([`PROGRESS_LINE_EVERY`] by default).
pub struct ProgressView {
    bar: Option<ProgressBar>,
    /// Off a terminal: the shards to do, how often to print, and when the last line was.
    lines: Option<(u64, Duration, std::sync::Mutex<Instant>)>,
    started: Instant,
}

/// How often a run off a terminal prints a progress line.
pub const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(10);

impl ProgressView {
    /// A bar over `shards` shards, shown only on a terminal and without `--quiet`.
    pub fn new(shards: u64, mode: OutputMode) -> Self {
        let started = Instant::now();
        if mode.quiet {
            return ProgressView { bar: None, lines: None, started };
        }
        if !std::io::stderr().is_terminal() {
            let lines = (shards, mode.progress_every, std::sync::Mutex::new(started));
            return ProgressView { bar: None, lines: Some(lines), started };
        }
        let bar = ProgressBar::with_draw_target(Some(shards), ProgressDrawTarget::stderr_with_hz(5));
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} shards  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        ProgressView { bar: Some(bar), lines: None, started }
    }

    pub fn update(&self, snapshot: &ProgressSnapshot) {
        if let Some((shards, every, last)) = &self.lines {
            let mut last = last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.elapsed() >= *every {
                *last = Instant::now();
                eprintln!("weir: {}", progress_line(*shards, snapshot, self.started.elapsed()));
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_position(snapshot.shards_done);
            let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{} rows in, {} out, {}/s",
                human(snapshot.rows_in),
                human(snapshot.rows_out),
                human((snapshot.rows_in as f64 / seconds) as u64)
            ));
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// `12/40 shards (30%), 1.2M rows in, 1.0M out, 250k rows/s, about 34 s left`.
fn progress_line(shards: u64, snapshot: &ProgressSnapshot, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let done = snapshot.shards_done.min(shards);
    let mut line = format!(
        "progress: {done}/{shards} shards ({}%), {} rows in, {} out, {} rows/s",
        (done * 100).checked_div(shards).unwrap_or(100),
        human(snapshot.rows_in),
        human(snapshot.rows_out),
        human((snapshot.rows_in as f64 / seconds) as u64)
    );
    if done > 0 && done < shards {
        let left = seconds * (shards - done) as f64 / done as f64;
        line.push_str(&format!(", about {left:.0} s left"));
    }
    line
}

/// The end-of-run summary, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct SummaryReport<'a> {
    pub job: &'a str,
    pub run_id: &'a str,
    pub output: String,
    pub rows_in: u64,
    pub rows_out: u64,
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub rows_per_second: f64,
    /// Passes over the source.
    pub passes: u32,
    /// Worker-seconds per stage, in the order the work happened.
    pub stages: &'a [StageTime],
    /// The results of the job's `check` steps.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub checks: &'a [CheckResult],
    /// `sink.rejects`: where the rejected rows went, and how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects: Option<&'a RejectsInfo>,
}

impl<'a> SummaryReport<'a> {
    pub fn new(job: &'a str, run_id: &'a str, output: String, summary: &'a RunSummary, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        SummaryReport {
            job,
            run_id,
            output,
            rows_in: summary.rows_in,
            rows_out: summary.rows_out,
            files: summary.files.len(),
            bytes: summary.bytes,
            seconds,
            rows_per_second: summary.rows_in as f64 / seconds.max(1e-9),
            passes: summary.passes,
            stages: &summary.stages,
            checks: &summary.checks,
            rejects: summary.rejects.as_ref(),
        }
    }

    /// Prints the summary as the output mode asks.
    pub fn print(&self, mode: OutputMode) {
        if mode.json {
            println!("{}", serde_json::to_string(self).unwrap_or_default());
        } else if !mode.quiet {
            eprintln!(
                "job '{}' committed {} rows ({} in) to {} in {} file(s), {} bytes, in {:.2} s ({} rows/s)",
                self.job,
                self.rows_out,
                self.rows_in,
                self.output,
                self.files,
                self.bytes,
                self.seconds,
                human(self.rows_per_second as u64)
            );
            if let Some(rejects) = self.rejects {
                eprintln!("  {} rejected row(s) committed to {}", rejects.rows, rejects.uri);
            }
            if !self.checks.is_empty() {
                eprint!("{}", self.check_lines());
            }
            if mode.metrics {
                eprint!("{}", self.stage_table());
            }
        }
    }

    /// The check results: a count, then one line per failed expectation (only a step with
    /// `on_fail = "warn"` lets a run with one commit).
    pub fn check_lines(&self) -> String {
        let passed = self.checks.iter().filter(|c| c.passed).count();
        let mut lines = format!("checks: {passed} of {} expectations passed\n", self.checks.len());
        for failed in self.checks.iter().filter(|c| !c.passed) {
            let name = failed.name.as_ref().map(|n| format!(" '{n}'")).unwrap_or_default();
            let columns =
                if failed.columns.is_empty() { String::new() } else { format!("({})", failed.columns.join(", ")) };
            lines.push_str(&format!(
                "  warning: step {} check{name}: {}{columns}: {}\n",
                failed.step, failed.expectation, failed.message
            ));
        }
        lines
    }

    /// The per-stage breakdown as a text table.
    pub fn stage_table(&self) -> String {
        let total: f64 = self.stages.iter().map(|s| s.worker_seconds).sum();
        let width = self.stages.iter().map(|s| s.stage.len()).max().unwrap_or(0).max("stage".len());
        let mut table = format!(
            "{} pass(es) over the source; time summed over all workers; rows and bytes an exchange or a spill moved:\n  {:width$}  {:>9}  {:>6}  {:>8}  {:>8}  {:>9}\n",
            self.passes, "stage", "worker-s", "share", "batches", "rows", "bytes"
        );
        let moved = |n: u64, text: String| if n == 0 { "-".to_string() } else { text };
        for stage in self.stages {
            let share = 100.0 * stage.worker_seconds / total.max(1e-12);
            table.push_str(&format!(
                "  {:width$}  {:>9.3}  {:>5.1}%  {:>8}  {:>8}  {:>9}\n",
                stage.stage,
                stage.worker_seconds,
                share,
                stage.batches,
                moved(stage.rows, human(stage.rows)),
                moved(stage.bytes, human_bytes(stage.bytes))
            ));
        }
        table
    }
}

/// `1234567` → `1.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", n as f64 / 1_073_741_824.0),
    }
}

/// `1234567` → `1.23M`.
pub fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}
