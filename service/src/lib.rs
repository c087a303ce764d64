//! `weir serve`: the job service. Teams submit job definitions over HTTP, follow and
//! cancel runs, and look back at every run; each run is a `weir run` child process
//! ([`executor`]), queued and watched by the [`scheduler`], recorded in SQLite
//! ([`store`]), behind bearer tokens with roles ([`auth`]), through the routes of [`api`];
//! stored jobs with a `[schedule]` run by themselves ([`schedules`]).
//! [`client`] is the CLI's side (`weir submit`, `runs`, `status`, `logs`, `cancel`, `jobs`).
//!
//! Plain HTTP on loopback by default; HTTPS with `--tls-cert` and `--tls-key` ([`tls`]).
//!
//! State lives in one folder (`--state-dir`): `weir.db` (the history), `admin.token` (the
//! first admin token, mode 0600) and `runs/<id>/` (each run's job file, log and result).

pub mod api;
pub mod api_error;
pub mod api_types;
pub mod auth;
pub mod backfill;
pub mod client;
pub mod clock;
pub mod definition_check;
pub mod executor;
pub mod scheduler;
pub mod schedules;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::{AppState, router};
use auth::{AllowedHosts, ensure_admin_token};
use clock::{Clock, FileClock, SystemClock};
use definition_check::DefinitionChecker;
use executor::LocalExecutor;
use scheduler::Scheduler;
use store::Store;
pub use tls::TlsFiles;

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// Where to write the bound address (`http://HOST:PORT`) once listening.
    pub address_file: Option<PathBuf>,
    pub max_concurrent_runs: usize,
    pub cancel_grace: Duration,
    /// More `Host` names the service answers to.
    pub allow_hosts: Vec<String>,
    /// Read the scheduler's time from this file instead of the system clock (tests).
    pub clock_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// How long checking one submitted definition may take ([`definition_check`]).
    pub check_timeout: Duration,
    /// The `[storage] endpoint`s a definition from a non-admin token may name (the
    /// service's own `AWS_ENDPOINT_URL` is added).
    pub allowed_endpoints: Vec<String>,
    /// `--storage-profiles` (or `WEIR_STORAGE_PROFILES`): the storage profiles file.
    pub storage_profiles: Option<PathBuf>,
}

/// Runs the service until SIGINT or SIGTERM. Runs in flight keep running; the next start
/// re-attaches them.
pub async fn serve(config: ServeConfig) -> Result<(), String> {
    // Read first, so that a bad certificate stops the start before anything is created.
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    let state_dir = &config.state_dir;
    std::fs::create_dir_all(state_dir.join("runs"))
        .map_err(|error| format!("cannot create the state folder {}: {error}", state_dir.display()))?;
    // The history holds definitions, variables and logs: the service's user only, whatever
    // the umask.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|error| format!("cannot make the state folder {} private: {error}", state_dir.display()))?;
    }
    let clock: Arc<dyn Clock> = match &config.clock_file {
        Some(path) => Arc::new(FileClock(path.clone())),
        None => Arc::new(SystemClock),
    };
    let store = Arc::new(Store::open_with_clock(&state_dir.join("weir.db"), clock.clone()).map_err(|e| e.to_string())?);
    let token_file = state_dir.join("admin.token");
    if ensure_admin_token(&store, &token_file)? {
        eprintln!("weir serve: created an admin token in {} (readable by you only)", token_file.display());
    }
    let binary = std::env::current_exe().map_err(|error| format!("cannot find the weir binary: {error}"))?;
    let mut endpoints = config.allowed_endpoints.clone();
    endpoints.extend(std::env::var("AWS_ENDPOINT_URL").ok().filter(|url| !url.is_empty()));
    // Checked now, so that a broken file stops the start rather than every run; the
    // checkers and runs read it again (it names environment variables, never holds secrets).
    let profiles = match &config.storage_profiles {
        Some(path) => {
            let path = std::path::absolute(path).map_err(|error| format!("{}: {error}", path.display()))?;
            let profiles = weir_connectors::profiles::StorageProfiles::read(&path)?;
            eprintln!(
                "weir serve: storage profiles {} from {}",
                profiles.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
                path.display()
            );
            Some(path)
        }
        None => None,
    };
    let checker = Arc::new(
        DefinitionChecker::new(binary.clone(), config.check_timeout, state_dir.clone(), endpoints)
            .with_profiles(profiles.clone()),
    );
    let executor = Arc::new(LocalExecutor { binary, profiles });
    let scheduler =
        Scheduler::new(store.clone(), executor, clock, state_dir, config.max_concurrent_runs, config.cancel_grace);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", config.listen))?;
    let bound = listener.local_addr().map_err(|error| error.to_string())?;
    let state =
        AppState { store, scheduler: scheduler.clone(), hosts: AllowedHosts::new(bound, &config.allow_hosts), checker };
    tokio::spawn(scheduler.run());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let address = format!("{scheme}://{bound}");
    if let Some(path) = &config.address_file {
        let staged = path.with_extension("staged");
        std::fs::write(&staged, &address)
            .and_then(|()| std::fs::rename(&staged, path))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    eprintln!("weir serve: listening on {address}; state in {}", state_dir.display());
    let app = app(state);
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        stop_signal().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let listener = listener.into_std().map_err(|error| error.to_string())?;
    let served = match tls {
        None => {
            let mut server = axum_server::from_tcp(listener).handle(handle);
            limit_header_reads(server.http_builder());
            server.serve(app.into_make_service()).await
        }
        Some(tls) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
            let mut server = axum_server::from_tcp_rustls(listener, config).handle(handle);
            limit_header_reads(server.http_builder());
            server.serve(app.into_make_service()).await
        }
    };
    served.map_err(|error| format!("the server failed: {error}"))
}

/// The service's routes with the body-reading deadline and limit: what `weir serve` serves
/// (and what the HTTP fuzz target calls in process).
pub fn app(state: AppState) -> axum::Router {
    router(state).layer(axum::middleware::from_fn(read_body_by_deadline))
}

/// How long a client has to send a request's line and headers, and then its body: a client
/// that sends nothing, or drips bytes, is disconnected (header) or answered 408 (body)
/// rather than holding a connection and its memory for good.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Gives hyper's HTTP/1 connections a timer, so that their header read timeout applies.
fn limit_header_reads(builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>) {
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(REQUEST_READ_TIMEOUT);
}

/// Reads a request's body (at most [`MAX_BODY_BYTES`]) within [`REQUEST_READ_TIMEOUT`]
/// before any handler sees it: 408 for a body that does not arrive in time, 413 for one
/// too large.
async fn read_body_by_deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(REQUEST_READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES)).await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            let message = format!("the request's body is larger than {MAX_BODY_BYTES} bytes or broke off");
            return api_error::ApiError::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
        }
        Err(_) => {
            let message = format!("the request's body did not arrive within {} s", REQUEST_READ_TIMEOUT.as_secs());
            return api_error::ApiError::new(axum::http::StatusCode::REQUEST_TIMEOUT, message).into_response();
        }
    };
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// The largest request body the service reads (axum's own default for JSON bodies).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Resolves at SIGINT or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(term) => { term.recv().await; } None => std::future::pending().await } } => {}
    }
    eprintln!("weir serve: stopping; runs in flight go on and are re-attached at the next start");
}
