//! Schedules: the job service runs every stored job that has a `[schedule]` at each tick of
//! its cron expression, in its time zone.
//!
//! # The rules
//!
//! - A tick's **logical time** is the instant cron names; the run covers the **data
//!   interval** from the tick before it to the tick itself. `{{ds}}` is the date (in the
//!   schedule's time zone) the interval starts on: a daily 02:00 run processes the previous
//!   day, as in Airflow. The run also gets `{{ds_nodash}}`, `{{interval_start}}` and
//!   `{{interval_end}}` (RFC 3339, UTC) and `{{logical_time}}`.
//! - **Exactly one run per (job, logical time)**, ever: a tick's run is submitted with the
//!   idempotency key `schedule/JOB/LOGICAL_TIME`, so a tick handled twice (a restart between
//!   the submission and recording it, a clock that jumps back) finds its run instead of
//!   making another.
//! - The service records, per job, the last tick it handled. It only ever looks at ticks
//!   after that one and up to now: a tick is never handled twice, and ticks that passed
//!   are caught up by the job's `catchup` policy (`all`: each, oldest first, at most
//!   `max_catchup`; `latest`: only the latest; `none`: none, but a tick that comes due while
//!   the service runs, within [`ON_TIME`] of it).
//! - A job seen for the first time (stored, or given a schedule) starts from now: its past
//!   is not caught up (a backfill is for that). While `paused`, ticks are skipped for good
//!   and unpausing fires nothing until the next tick. Editing the cron expression keeps the
//!   last handled tick, so no tick before it fires again.
//! - `max_active_runs`: when that many scheduled runs of the job are queued or running,
//!   later ticks wait (they are not skipped; the catch-up policy applies to them when
//!   they can go).
//! - **A tick does not repeat a run that already did its work.** Before a tick's run is
//!   submitted, the runs of the job that write the same output (the tick's variables
//!   substituted into `[sink] uri`) and were not started by the schedule itself are looked
//!   at, newest first. While one of them is queued
//!   or running (a manual run or a backfill of the same date), the tick waits, as for
//!   `max_active_runs`. If one succeeded with the same job definition (SHA-256), with no
//!   variable that differs from the tick's, and **started at or after the tick's logical
//!   time** (so its input interval had ended and it saw complete data), the tick is not
//!   run: it is recorded as a run in state `skipped`, under its idempotency key, whose
//!   error names that run, and logged. A run that started before the interval ended (a
//!   `--include-incomplete` backfill, a manual run of today's date) never covers the tick,
//!   nor does a failed one, nor one of another definition.
//! - Daylight saving follows croner's documented rules: a fixed-time tick in a
//!   spring-forward gap fires once, at the first valid time after it; in a fall-back
//!   overlap it fires once.
//!
//! The scheduler reads the time from the service's [`Clock`], so tests can drive it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};

pub use super::clock::Clock;
use super::store::{Inserted, JobVersion, NewRun, SCHEDULER, Store, StoreError};
use serde::{Deserialize, Serialize};
pub use weir_jobs::schedule::Schedule;
use weir_jobs::spec::{Catchup, JobSpec};
use weir_jobs::vars::Variables;

/// How late a tick may be handled and still count as on time for `catchup = "none"`.
pub const ON_TIME: Duration = Duration::seconds(60);

/// The idempotency key of a tick's run.
pub fn tick_key(job: &str, logical: DateTime<Utc>) -> String {
    format!("schedule/{job}/{}", logical.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// What one pass over the schedules did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// (job, logical time) of the runs submitted.
    pub submitted: Vec<(String, DateTime<Utc>)>,
    /// Ticks passed over by the catch-up policy or a pause.
    pub skipped: usize,
    /// (job, logical time, the run that had already done its work) of the ticks recorded
    /// as `skipped`.
    pub covered: Vec<(String, DateTime<Utc>, String)>,
}

/// One pass: for every stored job with a schedule, submits the runs of the ticks that are
/// due, by the rules in the module docs.
pub fn schedule_pass(store: &Store, now: DateTime<Utc>) -> Result<Pass, StoreError> {
    let mut pass = Pass::default();
    for job in store.jobs()? {
        let Some(version) = store.job_version(&job.name, None)? else { continue };
        let Some(definition) = version.definition.clone() else { continue };
        let Some(schedule) = schedule_of(&definition) else { continue };
        let Some(last) = store.schedule_last_tick(&job.name)? else {
            store.set_schedule_last_tick(&job.name, now)?;
            continue;
        };
        if schedule.spec.paused || store.schedule_paused_by(&job.name)?.is_some() {
            let (skipped, _) = schedule.ticks_between(last, now, usize::MAX);
            pass.skipped += skipped.len();
            if now > last {
                store.set_schedule_last_tick(&job.name, now)?;
            }
            continue;
        }
        let limit = match schedule.spec.catchup {
            Catchup::All => schedule.spec.max_catchup.max(1),
            Catchup::Latest | Catchup::None => 1,
        };
        let (due, dropped) = schedule.ticks_between(last, now, limit);
        if dropped {
            // Counted by what is left out: the ticks before the kept ones.
            let (all, _) = schedule.ticks_between(last, due.first().copied().unwrap_or(now), usize::MAX);
            let missed = all.len().saturating_sub(1);
            pass.skipped += missed;
            store.add_missed_ticks(&job.name, missed)?;
        }
        for tick in due {
            if schedule.spec.catchup == Catchup::None && now - tick > ON_TIME {
                pass.skipped += 1;
                store.add_missed_ticks(&job.name, 1)?;
                store.set_schedule_last_tick(&job.name, tick)?;
                continue;
            }
            if store.active_scheduled_runs(&job.name)? >= schedule.spec.max_active_runs as i64 {
                break;
            }
            let run = tick_run(
                &job.name,
                &version,
                &definition,
                schedule.variables(tick),
                tick_key(&job.name, tick),
                SCHEDULER,
            );
            match earlier_run(store, &run, tick)? {
                Earlier::Active => break,
                Earlier::Covers(covering) => {
                    let reason = format!(
                        "skipped: run {} ({}) already succeeded for this date with this definition, started at {} after the interval ended",
                        covering.id,
                        covering.trigger,
                        covering.started_at.as_deref().unwrap_or("?")
                    );
                    tracing::info!(job = %job.name, logical_time = %tick, covered_by = %covering.id, "tick skipped: {reason}");
                    if let Inserted::New(_) = store.insert_skipped_run(&run, &reason)? {
                        pass.covered.push((job.name.clone(), tick, covering.id));
                    }
                }
                Earlier::None => {
                    if let Inserted::New(_) = store.insert_run(&run)? {
                        pass.submitted.push((job.name.clone(), tick));
                    }
                }
            }
            store.set_schedule_last_tick(&job.name, tick)?;
        }
    }
    Ok(pass)
}

/// What a tick finds among the runs that write its output.
enum Earlier {
    /// None that matters: the tick runs.
    None,
    /// One is queued or running: the tick waits.
    Active,
    /// One already did the tick's work (see the module documentation).
    Covers(Box<super::store::Run>),
}

/// The runs that write the output of a tick's `run` (at logical time `tick`), by the rule in
/// the module documentation.
fn earlier_run(store: &Store, run: &NewRun, tick: DateTime<Utc>) -> Result<Earlier, StoreError> {
    let since = tick.to_rfc3339_opts(SecondsFormat::Millis, true);
    for earlier in store.runs_writing(&run.job, &run.output_uri)? {
        // The schedule's own runs (of this tick or others) follow `max_active_runs`.
        if earlier.idempotency_key.as_deref().is_some_and(|key| key.starts_with("schedule/")) {
            continue;
        }
        if !earlier.state.is_terminal() {
            return Ok(Earlier::Active);
        }
        let same_vars = earlier.vars.iter().all(|(name, value)| run.vars.get(name) == Some(value));
        let after_interval = earlier.started_at.as_deref().is_some_and(|started| started >= since.as_str());
        if earlier.state == super::store::RunState::Succeeded
            && earlier.job_sha256 == run.job_sha256
            && same_vars
            && after_interval
        {
            return Ok(Earlier::Covers(Box::new(earlier)));
        }
    }
    Ok(Earlier::None)
}

/// The run of one tick of a stored job's version.
pub fn tick_run(
    job: &str,
    version: &JobVersion,
    definition: &str,
    vars: BTreeMap<String, String>,
    key: String,
    submitted_by: &str,
) -> NewRun {
    NewRun {
        id: weir_jobs::vars::new_run_id(),
        job: job.to_string(),
        job_version: Some(version.version),
        job_sha256: version.sha256.clone(),
        definition: definition.to_string(),
        output_uri: output_uri(definition, &vars),
        vars: vars.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect(),
        idempotency_key: Some(key),
        submitted_by: submitted_by.to_string(),
        workers: None,
        attempt: 1,
        retry_of: None,
        not_before: None,
        // A stored job's own ticks: its definition was stored by an admin.
        allowed_keys: None,
    }
}

/// A stored job's schedule as the scheduler sees it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleInfo {
    pub job: String,
    pub version: i64,
    pub cron: String,
    pub timezone: String,
    /// What a late service does with the ticks it missed.
    #[schema(value_type = String, example = "latest")]
    pub catchup: Catchup,
    pub max_active_runs: usize,
    pub paused: bool,
    /// Who paused it through the API (absent when running, or paused by its definition).
    pub paused_by: Option<String>,
    /// The latest tick seen (RFC 3339).
    pub last_tick: Option<String>,
    /// The next three ticks (none while paused).
    pub next_ticks: Vec<String>,
}

/// What `GET /v1/schedules` shows of each stored job with a schedule: its settings, the
/// last tick handled and the next few ticks.
pub fn overview(
    store: &Store,
    now: DateTime<Utc>,
    allowed: impl Fn(&str) -> bool,
) -> Result<Vec<ScheduleInfo>, StoreError> {
    let mut schedules = Vec::new();
    for job in store.jobs()? {
        if !allowed(&job.name) {
            continue;
        }
        let Some(definition) = store.job_version(&job.name, None)?.and_then(|version| version.definition) else {
            continue;
        };
        let Some(schedule) = schedule_of(&definition) else { continue };
        let last = store.schedule_last_tick(&job.name)?;
        let paused_by = store.schedule_paused_by(&job.name)?;
        let paused = schedule.spec.paused || paused_by.is_some();
        let mut next = Vec::new();
        let mut at = last.map_or(now, |last| last.max(now));
        while next.len() < 3 {
            let Some(tick) = schedule.next_after(at) else { break };
            next.push(tick.to_rfc3339_opts(SecondsFormat::Secs, true));
            at = tick;
        }
        schedules.push(ScheduleInfo {
            job: job.name,
            version: job.version,
            cron: schedule.spec.cron.clone(),
            timezone: schedule.spec.timezone.clone(),
            catchup: schedule.spec.catchup,
            max_active_runs: schedule.spec.max_active_runs,
            paused,
            paused_by,
            last_tick: last.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            next_ticks: if paused { Vec::new() } else { next },
        });
    }
    Ok(schedules)
}

/// The `[schedule]` of a stored definition, if it has a valid one.
pub fn schedule_of(definition: &str) -> Option<Schedule> {
    let vars = Variables::new(&[]);
    let document = vars.parse_and_substitute("definition", definition).ok()?;
    let spec = JobSpec::from_document(document, definition).ok()?;
    Schedule::new(spec.schedule.as_ref()?).ok()
}

/// The sink URI the run will write to, as far as it can be known without planning.
fn output_uri(definition: &str, vars: &BTreeMap<String, String>) -> String {
    let pairs: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // Written as the definition checker writes a submitted run's output (a parsed location),
    // so that a tick finds the manual runs of its output.
    weir_jobs::planning::load_job_text("definition", definition, &Variables::new(&pairs))
        .map(|job| {
            weir_connectors::Location::parse(&job.spec.sink.uri, &job.spec.storage)
                .map(|location| location.uri())
                .unwrap_or(job.spec.sink.uri)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_jobs::schedule::ScheduleSpec;

    fn schedule(cron: &str, zone: &str, catchup: Catchup) -> Schedule {
        Schedule::new(&ScheduleSpec {
            cron: cron.into(),
            timezone: zone.into(),
            catchup,
            max_catchup: 30,
            max_active_runs: 1,
            paused: false,
        })
        .unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn ticks(schedule: &Schedule, from: &str, to: &str) -> Vec<String> {
        let (ticks, _) = schedule.ticks_between(utc(from), utc(to), usize::MAX);
        ticks.iter().map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).collect()
    }

    #[test]
    fn berlin_spring_forward_fires_once_after_the_gap_and_autumn_once_in_the_overlap() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that night.
        let nightly = schedule("30 2 * * *", "Europe/Berlin", Catchup::All);
        assert_eq!(
            ticks(&nightly, "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
            ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
            "the 29th fires once, at 03:00 CEST (the first valid time after the gap)"
        );
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice that night.
        assert_eq!(
            ticks(&nightly, "2026-10-23T12:00:00Z", "2026-10-26T12:00:00Z"),
            ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
            "the 25th fires once"
        );
    }

    #[test]
    fn new_york_daily_ticks_follow_the_wall_clock_across_both_changes() {
        let daily = schedule("0 2 * * *", "America/New_York", Catchup::All);
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        assert_eq!(
            ticks(&daily, "2026-03-07T00:00:00Z", "2026-03-09T12:00:00Z"),
            ["2026-03-07T07:00:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"]
        );
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST.
        assert_eq!(
            ticks(&daily, "2026-10-31T00:00:00Z", "2026-11-02T12:00:00Z"),
            ["2026-10-31T06:00:00Z", "2026-11-01T07:00:00Z", "2026-11-02T07:00:00Z"]
        );
    }

    #[test]
    fn ds_is_the_day_the_interval_starts_in_the_schedules_zone() {
        let nightly = schedule("0 2 * * *", "Europe/Berlin", Catchup::Latest);
        let vars = nightly.variables(utc("2026-06-10T00:00:00Z"));
        assert_eq!(vars["ds"], "2026-06-09");
        assert_eq!(vars["ds_nodash"], "20260609");
        assert_eq!(vars["interval_start"], "2026-06-09T00:00:00Z");
        assert_eq!(vars["interval_end"], "2026-06-10T00:00:00Z");
    }

    fn store_with(definition: &str) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("weir.db")).unwrap();
        store.put_job("nightly", "h", definition, "admin").unwrap();
        (dir, store)
    }

    fn job(schedule: &str) -> String {
        format!(
            "name = \"nightly\"\n[schedule]\n{schedule}\n[source]\nuri = \"in/date={{{{ds}}}}/\"\n[sink]\nuri = \"out/date={{{{ds}}}}/\"\n"
        )
    }

    fn finish_all(store: &Store) {
        while let Some(run) = store.claim_next(1000).unwrap() {
            store.finish(&run.id, super::super::store::RunState::Succeeded, &Default::default()).unwrap();
        }
    }

    #[test]
    fn forty_days_with_a_restart_in_the_middle_run_each_day_once() {
        let (dir, store) = store_with(&job("cron = \"0 2 * * *\"\ncatchup = \"all\""));
        let mut now = utc("2026-01-01T12:00:00Z");
        schedule_pass(&store, now).unwrap(); // first seen: starts from now
        let mut submitted = Vec::new();
        for hour in 0..(40 * 24) {
            now += Duration::hours(1);
            if hour == 20 * 24 {
                // A restart: the state is read back from the database.
                let reopened = Store::open(&dir.path().join("weir.db")).unwrap();
                submitted.extend(schedule_pass(&reopened, now).unwrap().submitted);
            } else {
                submitted.extend(schedule_pass(&store, now).unwrap().submitted);
            }
            finish_all(&store);
        }
        assert_eq!(submitted.len(), 40);
        let days: std::collections::BTreeSet<_> = submitted.iter().map(|(_, t)| t.date_naive()).collect();
        assert_eq!(days.len(), 40, "one run per day");
        let runs = store.runs(&Default::default(), None).unwrap();
        let mut ds: Vec<_> = runs.iter().map(|r| r.vars["ds"].as_str().unwrap().to_string()).collect();
        ds.sort();
        assert_eq!(ds.first().unwrap(), "2026-01-01", "the 2 Jan 02:00 tick covers 1 Jan");
        assert_eq!(ds.len(), 40);
    }

    #[test]
    fn catch_up_policies_after_a_week_down() {
        for (catchup, expected) in [("all", 7), ("latest", 1), ("none", 0)] {
            let (_dir, store) =
                store_with(&job(&format!("cron = \"0 2 * * *\"\ncatchup = \"{catchup}\"\nmax_active_runs = 10")));
            let start = utc("2026-02-01T12:00:00Z");
            schedule_pass(&store, start).unwrap();
            let pass = schedule_pass(&store, start + Duration::days(7)).unwrap();
            assert_eq!(pass.submitted.len(), expected, "{catchup}");
            assert_eq!(pass.submitted.len() + pass.skipped, 7, "{catchup}: every tick handled once");
            let counts = store.job_counts().unwrap();
            assert_eq!(counts[0].missed_ticks, 7 - expected as i64, "{catchup}: the missed ticks are counted");
            // Handled ticks never come back.
            assert!(schedule_pass(&store, start + Duration::days(7)).unwrap().submitted.is_empty());
        }
    }

    #[test]
    fn catchup_none_fires_a_tick_that_comes_due_while_running() {
        let (_dir, store) = store_with(&job("cron = \"0 2 * * *\"\ncatchup = \"none\""));
        schedule_pass(&store, utc("2026-02-01T12:00:00Z")).unwrap();
        let pass = schedule_pass(&store, utc("2026-02-02T02:00:05Z")).unwrap();
        assert_eq!(pass.submitted, [("nightly".to_string(), utc("2026-02-02T02:00:00Z"))]);
    }

    #[test]
    fn pausing_skips_and_unpausing_does_not_fire() {
        let (_dir, store) = store_with(&job("cron = \"0 2 * * *\"\ncatchup = \"all\"\npaused = true"));
        let start = utc("2026-02-01T12:00:00Z");
        schedule_pass(&store, start).unwrap();
        let pass = schedule_pass(&store, start + Duration::days(3)).unwrap();
        assert!(pass.submitted.is_empty() && pass.skipped == 3);
        assert_eq!(store.job_counts().unwrap()[0].missed_ticks, 0, "a pause's ticks are not missed");
        store.put_job("nightly", "h2", &job("cron = \"0 2 * * *\"\ncatchup = \"all\""), "admin").unwrap();
        assert!(
            schedule_pass(&store, start + Duration::days(3)).unwrap().submitted.is_empty(),
            "unpausing fires nothing"
        );
        assert_eq!(schedule_pass(&store, start + Duration::days(4)).unwrap().submitted.len(), 1, "the next tick fires");
    }

    #[test]
    fn a_schedule_paused_through_the_service_skips_and_resuming_fires_nothing_old() {
        let (_dir, store) = store_with(&job("cron = \"0 2 * * *\"\ncatchup = \"all\""));
        let start = utc("2026-02-01T12:00:00Z");
        schedule_pass(&store, start).unwrap();
        assert!(store.set_schedule_paused("nightly", Some("admin")).unwrap());
        let pass = schedule_pass(&store, start + Duration::days(3)).unwrap();
        assert!(pass.submitted.is_empty() && pass.skipped == 3);
        assert!(store.set_schedule_paused("nightly", None).unwrap());
        assert!(
            schedule_pass(&store, start + Duration::days(3)).unwrap().submitted.is_empty(),
            "resuming fires nothing"
        );
        let next = schedule_pass(&store, start + Duration::days(4)).unwrap();
        assert_eq!(next.submitted, [("nightly".to_string(), utc("2026-02-05T02:00:00Z"))]);
        assert!(!store.set_schedule_paused("unknown", Some("admin")).unwrap());
    }

    #[test]
    fn cron_expressions_have_five_or_six_fields() {
        let spec = |cron: &str| ScheduleSpec {
            cron: cron.into(),
            timezone: "UTC".into(),
            catchup: Catchup::All,
            max_catchup: 1,
            max_active_runs: 1,
            paused: false,
        };
        for good in ["0 2 * * *", "*/2 * * * * *", "@daily"] {
            assert!(Schedule::new(&spec(good)).is_ok(), "{good}");
        }
        for bad in ["0 0 2 * * * 2026", "0 2 * *", "@daily 1"] {
            let err = Schedule::new(&spec(bad)).unwrap_err();
            assert!(err.contains("fields"), "{bad}: {err}");
        }
    }

    #[test]
    fn editing_the_cron_does_not_refire_handled_ticks() {
        let (_dir, store) = store_with(&job("cron = \"0 2 * * *\"\ncatchup = \"all\""));
        let start = utc("2026-02-01T12:00:00Z");
        schedule_pass(&store, start).unwrap();
        assert_eq!(schedule_pass(&store, start + Duration::days(1)).unwrap().submitted.len(), 1);
        finish_all(&store);
        // An earlier hour: today's 01:00 lies before the last handled tick (02:00).
        store.put_job("nightly", "h2", &job("cron = \"0 1 * * *\"\ncatchup = \"all\""), "admin").unwrap();
        assert!(schedule_pass(&store, start + Duration::days(1)).unwrap().submitted.is_empty());
        assert_eq!(schedule_pass(&store, start + Duration::days(2)).unwrap().submitted.len(), 1);
    }

    #[test]
    fn max_active_runs_holds_later_ticks_back_without_skipping_them() {
        let (_dir, store) = store_with(&job("cron = \"0 * * * *\"\ncatchup = \"all\"\nmax_active_runs = 2"));
        let start = utc("2026-02-01T00:30:00Z");
        schedule_pass(&store, start).unwrap();
        let first = schedule_pass(&store, start + Duration::hours(5)).unwrap();
        assert_eq!(first.submitted.len(), 2, "two may be active");
        finish_all(&store);
        let second = schedule_pass(&store, start + Duration::hours(5)).unwrap();
        assert_eq!(second.submitted.len(), 2, "the held ticks go next, none skipped");
        finish_all(&store);
        let third = schedule_pass(&store, start + Duration::hours(5)).unwrap();
        assert_eq!(third.submitted.len(), 1);
        assert_eq!(third.skipped + second.skipped + first.skipped, 0);
    }

    #[test]
    fn a_tick_handled_twice_finds_its_run() {
        let (_dir, store) = store_with(&job("cron = \"0 2 * * *\"\ncatchup = \"all\"\nmax_active_runs = 5"));
        let start = utc("2026-02-01T12:00:00Z");
        schedule_pass(&store, start).unwrap();
        assert_eq!(schedule_pass(&store, start + Duration::days(2)).unwrap().submitted.len(), 2);
        // A crash before the last tick was recorded: the state goes back.
        store.set_schedule_last_tick("nightly", start).unwrap();
        assert!(schedule_pass(&store, start + Duration::days(2)).unwrap().submitted.is_empty());
        assert_eq!(store.runs(&Default::default(), None).unwrap().len(), 2);
    }

    /// A clock the test moves by hand: the store stamps runs with it, as the service's
    /// store does with the service's clock.
    struct HandClock(std::sync::Mutex<DateTime<Utc>>);

    impl Clock for HandClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    impl HandClock {
        fn set(&self, at: DateTime<Utc>) {
            *self.0.lock().unwrap() = at;
        }
    }

    fn store_on_clock(definition: &str, at: DateTime<Utc>) -> (tempfile::TempDir, Store, std::sync::Arc<HandClock>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = std::sync::Arc::new(HandClock(std::sync::Mutex::new(at)));
        let store = Store::open_with_clock(&dir.path().join("weir.db"), clock.clone()).unwrap();
        store.put_job("nightly", "h", definition, "admin").unwrap();
        (dir, store, clock)
    }

    /// A manual run of `ds`, as `weir submit nightly --var ds=…` stores it.
    fn manual_run(store: &Store, id: &str, ds: &str) -> NewRun {
        let version = store.job_version("nightly", None).unwrap().unwrap();
        let definition = version.definition.clone().unwrap();
        let vars = BTreeMap::from([("ds".to_string(), ds.to_string())]);
        let mut run = tick_run("nightly", &version, &definition, vars, String::new(), "alice");
        (run.id, run.idempotency_key) = (id.to_string(), None);
        run
    }

    fn state_of(store: &Store, key: &str) -> Option<(super::super::store::RunState, Option<String>)> {
        store.latest_run_for_key(key).unwrap().map(|run| (run.state, run.error))
    }

    /// A daily 02:00 Berlin job; the tick at 2026-12-07 02:00 CET (01:00 UTC) covers 6 December.
    const TICK: &str = "2026-12-07T01:00:00Z";

    #[test]
    fn a_tick_whose_date_a_manual_run_already_did_after_the_interval_is_recorded_as_skipped() {
        let schedule = "cron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\ncatchup = \"all\"";
        let tick = utc(TICK);
        let (_dir, store, clock) = store_on_clock(&job(schedule), tick - Duration::hours(3));
        schedule_pass(&store, clock.now()).unwrap();
        // At 01:30 UTC, after the interval ended, someone runs 6 December by hand; the
        // scheduler is late (the service was busy or down), and the run is still queued.
        clock.set(tick + Duration::minutes(30));
        store.insert_run(&manual_run(&store, "manual-1", "2026-12-06")).unwrap();
        let pass = schedule_pass(&store, clock.now()).unwrap();
        assert!(pass.submitted.is_empty() && pass.covered.is_empty(), "a queued run holds the tick back");
        assert!(state_of(&store, &tick_key("nightly", tick)).is_none());
        finish_all(&store);
        let pass = schedule_pass(&store, clock.now()).unwrap();
        assert!(pass.submitted.is_empty());
        assert_eq!(pass.covered, vec![("nightly".to_string(), tick, "manual-1".to_string())]);
        let (state, error) = state_of(&store, &tick_key("nightly", tick)).unwrap();
        assert_eq!(state, super::super::store::RunState::Skipped);
        assert!(error.unwrap().contains("run manual-1 (manual) already succeeded"));
        // Handled once: later passes do nothing more for it.
        clock.set(tick + Duration::hours(2));
        let pass = schedule_pass(&store, clock.now()).unwrap();
        assert!(pass.covered.is_empty() && pass.submitted.is_empty());
    }

    #[test]
    fn a_manual_run_that_started_before_the_interval_ended_or_failed_or_differs_does_not_cover_the_tick() {
        let schedule = "cron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\ncatchup = \"all\"";
        let tick = utc(TICK);
        let (_dir, store, clock) = store_on_clock(&job(schedule), tick - Duration::hours(3));
        schedule_pass(&store, clock.now()).unwrap();
        // 6 December run by hand at 00:30 UTC: its interval ends at 01:00, so it saw part of it.
        clock.set(tick - Duration::minutes(30));
        store.insert_run(&manual_run(&store, "early", "2026-12-06")).unwrap();
        finish_all(&store);
        clock.set(tick + Duration::minutes(1));
        let pass = schedule_pass(&store, clock.now()).unwrap();
        assert_eq!(pass.submitted, vec![("nightly".to_string(), tick)]);

        let (_dir, store, clock) = store_on_clock(&job(schedule), tick - Duration::hours(3));
        schedule_pass(&store, clock.now()).unwrap();
        clock.set(tick + Duration::minutes(10));
        // A failed run, one with another variable, and one of another definition (version 2
        // changes the job) leave the tick to run.
        store.insert_run(&manual_run(&store, "failed", "2026-12-06")).unwrap();
        let claimed = store.claim_next(10).unwrap().unwrap();
        store.finish(&claimed.id, super::super::store::RunState::Failed, &Default::default()).unwrap();
        let mut other = manual_run(&store, "other-vars", "2026-12-06");
        other.vars.insert("region".into(), serde_json::Value::String("eu".into()));
        store.insert_run(&other).unwrap();
        let mut older = manual_run(&store, "older-definition", "2026-12-06");
        older.job_sha256 = "another".into();
        store.insert_run(&older).unwrap();
        finish_all(&store);
        let pass = schedule_pass(&store, clock.now()).unwrap();
        assert_eq!(pass.submitted, vec![("nightly".to_string(), tick)]);
        assert!(pass.covered.is_empty());
    }
}
