//! Job variables: `{{ds}}` (the run date, `YYYY-MM-DD`, UTC today unless given),
//! `{{run_id}}` (unique per run unless given), and any `--var key=value`. Variables are
//! substituted in the job's text before it is parsed, where they stand for text in strings
//! (escaped to stay inside them) or for plain words and numbers outside strings.

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

    /// Replaces every `{{ name }}` in `text` (but in comments), so that a value can never
    /// change the job's structure: inside a double-quoted string the value is escaped as
    /// TOML escapes it; inside a single-quoted string it may hold no `'` and no control
    /// character; outside strings it must be a plain word or number (`[A-Za-z0-9_.:+-]+`).
    /// An unknown name, or a value that does not fit where it goes, is an error naming the
    /// line; values longer than [`MAX_VALUE_CHARS`] are refused, and never echoed.
    pub fn substitute(&self, path: &str, text: &str) -> Result<String, JobError> {
        let mut out = String::with_capacity(text.len());
        let mut context = Context::Bare;
        let mut at = 0;
        while at < text.len() {
            let rest = &text[at..];
            if context != Context::Comment
                && rest.starts_with("{{")
                && let Some(length) = rest.find("}}")
            {
                let name = rest[2..length].trim();
                let line = text[..at].matches('\n').count() + 1;
                let Some(value) = self.values.get(name) else {
                    return Err(JobError::UnknownVariable {
                        path: path.to_string(),
                        line,
                        name: name.to_string(),
                        known: self.values.keys().cloned().collect::<Vec<_>>().join(", "),
                    });
                };
                let placed = place(value, context).map_err(|reason| JobError::BadVariable {
                    path: path.to_string(),
                    line,
                    name: name.to_string(),
                    reason,
                })?;
                out.push_str(&placed);
                at += length + 2;
                continue;
            }
            let (next, consumed) = context.step(rest);
            out.push_str(&rest[..consumed]);
            context = next;
            at += consumed;
        }
        Ok(out)
    }
}

/// The longest variable value accepted.
pub const MAX_VALUE_CHARS: usize = 4096;

/// Where in a TOML text a position is, as far as substitution cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Bare,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
    Comment,
}

impl Context {
    /// Reads one token at the start of `rest` (non-empty): returns the context after it and
    /// its length in bytes.
    fn step(self, rest: &str) -> (Context, usize) {
        let first = rest.chars().next().map(char::len_utf8).unwrap_or(1);
        let escaped = || rest.chars().take(2).map(char::len_utf8).sum();
        match self {
            Context::Bare if rest.starts_with("\"\"\"") => (Context::MultiBasic, 3),
            Context::Bare if rest.starts_with("'''") => (Context::MultiLiteral, 3),
            Context::Bare if rest.starts_with('"') => (Context::Basic, 1),
            Context::Bare if rest.starts_with('\'') => (Context::Literal, 1),
            Context::Bare if rest.starts_with('#') => (Context::Comment, 1),
            Context::Basic | Context::MultiBasic if rest.starts_with('\\') => (self, escaped()),
            Context::Basic if rest.starts_with(['"', '\n']) => (Context::Bare, 1),
            Context::MultiBasic if rest.starts_with("\"\"\"") => (Context::Bare, 3),
            Context::Literal if rest.starts_with(['\'', '\n']) => (Context::Bare, 1),
            Context::MultiLiteral if rest.starts_with("'''") => (Context::Bare, 3),
            Context::Comment if rest.starts_with('\n') => (Context::Bare, 1),
            _ => (self, first),
        }
    }
}

/// `value` as it may stand in `context`, or why it may not.
fn place(value: &str, context: Context) -> Result<String, String> {
    let chars = value.chars().count();
    if chars > MAX_VALUE_CHARS {
        return Err(format!("its value is {chars} characters long; at most {MAX_VALUE_CHARS} are allowed"));
    }
    match context {
        Context::Basic | Context::MultiBasic => Ok(value
            .chars()
            .map(|c| match c {
                '"' => "\\\"".to_string(),
                '\\' => "\\\\".to_string(),
                '\n' => "\\n".to_string(),
                '\t' => "\\t".to_string(),
                c if c.is_control() => format!("\\u{:04X}", c as u32),
                c => c.to_string(),
            })
            .collect()),
        Context::Literal | Context::MultiLiteral => {
            if value.chars().any(|c| c == '\'' || c.is_control()) {
                Err("its value holds a quote or a control character, which a single-quoted TOML string cannot; use a double-quoted string".into())
            } else {
                Ok(value.to_string())
            }
        }
        Context::Bare => {
            if !value.is_empty()
                && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '+' | '-'))
            {
                Ok(value.to_string())
            } else {
                Err("it stands outside a quoted string, where only a plain word or number may go; quote it".into())
            }
        }
        Context::Comment => Ok(value.to_string()),
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
    fn a_value_cannot_change_the_structure() {
        let evil = "2024/\"\nmode = \"overwrite\"\n#";
        let vars = Variables::new(&[("ds".into(), evil.into())]);
        let text = "[sink]\nuri = \"out/{{ds}}\"\n# {{nothing}} in comments\n";
        let out = vars.substitute("job.toml", text).unwrap();
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(parsed["sink"]["uri"].as_str(), Some(format!("out/{evil}").as_str()));
        assert_eq!(parsed["sink"].as_table().unwrap().len(), 1, "no key was injected");
        let err = vars.substitute("job.toml", "uri = 'out/{{ds}}'").unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("{{ds}}"), "{err}");
        let err = vars.substitute("job.toml", "batch_size = {{ds}}").unwrap_err().to_string();
        assert!(err.contains("quote it"), "{err}");
        let numbers = Variables::new(&[("n".into(), "512".into())]);
        assert_eq!(numbers.substitute("job.toml", "batch_size = {{n}}").unwrap(), "batch_size = 512");
    }

    #[test]
    fn long_values_are_refused_without_being_echoed() {
        let long = "x".repeat(100_000);
        let vars = Variables::new(&[("ds".into(), long.clone())]);
        let err = vars.substitute("job.toml", "uri = \"{{ds}}\"").unwrap_err().to_string();
        assert!(err.contains("100000 characters") && !err.contains(&long[..200]) && err.len() < 400, "{err}");
    }

    #[test]
    fn run_ids_differ() {
        assert_ne!(new_run_id(), new_run_id());
    }
}
