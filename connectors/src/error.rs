//! Connector errors. Each names the URI (and where it applies the row group or column) it
//! concerns, and says whether the cause is the user's input or the outside world.

use parquet::errors::ParquetError;

/// A failure reading or writing a dataset.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("invalid URI '{uri}': {reason}")]
    InvalidUri { uri: String, reason: String },

    #[error("no data files at '{uri}' (nothing there, or only hidden files starting with '_' or '.')")]
    NoDataFiles { uri: String },

    #[error("'{uri}' is not a readable Parquet file: {source}")]
    CorruptParquet {
        uri: String,
        #[source]
        source: ParquetError,
    },

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

    #[error("the source '{source_uri}' and the sink '{sink_uri}' overlap; write the output elsewhere")]
    SinkOverlapsSource { source_uri: String, sink_uri: String },

    #[error("object store error at '{uri}': {source}")]
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
            ConnectorError::Store { source, .. } => matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ),
            ConnectorError::Write { .. } => false,
            _ => true,
        }
    }
}
