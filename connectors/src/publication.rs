//! Publishing a decided commit ([`CommitRecord`], [`publish`]): the steps that make a run's
//! staged files the output, each idempotent, so that whoever finds an interrupted
//! publication (the run's launcher, or the next run to take the lease) can complete it.
//! Also the names of the output's own files. [`crate::commit`] decides commits; this module
//! carries them out, below both it and [`crate::lease`], which completes dead runs' ones.

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::objects::{delete_local_put_leftovers, delete_objects, refuse_local_links};
use crate::{ConnectorError, Location};

/// Where runs keep their claims, heartbeats and staged files, relative to the output.
pub const RUNS_DIR: &str = "_weir/runs";
/// A run's decided commit, in its attempt's directory.
pub const COMMIT_FILE: &str = "commit.json";

/// Name of the commit marker.
pub const SUCCESS_FILE: &str = "_SUCCESS";
/// Path of the manifest, relative to the output prefix.
pub const MANIFEST_FILE: &str = "_weir/manifest.json";
/// Path of the fitted parameters, relative to the output prefix.
pub const FITTED_FILE: &str = "_weir/fitted.json";
/// Path of the fitted parameters of an encrypted output ([`crate::encrypted_fitted`]).
pub const ENCRYPTED_FITTED_FILE: &str = "_weir/fitted.parquet";

/// A decided commit: everything [`publish`] needs, so that another run can complete it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub manifest: Manifest,
    /// The content of `_weir/fitted.json`, when the job has fitted steps and the output is
    /// not encrypted.
    pub fitted: Option<String>,
    /// For an encrypted output with fitted steps: the staged `fitted.parquet` (relative to
    /// the prefix, in the run's folder), moved to [`ENCRYPTED_FITTED_FILE`].
    #[serde(default)]
    pub fitted_staged: Option<String>,
    /// Files of the previous output to delete, relative to the prefix.
    pub delete: Vec<String>,
    /// `(staged, final)` paths, relative to the prefix.
    pub publish: Vec<(String, String)>,
    /// On a main output's decision: the rejects output committed with it (`sink.rejects`),
    /// whose own decision waits on this one ([`crate::commit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<LinkedDecision>,
    /// On a rejects output's decision: the main output's decision it waits on. It is
    /// published only if that decision was written: the run committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<LinkedDecision>,
}

/// The decision of one attempt in another output prefix of the same store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkedDecision {
    /// The other prefix's path in the store ([`Location::path`]).
    pub path: String,
    pub attempt: String,
}

impl LinkedDecision {
    pub fn new(output: &Location, attempt: &str) -> LinkedDecision {
        LinkedDecision { path: output.path().to_string(), attempt: attempt.to_string() }
    }

    /// The other prefix, in `near`'s store.
    pub fn output(&self, near: &Location) -> Result<Location, ConnectorError> {
        near.at_path(&self.path)
    }

    /// Whether the linked attempt's decision is written (and not yet removed).
    pub async fn is_decided(&self, near: &Location) -> Result<bool, ConnectorError> {
        let output = self.output(near)?;
        exists(&output, &decision_path(&output, &self.attempt)).await
    }
}

/// Where `attempt` writes its decision under `output`.
pub fn decision_path(output: &Location, attempt: &str) -> Path {
    output.join(&format!("{RUNS_DIR}/{attempt}/{COMMIT_FILE}"))
}

/// Carries out a decided commit. Idempotent: a step already done is skipped, so a run that
/// finds an interrupted commit can complete it.
pub async fn publish(output: &Location, record: &CommitRecord) -> Result<(), ConnectorError> {
    // Every name is checked before a byte is removed: a record that cannot be carried out
    // whole must not begin by deleting the committed output.
    for (staged, published) in &record.publish {
        if !staged.starts_with(RUNS_DIR) || !is_plain_path(staged) || !is_part_name(published) {
            return Err(ConnectorError::Invalid {
                uri: output.uri(),
                message: format!("bad commit entry {staged} -> {published}; nothing was deleted"),
            });
        }
    }
    if let Some(staged) = &record.fitted_staged
        && (!staged.starts_with(RUNS_DIR) || !is_plain_path(staged))
    {
        return Err(ConnectorError::Invalid {
            uri: output.uri(),
            message: format!("bad staged fitted parameters {staged}; nothing was deleted"),
        });
    }
    refuse_local_links(output)?;
    delete_objects(output, &[output.join(SUCCESS_FILE)]).await?;
    // What a writer killed during an earlier publication left half-written.
    for file in [FITTED_FILE, MANIFEST_FILE, SUCCESS_FILE] {
        delete_local_put_leftovers(output, &output.join(file))?;
    }
    let finals: Vec<&str> = record.publish.iter().map(|(_, to)| to.as_str()).collect();
    let old: Vec<Path> = record
        .delete
        .iter()
        .filter(|name| !finals.contains(&name.as_str()) && is_part_name(name))
        .map(|name| output.join(name))
        .collect();
    delete_objects(output, &old).await?;
    fail::fail_point!("publish-old-deleted");
    for (staged, published) in &record.publish {
        let (from, to) = (output.join(staged), output.join(published));
        match output.store().rename(&from, &to).await {
            Ok(()) => {}
            // Moved by an earlier, interrupted publication.
            Err(object_store::Error::NotFound { .. }) if exists(output, &to).await? => {}
            Err(e) => return Err(ConnectorError::store(output.uri_of(&from), e)),
        }
    }
    fail::fail_point!("publish-parts-moved");
    // The output keeps the fitted parameters of this run only, in the one form its
    // encryption allows.
    let (plain, encrypted) = (output.join(FITTED_FILE), output.join(ENCRYPTED_FITTED_FILE));
    match (&record.fitted, &record.fitted_staged) {
        (Some(fitted), _) => {
            delete_objects(output, std::slice::from_ref(&encrypted)).await?;
            put(output, &plain, fitted.clone().into_bytes()).await?;
        }
        (None, Some(staged)) => {
            delete_objects(output, std::slice::from_ref(&plain)).await?;
            let from = output.join(staged);
            match output.store().rename(&from, &encrypted).await {
                Ok(()) => {}
                Err(object_store::Error::NotFound { .. }) if exists(output, &encrypted).await? => {}
                Err(e) => return Err(ConnectorError::store(output.uri_of(&from), e)),
            }
        }
        (None, None) => delete_objects(output, &[plain, encrypted]).await?,
    }
    let manifest = serde_json::to_vec_pretty(&record.manifest)
        .map_err(|e| ConnectorError::Invalid { uri: output.uri(), message: e.to_string() })?;
    put(output, &output.join(MANIFEST_FILE), manifest).await?;
    put(output, &output.join(SUCCESS_FILE), Vec::new()).await
}

/// A name Weir gives part files: `part-…` at the top of the prefix, or in partition
/// folders (`k=v/…`, see [`crate::partitions::is_partition_folder`]).
fn is_part_name(name: &str) -> bool {
    let (folder, file) = match name.rsplit_once('/') {
        Some((folder, file)) => (Some(folder), file),
        None => (None, name),
    };
    file.starts_with("part-") && is_plain_path(name) && folder.is_none_or(crate::partitions::is_partition_folder)
}

/// A relative path whose every segment is a name: none empty, `.` or `..` (a `..` inside a
/// name, as in `part-00000-v1..parquet`, is no traversal).
fn is_plain_path(name: &str) -> bool {
    name.split('/').all(|segment| !matches!(segment, "" | "." | ".."))
}

pub(crate) async fn exists(output: &Location, path: &Path) -> Result<bool, ConnectorError> {
    match output.store().head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(ConnectorError::store(output.uri_of(path), e)),
    }
}

pub(crate) async fn put(output: &Location, path: &Path, bytes: Vec<u8>) -> Result<(), ConnectorError> {
    output
        .store()
        .put(path, PutPayload::from(bytes))
        .await
        .map_err(|e| ConnectorError::store(output.uri_of(path), e))?;
    Ok(())
}
