//! `[source.ready]`: when a source counts as landed. A partition that holds any file is not
//! necessarily complete (an upstream job may still be writing it); a job can ask for a
//! marker object (`_SUCCESS`, written last by Spark, Hive and Weir itself), a least number
//! of data files or bytes, or that no data file changed for some seconds. A source that is
//! not ready is an "input not ready" failure (exit 4), which the job service retries while
//! the job's `wait_for_input_s` lasts.

use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::listing::{dataset_root, list_data_files};
use crate::{ConnectorError, Location};

/// `[source.ready]`: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// An object that must exist at the source's root (e.g. `_SUCCESS`), relative to it.
    #[serde(default)]
    pub marker: Option<String>,
    /// At least this many data files.
    #[serde(default)]
    pub min_files: Option<usize>,
    /// At least this many bytes of data files, together.
    #[serde(default)]
    pub min_bytes: Option<u64>,
    /// No data file written in the last this many seconds (by the store's modification
    /// times against this machine's clock).
    #[serde(default)]
    pub stable_for_s: Option<u64>,
}

impl Readiness {
    /// Checks the fields themselves: a marker is a relative name with no `..`.
    pub fn check(&self) -> Result<(), String> {
        if let Some(marker) = &self.marker
            && (marker.is_empty()
                || marker.starts_with('/')
                || marker.split('/').any(|part| part == ".." || part.is_empty()))
        {
            return Err(format!(
                "source.ready.marker '{marker}' must be a relative name below the source, without '..'"
            ));
        }
        Ok(())
    }

    /// Whether the source at `location` is ready; the error says which condition is not met.
    pub async fn ensure_ready(
        &self,
        location: &Location,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ConnectorError> {
        let not_ready = |reason: String| ConnectorError::NotReady { uri: location.uri(), reason };
        if let Some(marker) = &self.marker {
            let path = object_store::path::Path::from_iter(
                dataset_root(location).parts().chain(marker.split('/').map(object_store::path::PathPart::from)),
            );
            match location.store().head(&path).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(not_ready(format!("has no marker '{marker}' yet (source.ready.marker)")));
                }
                Err(error) => return Err(ConnectorError::store(location.uri_of(&path), error)),
            }
        }
        if self.min_files.is_none() && self.min_bytes.is_none() && self.stable_for_s.is_none() {
            return Ok(());
        }
        let files = list_data_files(location).await?;
        if let Some(least) = self.min_files
            && files.len() < least
        {
            return Err(not_ready(format!(
                "holds {} data file(s), fewer than source.ready.min_files = {least}",
                files.len()
            )));
        }
        let bytes: u64 = files.iter().map(|file| file.size).sum();
        if let Some(least) = self.min_bytes
            && bytes < least
        {
            return Err(not_ready(format!(
                "holds {bytes} bytes of data files, fewer than source.ready.min_bytes = {least}"
            )));
        }
        if let Some(seconds) = self.stable_for_s
            && let Some(newest) = files.iter().map(|file| file.last_modified).max()
        {
            let quiet = (now - newest).num_seconds();
            if quiet < seconds as i64 {
                return Err(not_ready(format!(
                    "had a data file written {quiet} s ago, less than source.ready.stable_for_s = {seconds}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageOptions;

    #[tokio::test]
    async fn each_condition_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("part-0.parquet"), vec![0u8; 100]).unwrap();
        let location = Location::parse(&format!("{}/", dir.path().display()), &StorageOptions::default()).unwrap();
        let now = chrono::Utc::now();
        let ready = |readiness: Readiness| {
            let location = location.clone();
            async move { readiness.ensure_ready(&location, now).await }
        };
        let marker = Readiness { marker: Some("_SUCCESS".into()), ..Readiness::default() };
        let err = ready(marker.clone()).await.unwrap_err().to_string();
        assert!(err.starts_with("input not ready") && err.contains("marker '_SUCCESS'"), "{err}");
        std::fs::write(dir.path().join("_SUCCESS"), b"").unwrap();
        ready(marker).await.unwrap();
        let err = ready(Readiness { min_files: Some(2), ..Readiness::default() }).await.unwrap_err().to_string();
        assert!(err.contains("1 data file(s)"), "{err}");
        let err = ready(Readiness { min_bytes: Some(101), ..Readiness::default() }).await.unwrap_err().to_string();
        assert!(err.contains("100 bytes"), "{err}");
        ready(Readiness { min_files: Some(1), min_bytes: Some(100), ..Readiness::default() }).await.unwrap();
        let err = ready(Readiness { stable_for_s: Some(3600), ..Readiness::default() }).await.unwrap_err().to_string();
        assert!(err.contains("stable_for_s = 3600"), "{err}");
        assert!(Readiness { marker: Some("../x".into()), ..Readiness::default() }.check().is_err());
    }
}
