//! Where encryption keys come from: never the job file, the manifest or a log.
//!
//! A key is named by an id (`footer`, `pii`, …), which is all a job or a manifest holds. Its
//! bytes come from the process's environment:
//!
//! - `WEIR_KEY_<ID>`: the standard base64 of a 16 or 32-byte AES key. `<ID>` is the id
//!   upper-cased with every other character than a letter or digit turned into `_`
//!   (`pii` → `WEIR_KEY_PII`, `team-a/pii` → `WEIR_KEY_TEAM_A_PII`).
//! - `WEIR_KEY_DIR`: a directory holding one file per key, named exactly by the id, with the
//!   same base64 (a Kubernetes Secret mounted as a volume). The environment variable wins.
//!
//! `WEIR_ALLOWED_KEYS` (comma-separated ids), when set, is all a process may look up: the job
//! service sets it for the runs of a token limited to some keys, so that a definition cannot
//! borrow the service's other keys (another team's `WEIR_KEY_*`) to decrypt or encrypt.
//!
//! With `keys = "direct"` these are the data keys themselves; with `keys = "kms"` (the
//! default) they are the master keys of Weir's local KMS ([`crate::kms`]), which wrap a
//! fresh data key per file. Key bytes live in [`KeyBytes`], whose `Debug` prints nothing.

use std::path::PathBuf;

use base64::Engine;

/// Key bytes, kept out of every `Debug` and error.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyBytes(Vec<u8>);

impl KeyBytes {
    /// Checks that `bytes` is an AES-GCM key length Parquet supports (16 or 32 bytes).
    pub fn new(bytes: Vec<u8>) -> Result<KeyBytes, String> {
        if ![16, 32].contains(&bytes.len()) {
            return Err(format!("is {} bytes long; keys are 16 or 32 bytes (AES-128 or AES-256)", bytes.len()));
        }
        Ok(KeyBytes(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.0.clone()
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyBytes({} bytes)", self.0.len())
    }
}

/// A key id that cannot be found or used; the message names the id and where it was looked
/// for, never a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key '{id}' {why}")]
pub struct KeyError {
    pub id: String,
    pub why: String,
}

/// The environment variable that holds key `id`.
pub fn env_var_of(id: &str) -> String {
    let name: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("WEIR_KEY_{name}")
}

/// Checks a key id as a job names it: non-empty, printable, no path separators (it names a
/// file in `WEIR_KEY_DIR`).
pub fn check_key_id(id: &str) -> Result<(), String> {
    let fine = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if fine { Ok(()) } else { Err(format!("key id '{id}' must be 1 to 128 letters, digits, '-', '_' or '.'")) }
}

/// Looks keys up in the environment and `WEIR_KEY_DIR` (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct KeySource {
    dir: Option<PathBuf>,
    /// The only ids that may be looked up (`WEIR_ALLOWED_KEYS`); `None`: any.
    allowed: Option<Vec<String>>,
}

/// The environment variable that limits which keys a process may look up.
pub const ALLOWED_KEYS_ENV: &str = "WEIR_ALLOWED_KEYS";

impl KeySource {
    /// The key source of this process's environment.
    pub fn from_env() -> KeySource {
        let allowed = std::env::var(ALLOWED_KEYS_ENV)
            .ok()
            .map(|ids| ids.split(',').map(str::trim).filter(|id| !id.is_empty()).map(str::to_string).collect());
        KeySource { dir: std::env::var_os("WEIR_KEY_DIR").map(PathBuf::from), allowed }
    }

    /// Keys from `dir` (and, first, from the environment).
    pub fn with_dir(dir: PathBuf) -> KeySource {
        KeySource { dir: Some(dir), allowed: None }
    }

    /// The bytes of key `id`.
    pub fn key(&self, id: &str) -> Result<KeyBytes, KeyError> {
        let error = |why: String| KeyError { id: id.to_string(), why };
        check_key_id(id).map_err(|e| error(format!("cannot be looked up: {e}")))?;
        if let Some(allowed) = &self.allowed
            && !allowed.iter().any(|granted| granted == id)
        {
            return Err(error(format!("is not granted to this run ({ALLOWED_KEYS_ENV})")));
        }
        let var = env_var_of(id);
        let (encoded, from) = match std::env::var(&var) {
            Ok(value) => (value, var.clone()),
            Err(_) => match &self.dir {
                Some(dir) => match std::fs::read_to_string(dir.join(id)) {
                    Ok(text) => (text, format!("{}", dir.join(id).display())),
                    Err(_) => {
                        return Err(error(format!(
                            "is not available: set {var} or put it in {}",
                            dir.join(id).display()
                        )));
                    }
                },
                None => return Err(error(format!("is not available: set {var} (or WEIR_KEY_DIR)"))),
            },
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| error(format!("in {from} is not base64")))?;
        KeyBytes::new(bytes).map_err(|why| error(format!("in {from} {why}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_and_ids() {
        assert_eq!(env_var_of("pii"), "WEIR_KEY_PII");
        assert_eq!(env_var_of("team-a.pii"), "WEIR_KEY_TEAM_A_PII");
        assert!(check_key_id("footer").is_ok());
        assert!(check_key_id("../etc").is_err() && check_key_id("").is_err() && check_key_id("a/b").is_err());
    }

    #[test]
    fn keys_from_a_directory_and_clean_errors() {
        let dir = tempfile::tempdir().unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        std::fs::write(dir.path().join("dir-only-key"), format!("{key}\n")).unwrap();
        std::fs::write(dir.path().join("short-key"), base64::engine::general_purpose::STANDARD.encode([7u8; 5]))
            .unwrap();
        let source = KeySource::with_dir(dir.path().to_path_buf());
        assert_eq!(source.key("dir-only-key").unwrap().as_bytes(), &[7u8; 16]);
        let err = source.key("short-key").unwrap_err().to_string();
        assert!(err.contains("'short-key'") && err.contains("5 bytes"), "{err}");
        let err = source.key("absent-key").unwrap_err().to_string();
        assert!(err.contains("WEIR_KEY_ABSENT_KEY"), "{err}");
        assert_eq!(format!("{:?}", source.key("dir-only-key").unwrap()), "KeyBytes(16 bytes)");
    }
}
