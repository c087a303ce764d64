//! Connector errors. Each names the URI (and where it applies the row group or column) it
//! concerns, and says whether the cause is the user's input or the outside world.

use parquet::errors::ParquetError;

/// A failure reading or writing a dataset.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("invalid URI '{uri}': {reason}")]
    InvalidUri { uri: String, reason: String },

    #[error("input not ready: no data files at '{uri}' (nothing there, or only hidden files starting with '_' or '.')")]
    NoDataFiles { uri: String },

    #[error("input not ready: '{uri}' {reason}")]
    NotReady { uri: String, reason: String },

    #[error("'{uri}' is not a readable Parquet file: {source}")]
    CorruptParquet {
        uri: String,
        #[source]
        source: ParquetError,
    },

    #[error(
        "'{uri}' is encrypted: add [source.decryption] to the job to read it (its keys come from WEIR_KEY_<ID> or WEIR_KEY_DIR)"
    )]
    Encrypted { uri: String },

    #[error("'{uri}' is encrypted and cannot be decrypted: {message}")]
    Decryption { uri: String, message: String },

    #[error("sink.encryption: {0}")]
    SinkKey(#[from] crate::keys::KeyError),

    #[error("'{uri}', row group {row_group}: cannot decode: {source}")]
    CorruptRowGroup {
        uri: String,
        row_group: usize,
        #[source]
        source: ParquetError,
    },

    #[error("schema conflict: column '{column}' is {first_type} in '{first}' but {second_type} in '{second}'")]
    SchemaConflict { column: String, first: String, first_type: String, second: String, second_type: String },

    #[error("'{uri}' has no column '{column}'; it has: {available}")]
    MissingColumn { uri: String, column: String, available: String },

    #[error("output '{uri}' already exists (it holds '{object}'); set sink.mode = \"overwrite\" to replace it")]
    OutputExists { uri: String, object: String },

    #[error(
        "output '{uri}' holds '{object}', which no manifest of a Weir run records (not written by Weir); \
         overwrite deletes only what Weir wrote: move it away, write elsewhere, or pass --force to write beside it"
    )]
    ForeignObject { uri: String, object: String },

    #[error("cannot append to '{uri}': {message}")]
    AppendConflict { uri: String, message: String },

    #[error(
        "output '{uri}' moved on while this run planned: generation {now} is committed, this run chose its new input files against generation {base}; run again"
    )]
    OutputMoved { uri: String, base: u64, now: u64 },

    #[error(
        "refusing to write into '{uri}': {reason}; choose a dedicated output directory (or pass --force, which is dangerous)"
    )]
    DangerousOutput { uri: String, reason: String },

    #[error(
        "output '{uri}' is held by run {} (attempt {}, host {}, pid {}) since {}; wait for it to finish, or for its lease to expire if it was killed",
        .holder.run_id, .holder.attempt, .holder.host, .holder.pid, .holder.since
    )]
    Held { uri: String, holder: Box<crate::claim::Claim> },

    #[error("lost the lease on output '{uri}' (attempt {attempt}): {why}; nothing was published")]
    LeaseLost { uri: String, attempt: String, why: String },

    #[error("the source '{source_uri}' and the sink '{sink_uri}' overlap; write the output elsewhere")]
    SinkOverlapsSource { source_uri: String, sink_uri: String },

    #[error("object store error at '{uri}': {}", redact_store_error(source))]
    Store {
        uri: String,
        #[source]
        source: object_store::Error,
    },

    #[error("cannot write Parquet to '{uri}': {source}")]
    Write {
        uri: String,
        #[source]
        source: ParquetError,
    },

    #[error("'{uri}': {message}")]
    Invalid { uri: String, message: String },
}

impl ConnectorError {
    /// Wraps an object store error with the URI it concerns.
    pub fn store(uri: impl Into<String>, source: object_store::Error) -> Self {
        ConnectorError::Store { uri: uri.into(), source }
    }

    /// True when the cause is the user's input (a wrong URI, a corrupt file, a conflicting
    /// schema, missing permissions): exit code 2. False for faults of the outside world
    /// (a store that fails) or of Weir, which a retry may fix: exit code 1.
    pub fn is_user_error(&self) -> bool {
        match self {
            ConnectorError::Store { source, .. } => {
                matches!(
                    source,
                    object_store::Error::NotFound { .. }
                        | object_store::Error::PermissionDenied { .. }
                        | object_store::Error::Unauthenticated { .. }
                ) || http_status(source)
                    .is_some_and(|status| (400..500).contains(&status) && status != 408 && status != 429)
                    || io_error(source).is_some_and(is_user_io_error)
            }
            // A concurrent or interrupted commit: running again helps.
            ConnectorError::Write { .. } | ConnectorError::LeaseLost { .. } | ConnectorError::OutputMoved { .. } => {
                false
            }
            _ => true,
        }
    }
}

/// The operating-system error under a (local) store error, if there is one.
fn io_error(error: &object_store::Error) -> Option<&std::io::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        current = error.source();
    }
    None
}

/// Local filesystem errors that the user's paths or permissions cause, which no retry cures:
/// EPERM, EACCES, ENOTDIR, EISDIR, EROFS, ENAMETOOLONG, ELOOP (Linux numbers).
fn is_user_io_error(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(1 | 13 | 20 | 21 | 30 | 36 | 40))
}

/// The HTTP status of a store error whose request got an answer.
///
/// object_store keeps the status inside a private error type, whose message reads
/// "… Server returned non-2xx status code: 403 Forbidden: …"; this reads it from the
/// messages of the error chain. `None` for errors without a response (connection
/// refused, timeouts) and for errors of other stores.
pub fn http_status(error: &object_store::Error) -> Option<u16> {
    const MARKER: &str = "status code: ";
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        let message = error.to_string();
        if let Some(at) = message.find(MARKER) {
            let digits: String = message[at + MARKER.len()..].chars().take_while(char::is_ascii_digit).collect();
            if let Ok(status) = digits.parse() {
                return Some(status);
            }
        }
        current = error.source();
    }
    None
}

/// The longest part of a store's answer that an error message quotes.
const MAX_QUOTED_ANSWER: usize = 300;

/// A store error's message as Weir prints it: the credentials of this process (and any
/// header that carries one) blanked out, and the store's answer cut short. Some
/// S3-compatible endpoints echo the request's headers in an error body, which would
/// otherwise print the session token.
pub fn redact_store_error(error: &object_store::Error) -> String {
    let mut message = error.to_string();
    for variable in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"] {
        if let Ok(secret) = std::env::var(variable)
            && secret.len() >= 4
        {
            message = message.replace(&secret, "***");
        }
    }
    let mut redacted = String::with_capacity(message.len());
    for (index, line) in message.split('\n').enumerate() {
        if index > 0 {
            redacted.push('\n');
        }
        let lower = line.to_ascii_lowercase();
        let sensitive = ["x-amz-security-token", "authorization", "x-amz-credential", "signature="];
        match sensitive.iter().filter_map(|key| lower.find(key).map(|at| at + key.len())).min() {
            Some(at) => {
                redacted.push_str(&line[..at]);
                redacted.push_str(" ***");
            }
            None => redacted.push_str(line),
        }
    }
    if redacted.chars().count() > MAX_QUOTED_ANSWER {
        redacted = redacted.chars().take(MAX_QUOTED_ANSWER).collect::<String>() + " … (cut)";
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_errors_the_user_causes_are_user_errors() {
        let store_error = |errno| {
            ConnectorError::store(
                "file:///x",
                object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(std::io::Error::from_raw_os_error(errno)),
                },
            )
        };
        for errno in [13, 20, 30, 36, 40] {
            assert!(store_error(errno).is_user_error(), "errno {errno}");
        }
        assert!(!store_error(5).is_user_error(), "EIO may pass");
    }

    #[test]
    fn header_values_and_long_answers_are_not_quoted() {
        let body = format!(
            "X-Amz-Security-Token: FQoGZXIvYXdzEJr\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIA/x\n{}",
            "y".repeat(1000)
        );
        let error = object_store::Error::Generic { store: "S3", source: body.into() };
        let text = redact_store_error(&error);
        assert!(!text.contains("FQoGZXIvYXdzEJr") && !text.contains("AKIA/x"), "{text}");
        assert!(text.len() < 400, "{}", text.len());
    }
}
