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
//! [`crate::fetched_chunks`] keeps the bytes a shard's read fetched; [`CopyingWriter`]
//! writes the part file.

use std::io::Write;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression, CompressionCodec};
use parquet::errors::{ParquetError, Result};
use parquet::file::writer::SerializedFileWriter;

use crate::fetched_chunks::{CopiedChunk, FetchedChunks};
use crate::source::{Shard, Source};

/// Where a batch's rows come from: its shard of the source, and the chunks its read kept.
#[derive(Clone, Copy)]
pub struct BatchOrigin<'a> {
    pub source: &'a dyn Source,
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

    /// The chunk of `origin`'s row group that can be copied into output column `column`.
    fn copied(&self, origin: BatchOrigin<'_>, column: usize) -> Option<CopiedChunk> {
        let chunk = origin.source.whole_chunk(origin.shard, (*self.copy_columns.get(column)?)?)?;
        let same_type = chunk.column_descr() == self.file.schema_descr().column(column).as_ref();
        if !same_type || chunk.compression_codec() != self.codec {
            return None;
        }
        origin.fetched?.chunk(chunk)
    }

    /// For each output column, the chunk of `origin`'s row group it copies, if any; `None`
    /// when the row group copies nothing.
    fn copies(&self, origin: Option<BatchOrigin<'_>>) -> Option<Vec<Option<CopiedChunk>>> {
        let origin = origin.filter(|o| o.fetched.is_some())?;
        let copies: Vec<_> = (0..self.schema.fields().len()).map(|column| self.copied(origin, column)).collect();
        copies.iter().any(Option::is_some).then_some(copies)
    }

    /// A new row group for rows of `origin`, copying `copies` (from [`Self::copies`]).
    fn open_group(
        &self,
        origin: Option<BatchOrigin<'_>>,
        copies: Option<Vec<Option<CopiedChunk>>>,
    ) -> Result<OpenGroup> {
        let copied_rows = copies.as_ref().and(origin).map(|o| o.shard.rows);
        let mut copies = copies.unwrap_or_default().into_iter();
        let columns = self
            .factory
            .create_column_writers(self.row_groups)?
            .into_iter()
            .map(|writer| match copies.next().flatten() {
                Some(chunk) => GroupColumn::Copied(Box::new(chunk)),
                None => GroupColumn::Encoded(Box::new(writer)),
            })
            .collect();
        Ok(OpenGroup { shard: origin.map(|o| o.shard.index), copied_rows, rows: 0, columns })
    }

    /// Appends `batch` (of the writer's schema), whose rows come from `origin`.
    pub fn write(&mut self, batch: &RecordBatch, origin: Option<BatchOrigin<'_>>) -> Result<()> {
        let shard = origin.map(|o| o.shard.index);
        if self.group.as_ref().is_some_and(|group| group.shard != shard) {
            // A new shard: a row group that copies nothing goes on collecting rows unless
            // the new shard's row group copies chunks.
            let copies = self.copies(origin);
            match self.group.as_mut() {
                Some(group) if group.copied_rows.is_none() && copies.is_none() => group.shard = shard,
                _ => {
                    self.close_group()?;
                    self.group = Some(self.open_group(origin, copies)?);
                }
            }
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.group.is_none() {
                let copies = self.copies(origin);
                self.group = Some(self.open_group(origin, copies)?);
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
