//! The CLI's side of the service: `weir submit`, `runs`, `status`, `logs`, `cancel` and
//! `jobs`, as HTTP calls (ureq, blocking). Replies are read as the API's own types
//! ([`super::api_types`], [`Run`]), the ones the server writes them from. The server comes from `--server` or
//! `WEIR_SERVER` (default `http://127.0.0.1:8470`), the token from `--token`, `WEIR_TOKEN`
//! or `--token-file`; an `https://` server's certificate is checked against the web's roots,
//! or against `--ca-cert` / `WEIR_CA_CERT` when given.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::api_types::{ErrorReply, RunList, Submission};
use super::store::{Run, RunState};

/// The default address of `weir serve`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8470";

/// A failure of a client command: the message, and the exit code (2 for the caller's
/// mistakes, 4xx; 1 for the rest).
#[derive(Debug)]
pub struct ClientError {
    pub message: String,
    pub exit_code: i32,
}

impl ClientError {
    fn other(message: impl Into<String>) -> ClientError {
        ClientError { message: message.into(), exit_code: 1 }
    }
}

/// A connection to a service.
pub struct Client {
    server: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// From flags, then the environment.
    pub fn new(
        server: Option<String>,
        token: Option<String>,
        token_file: Option<String>,
        ca_cert: Option<String>,
    ) -> Result<Client, ClientError> {
        let server = server
            .or_else(|| std::env::var("WEIR_SERVER").ok())
            .unwrap_or_else(|| DEFAULT_SERVER.to_string())
            .trim_end_matches('/')
            .to_string();
        let token = match (token, token_file) {
            (Some(token), _) => Some(token),
            (None, Some(file)) => Some(
                std::fs::read_to_string(&file)
                    .map_err(|error| ClientError::other(format!("cannot read the token file '{file}': {error}")))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => std::env::var("WEIR_TOKEN").ok(),
        };
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = ca_cert.or_else(|| std::env::var("WEIR_CA_CERT").ok()) {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&read_ca_certs(&path)?));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Client { server, token, agent })
    }

    fn authorised<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    fn check(
        &self,
        response: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let mut response = response;
        let message = match response.body_mut().read_json::<ErrorReply>() {
            Ok(reply) => reply.error,
            Err(_) => status.to_string(),
        };
        Err(ClientError { message, exit_code: if status.is_client_error() { 2 } else { 1 } })
    }

    fn unreachable(&self, error: ureq::Error) -> ClientError {
        ClientError::other(format!("cannot reach the service at {}: {error}", self.server))
    }

    /// GET `path`, its reply read as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json_reply(self.authorised(self.agent.get(format!("{}{path}", self.server))).call())
    }

    /// POST `body` to `path` as JSON, its reply read as `T`.
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        self.json_reply(self.authorised(self.agent.post(format!("{}{path}", self.server))).send_json(body))
    }

    fn json_reply<T: DeserializeOwned>(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut response = self.check(sent.map_err(|e| self.unreachable(e))?)?;
        response
            .body_mut()
            .read_json()
            .map_err(|error| ClientError::other(format!("a reply that is not the API's JSON: {error}")))
    }

    /// DELETE `path`; the service answers 204 with no body.
    pub fn delete(&self, path: &str) -> Result<(), ClientError> {
        let sent = self.authorised(self.agent.delete(format!("{}{path}", self.server))).call();
        self.check(sent.map_err(|e| self.unreachable(e))?).map(drop)
    }

    /// Waits until every run of backfill `id` of `job` (`runs` of them, and the retries of
    /// those) has ended; returns the last attempt of each date, oldest date first.
    pub fn wait_backfill(&self, job: &str, id: &str, runs: usize) -> Result<Vec<Run>, ClientError> {
        let submitter = format!("{}{id}", super::store::BACKFILL_PREFIX);
        loop {
            let listed: RunList =
                self.get(&format!("/v1/runs?job={job}&submitted_by={}&limit=500", percent_encode(&submitter)))?;
            let firsts = listed.runs.iter().filter(|run| run.attempt == 1).count();
            if firsts >= runs && listed.runs.iter().all(|run| run.state.is_terminal()) {
                // Newest first: the first run seen for a date is its last attempt.
                let mut last: BTreeMap<String, Run> = BTreeMap::new();
                for run in listed.runs {
                    last.entry(run.logical_date.clone().unwrap_or_default()).or_insert(run);
                }
                return Ok(last.into_values().collect());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Copies a run's log to stdout; with `follow`, until the run ends.
    pub fn logs(&self, run: &str, follow: bool) -> Result<(), ClientError> {
        let url = format!("{}/v1/runs/{run}/logs?offset=0&follow={follow}", self.server);
        let response = self.authorised(self.agent.get(url)).call().map_err(|e| self.unreachable(e))?;
        let response = self.check(response)?;
        let mut reader = response.into_body().into_reader();
        let mut buffer = [0u8; 8192];
        let mut out = std::io::stdout();
        loop {
            let read = reader
                .read(&mut buffer)
                .map_err(|error| ClientError::other(format!("the log stream broke: {error}")))?;
            if read == 0 {
                return Ok(());
            }
            use std::io::Write;
            out.write_all(&buffer[..read]).and_then(|()| out.flush()).map_err(|e| ClientError::other(e.to_string()))?;
        }
    }

    /// Polls a run until it ends, following its retries (the service queues a failed run's
    /// next attempt in the same transaction that records the failure, so a failed attempt
    /// with no next one is final); returns the last attempt. `progress` hears of each
    /// failed attempt that is retried.
    pub fn wait(&self, run: &str, progress: impl Fn(&Run, &str)) -> Result<Run, ClientError> {
        let mut run = run.to_string();
        loop {
            let current: Run = self.get(&format!("/v1/runs/{run}"))?;
            if !current.state.is_terminal() {
                std::thread::sleep(Duration::from_millis(300));
                continue;
            }
            let first = current.retry_of.clone().unwrap_or_else(|| run.clone());
            let retries: RunList = self.get(&format!("/v1/runs?retry_of={first}&limit=500"))?;
            let next = retries.runs.into_iter().find(|r| r.attempt == current.attempt + 1);
            match next {
                Some(next) if current.state == RunState::Failed => {
                    progress(&current, &next.id);
                    run = next.id;
                }
                _ => return Ok(current),
            }
        }
    }
}

/// The body of `POST /v1/runs` for `target`: an existing file is an inline definition,
/// anything else a stored job's name.
pub fn submission(
    target: &str,
    version: Option<i64>,
    vars: &[(String, String)],
    idempotency_key: Option<String>,
) -> Result<Submission, ClientError> {
    let mut body = Submission { vars: vars.iter().cloned().collect(), idempotency_key, ..Submission::default() };
    if std::path::Path::new(target).is_file() {
        let definition = std::fs::read_to_string(target)
            .map_err(|error| ClientError { message: format!("cannot read '{target}': {error}"), exit_code: 2 })?;
        body.definition = Some(definition);
    } else {
        body.job = Some(target.to_string());
        body.version = version;
    }
    Ok(body)
}

/// The exit code `weir submit --wait` ends with for a finished run: 0 succeeded, 2 a user
/// failure, 4 input not ready, 130 cancelled, 1 otherwise.
pub fn exit_code_of(run: &Run) -> i32 {
    match (run.state, run.exit_class.as_deref()) {
        (RunState::Succeeded, _) => 0,
        (RunState::Failed, Some("user")) => 2,
        (RunState::Failed, Some("input_not_ready")) => 4,
        (RunState::Cancelled, _) => 130,
        _ => 1,
    }
}

/// `text` with everything but unreserved URL characters percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// One line about a run, for people.
pub fn describe_run(run: &Run) -> String {
    let number = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    let duration = run.duration_s.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into());
    let mut line = format!(
        "{}  {:<9}  job {} v{}  ds {}  {} #{}  rows {} → {}  {}  submitted {}",
        run.id,
        run.state.as_str(),
        run.job,
        number(run.job_version),
        run.logical_date.as_deref().unwrap_or("-"),
        run.trigger,
        run.attempt,
        number(run.rows_in),
        number(run.rows_out),
        duration,
        run.submitted_at
    );
    if let Some(error) = &run.error {
        line.push_str(&format!("\n    {error}"));
    }
    line
}

/// The CA certificates (PEM) a client trusts for an `https://` service.
fn read_ca_certs(path: &str) -> Result<Vec<ureq::tls::Certificate<'static>>, ClientError> {
    let pem = std::fs::read(path)
        .map_err(|error| ClientError::other(format!("cannot read the CA certificate '{path}': {error}")))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
            Ok(_) => None,
            Err(error) => Some(Err(error)),
        })
        .collect::<Result<_, _>>()
        .map_err(|error| ClientError::other(format!("cannot read the CA certificate '{path}': {error}")))?;
    if certs.is_empty() {
        return Err(ClientError::other(format!("the CA certificate '{path}' holds no PEM certificate")));
    }
    Ok(certs)
}
