//! Weir's connectors: object stores (`file://`, plain paths, `s3://`), Parquet datasets
//! split into shards, Parquet part writers, and the output commit protocol.
//!
//! Everything here is `async` over [`object_store`]; callers that live on synchronous
//! threads (timely workers) drive it with a tokio runtime handle's `block_on`. Nothing
//! here knows about timely or about job specs.

pub mod chunk_copy;
pub mod claim;
pub mod commit;
pub mod decoder_guard;
pub mod encrypted_fitted;
pub mod encryption;
pub mod error;
pub mod fetched_chunks;
pub mod keys;
pub mod kms;
pub mod lease;
pub mod ledger;
pub mod listing;
pub mod location;
pub mod manifest;
pub mod object_reader;
pub mod objects;
pub mod parquet_sink;
pub mod parquet_source;
pub mod partitions;
pub mod profiles;
pub mod publication;
pub mod readiness;
pub mod source;
#[cfg(test)]
mod test_support;

pub use error::ConnectorError;
pub use location::{Location, StorageOptions};
