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
