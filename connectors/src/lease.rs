//! The lease that lets at most one run hold an output prefix at a time, on any store, with
//! no conditional puts (Garage 2.5 ignores `If-None-Match`) and relying only on what S3
//! guarantees: a listing that follows a completed write shows it.
//!
//! Each attempt of a run owns the directory `_weir/runs/<attempt>/` under the prefix, where
//! `attempt` is `<run_id>.<8 hex digits>`, fresh per attempt. It holds:
//! - `claim.json`, written once when the attempt asks for the prefix: who (run id, host, pid),
//!   since when, and the lease's time to live;
//! - `heartbeat`, written when the attempt wins and rewritten every quarter of the time to
//!   live while it holds the prefix;
//! - the attempt's staged part files and, while it publishes, its `commit.json`
//!   ([`crate::commit`]).
//!
//! An attempt is **live** while its last write (claim or heartbeat) is younger than its time
//! to live. Ages are measured by the store's own clock: the last-modified times in one
//! listing, against the last-modified time of the asking attempt's own claim, so the hosts'
//! clocks never matter.
//!
//! To acquire, an attempt writes its claim, lists `_weir/runs/`, and looks at the other live
//! attempts:
//! 1. one with a heartbeat holds the prefix: lose;
//! 2. one whose claim is older: it was first: lose;
//! 3. one whose claim has the same time and a smaller attempt id: it goes first: lose;
//! 4. one whose claim has the same time and a larger attempt id: wait until it either
//!    withdraws (it saw us, by rule 3) or writes a heartbeat (it listed before our claim
//!    existed, and won), then decide again;
//! 5. none of these: write the heartbeat and hold the prefix.
//!
//! Two winners are impossible: if A and B both won, one of them, say B, listed before A's
//! claim was written (else B would have seen A and lost by rule 1, 2 or 3 unless A's claim
//! were newer, and A would have seen B by the same argument). Then B's claim is no newer than A's:
//! older, and A loses by rule 2; or tied, and A loses by rule 3 or waits, by rule 4, for
//! B's heartbeat and then loses by rule 1. A loser deletes its claim and exits with an error
//! that names the holder. Attempts that are not live (killed runs) are ignored, and the
//! winner removes their directories, first completing a commit one of them had decided
//! (and, for a run with a rejects output, resolving the linked decision by the rules of
//! [`crate::commit::commit`]).
//!
//! A holder that cannot renew its heartbeat for most of its time to live stops: [`Lease::check`]
//! fails before anything is published. A process frozen past its lease and resumed could
//! still race its successor; that window is the time to live, configurable per job.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use crate::claim::Claim;
use crate::listing::list_all;
use crate::objects::{delete_local_leftovers, delete_objects, read_json, refuse_local_links};
pub use crate::publication::{COMMIT_FILE, RUNS_DIR};
use crate::publication::{CommitRecord, publish};
use crate::{ConnectorError, Location};

/// The claim's file name in an attempt's directory.
pub const CLAIM_FILE: &str = "claim.json";
/// The heartbeat's file name in an attempt's directory.
pub const HEARTBEAT_FILE: &str = "heartbeat";
/// Default time to live of a lease (`sink.lease_ttl_s`).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);
/// How long an attempt waits for tied claimants to decide (rule 4) before giving up.
const TIE_WAIT: Duration = Duration::from_secs(10);

/// A fresh attempt id for `run_id`: `<run_id>.<8 hex digits>`.
pub fn new_attempt_id(run_id: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    format!("{run_id}.{:08x}", hasher.finish() as u32)
}

/// Checks that a run id can name files: 1 to 128 of `[A-Za-z0-9_.-]`, starting and ending
/// with a letter, digit or `_`, with no `..` (it becomes part of `part-00000-<run_id>.parquet`
/// and of the attempt's folder `<run_id>.<hex>`, neither of which may hold `..`). Checked
/// when a run is planned, before anything is claimed or deleted.
pub fn check_run_id(run_id: &str) -> Result<(), String> {
    const RULE: &str = "1 to 128 of A-Z a-z 0-9 _ . -, starting and ending with a letter, digit or _, without '..'";
    let shown: String = run_id.chars().take(128).flat_map(char::escape_default).collect();
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if run_id.len() > 128
        || !run_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        || !edge_ok(run_id.chars().next())
        || !edge_ok(run_id.chars().last())
        || run_id.contains("..")
    {
        return Err(format!("run id '{shown}' is not allowed: a run id is {RULE}"));
    }
    Ok(())
}

/// What one listing of `_weir/runs/` shows of an attempt.
#[derive(Debug, Default)]
struct AttemptObjects {
    claim: Option<DateTime<Utc>>,
    heartbeat: Option<DateTime<Utc>>,
    commit: bool,
    objects: Vec<Path>,
}

impl AttemptObjects {
    fn last_write(&self) -> Option<DateTime<Utc>> {
        self.claim.max(self.heartbeat)
    }
}

/// Lists `_weir/runs/` under `output`, grouped by attempt.
async fn list_attempts(output: &Location) -> Result<BTreeMap<String, AttemptObjects>, ConnectorError> {
    let runs = output.join(RUNS_DIR);
    let mut attempts: BTreeMap<String, AttemptObjects> = BTreeMap::new();
    for meta in list_all(output, &runs).await? {
        let Some(mut parts) = meta.location.prefix_match(&runs) else { continue };
        let Some(attempt) = parts.next() else { continue };
        let rest: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
        let entry = attempts.entry(attempt.as_ref().to_string()).or_default();
        match rest.as_slice() {
            [name] if name == CLAIM_FILE => entry.claim = Some(meta.last_modified),
            [name] if name == HEARTBEAT_FILE => entry.heartbeat = Some(meta.last_modified),
            [name] if name == COMMIT_FILE => entry.commit = true,
            _ => {}
        }
        entry.objects.push(meta.location);
    }
    Ok(attempts)
}

fn attempt_path(output: &Location, attempt: &str, file: &str) -> Path {
    output.join(&format!("{RUNS_DIR}/{attempt}/{file}"))
}

/// The state of a prefix's leases, for `weir ls`: the live holder, if any, and whether an
/// interrupted commit waits to be completed.
#[derive(Debug, Clone, Default)]
pub struct LeaseState {
    pub holder: Option<Claim>,
    pub interrupted_commit: Option<String>,
}

/// Reads the lease state of `output` without changing anything.
pub async fn lease_state(output: &Location) -> Result<LeaseState, ConnectorError> {
    let attempts = list_attempts(output).await?;
    let Some(now) = attempts.values().filter_map(AttemptObjects::last_write).max() else {
        return Ok(LeaseState::default());
    };
    // The newest write in the listing stands in for the store's "now"; an older holder that
    // stopped writing more than its time to live before it is not live.
    let now = now.max(Utc::now());
    let mut state = LeaseState::default();
    for (attempt, objects) in &attempts {
        if objects.commit && is_commit(output, attempt).await? {
            state.interrupted_commit = Some(attempt.clone());
        }
        let (Some(_), Some(heartbeat)) = (objects.claim, objects.heartbeat) else { continue };
        let claim: Claim = match read_json(output, &attempt_path(output, attempt, CLAIM_FILE)).await {
            Ok(Some(claim)) => claim,
            _ => continue,
        };
        if heartbeat + chrono::Duration::seconds(claim.ttl_s as i64) > now {
            state.holder = Some(claim);
        }
    }
    Ok(state)
}

/// Whether `attempt`'s decision commits: any main decision, and a rejects output's
/// conditional one whose main decision exists (else the run did not commit, and the next
/// run discards it).
async fn is_commit(output: &Location, attempt: &str) -> Result<bool, ConnectorError> {
    match read_json::<CommitRecord>(output, &attempt_path(output, attempt, COMMIT_FILE)).await? {
        Some(CommitRecord { condition: Some(main), .. }) => main.is_decided(output).await,
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

/// A held lease on an output prefix. Its heartbeat runs on the tokio runtime until
/// [`Lease::release`].
pub struct Lease {
    output: Location,
    claim: Claim,
    ttl: Duration,
    last_renewed: Arc<Mutex<Instant>>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({} on {})", self.claim.attempt, self.output.uri())
    }
}

impl Lease {
    /// Asks for `output` with `claim` (see the module documentation). Must run inside a
    /// tokio runtime, which then drives the heartbeat.
    pub async fn acquire(output: &Location, claim: Claim) -> Result<Lease, ConnectorError> {
        refuse_local_links(output)?;
        let ttl = Duration::from_secs(claim.ttl_s.max(1));
        let claim_path = attempt_path(output, &claim.attempt, CLAIM_FILE);
        let body = serde_json::to_vec_pretty(&claim).map_err(|e| invalid(output, e))?;
        put(output, &claim_path, body).await?;
        let decided = decide(output, &claim).await;
        let winner = match decided {
            Ok(None) => None,
            Ok(Some(holder)) => Some(Ok(holder)),
            Err(error) => Some(Err(error)),
        };
        if let Some(outcome) = winner {
            if let Err(error) = delete_objects(output, std::slice::from_ref(&claim_path)).await {
                tracing::warn!(%error, "could not withdraw the claim");
            }
            return Err(match outcome {
                Ok(holder) => ConnectorError::Held { uri: output.uri(), holder: Box::new(holder) },
                Err(error) => error,
            });
        }
        let heartbeat_path = attempt_path(output, &claim.attempt, HEARTBEAT_FILE);
        put(output, &heartbeat_path, Vec::new()).await?;
        let last_renewed = Arc::new(Mutex::new(Instant::now()));
        let heartbeat = tokio::spawn(renew(output.clone(), heartbeat_path, ttl, last_renewed.clone()));
        let lease = Lease { output: output.clone(), claim, ttl, last_renewed, heartbeat };
        if let Err(error) = lease.clean_up_dead_attempts().await {
            lease.release().await;
            return Err(error);
        }
        Ok(lease)
    }

    /// This lease's attempt id.
    pub fn attempt(&self) -> &str {
        &self.claim.attempt
    }

    /// The directory of this attempt, relative to the output prefix.
    pub fn directory(&self) -> String {
        format!("{RUNS_DIR}/{}", self.claim.attempt)
    }

    /// Fails unless the lease is still safely held: renewed within the last half of its
    /// time to live, and no other attempt has a live heartbeat.
    pub async fn check(&self) -> Result<(), ConnectorError> {
        let age = self.last_renewed.lock().map(|at| at.elapsed()).unwrap_or(Duration::MAX);
        if age > self.ttl / 2 {
            return Err(self.lost(format!("its heartbeat was last written {} s ago", age.as_secs())));
        }
        let attempts = list_attempts(&self.output).await?;
        let now = attempts.get(&self.claim.attempt).and_then(|a| a.heartbeat).unwrap_or_else(Utc::now);
        for (attempt, objects) in &attempts {
            if *attempt == self.claim.attempt {
                continue;
            }
            if let Some(heartbeat) = objects.heartbeat
                && heartbeat + chrono::Duration::from_std(self.ttl).unwrap_or_default() > now
            {
                return Err(self.lost(format!("attempt {attempt} holds it now")));
            }
        }
        Ok(())
    }

    fn lost(&self, why: String) -> ConnectorError {
        ConnectorError::LeaseLost { uri: self.output.uri(), attempt: self.claim.attempt.clone(), why }
    }

    /// Stops the heartbeat and deletes this attempt's directory (claim, heartbeat, and any
    /// staged file left in it), claim last. Best effort: a failure is logged, and the lease
    /// then expires by itself.
    pub async fn release(self) {
        self.heartbeat.abort();
        let _ = (&mut { self.heartbeat }).await;
        if let Err(error) = delete_attempt(&self.output, &self.claim.attempt).await {
            tracing::warn!(%error, attempt = %self.claim.attempt, "could not remove the run's directory; its lease will expire");
        }
    }

    /// Stops the heartbeat and leaves the attempt's directory as it is (a decided commit in
    /// it is completed by the next run, once the lease has expired).
    pub fn abandon(self) {
        self.heartbeat.abort();
    }

    /// Removes the directories of attempts that are no longer live, completing first a
    /// commit one of them had decided but not finished publishing.
    async fn clean_up_dead_attempts(&self) -> Result<(), ConnectorError> {
        let attempts = list_attempts(&self.output).await?;
        let Some(now) = attempts.get(&self.claim.attempt).and_then(|a| a.claim) else { return Ok(()) };
        for (attempt, objects) in &attempts {
            if *attempt == self.claim.attempt {
                continue;
            }
            let ttl = match read_json::<Claim>(&self.output, &attempt_path(&self.output, attempt, CLAIM_FILE)).await {
                Ok(Some(claim)) => claim.ttl_s,
                _ => 0,
            };
            let live = objects.last_write().is_some_and(|at| at + chrono::Duration::seconds(ttl as i64) > now);
            if live {
                continue;
            }
            if objects.commit {
                let record_path = attempt_path(&self.output, attempt, COMMIT_FILE);
                if let Some(record) = read_json::<CommitRecord>(&self.output, &record_path).await? {
                    self.complete_dead_decision(attempt, &record).await?;
                }
            }
            tracing::info!(%attempt, "removing what a dead run left");
            delete_attempt(&self.output, attempt).await?;
        }
        // On local disk, a directory holding only hidden upload files (`NAME#N`) does not
        // show in listings at all. It may be a live run writing its first claim right now:
        // only one untouched for longer than this lease's time to live is a dead run's.
        if let Some(runs) = self.output.local_path().map(|root| root.join(RUNS_DIR)) {
            for entry in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !attempts.contains_key(&name)
                    && entry.file_type().is_ok_and(|kind| kind.is_dir())
                    && untouched_for(&entry.path(), self.ttl)
                {
                    delete_local_leftovers(&self.output, &self.output.join(&format!("{RUNS_DIR}/{name}")))?;
                }
            }
        }
        Ok(())
    }
}

impl Lease {
    /// Completes what the dead `attempt` decided (see [`crate::commit::commit`] for the rules
    /// of a rejects output's decisions): a rejects output's conditional decision is
    /// published only if its main output's decision exists; a main output's decision is
    /// published, and then, if it names a rejects output, that prefix's lease is taken with
    /// this lease's claim, so that its own clean-up publishes the rejects (the main decision
    /// still exists until this attempt's directory goes) before the lease is released.
    async fn complete_dead_decision(&self, attempt: &str, record: &CommitRecord) -> Result<(), ConnectorError> {
        if let Some(main) = &record.condition
            && !main.is_decided(&self.output).await?
        {
            tracing::info!(%attempt, "discarding the rejects of a run that did not commit");
            return Ok(());
        }
        tracing::warn!(%attempt, "completing the commit an earlier run decided but did not finish");
        publish(&self.output, record).await?;
        if let Some(link) = &record.rejects {
            let rejects = link.output(&self.output)?;
            let claim = Claim::new(&self.claim.run_id, &self.claim.attempt, self.ttl);
            let lease = Box::pin(Lease::acquire(&rejects, claim)).await?;
            lease.release().await;
        }
        Ok(())
    }
}

/// Whether nothing in the local directory `path` (nor the directory itself) was modified in
/// the last `age`.
fn untouched_for(path: &std::path::Path, age: Duration) -> bool {
    let recent =
        |meta: std::fs::Metadata| meta.modified().ok().and_then(|at| at.elapsed().ok()).is_none_or(|since| since < age);
    if std::fs::metadata(path).map(recent).unwrap_or(true) {
        return false;
    }
    !std::fs::read_dir(path).into_iter().flatten().flatten().any(|entry| entry.metadata().map(recent).unwrap_or(true))
}

/// Decides whether the attempt that just wrote `mine` wins: `None`, or the claim of the
/// attempt that holds or goes first.
async fn decide(output: &Location, mine: &Claim) -> Result<Option<Claim>, ConnectorError> {
    let started = Instant::now();
    loop {
        let attempts = list_attempts(output).await?;
        let Some(my_time) = attempts.get(&mine.attempt).and_then(|a| a.claim) else {
            return Err(invalid(output, "the listing does not show the claim just written"));
        };
        let mut wait_for = None;
        for (attempt, objects) in &attempts {
            if *attempt == mine.attempt {
                continue;
            }
            let Some(claim_time) = objects.claim else { continue };
            let Some(claim) = read_json::<Claim>(output, &attempt_path(output, attempt, CLAIM_FILE)).await? else {
                continue;
            };
            let live =
                objects.last_write().is_some_and(|at| at + chrono::Duration::seconds(claim.ttl_s as i64) > my_time);
            if !live {
                continue;
            }
            if objects.heartbeat.is_some() || claim_time < my_time || (claim_time == my_time && *attempt < mine.attempt)
            {
                return Ok(Some(claim));
            }
            if claim_time == my_time {
                wait_for = Some(claim);
            }
        }
        match wait_for {
            None => return Ok(None),
            Some(claim) if started.elapsed() > TIE_WAIT => return Ok(Some(claim)),
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Rewrites the heartbeat every quarter of `ttl`, recording each success.
async fn renew(output: Location, path: Path, ttl: Duration, last_renewed: Arc<Mutex<Instant>>) {
    let period = (ttl / 4).max(Duration::from_millis(250));
    loop {
        tokio::time::sleep(period).await;
        match put(&output, &path, Vec::new()).await {
            Ok(()) => {
                if let Ok(mut at) = last_renewed.lock() {
                    *at = Instant::now();
                }
            }
            Err(error) => tracing::warn!(%error, "could not renew the output lease"),
        }
    }
}

/// The attempts of run `run_id` (`<run_id>.<8 hex>`) that left a directory under `output`.
pub async fn attempts_of_run(output: &Location, run_id: &str) -> Result<Vec<String>, ConnectorError> {
    let prefix = format!("{run_id}.");
    Ok(list_attempts(output).await?.into_keys().filter(|attempt| attempt.starts_with(&prefix)).collect())
}

/// Deletes everything in `_weir/runs/<attempt>/`, the claim last: what a launcher does for
/// a run whose processes it had to kill. Only the attempt's own directory is touched.
pub async fn remove_attempt(output: &Location, attempt: &str) -> Result<(), ConnectorError> {
    check_run_id(attempt).map_err(|message| invalid(output, message))?;
    delete_attempt(output, attempt).await
}

/// Deletes everything in `_weir/runs/<attempt>/`, the claim last.
async fn delete_attempt(output: &Location, attempt: &str) -> Result<(), ConnectorError> {
    let directory = output.join(&format!("{RUNS_DIR}/{attempt}"));
    let mut objects: Vec<Path> = list_all(output, &directory).await?.into_iter().map(|m| m.location).collect();
    let claim = attempt_path(output, attempt, CLAIM_FILE);
    objects.retain(|path| *path != claim);
    delete_objects(output, &objects).await?;
    delete_local_leftovers(output, &directory)?;
    delete_objects(output, &[claim]).await
}

async fn put(output: &Location, path: &Path, bytes: Vec<u8>) -> Result<(), ConnectorError> {
    output
        .store()
        .put(path, PutPayload::from(bytes))
        .await
        .map(|_| ())
        .map_err(|e| ConnectorError::store(output.uri_of(path), e))
}

fn invalid(output: &Location, message: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Invalid { uri: output.uri(), message: message.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageOptions;

    fn output(dir: &std::path::Path) -> Location {
        Location::parse(dir.to_str().unwrap(), &StorageOptions::default()).unwrap()
    }

    #[tokio::test]
    async fn a_second_attempt_is_refused_while_the_first_holds_and_wins_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path());
        let first = Lease::acquire(&out, Claim::new("r1", "r1.00000001", DEFAULT_LEASE_TTL)).await.unwrap();
        let err = Lease::acquire(&out, Claim::new("r2", "r2.00000002", DEFAULT_LEASE_TTL)).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("is held by run r1") && text.contains("since"), "{text}");
        assert!(!dir.path().join("_weir/runs/r2.00000002").exists(), "the loser withdraws its claim");
        first.release().await;
        assert!(!dir.path().join("_weir/runs/r1.00000001").exists());
        let second = Lease::acquire(&out, Claim::new("r2", "r2.00000003", DEFAULT_LEASE_TTL)).await.unwrap();
        second.release().await;
    }

    #[tokio::test]
    async fn many_attempts_at_once_give_exactly_one_holder() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path());
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let out = out.clone();
                tokio::spawn(async move {
                    let id = format!("r{i}");
                    Lease::acquire(&out, Claim::new(&id, &format!("{id}.0000000{i}"), DEFAULT_LEASE_TTL)).await
                })
            })
            .collect();
        let mut held = Vec::new();
        for task in tasks {
            if let Ok(lease) = task.await.unwrap() {
                held.push(lease);
            }
        }
        assert_eq!(held.len(), 1, "exactly one attempt holds the prefix");
        held.pop().unwrap().release().await;
    }

    #[tokio::test]
    async fn an_expired_attempt_is_taken_over_and_its_directory_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path());
        let dead = Lease::acquire(&out, Claim::new("dead", "dead.00000001", Duration::from_secs(1))).await.unwrap();
        dead.heartbeat.abort();
        std::fs::write(dir.path().join("_weir/runs/dead.00000001/part-00000.staged#1"), b"x").unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let next = Lease::acquire(&out, Claim::new("next", "next.00000002", DEFAULT_LEASE_TTL)).await.unwrap();
        assert!(!dir.path().join("_weir/runs/dead.00000001").exists());
        next.release().await;
    }

    #[test]
    fn run_ids_are_checked() {
        assert!(check_run_id("20261125T060400Z-1a2b3c4d").is_ok());
        assert!(check_run_id("v1.2_rc-3").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\n", "v1.", ".v1", "v1..2", "-x", "x-"] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
    }
}
