//! Why a run failed, in a form that crosses processes: a classification (which decides the
//! exit code and whether a retry may help) and a message that already names the step,
//! column, file and row group concerned.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Who is to blame for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The job's spec or its input data: fix the input; exit code 2.
    User,
    /// The outside world (a store, the network): a retry may succeed; exit code 1.
    External,
    /// A fault of Weir itself; exit code 1.
    Internal,
    /// The run was stopped (a signal, or the launcher went away) before it committed; the
    /// binary exits 130 after SIGINT, 143 after SIGTERM, 1 otherwise.
    Cancelled,
    /// The source holds no data yet (a partition that has not landed): exit code 4. Not bad
    /// input: the job service retries it while the job's `wait_for_input_s` lasts.
    InputNotReady,
}

/// A failed run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct JobFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl fmt::Display for JobFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl JobFailure {
    pub fn user(message: impl Into<String>) -> Self {
        JobFailure { kind: FailureKind::User, message: message.into() }
    }

    pub fn external(message: impl Into<String>) -> Self {
        JobFailure { kind: FailureKind::External, message: message.into() }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        JobFailure { kind: FailureKind::Internal, message: message.into() }
    }

    /// The run was stopped before it committed.
    pub fn cancelled() -> Self {
        JobFailure { kind: FailureKind::Cancelled, message: "the run was cancelled; nothing was committed".into() }
    }

    /// The failure that explains a run's end: the first that is not a cancellation (a
    /// worker that failed makes its siblings stop), else the first.
    pub fn first_cause<'a>(failures: impl IntoIterator<Item = &'a JobFailure>) -> Option<JobFailure> {
        let failures: Vec<&JobFailure> = failures.into_iter().collect();
        failures.iter().find(|f| f.kind != FailureKind::Cancelled).or(failures.first()).map(|f| (*f).clone())
    }

    /// Classifies a connector error.
    pub fn from_connector(error: &weir_connectors::ConnectorError) -> Self {
        let kind = if error.is_user_error() { FailureKind::User } else { FailureKind::External };
        JobFailure { kind, message: error.to_string() }
    }

    /// The process exit code for this failure: 2 for bad input, 4 for input not ready, 1
    /// otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            FailureKind::User => 2,
            FailureKind::InputNotReady => 4,
            FailureKind::External | FailureKind::Internal | FailureKind::Cancelled => 1,
        }
    }
}
