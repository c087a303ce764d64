//! Weir's engine: runs an [`EnginePlan`] as a timely dataflow on every worker of a
//! cluster of threads and processes.
//!
//! A run is a sequence of rounds and passes on every worker:
//! 1. a *leader round* in which worker 0 prepares the output (overwrite / error-if-exists)
//!    and broadcasts the outcome;
//! 2. a *map pass*: each worker streams its own shards through the bound steps into its own
//!    part file, pacing its reads by a probe on the sink;
//! 3. a *leader round* in which every worker reports its part file (or its failure) to
//!    worker 0, which commits (manifest, then `_SUCCESS`) only if all succeeded, and
//!    broadcasts the result.
//!
//! Control messages travel through timely's exchange channels, never shared memory, so the
//! same code runs over threads, local processes and hosts.

pub mod cluster;
pub mod failure;
pub mod plan;
pub mod progress;
pub mod rounds;
pub mod run;
mod worker;

pub use cluster::ClusterSetup;
pub use failure::{FailureKind, JobFailure};
pub use plan::{EnginePlan, PlannedStep};
pub use progress::{Progress, ProgressSnapshot};
pub use run::{ProcessContext, RunSummary, execute};
