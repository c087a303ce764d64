//! Object operations the commit protocol and the lease share: reading a small JSON object,
//! and deleting objects by their exact names without ever following a symlink.
//!
//! On the local filesystem a delete goes through `std::fs` here rather than through
//! object_store: each path component below the output's directory is checked with
//! `symlink_metadata` first, and a path that passes through a symlink (or is one) is left
//! alone with a warning. Directories emptied by a delete are removed, up to the prefix.

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::de::DeserializeOwned;

use crate::{ConnectorError, Location};

/// Reads and parses the JSON object at `path`; `None` when there is no such object.
pub async fn read_json<T: DeserializeOwned>(output: &Location, path: &Path) -> Result<Option<T>, ConnectorError> {
    let uri = output.uri_of(path);
    let bytes = match output.store().get(path).await {
        Ok(got) => got.bytes().await.map_err(|e| ConnectorError::store(uri.clone(), e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(ConnectorError::store(uri, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ConnectorError::Invalid { uri, message: format!("not a valid Weir file: {e}") })
}

/// Writes `bytes` as the object `location` names, in one put: readers see all of it or
/// the previous object.
pub async fn put_object(location: &Location, bytes: Vec<u8>) -> Result<(), ConnectorError> {
    location
        .store()
        .put(location.path(), object_store::PutPayload::from(bytes))
        .await
        .map(|_| ())
        .map_err(|e| ConnectorError::store(location.uri(), e))
}

/// Deletes exactly `paths` (objects under `output`); objects already gone are fine.
pub async fn delete_objects(output: &Location, paths: &[Path]) -> Result<(), ConnectorError> {
    if paths.is_empty() {
        return Ok(());
    }
    if let Some(root) = output.local_path() {
        for path in paths {
            delete_local(&root, &std::path::PathBuf::from(format!("/{path}"))).map_err(|e| {
                ConnectorError::Invalid { uri: output.uri_of(path), message: format!("cannot delete: {e}") }
            })?;
        }
        return Ok(());
    }
    let owned: Vec<Path> = paths.to_vec();
    let locations = futures::stream::iter(owned.into_iter().map(Ok)).boxed();
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

/// On the local filesystem, deletes the regular files left under `directory` (a path under
/// `output`) that listings do not show: object_store stages an upload as `NAME#N` beside
/// its target and hides such files, and a killed writer leaves them behind. Symlinks are
/// neither followed nor deleted. Does nothing on other stores, where an unfinished upload
/// is never an object.
pub fn delete_local_leftovers(output: &Location, directory: &Path) -> Result<(), ConnectorError> {
    let Some(root) = output.local_path() else { return Ok(()) };
    let start = std::path::PathBuf::from(format!("/{directory}"));
    let mut pending = vec![start.clone()];
    let mut files = Vec::new();
    let mut directories = Vec::new();
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => {
                    pending.push(entry.path());
                    directories.push(entry.path());
                }
                Ok(kind) if kind.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
    }
    for file in files {
        delete_local(&root, &file).map_err(|e| ConnectorError::Invalid {
            uri: format!("file://{}", file.display()),
            message: format!("cannot delete: {e}"),
        })?;
    }
    // Folders emptied by publishing (renamed away) or above: deepest first; `remove_dir`
    // removes only empty ones, and symlinks were never entered.
    directories.sort_by_key(|directory| std::cmp::Reverse(directory.components().count()));
    for directory in directories {
        let _ = std::fs::remove_dir(directory);
    }
    let mut parent = Some(start.as_path());
    while let Some(directory) = parent {
        if directory == root || !directory.starts_with(&root) || std::fs::remove_dir(directory).is_err() {
            break;
        }
        parent = directory.parent();
    }
    Ok(())
}

/// On the local filesystem, refuses an output where Weir would write through a symbolic
/// link: `_weir` (or anything below it) or a partition folder (`key=value`) that is a link
/// would carry claims, staged files, `fitted.json` and part files outside the output.
/// Checked before the first write (the lease's claim) and again before publishing. Other
/// links are left alone (Weir neither writes into them nor follows them when deleting),
/// and the output's own directory may be a link: [`Location`] resolves it. Does nothing on
/// other stores, which have no links.
pub fn refuse_local_links(output: &Location) -> Result<(), ConnectorError> {
    let Some(root) = output.local_path() else { return Ok(()) };
    let mut pending = vec![root.clone()];
    while let Some(directory) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&directory) else { continue };
        for entry in entries.flatten() {
            let Ok(file_type) = entry.file_type() else { continue };
            let path = entry.path();
            let relative = path.strip_prefix(&root).unwrap_or(&path);
            let under_weir = relative.components().next().is_some_and(|first| first.as_os_str() == "_weir");
            let partition = entry.file_name().to_str().is_some_and(|name| name.contains('='));
            if file_type.is_symlink() && (under_weir || partition) {
                return Err(ConnectorError::Invalid {
                    uri: output.uri(),
                    message: format!(
                        "it holds a symbolic link, {}; Weir does not write through links inside an output \
                         (remove it, or point the sink at where it leads)",
                        path.display()
                    ),
                });
            }
            if file_type.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(())
}

/// On the local filesystem, deletes what a killed `put` of `path` left beside it
/// (object_store writes `NAME#N` and renames it to `NAME`; listings hide such files). Only
/// regular files named exactly `NAME#` followed by digits are touched, never through a
/// symlink. Does nothing on other stores.
pub fn delete_local_put_leftovers(output: &Location, path: &Path) -> Result<(), ConnectorError> {
    let Some(root) = output.local_path() else { return Ok(()) };
    let target = std::path::PathBuf::from(format!("/{path}"));
    let (Some(directory), Some(name)) = (target.parent(), target.file_name().and_then(|n| n.to_str())) else {
        return Ok(());
    };
    let Ok(entries) = std::fs::read_dir(directory) else { return Ok(()) };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(suffix) = file_name.to_str().and_then(|f| f.strip_prefix(name)).and_then(|f| f.strip_prefix('#'))
        else {
            continue;
        };
        if suffix.is_empty()
            || !suffix.bytes().all(|b| b.is_ascii_digit())
            || !entry.file_type().is_ok_and(|t| t.is_file())
        {
            continue;
        }
        delete_local(&root, &entry.path()).map_err(|e| ConnectorError::Invalid {
            uri: format!("file://{}", entry.path().display()),
            message: format!("cannot delete: {e}"),
        })?;
    }
    Ok(())
}

/// Deletes the file `target` under the directory `root` unless a component from `root`
/// down to `target` is a symlink; removes the directories this leaves empty.
fn delete_local(root: &std::path::Path, target: &std::path::Path) -> std::io::Result<()> {
    let Ok(relative) = target.strip_prefix(root) else {
        return Err(std::io::Error::other(format!("{} is outside {}", target.display(), root.display())));
    };
    let mut current = root.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                tracing::warn!(path = %current.display(), "not deleting through a symlink");
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    match std::fs::remove_file(target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let mut parent = target.parent();
    while let Some(directory) = parent {
        if directory == root || !directory.starts_with(root) || std::fs::remove_dir(directory).is_err() {
            break;
        }
        parent = directory.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageOptions;
    use crate::test_support::touch;

    #[tokio::test]
    async fn deletes_by_name_never_through_a_symlink_and_prunes_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        touch(outside.path(), "precious.parquet");
        touch(dir.path(), "_weir/runs/a/part-00000.parquet");
        touch(dir.path(), "keep.parquet");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let output = Location::parse(dir.path().to_str().unwrap(), &StorageOptions::default()).unwrap();
        let paths =
            [output.join("_weir/runs/a/part-00000.parquet"), output.join("link/precious.parquet"), output.join("gone")];
        delete_objects(&output, &paths).await.unwrap();
        assert!(outside.path().join("precious.parquet").exists());
        assert!(dir.path().join("keep.parquet").exists());
        assert!(!dir.path().join("_weir").exists(), "emptied directories are removed");
    }
}
