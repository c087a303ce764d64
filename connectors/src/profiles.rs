//! Storage profiles: named S3-compatible stores an administrator defines, which jobs name
//! (`[storage] profile = "lake"`) instead of giving an endpoint.
//!
//! ```toml
//! # the profiles file: `weir serve --storage-profiles FILE`, or WEIR_STORAGE_PROFILES=FILE
//! [profiles.lake]
//! endpoint = "http://127.0.0.1:3900"        # optional (AWS itself without one)
//! region = "garage"                         # optional
//! access_key_id_env = "LAKE_ACCESS_KEY_ID"  # the names of environment variables that hold
//! secret_access_key_env = "LAKE_SECRET"     # the credentials, never the credentials
//! prefixes = ["s3://lake/"]                 # every URI a job reaches through it lies here
//! ```
//!
//! A job with a profile takes the profile's endpoint, region and credentials; it may not
//! give an endpoint or region of its own, and every `s3://` URI it names (source, sink,
//! models, `fitted`) must lie under one of the profile's prefixes (whole path segments).
//! Credentials are read from the environment of the process that runs the job, so that
//! they never appear in a job file, a manifest, a log or an error.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::location::{S3Credentials, StorageOptions};

/// The environment variable naming the profiles file.
pub const PROFILES_ENV: &str = "WEIR_STORAGE_PROFILES";

/// The largest profiles file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// One profile.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageProfile {
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub allow_http: Option<bool>,
    /// The environment variable that holds the access key id.
    pub access_key_id_env: String,
    /// The environment variable that holds the secret access key.
    pub secret_access_key_env: String,
    /// The `s3://` prefixes jobs may reach through it (at least one).
    pub prefixes: Vec<String>,
}

/// A profiles file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageProfiles {
    #[serde(default)]
    pub profiles: BTreeMap<String, StorageProfile>,
}

impl StorageProfiles {
    /// Reads and checks a profiles file.
    pub fn read(path: &Path) -> Result<StorageProfiles, String> {
        let what = || format!("the storage profiles file {}", path.display());
        let size = std::fs::metadata(path).map_err(|e| format!("{}: {e}", what()))?.len();
        if size > MAX_FILE_BYTES {
            return Err(format!("{} is larger than {MAX_FILE_BYTES} bytes", what()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", what()))?;
        let profiles: StorageProfiles = toml::from_str(&text).map_err(|e| format!("{}: {e}", what()))?;
        for (name, profile) in &profiles.profiles {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("{}: profile name '{name}' is not [A-Za-z0-9_-]+", what()));
            }
            if profile.prefixes.is_empty() || profile.prefixes.iter().any(|p| !is_s3_prefix(p)) {
                return Err(format!("{}: profile '{name}' needs `prefixes`, each an s3://bucket/… URI", what()));
            }
        }
        Ok(profiles)
    }

    /// The profiles file `WEIR_STORAGE_PROFILES` names, if it names one.
    pub fn from_env() -> Result<Option<StorageProfiles>, String> {
        match std::env::var_os(PROFILES_ENV) {
            Some(path) if !path.is_empty() => StorageProfiles::read(Path::new(&path)).map(Some),
            _ => Ok(None),
        }
    }

    pub fn get(&self, name: &str) -> Result<&StorageProfile, String> {
        self.profiles.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            format!("there is no storage profile '{name}' (the profiles: {})", known.join(", "))
        })
    }

    /// Fills `options` from the profile it names, if it names one: endpoint, region and the
    /// credentials from the environment. `profiles` is `None` when no profiles file is set.
    pub fn apply(profiles: Option<&StorageProfiles>, options: &mut StorageOptions) -> Result<(), String> {
        let Some(name) = options.profile.clone() else { return Ok(()) };
        let Some(profiles) = profiles else {
            return Err(format!(
                "storage.profile = '{name}', but no storage profiles are set ({PROFILES_ENV}, or `weir serve --storage-profiles`)"
            ));
        };
        let profile = profiles.get(&name)?;
        if options.endpoint.is_some() || options.region.is_some() || options.allow_http.is_some() {
            return Err(format!(
                "storage.profile = '{name}' comes with its endpoint and region: the job may not give its own"
            ));
        }
        let read = |variable: &str| {
            std::env::var(variable).ok().filter(|value| !value.is_empty()).ok_or_else(|| {
                format!("storage profile '{name}': its credentials are not in the environment (set {variable})")
            })
        };
        options.endpoint = profile.endpoint.clone();
        options.region = profile.region.clone();
        options.allow_http = profile.allow_http;
        options.credentials = Some(S3Credentials {
            access_key_id: read(&profile.access_key_id_env)?,
            secret_access_key: read(&profile.secret_access_key_env)?,
        });
        Ok(())
    }
}

impl StorageProfile {
    /// Whether `uri` lies under one of the profile's prefixes (whole path segments).
    pub fn covers(&self, uri: &str) -> bool {
        self.prefixes.iter().any(|prefix| {
            let prefix = prefix.trim_end_matches('/');
            uri == prefix || uri.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

fn is_s3_prefix(uri: &str) -> bool {
    uri.strip_prefix("s3://").is_some_and(|rest| !rest.is_empty() && !rest.split('/').any(|s| s == ".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_whole_segments_and_a_profile_fills_the_options() {
        let profile = StorageProfile {
            endpoint: Some("http://127.0.0.1:3900".into()),
            region: Some("garage".into()),
            allow_http: None,
            access_key_id_env: "WEIR_TEST_PROFILE_KEY_ID".into(),
            secret_access_key_env: "WEIR_TEST_PROFILE_SECRET_UNSET".into(),
            prefixes: vec!["s3://lake/team-a/".into()],
        };
        assert!(profile.covers("s3://lake/team-a/in/x.parquet") && profile.covers("s3://lake/team-a"));
        assert!(!profile.covers("s3://lake/team-ab/x") && !profile.covers("s3://lake/other/"));
        let profiles = StorageProfiles { profiles: BTreeMap::from([("lake".to_string(), profile)]) };
        let mut options = StorageOptions { profile: Some("lake".into()), ..StorageOptions::default() };
        // The secret's variable is not set: the error names the variable, not a value.
        let error = StorageProfiles::apply(Some(&profiles), &mut options).unwrap_err();
        assert!(
            error.contains("WEIR_TEST_PROFILE_KEY_ID") || error.contains("WEIR_TEST_PROFILE_SECRET_UNSET"),
            "{error}"
        );
        let mut own =
            StorageOptions { profile: Some("lake".into()), endpoint: Some("http://x".into()), ..Default::default() };
        assert!(StorageProfiles::apply(Some(&profiles), &mut own).unwrap_err().contains("may not give its own"));
        let mut unknown = StorageOptions { profile: Some("sea".into()), ..Default::default() };
        assert!(
            StorageProfiles::apply(Some(&profiles), &mut unknown).unwrap_err().contains("no storage profile 'sea'")
        );
        assert!(StorageProfiles::apply(None, &mut unknown).unwrap_err().contains("no storage profiles are set"));
    }
}
