//! `_weir/fitted.json`: the parameters of every fitted step of a run ([`FittedFile`]), how a
//! step finds its entry when it reuses them, and the SHA-256 that identifies them
//! ([`params_sha256`]).

use serde::{Deserialize, Serialize};

use crate::OpError;

/// The version of the `fitted.json` format this build writes and reads.
pub const FITTED_FORMAT_VERSION: u32 = 1;

/// `_weir/fitted.json`: the parameters of every fitted step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedFile {
    pub format_version: u32,
    pub weir_version: String,
    pub job: String,
    pub run_id: String,
    pub steps: Vec<FittedStep>,
}

/// One fitted step's entry in [`FittedFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedStep {
    /// 1-based position of the step in the job that fitted it.
    pub step: usize,
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    pub columns: Vec<String>,
    /// Where the parameters came from when this run reused them (`fitted = "…"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    pub params: serde_json::Value,
}

/// The SHA-256 (hex) that identifies fitted parameters, for pinning a model to the ones it
/// was trained on (`score`'s `fitted_sha256`): over each step's op, strategy, columns and
/// parameters, in order, as compact JSON; not over step numbers, run ids or where reused
/// parameters came from, so a run that reuses a fit gets the fit's hash.
pub fn params_sha256(steps: &[FittedStep]) -> String {
    use sha2::{Digest, Sha256};
    let canonical: Vec<serde_json::Value> =
        steps.iter().map(|s| serde_json::json!([s.op, s.strategy, s.columns, s.params])).collect();
    let digest = Sha256::digest(serde_json::Value::Array(canonical).to_string().as_bytes());
    hex::encode(digest)
}

impl FittedFile {
    /// Parses a `fitted.json`; `uri` names it in errors.
    pub fn parse(uri: &str, bytes: &[u8]) -> Result<FittedFile, OpError> {
        let file: FittedFile = serde_json::from_slice(bytes)
            .map_err(|e| OpError::InvalidSpec(format!("'{uri}' is not a Weir fitted.json: {e}")))?;
        if file.format_version != FITTED_FORMAT_VERSION {
            return Err(OpError::InvalidSpec(format!(
                "'{uri}' has fitted.json format version {}, this Weir reads version {FITTED_FORMAT_VERSION}",
                file.format_version
            )));
        }
        Ok(file)
    }

    /// The entry a step reuses: the `occurrence`-th (0-based) entry with the step's op and
    /// columns. A missing entry, or one fitted with another strategy, is an error that says
    /// what the file has.
    pub fn find(
        &self,
        uri: &str,
        op: &str,
        strategy: Option<&str>,
        columns: &[String],
        occurrence: usize,
    ) -> Result<&FittedStep, OpError> {
        let candidates: Vec<&FittedStep> = self.steps.iter().filter(|s| s.op == op && s.columns == columns).collect();
        let Some(found) = candidates.get(occurrence) else {
            let has: Vec<String> = self
                .steps
                .iter()
                .map(|s| format!("step {} {} over [{}]", s.step, s.op, short_list(&s.columns)))
                .collect();
            return Err(OpError::InvalidSpec(format!(
                "'{uri}' has no {op} step over columns [{}]; it has: {}",
                short_list(columns),
                if has.is_empty() { "nothing".to_string() } else { has.join("; ") }
            )));
        };
        if found.strategy.as_deref() != strategy {
            return Err(OpError::InvalidSpec(format!(
                "'{uri}' step {} was fitted with strategy {}, this step asks for {}",
                found.step,
                found.strategy.as_deref().unwrap_or("none"),
                strategy.unwrap_or("none")
            )));
        }
        Ok(found)
    }
}

/// Names for an error message: all of them when there are few, else the first five.
fn short_list(names: &[String]) -> String {
    if names.len() <= 6 {
        names.join(", ")
    } else {
        format!("{}, … ({} columns)", names[..5].join(", "), names.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> FittedFile {
        let entry = |step, op: &str, strategy: Option<&str>, columns: &[&str]| FittedStep {
            step,
            op: op.to_string(),
            strategy: strategy.map(str::to_string),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            reused_from: None,
            params: serde_json::json!({}),
        };
        FittedFile {
            format_version: FITTED_FORMAT_VERSION,
            weir_version: "0".into(),
            job: "j".into(),
            run_id: "r".into(),
            steps: vec![
                entry(2, "impute", Some("median"), &["a", "b"]),
                entry(3, "standardize", None, &["a"]),
                entry(5, "standardize", None, &["a"]),
            ],
        }
    }

    #[test]
    fn entries_are_matched_by_op_columns_and_occurrence() {
        let file = file();
        let cols = |c: &[&str]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(file.find("u", "impute", Some("median"), &cols(&["a", "b"]), 0).unwrap().step, 2);
        assert_eq!(file.find("u", "standardize", None, &cols(&["a"]), 1).unwrap().step, 5);
        let missing = file.find("u", "standardize", None, &cols(&["b"]), 0).unwrap_err().to_string();
        assert!(missing.contains("no standardize step over columns [b]") && missing.contains("step 3"), "{missing}");
        let strategy = file.find("u", "impute", Some("mean"), &cols(&["a", "b"]), 0).unwrap_err().to_string();
        assert!(strategy.contains("strategy median") && strategy.contains("asks for mean"), "{strategy}");
    }

    #[test]
    fn other_format_versions_are_refused() {
        let mut file = file();
        file.format_version = 99;
        let text = serde_json::to_vec(&file).unwrap();
        let err = FittedFile::parse("s3://b/fitted.json", &text).unwrap_err().to_string();
        assert!(err.contains("version 99") && err.contains("s3://b/fitted.json"), "{err}");
    }
}
