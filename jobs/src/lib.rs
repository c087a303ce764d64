//! Weir's job layer: the job spec as written in TOML ([`spec`]), variable substitution
//! ([`vars`]) and declaration ([`declared_vars`]), validation and planning into an [`weir_engine::EnginePlan`] ([`planning`]),
//! running a job in process, as a cluster's worker, fitting and validating it ([`run`], with
//! the result file a run leaves for the job service), and the other pieces of the `weir`
//! binary (the local multi-process launcher, progress and summary output, the dataset
//! inspection commands).

pub mod declared_vars;
pub mod error;
pub mod inspect;
pub mod kubernetes;
pub mod launcher;
pub mod planning;
pub mod report;
pub mod run;
pub mod schedule;
pub mod signals;
pub mod spec;
pub mod vars;

pub use error::JobError;
