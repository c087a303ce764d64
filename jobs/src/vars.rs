//! Job variables: `{{ds}}` (the run date, `YYYY-MM-DD`, UTC today unless given),
//! `{{run_id}}` (unique per run unless given), and any `--var key=value`. Variables are
//! substituted in the job's text before it is parsed, so they may appear in any string.

use std::collections::BTreeMap;

use crate::JobError;

/// Names and values of the variables of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variables {
    values: BTreeMap<String, String>,
}

impl Variables {
    /// The built-in variables, overridden and extended by `overrides` (`key=value` pairs).
    pub fn new(overrides: &[(String, String)]) -> Self {
        let mut values = BTreeMap::new();
        values.insert("ds".to_string(), chrono::Utc::now().format("%Y-%m-%d").to_string());
        values.insert("run_id".to_string(), new_run_id());
        for (key, value) in overrides {
            values.insert(key.clone(), value.clone());
        }
        Variables { values }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The run id (always set).
    pub fn run_id(&self) -> &str {
        self.get("run_id").unwrap_or_default()
    }

    /// As `key=value` pairs, to pass to child processes.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Replaces every `{{ name }}` in `text`. An unknown name is an error naming its line.
    pub fn substitute(&self, path: &str, text: &str) -> Result<String, JobError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let Some(length) = rest[start..].find("}}") else { break };
            let name = rest[start + 2..start + length].trim();
            out.push_str(&rest[..start]);
            match self.values.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    let consumed = text.len() - rest.len() + start;
                    return Err(JobError::UnknownVariable {
                        path: path.to_string(),
                        line: text[..consumed].lines().count().max(1),
                        name: name.to_string(),
                        known: self.values.keys().cloned().collect::<Vec<_>>().join(", "),
                    });
                }
            }
            rest = &rest[start + length + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Parses `key=value`.
pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

/// A new run id: UTC time to the second, then 32 random bits (`20261125T060400Z-1a2b3c4d`).
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    format!("{}-{:08x}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"), hasher.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_builtins_and_overrides() {
        let vars = Variables::new(&[("ds".into(), "2024-01-31".into()), ("region".into(), "eu".into())]);
        let out = vars.substitute("job.toml", "uri = \"s3://b/date={{ds}}/{{ region }}/{{run_id}}\"").unwrap();
        assert_eq!(out, format!("uri = \"s3://b/date=2024-01-31/eu/{}\"", vars.run_id()));
    }

    #[test]
    fn unknown_variables_name_their_line() {
        let vars = Variables::new(&[]);
        let err = vars.substitute("job.toml", "a = 1\nb = \"{{nope}}\"").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("{{nope}}") && err.contains("--var nope=VALUE"), "{err}");
    }

    #[test]
    fn run_ids_differ() {
        assert_ne!(new_run_id(), new_run_id());
    }
}
