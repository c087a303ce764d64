//! A worker's cache of decoded source batches, kept between the passes of one run.
//!
//! Each fit or dedupe stage is a pass over the source, and decoding Parquet is most of a
//! pass's work. So the first pass keeps the batches it decodes, a whole shard at a time,
//! while they fit the worker's byte budget (`source.cache_mb` per process, split evenly
//! between its workers), and later passes take those shards from memory. A shard that
//! does not fit is dropped whole and read again from the store in every pass, as it would
//! be without a cache (Spark's `MEMORY_ONLY` persistence behaves the same way). The final
//! pass releases each cached shard as soon as it has sent it on, and a run with a single
//! pass (no fitted step, no dedupe) caches nothing.
//!
//! The cached batches are exactly the ones the reader produced, in the same order, so a
//! row keeps its `(shard, position)` whether its shard came from the store or the cache.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use arrow::record_batch::RecordBatch;

/// What a pass does with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheUse {
    /// Take cached shards from it; keep the shards read from the store while they fit.
    Fill,
    /// Take cached shards from it and release them; keep nothing new (the last pass).
    Drain,
}

/// One worker's cache; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct SourceCache {
    budget: u64,
    used: Cell<u64>,
    shards: RefCell<HashMap<usize, Vec<RecordBatch>>>,
}

impl SourceCache {
    pub fn new(budget_bytes: u64) -> Self {
        SourceCache { budget: budget_bytes, ..SourceCache::default() }
    }

    /// The cached batches of `shard`, if it is cached; `Drain` releases them.
    pub fn take(&self, shard: usize, usage: CacheUse) -> Option<Vec<RecordBatch>> {
        match usage {
            CacheUse::Fill => self.shards.borrow().get(&shard).cloned(),
            CacheUse::Drain => {
                let batches = self.shards.borrow_mut().remove(&shard)?;
                self.used.set(self.used.get().saturating_sub(bytes_of(&batches)));
                Some(batches)
            }
        }
    }

    /// A collector for the batches of `shard` as they are read, or `None` when the pass
    /// keeps nothing or the budget is spent.
    pub fn collector(&self, usage: CacheUse) -> Option<ShardCollector> {
        (usage == CacheUse::Fill && self.used.get() < self.budget).then(|| ShardCollector {
            room: self.budget - self.used.get(),
            bytes: 0,
            batches: Some(Vec::new()),
        })
    }

    /// Keeps a shard whose batches were all collected within the room left.
    pub fn keep(&self, shard: usize, collector: ShardCollector) {
        if let Some(batches) = collector.batches {
            self.used.set(self.used.get() + collector.bytes);
            self.shards.borrow_mut().insert(shard, batches);
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.used.get()
    }
}

/// The batches of one shard being read, while they still fit.
#[derive(Debug)]
pub(crate) struct ShardCollector {
    room: u64,
    bytes: u64,
    /// `None` once the shard outgrew the room: it will not be kept.
    batches: Option<Vec<RecordBatch>>,
}

impl ShardCollector {
    pub fn push(&mut self, batch: &RecordBatch) {
        let Some(batches) = self.batches.as_mut() else { return };
        self.bytes += batch.get_array_memory_size() as u64;
        if self.bytes > self.room {
            self.batches = None;
        } else {
            batches.push(batch.clone());
        }
    }
}

fn bytes_of(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.get_array_memory_size() as u64).sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Float64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(vec![1.0; rows]))]).unwrap()
    }

    fn read(cache: &SourceCache, shard: usize, batches: &[RecordBatch]) {
        if let Some(mut collector) = cache.collector(CacheUse::Fill) {
            for b in batches {
                collector.push(b);
            }
            cache.keep(shard, collector);
        }
    }

    #[test]
    fn whole_shards_are_kept_while_they_fit_and_released_by_the_last_pass() {
        let size = batch(1000).get_array_memory_size() as u64;
        let cache = SourceCache::new(3 * size);
        read(&cache, 0, &[batch(1000), batch(1000)]);
        // Shard 1 needs two more batches but only one fits: none of it is kept.
        read(&cache, 1, &[batch(1000), batch(1000)]);
        read(&cache, 2, &[batch(1000)]);
        assert_eq!(cache.take(0, CacheUse::Fill).map(|b| b.len()), Some(2));
        assert!(cache.take(1, CacheUse::Fill).is_none());
        assert_eq!(cache.take(2, CacheUse::Fill).map(|b| b.len()), Some(1));
        assert_eq!(cache.used(), 3 * size);
        assert!(cache.collector(CacheUse::Fill).is_none(), "a full cache collects nothing");

        assert_eq!(cache.take(0, CacheUse::Drain).map(|b| b.len()), Some(2));
        assert!(cache.take(0, CacheUse::Fill).is_none());
        assert_eq!(cache.used(), size);
        assert!(cache.collector(CacheUse::Drain).is_none(), "the last pass keeps nothing");
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = SourceCache::new(0);
        read(&cache, 0, &[batch(10)]);
        assert!(cache.take(0, CacheUse::Fill).is_none());
    }
}
