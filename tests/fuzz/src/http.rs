//! The `http` target: request bodies (and paths, methods, queries) sent to every endpoint
//! of the job service, in process, through the same router and body-reading middleware
//! `weir serve` serves, with an admin token (so that every handler reads its body) and a
//! history database of its own. An input is `METHOD PATH` on its first line, the body
//! after it. Any status is an answer; a panic or a hang is a finding. Submitted definitions
//! are checked in a child process by design (`weir check-definition`, fuzzed by the `job`
//! target); here the checker's binary does not exist, so those requests end in its error.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, header};
use tower::ServiceExt;
use weir_service::api::AppState;
use weir_service::auth::{AllowedHosts, ensure_admin_token};
use weir_service::clock::SystemClock;
use weir_service::definition_check::DefinitionChecker;
use weir_service::executor::LocalExecutor;
use weir_service::scheduler::Scheduler;
use weir_service::store::Store;

use crate::target::{Outcome, Target};

/// The address the service believes it listens on (its Host check allows it).
const LISTEN: &str = "127.0.0.1:8470";

pub struct HttpTarget {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    token: String,
    /// Holds the history database and the admin token file.
    _state: tempfile::TempDir,
}

impl HttpTarget {
    pub fn new() -> HttpTarget {
        let state = tempfile::tempdir().expect("a temporary folder for the fuzzed service");
        let store = Arc::new(Store::open(&state.path().join("weir.db")).expect("the fuzzed service's database"));
        let token_file = state.path().join("admin.token");
        ensure_admin_token(&store, &token_file).expect("an admin token");
        let token = std::fs::read_to_string(&token_file).expect("the admin token").trim().to_string();
        let missing = state.path().join("no-such-weir");
        let checker = Arc::new(DefinitionChecker::new(
            missing.clone(),
            Duration::from_secs(5),
            state.path().to_path_buf(),
            Vec::new(),
        ));
        let scheduler = Scheduler::new(
            store.clone(),
            Arc::new(LocalExecutor { binary: missing, profiles: None }),
            Arc::new(SystemClock),
            state.path(),
            1,
            Duration::from_secs(1),
        );
        let listen = LISTEN.parse().expect("a socket address");
        let hosts = AllowedHosts::new(listen, &[]);
        let app = weir_service::app(AppState { store, scheduler, hosts, checker });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        HttpTarget { runtime, app, token, _state: state }
    }
}

impl Target for HttpTarget {
    fn run(&mut self, input: &[u8]) -> Outcome {
        let (line, body) = match input.iter().position(|&b| b == b'\n') {
            Some(at) => (&input[..at], &input[at + 1..]),
            None => (input, &[][..]),
        };
        let line = String::from_utf8_lossy(line);
        let (method, path) = line.split_once(' ').unwrap_or(("GET", &line));
        let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Outcome::Refused };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, LISTEN)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_vec()));
        let Ok(request) = request else { return Outcome::Refused };
        let response = self.runtime.block_on(self.app.clone().oneshot(request));
        match response {
            Ok(response) if response.status().is_success() => Outcome::Accepted,
            _ => Outcome::Refused,
        }
    }

    fn dictionary(&self) -> &[&[u8]] {
        &[
            b"POST ",
            b"GET ",
            b"DELETE ",
            b"/v1/runs",
            b"/v1/jobs",
            b"/v1/tokens",
            b"/v1/check",
            b"/v1/schedules/",
            b"/backfill",
            b"/rollback",
            b"/pause",
            b"/cancel",
            b"?limit=",
            b"&state=",
            b"&retry_of=",
            b"\"definition\":",
            b"\"job\":",
            b"\"vars\":",
            b"\"version\":",
            b"\"from\":\"2026-01-01\"",
            b"\"to\":\"9999-12-31\"",
            b"\"idempotency_key\":",
            b"\"workers\":",
            b"\"role\":\"submit\"",
            b"\"prefixes\":[",
            b"\"keys\":[",
            b"\"inline\":true",
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"",
            b"null",
            b"-1",
            b"1e309",
            b"\\u0000",
            b"../",
        ]
    }

    fn max_len(&self) -> usize {
        16 * 1024
    }
}
