//! Writing one Parquet part file to a store, streamed: row groups are encoded as they
//! fill and uploaded in parts (a multipart upload on S3), so memory holds at most one
//! row group in progress and a bounded number of upload parts per writer
//! ([`UPLOAD_PART_BYTES`] each, at most [`UPLOADS_IN_FLIGHT`] at once).

use std::sync::Arc;

use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::encryption::SinkEncryption;
use crate::keys::KeySource;
use crate::{ConnectorError, Location};

/// Bytes of one upload part (S3 wants at least 5 MiB per part but the last).
pub const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;
/// Upload parts of one writer in flight at once.
pub const UPLOADS_IN_FLIGHT: usize = 2;

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
    fn compression(self) -> Compression {
        match self {
            Codec::Zstd => Compression::ZSTD(ZstdLevel::default()),
            Codec::Snappy => Compression::SNAPPY,
            Codec::Lz4 => Compression::LZ4_RAW,
            Codec::Gzip => Compression::GZIP(GzipLevel::default()),
            Codec::Brotli => Compression::BROTLI(BrotliLevel::default()),
            Codec::None => Compression::UNCOMPRESSED,
        }
    }
}

/// How part files are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartOptions {
    pub codec: Codec,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// `[sink.encryption]`: Parquet modular encryption ([`crate::encryption`]).
    pub encryption: Option<Arc<SinkEncryption>>,
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

/// An open part file.
pub struct PartWriter {
    writer: AsyncArrowWriter<BufWriter>,
    /// The schema stored in the file.
    schema: SchemaRef,
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
        let mut properties = WriterProperties::builder()
            .set_compression(options.codec.compression())
            .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
            .set_created_by(format!("weir {}", env!("CARGO_PKG_VERSION")));
        // Dictionary encoding pays off for repeated values (ids, categories, labels), not
        // for continuous floats, where every value is new: hashing each one into a
        // dictionary as large as the data cost most of the write time and made files bigger.
        for field in schema.fields() {
            if field.data_type().is_floating() {
                properties = properties.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
            }
        }
        if let Some(encryption) = &options.encryption {
            let keys = KeySource::from_env();
            let aad_prefix = format!("weir/{identity}");
            properties =
                properties.with_file_encryption_properties(encryption.file_properties(&keys, &schema, &aad_prefix)?);
        }
        let properties = properties.build();
        let upload = BufWriter::with_capacity(output.store().clone(), path, UPLOAD_PART_BYTES)
            .with_max_concurrency(UPLOADS_IN_FLIGHT);
        let writer = AsyncArrowWriter::try_new(upload, schema.clone(), Some(properties))
            .map_err(|source| ConnectorError::Write { uri: uri.clone(), source })?;
        Ok(PartWriter { writer, schema, name: name.to_string(), uri, rows: 0 })
    }

    /// Appends a batch (of the schema the writer was created with, or one that
    /// [`stored_schema`] maps to it).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), ConnectorError> {
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
        self.writer.write(batch).await.map_err(|source| ConnectorError::Write { uri: self.uri.clone(), source })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the footer and completes the upload.
    pub async fn finish(mut self) -> Result<PartFile, ConnectorError> {
        self.writer.finish().await.map_err(|source| ConnectorError::Write { uri: self.uri.clone(), source })?;
        Ok(PartFile { path: self.name, rows: self.rows, bytes: self.writer.bytes_written() as u64 })
    }

    /// Abandons the file: an unfinished upload is aborted and leaves nothing behind.
    pub async fn abort(self) {
        let mut upload = self.writer.into_inner();
        if let Err(error) = upload.abort().await {
            tracing::warn!(uri = %self.uri, %error, "could not abort part upload");
        }
    }
}
