//! The API's requests and replies, defined once: the routes ([`super::api`]) take and
//! answer these types, the OpenAPI document at `/v1/openapi.json` is generated from them
//! (`utoipa`), and the Python client's types (`clients/python/weir_client/_types.py`) are
//! checked against that document by a test. The records the history stores and the API
//! shows as they are ([`Run`], [`TokenInfo`], [`JobVersion`], [`AuditEvent`]) live in [`super::store`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::backfill::{PlannedTick, Reprocess};
use super::schedules::ScheduleInfo;
use super::store::{AuditEvent, JobVersion, Role, Run, TokenInfo};

/// Every error reply: its HTTP status says the class (401 no or unknown token, 403 not
/// allowed, 404 not found, 409 conflict, 413 too large, 422 invalid, 429 too many), and
/// `error` says what, for people.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorReply {
    pub error: String,
}

// --- tokens ---

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// 1 to 64 characters, unique among live tokens.
    pub name: String,
    pub role: Role,
    /// The jobs it may see and act on; absent: all.
    #[serde(default)]
    pub jobs: Option<Vec<String>>,
    /// URI prefixes its runs may read and write; absent: any.
    #[serde(default)]
    pub prefixes: Option<Vec<String>>,
    /// Key ids its runs may use; absent: any the service holds.
    #[serde(default)]
    pub keys: Option<Vec<String>>,
    /// May submit inline definitions (default: only stored jobs, by name).
    #[serde(default)]
    pub inline: bool,
    /// Storage profiles its definitions may name; absent: any.
    #[serde(default)]
    pub profiles: Option<Vec<String>>,
}

/// A token just created: its grants and the secret itself, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub name: String,
    pub role: Role,
    pub jobs: Option<Vec<String>>,
    pub prefixes: Option<Vec<String>>,
    pub keys: Option<Vec<String>>,
    pub inline: bool,
    pub profiles: Option<Vec<String>>,
    /// The bearer token; the service keeps only its SHA-256.
    pub token: String,
}

/// `GET /v1/tokens`: the live tokens, by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

// --- jobs ---

/// `POST /v1/jobs` (store a definition) and `POST /v1/check` (check one as the service
/// would store and run it, storing nothing).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobUpload {
    /// The job's TOML.
    pub definition: String,
    /// Variables to check it with.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// A definition stored: its version, and whether it was new (an identical definition keeps
/// the current version).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoredJob {
    pub name: String,
    pub version: i64,
    pub sha256: String,
    pub created: bool,
}

/// `POST /v1/check`: the job's name and the output it would write.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckedJob {
    pub name: String,
    pub output_uri: String,
}

/// One stored job in `GET /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobSummary {
    pub name: String,
    /// The current version.
    pub version: i64,
    pub sha256: String,
    /// When the current version became current.
    pub updated_at: String,
}

/// `GET /v1/jobs`: the jobs the token may see.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobSummary>,
}

/// `GET /v1/jobs/{name}`: the current version's definition and every version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobDetail {
    pub name: String,
    pub version: i64,
    pub sha256: String,
    pub definition: String,
    /// Every version, oldest first, without their definitions.
    pub versions: Vec<JobVersion>,
}

/// `POST /v1/jobs/{name}/rollback`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The version to make current again.
    pub version: i64,
}

/// `POST /v1/jobs/{name}/backfill`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// The first date (`YYYY-MM-DD`) whose interval is run.
    pub from: chrono::NaiveDate,
    /// The last date, included.
    pub to: chrono::NaiveDate,
    #[serde(default)]
    pub reprocess: Reprocess,
    /// At most this many of its runs queued or running at once (1 to 64; default 1).
    #[serde(default)]
    pub max_active: Option<usize>,
    /// List the ticks and what would happen to each; start nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Also run dates whose interval has not ended, under keys of their own.
    #[serde(default)]
    pub include_incomplete: bool,
}

/// A backfill's plan (a dry run: no `id`) or the backfill started.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackfillReply {
    /// The backfill's id; its runs are submitted by `backfill ID`. Absent for a dry run.
    pub id: Option<String>,
    pub job: String,
    pub version: i64,
    pub dry_run: bool,
    /// How many ticks run.
    pub runs: i64,
    pub ticks: Vec<PlannedTick>,
}

// --- runs ---

/// `POST /v1/runs`: a stored job by name (`job`, optionally `version`) or an inline
/// definition (`definition`, which needs an admin token or one created with `inline`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    #[serde(default)]
    pub job: Option<String>,
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub definition: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The same key with the same definition and variables returns the same run (200);
    /// with others, 409. At most 256 bytes.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Worker threads (1 to 256; default: the service's).
    #[serde(default)]
    pub workers: Option<i64>,
}

/// `GET /v1/runs`: newest first; `next` is the `before` of the next page, absent on the
/// last one.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
    pub next: Option<String>,
}

/// `GET /v1/runs/{id}/logs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// The byte to start at; a reply without `follow` gives the next one in the
    /// `x-weir-next-offset` header (at most 1 MiB a reply).
    #[serde(default)]
    pub offset: u64,
    /// Stream what the log gains until the run has ended.
    #[serde(default)]
    pub follow: bool,
}

// --- schedules and the audit trail ---

/// `GET /v1/schedules`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleInfo>,
}

/// `GET /v1/audit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The newest this many events (1 to 10,000; default 200).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /v1/audit`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub events: Vec<AuditEvent>,
}
