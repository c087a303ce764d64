//! Parquet modular encryption of part files (`[sink.encryption]`) and decryption of inputs
//! (`[source.decryption]`).
//!
//! ```toml
//! [sink.encryption]
//! footer_key = "footer"                      # a key id; the job never holds key bytes
//! column_keys = { pii = ["email", "ssn"] }   # optional: columns under keys of their own
//! plaintext_footer = false                   # true: schema and statistics readable by all
//! keys = "kms"                               # or "direct"
//!
//! [source.decryption]                        # inputs may be encrypted; may stay empty
//! aad_prefix = "…"                           # only for files that do not store theirs
//! ```
//!
//! Every column is encrypted: those under a `column_keys` id with that key, the others
//! with the footer key, so someone holding only the footer key reads every column but the
//! ones under keys of their own. The footer is encrypted too, unless `plaintext_footer`
//! (then it is signed, and readers without keys see the schema). Each file stores an AAD
//! prefix, `weir/<run id>/<path in the output>`, so its modules are bound to its identity.
//!
//! With `keys = "kms"` (the default) key ids name master keys: each file gets fresh data
//! keys, wrapped by the master keys through [`crate::kms`] and stored in the file's key
//! metadata in the format pyarrow and parquet-java read. With `keys = "direct"` key ids
//! name data keys, used as they are, and the key metadata is the id. Key bytes come from
//! [`crate::keys`] in both cases. Reading needs no mode: key metadata that is key material
//! is unwrapped, anything else is a key id.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use arrow::datatypes::Schema;
use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::errors::ParquetError;
use parquet::file::column_crypto_metadata::ColumnCryptoMetaData;
use parquet::file::metadata::ParquetMetaData;
use serde::{Deserialize, Serialize};

use crate::keys::{KeyBytes, KeyError, KeySource, check_key_id};
use crate::kms::{KeyMaterial, LocalKms, new_data_key};

/// What key ids name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// Master keys of a KMS, wrapping a fresh data key per file (envelope encryption).
    #[default]
    Kms,
    /// Data keys, used as they are.
    Direct,
}

/// `[sink.encryption]`; see the module documentation. It holds key ids only, so it is
/// recorded in the manifest as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkEncryption {
    pub footer_key: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub column_keys: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub plaintext_footer: bool,
    #[serde(default)]
    pub keys: KeyMode,
}

impl SinkEncryption {
    /// Checks the key ids and that every column named is one of `file_schema`'s, under one
    /// key only; `partition_by` columns live in folder names and cannot be encrypted.
    pub fn check(&self, file_schema: &Schema, partition_by: &[String]) -> Result<(), String> {
        check_key_id(&self.footer_key)?;
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (key, columns) in &self.column_keys {
            check_key_id(key)?;
            if columns.is_empty() {
                return Err(format!("column key '{key}' lists no column"));
            }
            for column in columns {
                if partition_by.contains(column) {
                    return Err(format!(
                        "column '{column}' is a partition_by column: its values name folders, which cannot be encrypted"
                    ));
                }
                if file_schema.field_with_name(column).is_err() {
                    return Err(format!("column key '{key}' names column '{column}', which the output does not have"));
                }
                if let Some(other) = seen.insert(column, key) {
                    return Err(format!("column '{column}' is under two keys, '{other}' and '{key}'"));
                }
            }
        }
        Ok(())
    }

    /// Every key id the sink uses.
    pub fn key_ids(&self) -> BTreeSet<&str> {
        std::iter::once(self.footer_key.as_str()).chain(self.column_keys.keys().map(String::as_str)).collect()
    }

    /// Fetches every key once, so that a missing or malformed one stops the run before
    /// anything is written.
    pub fn check_keys(&self, keys: &KeySource) -> Result<(), KeyError> {
        for id in self.key_ids() {
            keys.key(id)?;
        }
        Ok(())
    }

    /// The encryption of one part file with `schema`, whose AAD prefix is `aad_prefix`.
    pub fn file_properties(
        &self,
        keys: &KeySource,
        schema: &Schema,
        aad_prefix: &str,
    ) -> Result<Arc<FileEncryptionProperties>, KeyError> {
        let kms = LocalKms::new(keys.clone());
        // (key bytes, key metadata) of each key id, fresh for this file with a KMS.
        let mut material: BTreeMap<&str, (KeyBytes, Vec<u8>)> = BTreeMap::new();
        for id in self.key_ids() {
            let is_footer = id == self.footer_key;
            let entry = match self.keys {
                KeyMode::Direct => (keys.key(id)?, id.as_bytes().to_vec()),
                KeyMode::Kms => {
                    let data_key = new_data_key().map_err(|why| KeyError { id: id.to_string(), why })?;
                    let metadata = KeyMaterial::wrap(&kms, &data_key, id, is_footer)?;
                    (data_key, metadata)
                }
            };
            material.insert(id, entry);
        }
        let build_error =
            |e: ParquetError| KeyError { id: self.footer_key.clone(), why: format!("cannot be used: {e}") };
        let (footer_key, footer_metadata) = &material[self.footer_key.as_str()];
        let mut builder = FileEncryptionProperties::builder(footer_key.to_vec())
            .with_footer_key_metadata(footer_metadata.clone())
            .with_plaintext_footer(self.plaintext_footer)
            .with_aad_prefix(aad_prefix.as_bytes().to_vec())
            .with_aad_prefix_storage(true);
        if !self.column_keys.is_empty() {
            // With column keys parquet leaves unlisted columns in the clear: list every
            // leaf column, under its own key or the footer key.
            let key_of: HashMap<&str, &str> = self
                .column_keys
                .iter()
                .flat_map(|(key, columns)| columns.iter().map(move |c| (c.as_str(), key.as_str())))
                .collect();
            // A column under the footer key carries column key material for it (wrapped once
            // a file, not once a column).
            let footer_column_metadata = match self.keys {
                KeyMode::Direct => footer_metadata.clone(),
                KeyMode::Kms => KeyMaterial::wrap(&kms, footer_key, &self.footer_key, false)?,
            };
            let descriptor = parquet::arrow::ArrowSchemaConverter::new().convert(schema).map_err(build_error)?;
            for leaf in descriptor.columns() {
                let top = leaf.path().parts()[0].as_str();
                let (bytes, metadata) = match key_of.get(top) {
                    Some(key) => {
                        let (bytes, metadata) = &material[key];
                        (bytes, metadata.clone())
                    }
                    None => (footer_key, footer_column_metadata.clone()),
                };
                builder = builder.with_column_key_and_metadata(&leaf.path().string(), bytes.to_vec(), metadata);
            }
        }
        builder.build().map_err(build_error)
    }
}

/// `[source.decryption]`: inputs may be encrypted; keys come from [`crate::keys`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDecryption {
    /// The AAD prefix of files that do not store theirs.
    #[serde(default)]
    pub aad_prefix: Option<String>,
}

/// Decryption of a source's files, and what it learned for error messages.
#[derive(Debug, Clone)]
pub struct Decryptor {
    properties: Arc<FileDecryptionProperties>,
    retriever: Arc<EnvRetriever>,
    /// Whether [`Decryptor::check_columns`] looks for the column keys (not for readers of
    /// the schema alone).
    check_column_keys: bool,
}

impl Decryptor {
    pub fn new(spec: &SourceDecryption, keys: KeySource) -> Result<Decryptor, String> {
        let retriever = Arc::new(EnvRetriever { kms: LocalKms::new(keys.clone()), keys, asked: Mutex::default() });
        let mut builder = FileDecryptionProperties::with_key_retriever(retriever.clone());
        if let Some(prefix) = &spec.aad_prefix {
            builder = builder.with_aad_prefix(prefix.as_bytes().to_vec());
        }
        let properties = builder.build().map_err(|e| format!("source.decryption: {e}"))?;
        Ok(Decryptor { properties, retriever, check_column_keys: true })
    }

    /// A decryptor for reading footers only (`weir schema`): columns under keys the
    /// environment lacks are no error.
    pub fn for_schema_only(mut self) -> Decryptor {
        self.check_column_keys = false;
        self
    }

    pub fn properties(&self) -> &Arc<FileDecryptionProperties> {
        &self.properties
    }

    /// Checks that the key of every encrypted column among the `roots` (indices of top-level
    /// columns) that a file's `metadata` holds can be found, so that a column a job needs
    /// but cannot decrypt is named before anything is read.
    pub fn check_columns(&self, metadata: &ParquetMetaData, roots: &[usize]) -> Result<(), String> {
        let Some(row_group) = metadata.row_groups().first().filter(|_| self.check_column_keys) else { return Ok(()) };
        let schema = metadata.file_metadata().schema_descr();
        for (leaf, column) in row_group.columns().iter().enumerate() {
            if !roots.contains(&schema.get_column_root_idx(leaf)) {
                continue;
            }
            if let Some(ColumnCryptoMetaData::ENCRYPTION_WITH_COLUMN_KEY(crypto)) = column.crypto_metadata()
                && let Some(key_metadata) = &crypto.key_metadata
                && let Err(error) = self.retriever.retrieve_key(key_metadata)
            {
                let text = error.to_string();
                let why = text.split_once(KEY_ERROR_MARK).map_or(text.as_str(), |(_, why)| why);
                return Err(format!("column '{}' is encrypted, and {why}", crypto.path_in_schema.join(".")));
            }
        }
        Ok(())
    }

    /// The key ids asked for so far, for an error that cannot name its own.
    pub fn keys_asked(&self) -> Vec<String> {
        self.retriever.asked.lock().map(|asked| asked.iter().cloned().collect()).unwrap_or_default()
    }
}

/// The prefix of every error a key lookup gives through parquet, so that it can be told
/// from the file's own errors.
pub const KEY_ERROR_MARK: &str = "weir key: ";

/// Finds the key a file's key metadata names: unwraps key material through the local KMS,
/// or looks a key id up.
#[derive(Debug)]
struct EnvRetriever {
    kms: LocalKms,
    keys: KeySource,
    asked: Mutex<BTreeSet<String>>,
}

impl KeyRetriever for EnvRetriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        let found = match KeyMaterial::parse(key_metadata) {
            Some(material) => {
                self.note(&material.master_key_id);
                material.unwrap(&self.kms)
            }
            None => match std::str::from_utf8(key_metadata) {
                Ok(id) if check_key_id(id).is_ok() => {
                    self.note(id);
                    self.keys.key(id)
                }
                _ => Err(KeyError {
                    id: "(unnamed)".to_string(),
                    why: "is named by key metadata that is neither key material nor a key id".to_string(),
                }),
            },
        };
        found.map(|key| key.to_vec()).map_err(|e| ParquetError::General(format!("{KEY_ERROR_MARK}{e}")))
    }
}

impl EnvRetriever {
    fn note(&self, id: &str) {
        if let Ok(mut asked) = self.asked.lock() {
            asked.insert(id.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
            Field::new("day", DataType::Utf8, true),
        ])
    }

    fn spec(columns: &[(&str, &[&str])]) -> SinkEncryption {
        SinkEncryption {
            footer_key: "footer".into(),
            column_keys: columns
                .iter()
                .map(|(k, c)| (k.to_string(), c.iter().map(|c| c.to_string()).collect()))
                .collect(),
            plaintext_footer: false,
            keys: KeyMode::Kms,
        }
    }

    fn key_dir(keys: &[(&str, u8)]) -> (tempfile::TempDir, KeySource) {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        for (id, byte) in keys {
            let encoded = base64::engine::general_purpose::STANDARD.encode([*byte; 16]);
            std::fs::write(dir.path().join(format!("enc-test-{id}")), encoded).unwrap();
        }
        let source = KeySource::with_dir(dir.path().to_path_buf());
        (dir, source)
    }

    fn batch() -> arrow::record_batch::RecordBatch {
        use arrow::array::{Int64Array, StringArray};
        arrow::record_batch::RecordBatch::try_new(
            Arc::new(schema()),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec!["a@x.org", "b@x.org", "c@x.org"])),
                Arc::new(StringArray::from(vec!["day-mon", "day-tue", "day-wed"])),
            ],
        )
        .unwrap()
    }

    fn write(spec: &SinkEncryption, keys: &KeySource) -> bytes::Bytes {
        let properties = spec.file_properties(keys, &schema(), "weir/test/part-0.parquet").unwrap();
        let properties =
            parquet::file::properties::WriterProperties::builder().with_file_encryption_properties(properties).build();
        let mut buffer = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut buffer, Arc::new(schema()), Some(properties)).unwrap();
        writer.write(&batch()).unwrap();
        writer.close().unwrap();
        bytes::Bytes::from(buffer)
    }

    fn read(file: bytes::Bytes, keys: KeySource) -> Result<arrow::record_batch::RecordBatch, String> {
        let decryptor = Decryptor::new(&SourceDecryption::default(), keys).unwrap();
        let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new()
            .with_file_decryption_properties(decryptor.properties().clone());
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
            .map_err(|e| e.to_string())?;
        let columns = reader.metadata().clone();
        decryptor.check_columns(&columns, &[0, 1, 2])?;
        reader.build().map_err(|e| e.to_string())?.next().unwrap().map_err(|e| e.to_string())
    }

    #[test]
    fn kms_and_direct_files_read_back_and_a_missing_column_key_is_named() {
        let (_dir, keys) = key_dir(&[("footer", 1), ("pii", 2)]);
        for mode in [KeyMode::Kms, KeyMode::Direct] {
            let spec = SinkEncryption {
                footer_key: "enc-test-footer".into(),
                column_keys: [("enc-test-pii".to_string(), vec!["email".to_string()])].into(),
                plaintext_footer: false,
                keys: mode,
            };
            let file = write(&spec, &keys);
            assert!(!file.windows(7).any(|w| w == b"a@x.org"), "{mode:?}: an email in the clear");
            // Plaintexts of 7 bytes with a character base64 lacks: the file's random bytes and
            // its base64 key metadata held "mon" about once in 1,000 runs.
            assert!(!file.windows(7).any(|w| w == b"day-mon"), "{mode:?}: a footer-key column in the clear");
            assert_eq!(read(file.clone(), keys.clone()).unwrap(), batch(), "{mode:?}");
            let (_other, footer_only) = key_dir(&[("footer", 1)]);
            let err = read(file.clone(), footer_only).unwrap_err();
            assert!(err.contains("column 'email'") && err.contains("'enc-test-pii'"), "{mode:?}: {err}");
            let (_wrong, wrong) = key_dir(&[("footer", 9), ("pii", 2)]);
            assert!(read(file, wrong).is_err(), "{mode:?}: a wrong footer key");
        }
    }

    #[test]
    fn columns_must_exist_once_and_not_be_partitions() {
        assert!(spec(&[("pii", &["email"])]).check(&schema(), &[]).is_ok());
        let err = spec(&[("pii", &["mail"])]).check(&schema(), &[]).unwrap_err();
        assert!(err.contains("'mail'"), "{err}");
        let err = spec(&[("a", &["email"]), ("b", &["email"])]).check(&schema(), &[]).unwrap_err();
        assert!(err.contains("two keys"), "{err}");
        let err = spec(&[("pii", &["day"])]).check(&schema(), &["day".into()]).unwrap_err();
        assert!(err.contains("partition_by"), "{err}");
        let err = spec(&[("../x", &["email"])]).check(&schema(), &[]).unwrap_err();
        assert!(err.contains("key id"), "{err}");
    }
}
