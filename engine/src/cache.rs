//! A worker's cache of decoded source batches, kept between the passes of one run, so that
//! the source is decoded once however many passes the run makes.
//!
//! Each fit or dedupe stage is a pass over the source, and decoding Parquet is most of a
//! pass's work. So the first pass keeps the batches it decodes, a whole shard at a time:
//!
//! 1. in memory while they fit the worker's byte budget (`source.cache_mb` per process,
//!    split evenly between its workers);
//! 2. past that, spilled to a local file as uncompressed Arrow IPC, written around the page
//!    cache ([`crate::spill_file`]), while they fit the worker's spill budget
//!    (`source.spill_mb`, split the same way) in a private temporary directory under
//!    `source.spill_dir` (default: the system's temporary directory). Reading
//!    IPC back is a copy from the page cache or the disk, several times cheaper than decoding
//!    zstd Parquet (Spark's `MEMORY_AND_DISK` persistence). LZ4 would not pay on the numeric
//!    columns such jobs read: float noise does not compress, and the files are read back
//!    once or twice.
//!
//! A shard that fits neither is read again from the store in every pass, as it would be
//! without a cache; so is one whose spill file could not be written (a full disk is a
//! warning, not a failure), or that would eat into the disk's reserve (the larger of 2 GiB
//! and 2% of the file system always stays free for the output and everyone else). Later
//! passes take shards from memory or the spill file; the final pass releases each one as
//! soon as it has read it (deleting its file), and a run with a single pass (no fitted step,
//! no dedupe) caches nothing. The spill directory is removed
//! when the worker's state is dropped: at the end of the run, on failure, and on a
//! cancellation (SIGTERM and SIGINT end the run through the same path); only a killed
//! process (SIGKILL) leaves its `weir-spill-*` directory behind.
//!
//! A pass starts reading the spill files of the shards a few ahead of the one it reads
//! ([`SourceCache::prefetch`]), so the disk works while the worker computes.
//!
//! A source read with `[source.decryption]` never spills: its plaintext stays in memory or in
//! the store, encrypted.
//!
//! The cached batches are exactly the ones the reader produced, in the same order, so a
//! row keeps its `(shard, position)` whether its shard came from the store or the cache.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::spill_file::{BlockPool, SpillFile, SpillReader};

/// What a pass does with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheUse {
    /// Take cached shards from it; keep the shards read from the store while they fit.
    Fill,
    /// Take cached shards from it and release them; keep nothing new (the last pass).
    Drain,
}

/// Where spilled shards go, and how much of it a worker may use.
#[derive(Debug, Clone)]
pub(crate) struct SpillOptions {
    /// The directory the worker's own temporary directory is made in.
    pub parent: PathBuf,
    pub budget_bytes: u64,
    /// Bytes of the file system a spill always leaves free; `None`: [`default_keep_free`].
    pub keep_free_bytes: Option<u64>,
}

/// The spill side of a worker's cache.
#[derive(Debug)]
struct Spill {
    /// Made on the first spill; removed with everything in it when dropped.
    dir: RefCell<Option<tempfile::TempDir>>,
    parent: PathBuf,
    budget: u64,
    /// See [`SpillOptions::keep_free_bytes`].
    keep_free: Option<u64>,
    used: Cell<u64>,
    /// Each spilled shard's file, its bytes and its rows.
    files: RefCell<HashMap<usize, (PathBuf, u64, u64)>>,
    /// Spill files whose reading was started ahead of the pass ([`SourceCache::prefetch`]).
    ahead: RefCell<HashMap<usize, SpillReader>>,
    blocks: BlockPool,
}

/// Free space a spill never takes by default: the larger of this and [`FREE_SHARE`] of the
/// file system, so that spilling cannot starve the output (or anything else) on a shared
/// disk. Checked before each batch is spilled; a shard that would cross it is dropped and
/// read again. `source.spill_keep_free_mb` sets another reserve.
const FREE_FLOOR: u64 = 2 << 30;
const FREE_SHARE: f64 = 0.02;

/// The reserve of a file system of `total` bytes when the job sets none.
fn default_keep_free(total: u64) -> u64 {
    FREE_FLOOR.max((total as f64 * FREE_SHARE) as u64)
}

/// Whether the file system holding `dir` has room for `bytes` more above its reserve
/// (`keep_free`, or [`default_keep_free`]).
pub(crate) fn room_on_disk(dir: &Path, bytes: u64, keep_free: Option<u64>) -> bool {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(stats) => {
            let block = stats.fragment_size();
            let (total, available) = (stats.blocks() * block, stats.blocks_available() * block);
            let reserve = keep_free.unwrap_or_else(|| default_keep_free(total));
            available.saturating_sub(reserve) >= bytes
        }
        Err(_) => false,
    }
}

impl Spill {
    /// The path of `shard`'s spill file, making the directory first if needed.
    fn path(&self, shard: usize) -> std::io::Result<PathBuf> {
        let mut dir = self.dir.borrow_mut();
        if dir.is_none() {
            std::fs::create_dir_all(&self.parent)?;
            *dir = Some(tempfile::Builder::new().prefix("weir-spill-").tempdir_in(&self.parent)?);
        }
        let dir = dir.as_ref().map(|d| d.path()).unwrap_or(Path::new("."));
        Ok(dir.join(format!("shard-{shard}.arrows")))
    }
}

/// One worker's cache; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct SourceCache {
    budget: u64,
    used: Cell<u64>,
    shards: RefCell<HashMap<usize, Vec<RecordBatch>>>,
    spill: Option<Spill>,
}

impl SourceCache {
    /// A cache of `budget_bytes` in memory, and a spill area when `spill` is given.
    pub fn new(budget_bytes: u64, spill: Option<SpillOptions>) -> Self {
        let spill = spill.filter(|s| s.budget_bytes > 0).map(|options| Spill {
            dir: RefCell::new(None),
            parent: options.parent,
            budget: options.budget_bytes,
            keep_free: options.keep_free_bytes,
            used: Cell::new(0),
            files: RefCell::default(),
            ahead: RefCell::default(),
            blocks: BlockPool::default(),
        });
        SourceCache { budget: budget_bytes, spill, ..SourceCache::default() }
    }

    /// Whether `shard` is cached (in memory or spilled).
    pub fn holds(&self, shard: usize) -> bool {
        self.shards.borrow().contains_key(&shard)
            || self.spill.as_ref().is_some_and(|spill| spill.files.borrow().contains_key(&shard))
    }

    /// The cached batches of `shard`, if it is cached; `Drain` releases them.
    pub fn take(&self, shard: usize, usage: CacheUse) -> Option<CachedShard> {
        let in_memory = match usage {
            CacheUse::Fill => self.shards.borrow().get(&shard).cloned(),
            CacheUse::Drain => self.shards.borrow_mut().remove(&shard).inspect(|batches| {
                self.used.set(self.used.get().saturating_sub(bytes_of(batches)));
            }),
        };
        if let Some(batches) = in_memory {
            return Some(CachedShard::Memory(batches.into_iter()));
        }
        let spill = self.spill.as_ref()?;
        let (path, bytes, rows) = spill.files.borrow().get(&shard).cloned()?;
        let reader = match spill.ahead.borrow_mut().remove(&shard) {
            Some(reader) => Ok(reader),
            None => SpillReader::open(&path, &spill.blocks),
        };
        let opened = reader.map_err(ArrowError::from).and_then(|reader| StreamReader::try_new(reader, None));
        if usage == CacheUse::Drain {
            // The open file stays readable once unlinked; the space returns when it closes.
            spill.files.borrow_mut().remove(&shard);
            spill.used.set(spill.used.get().saturating_sub(bytes));
            let _ = std::fs::remove_file(&path);
        }
        Some(match opened {
            Ok(reader) => CachedShard::Disk { reader: Box::new(reader), path, rows, rows_read: 0 },
            Err(error) => CachedShard::Failed { error: spill_read_error(&path, &error) },
        })
    }

    /// Starts reading `shard`'s spill file now, if the shard is spilled, so that the pass
    /// finds its first blocks read when it gets to it: the file is opened once and kept
    /// until [`SourceCache::take`]; a direct reader starts its thread, a buffered file asks
    /// the kernel to read it into the page cache. A pass calls this for the shards a few
    /// ahead of the one it reads. A hint only: errors are ignored (`take` opens the file
    /// again and reports them).
    pub fn prefetch(&self, shard: usize) {
        let Some(spill) = self.spill.as_ref() else { return };
        let Some((path, _, _)) = spill.files.borrow().get(&shard).cloned() else { return };
        if spill.ahead.borrow().contains_key(&shard) {
            return;
        }
        let Ok(reader) = SpillReader::open(&path, &spill.blocks) else { return };
        if let SpillReader::Buffered(file) = &reader {
            let _ =
                nix::fcntl::posix_fadvise(file.get_ref(), 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED);
        }
        spill.ahead.borrow_mut().insert(shard, reader);
    }

    /// A collector for the batches of `shard` as they are read, or `None` when the pass
    /// keeps nothing or both budgets are spent.
    pub fn collector(&self, usage: CacheUse, shard: usize) -> Option<ShardCollector> {
        if usage != CacheUse::Fill {
            return None;
        }
        let room = self.budget.saturating_sub(self.used.get());
        let spill_room = self.spill.as_ref().map_or(0, |s| s.budget.saturating_sub(s.used.get()));
        (room > 0 || spill_room > 0).then(|| ShardCollector {
            shard,
            room,
            spill_room,
            bytes: 0,
            rows: 0,
            target: Target::Memory(Vec::new()),
        })
    }

    /// Keeps a shard whose batches were all collected within the room left.
    pub fn keep(&self, collector: ShardCollector) {
        match collector.target {
            Target::Memory(batches) => {
                self.used.set(self.used.get() + collector.bytes);
                self.shards.borrow_mut().insert(collector.shard, batches);
            }
            Target::Disk { writer, path } => {
                let Some(spill) = self.spill.as_ref() else { return };
                match writer.into_inner().and_then(|file| Ok(file.finish()?)) {
                    Ok(bytes) => {
                        spill.used.set(spill.used.get() + bytes);
                        spill.files.borrow_mut().insert(collector.shard, (path, bytes, collector.rows));
                    }
                    Err(error) => abandon_spill(&path, &error),
                }
            }
            Target::Dropped => {}
        }
    }

    /// Opens `shard`'s spill file for writing, writing `held` into it first; `None` when the
    /// disk lacks room for a shard of `bytes` (or the file cannot be made).
    fn start_spill(&self, shard: usize, held: &[RecordBatch], bytes: u64) -> Option<Target> {
        let spill = self.spill.as_ref()?;
        let path = match spill.path(shard) {
            Ok(path) => path,
            Err(error) => {
                tracing::warn!(dir = %spill.parent.display(), %error, "cannot make the spill directory; re-reading from the source instead");
                return None;
            }
        };
        if !room_on_disk(path.parent().unwrap_or(&spill.parent), bytes, spill.keep_free) {
            tracing::debug!(dir = %spill.parent.display(), "the disk is nearly full: not spilling; re-reading from the source instead");
            return None;
        }
        let schema = held.first()?.schema();
        let opened = SpillFile::create(&path, &spill.blocks)
            .map_err(ArrowError::from)
            .and_then(|file| StreamWriter::try_new(file, &schema));
        let mut writer = match opened {
            Ok(writer) => writer,
            Err(error) => {
                abandon_spill(&path, &error);
                return None;
            }
        };
        for batch in held {
            if let Err(error) = writer.write(batch) {
                abandon_spill(&path, &error);
                return None;
            }
        }
        Some(Target::Disk { writer: Box::new(writer), path })
    }

    /// Bytes held in memory now.
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.used.get()
    }
}

fn spill_read_error(path: &Path, error: &ArrowError) -> String {
    format!("cannot read back the spilled shard '{}': {error}", path.display())
}

/// Gives up spilling a shard after a write error: it will be read from the store again.
fn abandon_spill(path: &Path, error: &ArrowError) {
    tracing::warn!(file = %path.display(), %error, "cannot spill a shard to local disk; it will be read from the source again");
    let _ = std::fs::remove_file(path);
}

/// The batches of one cached shard, in order.
pub(crate) enum CachedShard {
    Memory(std::vec::IntoIter<RecordBatch>),
    Disk {
        reader: Box<StreamReader<SpillReader>>,
        path: PathBuf,
        /// Rows the shard had when it was spilled, and rows read back so far.
        rows: u64,
        rows_read: u64,
    },
    /// The spill file could not be opened.
    Failed {
        error: String,
    },
}

impl CachedShard {
    /// Whether the batches come from a spill file.
    pub fn spilled(&self) -> bool {
        !matches!(self, CachedShard::Memory(_))
    }
}

impl Iterator for CachedShard {
    /// A batch, or why the spill file could not be read.
    type Item = Result<RecordBatch, String>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            CachedShard::Memory(batches) => batches.next().map(Ok),
            CachedShard::Disk { reader, path, rows, rows_read } => match reader.next() {
                Some(Ok(batch)) => {
                    *rows_read += batch.num_rows() as u64;
                    Some(Ok(batch))
                }
                Some(Err(error)) => Some(Err(spill_read_error(path, &error))),
                // A stream cut at a message boundary reads as a clean end: count the rows.
                None if *rows_read != *rows => {
                    let error = format!(
                        "cannot read back the spilled shard '{}': {} rows came back of {rows}",
                        path.display(),
                        rows_read
                    );
                    *rows_read = *rows;
                    Some(Err(error))
                }
                None => None,
            },
            CachedShard::Failed { error } => {
                let error = std::mem::take(error);
                *self = CachedShard::Memory(Vec::new().into_iter());
                Some(Err(error))
            }
        }
    }
}

/// Where a shard's batches are being collected.
enum Target {
    Memory(Vec<RecordBatch>),
    Disk {
        writer: Box<StreamWriter<SpillFile>>,
        path: PathBuf,
    },
    /// Outgrew both budgets (or the spill failed): not kept.
    Dropped,
}

/// The batches of one shard being read, while they still fit.
pub(crate) struct ShardCollector {
    shard: usize,
    room: u64,
    spill_room: u64,
    bytes: u64,
    rows: u64,
    target: Target,
}

impl ShardCollector {
    /// Adds a batch: in memory while the shard fits the memory room, then in the spill file
    /// while it fits the spill room.
    pub fn push(&mut self, cache: &SourceCache, batch: &RecordBatch) {
        self.bytes += batch.get_array_memory_size() as u64;
        self.rows += batch.num_rows() as u64;
        match &mut self.target {
            Target::Memory(batches) if self.bytes <= self.room => batches.push(batch.clone()),
            Target::Memory(batches) => {
                let mut held = std::mem::take(batches);
                held.push(batch.clone());
                self.target = match self.bytes <= self.spill_room {
                    true => cache.start_spill(self.shard, &held, self.bytes).unwrap_or(Target::Dropped),
                    false => Target::Dropped,
                };
            }
            Target::Disk { writer, path } => {
                let keep_free = cache.spill.as_ref().and_then(|spill| spill.keep_free);
                let bytes = batch.get_array_memory_size() as u64;
                let full = !room_on_disk(path.parent().unwrap_or(Path::new(".")), bytes, keep_free);
                let failed = if self.bytes > self.spill_room || full {
                    let _ = std::fs::remove_file(&*path);
                    true
                } else if let Err(error) = writer.write(batch) {
                    abandon_spill(path, &error);
                    true
                } else {
                    false
                };
                if failed {
                    self.target = Target::Dropped;
                }
            }
            Target::Dropped => {}
        }
    }
}

fn bytes_of(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.get_array_memory_size() as u64).sum()
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let x: Float64Array = (0..rows).map(|i| (i % 7 != 0).then_some(i as f64)).collect();
        let s: StringArray = (0..rows).map(|i| (i % 5 != 0).then(|| format!("v{i}"))).collect();
        RecordBatch::try_new(schema, vec![Arc::new(x), Arc::new(s)]).unwrap()
    }

    fn read(cache: &SourceCache, shard: usize, batches: &[RecordBatch]) {
        if let Some(mut collector) = cache.collector(CacheUse::Fill, shard) {
            for b in batches {
                collector.push(cache, b);
            }
            cache.keep(collector);
        }
    }

    fn taken(cache: &SourceCache, shard: usize, usage: CacheUse) -> Option<(bool, Vec<RecordBatch>)> {
        let shard = cache.take(shard, usage)?;
        let spilled = shard.spilled();
        Some((spilled, shard.collect::<Result<Vec<_>, _>>().unwrap()))
    }

    #[test]
    fn whole_shards_are_kept_while_they_fit_and_released_by_the_last_pass() {
        let size = batch(1000).get_array_memory_size() as u64;
        let cache = SourceCache::new(3 * size, None);
        read(&cache, 0, &[batch(1000), batch(1000)]);
        // Shard 1 needs two more batches but only one fits: none of it is kept.
        read(&cache, 1, &[batch(1000), batch(1000)]);
        read(&cache, 2, &[batch(1000)]);
        assert_eq!(taken(&cache, 0, CacheUse::Fill).map(|(_, b)| b.len()), Some(2));
        assert!(cache.take(1, CacheUse::Fill).is_none());
        assert_eq!(taken(&cache, 2, CacheUse::Fill).map(|(_, b)| b.len()), Some(1));
        assert_eq!(cache.used(), 3 * size);
        assert!(cache.collector(CacheUse::Fill, 3).is_none(), "a full cache collects nothing");

        assert_eq!(taken(&cache, 0, CacheUse::Drain).map(|(_, b)| b.len()), Some(2));
        assert!(cache.take(0, CacheUse::Fill).is_none());
        assert_eq!(cache.used(), size);
        assert!(cache.collector(CacheUse::Drain, 3).is_none(), "the last pass keeps nothing");
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = SourceCache::new(0, None);
        read(&cache, 0, &[batch(10)]);
        assert!(cache.take(0, CacheUse::Fill).is_none());
    }

    #[test]
    fn shards_past_the_memory_budget_spill_and_read_back_the_same_until_drained() {
        let parent = tempfile::tempdir().unwrap();
        let size = batch(1000).get_array_memory_size() as u64;
        let spill =
            SpillOptions { parent: parent.path().to_path_buf(), budget_bytes: 5 * size, keep_free_bytes: Some(0) };
        let cache = SourceCache::new(size, Some(spill));
        let shards: Vec<Vec<RecordBatch>> = vec![vec![batch(1000)], vec![batch(1000), batch(999)], vec![batch(7)]];
        for (index, batches) in shards.iter().enumerate() {
            read(&cache, index, batches);
        }
        // Shard 0 fills the memory; 1 and 2 go to disk. Prefetching (a shard ahead, and one
        // that does not exist) changes nothing that is read.
        for pass in [CacheUse::Fill, CacheUse::Fill, CacheUse::Drain] {
            for (index, expected) in shards.iter().enumerate() {
                cache.prefetch(index + 1);
                let (spilled, got) = taken(&cache, index, pass).expect("cached");
                assert_eq!(spilled, index > 0, "shard {index}");
                assert_eq!(&got, expected, "shard {index} reads back the same batches");
            }
        }
        assert!(cache.take(1, CacheUse::Fill).is_none(), "drained");
        let dir = cache.spill.as_ref().unwrap().dir.borrow().as_ref().unwrap().path().to_path_buf();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the last pass deletes each spill file");
        drop(cache);
        assert!(!dir.exists(), "the spill directory goes with the cache");
    }

    #[test]
    fn a_spill_file_cut_short_is_an_error_not_a_shorter_shard() {
        let parent = tempfile::tempdir().unwrap();
        let spill =
            SpillOptions { parent: parent.path().to_path_buf(), budget_bytes: 1 << 30, keep_free_bytes: Some(0) };
        let cache = SourceCache::new(0, Some(spill));
        read(&cache, 0, &[batch(1000), batch(999)]);
        // Replace the file with a whole stream of the first batch only: a clean end, early.
        let path = cache.spill.as_ref().unwrap().files.borrow()[&0].0.clone();
        let mut writer = StreamWriter::try_new(File::create(&path).unwrap(), &batch(1).schema()).unwrap();
        writer.write(&batch(1000)).unwrap();
        writer.finish().unwrap();
        let results: Vec<_> = cache.take(0, CacheUse::Drain).unwrap().collect();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].as_ref().unwrap().num_rows(), 1000);
        let error = results[1].as_ref().unwrap_err();
        assert!(error.contains("1000 rows came back of 1999") && error.contains("shard-0.arrows"), "{error}");
    }

    #[test]
    fn a_shard_past_the_spill_budget_is_not_kept_and_its_file_is_gone() {
        let parent = tempfile::tempdir().unwrap();
        let size = batch(1000).get_array_memory_size() as u64;
        let spill =
            SpillOptions { parent: parent.path().to_path_buf(), budget_bytes: 2 * size, keep_free_bytes: Some(0) };
        let cache = SourceCache::new(0, Some(spill));
        read(&cache, 0, &[batch(1000), batch(1000), batch(1000)]);
        read(&cache, 1, &[batch(1000)]);
        assert!(cache.take(0, CacheUse::Fill).is_none());
        assert_eq!(taken(&cache, 1, CacheUse::Fill).map(|(s, b)| (s, b.len())), Some((true, 1)));
        let dir = cache.spill.as_ref().unwrap().dir.borrow().as_ref().unwrap().path().to_path_buf();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(files, vec![std::ffi::OsString::from("shard-1.arrows")]);
    }

    #[test]
    fn spills_leave_the_disk_reserve_free() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!room_on_disk(dir.path(), u64::MAX / 4, None), "no disk has room for 4 EiB");
        let stats = nix::sys::statvfs::statvfs(dir.path()).unwrap();
        let available = stats.blocks_available() * stats.fragment_size();
        assert!(!room_on_disk(dir.path(), available.saturating_sub(FREE_FLOOR / 2), None), "the reserve stays free");
        assert!(
            !room_on_disk(dir.path(), 1, Some(available + (1 << 30))),
            "a reserve past what is free leaves no room"
        );
        assert!(room_on_disk(dir.path(), 1, Some(0)), "with no reserve, a byte fits");
        assert!(!room_on_disk(&dir.path().join("missing"), 1, Some(0)), "an unreadable directory has no room");
    }

    #[test]
    fn a_spill_past_the_reserve_is_not_kept() {
        let parent = tempfile::tempdir().unwrap();
        let spill = SpillOptions {
            parent: parent.path().to_path_buf(),
            budget_bytes: 1 << 30,
            keep_free_bytes: Some(u64::MAX),
        };
        let cache = SourceCache::new(0, Some(spill));
        read(&cache, 0, &[batch(1000), batch(1000)]);
        assert!(cache.take(0, CacheUse::Fill).is_none(), "no room above the reserve: read again from the source");
    }

    #[test]
    fn an_unwritable_spill_directory_falls_back_to_reading_the_source() {
        let parent = tempfile::tempdir().unwrap();
        let blocked = parent.path().join("a-file");
        std::fs::write(&blocked, b"not a directory").unwrap();
        let spill = SpillOptions { parent: blocked, budget_bytes: 1 << 30, keep_free_bytes: Some(0) };
        let cache = SourceCache::new(0, Some(spill));
        read(&cache, 0, &[batch(10)]);
        assert!(cache.take(0, CacheUse::Fill).is_none());
    }
}
