//! Errors of loading, validating and planning a job. All are the user's to fix (exit code
//! 2) except store failures that a retry may cure.

use weir_connectors::ConnectorError;
use weir_engine::{FailureKind, JobFailure};

/// A job that cannot be loaded or planned.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot read job file '{path}': {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("job file '{path}': {message}")]
    Toml { path: String, message: String },

    #[error(
        "job file '{path}', line {line}: unknown variable '{{{{{name}}}}}'; known: {known} (set others with --var {name}=VALUE)"
    )]
    UnknownVariable { path: String, line: usize, name: String, known: String },

    #[error("job file '{path}', line {line}: variable '{{{{{name}}}}}' cannot be substituted: {reason}")]
    BadVariable { path: String, line: usize, name: String, reason: String },

    #[error("job '{job}': {message}")]
    Invalid { job: String, message: String },

    #[error("job '{job}', {what}: {source}")]
    Connector {
        job: String,
        what: &'static str,
        #[source]
        source: Box<ConnectorError>,
    },

    #[error("job '{job}', step {number} ({op}): cannot read the {what}: {source}")]
    StepInput {
        job: String,
        number: usize,
        op: &'static str,
        /// What was read: "model", "fitted parameters".
        what: &'static str,
        #[source]
        source: Box<ConnectorError>,
    },

    /// Not a failure: an incremental run found no new input files.
    #[error(
        "job '{job}': nothing new in source '{source_uri}': its {processed} file(s) are all in the output's ledger; nothing committed"
    )]
    NothingNew { job: String, source_uri: String, processed: usize },

    #[error("job '{job}', {source}")]
    Step {
        job: String,
        #[source]
        source: Box<weir_operators::step::BindError>,
    },
}

impl JobError {
    /// The failure to report for this error.
    pub fn to_failure(&self) -> JobFailure {
        let kind = match self {
            JobError::Connector { what: "source", source, .. }
                if matches!(**source, ConnectorError::NoDataFiles { .. } | ConnectorError::NotReady { .. }) =>
            {
                FailureKind::InputNotReady
            }
            JobError::Connector { source, .. } | JobError::StepInput { source, .. } if !source.is_user_error() => {
                FailureKind::External
            }
            _ => FailureKind::User,
        };
        JobFailure { kind, message: self.to_string() }
    }
}
