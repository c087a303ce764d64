//! `weir ls`, `weir schema` and `weir head`: read any dataset or output, in any store.

use std::fmt::Write as _;

use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use weir_connectors::commit::{MANIFEST_FILE, SUCCESS_FILE, is_committed};
use weir_connectors::listing::list_all;
use weir_connectors::manifest::Manifest;
use weir_connectors::parquet_source::ParquetSource;
use weir_connectors::{ConnectorError, Location, StorageOptions};

/// Lists the objects under `uri` with their sizes, and says whether it is a committed output.
pub async fn ls(uri: &str) -> Result<String, ConnectorError> {
    let location = Location::parse(uri, &StorageOptions::default())?;
    let objects = list_all(&location, location.path()).await?;
    let mut out = String::new();
    if objects.is_empty() {
        match location.store().head(location.path()).await {
            Ok(meta) => {
                let _ = writeln!(out, "{:>12}  {}", meta.size, location.uri_of(&meta.location));
                return Ok(out);
            }
            Err(_) => return Err(ConnectorError::NoDataFiles { uri: location.uri() }),
        }
    }
    for meta in &objects {
        let relative = meta
            .location
            .prefix_match(location.path())
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
            .unwrap_or_else(|| meta.location.to_string());
        let _ = writeln!(out, "{:>12}  {relative}", meta.size);
    }
    if is_committed(&location).await? {
        let manifest_path = location.join(MANIFEST_FILE);
        let manifest = match location.store().get(&manifest_path).await {
            Ok(got) => got.bytes().await.ok().and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok()),
            Err(_) => None,
        };
        match manifest {
            Some(m) => {
                let _ = writeln!(
                    out,
                    "committed: job '{}', run {}, {} rows in {} file(s)",
                    m.job.name,
                    m.run_id,
                    m.rows,
                    m.files.len()
                );
            }
            None => {
                let _ = writeln!(out, "committed ({SUCCESS_FILE} present, no readable manifest)");
            }
        }
    } else if objects.iter().any(|m| m.location.filename().is_some_and(|f| f.starts_with("part-"))) {
        let _ = writeln!(out, "not committed: no {SUCCESS_FILE} (a run is in progress, or failed)");
    }
    Ok(out)
}

/// The dataset's schema, row and file counts.
pub async fn schema(uri: &str) -> Result<String, ConnectorError> {
    let location = Location::parse(uri, &StorageOptions::default())?;
    let source = ParquetSource::open(&location, None).await?;
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
    let source = ParquetSource::open(&location, None).await?;
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut remaining = rows;
    'shards: for shard in source.shards(u64::MAX) {
        let mut stream = source.read_shard(&shard, remaining.clamp(1, 8192))?;
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
    let table = arrow::util::pretty::pretty_format_batches(&batches)
        .map_err(|e| ConnectorError::Invalid { uri: location.uri(), message: e.to_string() })?;
    Ok(format!("{table}\n"))
}
