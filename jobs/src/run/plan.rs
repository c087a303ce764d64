//! What every run, worker, fit and validation begins with: the variables (from `--var`,
//! `--vars-file` and the job's `[schedule]`), loading the job file and planning it, and
//! what the commands share in how they report a plan (warnings, an incremental source with
//! nothing new).

use weir_engine::{EnginePlan, JobFailure};

use crate::JobError;
use crate::planning::{LoadedJob, RunOptions, load_job, plan_job, refit_warnings};
use crate::report::OutputMode;

/// What planning a job gives: a plan to run, or (an incremental source) nothing new to read.
pub enum Planned {
    Run(Box<EnginePlan>),
    NothingNew(JobError),
}

/// Loads a job file and plans it: what `run`, `worker`, a local cluster's processes and
/// `validate` all begin with.
pub fn load_and_plan(
    path: &str,
    vars: &crate::vars::Variables,
    options: &RunOptions,
    runtime: &tokio::runtime::Runtime,
) -> Result<(LoadedJob, Planned), JobFailure> {
    let job = load_job(path, vars, options.base_dir.as_deref()).map_err(|error| error.to_failure())?;
    let planned = match runtime.block_on(plan_job(&job, options)) {
        Ok(plan) => Planned::Run(Box::new(plan)),
        Err(nothing @ JobError::NothingNew { .. }) => Planned::NothingNew(nothing),
        Err(error) => return Err(error.to_failure()),
    };
    Ok((job, planned))
}

/// Prefixes a run's failure with the job it concerns.
pub fn in_job(job: &LoadedJob) -> impl Fn(JobFailure) -> JobFailure + '_ {
    move |f| JobFailure { kind: f.kind, message: format!("job '{}' failed: {}", job.spec.name, f.message) }
}

/// `vars` with the run's date variables when `ds` is not given: the latest complete
/// interval of the job's `[schedule]`, as the job service's scheduler would give them
/// (`crate::schedule::with_run_date`). A file that cannot be read is reported later,
/// by the job's loading.
pub fn with_run_date(path: &str, vars: Vec<(String, String)>) -> Result<Vec<(String, String)>, JobFailure> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(vars) };
    let dated = crate::schedule::with_run_date(&text, vars, chrono::Utc::now())
        .map_err(|message| JobFailure::user(format!("job file '{path}': {message}")))?;
    Ok(dated)
}

/// The variables of `--vars-file`: a JSON object of strings, each name checked as `--var`'s.
pub fn read_vars_file(path: &str) -> Result<Vec<(String, String)>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("cannot read the variables file {path}: {error}"))?;
    let values: std::collections::BTreeMap<String, String> = serde_json::from_str(&text)
        .map_err(|error| format!("the variables file {path} is not a JSON object of strings: {error}"))?;
    for name in values.keys() {
        crate::vars::check_name(name).map_err(|message| format!("the variables file {path}: {message}"))?;
    }
    Ok(values.into_iter().collect())
}

/// The worker threads of a process when the command does not say: the cores shared out
/// between the processes, at least 1.
pub fn default_workers(processes: usize) -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (cores / processes.max(1)).max(1)
}

/// An incremental run with no new input: a success that commits nothing. Says so on
/// stderr (or as JSON on stdout with `--json`; nothing with `--quiet`) and returns the
/// run's summary for the result file.
pub fn nothing_new(job: &LoadedJob, nothing: &JobError, mode: OutputMode) -> serde_json::Value {
    let summary = serde_json::json!({
        "job": job.spec.name,
        "run_id": job.vars.run_id(),
        "output": job.spec.sink.uri,
        "rows_in": 0,
        "rows_out": 0,
        "files": 0,
        "bytes": 0,
        "nothing_new": true,
    });
    if mode.json {
        println!("{summary}");
    } else if !mode.quiet {
        eprintln!("weir: {nothing}");
    }
    summary
}

/// Warnings about the plan (a score step after steps refitted in this run), on stderr
/// unless `--quiet`.
pub fn print_warnings(plan: &EnginePlan, mode: OutputMode) {
    if !mode.quiet {
        for warning in refit_warnings(plan) {
            eprintln!("weir: warning: {warning}");
        }
    }
}
