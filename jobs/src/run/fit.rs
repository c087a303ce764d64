//! `weir fit`: a job's fitting passes alone, in this process, writing its fitted
//! parameters (fitted.json) where a later run's `fitted = "FILE"` reuses them.

use weir_engine::{ClusterSetup, JobFailure};

use super::in_process::run_in_process;
use super::plan::{default_workers, in_job, with_run_date};
use crate::planning::{RunOptions, load_job, plan_job};
use crate::report::{OutputMode, ProgressView};
use crate::signals::Stop;
use crate::vars::Variables;

/// What `weir fit` is asked to do.
pub struct FitRequest<'a> {
    /// The job file.
    pub job: &'a str,
    /// Where to write fitted.json: a path, file:// or s3:// URI.
    pub output: &'a str,
    /// Replace the file if it exists.
    pub overwrite: bool,
    /// Worker threads (default: the cores).
    pub workers: Option<usize>,
    /// `--var`s.
    pub vars: Vec<(String, String)>,
}

/// What a fit wrote.
#[derive(Debug)]
pub struct Fitted {
    pub job: String,
    /// The fitted steps.
    pub steps: usize,
    /// Passes over the source.
    pub passes: u32,
    /// Where fitted.json is.
    pub uri: String,
    /// Its size.
    pub bytes: u64,
    /// The SHA-256 of the fitted parameters, which a `score` step's `fitted_sha256` pins.
    pub params_sha256: String,
}

/// The fitting passes of a job in this process, then fitted.json to the request's output.
pub fn fit_job(request: FitRequest<'_>, runtime: &tokio::runtime::Runtime, stop: &Stop) -> Result<Fitted, JobFailure> {
    let FitRequest { job: path, output, overwrite, workers, vars } = request;
    let vars = Variables::new(&with_run_date(path, vars)?);
    let workers = workers.unwrap_or_else(|| default_workers(1)).max(1);
    let job = load_job(path, &vars, None).map_err(|error| error.to_failure())?;
    if job.spec.sink.encryption.is_some() {
        return Err(JobFailure::user(format!(
            "job '{}': its sink encrypts its output, and `weir fit` would write the parameters fitted on those columns in the clear; run the job, which keeps them encrypted in _weir/fitted.parquet, and reuse them with fitted = \"OUTPUT\"",
            job.spec.name
        )));
    }
    let target =
        weir_connectors::Location::parse(output, &job.spec.storage).map_err(|e| JobFailure::from_connector(&e))?;
    if !overwrite && runtime.block_on(object_store::ObjectStoreExt::head(target.store(), target.path())).is_ok() {
        return Err(JobFailure::user(format!("'{}' exists; pass --overwrite to replace it", target.uri())));
    }
    let options = RunOptions { fit_output: Some(output.to_string()), ..RunOptions::default() };
    let plan = runtime.block_on(plan_job(&job, &options)).map_err(|error| error.to_failure())?;
    let view = ProgressView::new(plan.shards.len() as u64, OutputMode::SILENT);
    let summary = run_in_process(plan, ClusterSetup::SingleProcess { workers }, runtime, &view, None, stop)
        .map_err(in_job(&job))?;
    let written = runtime
        .block_on(weir_connectors::objects::read_json::<weir_operators::fitted_file::FittedFile>(
            &target,
            target.path(),
        ))
        .map_err(|e| JobFailure::from_connector(&e))?
        .ok_or_else(|| JobFailure::internal("the fitted parameters just written cannot be read back"))?;
    Ok(Fitted {
        job: job.spec.name.clone(),
        steps: written.steps.len(),
        passes: summary.passes,
        uri: target.uri(),
        bytes: summary.bytes,
        params_sha256: weir_operators::fitted_file::params_sha256(&written.steps),
    })
}
