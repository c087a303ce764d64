//! A Parquet dataset as a source: its files' footers (read once, when the source is
//! opened), their common schema, the dataset cut into [`Shard`]s, and a streaming reader
//! for one shard with the column projection pushed into the Parquet decoder.
//!
//! A shard is a row group, or a slice of a row group longer than `max_shard_rows`, so
//! that a dataset of a few large row groups still spreads over many workers. Shards are
//! numbered in (file path, row group, offset) order; the numbering is a pure function of
//! the footers, so every process computes the same one.

use std::sync::Arc;

use arrow::array::{Array, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::ColumnChunkMetaData;

use crate::decoder_guard::{GuardedFuture, GuardedStream};
use crate::encryption::{Decryptor, KEY_ERROR_MARK};
use crate::fetched_chunks::FetchedChunks;
use crate::listing::{DataFile, dataset_root, list_data_files};
use crate::object_reader::StoreFileReader;
use crate::partitions::{self, Partitioning, Partitions};
use crate::source::{InputObject, Shard, ShardStream, Source};
use crate::{ConnectorError, Location};

/// How many footers are fetched at once when a source is opened.
const FOOTER_CONCURRENCY: usize = 16;

/// One file of the source, with its footer.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub uri: String,
    pub path: Path,
    pub size: u64,
    /// The listing's ETag or modification time (see [`DataFile::version`]).
    pub version: String,
    pub rows: u64,
    metadata: ArrowReaderMetadata,
    /// Root column indices (in file order) of the projected columns.
    projection: Vec<usize>,
    /// Maps the decoder's output columns (file order) to the source schema's order.
    reorder: Vec<usize>,
    /// The values of the source's partition columns (the schema's last ones) for this file.
    partition_values: Vec<Option<String>>,
}

/// An opened Parquet dataset.
#[derive(Debug, Clone)]
pub struct ParquetSource {
    location: Location,
    files: Vec<SourceFile>,
    schema: SchemaRef,
    /// How the files are decrypted (`[source.decryption]`), for the errors of later reads.
    decryptor: Option<Decryptor>,
}

/// `source.columns` with each glob (`f_*`, `x?`, `[ab]_id`) replaced by the names of the
/// first file's columns it matches, in schema order; each column once. A glob that matches
/// nothing is an error naming it, as in a step's column list.
fn expand_globs(columns: &[String], schema: &Schema, uri: &str) -> Result<Vec<String>, ConnectorError> {
    let mut names: Vec<String> = Vec::with_capacity(columns.len());
    for column in columns {
        if !column.contains(['*', '?', '[']) {
            if !names.contains(column) {
                names.push(column.clone());
            }
            continue;
        }
        let glob = globset::Glob::new(column)
            .map_err(|e| ConnectorError::Invalid {
                uri: uri.to_string(),
                message: format!("bad column glob '{column}': {e}"),
            })?
            .compile_matcher();
        let matched: Vec<String> =
            schema.fields().iter().map(|f| f.name().clone()).filter(|name| glob.is_match(name)).collect();
        if matched.is_empty() {
            return Err(ConnectorError::MissingColumn {
                uri: uri.to_string(),
                column: column.clone(),
                available: column_names(schema),
            });
        }
        for name in matched {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// The most rows a file may claim (2^40, about 10^12): more is a corrupt footer, and would
/// cut into more shards than fit in memory.
pub const MAX_FILE_ROWS: u64 = 1 << 40;

/// A file's row count, when its footer agrees with itself: every column chunk lies inside
/// the file, the file's count is the sum of its row groups' counts, none is negative, and
/// the sum is at most [`MAX_FILE_ROWS`]. (A corrupt footer would otherwise make the plan,
/// the progress and the rows read disagree, or the decoder panic.)
fn footer_rows(metadata: &ArrowReaderMetadata, file_size: u64) -> Result<u64, String> {
    let file_rows = metadata.metadata().file_metadata().num_rows();
    let mut group_rows: u64 = 0;
    for (index, group) in metadata.metadata().row_groups().iter().enumerate() {
        for column in group.columns() {
            let start = column.dictionary_page_offset().unwrap_or_else(|| column.data_page_offset());
            let length = column.compressed_size();
            let inside = u64::try_from(start).ok().zip(u64::try_from(length).ok()).and_then(|(s, l)| s.checked_add(l));
            if inside.is_none_or(|end| end > file_size) {
                return Err(format!(
                    "its footer is corrupt: column '{}' of row group {index} lies outside the file (offset {start}, {length} bytes, file {file_size} bytes)",
                    column.column_path().string()
                ));
            }
        }
        let rows = u64::try_from(group.num_rows())
            .map_err(|_| format!("its footer is corrupt: row group {index} has {} rows", group.num_rows()))?;
        group_rows = group_rows.saturating_add(rows);
    }
    if group_rows > MAX_FILE_ROWS {
        return Err(format!(
            "its footer is corrupt: its row groups claim {group_rows} rows, more than {MAX_FILE_ROWS}"
        ));
    }
    if u64::try_from(file_rows).ok() != Some(group_rows) {
        return Err(format!(
            "its footer is corrupt: it says the file holds {file_rows} rows, but its row groups hold {group_rows}"
        ));
    }
    Ok(group_rows)
}

impl ParquetSource {
    /// Lists the dataset, reads every footer once, and checks that the files agree on the
    /// (projected) schema. `columns` projects and orders the columns; `None` keeps all.
    /// With `Partitioning::Hive`, `key=value` folders become columns after the files' own
    /// ([`crate::partitions`]).
    pub async fn open(
        location: &Location,
        columns: Option<&[String]>,
        partitioning: Partitioning,
        decryptor: Option<&Decryptor>,
    ) -> Result<Self, ConnectorError> {
        let data_files = list_data_files(location).await?;
        ParquetSource::open_files(location, data_files, columns, partitioning, decryptor).await
    }

    /// Like [`ParquetSource::open`], for data files already listed (an incremental run's
    /// new files). `data_files` must not be empty.
    pub async fn open_files(
        location: &Location,
        data_files: Vec<DataFile>,
        columns: Option<&[String]>,
        partitioning: Partitioning,
        decryptor: Option<&Decryptor>,
    ) -> Result<Self, ConnectorError> {
        if data_files.is_empty() {
            return Err(ConnectorError::NoDataFiles { uri: location.uri() });
        }
        let partitions = match partitioning {
            Partitioning::Hive => {
                let paths: Vec<Path> = data_files.iter().map(|f| f.path.clone()).collect();
                partitions::infer(&dataset_root(location), &paths, |path| location.uri_of(path))?
            }
            Partitioning::None => Partitions::default(),
        };
        let footers: Vec<(DataFile, ArrowReaderMetadata)> = futures::stream::iter(data_files)
            .map(|file| async move {
                let metadata = read_footer(location, &file, decryptor).await?;
                Ok::<_, ConnectorError>((file, metadata))
            })
            .buffered(FOOTER_CONCURRENCY)
            .try_collect()
            .await?;

        let (first_file, first_metadata) = &footers[0];
        let first_uri = location.uri_of(&first_file.path);
        if let Some(columns) = columns {
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = columns.iter().find(|c| !seen.insert(c.as_str())) {
                return Err(ConnectorError::Invalid {
                    uri: location.uri(),
                    message: format!("source.columns names '{twice}' twice"),
                });
            }
        }
        if let Some(key) = partitions.fields.iter().find(|key| first_metadata.schema().index_of(key.name()).is_ok()) {
            return Err(ConnectorError::Invalid {
                uri: first_uri,
                message: format!(
                    "its column '{}' is also a partition folder's key; rename one, or set source.partitioning = \"none\"",
                    key.name()
                ),
            });
        }
        // Globs and names in `columns` may pick partition columns too.
        let mut visible = first_metadata.schema().fields().iter().map(|f| f.as_ref().clone()).collect::<Vec<_>>();
        visible.extend(partitions.fields.iter().cloned());
        let picked: Vec<String> = match columns {
            Some(columns) => expand_globs(columns, &Schema::new(visible), &first_uri)?,
            None => visible.iter().map(|f| f.name().clone()).collect(),
        };
        let is_key = |name: &String| partitions.fields.iter().any(|f| f.name() == name);
        let names: Vec<String> = picked.iter().filter(|name| !is_key(name)).cloned().collect();
        // Partition columns come after the files' columns, in folder order.
        let keys: Vec<usize> =
            (0..partitions.fields.len()).filter(|&i| picked.contains(partitions.fields[i].name())).collect();
        if names.is_empty() {
            return Err(ConnectorError::Invalid {
                uri: location.uri(),
                message: "source.columns picks only partition columns; name at least one column stored in the files"
                    .into(),
            });
        }

        let mut fields: Vec<Field> = Vec::with_capacity(names.len());
        let mut field_origin: Vec<String> = Vec::with_capacity(names.len());
        let mut files = Vec::with_capacity(footers.len());
        for (file, metadata) in footers {
            let uri = location.uri_of(&file.path);
            let file_schema = metadata.schema().clone();
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = file_schema.fields().iter().find(|f| !seen.insert(f.name().as_str())) {
                return Err(ConnectorError::Invalid {
                    uri,
                    message: format!("it has two columns named '{}'; Weir needs unique column names", twice.name()),
                });
            }
            if columns.is_none() && file_schema.fields().len() != names.len() {
                let extra = file_schema.fields().iter().find(|f| !names.contains(f.name())).map(|f| f.name().clone());
                return Err(match extra {
                    Some(column) => {
                        ConnectorError::MissingColumn { uri: first_uri, column, available: names.join(", ") }
                    }
                    None => ConnectorError::MissingColumn {
                        uri: uri.clone(),
                        column: names.iter().find(|n| file_schema.index_of(n).is_err()).cloned().unwrap_or_default(),
                        available: column_names(&file_schema),
                    },
                });
            }
            let mut indices = Vec::with_capacity(names.len());
            for (position, name) in names.iter().enumerate() {
                let index = file_schema.index_of(name).map_err(|_| ConnectorError::MissingColumn {
                    uri: uri.clone(),
                    column: name.clone(),
                    available: column_names(&file_schema),
                })?;
                let field = file_schema.field(index);
                match fields.get_mut(position) {
                    None => {
                        fields.push(field.clone());
                        field_origin.push(uri.clone());
                    }
                    // A column of type Null (all nulls, e.g. from an empty file) fits any type.
                    Some(known) if known.data_type() == &DataType::Null && field.data_type() != &DataType::Null => {
                        *known = field.as_ref().clone().with_nullable(true);
                        field_origin[position] = uri.clone();
                    }
                    Some(known) if field.data_type() == &DataType::Null => {
                        *known = known.clone().with_nullable(true);
                    }
                    Some(known) if known.data_type() != field.data_type() => {
                        return Err(ConnectorError::SchemaConflict {
                            column: name.clone(),
                            first: field_origin[position].clone(),
                            first_type: known.data_type().to_string(),
                            second: uri,
                            second_type: field.data_type().to_string(),
                        });
                    }
                    Some(known) => {
                        if field.is_nullable() && !known.is_nullable() {
                            *known = known.clone().with_nullable(true);
                        }
                    }
                }
                indices.push(index);
            }
            let mut projection = indices.clone();
            projection.sort_unstable();
            if let Some(decryptor) = decryptor {
                decryptor
                    .check_columns(metadata.metadata(), &projection)
                    .map_err(|message| ConnectorError::Decryption { uri: uri.clone(), message })?;
            }
            let reorder = indices.iter().map(|index| projection.binary_search(index).unwrap_or_default()).collect();
            let rows = footer_rows(&metadata, file.size)
                .map_err(|message| ConnectorError::Invalid { uri: uri.clone(), message })?;
            let partition_values = keys.iter().map(|&k| partitions.values[files.len()][k].clone()).collect();
            files.push(SourceFile {
                uri,
                path: file.path,
                size: file.size,
                version: file.version,
                rows,
                metadata,
                projection,
                reorder,
                partition_values,
            });
        }
        fields.extend(keys.iter().map(|&k| partitions.fields[k].clone()));
        Ok(ParquetSource {
            location: location.clone(),
            files,
            schema: Arc::new(Schema::new(fields)),
            decryptor: decryptor.cloned(),
        })
    }

    /// The source's files, in shard order.
    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// Where the source lives.
    pub fn location(&self) -> &Location {
        &self.location
    }
}

/// A Parquet dataset as a [`Source`]: a shard is a row group, or a slice of one longer than
/// `max_shard_rows`.
impl Source for ParquetSource {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn uri(&self) -> String {
        self.location.uri()
    }

    fn inputs(&self) -> Vec<InputObject> {
        let input =
            |f: &SourceFile| InputObject { uri: f.uri.clone(), size: f.size, version: f.version.clone(), rows: f.rows };
        self.files.iter().map(input).collect()
    }

    /// Total rows over all files, from the footers.
    fn total_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// One shard per row group, row groups longer than `max_shard_rows` sliced into
    /// near-equal parts. Empty row groups give no shard.
    fn shards(&self, max_shard_rows: u64) -> Vec<Shard> {
        let max_shard_rows = max_shard_rows.max(1);
        let mut shards = Vec::new();
        for (file_index, file) in self.files.iter().enumerate() {
            for (row_group, meta) in file.metadata.metadata().row_groups().iter().enumerate() {
                let rows = meta.num_rows() as u64;
                let parts = rows.div_ceil(max_shard_rows);
                for part in 0..parts {
                    let offset = rows * part / parts;
                    let end = rows * (part + 1) / parts;
                    shards.push(Shard { index: shards.len(), file: file_index, row_group, offset, rows: end - offset });
                }
            }
        }
        shards
    }

    fn read_shard(
        &self,
        shard: &Shard,
        batch_size: usize,
        keep: Option<Arc<FetchedChunks>>,
    ) -> Result<ShardStream, ConnectorError> {
        let file = &self.files[shard.file];
        let mut reader = StoreFileReader::new(&self.location, file.path.clone(), file.size);
        if let Some(keep) = keep {
            reader = reader.keeping_chunks(keep);
        }
        let mask = ProjectionMask::roots(file.metadata.parquet_schema(), file.projection.iter().copied());
        let group_rows = file.metadata.metadata().row_group(shard.row_group).num_rows().max(0) as u64;
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, file.metadata.clone())
            .with_row_groups(vec![shard.row_group])
            .with_projection(mask)
            .with_batch_size(batch_size.max(1));
        if shard.rows != group_rows {
            let mut selectors = Vec::with_capacity(3);
            if shard.offset > 0 {
                selectors.push(RowSelector::skip(shard.offset as usize));
            }
            selectors.push(RowSelector::select(shard.rows as usize));
            builder = builder.with_row_selection(RowSelection::from(selectors));
        }
        let uri = file.uri.clone();
        let row_group = shard.row_group;
        let decryptor = self.decryptor.clone();
        let stream = builder.build().map_err(|source| row_group_error(&uri, row_group, source, decryptor.as_ref()))?;
        let stream = GuardedStream::new(stream.boxed());
        let schema = self.schema.clone();
        let reorder = file.reorder.clone();
        let partition_values = file.partition_values.clone();
        Ok(stream
            .map(move |batch| {
                let batch = batch.map_err(|source| row_group_error(&uri, row_group, source, decryptor.as_ref()))?;
                let mut columns: Vec<_> = reorder
                    .iter()
                    .zip(schema.fields())
                    .map(|(&i, field)| match batch.column(i) {
                        column if column.data_type() == &DataType::Null && field.data_type() != &DataType::Null => {
                            new_null_array(field.data_type(), column.len())
                        }
                        column => column.clone(),
                    })
                    .collect();
                let keys = &schema.fields()[reorder.len()..];
                for (field, value) in keys.iter().zip(&partition_values) {
                    columns.push(partitions::constant_column(field, value.as_deref(), batch.num_rows()));
                }
                RecordBatch::try_new_with_options(
                    schema.clone(),
                    columns,
                    &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
                )
                .map_err(|e| ConnectorError::Invalid { uri: uri.clone(), message: e.to_string() })
            })
            .boxed())
    }

    fn describe_shard(&self, shard: &Shard) -> String {
        let uri = self.files.get(shard.file).map(|file| file.uri.as_str()).unwrap_or_default();
        format!("'{uri}', row group {}", shard.row_group)
    }

    fn is_decrypted(&self) -> bool {
        self.decryptor.is_some()
    }

    fn whole_chunk(&self, shard: &Shard, column: usize) -> Option<&ColumnChunkMetaData> {
        let file = &self.files[shard.file];
        let group = file.metadata.metadata().row_group(shard.row_group);
        if shard.offset != 0 || shard.rows != group.num_rows().max(0) as u64 {
            return None;
        }
        let root = *file.projection.get(*file.reorder.get(column)?)?;
        let schema = file.metadata.parquet_schema();
        let mut leaves = (0..schema.num_columns()).filter(|&leaf| schema.get_column_root_idx(leaf) == root);
        let leaf = leaves.next()?;
        leaves.next().is_none().then(|| group.column(leaf))
    }
}

/// The error of a file that is encrypted and read without the means to decrypt it (no
/// `[source.decryption]`, a missing or wrong key, a tampered file), if `source` is one.
fn decryption_error(
    uri: &str,
    source: &parquet::errors::ParquetError,
    decryptor: Option<&Decryptor>,
) -> Option<ConnectorError> {
    let text = source.to_string();
    if let Some(at) = text.find(KEY_ERROR_MARK) {
        let message = text[at + KEY_ERROR_MARK.len()..].to_string();
        return Some(ConnectorError::Decryption { uri: uri.to_string(), message });
    }
    let lower = text.to_lowercase();
    let signature = lower.contains("signature verification failed");
    // ring's one error, when a page or page header fails AES-GCM authentication.
    let authentication = text.contains("ring::error::Unspecified");
    if !(signature || authentication || lower.contains("encrypt") || lower.contains("decrypt")) {
        return None;
    }
    Some(match decryptor {
        None => ConnectorError::Encrypted { uri: uri.to_string() },
        Some(decryptor) => {
            let keys = decryptor.keys_asked();
            let keys = if keys.is_empty() { "none".to_string() } else { keys.join("', '") };
            // A signature mismatch lists both MACs, which say nothing to a reader.
            let what = if signature {
                "its plaintext footer's signature does not verify".to_string()
            } else if authentication {
                "a page fails AES-GCM authentication".to_string()
            } else {
                text
            };
            ConnectorError::Decryption {
                uri: uri.to_string(),
                message: format!(
                    "{what} with key(s) '{keys}': a wrong key, or the file was changed after it was written"
                ),
            }
        }
    })
}

/// A failure decoding a row group: the store's, when reading the bytes failed (a server
/// gone, a timeout: retried by the store already, and not the data's fault), a decryption
/// failure, else the file's.
fn row_group_error(
    uri: &str,
    row_group: usize,
    source: parquet::errors::ParquetError,
    decryptor: Option<&Decryptor>,
) -> ConnectorError {
    if let Some(error) = decryption_error(uri, &source, decryptor) {
        return error;
    }
    match source {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
            Ok(store_error) => ConnectorError::store(uri, *store_error),
            Err(inner) => ConnectorError::CorruptRowGroup {
                uri: uri.to_string(),
                row_group,
                source: parquet::errors::ParquetError::External(inner),
            },
        },
        source => ConnectorError::CorruptRowGroup { uri: uri.to_string(), row_group, source },
    }
}

fn column_names(schema: &Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

async fn read_footer(
    location: &Location,
    file: &DataFile,
    decryptor: Option<&Decryptor>,
) -> Result<ArrowReaderMetadata, ConnectorError> {
    let uri = location.uri_of(&file.path);
    let mut reader = StoreFileReader::new(location, file.path.clone(), file.size);
    let mut options = ArrowReaderOptions::new();
    if let Some(decryptor) = decryptor {
        options = options.with_file_decryption_properties(decryptor.properties().clone());
    }
    let load = async move { ArrowReaderMetadata::load_async(&mut reader, options).await };
    let loaded = GuardedFuture::new(load).await;
    let metadata = loaded.map_err(|source| match decryption_error(&uri, &source, decryptor) {
        Some(error) => error,
        None => footer_error(uri.clone(), source),
    })?;
    let depth = schema_depth(metadata.metadata().file_metadata().schema());
    if depth > MAX_SCHEMA_DEPTH {
        return Err(ConnectorError::Invalid {
            uri,
            message: format!(
                "its schema nests {depth} levels deep; Weir reads schemas at most {MAX_SCHEMA_DEPTH} levels deep"
            ),
        });
    }
    Ok(metadata)
}

/// The deepest schema a source may have: columns nested in structs, lists and maps that
/// many levels (the root counts as 0). The Arrow readers and printers walk a schema
/// recursively, and a file nesting thousands of levels overflowed their stacks; real data
/// nests a few levels.
pub const MAX_SCHEMA_DEPTH: usize = 64;

/// How deep the Parquet schema `root` nests, found without recursion.
fn schema_depth(root: &parquet::schema::types::Type) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(root, 0usize)];
    while let Some((node, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        if node.is_group() {
            pending.extend(node.get_fields().iter().map(|field| (field.as_ref(), depth + 1)));
        }
    }
    deepest
}

/// A failure reading a footer: the store's, or the file's.
fn footer_error(uri: String, source: parquet::errors::ParquetError) -> ConnectorError {
    match source {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
            Ok(store_error) => ConnectorError::store(uri, *store_error),
            Err(inner) => {
                ConnectorError::CorruptParquet { uri, source: parquet::errors::ParquetError::External(inner) }
            }
        },
        source => ConnectorError::CorruptParquet { uri, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageOptions;
    use arrow::array::{Int64Array, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    /// Writes `rows` rows (id = start..start+rows) with row groups of `group` rows.
    fn write_file(path: &std::path::Path, start: i64, rows: i64, group: usize) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let file = std::fs::File::create(path).unwrap();
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(group)).build();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
        let ids: Vec<i64> = (start..start + rows).collect();
        let names: Vec<Option<String>> = ids.iter().map(|i| (i % 3 != 0).then(|| format!("n{i}"))).collect();
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(names))])
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    async fn open(dir: &std::path::Path, columns: Option<&[String]>) -> ParquetSource {
        let location = Location::parse(dir.to_str().unwrap(), &StorageOptions::default()).unwrap();
        ParquetSource::open(&location, columns, Partitioning::Hive, None).await.unwrap()
    }

    #[tokio::test]
    async fn shards_are_row_groups_in_file_order_and_large_groups_are_sliced() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("a.parquet"), 0, 25, 10); // groups of 10, 10, 5
        write_file(&dir.path().join("b.parquet"), 100, 7, 100); // one group of 7
        let source = open(dir.path(), None).await;
        let shards = source.shards(1000);
        let described: Vec<_> = shards.iter().map(|s| (s.file, s.row_group, s.offset, s.rows)).collect();
        assert_eq!(described, vec![(0, 0, 0, 10), (0, 1, 0, 10), (0, 2, 0, 5), (1, 0, 0, 7)]);
        assert!(shards.iter().enumerate().all(|(i, s)| s.index == i));

        let sliced = source.shards(4);
        let of_first_group: Vec<_> =
            sliced.iter().filter(|s| s.file == 0 && s.row_group == 0).map(|s| (s.offset, s.rows)).collect();
        assert_eq!(of_first_group, vec![(0, 3), (3, 3), (6, 4)]);
        assert_eq!(sliced.iter().map(|s| s.rows).sum::<u64>(), 32);
    }

    #[tokio::test]
    async fn a_sliced_shard_reads_exactly_its_rows_with_the_projection_in_order() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("a.parquet"), 0, 25, 10);
        let columns = vec!["name".to_string(), "id".to_string()];
        let source = open(dir.path(), Some(&columns)).await;
        assert_eq!(source.schema().field(0).name(), "name");
        let mut ids = Vec::new();
        for shard in source.shards(4) {
            let batches: Vec<RecordBatch> = source.read_shard(&shard, 2, None).unwrap().try_collect().await.unwrap();
            for batch in batches {
                assert!(batch.num_rows() <= 2);
                let column = batch.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
                ids.extend(column.values().iter().copied());
                assert_eq!(batch.column(0).null_count(), column.values().iter().filter(|i| *i % 3 == 0).count());
            }
        }
        assert_eq!(ids, (0..25).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn conflicting_types_name_both_files() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("a.parquet"), 0, 5, 10);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut writer =
            ArrowWriter::try_new(std::fs::File::create(dir.path().join("b.parquet")).unwrap(), schema.clone(), None)
                .unwrap();
        writer
            .write(
                &RecordBatch::try_new(
                    schema,
                    vec![Arc::new(StringArray::from(vec!["x"])), Arc::new(StringArray::from(vec!["y"]))],
                )
                .unwrap(),
            )
            .unwrap();
        writer.close().unwrap();
        let location = Location::parse(dir.path().to_str().unwrap(), &StorageOptions::default()).unwrap();
        let message = ParquetSource::open(&location, None, Partitioning::Hive, None).await.unwrap_err().to_string();
        assert!(
            message.contains("a.parquet") && message.contains("b.parquet") && message.contains("'id'"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_corrupt_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("a.parquet"), 0, 5, 10);
        let bytes = std::fs::read(dir.path().join("a.parquet")).unwrap();
        std::fs::write(dir.path().join("b.parquet"), &bytes[..bytes.len() / 2]).unwrap();
        let location = Location::parse(dir.path().to_str().unwrap(), &StorageOptions::default()).unwrap();
        let err = ParquetSource::open(&location, None, Partitioning::Hive, None).await.unwrap_err();
        assert!(err.is_user_error());
        assert!(err.to_string().contains("b.parquet"), "{err}");
    }
}
