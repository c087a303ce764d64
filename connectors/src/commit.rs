//! The output commit protocol. No renames and no conditional puts, so it works on every
//! S3-compatible store:
//!
//! 1. [`prepare_output`] (once, before any worker writes): with `error_if_exists` an output
//!    prefix that holds anything is an error; with `overwrite`, `_SUCCESS` is deleted first
//!    (so no reader trusts the old output while it goes), then everything else under the
//!    prefix, which also removes what earlier failed attempts left.
//! 2. Workers write `part-<worker>-<run_id>.parquet` files.
//! 3. [`commit`] (once, after every worker reported success): `_weir/fitted.json` when the
//!    job has fitted steps, `_weir/manifest.json`, then the empty `_SUCCESS`, last. A run that fails or is killed before this point leaves
//!    no `_SUCCESS`; [`abort_run`] removes the part files of a run that failed cleanly.

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::listing::list_all;
use crate::manifest::Manifest;
use crate::{ConnectorError, Location};

/// Name of the commit marker.
pub const SUCCESS_FILE: &str = "_SUCCESS";
/// Path of the manifest, relative to the output prefix.
pub const MANIFEST_FILE: &str = "_weir/manifest.json";
/// Path of the fitted parameters, relative to the output prefix.
pub const FITTED_FILE: &str = "_weir/fitted.json";

/// What to do when the output prefix already holds objects (`sink.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Refuse to run (Spark's default).
    #[default]
    ErrorIfExists,
    /// Remove everything under the prefix first.
    Overwrite,
}

/// Step 1 of the protocol; see the module documentation.
pub async fn prepare_output(output: &Location, mode: WriteMode) -> Result<(), ConnectorError> {
    let existing = list_all(output, output.path()).await?;
    if mode == WriteMode::Overwrite {
        remove_local_staging(output, |_| true);
    }
    if existing.is_empty() {
        return Ok(());
    }
    match mode {
        WriteMode::ErrorIfExists => {
            let object = existing[0]
                .location
                .prefix_match(output.path())
                .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
                .unwrap_or_default();
            Err(ConnectorError::OutputExists { uri: output.uri(), object })
        }
        WriteMode::Overwrite => {
            let success = output.join(SUCCESS_FILE);
            if existing.iter().any(|meta| meta.location == success) {
                delete(output, &success).await?;
            }
            let rest = existing.into_iter().map(|meta| meta.location).filter(|path| *path != success);
            delete_all(output, rest.collect()).await
        }
    }
}

/// Step 3 of the protocol: the fitted parameters (JSON, when there are any), the manifest,
/// then `_SUCCESS`.
pub async fn commit(output: &Location, manifest: &Manifest, fitted: Option<Vec<u8>>) -> Result<(), ConnectorError> {
    let json = serde_json::to_vec_pretty(manifest)
        .map_err(|e| ConnectorError::Invalid { uri: output.uri(), message: e.to_string() })?;
    if let Some(fitted) = fitted {
        put(output, FITTED_FILE, fitted).await?;
    }
    put(output, MANIFEST_FILE, json).await?;
    put(output, SUCCESS_FILE, Vec::new()).await
}

/// Removes the part files of `run_id` (after a clean failure). Best effort: errors are
/// logged, since the run has already failed for a better reason.
pub async fn abort_run(output: &Location, run_id: &str) {
    let objects = match list_all(output, output.path()).await {
        Ok(objects) => objects,
        Err(error) => {
            tracing::warn!(%error, "could not list the output to remove a failed run's files");
            return;
        }
    };
    let ours = objects
        .into_iter()
        .map(|meta| meta.location)
        .filter(|path| path.filename().is_some_and(|name| name.starts_with("part-") && name.contains(run_id)))
        .collect();
    if let Err(error) = delete_all(output, ours).await {
        tracing::warn!(%error, "could not remove a failed run's part files");
    }
    remove_local_staging(output, |name| name.starts_with("part-") && name.contains(run_id));
}

/// On the local filesystem, object_store stages an upload as `NAME#N` beside its target and
/// hides such files from listings; a killed writer leaves them behind. This removes the
/// staged files under `output` whose name `matches`.
fn remove_local_staging(output: &Location, matches: impl Fn(&str) -> bool) {
    let Some(root) = output.local_path() else { return };
    let mut directories = vec![root];
    while let Some(directory) = directories.pop() {
        let Ok(entries) = std::fs::read_dir(&directory) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                directories.push(path);
            } else if name.contains('#')
                && matches(&name)
                && let Err(error) = std::fs::remove_file(&path)
            {
                tracing::warn!(path = %path.display(), %error, "could not remove a staged upload");
            }
        }
    }
}

/// Whether the output at `output` is committed (has `_SUCCESS`).
pub async fn is_committed(output: &Location) -> Result<bool, ConnectorError> {
    let success = output.join(SUCCESS_FILE);
    match output.store().head(&success).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(ConnectorError::store(output.uri_of(&success), e)),
    }
}

async fn put(output: &Location, relative: &str, bytes: Vec<u8>) -> Result<(), ConnectorError> {
    let path = output.join(relative);
    output
        .store()
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|e| ConnectorError::store(output.uri_of(&path), e))?;
    Ok(())
}

async fn delete(output: &Location, path: &object_store::path::Path) -> Result<(), ConnectorError> {
    match output.store().delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(ConnectorError::store(output.uri_of(path), e)),
    }
}

async fn delete_all(output: &Location, paths: Vec<object_store::path::Path>) -> Result<(), ConnectorError> {
    let locations = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
    output
        .store()
        .delete_stream(locations)
        .map(|result| match result {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(ConnectorError::store(output.uri(), e)),
        })
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageOptions;
    use crate::test_support::touch;

    #[tokio::test]
    async fn error_if_exists_names_an_object_and_overwrite_clears_everything() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "part-00000-old.parquet");
        touch(dir.path(), "_SUCCESS");
        touch(dir.path(), "_weir/manifest.json");
        touch(dir.path(), "part-00001-old.parquet#3");
        let output = Location::parse(dir.path().to_str().unwrap(), &StorageOptions::default()).unwrap();
        let err = prepare_output(&output, WriteMode::ErrorIfExists).await.unwrap_err();
        assert!(err.to_string().contains("_SUCCESS") && err.is_user_error(), "{err}");
        prepare_output(&output, WriteMode::Overwrite).await.unwrap();
        assert!(list_all(&output, output.path()).await.unwrap().is_empty());
        assert!(!dir.path().join("part-00001-old.parquet#3").exists(), "staged uploads go too");
        assert!(!is_committed(&output).await.unwrap());
    }

    #[tokio::test]
    async fn abort_removes_only_the_runs_parts() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "part-00000-run1.parquet");
        touch(dir.path(), "part-00001-run1.parquet");
        touch(dir.path(), "part-00000-run0.parquet");
        touch(dir.path(), "part-00002-run1.parquet#1");
        let output = Location::parse(dir.path().to_str().unwrap(), &StorageOptions::default()).unwrap();
        abort_run(&output, "run1").await;
        let left: Vec<_> = list_all(&output, output.path())
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.location.filename().unwrap().to_string())
            .collect();
        assert_eq!(left, ["part-00000-run0.parquet"]);
        assert!(!dir.path().join("part-00002-run1.parquet#1").exists());
    }
}
