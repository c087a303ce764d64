//! Envelope encryption: data keys wrapped by master keys, recorded in the key metadata of
//! each encrypted Parquet file in the format pyarrow's `CryptoFactory` and parquet-java's
//! `PropertiesDrivenCryptoFactory` read and write ("PKMT1" key material, internal storage).
//!
//! Writing, Weir makes a fresh random data key (DEK) per file and per key id, asks the KMS
//! to wrap it with the master key named by the id, and stores
//! `{"keyMaterialType":"PKMT1","internalStorage":true,"isFooterKey":…,"masterKeyID":…,
//! "wrappedDEK":…,"doubleWrapping":false}` (plus `kmsInstanceID`/`kmsInstanceURL` for the
//! footer key) as the key metadata. Reading, it accepts that and double wrapping too (the
//! default of pyarrow and parquet-java): there the KMS wraps a key-encryption key (KEK) and
//! the DEK is encrypted with the KEK locally, AES-GCM with the KEK's id as associated data.
//!
//! [`KmsClient`] is the interface a KMS implements (wrap and unwrap a key with a master
//! key). Weir's own, [`LocalKms`], holds its master keys in the process's [`KeySource`]
//! and wraps as `base64(nonce ‖ AES-GCM(master, key, aad = master key id))`: a 12-byte
//! random nonce, then the ciphertext and its 16-byte tag. A reader with the same master
//! keys and a `KmsClient` doing the same (a few lines with Python's `cryptography`) reads
//! Weir's files in pyarrow, and Weir reads theirs.

use base64::Engine;
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::keys::{KeyBytes, KeyError, KeySource};

/// The key material format this module reads and writes.
pub const KEY_MATERIAL_TYPE: &str = "PKMT1";
/// The KMS instance id and URL written for Weir's local KMS (pyarrow's defaults).
pub const DEFAULT_KMS_INSTANCE: &str = "DEFAULT";

/// A key management service: wraps data keys with master keys and unwraps them.
pub trait KmsClient: Send + Sync + std::fmt::Debug {
    /// `key` wrapped by the master key `master_key_id`, as text.
    fn wrap_key(&self, key: &[u8], master_key_id: &str) -> Result<String, KeyError>;
    /// The key `wrapped` holds, unwrapped by the master key `master_key_id`.
    fn unwrap_key(&self, wrapped: &str, master_key_id: &str) -> Result<KeyBytes, KeyError>;
}

/// Weir's KMS: master keys from the process's [`KeySource`]; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct LocalKms {
    keys: KeySource,
}

impl LocalKms {
    pub fn new(keys: KeySource) -> LocalKms {
        LocalKms { keys }
    }
}

impl KmsClient for LocalKms {
    fn wrap_key(&self, key: &[u8], master_key_id: &str) -> Result<String, KeyError> {
        let master = self.keys.key(master_key_id)?;
        let sealed = seal(master.as_bytes(), key, master_key_id.as_bytes())
            .map_err(|why| KeyError { id: master_key_id.to_string(), why })?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    fn unwrap_key(&self, wrapped: &str, master_key_id: &str) -> Result<KeyBytes, KeyError> {
        let master = self.keys.key(master_key_id)?;
        unwrap_locally(&master, wrapped, master_key_id.as_bytes(), "it is the wrong master key")
            .map_err(|why| KeyError { id: master_key_id.to_string(), why })
    }
}

/// A fresh random data key of 16 bytes (AES-128, pyarrow's default).
pub fn new_data_key() -> Result<KeyBytes, String> {
    let mut key = vec![0u8; 16];
    SystemRandom::new().fill(&mut key).map_err(|_| "the system random generator failed".to_string())?;
    KeyBytes::new(key)
}

/// One key's material, as stored in a file's key metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyMaterial {
    pub key_material_type: String,
    pub internal_storage: bool,
    pub is_footer_key: bool,
    #[serde(rename = "kmsInstanceID", default, skip_serializing_if = "Option::is_none")]
    pub kms_instance_id: Option<String>,
    #[serde(rename = "kmsInstanceURL", default, skip_serializing_if = "Option::is_none")]
    pub kms_instance_url: Option<String>,
    #[serde(rename = "masterKeyID")]
    pub master_key_id: String,
    #[serde(rename = "wrappedDEK")]
    pub wrapped_dek: String,
    pub double_wrapping: bool,
    #[serde(rename = "keyEncryptionKeyID", default, skip_serializing_if = "Option::is_none")]
    pub key_encryption_key_id: Option<String>,
    #[serde(rename = "wrappedKEK", default, skip_serializing_if = "Option::is_none")]
    pub wrapped_kek: Option<String>,
}

impl KeyMaterial {
    /// The key metadata of `data_key` wrapped by `master_key_id` (single wrapping).
    pub fn wrap(
        kms: &dyn KmsClient,
        data_key: &KeyBytes,
        master_key_id: &str,
        is_footer_key: bool,
    ) -> Result<Vec<u8>, KeyError> {
        let material = KeyMaterial {
            key_material_type: KEY_MATERIAL_TYPE.to_string(),
            internal_storage: true,
            is_footer_key,
            kms_instance_id: is_footer_key.then(|| DEFAULT_KMS_INSTANCE.to_string()),
            kms_instance_url: is_footer_key.then(|| DEFAULT_KMS_INSTANCE.to_string()),
            master_key_id: master_key_id.to_string(),
            wrapped_dek: kms.wrap_key(data_key.as_bytes(), master_key_id)?,
            double_wrapping: false,
            key_encryption_key_id: None,
            wrapped_kek: None,
        };
        serde_json::to_vec(&material)
            .map_err(|e| KeyError { id: master_key_id.to_string(), why: format!("key material: {e}") })
    }

    /// Parses key metadata as key material; `None` when it is not PKMT1 JSON (a key id, as
    /// `keys = "direct"` writes).
    pub fn parse(metadata: &[u8]) -> Option<KeyMaterial> {
        let material: KeyMaterial = serde_json::from_slice(metadata).ok()?;
        (material.key_material_type == KEY_MATERIAL_TYPE).then_some(material)
    }

    /// The data key this material holds, unwrapped through `kms`.
    pub fn unwrap(&self, kms: &dyn KmsClient) -> Result<KeyBytes, KeyError> {
        let error = |why: &str| KeyError { id: self.master_key_id.clone(), why: why.to_string() };
        if !self.internal_storage {
            return Err(error("has its key material stored outside the file, which Weir does not read"));
        }
        if !self.double_wrapping {
            return kms.unwrap_key(&self.wrapped_dek, &self.master_key_id);
        }
        let (Some(kek_id), Some(wrapped_kek)) = (&self.key_encryption_key_id, &self.wrapped_kek) else {
            return Err(error("has double-wrapped key material without a key-encryption key"));
        };
        let kek = kms.unwrap_key(wrapped_kek, &self.master_key_id)?;
        let kek_id = base64::engine::general_purpose::STANDARD
            .decode(kek_id)
            .map_err(|_| error("has a key-encryption key id that is not base64"))?;
        unwrap_locally(&kek, &self.wrapped_dek, &kek_id, "the key material is damaged")
            .map_err(|why| KeyError { id: self.master_key_id.clone(), why })
    }
}

/// The data key in `wrapped` (`base64(nonce ‖ ciphertext ‖ tag)`), opened with `key` and
/// `aad`; `failed` says why it would not open.
fn unwrap_locally(key: &KeyBytes, wrapped: &str, aad: &[u8], failed: &str) -> Result<KeyBytes, String> {
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(wrapped)
        .map_err(|_| "wraps a data key that is not base64".to_string())?;
    let data_key =
        open(key.as_bytes(), &sealed, aad).map_err(|_| format!("does not unwrap this file's data key: {failed}"))?;
    KeyBytes::new(data_key).map_err(|why| format!("unwrapped a data key that {why}"))
}

fn gcm_key(key: &[u8]) -> Result<LessSafeKey, String> {
    let algorithm = if key.len() == 32 { &AES_256_GCM } else { &AES_128_GCM };
    UnboundKey::new(algorithm, key).map(LessSafeKey::new).map_err(|_| "is not an AES key".to_string())
}

/// `nonce ‖ ciphertext ‖ tag` of `plaintext` under `key`.
fn seal(key: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
    let key = gcm_key(key)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| "the system random generator failed".to_string())?;
    let mut sealed = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut sealed)
        .map_err(|_| "AES-GCM encryption failed".to_string())?;
    Ok([nonce.as_slice(), &sealed].concat())
}

/// The plaintext of what [`seal`] made; an error when the key or the associated data differ
/// or a byte changed.
fn open(key: &[u8], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
    let key = gcm_key(key)?;
    if sealed.len() < NONCE_LEN + 16 {
        return Err("too short".to_string());
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
    let mut body = body.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut body).map_err(|_| "authentication failed".to_string())?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A KMS over fixed master keys, for tests.
    #[derive(Debug)]
    struct Fixed(Vec<(String, Vec<u8>)>);

    impl KmsClient for Fixed {
        fn wrap_key(&self, key: &[u8], id: &str) -> Result<String, KeyError> {
            let master = &self.0.iter().find(|(k, _)| k == id).unwrap().1;
            Ok(base64::engine::general_purpose::STANDARD.encode(seal(master, key, id.as_bytes()).unwrap()))
        }

        fn unwrap_key(&self, wrapped: &str, id: &str) -> Result<KeyBytes, KeyError> {
            let master = &self.0.iter().find(|(k, _)| k == id).unwrap().1;
            let sealed = base64::engine::general_purpose::STANDARD.decode(wrapped).unwrap();
            open(master, &sealed, id.as_bytes())
                .map(|k| KeyBytes::new(k).unwrap())
                .map_err(|why| KeyError { id: id.into(), why })
        }
    }

    #[test]
    fn single_and_double_wrapping_round_trip_and_a_wrong_master_key_fails() {
        let kms = Fixed(vec![("footer".into(), vec![1; 16]), ("pii".into(), vec![2; 32])]);
        let dek = new_data_key().unwrap();
        let metadata = KeyMaterial::wrap(&kms, &dek, "pii", false).unwrap();
        let material = KeyMaterial::parse(&metadata).unwrap();
        assert!(material.kms_instance_id.is_none() && !material.double_wrapping);
        assert_eq!(material.unwrap(&kms).unwrap(), dek);
        // Double wrapping, as pyarrow writes it: the KMS wraps a KEK, the KEK the DEK.
        let (kek, kek_id) = (vec![9u8; 16], b"0123456789abcdef".to_vec());
        let standard = base64::engine::general_purpose::STANDARD;
        let double = KeyMaterial {
            double_wrapping: true,
            key_encryption_key_id: Some(standard.encode(&kek_id)),
            wrapped_kek: Some(kms.wrap_key(&kek, "footer").unwrap()),
            wrapped_dek: standard.encode(seal(&kek, dek.as_bytes(), &kek_id).unwrap()),
            master_key_id: "footer".into(),
            ..material.clone()
        };
        assert_eq!(double.unwrap(&kms).unwrap(), dek);
        let wrong = Fixed(vec![("pii".into(), vec![3; 32])]);
        assert!(material.unwrap(&wrong).is_err());
        assert!(KeyMaterial::parse(b"pii").is_none());
        assert!(!String::from_utf8(metadata).unwrap().contains(&standard.encode(dek.as_bytes())));
    }
}
