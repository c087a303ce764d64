//! Job variables: `{{ds}}` (the run date, `YYYY-MM-DD`, UTC today unless given),
//! `{{run_id}}` (unique per run unless given), and any `--var key=value`; `{{ds_nodash}}`,
//! `{{interval_start}}`, `{{interval_end}}` and `{{logical_time}}` default to the day `ds`
//! names (a scheduled run gets its tick's). The job's TOML is
//! parsed first and variables are then substituted inside its string values, so a value is
//! always data: it cannot add a key, end a string or change a number.

use std::borrow::Cow;
use std::collections::BTreeMap;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

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
        // What a scheduled run gets from its tick (service/schedules.rs); for other runs, the
        // day `ds` names.
        let ds = values.get("ds").cloned().unwrap_or_default();
        let day = chrono::NaiveDate::parse_from_str(&ds, "%Y-%m-%d").ok();
        let mut derived = vec![("ds_nodash", ds.replace('-', ""))];
        if let Some(day) = day {
            let start = format!("{day}T00:00:00Z");
            let end = format!("{}T00:00:00Z", day.succ_opt().unwrap_or(day));
            derived.extend([("interval_start", start), ("interval_end", end.clone()), ("logical_time", end)]);
        }
        for (key, value) in derived {
            values.entry(key.to_string()).or_insert(value);
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

    /// Parses the job's TOML and replaces every `{{ name }}` inside its string values (the
    /// values of keys and the items of arrays, at any depth). Substitution happens after
    /// parsing, so a value is data and can never add or change a key; keys and table names
    /// hold no variables, and a `{{` outside a string is a TOML error. The spans of the
    /// result still point into `text`, so later errors name its lines. An unknown name is
    /// an error naming the line; values longer than [`MAX_VALUE_CHARS`] are refused, and
    /// never echoed.
    pub fn parse_and_substitute<'t>(&self, path: &str, text: &'t str) -> Result<Spanned<DeTable<'t>>, JobError> {
        let mut document = DeTable::parse(text)
            .map_err(|error| JobError::Toml { path: path.to_string(), message: toml_message(error, text) })?;
        let mut failure = None;
        self.substitute_table(document.get_mut(), text, path, &mut failure);
        match failure {
            Some(error) => Err(error),
            None => Ok(document),
        }
    }

    fn substitute_table(&self, table: &mut DeTable<'_>, text: &str, path: &str, failure: &mut Option<JobError>) {
        for (key, value) in table.iter_mut() {
            if failure.is_some() {
                return;
            }
            if let Some(name) = variable_in(key.get_ref()) {
                *failure = Some(JobError::BadVariable {
                    path: path.to_string(),
                    line: line_of(text, key.span().start),
                    name: name.to_string(),
                    reason: "it stands in a key; variables stand only in string values".into(),
                });
                return;
            }
            self.substitute_value(value, text, path, failure);
        }
    }

    fn substitute_value(
        &self,
        value: &mut Spanned<DeValue<'_>>,
        text: &str,
        path: &str,
        failure: &mut Option<JobError>,
    ) {
        let line = line_of(text, value.span().start);
        match value.get_mut() {
            DeValue::String(string) => match self.expand(string) {
                Ok(Some(expanded)) => *string = Cow::Owned(expanded),
                Ok(None) => {}
                Err(error) => *failure = Some(error.at(path, line, self)),
            },
            DeValue::Array(array) => {
                for item in array.iter_mut() {
                    self.substitute_value(item, text, path, failure);
                }
            }
            DeValue::Table(table) => self.substitute_table(table, text, path, failure),
            _ => {}
        }
    }

    /// `value` with every `{{ name }}` replaced, or `None` when it holds none.
    pub fn expand(&self, value: &str) -> Result<Option<String>, ExpandError> {
        if !value.contains("{{") {
            return Ok(None);
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(open) = rest.find("{{") {
            let Some(length) = rest[open..].find("}}") else { break };
            let name = rest[open + 2..open + length].trim();
            let Some(replacement) = self.values.get(name) else {
                return Err(ExpandError::Unknown(name.to_string()));
            };
            let chars = replacement.chars().count();
            if chars > MAX_VALUE_CHARS {
                return Err(ExpandError::TooLong { name: name.to_string(), chars });
            }
            out.push_str(&rest[..open]);
            out.push_str(replacement);
            rest = &rest[open + length + 2..];
        }
        out.push_str(rest);
        Ok(Some(out))
    }
}

/// Why a string's variables could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    Unknown(String),
    TooLong { name: String, chars: usize },
}

impl ExpandError {
    fn at(self, path: &str, line: usize, vars: &Variables) -> JobError {
        match self {
            ExpandError::Unknown(name) => JobError::UnknownVariable {
                path: path.to_string(),
                line,
                name,
                known: vars.values.keys().cloned().collect::<Vec<_>>().join(", "),
            },
            ExpandError::TooLong { name, chars } => JobError::BadVariable {
                path: path.to_string(),
                line,
                name,
                reason: format!("its value is {chars} characters long; at most {MAX_VALUE_CHARS} are allowed"),
            },
        }
    }
}

/// The longest variable value accepted.
pub const MAX_VALUE_CHARS: usize = 4096;

/// The first `{{ name }}` in `text`, if any.
fn variable_in(text: &str) -> Option<&str> {
    let open = text.find("{{")?;
    let length = text[open..].find("}}")?;
    Some(text[open + 2..open + length].trim())
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

/// A TOML error rendered against the job's text (line, column and a snippet), with a hint
/// when the offending place holds a variable outside a string.
pub fn toml_message(mut error: toml::de::Error, text: &str) -> String {
    let near_variable = error.span().is_some_and(|span| {
        let bytes = text.as_bytes();
        let window = &bytes[span.start.saturating_sub(2).min(bytes.len())..(span.end + 2).min(bytes.len())];
        window.windows(2).any(|pair| pair == b"{{")
    });
    if let Some(message) = unknown_field_at_its_line(&error, text) {
        return message;
    }
    error.set_input(Some(text));
    let mut message = error.to_string().trim_end().to_string();
    if near_variable {
        message.push_str("\n(variables such as {{ds}} stand only inside quoted strings)");
    }
    message
}

/// An unknown field inside a `[[step]]` is reported by serde at the steps' header (an op is
/// an internally tagged enum, whose fields serde buffers without their positions). Points
/// the error at the field's own line instead: the first `[[step]]` whose body alone fails
/// to deserialize with the same message, then the line of that key in it.
fn unknown_field_at_its_line(error: &toml::de::Error, text: &str) -> Option<String> {
    let span = error.span()?;
    let field = error.message().strip_prefix("unknown field `")?.split('`').next()?;
    if !text.get(span.clone())?.starts_with("[[step]]") {
        return None;
    }
    // (offset of the body, body) of every [[step]] section.
    let mut sections: Vec<(usize, String)> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let header = line.trim();
        if header.starts_with('[') {
            if header == "[[step]]" {
                sections.push((offset + line.len(), String::new()));
            } else {
                sections.push((usize::MAX, String::new()));
            }
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
        }
        offset += line.len();
    }
    let (body_offset, body) = sections.into_iter().filter(|(at, _)| *at != usize::MAX).find(|(_, body)| {
        toml::from_str::<weir_operators::StepSpec>(body).is_err_and(|e| e.message() == error.message())
    })?;
    let mut offset = body_offset;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let key = trimmed.split('=').next().unwrap_or_default().trim().trim_matches(['"', '\'']);
        if trimmed.contains('=') && key == field {
            let start = offset + (line.len() - trimmed.len());
            let number = text[..start].matches('\n').count() + 1;
            let column = start - text[..start].rfind('\n').map_or(0, |i| i + 1) + 1;
            let pad = " ".repeat(number.to_string().len());
            return Some(format!(
                "TOML parse error at line {number}, column {column}\n{pad} |\n{number} | {}\n{pad} | {}{}\n{}",
                line.trim_end(),
                " ".repeat(column - 1),
                "^".repeat(key.len().max(1)),
                error.message().trim_end()
            ));
        }
        offset += line.len();
    }
    None
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

    fn uri(vars: &Variables, text: &str) -> String {
        let document = vars.parse_and_substitute("job.toml", text).unwrap();
        document.get_ref().get("uri").and_then(|value| value.get_ref().as_str()).unwrap().to_string()
    }

    #[test]
    fn an_unknown_step_field_is_reported_at_its_own_line() {
        let text = "name = \"t\"\n[source]\nuri = \"d\"\n[[step]]\nop = \"filter\"\nexpr = \"x > 1\"\n[[step]]\nop = \"impute\"\ncolumns = [\"x\"]\n  expr = \"mean\"\n[sink]\nuri = \"o\"\n";
        let error = crate::spec::JobSpec::from_toml(text).unwrap_err();
        assert!(error.contains("line 10, column 3") && error.contains("10 |   expr = \"mean\""), "{error}");
        assert!(error.contains("unknown field `expr`"), "{error}");
    }

    #[test]
    fn substitutes_builtins_and_overrides() {
        let vars = Variables::new(&[("ds".into(), "2024-01-31".into()), ("region".into(), "eu".into())]);
        let got = uri(&vars, "uri = \"s3://b/date={{ds}}/{{ region }}/{{run_id}}\"");
        assert_eq!(got, format!("s3://b/date=2024-01-31/eu/{}", vars.run_id()));
        assert_eq!(uri(&vars, "uri = 'raw {{ds}}'"), "raw 2024-01-31");
    }

    #[test]
    fn unknown_variables_name_their_line() {
        let vars = Variables::new(&[]);
        let err = vars.parse_and_substitute("job.toml", "a = 1\nb = [\"x\", \"{{nope}}\"]").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("{{nope}}") && err.contains("--var nope=VALUE"), "{err}");
    }

    #[test]
    fn a_value_is_data() {
        let evil = "2024/\"\nmode = \"overwrite\"\n#";
        let vars = Variables::new(&[("ds".into(), evil.into())]);
        let text = "[sink]\nuri = \"out/{{ds}}\"\n# {{nothing}} in comments\n";
        let document = vars.parse_and_substitute("job.toml", text).unwrap();
        let sink = document.get_ref().get("sink").unwrap().get_ref().as_table().unwrap();
        assert_eq!(sink.len(), 1, "no key was injected");
        assert_eq!(sink.get("uri").unwrap().get_ref().as_str(), Some(format!("out/{evil}").as_str()));
    }

    #[test]
    fn variables_outside_strings_or_in_keys_are_refused() {
        let vars = Variables::new(&[("n".into(), "512".into())]);
        let err = vars.parse_and_substitute("job.toml", "a = 1\nbatch_size = {{n}}").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("only inside quoted strings"), "{err}");
        let err = vars.parse_and_substitute("job.toml", "[x]\n\"{{n}}\" = 1").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("in a key"), "{err}");
    }

    #[test]
    fn long_values_are_refused_without_being_echoed() {
        let long = "x".repeat(100_000);
        let vars = Variables::new(&[("ds".into(), long.clone())]);
        let err = vars.parse_and_substitute("job.toml", "uri = \"{{ds}}\"").unwrap_err().to_string();
        assert!(err.contains("100000 characters") && !err.contains(&long[..200]) && err.len() < 400, "{err}");
    }

    #[test]
    fn unclosed_braces_are_text() {
        let vars = Variables::new(&[("ds".into(), "d".into())]);
        assert_eq!(uri(&vars, "uri = \"a{{ds}}b{{c\""), "adb{{c");
    }

    #[test]
    fn run_ids_differ() {
        assert_ne!(new_run_id(), new_run_id());
    }
}
