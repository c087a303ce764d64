//! Finding a dataset's data files: a URI names one object, a prefix (directory) or a glob.
//!
//! Under a prefix every object is a data file except those with a path component starting
//! with `_` or `.` (`_SUCCESS`, `_weir/`, `.crc` files), as in Spark and Hive. Files are
//! returned sorted by path so that every process plans the same shards.

use futures::TryStreamExt;
use globset::GlobBuilder;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::{ConnectorError, Location};

/// A data file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub path: Path,
    pub size: u64,
    /// What tells this version of the file from another one at the same path: the store's
    /// ETag, or its last-modified time when it gives none.
    pub version: String,
    /// When the store last wrote it (its clock).
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

impl DataFile {
    fn of(meta: ObjectMeta) -> DataFile {
        let version = meta.e_tag.clone().unwrap_or_else(|| meta.last_modified.to_rfc3339());
        DataFile { path: meta.location, size: meta.size, version, last_modified: meta.last_modified }
    }
}

/// True when the part of `path` below `prefix` has a hidden component.
fn is_hidden(path: &Path, prefix: &Path) -> bool {
    match path.prefix_match(prefix) {
        Some(mut parts) => parts.any(|part| part.as_ref().starts_with(['_', '.'])),
        None => true,
    }
}

/// Lists every object under `prefix` (recursively).
pub async fn list_all(location: &Location, prefix: &Path) -> Result<Vec<ObjectMeta>, ConnectorError> {
    let mut objects: Vec<ObjectMeta> = location
        .store()
        .list(Some(prefix))
        .try_collect()
        .await
        .map_err(|e| ConnectorError::store(location.uri_of(prefix), e))?;
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(objects)
}

/// The data files `location` names, sorted by path. An empty result is an error.
pub async fn list_data_files(location: &Location) -> Result<Vec<DataFile>, ConnectorError> {
    let raw = location.path().as_ref();
    let files = if raw.contains(['*', '?', '[']) {
        list_glob(location).await?
    } else {
        match location.store().head(location.path()).await {
            Ok(meta) if !location.trailing_slash => vec![DataFile::of(meta)],
            Ok(_) | Err(object_store::Error::NotFound { .. }) => list_all(location, location.path())
                .await?
                .into_iter()
                .filter(|meta| !is_hidden(&meta.location, location.path()))
                .map(DataFile::of)
                .collect(),
            // A local directory answers `head` with an error of its own kind: list it.
            Err(_) => list_all(location, location.path())
                .await?
                .into_iter()
                .filter(|meta| !is_hidden(&meta.location, location.path()))
                .map(DataFile::of)
                .collect(),
        }
    };
    if files.is_empty() {
        return Err(ConnectorError::NoDataFiles { uri: location.uri() });
    }
    Ok(files)
}

/// The root of the dataset `location` names: the longest prefix free of glob characters
/// for a glob, else the location itself. Partition folders are read below it.
pub fn dataset_root(location: &Location) -> Path {
    let pattern = location.path().as_ref();
    if !pattern.contains(['*', '?', '[']) {
        return location.path().clone();
    }
    let fixed: Vec<&str> = pattern.split('/').take_while(|part| !part.contains(['*', '?', '['])).collect();
    Path::from_iter(fixed.iter().copied())
}

/// Lists the objects matching a glob: the store is listed from the longest prefix free of
/// glob characters, and `*` does not cross `/`.
async fn list_glob(location: &Location) -> Result<Vec<DataFile>, ConnectorError> {
    let pattern = location.path().as_ref();
    let glob = GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| ConnectorError::InvalidUri { uri: location.uri(), reason: e.to_string() })?
        .compile_matcher();
    let prefix = dataset_root(location);
    Ok(list_all(location, &prefix)
        .await?
        .into_iter()
        .filter(|meta| glob.is_match(meta.location.as_ref()) && !is_hidden(&meta.location, &prefix))
        .map(DataFile::of)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageOptions;
    use crate::test_support::touch;

    fn names(files: &[DataFile], location: &Location) -> Vec<String> {
        files
            .iter()
            .map(|f| {
                f.path
                    .prefix_match(location.path())
                    .unwrap()
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect()
    }

    #[tokio::test]
    async fn a_directory_lists_sorted_data_files_and_skips_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.parquet", "a.parquet", "_SUCCESS", "_weir/manifest.json", ".a.crc", "sub/c.parquet"] {
            touch(dir.path(), f);
        }
        let location = Location::parse(dir.path().to_str().unwrap(), &StorageOptions::default()).unwrap();
        let files = list_data_files(&location).await.unwrap();
        assert_eq!(names(&files, &location), ["a.parquet", "b.parquet", "sub/c.parquet"]);
    }

    #[tokio::test]
    async fn a_glob_matches_within_one_level() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["x1.parquet", "x2.parquet", "y.parquet", "sub/x3.parquet"] {
            touch(dir.path(), f);
        }
        let uri = format!("{}/x*.parquet", dir.path().display());
        let location = Location::parse(&uri, &StorageOptions::default()).unwrap();
        let files = list_data_files(&location).await.unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[0].path.as_ref().ends_with("x1.parquet"));
    }

    #[tokio::test]
    async fn a_single_file_is_itself() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "one.parquet");
        let uri = format!("{}/one.parquet", dir.path().display());
        let files = list_data_files(&Location::parse(&uri, &StorageOptions::default()).unwrap()).await.unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].size, 1);
    }

    #[tokio::test]
    async fn nothing_there_is_an_error_naming_the_uri() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("{}/missing", dir.path().display());
        let err = list_data_files(&Location::parse(&uri, &StorageOptions::default()).unwrap()).await.unwrap_err();
        assert!(err.to_string().contains("missing") && err.is_user_error(), "{err}");
    }
}
