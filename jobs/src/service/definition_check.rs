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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::api_error::ApiError;
use crate::planning::{RunOptions, load_job_text, plan_job};
use crate::vars::Variables;
use weir_engine::FailureKind;

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
}

/// What the checker answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckReply {
    /// The job's name and its output's URI.
    Valid { name: String, output_uri: String },
    /// Why the definition is refused.
    Invalid { message: String },
}

/// A definition, checked as `weir validate` checks a file (spec, variables, source, steps),
/// except that a source with no data yet passes (the run waits for it: the job's
/// `wait_for_input_s`). Runs in the checker's process.
fn check(request: CheckRequest, runtime: &tokio::runtime::Runtime) -> CheckReply {
    let variables = Variables::new(&request.vars);
    let checked = load_job_text("definition", &request.definition, &variables).and_then(|job| {
        match runtime.block_on(plan_job(&job, &RunOptions::default())) {
            Ok(plan) => Ok((job.spec.name.clone(), plan.sink.uri())),
            Err(error) if error.to_failure().kind == FailureKind::InputNotReady => {
                let sink = weir_connectors::Location::parse(&job.spec.sink.uri, &job.spec.storage)
                    .map(|location| location.uri())
                    .unwrap_or_else(|_| job.spec.sink.uri.clone());
                Ok((job.spec.name.clone(), sink))
            }
            Err(error) => Err(error),
        }
    });
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
}

impl DefinitionChecker {
    pub fn new(binary: PathBuf, timeout: Duration) -> DefinitionChecker {
        DefinitionChecker { binary, timeout, slots: tokio::sync::Semaphore::new(SLOTS) }
    }

    /// Checks `definition` with `vars` and the run id `run_id`; returns the job's name and
    /// its output's URI, or the reply to give (422 for a definition that is refused, crashed
    /// its checker or outlasted the deadline; 503 when every checker stayed busy).
    pub async fn check(
        &self,
        definition: &str,
        vars: &BTreeMap<String, String>,
        run_id: &str,
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
        let request = serde_json::to_vec(&CheckRequest { definition: definition.to_string(), vars: pairs })
            .map_err(ApiError::internal)?;
        let mut child = tokio::process::Command::new(&self.binary)
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
