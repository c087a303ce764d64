//! `weir validate`: a job's spec, variables, source schema and steps checked (the job
//! loaded and planned) without running it; what the checks found, for the caller to show.

use arrow::datatypes::SchemaRef;
use weir_engine::JobFailure;

use super::plan::{Planned, load_and_plan, with_run_date};
use crate::planning::{RunOptions, refit_warnings};
use crate::vars::Variables;

/// What validating a job found.
#[derive(Debug)]
pub struct Validation {
    /// The job's name.
    pub job: String,
    pub outcome: Validated,
}

/// A valid job's plan, in figures.
#[derive(Debug)]
pub enum Validated {
    /// An incremental source with no new input: why.
    NothingNew(String),
    Planned {
        /// About the plan (a score step after steps refitted in the run).
        warnings: Vec<String>,
        input_files: usize,
        rows: u64,
        shards: usize,
        steps: usize,
        /// The step (number, op) whose fit decides the output schema, if one does.
        open_step: Option<(usize, &'static str)>,
        output_schema: SchemaRef,
    },
}

/// Checks a job (its variables given the run date of its schedule) as a run would plan it.
pub fn validate_job(
    path: &str,
    vars: Vec<(String, String)>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Validation, JobFailure> {
    let vars = Variables::new(&with_run_date(path, vars)?);
    let (job, plan) = match load_and_plan(path, &vars, &RunOptions::default(), runtime)? {
        (job, Planned::Run(plan)) => (job, *plan),
        (job, Planned::NothingNew(nothing)) => {
            return Ok(Validation { job: job.spec.name.clone(), outcome: Validated::NothingNew(nothing.to_string()) });
        }
    };
    let outcome = Validated::Planned {
        warnings: refit_warnings(&plan),
        input_files: plan.source.inputs().len(),
        rows: plan.source.total_rows(),
        shards: plan.shards.len(),
        steps: job.spec.steps.len(),
        open_step: plan.open_step(),
        output_schema: plan.output_schema.clone(),
    };
    Ok(Validation { job: job.spec.name.clone(), outcome })
}
