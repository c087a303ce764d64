//! Who asks for, or holds, an output prefix: the content of a lease's `claim.json`
//! ([`crate::lease`]), also shown in the error that refuses a held prefix.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use chrono::Utc;

/// Who asks for (or holds) an output prefix; the content of `claim.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub run_id: String,
    pub attempt: String,
    pub host: String,
    pub pid: u32,
    /// RFC 3339 UTC time the attempt started, by its own clock (for people to read).
    pub since: String,
    pub ttl_s: u64,
}

impl Claim {
    /// A claim for a new attempt of `run_id` by this process.
    pub fn new(run_id: &str, attempt: &str, ttl: Duration) -> Claim {
        Claim {
            run_id: run_id.to_string(),
            attempt: attempt.to_string(),
            host: host_name(),
            pid: std::process::id(),
            since: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ttl_s: ttl.as_secs().max(1),
        }
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}
