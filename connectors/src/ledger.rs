//! The ledger of an incremental source (`source.incremental = true`): which input files an
//! output already holds the rows of. It lives in the committed output's manifest
//! ([`Manifest::ledger`]), so it changes only with a commit, under the output's lease.
//!
//! A listed file is *new* when the ledger has no entry for its URI, *processed* when the
//! entry has the same size and version (ETag, or modification time where the store gives
//! no ETag), and *changed* otherwise: its rows are in the output already, so processing it
//! again would add them twice. Files in the ledger that are no longer listed are fine (a
//! source's retention removed them).

use std::collections::HashMap;

use crate::commit::{MANIFEST_FILE, is_committed};
use crate::listing::DataFile;
use crate::manifest::{LedgerEntry, Manifest};
use crate::objects::read_json;
use crate::{ConnectorError, Location};

/// A processed file whose size or version differs from the ledger's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    pub uri: String,
    pub was: LedgerEntry,
    pub bytes: u64,
    pub version: String,
}

/// The source's files sorted by what the ledger says of them.
#[derive(Debug, Default)]
pub struct Selection {
    pub new: Vec<DataFile>,
    pub changed: Vec<ChangedFile>,
    pub processed: usize,
}

/// Sorts `files` of `source` against `ledger`, keeping the listing's order.
pub fn select(source: &Location, files: Vec<DataFile>, ledger: &[LedgerEntry]) -> Selection {
    let known: HashMap<&str, &LedgerEntry> = ledger.iter().map(|entry| (entry.uri.as_str(), entry)).collect();
    let mut selection = Selection::default();
    for file in files {
        let uri = source.uri_of(&file.path);
        match known.get(uri.as_str()) {
            None => selection.new.push(file),
            Some(entry) if entry.bytes == file.size && entry.version == file.version => selection.processed += 1,
            Some(entry) => selection.changed.push(ChangedFile {
                uri,
                was: (*entry).clone(),
                bytes: file.size,
                version: file.version,
            }),
        }
    }
    selection
}

/// The manifest of the output at `sink` if it is committed (`_SUCCESS` present).
pub async fn committed_manifest(sink: &Location) -> Result<Option<Manifest>, ConnectorError> {
    if !is_committed(sink).await? {
        return Ok(None);
    }
    read_json(sink, &sink.join(MANIFEST_FILE)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageOptions;
    use object_store::path::Path;

    fn file(name: &str, size: u64, version: &str) -> DataFile {
        DataFile {
            path: Path::from(format!("src/{name}")),
            size,
            version: version.into(),
            last_modified: Default::default(),
        }
    }

    #[test]
    fn new_processed_and_changed_files_are_told_apart() {
        let source = Location::parse("s3://bucket/src", &StorageOptions::default()).unwrap();
        let entry = |name: &str, bytes, version: &str| LedgerEntry {
            uri: format!("s3://bucket/src/{name}"),
            bytes,
            version: version.into(),
        };
        let ledger = [entry("a.parquet", 10, "e1"), entry("b.parquet", 20, "e2"), entry("gone.parquet", 5, "e9")];
        let files = vec![
            file("a.parquet", 10, "e1"),
            file("b.parquet", 20, "e2-rewritten"),
            file("c.parquet", 30, "e3"),
            file("d.parquet", 40, "e4"),
        ];
        let selection = select(&source, files, &ledger);
        assert_eq!(selection.processed, 1);
        let new: Vec<&str> = selection.new.iter().map(|f| f.path.as_ref()).collect();
        assert_eq!(new, ["src/c.parquet", "src/d.parquet"]);
        assert_eq!(selection.changed.len(), 1);
        assert_eq!(selection.changed[0].uri, "s3://bucket/src/b.parquet");
        assert_eq!(selection.changed[0].was.version, "e2");

        let resized = select(&source, vec![file("a.parquet", 11, "e1")], &ledger);
        assert_eq!((resized.processed, resized.changed.len()), (0, 1), "a size change alone is a change");
    }
}
