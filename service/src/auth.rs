//! Access control, on by default. Every request but `GET /healthz` must:
//!
//! 1. come with a `Host` the service answers to (its listen address, `localhost` at its
//!    port, or a `--allow-host`), so that a web page cannot reach it by DNS rebinding;
//! 2. carry no `Origin`, or the service's own (`http://HOST`): browsers send `Origin` on
//!    cross-site requests, and those are refused;
//! 3. carry `Authorization: Bearer TOKEN` for a live token whose role allows the action.
//!
//! Tokens are 32 random bytes in hex with a `weir_` prefix, shown once when created and
//! stored as their SHA-256: they are random, so a plain hash is as good as a slow one
//! (there is no dictionary to try) and a stolen database holds no usable token. The
//! first start writes an admin token to `STATE/admin.token`, readable by its owner only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::http::HeaderMap;
use axum::http::StatusCode;

use super::api_error::ApiError;
use super::store::{Role, Store, TokenInfo};
use weir_jobs::planning::sha256_hex;

/// A new random token.
pub fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| format!("no randomness for a token: {error}"))?;
    Ok(format!("weir_{}", hex::encode(bytes)))
}

/// Creates the first admin token if the service has no token at all, writing it to
/// `path` (mode 0600). Returns whether it did.
pub fn ensure_admin_token(store: &Store, path: &Path) -> Result<bool, String> {
    if store.token_count().map_err(|e| e.to_string())? > 0 {
        return Ok(false);
    }
    let token = new_token()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    writeln!(file, "{token}").map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    file.sync_all().map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    store
        .insert_token("admin", &sha256_hex(token.as_bytes()), Role::Admin, &Default::default())
        .map_err(|e| e.to_string())?;
    Ok(true)
}

/// The hosts (`host:port`) the service answers to.
#[derive(Debug, Clone)]
pub struct AllowedHosts(pub Vec<String>);

impl AllowedHosts {
    /// For a service listening on `addr`, plus `extra` names (with or without a port).
    pub fn new(addr: std::net::SocketAddr, extra: &[String]) -> AllowedHosts {
        let port = addr.port();
        let mut hosts = vec![addr.to_string(), format!("localhost:{port}"), format!("127.0.0.1:{port}")];
        for host in extra {
            if host.contains(':') {
                hosts.push(host.clone());
            } else {
                hosts.push(format!("{host}:{port}"));
                hosts.push(host.clone());
            }
        }
        AllowedHosts(hosts)
    }

    /// Checks `Host` and `Origin`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default();
        if !self.0.iter().any(|allowed| allowed.eq_ignore_ascii_case(host)) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, format!("this service does not answer to host '{host}'")));
        }
        if let Some(origin) = headers.get("origin") {
            let origin = origin.to_str().unwrap_or_default();
            let same = self.0.iter().any(|allowed| {
                origin.eq_ignore_ascii_case(&format!("http://{allowed}"))
                    || origin.eq_ignore_ascii_case(&format!("https://{allowed}"))
            });
            if !same {
                return Err(ApiError::new(StatusCode::FORBIDDEN, "cross-site requests are refused"));
            }
        }
        Ok(())
    }
}

/// The caller of a request: its token's name, role and job scope.
pub fn authenticate(store: &Store, headers: &HeaderMap) -> Result<TokenInfo, ApiError> {
    let unauthorized = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, message);
    let header = headers
        .get("authorization")
        .ok_or_else(|| unauthorized("a bearer token is required (Authorization: Bearer TOKEN)"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header must be 'Bearer TOKEN'"))?;
    store
        .token_by_hash(&sha256_hex(token.as_bytes()))
        .map_err(ApiError::internal)?
        .ok_or_else(|| unauthorized("unknown or revoked token"))
}

/// Refuses a caller whose role is below `needed`.
pub fn require(caller: &TokenInfo, needed: Role) -> Result<(), ApiError> {
    if caller.role >= needed {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("token '{}' has role '{}'; this needs '{}'", caller.name, caller.role.as_str(), needed.as_str()),
        ))
    }
}

/// Refuses a caller whose token is limited to other jobs.
pub fn require_job(caller: &TokenInfo, job: &str) -> Result<(), ApiError> {
    if caller.may_touch(job) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, format!("token '{}' may not act on job '{job}'", caller.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let hosts = AllowedHosts::new("127.0.0.1:8470".parse().unwrap(), &["weir.internal".into()]);
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, v.parse().unwrap());
            }
            map
        };
        assert!(hosts.check(&headers(&[("host", "127.0.0.1:8470")])).is_ok());
        assert!(hosts.check(&headers(&[("host", "localhost:8470"), ("origin", "http://localhost:8470")])).is_ok());
        assert!(hosts.check(&headers(&[("host", "weir.internal")])).is_ok());
        assert!(hosts.check(&headers(&[("host", "evil.example:8470")])).is_err());
        assert!(hosts.check(&headers(&[("host", "127.0.0.1:8470"), ("origin", "http://evil.example")])).is_err());
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 64);
    }
}
