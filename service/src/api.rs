//! The HTTP/JSON API under `/v1`, `/healthz` and `/metrics` (docs/service.md lists every
//! route). Handlers check access first ([`super::auth`]), then validate, then write to the
//! database, and only then reply. Each `/v1` route is declared once, by its handler's
//! `#[utoipa::path]` (method, path, parameters, body, replies), and registered with
//! `routes!`; the OpenAPI document served at `/v1/openapi.json` is generated from those
//! and from the types in [`super::api_types`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api_error::ApiError;
use super::api_types::{
    AuditList, AuditQuery, BackfillReply, BackfillRequest, CheckedJob, CreatedToken, ErrorReply, JobDetail, JobList,
    JobSummary, JobUpload, LogQuery, NewToken, Rollback, RunList, ScheduleList, StoredJob, Submission, TokenList,
};
use super::auth::{AllowedHosts, authenticate, new_token, require, require_job};
use super::backfill;
use super::definition_check::DefinitionChecker;
use super::scheduler::Scheduler;
use super::schedules::ScheduleInfo;
use super::store::{Inserted, JobVersion, NewRun, Role, Run, RunFilter, RunState, Store, TokenGrants, TokenInfo};
use weir_jobs::planning::sha256_hex;
use weir_jobs::vars::{check_name, new_run_id};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub scheduler: Arc<Scheduler>,
    pub hosts: AllowedHosts,
    pub checker: Arc<DefinitionChecker>,
}

type Reply = Result<Response, ApiError>;

/// A body that is not the JSON a route takes (checked after access, so that a caller
/// without a token learns nothing about the route).
fn bad_body(rejection: JsonRejection) -> ApiError {
    ApiError::new(rejection.status(), rejection.body_text())
}

fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::new(rejection.status(), rejection.body_text())
}

/// The document's frame: title, the bearer scheme every `/v1` route takes, and the error
/// reply they share.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weir job service",
        description = "Store job definitions, submit and follow runs, backfills and schedules (docs/service.md). Every route needs `Authorization: Bearer TOKEN`; errors are `{\"error\": message}` with the status as the class."
    ),
    modifiers(&BearerScheme),
    components(schemas(ErrorReply)),
    security(("bearer" = []))
)]
struct ApiDocument;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi.components.get_or_insert_with(Default::default).add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The `/v1` routes with their OpenAPI descriptions: one `routes!` per path.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDocument::openapi())
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(put_job, list_jobs))
        .routes(routes!(show_job))
        .routes(routes!(show_job_version))
        .routes(routes!(rollback_job))
        .routes(routes!(backfill_job))
        .routes(routes!(check_definition))
        .routes(routes!(submit_run, list_runs))
        .routes(routes!(show_run))
        .routes(routes!(run_logs))
        .routes(routes!(cancel_run))
        .routes(routes!(audit))
        .routes(routes!(list_schedules))
        .routes(routes!(pause_schedule))
        .routes(routes!(resume_schedule))
}

/// The routes.
pub fn router(state: AppState) -> Router {
    let (api, document) = api_routes().split_for_parts();
    // Made once; each request shares the bytes.
    let document = axum::body::Bytes::from(document.to_json().unwrap_or_default());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(move |state, headers| openapi_json(state, headers, document.clone())))
        .merge(api)
        .with_state(state)
}

/// The OpenAPI document. It describes routes and types, no data: like the dashboard, it
/// needs no token (the Host check still applies).
async fn openapi_json(State(state): State<AppState>, headers: HeaderMap, document: axum::body::Bytes) -> Reply {
    state.hosts.check(&headers)?;
    let mut response = Response::new(Body::from(document));
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Host/Origin, then the token, then the role.
fn caller(state: &AppState, headers: &HeaderMap, needed: Role) -> Result<TokenInfo, ApiError> {
    state.hosts.check(headers)?;
    let caller = authenticate(&state.store, headers)?;
    require(&caller, needed)?;
    Ok(caller)
}

fn audit_event(
    state: &AppState,
    caller: &TokenInfo,
    action: &str,
    target: &str,
    detail: Value,
) -> Result<(), ApiError> {
    state.store.audit(&caller.name, action, target, &detail.to_string()).map_err(ApiError::internal)
}

fn created(value: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// The dashboard: a static page that reads this API with the user's token. It holds no
/// data, so it needs no token itself; the Host check still applies.
async fn dashboard(State(state): State<AppState>, headers: HeaderMap) -> Reply {
    state.hosts.check(&headers)?;
    let mut response = Response::new(Body::from(include_str!("dashboard.html")));
    let set = |response: &mut Response, name: &'static str, value: &'static str| {
        response.headers_mut().insert(name, HeaderValue::from_static(value));
    };
    set(&mut response, "content-type", "text/html; charset=utf-8");
    set(
        &mut response,
        "content-security-policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'",
    );
    set(&mut response, "x-frame-options", "DENY");
    set(&mut response, "referrer-policy", "no-referrer");
    Ok(response)
}

// --- tokens ---

/// The most prefixes a token may be given, and the longest one.
const MAX_PREFIXES: usize = 64;
const MAX_PREFIX_BYTES: usize = 1024;

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, description = "Created; `token` is shown this once", body = CreatedToken),
        (status = "4XX", description = "401, 403 (admin only), 409 (name taken), 422", body = ErrorReply)))]
async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Reply {
    let caller = caller(&state, &headers, Role::Admin)?;
    let Json(body) = body.map_err(bad_body)?;
    if body.name.is_empty() || body.name.len() > 64 {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "a token's name is 1 to 64 characters"));
    }
    if let Some(prefixes) = &body.prefixes {
        let bad = prefixes.iter().find(|prefix| {
            prefix.len() > MAX_PREFIX_BYTES
                || weir_connectors::Location::parse(prefix, &weir_connectors::StorageOptions::default()).is_err()
        });
        if prefixes.len() > MAX_PREFIXES || bad.is_some() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "a token's prefixes are at most {MAX_PREFIXES} URIs (a path, file:// or s3://), each at most {MAX_PREFIX_BYTES} bytes"
                ),
            ));
        }
    }
    if body.profiles.as_ref().is_some_and(|profiles| {
        profiles.len() > MAX_PREFIXES
            || profiles.iter().any(|p| {
                p.is_empty() || p.len() > 64 || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
    }) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "a token's profiles are at most {MAX_PREFIXES} names of [A-Za-z0-9_-]+, each at most 64 characters"
            ),
        ));
    }
    if let Some(keys) = &body.keys
        && let Some(message) = keys.iter().find_map(|id| weir_connectors::keys::check_key_id(id).err())
    {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message));
    }
    let token = new_token().map_err(ApiError::internal)?;
    let grants = TokenGrants {
        jobs: body.jobs.clone(),
        prefixes: body.prefixes.clone(),
        keys: body.keys.clone(),
        inline: body.inline,
        profiles: body.profiles.clone(),
    };
    let inserted = state
        .store
        .insert_token(&body.name, &sha256_hex(token.as_bytes()), body.role, &grants)
        .map_err(ApiError::internal)?;
    if !inserted {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("a token named '{}' exists", body.name)));
    }
    let granted = json!({ "role": body.role, "jobs": body.jobs, "prefixes": body.prefixes, "keys": body.keys, "inline": body.inline });
    audit_event(&state, &caller, "token.create", &body.name, granted)?;
    Ok(created(CreatedToken {
        name: body.name,
        role: body.role,
        jobs: body.jobs,
        prefixes: body.prefixes,
        keys: body.keys,
        inline: body.inline,
        profiles: body.profiles,
        token,
    }))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokenList), (status = "4XX", description = "401, 403 (admin only)", body = ErrorReply)))]
async fn list_tokens(State(state): State<AppState>, headers: HeaderMap) -> Reply {
    caller(&state, &headers, Role::Admin)?;
    let tokens = state.store.tokens().map_err(ApiError::internal)?;
    Ok(Json(TokenList { tokens }).into_response())
}

#[utoipa::path(delete, path = "/v1/tokens/{name}", tag = "tokens", params(("name" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = "4XX", description = "401, 403 (admin only), 404", body = ErrorReply)))]
async fn revoke_token(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Reply {
    let caller = caller(&state, &headers, Role::Admin)?;
    if !state.store.revoke_token(&name).map_err(ApiError::internal)? {
        return Err(ApiError::not_found(format_args!("token '{name}'")));
    }
    audit_event(&state, &caller, "token.revoke", &name, json!({}))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- jobs ---

/// The most runs one token may have queued or running (its backfills' runs are counted
/// apart, under the backfill's name, and bounded by its `max_active`).
const MAX_ACTIVE_PER_TOKEN: i64 = 500;

/// The longest idempotency key a client may give.
const MAX_KEY_BYTES: usize = 256;

/// Where a client's idempotency key `key` for job `job` is stored: keys are per job, and
/// apart from the scheduler's own (`schedule/JOB/TICK`, which backfills share), so that no
/// submission can take another job's key or a schedule's tick.
fn client_key(job: &str, key: &str) -> String {
    format!("job/{job}/{key}")
}

/// Submitted variables: names exactly as the run's process reads them (no trimming there
/// to change what was checked here), and `run_id`, which the service gives, not set.
fn check_vars(vars: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for name in vars.keys() {
        check_name(name).map_err(|message| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message))?;
        if name == "run_id" {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "run_id is the run's id; it cannot be set"));
        }
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobUpload,
    responses((status = 201, description = "A new version", body = StoredJob),
        (status = 200, description = "The same definition as the current version: nothing stored", body = StoredJob),
        (status = "4XX", description = "401, 403 (admin only), 422 (the definition, named as `weir validate` names it)", body = ErrorReply)))]
async fn put_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<JobUpload>, JsonRejection>,
) -> Reply {
    let caller = caller(&state, &headers, Role::Admin)?;
    let Json(body) = body.map_err(bad_body)?;
    check_vars(&body.vars)?;
    let grants = state.checker.grants_of(&caller);
    let (name, _) = state.checker.check(&body.definition, &body.vars, &new_run_id(), grants, false).await?;
    let sha256 = sha256_hex(body.definition.as_bytes());
    let (version, is_new) =
        state.store.put_job(&name, &sha256, &body.definition, &caller.name).map_err(ApiError::internal)?;
    let reply = StoredJob { name: name.clone(), version, sha256: sha256.clone(), created: is_new };
    if is_new {
        audit_event(&state, &caller, "job.put", &name, json!({ "version": version, "sha256": sha256 }))?;
        Ok(created(reply))
    } else {
        Ok(Json(reply).into_response())
    }
}

/// Checks a definition exactly as storing it would (the service's working directory, keys
/// and stores, the caller's grants), and stores nothing: `weir validate --as-service`.
#[utoipa::path(post, path = "/v1/check", tag = "jobs", request_body = JobUpload,
    responses((status = 200, body = CheckedJob), (status = "4XX", description = "401, 403, 422", body = ErrorReply)))]
async fn check_definition(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<JobUpload>, JsonRejection>,
) -> Reply {
    let caller = caller(&state, &headers, Role::Submit)?;
    let Json(body) = body.map_err(bad_body)?;
    check_vars(&body.vars)?;
    let grants = state.checker.grants_of(&caller);
    let (name, output_uri) = state.checker.check(&body.definition, &body.vars, &new_run_id(), grants, false).await?;
    require_job(&caller, &name)?;
    Ok(Json(CheckedJob { name, output_uri }).into_response())
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    responses((status = 200, description = "The jobs the token may see", body = JobList), (status = "4XX", body = ErrorReply)))]
async fn list_jobs(State(state): State<AppState>, headers: HeaderMap) -> Reply {
    let caller = caller(&state, &headers, Role::Read)?;
    let jobs = state
        .store
        .jobs()
        .map_err(ApiError::internal)?
        .into_iter()
        .filter(|job| caller.may_touch(&job.name))
        .map(|job| JobSummary { name: job.name, version: job.version, sha256: job.sha256, updated_at: job.created_at })
        .collect();
    Ok(Json(JobList { jobs }).into_response())
}

#[utoipa::path(get, path = "/v1/jobs/{name}", tag = "jobs", params(("name" = String, Path)),
    responses((status = 200, body = JobDetail), (status = "4XX", description = "401, 403, 404", body = ErrorReply)))]
async fn show_job(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Reply {
    let caller = caller(&state, &headers, Role::Read)?;
    require_job(&caller, &name)?;
    let current = stored_job(&state, &name, None)?;
    let versions = state.store.job_versions(&name).map_err(ApiError::internal)?;
    Ok(Json(JobDetail {
        name,
        version: current.version,
        sha256: current.sha256,
        definition: current.definition.unwrap_or_default(),
        versions,
    })
    .into_response())
}

#[utoipa::path(get, path = "/v1/jobs/{name}/versions/{version}", tag = "jobs",
    params(("name" = String, Path), ("version" = i64, Path)),
    responses((status = 200, description = "The version, with its definition", body = JobVersion),
        (status = "4XX", description = "401, 403, 404", body = ErrorReply)))]
async fn show_job_version(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, i64)>,
) -> Reply {
    let caller = caller(&state, &headers, Role::Read)?;
    require_job(&caller, &name)?;
    Ok(Json(stored_job(&state, &name, Some(version))?).into_response())
}

#[utoipa::path(post, path = "/v1/jobs/{name}/rollback", tag = "jobs", params(("name" = String, Path)), request_body = Rollback,
    responses((status = 200, description = "The job, with the version made current", body = JobDetail),
        (status = "4XX", description = "401, 403 (admin only), 404", body = ErrorReply)))]
async fn rollback_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<Rollback>, JsonRejection>,
) -> Reply {
    let caller = caller(&state, &headers, Role::Admin)?;
    let Json(body) = body.map_err(bad_body)?;
    if !state.store.rollback_job(&name, body.version).map_err(ApiError::internal)? {
        return Err(ApiError::not_found(format_args!("version {} of job '{name}'", body.version)));
    }
    audit_event(&state, &caller, "job.rollback", &name, json!({ "version": body.version }))?;
    show_job(State(state), headers, Path(name)).await
}

#[utoipa::path(post, path = "/v1/jobs/{name}/backfill", tag = "jobs", params(("name" = String, Path)), request_body = BackfillRequest,
    responses((status = 201, description = "Started", body = BackfillReply), (status = 200, description = "A dry run's plan", body = BackfillReply),
        (status = "4XX", description = "401, 403, 404, 422 (dates, a range too long, an interval not ended)", body = ErrorReply)))]
async fn backfill_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<BackfillRequest>, JsonRejection>,
) -> Reply {
    let caller = caller(&state, &headers, Role::Submit)?;
    let Json(body) = body.map_err(bad_body)?;
    require_job(&caller, &name)?;
    let version = stored_job(&state, &name, None)?;
    let definition = version.definition.clone().unwrap_or_default();
    let ticks = backfill::plan(
        &state.store,
        &name,
        &definition,
        (body.from, body.to),
        body.reprocess,
        state.scheduler.now(),
        body.include_incomplete,
    )
    .map_err(|message| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message))?;
    if body.dry_run {
        let runs = ticks.iter().filter(|tick| tick.will_run).count() as i64;
        return Ok(Json(BackfillReply { id: None, job: name, version: version.version, dry_run: true, runs, ticks })
            .into_response());
    }
    let max_active = body.max_active.unwrap_or(1).clamp(1, 64);
    let started = backfill::start(&state.store, &name, version.version, &ticks, max_active, &caller.name)
        .map_err(ApiError::internal)?;
    audit_event(
        &state,
        &caller,
        "job.backfill",
        &name,
        json!({ "id": started.id, "from": body.from, "to": body.to, "reprocess": body.reprocess, "runs": started.total }),
    )?;
    state.scheduler.wake();
    Ok(created(BackfillReply {
        id: Some(started.id),
        job: name,
        version: version.version,
        dry_run: false,
        runs: started.total,
        ticks,
    }))
}

// --- runs ---

#[utoipa::path(post, path = "/v1/runs", tag = "runs", request_body = Submission,
    responses((status = 201, description = "Queued", body = Run),
        (status = 200, description = "The run an earlier submission with this idempotency key made", body = Run),
        (status = "4XX", description = "401, 403, 404 (no such job or version), 409 (the idempotency key was used for something else), 422, 429 (too many active runs)", body = ErrorReply)))]
async fn submit_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Submission>, JsonRejection>,
) -> Reply {
    let caller = caller(&state, &headers, Role::Submit)?;
    let Json(body) = body.map_err(bad_body)?;
    check_vars(&body.vars)?;
    if body.idempotency_key.as_ref().is_some_and(|key| key.is_empty() || key.len() > MAX_KEY_BYTES) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("an idempotency key is 1 to {MAX_KEY_BYTES} bytes"),
        ));
    }
    if body.workers.is_some_and(|w| !(1..=256).contains(&w)) {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "workers must be between 1 and 256"));
    }
    let (definition, job_version) = match (&body.job, &body.definition) {
        (Some(name), None) => {
            require_job(&caller, name)?;
            let found = stored_job(&state, name, body.version)?;
            (found.definition.unwrap_or_default(), Some(found.version))
        }
        (None, Some(definition)) if body.version.is_none() => {
            if caller.role < Role::Admin && !caller.inline {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "token '{}' may not submit an inline definition: submit a stored job by name (an admin stores it with `weir jobs put`), or use a token created with --inline",
                        caller.name
                    ),
                ));
            }
            // The job's name as written, checked against the token's jobs before the checker
            // reads anything the definition names (and again, substituted, after).
            if let Some(name) = toml::from_str::<toml::Table>(definition)
                .ok()
                .and_then(|table| table.get("name").and_then(|name| name.as_str().map(str::to_string)))
                .filter(|name| !name.contains("{{"))
            {
                require_job(&caller, &name)?;
            }
            (definition.clone(), None)
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "give either 'job' (a stored job's name, and optionally 'version') or 'definition' (a job's TOML)",
            ));
        }
    };
    let id = new_run_id();
    let grants = state.checker.grants_of(&caller);
    let (name, output_uri) = state.checker.check(&definition, &body.vars, &id, grants, true).await?;
    require_job(&caller, &name)?;
    let waiting = state.store.active_runs_by(&caller.name).map_err(ApiError::internal)?;
    if waiting >= MAX_ACTIVE_PER_TOKEN {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "token '{}' has {waiting} runs queued or running, the most one token may have; submit more when some have ended",
                caller.name
            ),
        ));
    }
    let run = NewRun {
        id,
        job: name.clone(),
        job_version,
        job_sha256: sha256_hex(definition.as_bytes()),
        definition,
        vars: body.vars.into_iter().map(|(k, v)| (k, Value::String(v))).collect(),
        idempotency_key: body.idempotency_key.as_deref().map(|key| client_key(&name, key)),
        submitted_by: caller.name.clone(),
        workers: body.workers,
        output_uri,
        attempt: 1,
        retry_of: None,
        not_before: None,
        allowed_keys: caller.keys.clone(),
    };
    match state.store.insert_run(&run).map_err(ApiError::internal)? {
        Inserted::New(stored) => {
            audit_event(
                &state,
                &caller,
                "run.submit",
                &stored.id,
                json!({ "job": stored.job, "version": stored.job_version }),
            )?;
            state.scheduler.wake();
            Ok(created(stored))
        }
        Inserted::Existing(existing) => Ok(Json(existing).into_response()),
        Inserted::Conflict(other) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("idempotency key already used by run {other} for another definition or other variables"),
        )),
    }
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(RunFilter),
    responses((status = 200, description = "Newest first, `limit` (1 to 500, default 50) a page", body = RunList),
        (status = "4XX", description = "401, 422 (an unknown state)", body = ErrorReply)))]
async fn list_runs(
    State(state): State<AppState>,
    headers: HeaderMap,
    filter: Result<Query<RunFilter>, QueryRejection>,
) -> Reply {
    let caller = caller(&state, &headers, Role::Read)?;
    let Query(filter) = filter.map_err(bad_query)?;
    if let Some(wanted) = &filter.state
        && RunState::parse(wanted).is_none()
    {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("unknown state '{wanted}'")));
    }
    let runs = state.store.runs(&filter, caller.jobs.as_deref()).map_err(ApiError::internal)?;
    let limit = filter.limit.unwrap_or(50).clamp(1, 500);
    let next = (runs.len() == limit).then(|| runs.last().map(|run| run.id.clone())).flatten();
    Ok(Json(RunList { runs, next }).into_response())
}

/// A stored job's version (`None`: the current one), or 404.
fn stored_job(state: &AppState, name: &str, version: Option<i64>) -> Result<JobVersion, ApiError> {
    state.store.job_version(name, version).map_err(ApiError::internal)?.ok_or_else(|| match version {
        Some(version) => ApiError::not_found(format_args!("version {version} of job '{name}'")),
        None => ApiError::not_found(format_args!("job '{name}'")),
    })
}

fn find_run(state: &AppState, caller: &TokenInfo, id: &str) -> Result<Run, ApiError> {
    let run = state
        .store
        .run(id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format_args!("run '{id}'")))?;
    require_job(caller, &run.job)?;
    Ok(run)
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Run), (status = "4XX", description = "401, 403, 404", body = ErrorReply)))]
async fn show_run(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let caller = caller(&state, &headers, Role::Read)?;
    Ok(Json(find_run(&state, &caller, &id)?).into_response())
}

/// Bytes of `path` from `offset` (at most 1 MiB at a time).
async fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut file) = tokio::fs::File::open(path).await else { return Vec::new() };
    if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    let _ = file.take(1 << 20).read_to_end(&mut bytes).await;
    bytes
}

#[utoipa::path(get, path = "/v1/runs/{id}/logs", tag = "runs", params(("id" = String, Path), LogQuery),
    responses((status = 200, description = "The log's bytes from `offset` (with `follow`, streamed until the run has ended)", content_type = "text/plain", body = String,
            headers(("x-weir-next-offset" = u64, description = "Without `follow`: the offset to ask for next"))),
        (status = "4XX", description = "401, 403, 404", body = ErrorReply)))]
async fn run_logs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Reply {
    let caller = caller(&state, &headers, Role::Read)?;
    let Query(query) = query.map_err(bad_query)?;
    let run = find_run(&state, &caller, &id)?;
    let path = state.scheduler.log_path(&run.id);
    if !query.follow {
        let bytes = read_from(&path, query.offset).await;
        let next = query.offset + bytes.len() as u64;
        let mut response = Response::new(Body::from(bytes));
        response.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
        response.headers_mut().insert("x-weir-next-offset", HeaderValue::from(next));
        return Ok(response);
    }
    // Follow: stream what the log gains until the run is over and the log is drained.
    let store = state.store.clone();
    let stream = futures::stream::unfold((query.offset, false), move |(offset, done)| {
        let (store, path, id) = (store.clone(), path.clone(), id.clone());
        async move {
            if done {
                return None;
            }
            loop {
                let finished = store.run(&id).ok().flatten().is_none_or(|run| run.state.is_terminal());
                let bytes = read_from(&path, offset).await;
                if !bytes.is_empty() {
                    let next = offset + bytes.len() as u64;
                    return Some((Ok::<_, std::io::Error>(bytes), (next, false)));
                }
                if finished {
                    return None;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(response)
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, description = "The run: cancelled if it was queued, `cancel_requested` if it was running", body = Run),
        (status = "4XX", description = "401, 403, 404, 409 (it has already ended)", body = ErrorReply)))]
async fn cancel_run(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let caller = caller(&state, &headers, Role::Submit)?;
    let run = find_run(&state, &caller, &id)?;
    if run.state.is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {id} has already ended ({})", run.state.as_str()),
        ));
    }
    audit_event(&state, &caller, "run.cancel", &id, json!({ "state": run.state }))?;
    let cancelled_queued = state.store.cancel_queued(&id).map_err(ApiError::internal)?;
    if !cancelled_queued {
        state.store.request_cancel(&id).map_err(ApiError::internal)?;
        if let Some(running) = state.store.run(&id).map_err(ApiError::internal)? {
            state.scheduler.cancel_running(&running);
        }
    }
    Ok(Json(find_run(&state, &caller, &id)?).into_response())
}

#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, description = "The stored jobs with a schedule that the token may see", body = ScheduleList),
        (status = "4XX", body = ErrorReply)))]
async fn list_schedules(State(state): State<AppState>, headers: HeaderMap) -> Reply {
    let caller = caller(&state, &headers, Role::Read)?;
    let now = state.scheduler.now();
    let schedules =
        super::schedules::overview(&state.store, now, |job| caller.may_touch(job)).map_err(ApiError::internal)?;
    Ok(Json(ScheduleList { schedules }).into_response())
}

/// Pauses a job's schedule whatever its definition says: its ticks are skipped for good
/// until it is resumed, which fires nothing until the next tick (as `paused = true`).
#[utoipa::path(post, path = "/v1/schedules/{job}/pause", tag = "schedules", params(("job" = String, Path)),
    responses((status = 200, body = ScheduleInfo), (status = "4XX", description = "401, 403 (admin only), 404", body = ErrorReply)))]
async fn pause_schedule(State(state): State<AppState>, headers: HeaderMap, Path(job): Path<String>) -> Reply {
    set_schedule_paused(state, headers, job, true).await
}

#[utoipa::path(post, path = "/v1/schedules/{job}/resume", tag = "schedules", params(("job" = String, Path)),
    responses((status = 200, body = ScheduleInfo), (status = "4XX", description = "401, 403 (admin only), 404", body = ErrorReply)))]
async fn resume_schedule(State(state): State<AppState>, headers: HeaderMap, Path(job): Path<String>) -> Reply {
    set_schedule_paused(state, headers, job, false).await
}

async fn set_schedule_paused(state: AppState, headers: HeaderMap, job: String, pause: bool) -> Reply {
    let caller = caller(&state, &headers, Role::Admin)?;
    let by = pause.then_some(caller.name.as_str());
    if !state.store.set_schedule_paused(&job, by).map_err(ApiError::internal)? {
        // Not seen by the scheduler yet: its schedule starts now, as at the scheduler's
        // first sight of it.
        let scheduled = stored_job(&state, &job, None)?
            .definition
            .is_some_and(|definition| super::schedules::schedule_of(&definition).is_some());
        if !scheduled {
            return Err(ApiError::not_found(format_args!("schedule of job '{job}' (its definition has none)")));
        }
        state.store.set_schedule_last_tick(&job, state.scheduler.now()).map_err(ApiError::internal)?;
        state.store.set_schedule_paused(&job, by).map_err(ApiError::internal)?;
    }
    audit_event(&state, &caller, if pause { "schedule.pause" } else { "schedule.resume" }, &job, json!({}))?;
    let now = state.scheduler.now();
    let schedule = super::schedules::overview(&state.store, now, |name| name == job)
        .map_err(ApiError::internal)?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format_args!("schedule of job '{job}'")))?;
    Ok(Json(schedule).into_response())
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = "4XX", description = "401, 403 (admin only)", body = ErrorReply)))]
async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Reply {
    caller(&state, &headers, Role::Admin)?;
    let Query(query) = query.map_err(bad_query)?;
    let events = state.store.audit_events(query.limit.unwrap_or(200).clamp(1, 10_000)).map_err(ApiError::internal)?;
    Ok(Json(AuditList { events }).into_response())
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Reply {
    // The counts are the whole service's: not for a token limited to some jobs.
    let caller = caller(&state, &headers, Role::Read)?;
    if caller.jobs.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "/metrics counts every job's runs; a token limited to some jobs may not read it",
        ));
    }
    let counts = state.store.counts().map_err(ApiError::internal)?;
    let mut text = String::from("# HELP weir_runs Runs in the history, by state.\n# TYPE weir_runs gauge\n");
    for state_name in ["queued", "running", "succeeded", "failed", "cancelled", "lost", "skipped"] {
        let count = counts.by_state.iter().find(|(s, _)| s == state_name).map(|(_, n)| *n).unwrap_or(0);
        text.push_str(&format!("weir_runs{{state=\"{state_name}\"}} {count}\n"));
    }
    let queued = counts.by_state.iter().find(|(s, _)| s == "queued").map(|(_, n)| *n).unwrap_or(0);
    text.push_str(&format!(
        "# HELP weir_queue_length Runs waiting to start.\n# TYPE weir_queue_length gauge\nweir_queue_length {queued}\n"
    ));
    text.push_str(&format!(
        "# HELP weir_runs_started_total Runs started.\n# TYPE weir_runs_started_total counter\nweir_runs_started_total {}\n",
        counts.started
    ));
    text.push_str(&format!(
        "# HELP weir_rows_written_total Rows committed by succeeded runs.\n# TYPE weir_rows_written_total counter\nweir_rows_written_total {}\n",
        counts.rows_written
    ));
    text.push_str(&format!(
        "# HELP weir_run_duration_seconds Durations of finished runs.\n# TYPE weir_run_duration_seconds summary\nweir_run_duration_seconds_sum {}\nweir_run_duration_seconds_count {}\n",
        counts.duration_sum_s, counts.finished
    ));
    let jobs = state.store.job_counts().map_err(ApiError::internal)?;
    // Job names are [a-z0-9_-]+: nothing in a label value needs escaping.
    text.push_str(
        "# HELP weir_job_runs_total Runs of each job that ended, by state.\n# TYPE weir_job_runs_total counter\n",
    );
    for job in &jobs {
        for state_name in ["succeeded", "failed", "cancelled", "lost", "skipped"] {
            let count = job.by_state.iter().find(|(s, _)| s == state_name).map(|(_, n)| *n).unwrap_or(0);
            text.push_str(&format!("weir_job_runs_total{{job=\"{}\",state=\"{state_name}\"}} {count}\n", job.job));
        }
    }
    text.push_str(
        "# HELP weir_job_last_success_timestamp_seconds When each job's latest succeeded run finished (Unix time).\n# TYPE weir_job_last_success_timestamp_seconds gauge\n",
    );
    for job in &jobs {
        let Some(at) = job.last_success.as_deref().and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok()) else {
            continue;
        };
        let seconds = at.timestamp_millis() as f64 / 1000.0;
        text.push_str(&format!("weir_job_last_success_timestamp_seconds{{job=\"{}\"}} {seconds}\n", job.job));
    }
    text.push_str(
        "# HELP weir_schedule_missed_total Ticks each job's schedule missed (catch-up policy, or too late), not those a pause skipped.\n# TYPE weir_schedule_missed_total counter\n",
    );
    for job in jobs.iter().filter(|job| job.scheduled) {
        text.push_str(&format!("weir_schedule_missed_total{{job=\"{}\"}} {}\n", job.job, job.missed_ticks));
    }
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; version=0.0.4"));
    Ok(response)
}
