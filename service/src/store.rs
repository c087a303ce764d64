//! The service's history: tokens, versioned job definitions, runs and the audit trail, in
//! one SQLite database (`STATE/weir.db`) in WAL mode with `synchronous = FULL`, so that
//! whatever a reply acknowledges is on disk first. One connection behind a mutex: every
//! statement is short, and SQLite serialises writers anyway.
//!
//! Runs move `queued → running → succeeded | failed | cancelled | lost` (or `queued →
//! cancelled`); [`Store::claim_next`] moves one run to `running` in a transaction before
//! its process is started, so that no run can start twice, even across a crash.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::clock::{Clock, SystemClock};

/// A failure of the history database.
#[derive(Debug, thiserror::Error)]
#[error("the service's database: {0}")]
pub struct StoreError(#[from] rusqlite::Error);

/// What a token may do. Each role can do what the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Read,
    Submit,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Submit => "submit",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Role {
        match text {
            "admin" => Role::Admin,
            "submit" => Role::Submit,
            _ => Role::Read,
        }
    }
}

/// A bearer token as stored: its SHA-256, never the token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    /// The job names the token is limited to; `None`: all.
    pub jobs: Option<Vec<String>>,
    pub created_at: String,
    /// The URI prefixes its runs may read and write (source, sink, models, fitted);
    /// `None`: any the service can reach.
    pub prefixes: Option<Vec<String>>,
    /// The key ids its runs may use (`WEIR_KEY_*`); `None`: any the service holds.
    pub keys: Option<Vec<String>>,
    /// Whether it may submit a definition inline (not a stored job by name); admin tokens
    /// always may.
    pub inline: bool,
    /// The storage profiles its definitions may name; `None`: any.
    pub profiles: Option<Vec<String>>,
}

/// What a new token is limited to; `None` in a field: not limited by it.
#[derive(Debug, Clone, Default)]
pub struct TokenGrants {
    pub jobs: Option<Vec<String>>,
    pub prefixes: Option<Vec<String>>,
    pub keys: Option<Vec<String>>,
    /// May submit inline definitions.
    pub inline: bool,
    pub profiles: Option<Vec<String>>,
}

impl TokenInfo {
    /// Whether the token may see and act on runs of `job`.
    pub fn may_touch(&self, job: &str) -> bool {
        self.jobs.as_ref().is_none_or(|jobs| jobs.iter().any(|j| j == job))
    }
}

/// One version of a stored job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobVersion {
    pub name: String,
    pub version: i64,
    pub sha256: String,
    /// The TOML; absent in a job's list of versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    pub created_at: String,
    pub created_by: String,
}

/// One change made through the API: who, when, what.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    pub at: String,
    /// The token's name.
    pub token: String,
    /// `token.create`, `job.put`, `run.submit`, `run.cancel`, `schedule.pause`, …
    pub action: String,
    pub target: String,
    /// The details, as a JSON text.
    pub detail: String,
}

/// A run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Lost,
    /// A schedule's tick that did not run: a run it would repeat had already succeeded
    /// (the reason is in `error`).
    Skipped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Lost => "lost",
            RunState::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<RunState> {
        [Self::Queued, Self::Running, Self::Succeeded, Self::Failed, Self::Cancelled, Self::Lost, Self::Skipped]
            .into_iter()
            .find(|state| state.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }
}

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub id: String,
    pub job: String,
    pub job_version: Option<i64>,
    pub job_sha256: String,
    pub state: RunState,
    /// `user`, `external` or `internal` for a failed run.
    pub exit_class: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    /// The variables it was submitted with.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub idempotency_key: Option<String>,
    pub submitted_by: String,
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_s: Option<f64>,
    pub rows_in: Option<i64>,
    pub rows_out: Option<i64>,
    pub output_uri: Option<String>,
    pub cancel_requested: bool,
    /// A succeeded run's summary, as `weir run --json` prints it (files, bytes, seconds…).
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
    /// 1 for a run as submitted; 2, 3… for its retries.
    pub attempt: i64,
    /// The run this one retries.
    pub retry_of: Option<String>,
    /// A retry starts no earlier than this.
    pub not_before: Option<String>,
    pub trigger: Trigger,
    /// The date of the data interval the run covers (its `ds`), when it has one.
    pub logical_date: Option<String>,
    /// The only key ids the run may use (its submitter's token's `keys`); `None`: any.
    pub allowed_keys: Option<Vec<String>>,
    #[serde(skip)]
    pub workers: Option<i64>,
    #[serde(skip)]
    pub pid: Option<i64>,
    #[serde(skip)]
    pub definition: String,
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A tick of the job's schedule.
    Schedule,
    /// A backfill.
    Backfill,
    /// A later attempt of a failed run.
    Retry,
    /// Submitted through the API or `weir submit`.
    Manual,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Schedule => "schedule",
            Trigger::Backfill => "backfill",
            Trigger::Retry => "retry",
            Trigger::Manual => "manual",
        })
    }
}

/// What started a run, from who submitted it and its attempt.
fn trigger_of(submitted_by: &str, attempt: i64) -> Trigger {
    if attempt > 1 {
        Trigger::Retry
    } else if submitted_by == SCHEDULER {
        Trigger::Schedule
    } else if submitted_by.starts_with(BACKFILL_PREFIX) {
        Trigger::Backfill
    } else {
        Trigger::Manual
    }
}

/// Who the scheduler's runs are submitted by.
pub const SCHEDULER: &str = "schedule";
/// How a backfill's runs' submitter begins (`backfill <id>`).
pub const BACKFILL_PREFIX: &str = "backfill ";

/// A new run, before it is stored.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub job: String,
    pub job_version: Option<i64>,
    pub job_sha256: String,
    pub definition: String,
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub idempotency_key: Option<String>,
    pub submitted_by: String,
    pub workers: Option<i64>,
    pub output_uri: String,
    pub attempt: i64,
    pub retry_of: Option<String>,
    pub not_before: Option<String>,
    pub allowed_keys: Option<Vec<String>>,
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct Ending {
    pub exit_class: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub rows_in: Option<i64>,
    pub rows_out: Option<i64>,
    pub summary: Option<serde_json::Value>,
}

/// What [`Store::insert_run`] did.
pub enum Inserted {
    New(Box<Run>),
    /// The idempotency key was used before, for the same definition and variables.
    Existing(Box<Run>),
    /// The idempotency key was used before, for something else.
    Conflict(String),
}

/// Filters of the run list (`GET /v1/runs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunFilter {
    pub job: Option<String>,
    pub state: Option<String>,
    pub limit: Option<usize>,
    /// Runs submitted before this run (paging, newest first).
    pub before: Option<String>,
    /// Runs submitted at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Runs submitted before this time (RFC 3339).
    pub until: Option<String>,
    /// The later attempts of this run (its retries).
    pub retry_of: Option<String>,
    /// Runs submitted by this token, the scheduler (`schedule`) or a backfill (`backfill ID`).
    pub submitted_by: Option<String>,
}

/// A backfill: ticks of a job to submit, a few at a time.
#[derive(Debug, Clone, Serialize)]
pub struct Backfill {
    pub id: String,
    pub job: String,
    pub version: i64,
    pub max_active: i64,
    /// (logical time, idempotency key) of the ticks not submitted yet, oldest first.
    pub pending: Vec<(String, String)>,
    pub total: i64,
}

/// One job's figures for `/metrics`.
pub struct JobCounts {
    pub job: String,
    /// Runs of the job in the history, by state.
    pub by_state: Vec<(String, i64)>,
    /// When its latest succeeded run finished (RFC 3339).
    pub last_success: Option<String>,
    /// Whether the scheduler has seen the job with a schedule.
    pub scheduled: bool,
    /// Ticks its schedule missed: passed over by the catch-up policy, or too late for
    /// `catchup = "none"` (not those a pause skipped).
    pub missed_ticks: i64,
}

impl JobCounts {
    fn new(job: String) -> JobCounts {
        JobCounts { job, by_state: Vec::new(), last_success: None, scheduled: false, missed_ticks: 0 }
    }
}

/// Counters for `/metrics`.
pub struct Counts {
    pub by_state: Vec<(String, i64)>,
    pub started: i64,
    pub rows_written: i64,
    pub duration_sum_s: f64,
    pub finished: i64,
}

/// The version of [`SCHEMA`], kept in SQLite's `user_version`. A later schema change adds
/// a migration from each earlier version here.
const SCHEMA_VERSION: i64 = 5;

/// From each earlier schema version to the next, applied in order from the database's.
const MIGRATIONS: [(i64, &str); 4] = [
    (
        1,
        "ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
         ALTER TABLE runs ADD COLUMN retry_of TEXT;
         ALTER TABLE runs ADD COLUMN not_before TEXT;",
    ),
    (
        2,
        "ALTER TABLE tokens ADD COLUMN prefixes TEXT;
         ALTER TABLE schedules ADD COLUMN missed INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE schedules ADD COLUMN paused_by TEXT;
         ALTER TABLE tokens ADD COLUMN keys TEXT;
         ALTER TABLE runs ADD COLUMN allowed_keys TEXT;",
    ),
    // Tokens made before inline definitions needed a grant keep what they could do.
    (3, "ALTER TABLE tokens ADD COLUMN inline_definitions INTEGER NOT NULL DEFAULT 1;"),
    (4, "ALTER TABLE tokens ADD COLUMN profiles TEXT;"),
];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    jobs TEXT,
    prefixes TEXT,
    keys TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    inline_definitions INTEGER NOT NULL DEFAULT 0,
    profiles TEXT
);
CREATE TABLE IF NOT EXISTS job_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    job TEXT NOT NULL,
    job_version INTEGER,
    job_sha256 TEXT NOT NULL,
    definition TEXT NOT NULL,
    vars TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    state TEXT NOT NULL,
    exit_class TEXT,
    exit_code INTEGER,
    error TEXT,
    submitted_by TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    duration_s REAL,
    rows_in INTEGER,
    rows_out INTEGER,
    output_uri TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    workers INTEGER,
    pid INTEGER,
    summary TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    retry_of TEXT,
    not_before TEXT,
    allowed_keys TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state, seq);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, seq);
CREATE TABLE IF NOT EXISTS schedules (
    job TEXT PRIMARY KEY,
    last_tick TEXT NOT NULL,
    missed INTEGER NOT NULL DEFAULT 0,
    paused_by TEXT
);
CREATE TABLE IF NOT EXISTS backfills (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    version INTEGER NOT NULL,
    max_active INTEGER NOT NULL,
    pending TEXT NOT NULL,
    total INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    token TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

const RUN_COLUMNS: &str = "id, job, job_version, job_sha256, state, exit_class, exit_code, error, vars, idempotency_key, \
    submitted_by, submitted_at, started_at, finished_at, duration_s, rows_in, rows_out, output_uri, cancel_requested, \
    workers, pid, definition, summary, attempt, retry_of, not_before, allowed_keys";

/// Now, as stored: RFC 3339 UTC with milliseconds (sorts as text).
/// A time as the history records it: RFC 3339 in UTC with milliseconds, so that stored
/// times compare as text.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn seconds_between(start: &str, end: &str) -> Option<f64> {
    let start = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let end = chrono::DateTime::parse_from_rfc3339(end).ok()?;
    Some((end - start).num_milliseconds() as f64 / 1000.0)
}

fn run_from(row: &Row<'_>) -> rusqlite::Result<Run> {
    let vars: String = row.get(8)?;
    let vars: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&vars).unwrap_or_default();
    let state: String = row.get(4)?;
    let submitted_by: String = row.get(10)?;
    let attempt: i64 = row.get(23)?;
    Ok(Run {
        trigger: trigger_of(&submitted_by, attempt),
        logical_date: vars.get("ds").and_then(|ds| ds.as_str()).map(str::to_string),
        id: row.get(0)?,
        job: row.get(1)?,
        job_version: row.get(2)?,
        job_sha256: row.get(3)?,
        state: RunState::parse(&state).unwrap_or(RunState::Lost),
        exit_class: row.get(5)?,
        exit_code: row.get(6)?,
        error: row.get(7)?,
        vars,
        idempotency_key: row.get(9)?,
        submitted_by,
        submitted_at: row.get(11)?,
        started_at: row.get(12)?,
        finished_at: row.get(13)?,
        duration_s: row.get(14)?,
        rows_in: row.get(15)?,
        rows_out: row.get(16)?,
        output_uri: row.get(17)?,
        cancel_requested: row.get::<_, i64>(18)? != 0,
        workers: row.get(19)?,
        pid: row.get(20)?,
        definition: row.get(21)?,
        summary: row.get::<_, Option<String>>(22)?.and_then(|text| serde_json::from_str(&text).ok()),
        attempt,
        retry_of: row.get(24)?,
        not_before: row.get(25)?,
        allowed_keys: row.get::<_, Option<String>>(26)?.and_then(|keys| serde_json::from_str(&keys).ok()),
    })
}

/// The history database.
pub struct Store {
    connection: Mutex<Connection>,
    /// The service's clock, for every time the history records.
    clock: Arc<dyn Clock>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_clock(path, Arc::new(SystemClock))
    }

    /// Opens the database at `path`, recording times from `clock`.
    pub fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> Result<Store, StoreError> {
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError(rusqlite::Error::InvalidParameterName(format!(
                "{} was written by a newer Weir (schema {version}; this one knows {SCHEMA_VERSION})",
                path.display()
            ))));
        }
        // A new database (version 0) gets the whole schema below.
        for (from, migration) in MIGRATIONS {
            if version != 0 && version <= from {
                connection.execute_batch(migration)?;
            }
        }
        connection.execute_batch(SCHEMA)?;
        connection.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Store { connection: Mutex::new(connection), clock })
    }

    /// The time now, on the service's clock, as the history records it.
    pub fn now(&self) -> String {
        timestamp(self.clock.now())
    }

    fn with<T>(&self, work: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let mut connection = self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(work(&mut connection)?)
    }

    // --- tokens ---

    pub fn token_count(&self) -> Result<i64, StoreError> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM tokens", [], |row| row.get(0)))
    }

    /// Stores a token by its hash; `false` if the name is taken.
    pub fn insert_token(&self, name: &str, sha256: &str, role: Role, grants: &TokenGrants) -> Result<bool, StoreError> {
        let json =
            |list: &Option<Vec<String>>| list.as_ref().map(|list| serde_json::to_string(list).unwrap_or_default());
        let (jobs, prefixes, keys) = (json(&grants.jobs), json(&grants.prefixes), json(&grants.keys));
        let profiles = json(&grants.profiles);
        self.with(|c| {
            let inserted = c.execute(
                "INSERT OR IGNORE INTO tokens (name, sha256, role, jobs, prefixes, keys, created_at, inline_definitions, profiles)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![name, sha256, role.as_str(), jobs, prefixes, keys, self.now(), grants.inline, profiles],
            )?;
            Ok(inserted == 1)
        })
    }

    /// The live token with this hash.
    pub fn token_by_hash(&self, sha256: &str) -> Result<Option<TokenInfo>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT name, role, jobs, created_at, prefixes, keys, inline_definitions, profiles FROM tokens WHERE sha256 = ?1 AND revoked_at IS NULL",
                params![sha256],
                token_from,
            )
            .optional()
        })
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT name, role, jobs, created_at, prefixes, keys, inline_definitions, profiles FROM tokens WHERE revoked_at IS NULL ORDER BY name",
            )?;
            statement.query_map([], token_from)?.collect()
        })
    }

    /// Revokes a token; `false` if there is no live token of that name.
    pub fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let changed = c.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                params![name, self.now()],
            )?;
            Ok(changed == 1)
        })
    }

    // --- jobs ---

    /// Stores `definition` as the next version of job `name`, unless it is the current
    /// version already. Returns the version and whether it is new.
    pub fn put_job(&self, name: &str, sha256: &str, definition: &str, by: &str) -> Result<(i64, bool), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let current: Option<(i64, String)> = tx
                .query_row(
                    "SELECT j.version, v.sha256 FROM jobs j JOIN job_versions v ON v.name = j.name AND v.version = j.version WHERE j.name = ?1",
                    params![name],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            if let Some((version, current_sha)) = &current
                && current_sha == sha256
            {
                return Ok((*version, false));
            }
            let next: i64 = tx.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM job_versions WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )?;
            let at = self.now();
            tx.execute(
                "INSERT INTO job_versions (name, version, sha256, definition, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![name, next, sha256, definition, at, by],
            )?;
            tx.execute(
                "INSERT INTO jobs (name, version, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
                params![name, next, at],
            )?;
            tx.commit()?;
            Ok((next, true))
        })
    }

    /// The current versions of all jobs.
    pub fn jobs(&self) -> Result<Vec<JobVersion>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT v.name, v.version, v.sha256, j.updated_at, v.created_by FROM jobs j
                 JOIN job_versions v ON v.name = j.name AND v.version = j.version ORDER BY v.name",
            )?;
            statement.query_map([], job_version_from)?.collect()
        })
    }

    /// A job's version (`None`: the current one), with its definition.
    pub fn job_version(&self, name: &str, version: Option<i64>) -> Result<Option<JobVersion>, StoreError> {
        self.with(|c| {
            let version = match version {
                Some(version) => Some(version),
                None => c
                    .query_row("SELECT version FROM jobs WHERE name = ?1", params![name], |row| row.get(0))
                    .optional()?,
            };
            let Some(version) = version else { return Ok(None) };
            c.query_row(
                "SELECT name, version, sha256, definition, created_at, created_by FROM job_versions WHERE name = ?1 AND version = ?2",
                params![name, version],
                |row| {
                    Ok(JobVersion {
                        name: row.get(0)?,
                        version: row.get(1)?,
                        sha256: row.get(2)?,
                        definition: Some(row.get(3)?),
                        created_at: row.get(4)?,
                        created_by: row.get(5)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Every version of a job, oldest first, without definitions.
    pub fn job_versions(&self, name: &str) -> Result<Vec<JobVersion>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT name, version, sha256, created_at, created_by FROM job_versions WHERE name = ?1 ORDER BY version",
            )?;
            statement.query_map(params![name], job_version_from)?.collect()
        })
    }

    /// Makes `version` the current version of `name`; `false` if there is no such version.
    pub fn rollback_job(&self, name: &str, version: i64) -> Result<bool, StoreError> {
        self.with(|c| {
            let exists: bool = c.query_row(
                "SELECT COUNT(*) FROM job_versions WHERE name = ?1 AND version = ?2",
                params![name, version],
                |row| row.get::<_, i64>(0).map(|n| n == 1),
            )?;
            if exists {
                c.execute(
                    "UPDATE jobs SET version = ?2, updated_at = ?3 WHERE name = ?1",
                    params![name, version, self.now()],
                )?;
            }
            Ok(exists)
        })
    }

    // --- runs ---

    /// Stores a queued run, or finds the run its idempotency key was used for.
    pub fn insert_run(&self, run: &NewRun) -> Result<Inserted, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let inserted = insert_run_in(&tx, run, &self.now())?;
            tx.commit()?;
            Ok(inserted)
        })
    }

    pub fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
        self.with(|c| c.query_row(&sql, params![id], run_from).optional())
    }

    /// Runs, newest first, filtered; at most `filter.limit` (default 50, at most 500).
    pub fn runs(&self, filter: &RunFilter, allowed_jobs: Option<&[String]>) -> Result<Vec<Run>, StoreError> {
        let limit = filter.limit.unwrap_or(50).clamp(1, 500) as i64;
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR job = ?1) AND (?2 IS NULL OR state = ?2)
             AND (?3 IS NULL OR seq < (SELECT seq FROM runs WHERE id = ?3)) AND (?4 IS NULL OR job IN (SELECT value FROM json_each(?4)))
             AND (?6 IS NULL OR submitted_at >= ?6) AND (?7 IS NULL OR submitted_at < ?7)
             AND (?8 IS NULL OR retry_of = ?8) AND (?9 IS NULL OR submitted_by = ?9)
             ORDER BY seq DESC LIMIT ?5"
        );
        let allowed = allowed_jobs.map(|jobs| serde_json::to_string(jobs).unwrap_or_default());
        // Stored times are UTC with milliseconds and a Z; bring the bounds to the same form
        // so that they compare as text.
        let normal = |time: &Option<String>| {
            time.as_deref().map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_else(|_| t.to_string())
            })
        };
        let (since, until) = (normal(&filter.since), normal(&filter.until));
        self.with(|c| {
            let mut statement = c.prepare(&sql)?;
            statement
                .query_map(
                    params![
                        filter.job,
                        filter.state,
                        filter.before,
                        allowed,
                        limit,
                        since,
                        until,
                        filter.retry_of,
                        filter.submitted_by
                    ],
                    run_from,
                )?
                .collect()
        })
    }

    /// Runs in `state`, oldest first.
    pub fn runs_in(&self, state: RunState) -> Result<Vec<Run>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE state = ?1 ORDER BY seq");
        self.with(|c| {
            let mut statement = c.prepare(&sql)?;
            statement.query_map(params![state.as_str()], run_from)?.collect()
        })
    }

    /// Moves the oldest queued run to `running` (before its process starts), if fewer than
    /// `max_running` runs are running.
    pub fn claim_next(&self, max_running: usize) -> Result<Option<Run>, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let running: i64 =
                tx.query_row("SELECT COUNT(*) FROM runs WHERE state = 'running'", [], |row| row.get(0))?;
            if running as usize >= max_running {
                return Ok(None);
            }
            let at = self.now();
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'queued' AND (not_before IS NULL OR not_before <= ?1) ORDER BY seq LIMIT 1"
            );
            let Some(mut run) = tx.query_row(&sql, params![at], run_from).optional()? else { return Ok(None) };
            tx.execute("UPDATE runs SET state = 'running', started_at = ?2 WHERE id = ?1", params![run.id, at])?;
            tx.commit()?;
            run.state = RunState::Running;
            run.started_at = Some(at);
            Ok(Some(run))
        })
    }

    pub fn set_pid(&self, id: &str, pid: u32) -> Result<(), StoreError> {
        self.with(|c| c.execute("UPDATE runs SET pid = ?2 WHERE id = ?1", params![id, pid]).map(drop))
    }

    /// Ends a run that is not terminal yet; `false` if it was.
    pub fn finish(&self, id: &str, state: RunState, ending: &Ending) -> Result<bool, StoreError> {
        self.finish_with_next(id, state, ending, None)
    }

    /// Records how run `id` ended and, in the same transaction, queues `next` (its retry):
    /// whoever sees the run failed also sees the attempt that follows it, if any.
    pub fn finish_with_next(
        &self,
        id: &str,
        state: RunState,
        ending: &Ending,
        next: Option<&NewRun>,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            let c = c.transaction()?;
            let at = self.now();
            let started: Option<String> = c
                .query_row("SELECT started_at FROM runs WHERE id = ?1", params![id], |row| row.get(0))
                .optional()?
                .flatten();
            let duration = started.and_then(|started| seconds_between(&started, &at));
            let changed = c.execute(
                "UPDATE runs SET state = ?2, finished_at = ?3, duration_s = ?4, exit_class = ?5, exit_code = ?6, error = ?7,
                 rows_in = ?8, rows_out = ?9, summary = ?10 WHERE id = ?1 AND state IN ('queued', 'running')",
                params![
                    id,
                    state.as_str(),
                    at,
                    duration,
                    ending.exit_class,
                    ending.exit_code,
                    ending.error,
                    ending.rows_in,
                    ending.rows_out,
                    ending.summary.as_ref().map(|summary| summary.to_string())
                ],
            )?;
            if changed == 1
                && let Some(next) = next
            {
                insert_run_in(&c, next, &at)?;
            }
            c.commit()?;
            Ok(changed == 1)
        })
    }

    /// Cancels a run that is still queued (it will never start); `false` if it is not.
    pub fn cancel_queued(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let at = self.now();
            let changed = c.execute(
                "UPDATE runs SET state = 'cancelled', cancel_requested = 1, finished_at = ?2, error = 'cancelled before it started'
                 WHERE id = ?1 AND state = 'queued'",
                params![id, at],
            )?;
            Ok(changed == 1)
        })
    }

    /// Marks a running run as to be cancelled.
    pub fn request_cancel(&self, id: &str) -> Result<(), StoreError> {
        self.with(|c| c.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?1", params![id]).map(drop))
    }

    pub fn counts(&self) -> Result<Counts, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare("SELECT state, COUNT(*) FROM runs GROUP BY state")?;
            let by_state = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<_, _>>()?;
            let (started, rows_written, duration_sum_s, finished) = c.query_row(
                "SELECT COUNT(started_at), COALESCE(SUM(CASE WHEN state = 'succeeded' THEN rows_out END), 0),
                        COALESCE(SUM(duration_s), 0.0), COUNT(duration_s) FROM runs",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )?;
            Ok(Counts { by_state, started, rows_written, duration_sum_s, finished })
        })
    }

    /// Per-job figures, by job name.
    pub fn job_counts(&self) -> Result<Vec<JobCounts>, StoreError> {
        self.with(|c| {
            let mut jobs: std::collections::BTreeMap<String, JobCounts> = std::collections::BTreeMap::new();
            let mut statement = c.prepare(
                "SELECT job, state, COUNT(*), MAX(CASE WHEN state = 'succeeded' THEN finished_at END) FROM runs GROUP BY job, state",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, Option<String>>(3)?))
            })?;
            for row in rows {
                let (job, state, count, last) = row?;
                let counts = jobs.entry(job.clone()).or_insert_with(|| JobCounts::new(job));
                counts.by_state.push((state, count));
                if last.is_some() {
                    counts.last_success = last;
                }
            }
            let mut statement = c.prepare("SELECT job, missed FROM schedules")?;
            let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
            for row in rows {
                let (job, missed) = row?;
                let counts = jobs.entry(job.clone()).or_insert_with(|| JobCounts::new(job));
                (counts.scheduled, counts.missed_ticks) = (true, missed);
            }
            Ok(jobs.into_values().collect())
        })
    }

    // --- schedules ---

    /// Pauses (`Some(who)`) or resumes (`None`) `job`'s schedule, whatever its definition
    /// says; `false` when the scheduler has not seen the job with a schedule.
    pub fn set_schedule_paused(&self, job: &str, by: Option<&str>) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute("UPDATE schedules SET paused_by = ?2 WHERE job = ?1", params![job, by])
                .map(|changed| changed == 1)
        })
    }

    /// Who paused `job`'s schedule through the API, if it is paused that way.
    pub fn schedule_paused_by(&self, job: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_row("SELECT paused_by FROM schedules WHERE job = ?1", params![job], |row| row.get(0))
                .optional()
                .map(Option::flatten)
        })
    }

    /// Counts `ticks` more missed ticks of `job`'s schedule.
    pub fn add_missed_ticks(&self, job: &str, ticks: usize) -> Result<(), StoreError> {
        if ticks == 0 {
            return Ok(());
        }
        self.with(|c| {
            c.execute("UPDATE schedules SET missed = missed + ?2 WHERE job = ?1", params![job, ticks as i64]).map(drop)
        })
    }

    /// The last tick handled for `job`'s schedule, if the job was seen with one before.
    pub fn schedule_last_tick(&self, job: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let text: Option<String> = self.with(|c| {
            c.query_row("SELECT last_tick FROM schedules WHERE job = ?1", params![job], |row| row.get(0)).optional()
        })?;
        Ok(text.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&chrono::Utc)))
    }

    pub fn set_schedule_last_tick(&self, job: &str, tick: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
        let tick = tick.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.with(|c| {
            c.execute(
                "INSERT INTO schedules (job, last_tick) VALUES (?1, ?2) ON CONFLICT (job) DO UPDATE SET last_tick = excluded.last_tick",
                params![job, tick],
            )
            .map(drop)
        })
    }

    /// Scheduled runs of `job` that are queued or running.
    pub fn active_scheduled_runs(&self, job: &str) -> Result<i64, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM runs WHERE job = ?1 AND state IN ('queued', 'running') AND idempotency_key LIKE 'schedule/%'",
                params![job],
                |row| row.get(0),
            )
        })
    }

    /// The runs of `job` that write to `output_uri`, newest first (at most 100): what a
    /// schedule's tick looks at before it runs.
    pub fn runs_writing(&self, job: &str, output_uri: &str) -> Result<Vec<Run>, StoreError> {
        let sql =
            format!("SELECT {RUN_COLUMNS} FROM runs WHERE job = ?1 AND output_uri = ?2 ORDER BY seq DESC LIMIT 100");
        self.with(|c| {
            let mut statement = c.prepare(&sql)?;
            let runs = statement.query_map(params![job, output_uri], run_from)?.collect::<Result<Vec<_>, _>>()?;
            Ok(runs)
        })
    }

    /// Records a tick's run as skipped, for `reason`, under its idempotency key (so that
    /// the tick is still handled exactly once), or finds the run that key already has.
    pub fn insert_skipped_run(&self, run: &NewRun, reason: &str) -> Result<Inserted, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let inserted = insert_run_in(&tx, run, &self.now())?;
            if let Inserted::New(_) = inserted {
                tx.execute(
                    "UPDATE runs SET state = 'skipped', finished_at = ?2, error = ?3 WHERE id = ?1",
                    params![run.id, self.now(), reason],
                )?;
            }
            tx.commit()?;
            Ok(inserted)
        })
    }

    /// The latest run for a tick: its first run (key `KEY`) or a later attempt (`KEY/…`).
    pub fn latest_run_for_key(&self, key: &str) -> Result<Option<Run>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key = ?1 OR idempotency_key LIKE ?1 || '/%' ORDER BY seq DESC LIMIT 1"
        );
        self.with(|c| c.query_row(&sql, params![key], run_from).optional())
    }

    /// Runs submitted by `who` that are queued or running.
    pub fn active_runs_by(&self, who: &str) -> Result<i64, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM runs WHERE submitted_by = ?1 AND state IN ('queued', 'running')",
                params![who],
                |row| row.get(0),
            )
        })
    }

    // --- backfills ---

    /// Stores a backfill: `ticks` are (logical time, idempotency key) pairs to submit, oldest
    /// first, at most `max_active` at a time.
    pub fn insert_backfill(&self, backfill: &Backfill, by: &str) -> Result<(), StoreError> {
        let pending = serde_json::to_string(&backfill.pending).unwrap_or_default();
        self.with(|c| {
            c.execute(
                "INSERT INTO backfills (id, job, version, max_active, pending, total, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![backfill.id, backfill.job, backfill.version, backfill.max_active, pending, backfill.total, self.now(), by],
            )
            .map(drop)
        })
    }

    /// Backfills with ticks still to submit.
    pub fn pending_backfills(&self) -> Result<Vec<Backfill>, StoreError> {
        self.with(|c| {
            let mut statement =
                c.prepare("SELECT id, job, version, max_active, pending, total FROM backfills WHERE pending != '[]' ORDER BY created_at")?;
            statement
                .query_map([], |row| {
                    let pending: String = row.get(4)?;
                    Ok(Backfill {
                        id: row.get(0)?,
                        job: row.get(1)?,
                        version: row.get(2)?,
                        max_active: row.get(3)?,
                        pending: serde_json::from_str(&pending).unwrap_or_default(),
                        total: row.get(5)?,
                    })
                })?
                .collect()
        })
    }

    /// Records what is left of a backfill's ticks.
    pub fn set_backfill_pending(&self, id: &str, pending: &[(String, String)]) -> Result<(), StoreError> {
        let pending = serde_json::to_string(pending).unwrap_or_default();
        self.with(|c| c.execute("UPDATE backfills SET pending = ?2 WHERE id = ?1", params![id, pending]).map(drop))
    }

    // --- audit ---

    pub fn audit(&self, token: &str, action: &str, target: &str, detail: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO audit (at, token, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![self.now(), token, action, target, detail],
            )
            .map(drop)
        })
    }

    pub fn audit_events(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.with(|c| {
            let mut statement =
                c.prepare("SELECT at, token, action, target, detail FROM audit ORDER BY seq DESC LIMIT ?1")?;
            statement
                .query_map(params![limit as i64], |row| {
                    Ok(AuditEvent {
                        at: row.get(0)?,
                        token: row.get(1)?,
                        action: row.get(2)?,
                        target: row.get(3)?,
                        detail: row.get(4)?,
                    })
                })?
                .collect()
        })
    }
}

/// A job version without its definition, from `name, version, sha256, created_at, created_by`.
fn job_version_from(row: &Row<'_>) -> rusqlite::Result<JobVersion> {
    Ok(JobVersion {
        name: row.get(0)?,
        version: row.get(1)?,
        sha256: row.get(2)?,
        definition: None,
        created_at: row.get(3)?,
        created_by: row.get(4)?,
    })
}

/// [`Store::insert_run`] inside the transaction `tx`.
fn insert_run_in(tx: &rusqlite::Transaction<'_>, run: &NewRun, at: &str) -> rusqlite::Result<Inserted> {
    let vars = serde_json::Value::Object(run.vars.clone()).to_string();
    if let Some(key) = &run.idempotency_key {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key = ?1");
        if let Some(existing) = tx.query_row(&sql, params![key], run_from).optional()? {
            let same = existing.definition == run.definition
                && existing.vars == run.vars
                && existing.job_version == run.job_version
                && existing.job == run.job;
            return Ok(if same { Inserted::Existing(Box::new(existing)) } else { Inserted::Conflict(existing.id) });
        }
    }
    tx.execute(
        "INSERT INTO runs (id, job, job_version, job_sha256, definition, vars, idempotency_key, state, submitted_by, submitted_at, workers, output_uri,
                           attempt, retry_of, not_before, allowed_keys)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            run.id,
            run.job,
            run.job_version,
            run.job_sha256,
            run.definition,
            vars,
            run.idempotency_key,
            run.submitted_by,
            at,
            run.workers,
            run.output_uri,
            run.attempt,
            run.retry_of,
            run.not_before,
            run.allowed_keys.as_ref().map(|keys| serde_json::to_string(keys).unwrap_or_default())
        ],
    )?;
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
    let stored = tx.query_row(&sql, params![run.id], run_from)?;
    Ok(Inserted::New(Box::new(stored)))
}

fn token_from(row: &Row<'_>) -> rusqlite::Result<TokenInfo> {
    let role: String = row.get(1)?;
    let jobs: Option<String> = row.get(2)?;
    Ok(TokenInfo {
        name: row.get(0)?,
        role: Role::parse(&role),
        jobs: jobs.and_then(|jobs| serde_json::from_str(&jobs).ok()),
        created_at: row.get(3)?,
        prefixes: row.get::<_, Option<String>>(4)?.and_then(|prefixes| serde_json::from_str(&prefixes).ok()),
        keys: row.get::<_, Option<String>>(5)?.and_then(|keys| serde_json::from_str(&keys).ok()),
        inline: row.get::<_, i64>(6)? != 0,
        profiles: row.get::<_, Option<String>>(7)?.and_then(|profiles| serde_json::from_str(&profiles).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_run(id: &str, key: Option<&str>, definition: &str) -> NewRun {
        NewRun {
            id: id.into(),
            job: "j".into(),
            job_version: None,
            job_sha256: "s".into(),
            definition: definition.into(),
            vars: serde_json::Map::new(),
            idempotency_key: key.map(str::to_string),
            submitted_by: "admin".into(),
            workers: None,
            output_uri: "out/".into(),
            attempt: 1,
            retry_of: None,
            not_before: None,
            allowed_keys: None,
        }
    }

    #[test]
    fn runs_are_claimed_once_in_order_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("weir.db")).unwrap();
        for id in ["a", "b", "c"] {
            assert!(matches!(store.insert_run(&new_run(id, None, "x")).unwrap(), Inserted::New(_)));
        }
        assert_eq!(store.claim_next(2).unwrap().unwrap().id, "a");
        assert_eq!(store.claim_next(2).unwrap().unwrap().id, "b");
        assert!(store.claim_next(2).unwrap().is_none(), "two are running");
        assert!(store.finish("a", RunState::Succeeded, &Ending::default()).unwrap());
        assert!(!store.finish("a", RunState::Failed, &Ending::default()).unwrap(), "a terminal run stays");
        assert_eq!(store.claim_next(2).unwrap().unwrap().id, "c");
    }

    #[test]
    fn a_version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.db");
        {
            let old = Connection::open(&path).unwrap();
            let v1 = SCHEMA
                .replace(",\n    attempt INTEGER NOT NULL DEFAULT 1,\n    retry_of TEXT,\n    not_before TEXT,\n    allowed_keys TEXT\n", "\n")
                .replace("    prefixes TEXT,\n    keys TEXT,\n", "")
                .replace(",\n    missed INTEGER NOT NULL DEFAULT 0,\n    paused_by TEXT\n", "\n")
                .replace(",\n    inline_definitions INTEGER NOT NULL DEFAULT 0,\n    profiles TEXT\n", "\n");
            assert_ne!(v1, SCHEMA);
            old.execute_batch(&v1).unwrap();
            old.execute(
                "INSERT INTO runs (id, job, job_sha256, definition, vars, state, submitted_by, submitted_at) VALUES ('old', 'j', 's', 'd', '{}', 'succeeded', 'a', 't')",
                [],
            )
            .unwrap();
            old.execute(
                "INSERT INTO tokens (name, sha256, role, created_at) VALUES ('older', 'old-hash', 'submit', 't')",
                [],
            )
            .unwrap();
            old.pragma_update(None, "user_version", 1).unwrap();
        }
        let store = Store::open(&path).unwrap();
        // A token from before the inline grant keeps what it could do; new ones need it.
        assert!(store.token_by_hash("old-hash").unwrap().unwrap().inline);
        let old = store.run("old").unwrap().unwrap();
        assert_eq!((old.attempt, old.retry_of), (1, None));
        let grants = TokenGrants { prefixes: Some(vec!["s3://b/x/".to_string()]), ..TokenGrants::default() };
        assert!(store.insert_token("t", "h", Role::Submit, &grants).unwrap());
        let new = store.token_by_hash("h").unwrap().unwrap();
        assert_eq!((new.prefixes, new.inline), (Some(vec!["s3://b/x/".to_string()]), false));
        assert!(matches!(store.insert_run(&new_run("new", None, "x")).unwrap(), Inserted::New(_)));
        drop(store);
        let newer = Connection::open(&path).unwrap();
        newer.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(newer);
        assert!(Store::open(&path).is_err(), "a newer schema is refused");
    }

    #[test]
    fn run_lists_filter_and_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("weir.db")).unwrap();
        for id in ["a", "b", "c"] {
            store.insert_run(&new_run(id, None, "x")).unwrap();
        }
        store.claim_next(1).unwrap();
        let ids = |runs: Vec<Run>| runs.into_iter().map(|run| run.id).collect::<Vec<_>>();
        assert_eq!(ids(store.runs(&RunFilter::default(), None).unwrap()), ["c", "b", "a"]);
        let queued = RunFilter { state: Some("queued".into()), ..RunFilter::default() };
        assert_eq!(ids(store.runs(&queued, None).unwrap()), ["c", "b"]);
        let page = RunFilter { before: Some("c".into()), limit: Some(1), ..RunFilter::default() };
        assert_eq!(ids(store.runs(&page, None).unwrap()), ["b"]);
        let future = RunFilter { since: Some("2999-01-01T00:00:00+02:00".into()), ..RunFilter::default() };
        assert!(store.runs(&future, None).unwrap().is_empty());
        let past = RunFilter { until: Some("2999-01-01T00:00:00Z".into()), ..RunFilter::default() };
        assert_eq!(store.runs(&past, None).unwrap().len(), 3);
        assert!(store.runs(&RunFilter::default(), Some(&["other".to_string()])).unwrap().is_empty());
    }

    #[test]
    fn idempotency_keys_find_the_same_run_or_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("weir.db")).unwrap();
        assert!(matches!(store.insert_run(&new_run("a", Some("k"), "x")).unwrap(), Inserted::New(_)));
        assert!(
            matches!(store.insert_run(&new_run("b", Some("k"), "x")).unwrap(), Inserted::Existing(run) if run.id == "a")
        );
        assert!(
            matches!(store.insert_run(&new_run("c", Some("k"), "y")).unwrap(), Inserted::Conflict(id) if id == "a")
        );
    }

    #[test]
    fn job_versions_count_up_and_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("weir.db")).unwrap();
        assert_eq!(store.put_job("j", "h1", "one", "admin").unwrap(), (1, true));
        assert_eq!(store.put_job("j", "h1", "one", "admin").unwrap(), (1, false));
        assert_eq!(store.put_job("j", "h2", "two", "admin").unwrap(), (2, true));
        assert!(store.rollback_job("j", 1).unwrap());
        assert_eq!(store.job_version("j", None).unwrap().unwrap().definition.as_deref(), Some("one"));
        assert_eq!(store.put_job("j", "h2", "two", "admin").unwrap(), (3, true));
        assert!(!store.rollback_job("j", 9).unwrap());
    }
}
