//! Submitted definitions are checked out of the service's process. Checking a definition
//! means parsing hostile TOML, reading the footers of whatever its source names and the
//! bytes of its model: a deep structure can overflow a stack, a FIFO or a slow store can
//! block forever, and a huge file can take the memory. Done inside `weir serve`, any of
//! these took the whole service down or wedged its blocking pool; done here, it costs one
//! child process that is killed at a deadline.
//!
//! [`DefinitionChecker::check`] starts `weir check-definition` (a hidden subcommand that
//! runs [`child_main`]), writes a [`CheckRequest`] to its stdin as JSON and reads one
//! [`CheckReply`] from its stdout, within `timeout` and at most [`MAX_REPLY_BYTES`]. At most
//! `slots` checks run at once; a request that finds none free within the timeout is
//! answered 503. The child inherits the service's working directory and environment, so it
//! resolves paths and reads stores exactly as the run's own process will.
//!
//! Before it reads anything, the checker holds every place the parsed definition names
//! (source, sink, models, `fitted`, `[storage] endpoint`) against the caller's [`Grants`]:
//! a token's URI prefixes, the endpoints the service allows, and never the service's own
//! state folder. What falls outside is refused with a 403 naming the field.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::api_error::ApiError;
use weir_engine::FailureKind;
use weir_jobs::planning::{RunOptions, load_job_text, plan_job};
use weir_jobs::vars::Variables;

/// The longest reply read from a checker.
pub const MAX_REPLY_BYTES: u64 = 1 << 20;
/// The longest request a checker reads (a definition is bounded by the HTTP body limit).
const MAX_REQUEST_BYTES: u64 = 8 << 20;
/// Default deadline of one check (`weir serve --check-timeout-s`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Checks that run at once.
const SLOTS: usize = 4;

/// What the checker is asked.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub definition: String,
    /// Every variable of the run, `run_id` included.
    pub vars: Vec<(String, String)>,
    pub grants: Grants,
    /// A run is being submitted (else a job stored): a run needs its date, a stored job
    /// gets it from each run later.
    pub for_run: bool,
}

/// What the caller's token lets a definition touch, checked on the parsed definition
/// before anything is read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// URI prefixes that every source, sink, model and `fitted` must lie under; `None`: any.
    pub prefixes: Option<Vec<String>>,
    /// The `[storage] endpoint`s a definition may name; `None`: any.
    pub endpoints: Option<Vec<String>>,
    /// Folders no definition may touch, whoever sends it (the service's state folder).
    pub refused: Vec<String>,
    /// The key ids a definition may name or use; `None`: any the service holds.
    pub keys: Option<Vec<String>>,
    /// The storage profiles a definition may name; `None`: any.
    #[serde(default)]
    pub profiles: Option<Vec<String>>,
    /// The service has storage profiles and the caller is no admin: a definition reaches
    /// object stores through a profile only.
    #[serde(default)]
    pub require_profile: bool,
}

/// What the checker answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckReply {
    /// The job's name and its output's URI.
    Valid { name: String, output_uri: String },
    /// Why the definition is refused.
    Invalid { message: String },
    /// What the definition names that the caller's token does not grant.
    Forbidden { message: String },
}

/// Whether planning failed because the source holds no data files at all.
fn holds_nothing(error: &weir_jobs::JobError) -> bool {
    matches!(error, weir_jobs::JobError::Connector { what: "source", source, .. }
        if matches!(**source, weir_connectors::ConnectorError::NoDataFiles { .. }))
}

/// Whether `uri` is a relative local path (no scheme, not absolute).
fn is_relative(uri: &str) -> bool {
    !uri.contains("://") && !std::path::Path::new(uri).is_absolute()
}

/// `uri` as [`weir_connectors::Location`] spells it (relative paths made absolute against
/// the working directory, symlinks resolved), without a trailing `/`.
fn normalized(uri: &str, storage: &weir_connectors::StorageOptions) -> Option<String> {
    let location = weir_connectors::Location::parse(uri, storage).ok()?;
    // A `..` left past the longest existing ancestor (whose links Location resolved) is
    // refused by the parse itself, so what is compared here has none.
    Some(location.uri().trim_end_matches('/').to_string())
}

/// Whether `uri` is `prefix` or lies below it (whole path segments).
fn lies_under(uri: &str, prefix: &str) -> bool {
    uri == prefix || uri.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// Checks every place the job reads or writes against `grants`; the error names the field.
fn check_grants(spec: &weir_jobs::spec::JobSpec, grants: &Grants) -> Result<(), String> {
    match (&spec.storage.profile, &grants.profiles) {
        (Some(profile), Some(granted)) if !granted.contains(profile) => {
            return Err(format!(
                "storage.profile '{profile}' is not a profile this token may use (granted: {})",
                if granted.is_empty() { "none".to_string() } else { granted.join(", ") }
            ));
        }
        (None, _) if grants.require_profile => {
            if let Some((field, uri)) = spec.places().into_iter().find(|(_, uri)| uri.starts_with("s3://")) {
                return Err(format!(
                    "{field} '{uri}' is in an object store, which this service reaches through storage profiles only: \
                     name one with [storage] profile = \"…\""
                ));
            }
        }
        _ => {}
    }
    // A profile's endpoint is the administrator's; a job with one names none of its own.
    if let (None, Some(endpoint), Some(allowed)) = (&spec.storage.profile, &spec.storage.endpoint, &grants.endpoints)
        && !allowed.iter().any(|a| a.trim_end_matches('/') == endpoint.trim_end_matches('/'))
    {
        return Err(format!(
            "storage.endpoint '{endpoint}' is not an endpoint this service may contact for this token \
             (allowed: {})",
            if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
        ));
    }
    if let (Some(encryption), Some(allowed)) = (&spec.sink.encryption, &grants.keys) {
        let named = std::iter::once(&encryption.footer_key).chain(encryption.column_keys.keys());
        for id in named {
            if !allowed.contains(id) {
                return Err(format!("sink.encryption names key '{id}', which this token may not use"));
            }
        }
    }
    let places = spec.places();
    let defaults = weir_connectors::StorageOptions::default();
    let refused: Vec<String> = grants.refused.iter().filter_map(|folder| normalized(folder, &defaults)).collect();
    let granted: Option<Vec<String>> =
        grants.prefixes.as_ref().map(|prefixes| prefixes.iter().filter_map(|p| normalized(p, &defaults)).collect());
    for (field, uri) in places {
        // A place that does not parse is refused by planning (422), before any read.
        let Some(at) = normalized(uri, &spec.storage) else { continue };
        if refused.iter().any(|folder| lies_under(&at, folder)) {
            return Err(format!("{field} '{uri}' lies in the job service's own state folder, which no job may touch"));
        }
        if let Some(granted) = &granted
            && !granted.iter().any(|prefix| lies_under(&at, prefix))
        {
            return Err(format!(
                "{field} '{uri}' is outside the prefixes this token may use ({})",
                if granted.is_empty() { "none".to_string() } else { granted.join(", ") }
            ));
        }
    }
    Ok(())
}

/// A definition, checked as `weir validate` checks a file (spec, variables, source, steps),
/// except that a source with no data yet passes (the run waits for it: the job's
/// `wait_for_input_s`). Runs in the checker's process.
fn check(request: CheckRequest, runtime: &tokio::runtime::Runtime) -> CheckReply {
    // A name the job's [vars] does not declare is refused first, whatever the purpose.
    let names = request.vars.iter().map(|(name, _)| name.as_str());
    if let Err(message) = weir_jobs::declared_vars::check_names(&request.definition, names) {
        return CheckReply::Invalid { message };
    }
    // `ds` as the run's own process will read it (the latest complete interval of the
    // job's schedule, when the submission does not give it).
    let vars = match weir_jobs::schedule::with_run_date(&request.definition, request.vars.clone(), chrono::Utc::now()) {
        Ok(vars) => vars,
        Err(message) if request.for_run => return CheckReply::Invalid { message },
        // A stored job without a schedule is checked with today's date; its runs bring theirs.
        Err(_) => request.vars,
    };
    let variables = Variables::new(&vars);
    let job = match load_job_text("definition", &request.definition, &variables) {
        Ok(job) => job,
        Err(error) => return CheckReply::Invalid { message: error.to_failure().message },
    };
    if let Err(message) = check_grants(&job.spec, &request.grants) {
        return CheckReply::Forbidden { message };
    }
    let checked = match runtime.block_on(plan_job(&job, &RunOptions::default())) {
        Ok(plan) => Ok((job.spec.name.clone(), plan.sink.uri())),
        // A relative source resolves against the service's working directory, not the
        // folder its author had in mind: one that finds nothing there is refused rather than
        // stored (or queued) to fail as "input not ready" for an hour of retries.
        Err(error) if holds_nothing(&error) && is_relative(&job.spec.source.uri) => {
            let here = std::env::current_dir().map(|dir| dir.display().to_string()).unwrap_or_default();
            Err(weir_jobs::JobError::Invalid {
                job: job.spec.name.clone(),
                message: format!(
                    "source.uri '{}' is a relative path, which the job service resolves against its own working \
                     directory ({here}), where it holds no data: write an absolute path or a URI \
                     ({})",
                    job.spec.source.uri,
                    error.to_failure().message
                ),
            })
        }
        Err(error) if error.to_failure().kind == FailureKind::InputNotReady => {
            let sink = weir_connectors::Location::parse(&job.spec.sink.uri, &job.spec.storage)
                .map(|location| location.uri())
                .unwrap_or_else(|_| job.spec.sink.uri.clone());
            Ok((job.spec.name.clone(), sink))
        }
        Err(error) => Err(error),
    };
    match checked {
        Ok((name, output_uri)) => CheckReply::Valid { name, output_uri },
        Err(error) => CheckReply::Invalid { message: error.to_failure().message },
    }
}

/// `weir check-definition`: reads a [`CheckRequest`] from stdin, writes a [`CheckReply`] to
/// stdout. Exits 0 when it could answer, 1 otherwise.
pub fn child_main() -> ExitCode {
    use std::io::{Read, Write};
    let mut text = String::new();
    if std::io::stdin().take(MAX_REQUEST_BYTES).read_to_string(&mut text).is_err() {
        return ExitCode::from(1);
    }
    let Ok(request) = serde_json::from_str::<CheckRequest>(&text) else { return ExitCode::from(1) };
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() else {
        return ExitCode::from(1);
    };
    let reply = check(request, &runtime);
    let Ok(json) = serde_json::to_string(&reply) else { return ExitCode::from(1) };
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(json.as_bytes()).and_then(|()| stdout.flush()).is_err() {
        return ExitCode::from(1);
    }
    // Whatever the runtime still holds (a read that never returns) is not waited for.
    runtime.shutdown_background();
    ExitCode::SUCCESS
}

/// Starts checkers: the service's own binary, one process per check.
pub struct DefinitionChecker {
    binary: PathBuf,
    timeout: Duration,
    slots: tokio::sync::Semaphore,
    /// The service's state folder: refused to every definition.
    state_dir: PathBuf,
    /// The `[storage] endpoint`s a definition from a token other than an admin's may name.
    endpoints: Vec<String>,
    /// The storage profiles file, when the service has one.
    profiles: Option<PathBuf>,
}

impl DefinitionChecker {
    pub fn new(binary: PathBuf, timeout: Duration, state_dir: PathBuf, endpoints: Vec<String>) -> DefinitionChecker {
        let state_dir = std::path::absolute(&state_dir).unwrap_or(state_dir);
        DefinitionChecker {
            binary,
            timeout,
            slots: tokio::sync::Semaphore::new(SLOTS),
            state_dir,
            endpoints,
            profiles: None,
        }
    }

    /// The checker of a service with storage profiles (`None`: without).
    pub fn with_profiles(mut self, profiles: Option<PathBuf>) -> DefinitionChecker {
        self.profiles = profiles;
        self
    }

    /// What `caller` grants: its prefixes; the endpoints the service allows unless it is an
    /// admin's; never the state folder.
    pub fn grants_of(&self, caller: &super::store::TokenInfo) -> Grants {
        Grants {
            prefixes: caller.prefixes.clone(),
            endpoints: (caller.role != super::store::Role::Admin).then(|| self.endpoints.clone()),
            refused: vec![self.state_dir.to_string_lossy().into_owned()],
            keys: caller.keys.clone(),
            profiles: caller.profiles.clone(),
            require_profile: self.profiles.is_some() && caller.role != super::store::Role::Admin,
        }
    }

    /// Checks `definition` with `vars` and the run id `run_id`; returns the job's name and
    /// its output's URI, or the reply to give (422 for a definition that is refused, crashed
    /// its checker or outlasted the deadline; 503 when every checker stayed busy).
    pub async fn check(
        &self,
        definition: &str,
        vars: &BTreeMap<String, String>,
        run_id: &str,
        grants: Grants,
        for_run: bool,
    ) -> Result<(String, String), ApiError> {
        let seconds = self.timeout.as_secs_f64();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let _slot = match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("every definition checker stayed busy for {seconds} s; try again later"),
                ));
            }
        };
        let mut pairs: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        pairs.push(("run_id".into(), run_id.into()));
        let mut command = tokio::process::Command::new(&self.binary);
        super::executor::limit_keys(&mut command, grants.keys.as_deref());
        super::executor::pass_profiles(&mut command, self.profiles.as_deref());
        let request =
            serde_json::to_vec(&CheckRequest { definition: definition.to_string(), vars: pairs, grants, for_run })
                .map_err(ApiError::internal)?;
        let mut child = command
            .arg("check-definition")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| ApiError::internal(format!("cannot start a definition checker: {error}")))?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(ApiError::internal("a definition checker has no stdin or stdout"));
        };
        let exchange = async {
            // A checker that dies before reading its request is reported by its exit below.
            let _ = stdin.write_all(&request).await;
            drop(stdin);
            let mut reply = Vec::new();
            let _ = stdout.take(MAX_REPLY_BYTES).read_to_end(&mut reply).await;
            (reply, child.wait().await)
        };
        let (reply, status) = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(done) => done,
            Err(_) => {
                // kill_on_drop ends the checker (a FIFO's open, a store that never answers).
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "checking the definition took longer than {seconds} s (does its source, model or fitted \
                         file name something that never answers, such as a FIFO?); it is refused"
                    ),
                ));
            }
        };
        match serde_json::from_slice::<CheckReply>(&reply) {
            Ok(CheckReply::Valid { name, output_uri }) => Ok((name, output_uri)),
            Ok(CheckReply::Invalid { message }) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)),
            Ok(CheckReply::Forbidden { message }) => Err(ApiError::new(StatusCode::FORBIDDEN, message)),
            Err(_) => {
                use std::os::unix::process::ExitStatusExt;
                let how = match status {
                    Ok(status) => match (status.code(), status.signal()) {
                        (_, Some(signal)) => format!("was killed by signal {signal}"),
                        (Some(code), _) => format!("exited with {code}"),
                        _ => "ended".to_string(),
                    },
                    Err(error) => format!("could not be waited for ({error})"),
                };
                Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "checking the definition failed: its checker {how} without an answer (a structure nested \
                         too deep, or too large to read?); it is refused"
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(lies_under("file:///data/mine", "file:///data/mine"));
        assert!(lies_under("file:///data/mine/out", "file:///data/mine"));
        assert!(!lies_under("file:///data/mine2/out", "file:///data/mine"));
        assert!(!lies_under("s3://bucket/minefield", "s3://bucket/mine"));
    }

    #[test]
    fn every_place_is_checked_and_named() {
        let text = "name = \"t\"\nfitted = \"/data/theirs/fit\"\n[source]\nuri = \"/data/mine/in\"\n[[step]]\nop = \"impute\"\ncolumns = [\"x\"]\n[sink]\nuri = \"/data/mine/out\"\n";
        let job = load_job_text("t.toml", text, &Variables::new(&[])).unwrap();
        let grants = Grants { prefixes: Some(vec!["/data/mine".into()]), ..Grants::default() };
        let err = check_grants(&job.spec, &grants).unwrap_err();
        assert!(err.starts_with("fitted '/data/theirs/fit'"), "{err}");
        let state = Grants { endpoints: Some(vec![]), refused: vec!["/data/mine/out".into()], ..Grants::default() };
        let err = check_grants(&job.spec, &state).unwrap_err();
        assert!(err.contains("sink.uri") && err.contains("state folder"), "{err}");
        // The rejects output is a place like any other.
        let text = "name = \"t\"\n[source]\nuri = \"/data/mine/in\"\n[[step]]\nop = \"cast\"\ncolumns = { x = \"int64\" }\non_error = \"reject\"\n[sink]\nuri = \"/data/mine/out\"\nrejects = \"/data/theirs/rejects\"\n";
        let job = load_job_text("t.toml", text, &Variables::new(&[])).unwrap();
        let err = check_grants(&job.spec, &grants).unwrap_err();
        assert!(err.starts_with("sink.rejects '/data/theirs/rejects'"), "{err}");
        // So is a join's other input.
        let text = "name = \"t\"\n[source]\nuri = \"/data/mine/in\"\n[inputs.people]\nuri = \"/data/theirs/people\"\n[[step]]\nop = \"join\"\nwith = \"people\"\non = [\"id\"]\n[sink]\nuri = \"/data/mine/out\"\n";
        let job = load_job_text("t.toml", text, &Variables::new(&[])).unwrap();
        let err = check_grants(&job.spec, &grants).unwrap_err();
        assert!(err.starts_with("inputs.people '/data/theirs/people'"), "{err}");
    }
}
