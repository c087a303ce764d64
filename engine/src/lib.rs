//! Weir's engine: runs an [`EnginePlan`] as a timely dataflow on every worker of a
//! cluster of threads and processes.
//!
//! A run is a sequence of rounds and passes on every worker:
//! 1. a *leader round* in which worker 0 takes the output's lease and checks the prefix
//!    against the write mode (overwrite / error-if-exists), and broadcasts the outcome;
//! 2. for each fitted step (or group of fitted steps that can share a pass) a *fit stage*,
//!    and for each dedupe a *dedupe stage*: a pass over the worker's shards that folds
//!    partials or feeds keys, then a leader round or keyed exchange that gives every worker
//!    what it needs to map the step ([`stages`]);
//! 3. the *final pass*: each worker streams its own shards through the whole step chain
//!    into its own staged part file, pacing its reads by a probe on the sink;
//! 4. a *leader round* in which every worker reports its part file (or its failure) to
//!    worker 0, which commits (decision, publication, manifest, then `_SUCCESS`; see
//!    `weir_connectors::commit`) only if all succeeded and no stop was asked for, and
//!    broadcasts the result.
//!
//! Control messages travel through timely's exchange channels, never shared memory, so the
//! same code runs over threads, local processes and hosts.

mod aggregate;
mod cache;
mod chain;
pub mod cluster;
pub mod context;
mod dedupe;
pub mod failure;
mod group_spill;
mod metrics;
mod pass;
pub mod plan;
pub mod progress;
mod read_ahead;
pub mod rounds;
pub mod run;
mod sink;
mod spill_file;
mod stages;
mod state;
mod worker;

pub use cluster::ClusterSetup;
pub use context::{ProcessContext, RunSummary};
pub use failure::{FailureKind, JobFailure};
pub use plan::{BoundRest, EnginePlan, PlanRest, PlannedStep, RejectsPlan, StepKind};
pub use progress::{Progress, ProgressSnapshot};
pub use run::execute;
