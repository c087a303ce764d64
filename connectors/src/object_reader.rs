//! Parquet's view of an object in a store: ranged reads of a file of known size.
//!
//! Footers are fetched with one suffix read (a 64 KiB prefetch that covers most footers);
//! column chunks with `get_ranges`, which coalesces nearby ranges and fetches them
//! concurrently, so only the projected columns of the wanted row groups cross the wire.
//! Small objects that are read whole (a `fitted.json`) use [`read_object`].
//!
//! Why not parquet's own `ParquetObjectReader`: parquet 60 deprecates it ("Implement
//! `AsyncFileReader` directly instead"; apache/arrow-rs#10308), which is what this is: the
//! same ranged reads and footer prefetch in a few lines, with errors left as the store's
//! own `object_store::Error` so that `parquet_source` can tell a store failure from a
//! corrupt file.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, TryFutureExt, future::BoxFuture};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

/// Reads a whole (small) object, such as an earlier run's `fitted.json`.
pub async fn read_object(location: &crate::Location) -> std::result::Result<Bytes, crate::ConnectorError> {
    let store_error = |e| crate::ConnectorError::store(location.uri(), e);
    location.store().get(location.path()).await.map_err(store_error)?.bytes().await.map_err(store_error)
}

/// Bytes read from the end of a file in the first request for its footer.
const FOOTER_PREFETCH: usize = 64 * 1024;

/// A Parquet file in an object store.
#[derive(Debug, Clone)]
pub struct StoreFileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl StoreFileReader {
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> Self {
        StoreFileReader { store, path, size }
    }
}

fn external(error: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(error))
}

impl AsyncFileReader for StoreFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        self.store.get_range(&self.path, range).map_err(external).boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(external) }.boxed()
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
