//! A job's `[schedule]`: the table as written ([`ScheduleSpec`]) and its parsed form
//! ([`Schedule`]): croner's cron expression in an IANA time zone, its ticks, and the
//! variables of a tick's run (the data interval it covers). What the job service does with
//! ticks (catch-up, restarts, backfills) is in `service::schedules`.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};

/// `[schedule]`: the job service runs the job at each tick of `cron` in `timezone`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// 5 fields (minute precision) or 6 (seconds first), as croner reads them.
    pub cron: String,
    /// An IANA time zone name (default UTC); ticks follow its daylight-saving rules.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// What to do with ticks the service missed (it was down, the job was held back).
    #[serde(default)]
    pub catchup: Catchup,
    /// With `catchup = "all"`: at most this many missed ticks run, the latest ones (default 30).
    #[serde(default = "default_max_catchup")]
    pub max_catchup: usize,
    /// Scheduled runs of the job that may be queued or running at once (default 1); a
    /// later tick waits for one to end.
    #[serde(default = "default_max_active_runs")]
    pub max_active_runs: usize,
    /// A paused schedule fires nothing; ticks that pass while paused are skipped for good.
    #[serde(default)]
    pub paused: bool,
}

/// `schedule.catchup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    /// Missed ticks are skipped; only a tick that comes due while the service runs fires.
    None,
    /// Of the missed ticks, only the latest runs (the default).
    #[default]
    Latest,
    /// Every missed tick runs, oldest first (at most `max_catchup`, the latest ones).
    All,
}

fn default_timezone() -> String {
    "UTC".into()
}

fn default_max_catchup() -> usize {
    30
}

fn default_max_active_runs() -> usize {
    1
}

/// A parsed `[schedule]`.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub spec: ScheduleSpec,
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// Parses the cron expression (5 fields, or 6 with seconds first) and the time zone.
    pub fn new(spec: &ScheduleSpec) -> Result<Schedule, String> {
        let parser = CronParser::builder().seconds(Seconds::Optional).build();
        let cron = parser
            .parse(&spec.cron)
            .map_err(|error| format!("schedule.cron '{}' is not a cron expression: {error}", spec.cron))?;
        let fields = spec.cron.split_whitespace().count();
        let alias = fields == 1 && spec.cron.trim_start().starts_with('@');
        if !(alias || fields == 5 || fields == 6) {
            return Err(format!(
                "schedule.cron '{}' has {fields} fields; a cron expression has 5 (minute hour day month weekday), \
                 6 (seconds first) or is an alias such as @daily",
                spec.cron
            ));
        }
        let zone = Tz::from_str(&spec.timezone).map_err(|_| {
            format!("schedule.timezone '{}' is not an IANA time zone (e.g. Europe/Berlin)", spec.timezone)
        })?;
        if spec.max_active_runs == 0 {
            return Err("schedule.max_active_runs must be positive".into());
        }
        Ok(Schedule { spec: spec.clone(), cron, zone })
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron.find_next_occurrence(&local, false).ok().map(|tick| tick.with_timezone(&Utc))
    }

    /// The last tick strictly before `before`.
    pub fn previous_before(&self, before: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = before.with_timezone(&self.zone);
        self.cron.find_previous_occurrence(&local, false).ok().map(|tick| tick.with_timezone(&Utc))
    }

    /// The ticks in `(after, until]`, oldest first; at most `limit`, the latest ones, and
    /// whether older ones were left out.
    pub fn ticks_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> (Vec<DateTime<Utc>>, bool) {
        let mut ticks = std::collections::VecDeque::new();
        let mut dropped = false;
        let mut at = after;
        while let Some(tick) = self.next_after(at) {
            if tick > until {
                break;
            }
            ticks.push_back(tick);
            if ticks.len() > limit {
                ticks.pop_front();
                dropped = true;
            }
            at = tick;
        }
        (ticks.into(), dropped)
    }

    /// The variables of the run for the tick at `logical`.
    pub fn variables(&self, logical: DateTime<Utc>) -> BTreeMap<String, String> {
        let start = self.previous_before(logical).unwrap_or(logical);
        let ds = start.with_timezone(&self.zone).format("%Y-%m-%d").to_string();
        BTreeMap::from([
            ("ds_nodash".to_string(), ds.replace('-', "")),
            ("ds".to_string(), ds),
            ("interval_start".to_string(), start.to_rfc3339_opts(SecondsFormat::Secs, true)),
            ("interval_end".to_string(), logical.to_rfc3339_opts(SecondsFormat::Secs, true)),
            ("logical_time".to_string(), logical.to_rfc3339_opts(SecondsFormat::Secs, true)),
        ])
    }
}

/// The variables that say which interval a run covers.
pub const DATE_VARIABLES: [&str; 5] = ["ds", "ds_nodash", "interval_start", "interval_end", "logical_time"];

/// One meaning of `{{ds}}` everywhere: `given` with the run's date variables added when
/// `ds` is not among them. A job with a `[schedule]` gets those of its latest tick at or
/// before `now`, as the scheduler would (the latest complete interval, in the schedule's
/// time zone: a daily 02:00 job run at 09:00 processes yesterday). A job without one that
/// uses a date variable is refused: nothing says which day it means. `text` is the job's
/// TOML as written.
pub fn with_run_date(
    text: &str,
    given: Vec<(String, String)>,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>, String> {
    crate::declared_vars::check_names(text, given.iter().map(|(name, _)| name.as_str()))?;
    if given.iter().any(|(name, _)| name == "ds") {
        return Ok(given);
    }
    let schedule = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|table| table.get("schedule").cloned())
        .and_then(|value| ScheduleSpec::deserialize(value).ok())
        .and_then(|spec| Schedule::new(&spec).ok());
    match schedule {
        Some(schedule) => {
            let Some(tick) = schedule.previous_before(now + chrono::Duration::seconds(1)) else {
                return Err(format!(
                    "the schedule '{}' has no tick before now, so no interval is complete: pass --var ds=YYYY-MM-DD",
                    schedule.spec.cron
                ));
            };
            let mut vars = given;
            for (name, value) in schedule.variables(tick) {
                if !vars.iter().any(|(given, _)| *given == name) {
                    vars.push((name, value));
                }
            }
            Ok(vars)
        }
        None => match variables_named(text).into_iter().find(|name| DATE_VARIABLES.contains(name)) {
            Some(name) => Err(format!(
                "the job uses {{{{{name}}}}} but has no [schedule] that says which interval a run covers: pass \
                 --var ds=YYYY-MM-DD (a job with a [schedule] defaults to its latest complete interval)"
            )),
            None => Ok(given),
        },
    }
}

/// The names of every `{{ name }}` in `text`.
fn variables_named(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(length) = rest[open..].find("}}") else { break };
        names.push(rest[open + 2..open + length].trim());
        rest = &rest[open + length + 2..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn value<'v>(vars: &'v [(String, String)], name: &str) -> &'v str {
        vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap()
    }

    #[test]
    fn ds_means_the_latest_complete_interval_of_the_schedule() {
        let job = "name = \"n\"\n[schedule]\ncron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\n[source]\nuri = \"in/{{ds}}\"\n[sink]\nuri = \"o\"\n";
        // 09:00 Berlin on 7 December: the 02:00 tick covered 6 December.
        let vars = with_run_date(job, vec![], at("2026-12-07T08:00:00Z")).unwrap();
        assert_eq!(value(&vars, "ds"), "2026-12-06");
        assert_eq!(value(&vars, "logical_time"), "2026-12-07T01:00:00Z");
        // 01:30 Berlin: the 7 December tick has not come; 5 December is the latest complete.
        let vars = with_run_date(job, vec![], at("2026-12-07T00:30:00Z")).unwrap();
        assert_eq!(value(&vars, "ds"), "2026-12-05");
        // A given ds stands.
        let given = vec![("ds".to_string(), "2026-01-01".to_string())];
        assert_eq!(with_run_date(job, given.clone(), at("2026-12-07T08:00:00Z")).unwrap(), given);
    }

    #[test]
    fn a_job_without_a_schedule_must_be_told_its_date() {
        let job = "name = \"n\"\n[source]\nuri = \"in/{{ ds_nodash }}\"\n[sink]\nuri = \"o\"\n";
        let err = with_run_date(job, vec![], Utc::now()).unwrap_err();
        assert!(err.contains("{{ds_nodash}}") && err.contains("--var ds=YYYY-MM-DD"), "{err}");
        let plain = "name = \"n\"\n[source]\nuri = \"in/{{region}}\"\n[sink]\nuri = \"o\"\n";
        assert!(with_run_date(plain, vec![], Utc::now()).unwrap().is_empty());
    }
}
