//! Job variables: `{{ds}}` (the run date, `YYYY-MM-DD`; the binary and the job service give
//! it by `crate::schedule::with_run_date`, and only a job that uses no date variable falls
//! back to UTC today here),
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
    /// The names the caller gave (`--var`, a tick's or a backfill's), not defaulted here.
    given: std::collections::BTreeSet<String>,
}

impl Variables {
    /// The built-in variables, overridden and extended by `overrides` (`key=value` pairs).
    pub fn new(overrides: &[(String, String)]) -> Self {
        let mut values = BTreeMap::new();
        values.insert("ds".to_string(), chrono::Utc::now().format("%Y-%m-%d").to_string());
        values.insert("run_id".to_string(), new_run_id());
        let given = overrides.iter().map(|(key, _)| key.clone()).collect();
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
        Variables { values, given }
    }

    /// The names the caller gave, as opposed to those defaulted.
    pub fn given(&self) -> impl Iterator<Item = &str> {
        self.given.iter().map(String::as_str)
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
            let expression = EXPRESSION_KEYS.contains(&key.get_ref().as_ref());
            let line = line_of(text, value.span().start);
            if expression && let DeValue::String(string) = value.get_mut() {
                match self.expand_in_expression(string) {
                    Ok(Some(expanded)) => *string = Cow::Owned(expanded),
                    Ok(None) => {}
                    Err(error) => *failure = Some(error.at(path, line, self)),
                }
                continue;
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
            if replacement.split('/').any(|segment| segment == "..") {
                return Err(ExpandError::Traversal(name.to_string()));
            }
            out.push_str(&rest[..open]);
            out.push_str(replacement);
            rest = &rest[open + length + 2..];
        }
        out.push_str(rest);
        Ok(Some(out))
    }
}

impl Variables {
    /// `expression` (a step's `expr`) with every `{{ name }}` replaced by a literal, never by
    /// SQL text: inside a quoted string (`'{{region}}'`) the value becomes that string's
    /// content, its quotes doubled, so it cannot end the string; inside a quoted name
    /// (`"{{column}}"`) likewise; outside quotes it must be a number or `true`/`false`
    /// (`income > {{n}}`), or the job is refused. `nobody' or ssn is not null` therefore
    /// stays one string value and cannot widen a filter.
    pub fn expand_in_expression(&self, expression: &str) -> Result<Option<String>, ExpandError> {
        if !expression.contains("{{") {
            return Ok(None);
        }
        let mut out = String::with_capacity(expression.len());
        // The quote the template is inside of at this point (' or "), if any.
        let mut quote: Option<char> = None;
        let mut rest = expression;
        while let Some(c) = rest.chars().next() {
            if rest.starts_with("{{")
                && let Some(length) = rest.find("}}")
            {
                let name = rest[2..length].trim();
                let value = self.values.get(name).ok_or_else(|| ExpandError::Unknown(name.to_string()))?;
                let chars = value.chars().count();
                if chars > MAX_VALUE_CHARS {
                    return Err(ExpandError::TooLong { name: name.to_string(), chars });
                }
                match quote {
                    Some(q) => out.push_str(&value.replace(q, &format!("{q}{q}"))),
                    None if is_plain_literal(value) => out.push_str(value),
                    None => return Err(ExpandError::NotALiteral(name.to_string())),
                }
                rest = &rest[length + 2..];
                continue;
            }
            match quote {
                // A doubled quote inside a quoted string is that quote, escaped: still inside.
                Some(q) if c == q && rest[c.len_utf8()..].starts_with(q) => {
                    out.push(q);
                    out.push(q);
                    rest = &rest[2 * c.len_utf8()..];
                    continue;
                }
                Some(q) if c == q => quote = None,
                None if c == '\'' || c == '"' => quote = Some(c),
                _ => {}
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        Ok(Some(out))
    }
}

/// The keys whose string values are expressions, where variables become literals
/// ([`Variables::expand_in_expression`]).
pub const EXPRESSION_KEYS: [&str; 1] = ["expr"];

/// A number (`12`, `-0.5`, `1e-3`) or a boolean: what a variable outside quotes in an
/// expression may hold.
fn is_plain_literal(value: &str) -> bool {
    let number = value.strip_prefix(['-', '+']).unwrap_or(value);
    let (mantissa, exponent) = match number.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent.strip_prefix(['-', '+']).unwrap_or(exponent))),
        None => (number, None),
    };
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((whole, fraction)) => {
            (digits(whole) || whole.is_empty()) && (digits(fraction) || fraction.is_empty()) && mantissa != "."
        }
        None => digits(mantissa),
    };
    (mantissa_ok && exponent.is_none_or(digits)) || matches!(value, "true" | "false")
}

/// Why a string's variables could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    Unknown(String),
    TooLong {
        name: String,
        chars: usize,
    },
    /// A variable outside quotes in an expression whose value is not a number or boolean.
    NotALiteral(String),
    /// A value holding a `..` path segment (`ds=a/../../b`), which would lead a URI out of
    /// the folder the job names.
    Traversal(String),
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
            ExpandError::Traversal(name) => JobError::BadVariable {
                path: path.to_string(),
                line,
                name,
                reason: "its value holds a '..' path segment, which could lead a path out of the folder the job names"
                    .to_string(),
            },
            ExpandError::NotALiteral(name) => JobError::BadVariable {
                path: path.to_string(),
                line,
                reason: format!(
                    "it stands outside quotes in an expression, where a variable must be a number or true/false, \
                     and its value is not one (write '{{{{{name}}}}}' for a text value)"
                ),
                name,
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

/// Parses `key=value` (`--var`): the key is trimmed of surrounding spaces and must then be a
/// [`check_name`] name; the value is taken as it is.
pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) => {
            check_name(key.trim())?;
            Ok((key.trim().to_string(), value.to_string()))
        }
        None => Err("expected KEY=VALUE".to_string()),
    }
}

/// The longest variable name accepted.
pub const MAX_NAME_CHARS: usize = 64;

/// Checks a variable's name: 1 to [`MAX_NAME_CHARS`] of `A-Z a-z 0-9 _ -`, starting with a
/// letter or `_`. The job service checks submitted names with this function, untrimmed, so
/// that what it accepts is exactly what the run's process will read. The name is not echoed:
/// it may be anything a client sent.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = (1..=MAX_NAME_CHARS).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "a variable's name is 1 to {MAX_NAME_CHARS} of A-Z a-z 0-9 _ -, starting with a letter or _ (no spaces)"
        ))
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
    fn values_with_a_dot_dot_segment_are_refused() {
        for evil in ["a/../../b", "..", "../x", "x/.."] {
            let vars = Variables::new(&[("ds".into(), evil.into())]);
            let err = vars.parse_and_substitute("job.toml", "uri = \"out/date={{ds}}/\"").unwrap_err().to_string();
            assert!(err.contains("'..' path segment") && err.contains("{{ds}}"), "{evil}: {err}");
        }
        let vars = Variables::new(&[("ds".into(), "a..b/c...".into())]);
        assert_eq!(uri(&vars, "uri = \"out/{{ds}}\""), "out/a..b/c...");
    }

    #[test]
    fn unclosed_braces_are_text() {
        let vars = Variables::new(&[("ds".into(), "d".into())]);
        assert_eq!(uri(&vars, "uri = \"a{{ds}}b{{c\""), "adb{{c");
    }

    #[test]
    fn variable_names_are_checked_as_the_service_checks_them() {
        assert_eq!(parse_pair(" ds =2024-01-01").unwrap(), ("ds".to_string(), "2024-01-01".to_string()));
        assert_eq!(parse_pair("x=a=b").unwrap().1, "a=b");
        for bad in ["=1", " =1", "a b=1", "1x=1", "a.b=1", "x\ty=1", "nothing"] {
            assert!(parse_pair(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("run_id ").is_err() && check_name(" ds").is_err() && check_name("my-var_2").is_ok());
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    fn expr(vars: &[(&str, &str)], text: &str) -> Result<String, JobError> {
        let pairs: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let document = Variables::new(&pairs).parse_and_substitute("job.toml", text)?;
        let step = document.get_ref().get("step").unwrap().get_ref().as_table().unwrap();
        Ok(step.get("expr").unwrap().get_ref().as_str().unwrap().to_string())
    }

    #[test]
    fn variables_in_expressions_are_literals_not_text() {
        let text = "[step]\nexpr = \"name = '{{who}}' and \\\"{{col}}\\\" > {{n}} and note = 'it''s {{who}}'\"\n";
        let got =
            expr(&[("who", "nobody' or ssn is not null or ssn = 'y"), ("col", "a\"b"), ("n", "-1.5e3")], text).unwrap();
        assert_eq!(
            got,
            "name = 'nobody'' or ssn is not null or ssn = ''y' and \"a\"\"b\" > -1.5e3 and note = 'it''s nobody'' or ssn is not null or ssn = ''y'"
        );
        for value in ["1 or 1 = 1", "x", "1e", ".", "", "--1", "0x10"] {
            let err = expr(&[("n", value)], "[step]\nexpr = \"id > {{n}}\"\n").unwrap_err().to_string();
            assert!(err.contains("must be a number or true/false") && err.contains("'{{n}}'"), "{value:?}: {err}");
            if value.len() > 3 {
                assert!(!err.contains(value), "the value is not echoed: {err}");
            }
        }
        for value in ["12", "-0.5", "+3", "1.", ".5", "2E+10", "true"] {
            assert_eq!(expr(&[("n", value)], "[step]\nexpr = \"id > {{n}}\"\n").unwrap(), format!("id > {value}"));
        }
        // Other keys are plain text, as before.
        assert_eq!(uri(&Variables::new(&[("ds".into(), "a' b".into())]), "uri = \"x/{{ds}}\""), "x/a' b");
    }

    #[test]
    fn run_ids_differ() {
        assert_ne!(new_run_id(), new_run_id());
    }
}
