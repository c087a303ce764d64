//! Backfills: run a stored job for a range of past dates, a few at a time.
//!
//! The dates are those of the job's schedule: every tick whose data interval starts on a
//! day from `from` to `to` (a job without a `[schedule]` gets one tick a day, at 00:00 UTC,
//! so `ds` runs through the range). Each tick uses the same idempotency as the scheduler
//! (`schedule/JOB/LOGICAL_TIME`), so a backfill never runs a tick that the schedule already
//! ran, unless told to: `reprocess = "failed"` runs again the ticks whose latest run failed,
//! was cancelled or was lost, `"all"` every tick; those attempts get the key
//! `schedule/JOB/LOGICAL_TIME/BACKFILL_ID`, and every attempt stays in the history. A dry
//! run lists the ticks and what would happen to each. The ticks are submitted by the
//! scheduler's loop ([`backfill_pass`]), at most `max_active` at a time, oldest first.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::schedules::{Schedule, schedule_of, tick_key, tick_run};
use super::store::{Backfill, Inserted, RunState, Store, StoreError};
use weir_jobs::spec::{Catchup, ScheduleSpec};

/// Which ticks that already have a run are run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reprocess {
    /// None: a tick with a run, whatever its outcome, is left alone.
    #[default]
    None,
    /// Those whose latest run failed, was cancelled or was lost.
    Failed,
    /// Every one.
    All,
}

/// One tick of a backfill's plan.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlannedTick {
    pub ds: String,
    pub logical_time: String,
    /// The state of the tick's latest run, if it has one.
    pub existing: Option<RunState>,
    pub existing_run: Option<String>,
    pub will_run: bool,
    #[serde(skip)]
    key: String,
}

/// The most ticks one backfill may cover.
pub const MAX_TICKS: usize = 10_000;

/// The years a backfill's dates may fall in.
pub const YEARS: std::ops::RangeInclusive<i32> = 1000..=9999;

/// The ticks of `schedule` (or daily at 00:00 UTC) whose interval starts on a day in
/// `from..=to`, and what a backfill with `reprocess` would do with each. A tick whose
/// interval has not ended by `now` is refused: it belongs to the schedule, which runs it
/// when it ends (and a partition still landing must not be processed early).
pub fn plan(
    store: &Store,
    job: &str,
    definition: &str,
    (from, to): (NaiveDate, NaiveDate),
    reprocess: Reprocess,
    now: DateTime<Utc>,
    include_incomplete: bool,
) -> Result<Vec<PlannedTick>, String> {
    if to < from {
        return Err(format!("--to {to} is before --from {from}"));
    }
    for date in [from, to] {
        if !YEARS.contains(&date.year()) {
            return Err(format!(
                "{date} is out of range: a backfill's dates lie in the years {} to {}",
                YEARS.start(),
                YEARS.end()
            ));
        }
    }
    let schedule = schedule_of(definition).map_or_else(daily_utc, Ok)?;
    // Ticks from a day before `from` to two days after `to` cover every interval that starts
    // in the range, in any time zone; then keep those whose ds is in it. (The years are
    // bounded above, so the arithmetic cannot overflow.)
    let start = Utc.from_utc_datetime(&(from - Duration::days(2)).and_time(chrono::NaiveTime::MIN));
    let end = Utc.from_utc_datetime(&(to + Duration::days(3)).and_time(chrono::NaiveTime::MIN));
    let mut planned = Vec::new();
    let mut at = start;
    while let Some(tick) = schedule.next_after(at) {
        if tick > end {
            break;
        }
        at = tick;
        let vars = schedule.variables(tick);
        let ds = vars["ds"].clone();
        let Ok(day) = NaiveDate::parse_from_str(&ds, "%Y-%m-%d") else { continue };
        if day < from || day > to {
            continue;
        }
        if tick > now && !include_incomplete {
            let ends = tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            return Err(format!(
                "the interval of {ds} has not ended (it ends at {ends}; now is {}): a backfill covers only \
                 complete intervals, and the schedule runs this one when it ends (--include-incomplete runs it \
                 now, under a key of its own)",
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        if planned.len() == MAX_TICKS {
            return Err(format!("the range holds more than {MAX_TICKS} ticks; backfill it in parts"));
        }
        // A tick whose interval has not ended runs under a key of its own, so that the
        // schedule still runs it, on complete data, when it comes.
        let key = if tick > now { incomplete_key(job, tick) } else { tick_key(job, tick) };
        let latest = store.latest_run_for_key(&key).map_err(|e| e.to_string())?;
        let will_run = match (&latest, reprocess) {
            (None, _) | (Some(_), Reprocess::All) => true,
            (Some(run), Reprocess::Failed) => {
                matches!(run.state, RunState::Failed | RunState::Cancelled | RunState::Lost)
            }
            (Some(_), Reprocess::None) => false,
        };
        planned.push(PlannedTick {
            ds,
            logical_time: vars["logical_time"].clone(),
            existing: latest.as_ref().map(|run| run.state),
            existing_run: latest.map(|run| run.id),
            will_run,
            key,
        });
    }
    Ok(planned)
}

/// The idempotency key of a backfilled run of a tick whose interval had not ended
/// (`--include-incomplete`): apart from the schedule's own `schedule/JOB/TICK`.
fn incomplete_key(job: &str, tick: DateTime<Utc>) -> String {
    format!("incomplete/{job}/{}", tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Stores a backfill of the ticks of `planned` that will run; returns it.
pub fn start(
    store: &Store,
    job: &str,
    version: i64,
    planned: &[PlannedTick],
    max_active: usize,
    by: &str,
) -> Result<Backfill, StoreError> {
    let id = format!("bf-{}", weir_jobs::vars::new_run_id());
    let pending: Vec<(String, String)> = planned
        .iter()
        .filter(|tick| tick.will_run)
        .map(|tick| {
            let key = if tick.existing.is_some() { format!("{}/{id}", tick.key) } else { tick.key.clone() };
            (tick.logical_time.clone(), key)
        })
        .collect();
    let backfill = Backfill {
        id,
        job: job.to_string(),
        version,
        max_active: max_active.max(1) as i64,
        total: pending.len() as i64,
        pending,
    };
    store.insert_backfill(&backfill, by)?;
    Ok(backfill)
}

/// Who a backfill's runs are submitted by (and how its active runs are counted).
pub fn submitter(backfill_id: &str) -> String {
    format!("{}{backfill_id}", super::store::BACKFILL_PREFIX)
}

/// Submits the next ticks of every pending backfill, keeping at most `max_active` of each
/// queued or running. Returns the ids of the runs submitted.
pub fn backfill_pass(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut submitted = Vec::new();
    for mut backfill in store.pending_backfills()? {
        let who = submitter(&backfill.id);
        let Some(version) = store.job_version(&backfill.job, Some(backfill.version))? else { continue };
        let Some(definition) = version.definition.clone() else { continue };
        let Ok(schedule) = schedule_of(&definition).map_or_else(daily_utc, Ok) else { continue };
        while !backfill.pending.is_empty() && store.active_runs_by(&who)? < backfill.max_active {
            let (logical, key) = backfill.pending.remove(0);
            let Ok(tick) = DateTime::parse_from_rfc3339(&logical).map(|t| t.with_timezone(&Utc)) else { continue };
            let vars = schedule.variables(tick);
            let run = tick_run(&backfill.job, &version, &definition, vars, key, &who);
            if let Inserted::New(run) = store.insert_run(&run)? {
                submitted.push(run.id);
            }
            store.set_backfill_pending(&backfill.id, &backfill.pending)?;
        }
    }
    Ok(submitted)
}

/// The ticks of a job without a schedule: one a day, at 00:00 UTC.
fn daily_utc() -> Result<Schedule, String> {
    Schedule::new(&ScheduleSpec {
        cron: "0 0 * * *".into(),
        timezone: "UTC".into(),
        catchup: Catchup::All,
        max_catchup: 1,
        max_active_runs: 1,
        paused: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Ending;

    const JOB: &str = "name = \"daily\"\n[source]\nuri = \"in/date={{ds}}/\"\n[sink]\nuri = \"out/date={{ds}}/\"\n";

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    /// A clock long after every date these tests backfill.
    fn now() -> DateTime<Utc> {
        at("2026-12-01T00:00:00Z")
    }

    #[test]
    fn dates_far_out_of_range_are_refused_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("weir.db")).unwrap();
        for (from, to) in [(NaiveDate::MIN, day("2026-01-01")), (day("2026-01-01"), NaiveDate::MAX)] {
            let err = plan(&store, "daily", JOB, (from, to), Reprocess::None, now(), false).unwrap_err();
            assert!(err.contains("out of range") && err.contains("1000 to 9999"), "{err}");
        }
    }

    /// A daily 06:10 Berlin schedule at 2026-12-07 05:30 UTC: the tick covering 6 December
    /// comes at 06:10 local (05:10 UTC) and is over; the one covering 7 December is tomorrow's.
    #[test]
    fn a_backfill_never_takes_an_interval_that_has_not_ended() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("weir.db")).unwrap();
        let job = JOB.replace("[source]", "[schedule]\ncron = \"10 6 * * *\"\ntimezone = \"Europe/Berlin\"\n[source]");
        let clock = at("2026-12-07T05:30:00Z");
        let done =
            plan(&store, "daily", &job, (day("2026-12-05"), day("2026-12-06")), Reprocess::None, clock, false).unwrap();
        assert_eq!(done.iter().map(|tick| tick.ds.as_str()).collect::<Vec<_>>(), ["2026-12-05", "2026-12-06"]);
        let err = plan(&store, "daily", &job, (day("2026-12-05"), day("2026-12-07")), Reprocess::None, clock, false)
            .unwrap_err();
        assert!(err.contains("interval of 2026-12-07 has not ended") && err.contains("2026-12-08T05:10:00Z"), "{err}");
        // One second before the 06:10 tick, 6 December is not complete either.
        let err = plan(
            &store,
            "daily",
            &job,
            (day("2026-12-06"), day("2026-12-06")),
            Reprocess::None,
            at("2026-12-07T05:09:59Z"),
            false,
        )
        .unwrap_err();
        assert!(err.contains("interval of 2026-12-06 has not ended"), "{err}");
        // Asked for, today's interval runs now under a key of its own: the tick still runs later.
        let early =
            plan(&store, "daily", &job, (day("2026-12-07"), day("2026-12-07")), Reprocess::None, clock, true).unwrap();
        assert_eq!(early[0].key, "incomplete/daily/2026-12-08T05:10:00Z");
        assert!(early[0].will_run);
    }

    #[test]
    fn thirty_days_two_at_a_time_then_the_failed_ones_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("weir.db")).unwrap();
        store.put_job("daily", "h", JOB, "admin").unwrap();
        let (from, to) = (day("2026-01-01"), day("2026-01-30"));
        let dry = plan(&store, "daily", JOB, (from, to), Reprocess::None, now(), false).unwrap();
        assert_eq!(dry.len(), 30);
        assert_eq!(dry[0].ds, "2026-01-01");
        assert_eq!(dry[29].ds, "2026-01-30");
        assert!(dry.iter().all(|tick| tick.will_run && tick.existing.is_none()));
        assert!(store.runs(&Default::default(), None).unwrap().is_empty(), "a dry run submits nothing");

        let backfill = start(&store, "daily", 1, &dry, 2, "admin").unwrap();
        let mut runs = Vec::new();
        loop {
            let submitted = backfill_pass(&store).unwrap();
            if submitted.is_empty() {
                break;
            }
            assert!(submitted.len() <= 2, "at most two active");
            assert!(store.active_runs_by(&submitter(&backfill.id)).unwrap() <= 2);
            for id in submitted {
                store.claim_next(100).unwrap();
                // Three dates fail.
                let run = store.run(&id).unwrap().unwrap();
                let ds = run.vars["ds"].as_str().unwrap().to_string();
                let state = if ["2026-01-05", "2026-01-17", "2026-01-29"].contains(&ds.as_str()) {
                    RunState::Failed
                } else {
                    RunState::Succeeded
                };
                store.finish(&id, state, &Ending::default()).unwrap();
                runs.push(ds);
            }
        }
        assert_eq!(runs.len(), 30);
        runs.sort();
        runs.dedup();
        assert_eq!(runs.len(), 30, "each date once");

        let again = plan(&store, "daily", JOB, (from, to), Reprocess::None, now(), false).unwrap();
        assert!(again.iter().all(|tick| !tick.will_run), "nothing is run twice by default");
        let failed = plan(&store, "daily", JOB, (from, to), Reprocess::Failed, now(), false).unwrap();
        let chosen: Vec<_> = failed.iter().filter(|tick| tick.will_run).map(|tick| tick.ds.as_str()).collect();
        assert_eq!(chosen, ["2026-01-05", "2026-01-17", "2026-01-29"]);
        start(&store, "daily", 1, &failed, 2, "admin").unwrap();
        let mut retried = backfill_pass(&store).unwrap();
        store.claim_next(100).unwrap();
        store.claim_next(100).unwrap();
        for id in &retried {
            store.finish(id, RunState::Succeeded, &Ending::default()).unwrap();
        }
        retried.extend(backfill_pass(&store).unwrap());
        assert_eq!(retried.len(), 3);
        let all = store.runs(&crate::store::RunFilter { limit: Some(500), ..Default::default() }, None).unwrap();
        assert_eq!(all.len(), 33, "every attempt is kept");
        let keys: std::collections::BTreeSet<_> = all.iter().filter_map(|run| run.idempotency_key.clone()).collect();
        assert_eq!(keys.len(), 33);
    }

    #[test]
    fn a_scheduled_job_backfills_its_own_ticks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("weir.db")).unwrap();
        let job = JOB.replace("[source]", "[schedule]\ncron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\n[source]");
        let ticks =
            plan(&store, "daily", &job, (day("2026-03-28"), day("2026-03-30")), Reprocess::None, now(), false).unwrap();
        let logical: Vec<_> = ticks.iter().map(|tick| tick.logical_time.as_str()).collect();
        // The tick covering 28 March is the 29th's 02:00 Berlin tick, in the spring-forward
        // gap: it fires at 03:00 CEST (01:00 UTC).
        assert_eq!(logical, ["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z", "2026-03-31T00:00:00Z"]);
        assert_eq!(
            ticks.iter().map(|tick| tick.ds.as_str()).collect::<Vec<_>>(),
            ["2026-03-28", "2026-03-29", "2026-03-30"]
        );
    }
}
