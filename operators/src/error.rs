//! The error type of every operator: what went wrong, naming the column, value or
//! expression it concerns. The caller (the engine) adds the job, step, file and row group.

use arrow::error::ArrowError;

/// An operator failure. [`OpError::is_user_error`] tells bad input (the spec or the
/// data: exit code 2) from a fault of Weir itself.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A column selector (name or glob) matched no column of the input.
    #[error("column selector '{selector}' matches no column; the input has: {available}")]
    NoMatchingColumn { selector: String, available: String },

    /// A type name in the spec is not one Weir knows.
    #[error("unknown type '{name}'; expected one of: {expected}")]
    UnknownType { name: String, expected: &'static str },

    /// A column's type cannot be cast to the requested type at all.
    #[error("column '{column}' of type {from} cannot be cast to {to}")]
    UncastableColumn { column: String, from: String, to: String },

    /// A value cannot be cast (with `on_error = "fail"`).
    #[error(
        "column '{column}': value {value} cannot be cast to {to} (use on_error = \"null\" to turn such values into nulls)"
    )]
    UncastableValue { column: String, value: String, to: String },

    /// An expression (of a `filter`, `derive` or `check`) does not parse or does not
    /// type-check.
    #[error("expression: {message}\n    {expr}\n    {caret}")]
    Expression { expr: String, message: String, caret: String },

    /// An expression failed on a value of the data (an integer overflow, an integer
    /// division by zero, a value that cannot be cast); the message never shows the value.
    #[error("expression `{expr}`: {message}")]
    Evaluation { expr: String, message: String },

    /// Expectations of a `check` step with `on_fail = "fail"` do not hold for the data.
    #[error("{0}")]
    CheckFailed(String),

    /// Any other mistake in a step's configuration.
    #[error("{0}")]
    InvalidSpec(String),

    /// An Arrow kernel failed on data that passed binding: a fault of Weir.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),

    /// A broken invariant inside Weir (never the user's input).
    #[error("internal error: {0}")]
    Internal(String),

    /// The error of one step of a chain fitted in one pass ([`crate::linear_chain`]);
    /// `member` counts the chain's steps from 0, so the engine can name the step.
    #[error("{error}")]
    InChain { member: usize, error: Box<OpError> },
}

impl OpError {
    /// True when the cause is the job's spec or its input data (exit code 2), false when
    /// it is a fault of Weir itself.
    pub fn is_user_error(&self) -> bool {
        match self {
            OpError::InChain { error, .. } => error.is_user_error(),
            other => !matches!(other, OpError::Arrow(_) | OpError::Internal(_)),
        }
    }

    /// Which step of a chain fitted in one pass failed (0 for any other error), and the
    /// error itself.
    pub fn chain_member(&self) -> (usize, &OpError) {
        match self {
            OpError::InChain { member, error } => (*member, error),
            other => (0, other),
        }
    }

    /// Builds a [`OpError::Expression`] with a caret under the 0-based character `position`.
    pub fn expression(expr: &str, position: usize, message: impl Into<String>) -> Self {
        OpError::Expression {
            expr: expr.to_string(),
            message: message.into(),
            caret: format!("{}^", " ".repeat(position.min(expr.chars().count()))),
        }
    }
}
