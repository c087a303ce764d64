//! Writing a spill file around the page cache.
//!
//! A spilled shard is written once and read back once or twice, usually soon. Written
//! through the page cache, every byte is first copied by the kernel into freshly allocated
//! cache pages: in a profile of the 10M-row peers job that copy was the largest single item
//! left on the worker thread (about 7% of all CPU for 2 GB spilled), and on a virtual machine
//! whose host reclaims freed memory each fresh page costs more again. So a spill file is
//! opened with `O_DIRECT` and written from two reused, page-aligned buffers: the worker fills
//! one while a writer thread hands the other to the disk, so the worker does not wait on the
//! disk unless it spills faster than the disk writes (about 1 GB/s here against a spill rate
//! of about 0.2 GB/s per worker). The last block is padded to the alignment and the file cut
//! back to its length.
//!
//! Reading back stays buffered: the cache's `posix_fadvise(WILLNEED)` asks the kernel to read
//! the next shard's file ahead, a disk-to-cache transfer that costs the worker nothing.
//!
//! Where the file system refuses `O_DIRECT` (some network and FUSE file systems; tmpfs
//! before Linux 6.6), or on a platform without it, the file is written through a plain buffered writer instead.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Bytes of one direct write, and of each of the two buffers.
const BLOCK_BYTES: usize = 4 << 20;
/// The alignment `O_DIRECT` needs of buffer addresses, file offsets and lengths (the page
/// size covers every logical block size in use).
const ALIGN: usize = 4096;

/// A new spill file being written; see the module documentation.
pub(crate) enum SpillFile {
    Direct(DirectWriter),
    Buffered(BufWriter<File>),
}

impl SpillFile {
    /// Creates `path` (truncating it), for direct writes where the file system allows them.
    pub fn create(path: &Path) -> io::Result<SpillFile> {
        match open_direct(path) {
            Ok(file) => Ok(SpillFile::Direct(DirectWriter::new(file)?)),
            Err(_) => SpillFile::buffered(path),
        }
    }

    /// Creates `path` (truncating it) for buffered writes.
    fn buffered(path: &Path) -> io::Result<SpillFile> {
        Ok(SpillFile::Buffered(BufWriter::with_capacity(1 << 20, File::create(path)?)))
    }

    /// Writes what is left, waits for the disk, and returns the file's length.
    pub fn finish(self) -> io::Result<u64> {
        match self {
            SpillFile::Direct(writer) => writer.finish(),
            SpillFile::Buffered(writer) => {
                let file = writer.into_inner().map_err(|e| e.into_error())?;
                Ok(file.metadata()?.len())
            }
        }
    }
}

impl Write for SpillFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            SpillFile::Direct(writer) => writer.write(bytes),
            SpillFile::Buffered(writer) => writer.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            // Whole blocks only: the tail goes out in `finish`.
            SpillFile::Direct(_) => Ok(()),
            SpillFile::Buffered(writer) => writer.flush(),
        }
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
        .open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path) -> io::Result<File> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "no O_DIRECT on this platform"))
}

/// A block-sized buffer whose usable part starts at a page boundary (found inside a
/// slightly larger allocation, so no unsafe aligned allocation is needed).
struct AlignedBlock {
    bytes: Vec<u8>,
    start: usize,
}

impl AlignedBlock {
    fn new() -> Self {
        let bytes = vec![0u8; BLOCK_BYTES + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN);
        AlignedBlock { bytes, start }
    }

    fn block(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + BLOCK_BYTES]
    }
}

/// A block to write at an offset of the file.
struct Job {
    block: AlignedBlock,
    /// Bytes of the block to write: `BLOCK_BYTES`, or the padded tail.
    len: usize,
    offset: u64,
}

/// Writes blocks with `O_DIRECT` on a thread of its own, two buffers in turn.
pub(crate) struct DirectWriter {
    file: Arc<File>,
    filling: Option<AlignedBlock>,
    filled: usize,
    /// Bytes handed to the writer thread so far (whole blocks).
    handed: u64,
    jobs: Option<SyncSender<Job>>,
    free: Receiver<AlignedBlock>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl DirectWriter {
    fn new(file: File) -> io::Result<Self> {
        let file = Arc::new(file);
        let (jobs, pending) = sync_channel::<Job>(1);
        let (returned, free) = sync_channel::<AlignedBlock>(2);
        let target = file.clone();
        let thread = std::thread::Builder::new().name("weir-spill-writer".into()).spawn(move || {
            use std::os::unix::fs::FileExt;
            for mut job in pending {
                let len = job.len;
                target.write_all_at(&job.block.block()[..len], job.offset)?;
                if returned.send(job.block).is_err() {
                    break;
                }
            }
            Ok(())
        })?;
        Ok(DirectWriter {
            file,
            filling: Some(AlignedBlock::new()),
            filled: 0,
            handed: 0,
            jobs: Some(jobs),
            free,
            thread: Some(thread),
        })
    }

    /// Hands the filling block (its first `len` bytes) to the writer thread and takes the
    /// other buffer back (a fresh one the first time).
    fn hand_over(&mut self, len: usize) -> io::Result<()> {
        let Some(block) = self.filling.take() else { return Err(self.thread_error()) };
        self.send(Job { block, len, offset: self.handed })?;
        self.handed += len as u64;
        self.filled = 0;
        // Two blocks in all: the first hand-over makes the second, later ones wait for one back.
        let next = if self.handed == len as u64 { Some(AlignedBlock::new()) } else { self.free.recv().ok() };
        match next {
            Some(block) => {
                self.filling = Some(block);
                Ok(())
            }
            None => Err(self.thread_error()),
        }
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        match self.jobs.as_ref().map(|jobs| jobs.send(job)) {
            Some(Ok(())) => Ok(()),
            _ => Err(self.thread_error()),
        }
    }

    /// Why the writer thread stopped (it only stops early on an error).
    fn thread_error(&mut self) -> io::Error {
        self.jobs = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(error))) => error,
            Some(Err(_)) => io::Error::other("the spill writer thread panicked"),
            _ => io::Error::other("the spill writer thread stopped"),
        }
    }

    fn finish(mut self) -> io::Result<u64> {
        let length = self.handed + self.filled as u64;
        if self.filled > 0 {
            let padded = self.filled.div_ceil(ALIGN) * ALIGN;
            // No block filling: an earlier hand-over failed, and the thread says why.
            let Some(mut block) = self.filling.take() else { return Err(self.thread_error()) };
            block.block()[self.filled..padded].fill(0);
            self.send(Job { block, len: padded, offset: self.handed })?;
        }
        self.jobs = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result?,
            Some(Err(_)) => return Err(io::Error::other("the spill writer thread panicked")),
            None => return Err(io::Error::other("the spill writer thread stopped")),
        }
        self.file.set_len(length)?;
        Ok(length)
    }
}

impl Write for DirectWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let Some(block) = self.filling.as_mut() else {
            return Err(io::Error::other("the spill writer thread stopped"));
        };
        let taken = bytes.len().min(BLOCK_BYTES - self.filled);
        block.block()[self.filled..self.filled + taken].copy_from_slice(&bytes[..taken]);
        self.filled += taken;
        if self.filled == BLOCK_BYTES {
            self.hand_over(BLOCK_BYTES)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for DirectWriter {
    /// An abandoned file: stop the thread after its current block (at most one disk write).
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(lengths: &[usize]) -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill");
        let mut file = SpillFile::create(&path).unwrap();
        assert!(matches!(file, SpillFile::Direct(_)), "a temporary directory on ext4 takes O_DIRECT");
        let mut expected = Vec::new();
        for (index, &length) in lengths.iter().enumerate() {
            let piece: Vec<u8> = (0..length).map(|i| (i * 31 + index * 7) as u8).collect();
            file.write_all(&piece).unwrap();
            expected.extend_from_slice(&piece);
        }
        let length = file.finish().unwrap();
        assert_eq!(length, expected.len() as u64);
        (std::fs::read(&path).unwrap(), expected)
    }

    #[test]
    fn what_is_written_reads_back_byte_for_byte() {
        for lengths in [
            vec![],
            vec![1],
            vec![ALIGN],
            vec![BLOCK_BYTES],
            vec![BLOCK_BYTES - 1, 2],
            vec![3, BLOCK_BYTES * 2 + 5, 4097, 1 << 20, BLOCK_BYTES * 3],
        ] {
            let (got, expected) = written(&lengths);
            assert!(got == expected, "pieces {lengths:?}: {} bytes read back, {} written", got.len(), expected.len());
        }
    }

    #[test]
    fn the_buffered_fallback_reads_back_byte_for_byte() {
        // What a file system that refuses O_DIRECT gets (tmpfs accepts it since Linux 6.6).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill");
        let mut file = SpillFile::buffered(&path).unwrap();
        let bytes: Vec<u8> = (0..BLOCK_BYTES + 5).map(|i| (i * 13) as u8).collect();
        file.write_all(&bytes).unwrap();
        assert_eq!(file.finish().unwrap(), bytes.len() as u64);
        assert!(std::fs::read(&path).unwrap() == bytes);
    }

    #[test]
    fn a_write_error_is_returned_not_lost() {
        // /dev/full fails every write with ENOSPC: the thread's error reaches the writer.
        let Ok(file) = std::fs::OpenOptions::new().write(true).open("/dev/full") else { return };
        let mut writer = DirectWriter::new(file).unwrap();
        let block = vec![1u8; BLOCK_BYTES];
        let mut failed = None;
        for _ in 0..4 {
            if let Err(error) = writer.write_all(&block) {
                failed = Some(error);
                break;
            }
        }
        let error = match failed {
            Some(error) => error,
            None => writer.finish().unwrap_err(),
        };
        assert_eq!(error.raw_os_error(), Some(nix::libc::ENOSPC), "{error}");
    }
}
