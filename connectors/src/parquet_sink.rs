//! Writing one Parquet part file to a store, streamed: row groups are encoded as they
//! fill and uploaded in parts (a multipart upload on S3), so memory holds at most one
//! row group in progress and a bounded number of upload parts per writer
//! ([`UPLOAD_PART_BYTES`] each, at most [`UPLOADS_IN_FLIGHT`] at once).
//!
//! The encoder writes into [`EncodedChunks`]: fixed-size buffers, each allocated once at
//! its full size and handed to the upload as it is (`BufWriter::put`, no copy). parquet-rs's
//! `AsyncArrowWriter` instead collects each row group in a `Vec` that grows from empty by
//! doubling and then copies it into the upload's buffer: two more copies of every byte
//! written, into freshly faulted memory (measured: 7% of a score-only job's CPU time).

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use bytes::Bytes;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::chunk_copy::{BatchOrigin, CopyingWriter};
use crate::encryption::SinkEncryption;
use crate::keys::KeySource;
use crate::{ConnectorError, Location};

/// Bytes of one upload part (S3 wants at least 5 MiB per part but the last).
pub const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;
/// Upload parts of one writer in flight at once.
pub const UPLOADS_IN_FLIGHT: usize = 2;
/// Bytes of one buffer of encoded output ([`EncodedChunks`]): small enough that the
/// allocator reuses freed ones instead of faulting in fresh memory for each.
const ENCODED_CHUNK_BYTES: usize = 1 << 20;

/// The bytes the encoder has written and the upload has not taken yet: full chunks of
/// [`ENCODED_CHUNK_BYTES`] and the one being filled. A chunk never grows past the size it
/// was allocated with, so no byte is copied twice on its way to the upload.
#[derive(Debug, Default)]
struct EncodedChunks {
    full: Vec<Bytes>,
    filling: Vec<u8>,
}

impl EncodedChunks {
    /// The chunks to upload now; `all` includes the one being filled (at the end of the file).
    fn take(&mut self, all: bool) -> Vec<Bytes> {
        let mut chunks = std::mem::take(&mut self.full);
        if all && !self.filling.is_empty() {
            chunks.push(Bytes::from(std::mem::take(&mut self.filling)));
        }
        chunks
    }
}

impl Write for EncodedChunks {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let written = data.len();
        while !data.is_empty() {
            if self.filling.capacity() == 0 {
                self.filling = Vec::with_capacity(ENCODED_CHUNK_BYTES);
            }
            let room = self.filling.capacity() - self.filling.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.filling.extend_from_slice(now);
            data = rest;
            if self.filling.len() == self.filling.capacity() {
                self.full.push(Bytes::from(std::mem::take(&mut self.filling)));
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Part-file compression codecs (`sink.compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    #[default]
    Zstd,
    Snappy,
    Lz4,
    Gzip,
    Brotli,
    None,
}

impl Codec {
    /// The codec's name in a job file.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Gzip => "gzip",
            Codec::Brotli => "brotli",
            Codec::None => "none",
        }
    }

    /// Parquet's codec at `level` (`sink.compression_level`; the codec's default when
    /// `None`). Levels exist for zstd (-131072 to 22: negative levels trade size for speed,
    /// 1 is the default), gzip (0 to 9, default 6) and brotli (0 to 11, default 1); the
    /// error says which levels `self` takes.
    pub fn compression(self, level: Option<i32>) -> Result<Compression, String> {
        let Some(level) = level else {
            return Ok(match self {
                Codec::Zstd => Compression::ZSTD(ZstdLevel::default()),
                Codec::Snappy => Compression::SNAPPY,
                Codec::Lz4 => Compression::LZ4_RAW,
                Codec::Gzip => Compression::GZIP(GzipLevel::default()),
                Codec::Brotli => Compression::BROTLI(BrotliLevel::default()),
                Codec::None => Compression::UNCOMPRESSED,
            });
        };
        let refused = |levels: &str| format!("sink.compression_level {level}: {} takes levels {levels}", self.name());
        let unsigned = |levels: &str| u32::try_from(level).map_err(|_| refused(levels));
        match self {
            Codec::Zstd => ZstdLevel::try_new(level).map(Compression::ZSTD).map_err(|_| refused("-131072 to 22")),
            Codec::Gzip => {
                GzipLevel::try_new(unsigned("0 to 9")?).map(Compression::GZIP).map_err(|_| refused("0 to 9"))
            }
            Codec::Brotli => {
                BrotliLevel::try_new(unsigned("0 to 11")?).map(Compression::BROTLI).map_err(|_| refused("0 to 11"))
            }
            Codec::Snappy | Codec::Lz4 | Codec::None => Err(format!(
                "sink.compression_level is set, but {} has no levels (zstd, gzip and brotli do)",
                self.name()
            )),
        }
    }
}

/// How part files are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartOptions {
    pub codec: Codec,
    /// `sink.compression_level` (checked by [`Codec::compression`] when the job is planned).
    pub level: Option<i32>,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// `[sink.encryption]`: Parquet modular encryption ([`crate::encryption`]).
    pub encryption: Option<Arc<SinkEncryption>>,
    /// For each column of the part files, the source column it is, unchanged and row for
    /// row, when part files may copy the source's encoded column chunks
    /// ([`crate::chunk_copy`]); `None` when every column is encoded.
    pub copy_columns: Option<Arc<[Option<usize>]>>,
}

/// A finished part file, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartFile {
    /// Path relative to the output prefix.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// The schema part files store for rows of `schema`. Parquet has no unit for timestamps in
/// seconds (parquet-rs would write them as bare integers, which pyarrow reads as `int64`),
/// so such columns are stored in milliseconds, with their time zone, as pyarrow does.
pub fn stored_schema(schema: &SchemaRef) -> SchemaRef {
    let stored = |field: &FieldRef| match field.data_type() {
        DataType::Timestamp(TimeUnit::Second, zone) => {
            Arc::new(field.as_ref().clone().with_data_type(DataType::Timestamp(TimeUnit::Millisecond, zone.clone())))
        }
        _ => field.clone(),
    };
    if !schema.fields().iter().any(|f| matches!(f.data_type(), DataType::Timestamp(TimeUnit::Second, _))) {
        return schema.clone();
    }
    Arc::new(Schema::new_with_metadata(
        schema.fields().iter().map(stored).collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// A part file's encoder: its settings until the first batch, then the encoder.
enum Encoder {
    Pending(Box<WriterPropertiesBuilder>),
    Open(Box<ArrowWriter<EncodedChunks>>),
    /// Row groups that copy unchanged columns' chunks from the source.
    Copying(Box<CopyingWriter<EncodedChunks>>),
}

/// Whether at least 90% of `column`'s values (and at least 1,024 of them) are distinct.
fn mostly_distinct(column: &ArrayRef) -> bool {
    let present = column.len() - column.null_count();
    if present < 1024 {
        return false;
    }
    let Ok(converter) = RowConverter::new(vec![SortField::new(column.data_type().clone())]) else {
        return false;
    };
    let Ok(rows) = converter.convert_columns(std::slice::from_ref(column)) else {
        return false;
    };
    let distinct: HashSet<&[u8]> = rows.iter().map(|row| row.data()).collect();
    distinct.len() * 10 >= present * 9
}

/// An open part file.
pub struct PartWriter {
    encoder: Encoder,
    upload: BufWriter,
    /// The schema stored in the file.
    schema: SchemaRef,
    /// `options.copy_columns`, for a copying encoder ([`CopyingWriter`]).
    copy_columns: Option<Arc<[Option<usize>]>>,
    compression: Compression,
    row_group_rows: usize,
    name: String,
    uri: String,
    rows: u64,
}

impl PartWriter {
    /// Starts `name` (relative to `output`). Nothing is visible in the store until the
    /// first upload part fills, and the object is complete only after [`PartWriter::finish`].
    /// `identity` is the path the file will be published at, relative to the output: an
    /// encrypted file's AAD prefix (`weir/<identity>`).
    pub fn create(
        output: &Location,
        name: &str,
        identity: &str,
        schema: SchemaRef,
        options: &PartOptions,
    ) -> Result<Self, ConnectorError> {
        let schema = stored_schema(&schema);
        let path: Path = output.join(name);
        let uri = output.uri_of(&path);
        let compression = options
            .codec
            .compression(options.level)
            .map_err(|message| ConnectorError::Invalid { uri: uri.clone(), message })?;
        let mut properties = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
            .set_created_by(format!("weir {}", env!("CARGO_PKG_VERSION")));
        // Dictionary encoding pays off for repeated values (categories, labels, codes), not
        // for continuous floats, where every value is new: hashing each one into a
        // dictionary as large as the data cost most of the write time and made files bigger.
        // Other columns are judged by the first batch ([`PartWriter::open_encoder`]).
        for field in schema.fields() {
            if field.data_type().is_floating() {
                properties = properties.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
            }
        }
        // Copied chunks come without the source's page index (a source written by pyarrow
        // has none), so a file that may hold some has none at all: statistics per chunk.
        let copying = options.copy_columns.clone().filter(|_| options.encryption.is_none());
        if copying.is_some() {
            properties = properties.set_statistics_enabled(EnabledStatistics::Chunk).set_offset_index_disabled(true);
        }
        if let Some(encryption) = &options.encryption {
            let keys = KeySource::from_env();
            let aad_prefix = format!("weir/{identity}");
            properties =
                properties.with_file_encryption_properties(encryption.file_properties(&keys, &schema, &aad_prefix)?);
        }
        let upload = BufWriter::with_capacity(output.store().clone(), path, UPLOAD_PART_BYTES)
            .with_max_concurrency(UPLOADS_IN_FLIGHT);
        Ok(PartWriter {
            encoder: Encoder::Pending(Box::new(properties)),
            upload,
            schema,
            copy_columns: copying,
            compression,
            row_group_rows: options.row_group_rows,
            name: name.to_string(),
            uri,
            rows: 0,
        })
    }

    /// The encoder, made at the first batch (`first`; `None` for a file with no rows).
    /// A column (other than a float one) whose first batch holds at least 1,024 values,
    /// 90% of them distinct (an id, a timestamp, free text), is written without a
    /// dictionary: parquet-rs would hash every value of each row group into one until it
    /// outgrows its 1 MiB page and then fall back to plain encoding anyway (measured: 4% of
    /// a score-only job's CPU time for its `id` column), as DuckDB's writer also avoids.
    fn open_encoder(&mut self, first: Option<&RecordBatch>) -> Result<(), ConnectorError> {
        if let Encoder::Pending(properties) = &mut self.encoder {
            let mut properties = std::mem::replace(properties.as_mut(), WriterProperties::builder());
            for (field, column) in self.schema.fields().iter().zip(first.map(|b| b.columns()).unwrap_or_default()) {
                let plain = !field.data_type().is_floating() && !field.data_type().is_nested();
                if plain && mostly_distinct(column) {
                    properties =
                        properties.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
                }
            }
            let write_error = |source| ConnectorError::Write { uri: self.uri.clone(), source };
            let encoder = ArrowWriter::try_new(EncodedChunks::default(), self.schema.clone(), Some(properties.build()))
                .map_err(write_error)?;
            self.encoder = match self.copy_columns.clone() {
                Some(columns) => Encoder::Copying(Box::new(
                    CopyingWriter::new(encoder, self.schema.clone(), columns, self.compression, self.row_group_rows)
                        .map_err(write_error)?,
                )),
                None => Encoder::Open(Box::new(encoder)),
            };
        }
        Ok(())
    }

    /// Appends a batch (of the schema the writer was created with, or one that
    /// [`stored_schema`] maps to it), whose rows come from `origin` (for a writer that copies
    /// column chunks; `None` when not known).
    pub async fn write(&mut self, batch: &RecordBatch, origin: Option<BatchOrigin<'_>>) -> Result<(), ConnectorError> {
        self.rows += batch.num_rows() as u64;
        let stored = self.schema.clone();
        let converted;
        let batch = if batch.schema_ref().fields() == stored.fields() {
            batch
        } else {
            let invalid = |e: ArrowError| ConnectorError::Invalid { uri: self.uri.clone(), message: e.to_string() };
            let columns = batch
                .columns()
                .iter()
                .zip(stored.fields())
                .map(|(column, field)| arrow::compute::cast(column, field.data_type()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
            converted = RecordBatch::try_new(stored, columns).map_err(invalid)?;
            &converted
        };
        self.open_encoder(Some(batch))?;
        let written = match &mut self.encoder {
            Encoder::Open(encoder) => encoder.write(batch),
            Encoder::Copying(encoder) => encoder.write(batch, origin),
            Encoder::Pending(_) => Ok(()),
        };
        written.map_err(|source| ConnectorError::Write { uri: self.uri.clone(), source })?;
        self.upload_encoded(false).await?;
        fail::fail_point!("part-batch-written");
        Ok(())
    }

    /// Hands the encoded chunks to the upload (`all`: also the last, partly filled one).
    async fn upload_encoded(&mut self, all: bool) -> Result<(), ConnectorError> {
        let chunks = match &mut self.encoder {
            Encoder::Open(encoder) => encoder.inner_mut().take(all),
            Encoder::Copying(encoder) => encoder.inner_mut().take(all),
            Encoder::Pending(_) => return Ok(()),
        };
        for chunk in chunks {
            self.upload.put(chunk).await.map_err(|error| ConnectorError::Write {
                uri: self.uri.clone(),
                source: ParquetError::External(Box::new(error)),
            })?;
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the footer and completes the upload.
    pub async fn finish(mut self) -> Result<PartFile, ConnectorError> {
        let uri = self.uri.clone();
        let write_error = |source| ConnectorError::Write { uri: uri.clone(), source };
        self.open_encoder(None)?;
        let bytes = match &mut self.encoder {
            Encoder::Open(encoder) => encoder.finish().map(|_| encoder.bytes_written()),
            Encoder::Copying(encoder) => encoder.finish().map(|_| encoder.bytes_written()),
            Encoder::Pending(_) => unreachable!("the encoder was just opened"),
        }
        .map_err(write_error)? as u64;
        self.upload_encoded(true).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut self.upload)
            .await
            .map_err(|error| write_error(ParquetError::External(Box::new(error))))?;
        Ok(PartFile { path: self.name, rows: self.rows, bytes })
    }

    /// Abandons the file: an unfinished upload is aborted and leaves nothing behind.
    pub async fn abort(mut self) {
        if let Err(error) = self.upload.abort().await {
            tracing::warn!(uri = %self.uri, %error, "could not abort part upload");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_chunks_keep_every_byte_in_order_in_full_sized_chunks() {
        let data: Vec<u8> = (0..3 * ENCODED_CHUNK_BYTES + 12_345).map(|i| (i * 7 % 251) as u8).collect();
        let mut chunks = EncodedChunks::default();
        let mut taken = Vec::new();
        // Writes of uneven sizes, small and larger than a chunk, taken between writes.
        let mut rest = data.as_slice();
        for size in [1, 1000, ENCODED_CHUNK_BYTES + 17, 5, 2 * ENCODED_CHUNK_BYTES].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*size).min(rest.len()));
            chunks.write_all(now).unwrap();
            rest = later;
            taken.extend(chunks.take(false));
        }
        assert!(taken.iter().all(|chunk| chunk.len() == ENCODED_CHUNK_BYTES), "only full chunks before the end");
        taken.extend(chunks.take(true));
        assert_eq!(taken.len(), 4);
        assert_eq!(taken.concat(), data);
        assert!(chunks.take(true).is_empty());
    }
}
