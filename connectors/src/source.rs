//! The seam between the engine and what a job reads. A [`Source`] cuts its data into
//! [`Shard`]s (units of work the engine balances over the workers), reads one shard as a
//! stream of record batches of one schema, and reports what a run read (its lineage: the
//! manifest's `inputs`, an incremental source's ledger, the digest every process of a
//! cluster compares). Planning opens a source; the engine only sees this trait.
//!
//! [`crate::parquet_source::ParquetSource`] is the first implementation. A new format is
//! one file here implementing the trait, plus the line of `jobs/src/planning.rs` that opens
//! it for its `source.format`. The encoded column chunks that the sink may copy instead of
//! encoding again are Parquet's own: a source exposes them through [`Source::whole_chunk`].

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use parquet::file::metadata::ColumnChunkMetaData;

use crate::ConnectorError;
use crate::fetched_chunks::FetchedChunks;

/// A unit of work: rows `offset .. offset + rows` of piece `row_group` (a Parquet row
/// group) of input object `file` (an index into [`Source::inputs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// The shard's index in the plan's list: `shards[i].index == i`.
    pub index: usize,
    pub file: usize,
    pub row_group: usize,
    pub offset: u64,
    pub rows: u64,
}

/// One object a source reads, as lineage records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputObject {
    pub uri: String,
    pub size: u64,
    /// What tells two versions of the object apart: the listing's ETag, or the
    /// modification time where there is none.
    pub version: String,
    pub rows: u64,
}

/// The batches of one shard, in order.
pub type ShardStream = BoxStream<'static, Result<RecordBatch, ConnectorError>>;

/// What a job reads; see the module documentation.
pub trait Source: Send + Sync + fmt::Debug {
    /// The schema of every batch the source yields.
    fn schema(&self) -> &SchemaRef;

    /// Where the source lives, for messages.
    fn uri(&self) -> String;

    /// The objects the source reads, in shard order ([`Shard::file`] indexes them).
    fn inputs(&self) -> Vec<InputObject>;

    /// Rows over all inputs.
    fn total_rows(&self) -> u64;

    /// Cuts the source into shards of at most `max_shard_rows` rows, `index` counting from
    /// 0; the same shards in every process that opened the same inputs.
    fn shards(&self, max_shard_rows: u64) -> Vec<Shard>;

    /// Streams the rows of `shard` in order, as batches of at most `batch_size` rows with
    /// exactly [`Source::schema`]. With `keep`, a Parquet source also keeps the column
    /// chunks it fetched there ([`crate::chunk_copy`]).
    fn read_shard(
        &self,
        shard: &Shard,
        batch_size: usize,
        keep: Option<Arc<FetchedChunks>>,
    ) -> Result<ShardStream, ConnectorError>;

    /// Names where `shard` lies, for an error about its rows: `'URI', row group N`.
    fn describe_shard(&self, shard: &Shard) -> String {
        let uri = self.inputs().get(shard.file).map(|input| input.uri.clone()).unwrap_or_default();
        format!("'{uri}', row group {}", shard.row_group)
    }

    /// Whether reading decrypts (`[source.decryption]`): decoded batches then never go to
    /// local disk.
    fn is_decrypted(&self) -> bool;

    /// The encoded Parquet column chunk of column `column` (an index into
    /// [`Source::schema`]) in `shard`, when the shard is one whole row group and the column
    /// one flat Parquet column of it, for the sink to copy instead of encoding again
    /// ([`crate::chunk_copy`]); `None` for anything else, and for sources of other formats.
    fn whole_chunk(&self, shard: &Shard, column: usize) -> Option<&ColumnChunkMetaData> {
        let _ = (shard, column);
        None
    }
}
