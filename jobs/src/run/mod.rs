//! Running a job, as the `weir` binary's `run`, `worker`, `fit` and `validate` commands do
//! and as the job service's runs (which are `weir run` processes) do: one file per concern.
//! [`plan`] loads and plans a job (what every command begins with), [`in_process`] runs a
//! plan on this process's workers, [`local`] is `weir run` (in process or as a local
//! cluster, with its `--result-file`), [`worker`] one process of a multi-host or local
//! cluster, [`fit`] the fitting passes alone, [`validate`] the checks without a run, and
//! [`result_file`] the outcome a run leaves for whoever started it (the job service's
//! scheduler reads it back with the same type).

pub mod fit;
pub mod in_process;
pub mod local;
pub mod plan;
pub mod result_file;
pub mod validate;
pub mod worker;
