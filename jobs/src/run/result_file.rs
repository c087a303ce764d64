//! The outcome a run leaves in its `--result-file` for whoever started it: written by
//! `weir run` when the run ends, read back by the job service's scheduler with the same
//! type. `{"state": "succeeded", "exit_code": 0, "rows_in", "rows_out", …the summary…}` or
//! `{"state": "failed" | "cancelled", "kind": "user" | "external" | "internal" |
//! "cancelled" | "input_not_ready", "exit_code", "message"}`; the failure's kind is
//! [`FailureKind`]'s serde name, which the service also records as the run's exit class.

use std::path::Path;

use serde::{Deserialize, Serialize};
use weir_engine::{FailureKind, JobFailure};

use crate::signals::Stop;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultState {
    Succeeded,
    Failed,
    Cancelled,
}

/// What a run's result file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub state: ResultState,
    /// Why a run that did not succeed failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FailureKind>,
    /// The exit code of the `weir run` process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The failure's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_in: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_out: Option<i64>,
    /// Everything else a succeeded run reported (job, output, files, bytes, seconds,
    /// stages…: the `--json` summary).
    #[serde(flatten)]
    pub summary: serde_json::Map<String, serde_json::Value>,
}

impl RunResult {
    /// The result of a run that ended with `result` (its `--json` summary, or its
    /// failure). A run stopped by a signal is cancelled whatever its failure says (a
    /// failing worker also sets the abort flag, so the flag alone says nothing), and exits
    /// with the signal's code.
    pub fn of(result: &Result<serde_json::Value, JobFailure>, stop: &Stop) -> RunResult {
        match result {
            Ok(summary) => {
                let mut summary = summary.as_object().cloned().unwrap_or_default();
                let mut count = |name: &str| {
                    let value = summary.get(name).and_then(serde_json::Value::as_i64);
                    if value.is_some() {
                        summary.remove(name);
                    }
                    value
                };
                let (rows_in, rows_out) = (count("rows_in"), count("rows_out"));
                RunResult {
                    state: ResultState::Succeeded,
                    kind: None,
                    exit_code: Some(0),
                    message: None,
                    rows_in,
                    rows_out,
                    summary,
                }
            }
            Err(failure) => {
                let cancelled = failure.kind == FailureKind::Cancelled || stop.exit_code().is_some();
                RunResult {
                    state: if cancelled { ResultState::Cancelled } else { ResultState::Failed },
                    kind: Some(failure.kind),
                    exit_code: Some(stop.exit_code().unwrap_or_else(|| failure.exit_code()).into()),
                    message: Some(failure.message.clone()),
                    rows_in: None,
                    rows_out: None,
                    summary: serde_json::Map::new(),
                }
            }
        }
    }

    /// Writes the result to `path`: to a temporary name, then renamed, so a reader never
    /// sees half of it. Its keys are in alphabetical order.
    pub fn write(&self, path: &str) -> std::io::Result<()> {
        let text = serde_json::to_value(self).map_err(std::io::Error::other)?.to_string();
        let staged = format!("{path}.staged");
        std::fs::write(&staged, text).and_then(|()| std::fs::rename(&staged, path))
    }

    /// The result a run left at `path`; `None` if there is none (the process died before
    /// writing it) or it cannot be read.
    pub fn read(path: &Path) -> Option<RunResult> {
        std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok())
    }
}

/// A failure kind's name in result files and in the job service's run history (its
/// `exit_class`): its serde name.
pub fn kind_name(kind: FailureKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{kind:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_the_serde_names() {
        assert_eq!(kind_name(FailureKind::User), "user");
        assert_eq!(kind_name(FailureKind::InputNotReady), "input_not_ready");
    }

    #[test]
    fn a_result_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        let summary = serde_json::json!({"job": "j", "files": 1});
        let result = RunResult {
            state: ResultState::Succeeded,
            kind: None,
            exit_code: Some(0),
            message: None,
            rows_in: Some(3),
            rows_out: Some(2),
            summary: summary.as_object().unwrap().clone(),
        };
        result.write(path.to_str().unwrap()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, r#"{"exit_code":0,"files":1,"job":"j","rows_in":3,"rows_out":2,"state":"succeeded"}"#);
        assert_eq!(RunResult::read(&path), Some(result));
        let failed = r#"{"exit_code":1,"kind":"input_not_ready","message":"m","state":"failed"}"#;
        std::fs::write(&path, failed).unwrap();
        let read = RunResult::read(&path).unwrap();
        assert_eq!((read.state, read.kind), (ResultState::Failed, Some(FailureKind::InputNotReady)));
    }
}
