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

    /// Classifies a connector error.
    pub fn from_connector(error: &weir_connectors::ConnectorError) -> Self {
        let kind = if error.is_user_error() { FailureKind::User } else { FailureKind::External };
        JobFailure { kind, message: error.to_string() }
    }

    /// The process exit code for this failure: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            FailureKind::User => 2,
            FailureKind::External | FailureKind::Internal => 1,
        }
    }
}
