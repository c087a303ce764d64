//! The column chunks a shard's read fetched, kept for a sink that copies them into its part
//! files ([`crate::chunk_copy`]): [`FetchedChunks`] holds the byte ranges of the source file
//! the decoder asked for, with their bytes; [`CopiedChunk`] is one column chunk out of them,
//! ready to splice, readable at its offsets in the source file as `append_column` reads it.

use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::reader::{ChunkReader, Length};

/// The byte ranges of a source file that one shard's read fetched, with their bytes.
#[derive(Debug, Default)]
pub struct FetchedChunks {
    ranges: Mutex<Vec<(Range<u64>, Bytes)>>,
}

impl FetchedChunks {
    /// Records what a read fetched.
    pub(crate) fn record(&self, ranges: &[Range<u64>], bytes: &[Bytes]) {
        if let Ok(mut kept) = self.ranges.lock() {
            kept.extend(ranges.iter().cloned().zip(bytes.iter().cloned()));
        }
    }

    /// `chunk`'s bytes, if one fetched range covers them; `None` otherwise.
    pub fn chunk(&self, chunk: &ColumnChunkMetaData) -> Option<CopiedChunk> {
        let (start, length) = chunk.byte_range();
        let end = start.checked_add(length)?;
        let kept = self.ranges.lock().ok()?;
        let (range, bytes) = kept.iter().find(|(range, _)| range.start <= start && end <= range.end)?;
        let from = usize::try_from(start - range.start).ok()?;
        let to = usize::try_from(end - range.start).ok()?;
        let bytes = bytes.get(from..to).map(|_| bytes.slice(from..to))?;
        Some(CopiedChunk { start, bytes, metadata: chunk.clone() })
    }
}

/// One encoded column chunk of a source file: its footer entry and its bytes.
#[derive(Debug, Clone)]
pub struct CopiedChunk {
    /// The chunk's offset in its file (its dictionary page, or its first data page).
    start: u64,
    bytes: Bytes,
    metadata: ColumnChunkMetaData,
}

impl CopiedChunk {
    /// The chunk's footer entry.
    pub fn metadata(&self) -> &ColumnChunkMetaData {
        &self.metadata
    }

    /// What `append_column` takes for the chunk: its footer entry, no page index (the
    /// writer of a file with copied chunks writes none, see `parquet_sink`), no bloom filter.
    pub fn close_result(&self, rows: u64) -> ColumnCloseResult {
        ColumnCloseResult {
            bytes_written: self.bytes.len() as u64,
            rows_written: rows,
            metadata: self.metadata.clone(),
            bloom_filter: None,
            column_index: None,
            offset_index: None,
        }
    }
}

impl Length for CopiedChunk {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

/// Reads the chunk at its offsets in the source file, as `append_column` asks for them.
impl ChunkReader for CopiedChunk {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T> {
        Ok(bytes::Buf::reader(self.get_bytes(start, (self.len().saturating_sub(start)) as usize)?))
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes> {
        let from = start
            .checked_sub(self.start)
            .and_then(|from| usize::try_from(from).ok())
            .filter(|from| from.saturating_add(length) <= self.bytes.len())
            .ok_or_else(|| {
                ParquetError::EOF(format!(
                    "bytes {start}..{} are outside the column chunk at {}..{}",
                    start.saturating_add(length as u64),
                    self.start,
                    self.len()
                ))
            })?;
        Ok(self.bytes.slice(from..from + length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// A small Parquet file of two columns and its footer, written by parquet-rs.
    fn file() -> (Bytes, parquet::file::metadata::ParquetMetaData) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..1000)),
                Arc::new(Float64Array::from_iter((0..1000).map(|i| (i % 3 != 0).then_some(i as f64 / 7.0)))),
            ],
        )
        .unwrap();
        let mut writer = ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        let bytes = Bytes::from(writer.into_inner().unwrap());
        let metadata = SerializedFileReader::new(bytes.clone()).unwrap().metadata().clone();
        (bytes, metadata)
    }

    fn range((start, length): (u64, u64)) -> Range<u64> {
        start..start + length
    }

    #[test]
    fn a_chunk_is_found_inside_any_range_read_and_is_exactly_its_bytes() {
        let (bytes, metadata) = file();
        let group = metadata.row_group(0);
        let (id, x) = (range(group.column(0).byte_range()), range(group.column(1).byte_range()));
        let fetched = FetchedChunks::default();
        assert!(fetched.chunk(group.column(0)).is_none());
        // The id chunk read on its own; x inside a larger read that starts before it.
        let wider = (x.start - 10)..bytes.len() as u64;
        fetched.record(
            &[id.clone(), wider.clone()],
            &[bytes.slice(id.start as usize..id.end as usize), bytes.slice(wider.start as usize..)],
        );
        for (column, range) in [(0, id), (1, x)] {
            let chunk = fetched.chunk(group.column(column)).expect("covered by a read");
            let copied = chunk.get_bytes(range.start, (range.end - range.start) as usize).unwrap();
            assert_eq!(copied, bytes.slice(range.start as usize..range.end as usize));
            assert_eq!(chunk.close_result(1000).bytes_written, range.end - range.start);
            // Reading before or past the chunk is an error naming the bytes, never a panic.
            let before = chunk.get_bytes(range.start - 1, 4).unwrap_err().to_string();
            assert!(
                before.contains(&format!("outside the column chunk at {}..{}", range.start, range.end)),
                "{before}"
            );
            assert!(chunk.get_bytes(range.start, (range.end - range.start) as usize + 1).is_err());
        }
    }

    #[test]
    fn a_chunk_only_partly_read_is_not_copied() {
        let (bytes, metadata) = file();
        let chunk = metadata.row_group(0).column(1);
        let full = range(chunk.byte_range());
        let fetched = FetchedChunks::default();
        let part = full.start..full.end - 1;
        fetched.record(std::slice::from_ref(&part), &[bytes.slice(part.start as usize..part.end as usize)]);
        assert!(fetched.chunk(chunk).is_none());
    }
}
