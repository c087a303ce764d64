//! Copying a source's encoded column chunks into a part file, for columns a job passes
//! through unchanged (a `score` step keeps every input column and appends its outputs).
//!
//! Re-encoding such a column decodes nothing new and costs most of a score-only job's
//! write time (zstd's entropy coding of float columns). When a part file's row group is
//! exactly one source row group, an unchanged column's chunk can instead be spliced in as
//! the source stored it: the same pages, encodings, dictionary and statistics, read from
//! the same bytes the decoder read (so the copy and the values the steps saw cannot
//! differ). parquet-rs supports the splice (`SerializedRowGroupWriter::append_column`)
//! and checks that the chunk's Parquet type is the output column's.
//!
//! [`FetchedChunks`] keeps the bytes a shard's read fetched; [`CopiedChunk`] is one
//! chunk ready to splice.

use std::io::Write;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression, CompressionCodec};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::writer::SerializedFileWriter;

use crate::parquet_source::{ParquetSource, Shard};

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

    /// Whether nothing was fetched (yet).
    pub fn is_empty(&self) -> bool {
        self.ranges.lock().map_or(true, |kept| kept.is_empty())
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

/// Where a batch's rows come from: its shard of the source, and the chunks its read kept.
#[derive(Clone, Copy)]
pub struct BatchOrigin<'a> {
    pub source: &'a ParquetSource,
    pub shard: &'a Shard,
    pub fetched: Option<&'a FetchedChunks>,
}

/// A column of the row group being written.
enum GroupColumn {
    Copied(Box<CopiedChunk>),
    Encoded(Box<ArrowColumnWriter>),
}

/// The row group being written: rows of `shard` (the last shard that fed it).
struct OpenGroup {
    shard: Option<usize>,
    /// The rows the group must end with when it copies chunks (its shard's rows).
    copied_rows: Option<u64>,
    rows: u64,
    columns: Vec<GroupColumn>,
}

/// A part file of flat columns whose row groups are written column by column: a row group
/// fed by one whole source row group copies the chunks of the columns that pass through
/// unchanged (`copy_columns`: for each output column, the source column it is) when the
/// source stored them with the output's codec and Parquet type, and encodes the others; a
/// row group that copies nothing collects rows of any shards, up to `row_group_rows`.
pub(crate) struct CopyingWriter<W: Write + Send> {
    file: SerializedFileWriter<W>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    copy_columns: Arc<[Option<usize>]>,
    codec: CompressionCodec,
    row_group_rows: u64,
    row_groups: usize,
    group: Option<OpenGroup>,
}

impl<W: Write + Send> CopyingWriter<W> {
    /// Takes over `writer` (nothing written yet), whose schema is `schema`.
    pub fn new(
        writer: ArrowWriter<W>,
        schema: SchemaRef,
        copy_columns: Arc<[Option<usize>]>,
        compression: Compression,
        row_group_rows: usize,
    ) -> Result<Self> {
        let (file, factory) = writer.into_serialized_writer()?;
        if file.schema_descr().num_columns() != schema.fields().len() {
            return Err(ParquetError::General("copying column chunks needs flat columns".into()));
        }
        Ok(CopyingWriter {
            file,
            factory,
            schema,
            copy_columns,
            codec: compression.into(),
            row_group_rows: row_group_rows.max(1) as u64,
            row_groups: 0,
            group: None,
        })
    }

    /// The chunks of `origin`'s row group that can be copied into output column `column`.
    fn copied(&self, origin: Option<BatchOrigin<'_>>, column: usize) -> Option<CopiedChunk> {
        let origin = origin?;
        let chunk = origin.source.whole_chunk(origin.shard, (*self.copy_columns.get(column)?)?)?;
        let same_type = chunk.column_descr() == self.file.schema_descr().column(column).as_ref();
        if !same_type || chunk.compression_codec() != self.codec {
            return None;
        }
        origin.fetched?.chunk(chunk)
    }

    /// A new row group for rows of `origin`.
    fn open_group(&self, origin: Option<BatchOrigin<'_>>) -> Result<OpenGroup> {
        let writers = self.factory.create_column_writers(self.row_groups)?;
        let columns: Vec<GroupColumn> = writers
            .into_iter()
            .enumerate()
            .map(|(column, writer)| match self.copied(origin, column) {
                Some(chunk) => GroupColumn::Copied(Box::new(chunk)),
                None => GroupColumn::Encoded(Box::new(writer)),
            })
            .collect();
        let copies = columns.iter().any(|c| matches!(c, GroupColumn::Copied(_)));
        Ok(OpenGroup {
            shard: origin.map(|o| o.shard.index),
            copied_rows: origin.filter(|_| copies).map(|o| o.shard.rows),
            rows: 0,
            columns,
        })
    }

    /// Appends `batch` (of the writer's schema), whose rows come from `origin`.
    pub fn write(&mut self, batch: &RecordBatch, origin: Option<BatchOrigin<'_>>) -> Result<()> {
        let shard = origin.map(|o| o.shard.index);
        if self.group.as_ref().is_some_and(|group| group.shard != shard) {
            let next = self.open_group(origin)?;
            let next_copies = next.copied_rows.is_some();
            match self.group.as_mut() {
                Some(group) if group.copied_rows.is_none() && !next_copies => group.shard = shard,
                _ => {
                    self.close_group()?;
                    self.group = Some(next);
                }
            }
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.group.is_none() {
                self.group = Some(self.open_group(origin)?);
            }
            let Some(group) = self.group.as_mut() else { unreachable!("opened above") };
            let room = match group.copied_rows {
                Some(_) => batch.num_rows() - offset,
                None => (self.row_group_rows - group.rows.min(self.row_group_rows)) as usize,
            };
            let rows = room.min(batch.num_rows() - offset);
            let part = batch.slice(offset, rows);
            for ((column, array), field) in group.columns.iter_mut().zip(part.columns()).zip(self.schema.fields()) {
                if let GroupColumn::Encoded(writer) = column {
                    for leaf in compute_leaves(field, array)? {
                        writer.write(&leaf)?;
                    }
                }
            }
            group.rows += rows as u64;
            offset += rows;
            if group.copied_rows.is_none() && group.rows >= self.row_group_rows {
                self.close_group()?;
            }
        }
        Ok(())
    }

    /// Writes the open row group, if any.
    fn close_group(&mut self) -> Result<()> {
        let Some(group) = self.group.take() else { return Ok(()) };
        if group.rows == 0 {
            return Ok(());
        }
        if let Some(expected) = group.copied_rows
            && group.rows != expected
        {
            return Err(ParquetError::General(format!(
                "a row group copies column chunks of {expected} rows but {} rows were written beside them",
                group.rows
            )));
        }
        let mut row_group = self.file.next_row_group()?;
        for column in group.columns {
            match column {
                GroupColumn::Copied(chunk) => {
                    row_group.append_column(chunk.as_ref(), chunk.close_result(group.rows))?
                }
                GroupColumn::Encoded(writer) => writer.close()?.append_to_row_group(&mut row_group)?,
            }
        }
        row_group.close()?;
        self.row_groups += 1;
        Ok(())
    }

    /// The bytes written so far (what the encoder has flushed to `W`).
    pub fn bytes_written(&self) -> usize {
        self.file.bytes_written()
    }

    /// The writer the file goes to.
    pub fn inner_mut(&mut self) -> &mut W {
        self.file.inner_mut()
    }

    /// Writes the last row group and the footer.
    pub fn finish(&mut self) -> Result<()> {
        self.close_group()?;
        self.file.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
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
        assert!(fetched.is_empty());
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
