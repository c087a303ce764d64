//! `weir ls`, `weir schema` and `weir head`: read any dataset or output, in any store.

use std::fmt::Write as _;

use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;
use weir_connectors::commit::{MANIFEST_FILE, SUCCESS_FILE, is_committed};
use weir_connectors::encryption::{Decryptor, SourceDecryption};
use weir_connectors::keys::KeySource;
use weir_connectors::lease::lease_state;
use weir_connectors::listing::list_all;
use weir_connectors::manifest::Manifest;
use weir_connectors::objects::read_json;
use weir_connectors::parquet_source::ParquetSource;
use weir_connectors::partitions::Partitioning;
use weir_connectors::source::Source;
use weir_connectors::{ConnectorError, Location, StorageOptions};

/// What a prefix holds, as far as Weir's commit protocol goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// `_SUCCESS` and a readable manifest, and no run holds the prefix.
    Committed,
    /// Traces of Weir (a manifest, part files, a dead run's directory) but no commit.
    Uncommitted,
    /// A live run holds the prefix (a committed output may still be there until it publishes).
    InProgress,
    /// Nothing Weir wrote (or nothing at all).
    NotAWeirOutput,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Committed => "committed",
            Status::Uncommitted => "uncommitted",
            Status::InProgress => "in_progress",
            Status::NotAWeirOutput => "not_a_weir_output",
        }
    }
}

/// The run that holds a prefix.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub run_id: String,
    pub attempt: String,
    pub host: String,
    pub pid: u32,
    pub since: String,
}

/// `weir ls --json`: the status of a prefix, and what its manifest says.
#[derive(Debug, Clone, Serialize)]
pub struct OutputStatus {
    pub uri: String,
    pub status: Status,
    /// The committed manifest's run id, rows and files (when there is one).
    pub run_id: Option<String>,
    pub rows: Option<u64>,
    pub files: Vec<String>,
    /// The committed manifest's generation: 1 for the first commit, one more per commit.
    pub generation: Option<u64>,
    pub holder: Option<Holder>,
    /// A run killed while publishing left its decision; the next run completes it.
    pub interrupted_commit: Option<String>,
    /// Objects under the prefix that readers see (no `_` or `.` path component).
    pub objects: usize,
    #[serde(skip)]
    listing: Vec<(String, u64)>,
}

/// Reads the status of the prefix `uri`.
pub async fn status(uri: &str) -> Result<OutputStatus, ConnectorError> {
    let location = Location::parse(uri, &StorageOptions::default())?;
    let objects = list_all(&location, location.path()).await?;
    let listing: Vec<(String, u64)> = objects
        .iter()
        .map(|meta| {
            let relative = meta
                .location
                .prefix_match(location.path())
                .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
                .unwrap_or_else(|| meta.location.to_string());
            (relative, meta.size)
        })
        .collect();
    let hidden = |name: &str| name.split('/').any(|part| part.starts_with(['_', '.']));
    let visible = listing.iter().filter(|(name, _)| !hidden(name)).count();
    let leases = lease_state(&location).await?;
    let manifest: Option<Manifest> = if is_committed(&location).await? {
        read_json(&location, &location.join(MANIFEST_FILE)).await.ok().flatten()
    } else {
        None
    };
    let weir_traces = listing.iter().any(|(name, _)| name.starts_with("_weir/") || name == SUCCESS_FILE);
    let status = if leases.holder.is_some() {
        Status::InProgress
    } else if manifest.is_some() && leases.interrupted_commit.is_none() {
        Status::Committed
    } else if weir_traces {
        Status::Uncommitted
    } else {
        Status::NotAWeirOutput
    };
    Ok(OutputStatus {
        uri: location.uri(),
        status,
        run_id: manifest.as_ref().map(|m| m.run_id.clone()),
        rows: manifest.as_ref().map(|m| m.rows),
        files: manifest.iter().flat_map(|m| m.files.iter().map(|f| f.path.clone())).collect(),
        generation: manifest.as_ref().map(|m| m.generation),
        holder: leases.holder.map(|c| Holder {
            run_id: c.run_id,
            attempt: c.attempt,
            host: c.host,
            pid: c.pid,
            since: c.since,
        }),
        interrupted_commit: leases.interrupted_commit,
        objects: visible,
        listing,
    })
}

/// Lists the objects under `uri` with their sizes, and says what `status` found.
pub async fn ls(uri: &str, status: &OutputStatus) -> Result<String, ConnectorError> {
    let mut out = String::new();
    if status.listing.is_empty() {
        let location = Location::parse(uri, &StorageOptions::default())?;
        match location.store().head(location.path()).await {
            Ok(meta) => {
                let _ = writeln!(out, "{:>12}  {}", meta.size, location.uri_of(&meta.location));
                return Ok(out);
            }
            Err(_) => return Err(ConnectorError::NoDataFiles { uri: location.uri() }),
        }
    }
    for (name, size) in &status.listing {
        let _ = writeln!(out, "{size:>12}  {name}");
    }
    if let (Some(run_id), Some(rows)) = (&status.run_id, status.rows) {
        let _ = writeln!(out, "committed: run {run_id}, {rows} rows in {} file(s)", status.files.len());
    }
    if let Some(holder) = &status.holder {
        let _ = writeln!(
            out,
            "in progress: run {} (host {}, pid {}) holds the output since {}",
            holder.run_id, holder.host, holder.pid, holder.since
        );
    }
    if let Some(attempt) = &status.interrupted_commit {
        let _ = writeln!(out, "interrupted commit: attempt {attempt} will be completed by the next run on this output");
    }
    if status.status == Status::Uncommitted {
        let _ = writeln!(out, "not committed: no {SUCCESS_FILE} (a run failed or was killed)");
    }
    Ok(out)
}

/// `head` and `schema` read encrypted files with the keys of the environment
/// (`WEIR_KEY_<ID>`, `WEIR_KEY_DIR`); without them they say the file is encrypted.
fn inspect_decryptor(location: &Location) -> Result<Decryptor, ConnectorError> {
    Decryptor::new(&SourceDecryption::default(), KeySource::from_env())
        .map_err(|message| ConnectorError::Invalid { uri: location.uri(), message })
}

/// The dataset's schema, row and file counts.
pub async fn schema(uri: &str) -> Result<String, ConnectorError> {
    let location = Location::parse(uri, &StorageOptions::default())?;
    let source = ParquetSource::open(
        &location,
        None,
        Partitioning::Hive,
        Some(&inspect_decryptor(&location)?.for_schema_only()),
    )
    .await?;
    let mut out = String::new();
    for field in source.schema().fields() {
        let nullable = if field.is_nullable() { "" } else { " not null" };
        let _ = writeln!(out, "{}: {}{nullable}", field.name(), field.data_type());
    }
    let _ = writeln!(out, "-- {} rows in {} file(s)", source.total_rows(), source.files().len());
    Ok(out)
}

/// The first `rows` rows of the dataset (files in path order), as a table.
pub async fn head(uri: &str, rows: usize) -> Result<String, ConnectorError> {
    let location = Location::parse(uri, &StorageOptions::default())?;
    let source = ParquetSource::open(&location, None, Partitioning::Hive, Some(&inspect_decryptor(&location)?)).await?;
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut remaining = rows;
    'shards: for shard in source.shards(u64::MAX) {
        let mut stream = source.read_shard(&shard, remaining.clamp(1, 8192), None)?;
        while let Some(batch) = stream.next().await {
            if remaining == 0 {
                break 'shards;
            }
            let batch = batch?;
            let taken = batch.slice(0, remaining.min(batch.num_rows()));
            remaining -= taken.num_rows();
            batches.push(taken);
        }
        if remaining == 0 {
            break;
        }
    }
    // Nulls print as `null`, so that they differ from empty strings.
    let options = arrow::util::display::FormatOptions::default().with_null("null");
    let table = arrow::util::pretty::pretty_format_batches_with_options(&batches, &options)
        .map_err(|e| ConnectorError::Invalid { uri: location.uri(), message: e.to_string() })?;
    Ok(format!("{table}\n"))
}
