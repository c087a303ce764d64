//! `[vars]`: the variables a job takes, declared with a type, an optional default and
//! optional allowed values. A job that declares them refuses any other `--var` (a mistyped
//! `dt=…` for `ds`), a value of the wrong type (`ds=2026/12/06` for a date) and a missing
//! one without a default, before anything is read: at `weir run`/`validate`, and when the
//! job service stores or accepts a submission. A job without `[vars]` takes any variable,
//! as before. The built-in variables (`ds`, `ds_nodash`, `interval_start`, `interval_end`,
//! `logical_time`, `run_id`) are always allowed; declaring one types it.
//!
//! ```toml
//! [vars]
//! ds = { type = "date" }
//! region = { type = "string", values = ["eu", "us"], default = "eu" }
//! min_amount = { type = "float", default = "0" }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::vars::Variables;

/// The variables every run has.
pub const BUILTIN: [&str; 6] = ["ds", "ds_nodash", "interval_start", "interval_end", "logical_time", "run_id"];

/// One declared variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarSpec {
    /// `string` (default), `date` (YYYY-MM-DD), `int`, `float` or `bool`.
    #[serde(rename = "type", default)]
    pub kind: VarType,
    /// The value when none is given; without one, the variable must be given.
    #[serde(default)]
    pub default: Option<String>,
    /// The only values allowed.
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

/// A declared variable's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarType {
    #[default]
    String,
    Date,
    Int,
    Float,
    Bool,
}

impl VarType {
    fn accepts(self, value: &str) -> bool {
        match self {
            VarType::String => true,
            VarType::Date => chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok() && value.len() == 10,
            VarType::Int => value.parse::<i64>().is_ok(),
            VarType::Float => value.parse::<f64>().is_ok_and(f64::is_finite),
            VarType::Bool => matches!(value, "true" | "false"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            VarType::String => "a string",
            VarType::Date => "a date (YYYY-MM-DD)",
            VarType::Int => "an integer",
            VarType::Float => "a finite number",
            VarType::Bool => "true or false",
        }
    }
}

/// The `[vars]` table of the job's TOML, if it has one that reads (a table that does not
/// read is reported by the job's own parsing).
pub fn declared(raw: &str) -> Option<BTreeMap<String, VarSpec>> {
    let table = toml::from_str::<toml::Table>(raw).ok()?;
    BTreeMap::<String, VarSpec>::deserialize(table.get("vars")?.clone()).ok()
}

/// The first of `given` that a job declaring `[vars]` does not take, as an error: checked
/// before anything else about the run's date, so that a mistyped `dt=…` is named as such.
pub fn check_names<'n>(raw: &str, mut given: impl Iterator<Item = &'n str>) -> Result<(), String> {
    let Some(declared) = declared(raw) else { return Ok(()) };
    match given.find(|name| !declared.contains_key(*name) && !BUILTIN.contains(name)) {
        Some(unknown) => Err(unknown_variable(unknown, &declared)),
        None => Ok(()),
    }
}

fn unknown_variable(name: &str, declared: &BTreeMap<String, VarSpec>) -> String {
    let mut names: Vec<&str> = declared.keys().map(String::as_str).collect();
    names.extend(BUILTIN.iter().filter(|name| !declared.contains_key(**name)));
    format!("unknown variable '{name}': the job's [vars] declares {}", names.join(", "))
}

/// `vars` checked against `declared`, with the defaults of declared variables not given
/// added. Errors name the variable, never its value.
pub fn apply(declared: &BTreeMap<String, VarSpec>, vars: &Variables) -> Result<Variables, String> {
    if let Some(unknown) = vars.given().find(|name| !declared.contains_key(*name) && !BUILTIN.contains(name)) {
        return Err(unknown_variable(unknown, declared));
    }
    let mut pairs: Vec<(String, String)> =
        vars.given().map(|name| (name.to_string(), vars.get(name).unwrap_or_default().to_string())).collect();
    for (name, spec) in declared {
        let value = match vars.given().find(|given| given == name) {
            Some(_) => vars.get(name).unwrap_or_default().to_string(),
            None => match &spec.default {
                Some(default) => {
                    pairs.push((name.clone(), default.clone()));
                    default.clone()
                }
                None => return Err(format!("variable '{name}' is required (--var {name}=…): it has no default")),
            },
        };
        if !spec.kind.accepts(&value) {
            return Err(format!("variable '{name}' must be {}", spec.kind.describe()));
        }
        if let Some(allowed) = &spec.values
            && !allowed.contains(&value)
        {
            return Err(format!("variable '{name}' must be one of: {}", allowed.join(", ")));
        }
    }
    if !pairs.iter().any(|(name, _)| name == "run_id") {
        pairs.push(("run_id".into(), vars.run_id().to_string()));
    }
    Ok(Variables::new(&pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "name = \"t\"\n[vars]\nds = { type = \"date\" }\nregion = { values = [\"eu\", \"us\"], default = \"eu\" }\nn = { type = \"int\", default = \"3\" }\n";

    fn check(given: &[(&str, &str)]) -> Result<Variables, String> {
        let pairs: Vec<(String, String)> = given.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        apply(&declared(JOB).unwrap(), &Variables::new(&pairs))
    }

    #[test]
    fn declared_variables_are_typed_defaulted_and_the_only_ones() {
        let vars = check(&[("ds", "2026-12-06")]).unwrap();
        assert_eq!(
            (vars.get("region"), vars.get("n"), vars.get("ds_nodash")),
            (Some("eu"), Some("3"), Some("20261206"))
        );
        let err = check(&[("ds", "2026-12-06"), ("dt", "2026-12-06")]).unwrap_err();
        assert!(err.contains("unknown variable 'dt'") && err.contains("ds, n, region"), "{err}");
        for bad in ["2026/12/06", "2026-13-01", "2026-1-1", "yesterday"] {
            let err = check(&[("ds", bad)]).unwrap_err();
            assert!(err.contains("'ds' must be a date (YYYY-MM-DD)") && !err.contains(bad), "{err}");
        }
        assert!(check(&[("ds", "2026-12-06"), ("region", "apac")]).unwrap_err().contains("one of: eu, us"));
        assert!(check(&[("ds", "2026-12-06"), ("n", "3.5")]).unwrap_err().contains("an integer"));
        assert!(check(&[]).unwrap_err().contains("'ds' is required"));
        // run_id is the run's whatever the job declares.
        assert!(check(&[("ds", "2026-12-06"), ("run_id", "r1")]).unwrap().run_id() == "r1");
    }
}
