//! `weir run`: a job on this machine, in this process or as a local cluster of
//! `--processes` children (`crate::launcher`), with its summary and, for whoever started
//! it, its result file.

use std::path::PathBuf;

use weir_engine::{ClusterSetup, JobFailure};

use super::in_process::run_in_process;
use super::plan::{Planned, default_workers, in_job, load_and_plan, nothing_new, print_warnings, read_vars_file};
use super::result_file::RunResult;
use crate::launcher::{LaunchPlan, launch_local};
use crate::planning::RunOptions;
use crate::report::{OutputMode, ProgressView, SummaryReport};
use crate::signals::Stop;
use crate::vars::Variables;

/// What `weir run` is asked to do.
pub struct RunRequest<'a> {
    /// The job file.
    pub job: &'a str,
    /// Worker threads per process (default: the cores shared out between the processes).
    pub workers: Option<usize>,
    pub processes: usize,
    /// `--var`s.
    pub vars: Vec<(String, String)>,
    /// More variables, from a JSON object of strings.
    pub vars_file: Option<&'a str>,
    /// Skip the overwrite guards.
    pub force: bool,
    /// Resolve the job's relative paths against this folder instead of the job file's.
    pub base_dir: Option<&'a str>,
    /// Where to write the run's [`RunResult`].
    pub result_file: Option<&'a str>,
    pub mode: OutputMode,
}

/// Runs a job as `weir run` does: its variables (with the run date of its schedule), the
/// run, its summary printed as `mode` asks, and its result file.
pub fn run_job(request: RunRequest<'_>, runtime: &tokio::runtime::Runtime, stop: &Stop) -> Result<(), JobFailure> {
    let RunRequest { job, workers, processes, mut vars, vars_file, force, base_dir, result_file, mode } = request;
    if let Some(path) = vars_file {
        vars.extend(read_vars_file(path).map_err(JobFailure::user)?);
    }
    let vars = super::plan::with_run_date(job, vars)?;
    let shape = Shape {
        workers: workers.unwrap_or_else(|| default_workers(processes)).max(1),
        processes: processes.max(1),
        force,
        base_dir: base_dir.map(PathBuf::from),
    };
    let result = run(job, &Variables::new(&vars), shape, mode, runtime, stop);
    if let Some(path) = result_file
        && let Err(error) = RunResult::of(&result, stop).write(path)
    {
        eprintln!("weir: cannot write the result file '{path}': {error}");
    }
    result.map(drop)
}

/// The shape of a `weir run`.
struct Shape {
    workers: usize,
    processes: usize,
    force: bool,
    base_dir: Option<PathBuf>,
}

/// The run; its `--json` summary.
fn run(
    path: &str,
    vars: &Variables,
    shape: Shape,
    mode: OutputMode,
    runtime: &tokio::runtime::Runtime,
    stop: &Stop,
) -> Result<serde_json::Value, JobFailure> {
    let options = RunOptions { attempt: None, force: shape.force, base_dir: shape.base_dir.clone(), fit_output: None };
    let (job, plan) = match load_and_plan(path, vars, &options, runtime)? {
        (job, Planned::Run(plan)) => (job, *plan),
        (job, Planned::NothingNew(nothing)) => return Ok(nothing_new(&job, &nothing, mode)),
    };
    print_warnings(&plan, mode);
    let view = ProgressView::new(plan.shards.len() as u64, mode);
    let output = plan.sink.uri();
    let summary = if shape.processes == 1 {
        run_in_process(plan, ClusterSetup::SingleProcess { workers: shape.workers }, runtime, &view, None, stop)
    } else {
        let (sink, attempt) = (plan.sink.clone(), plan.attempt.clone());
        let rejects = plan.rejects.as_ref().map(|rejects| rejects.output.clone());
        drop(plan);
        let launch = LaunchPlan {
            job_path: path,
            vars,
            processes: shape.processes,
            workers: shape.workers,
            force: shape.force,
            base_dir: shape.base_dir.as_deref(),
            sink,
            rejects,
            attempt,
            runtime,
            stop,
        };
        launch_local(launch, &view)
    };
    view.finish();
    let summary = summary.map_err(in_job(&job))?;
    let report = SummaryReport::new(&job.spec.name, vars.run_id(), output, &summary, view.elapsed());
    report.print(mode);
    Ok(serde_json::to_value(&report).unwrap_or_default())
}
