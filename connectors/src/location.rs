//! Where data lives: a URI (`/abs/path`, `rel/path`, `file:///path`, `s3://bucket/key`)
//! turned into an [`ObjectStore`] and a [`Path`] inside it.
//!
//! S3 is configured the way AWS tools are, from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`), with the job's `[storage]` table able to override the endpoint and
//! region, or to name a storage profile ([`crate::profiles`]) that gives endpoint, region
//! and credentials; requests use path-style addressing. Secrets never come from job files.
//!
//! Transient failures (5xx, timeouts, refused or reset connections) are retried by
//! object_store with exponential backoff (100 ms doubling to 15 s) within a bounded budget:
//! at most `max_retries` (default 5) retries and `retry_timeout_s` (default 30) seconds
//! from the first attempt, after which the error is reported with the URI. Permanent
//! failures (4xx: wrong credentials, a missing bucket or object) are not retried.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::aws::AmazonS3ConfigKey;
use object_store::local::LocalFileSystem;
use object_store::path::{Path, PathPart};
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::ConnectorError;

/// Per-job overrides of the store configuration (the job's `[storage]` table).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageOptions {
    /// S3 endpoint URL, e.g. `http://127.0.0.1:3900` (default: `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// S3 region (default: `AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Allow plain-HTTP endpoints (default: `AWS_ALLOW_HTTP`, or true for `http://` endpoints).
    pub allow_http: Option<bool>,
    /// Retries of a failed request (default 5).
    pub max_retries: Option<usize>,
    /// Seconds after a request's first attempt when retrying stops (default 30).
    pub retry_timeout_s: Option<u64>,
    /// A storage profile ([`crate::profiles`]): its endpoint, region and credentials.
    #[serde(default)]
    pub profile: Option<String>,
    /// The credentials of the profile, read from the environment when the job is loaded;
    /// never from a job file, never written anywhere.
    #[serde(skip)]
    pub credentials: Option<S3Credentials>,
}

/// An S3 access key, from a storage profile. Its `Debug` shows neither half.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("S3Credentials(hidden)")
    }
}

/// Default retries of a failed request.
pub const DEFAULT_MAX_RETRIES: usize = 5;
/// Default retry budget of a request, in seconds.
pub const DEFAULT_RETRY_TIMEOUT_S: u64 = 30;

/// A URI resolved to a store and a path in it.
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    /// `file://` or `s3://bucket`: what precedes the path in every URI of this store.
    root: String,
    path: Path,
    /// True when the URI was written with a trailing `/` (a prefix, not an object).
    pub trailing_slash: bool,
    /// The same store as `store` when it is the local filesystem, for reads that bypass
    /// `object_store` (see [`Location::local_file`]).
    local: Option<Arc<LocalFileSystem>>,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

impl Location {
    /// Parses `uri` and builds its store.
    pub fn parse(uri: &str, options: &StorageOptions) -> Result<Self, ConnectorError> {
        let invalid = |reason: &str| ConnectorError::InvalidUri { uri: uri.to_string(), reason: reason.to_string() };
        let trailing_slash = uri.ends_with('/');
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket name after s3://"));
            }
            let store = s3_store(bucket, options).map_err(|e| ConnectorError::store(uri, e))?;
            let path = Path::parse(key).map_err(|e| invalid(&e.to_string()))?;
            return Ok(Location { store, root: format!("s3://{bucket}"), path, trailing_slash, local: None });
        }
        let local = match uri.strip_prefix("file://") {
            Some(rest) => rest,
            None if uri.contains("://") => {
                return Err(invalid("unsupported scheme; use a path, file:// or s3://"));
            }
            None => uri,
        };
        if local.is_empty() {
            return Err(invalid("empty path"));
        }
        let absolute = std::path::absolute(local).map_err(|e| invalid(&e.to_string()))?;
        let absolute = resolve_symlinks(&absolute);
        let path = Path::from_absolute_path(&absolute).map_err(|e| invalid(&e.to_string()))?;
        let local = Arc::new(LocalFileSystem::new());
        Ok(Location { store: local.clone(), root: "file://".to_string(), path, trailing_slash, local: Some(local) })
    }

    /// The store holding this location.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The path inside the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This location as a URI.
    pub fn uri(&self) -> String {
        self.uri_of(&self.path)
    }

    /// The URI of another path in the same store.
    pub fn uri_of(&self, path: &Path) -> String {
        format!("{}/{}", self.root, path)
    }

    /// The path of `relative` (`a/b.parquet`) under this location.
    /// Parts are taken as they are (as a listing returns them: `k=a%2Fb` stays that key),
    /// and encoded only where a part is not a valid key part (`.`, `..`, control characters).
    pub fn join(&self, relative: &str) -> Path {
        let parts = relative
            .split('/')
            .filter(|part| !part.is_empty())
            .map(|part| PathPart::parse(part).unwrap_or_else(|_| PathPart::from(part)));
        Path::from_iter(self.path.parts().chain(parts))
    }

    /// The file `path` names when this store is the local filesystem; `None` in S3.
    pub fn local_file(&self, path: &Path) -> Option<std::path::PathBuf> {
        self.local.as_ref()?.path_to_filesystem(path).ok()
    }

    /// The directory this location names, when it is on the local filesystem.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        (self.root == "file://").then(|| std::path::PathBuf::from(format!("/{}", self.path)))
    }

    /// True when this location is in an S3 bucket.
    pub fn is_s3(&self) -> bool {
        self.root.starts_with("s3://")
    }

    /// True when `other` is in the same store: the local filesystem, or the same bucket.
    pub fn same_store(&self, other: &Location) -> bool {
        self.root == other.root
    }

    /// Another location in this location's store: `path` in the store (as [`Location::path`]
    /// writes it), for a place that one output's metadata records of another (the rejects
    /// output of a commit, see [`crate::commit`]).
    pub fn at_path(&self, path: &str) -> Result<Location, ConnectorError> {
        let path = Path::parse(path)
            .map_err(|e| ConnectorError::InvalidUri { uri: path.to_string(), reason: e.to_string() })?;
        Ok(Location { path, trailing_slash: true, ..self.clone() })
    }

    /// True when `other` is this location or lies under it.
    pub fn contains(&self, other: &Location) -> bool {
        self.root == other.root && other.path.prefix_matches(&self.path)
    }

    /// True when both locations are in the same store and one path contains the other.
    pub fn overlaps(&self, other: &Location) -> bool {
        self.root == other.root && (self.path.prefix_matches(&other.path) || other.path.prefix_matches(&self.path))
    }
}

/// `path` with the symlinks of its longest existing ancestor resolved (the rest appended as
/// written), so that a sink reached through a symlink is compared, listed and deleted as
/// the directory it really is.
fn resolve_symlinks(path: &std::path::Path) -> std::path::PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |full, part| full.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

fn s3_store(bucket: &str, options: &StorageOptions) -> object_store::Result<Arc<dyn ObjectStore>> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_virtual_hosted_style_request(false);
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        builder = builder.with_region("us-east-1");
    }
    if let Some(region) = &options.region {
        builder = builder.with_region(region);
    }
    let endpoint = options.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
    if let Some(endpoint) = &endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(credentials) = &options.credentials {
        builder = builder
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(&credentials.secret_access_key);
    }
    let allow_http =
        options.allow_http.unwrap_or_else(|| endpoint.as_deref().is_some_and(|e| e.starts_with("http://")));
    if allow_http {
        builder = builder.with_allow_http(true);
    }
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: options.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        retry_timeout: Duration::from_secs(options.retry_timeout_s.unwrap_or(DEFAULT_RETRY_TIMEOUT_S)),
    };
    // Set through config keys, which keep the client options read from the environment.
    builder = builder
        .with_retry(retry)
        .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "5s")
        .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "120s");
    Ok(Arc::new(builder.build()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_file_paths_are_the_same_location() {
        let a = Location::parse("/tmp/weir/x", &StorageOptions::default()).unwrap();
        let b = Location::parse("file:///tmp/weir/x/", &StorageOptions::default()).unwrap();
        assert_eq!(a.uri(), "file:///tmp/weir/x");
        assert_eq!(a.uri(), b.uri());
        assert!(b.trailing_slash);
    }

    #[test]
    fn relative_paths_become_absolute() {
        let here = std::env::current_dir().unwrap();
        let a = Location::parse("data/in", &StorageOptions::default()).unwrap();
        assert_eq!(a.uri(), format!("file://{}/data/in", here.display()));
    }

    #[test]
    fn s3_uris_split_bucket_and_key() {
        let a = Location::parse("s3://raw/events/date=1/", &StorageOptions::default()).unwrap();
        assert_eq!(a.uri(), "s3://raw/events/date=1");
        assert_eq!(a.path().as_ref(), "events/date=1");
    }

    #[test]
    fn unknown_schemes_are_refused() {
        let err = Location::parse("gs://b/k", &StorageOptions::default()).unwrap_err();
        assert!(err.to_string().contains("gs://b/k"));
    }

    #[test]
    fn symlinks_are_resolved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let options = StorageOptions::default();
        let real = Location::parse(dir.path().join("real").to_str().unwrap(), &options).unwrap();
        let link = Location::parse(dir.path().join("link/out").to_str().unwrap(), &options).unwrap();
        assert!(real.overlaps(&link) && real.contains(&link));
    }

    #[test]
    fn overlap_is_by_path_prefix() {
        let options = StorageOptions::default();
        let data = Location::parse("/d/in", &options).unwrap();
        assert!(data.overlaps(&Location::parse("/d/in/out", &options).unwrap()));
        assert!(!data.overlaps(&Location::parse("/d/input", &options).unwrap()));
    }
}
