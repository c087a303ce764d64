//! Parquet's view of an object in a store: ranged reads of a file of known size.
//!
//! Footers are fetched with one suffix read (a 64 KiB prefetch that covers most footers);
//! column chunks with `get_ranges`, which coalesces nearby ranges and fetches them
//! concurrently, so only the projected columns of the wanted row groups cross the wire.
//! Small objects that are read whole (a `fitted.json`) use [`read_object`].
//!
//! Column chunks of a file on the local filesystem are read without `object_store`:
//! its `LocalFileSystem` zero-fills every buffer before reading into it (a `memset` of
//! every byte read, about 2% of a decode-bound job's CPU). Here contiguous ranges are read
//! once, with `read_to_end` into a buffer's unused capacity (never zeroed), and handed out
//! as slices of it; errors are still `object_store::Error`s (`NotFound` for a vanished
//! file, a `Generic` one naming the file for a failed or short read).
//!
//! Why not parquet's own `ParquetObjectReader`: parquet 60 deprecates it ("Implement
//! `AsyncFileReader` directly instead"; apache/arrow-rs#10308), which is what this is: the
//! same ranged reads and footer prefetch in a few lines, with errors left as the store's
//! own `object_store::Error` so that `parquet_source` can tell a store failure from a
//! corrupt file.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, future::BoxFuture};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::fetched_chunks::FetchedChunks;

/// Reads a whole (small) object, such as an earlier run's `fitted.json`.
pub async fn read_object(location: &crate::Location) -> std::result::Result<Bytes, crate::ConnectorError> {
    let store_error = |e| crate::ConnectorError::store(location.uri(), e);
    location.store().get(location.path()).await.map_err(store_error)?.bytes().await.map_err(store_error)
}

/// [`read_object`] for an object of at most `max` bytes: a larger one is refused, naming its
/// size, before any of it is read into memory.
pub async fn read_object_at_most(
    location: &crate::Location,
    max: u64,
) -> std::result::Result<Bytes, crate::ConnectorError> {
    let store_error = |e| crate::ConnectorError::store(location.uri(), e);
    let size = location.store().head(location.path()).await.map_err(store_error)?.size;
    if size > max {
        return Err(crate::ConnectorError::Invalid {
            uri: location.uri(),
            message: format!("it is {size} bytes; at most {max} are read"),
        });
    }
    read_object(location).await
}

/// Bytes read from the end of a file in the first request for its footer.
const FOOTER_PREFETCH: usize = 64 * 1024;

/// A Parquet file in an object store.
#[derive(Debug, Clone)]
pub struct StoreFileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    /// The file on the local filesystem, when the store is one.
    local_file: Option<PathBuf>,
    /// Where the column chunks read are kept, for a sink that copies them.
    fetched: Option<Arc<FetchedChunks>>,
}

impl StoreFileReader {
    /// The object at `path` in `location`'s store, `size` bytes long.
    pub fn new(location: &crate::Location, path: Path, size: u64) -> Self {
        let local_file = location.local_file(&path);
        StoreFileReader { store: location.store().clone(), path, size, local_file, fetched: None }
    }

    /// Also keeps every range read in `fetched` ([`crate::fetched_chunks`]).
    pub fn keeping_chunks(mut self, fetched: Arc<FetchedChunks>) -> Self {
        self.fetched = Some(fetched);
        self
    }
}

/// Reads `ranges` of the local file `file`, reading each run of contiguous ranges once
/// (as object_store's `coalesce_ranges` does with a gap of 0; that one is private in 0.14).
fn read_local_ranges(file: &std::path::Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
    let failed = |source: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("reading {}: {source}", file.display()).into(),
    };
    let mut handle = std::fs::File::open(file).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => {
            object_store::Error::NotFound { path: file.display().to_string(), source: source.into() }
        }
        _ => failed(source),
    })?;
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i].start);
    let mut out = vec![Bytes::new(); ranges.len()];
    let mut next = 0;
    while next < order.len() {
        // The run of ranges that start inside (or right at the end of) the bytes read so far.
        let start = ranges[order[next]].start;
        let mut end = ranges[order[next]].end;
        let mut last = next + 1;
        while last < order.len() && ranges[order[last]].start <= end {
            end = end.max(ranges[order[last]].end);
            last += 1;
        }
        let wanted = usize::try_from(end.saturating_sub(start)).map_err(|e| failed(std::io::Error::other(e)))?;
        let mut buffer = Vec::with_capacity(wanted);
        handle.seek(SeekFrom::Start(start)).map_err(failed)?;
        (&mut handle).take(wanted as u64).read_to_end(&mut buffer).map_err(failed)?;
        if buffer.len() != wanted {
            return Err(failed(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("bytes {start}..{end} wanted, the file ends after {} of them", buffer.len()),
            )));
        }
        let run = Bytes::from(buffer);
        for &index in &order[next..last] {
            let range = &ranges[index];
            out[index] = run.slice((range.start - start) as usize..(range.end - start) as usize);
        }
        next = last;
    }
    Ok(out)
}

fn external(error: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(error))
}

impl AsyncFileReader for StoreFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        async move {
            let bytes = self.store.get_range(&self.path, range.clone()).await.map_err(external)?;
            if let Some(fetched) = &self.fetched {
                fetched.record(std::slice::from_ref(&range), std::slice::from_ref(&bytes));
            }
            Ok(bytes)
        }
        .boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        async move {
            let wanted = self.fetched.is_some().then(|| ranges.clone());
            let read = match self.local_file.clone() {
                Some(file) => tokio::task::spawn_blocking(move || read_local_ranges(&file, &ranges))
                    .await
                    .unwrap_or_else(|e| {
                        Err(object_store::Error::Generic { store: "LocalFileSystem", source: e.into() })
                    })
                    .map_err(external),
                None => self.store.get_ranges(&self.path, &ranges).await.map_err(external),
            }?;
            if let (Some(fetched), Some(ranges)) = (&self.fetched, wanted) {
                fetched.record(&ranges, &read);
            }
            Ok(read)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>>> {
        let size = self.size;
        let decryption = options.and_then(|o| o.file_decryption_properties()).cloned();
        async move {
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(FOOTER_PREFETCH))
                .with_decryption_properties(decryption)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    #[test]
    fn local_ranges_are_the_bytes_at_those_offsets_in_any_order_and_overlap() {
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let file = file_of(&content);
        let ranges = vec![
            50_000..60_000,
            0..10,
            10..20, // contiguous with the one before it
            5..15,  // overlapping both
            99_990..100_000,
            70_000..70_000, // empty
            30_000..30_001,
            0..100_000,
        ];
        let read = read_local_ranges(file.path(), &ranges).unwrap();
        let on_disk = std::fs::read(file.path()).unwrap();
        assert_eq!(read.len(), ranges.len());
        for (range, bytes) in ranges.iter().zip(&read) {
            assert_eq!(&bytes[..], &on_disk[range.start as usize..range.end as usize], "range {range:?}");
        }
    }

    #[test]
    fn a_range_past_the_end_of_a_local_file_is_an_error_naming_it() {
        let file = file_of(&[7u8; 1000]);
        let error = read_local_ranges(file.path(), &[0..10, 900..1001]).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&file.path().display().to_string()), "{text}");
        assert!(text.contains("900..1001") && text.contains("100 of them"), "{text}");
    }

    #[test]
    fn a_vanished_local_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("part-0.parquet");
        let error = read_local_ranges(&gone, &[0..10, 20..30]).unwrap_err();
        assert!(matches!(error, object_store::Error::NotFound { .. }), "{error:?}");
    }
}
