//! Spill files written and read around the page cache.
//!
//! A spilled shard is written once and read back once or twice. Through the page cache,
//! every byte is copied by the kernel into freshly allocated cache pages on the way out and
//! copied again on the way back: in a profile of the 10M-row peers job the write side alone
//! was the largest single item left on the worker thread (about 7% of all CPU for 2 GB
//! spilled), and on a virtual machine whose host reclaims freed memory each fresh page costs
//! more again. So a spill file is opened with `O_DIRECT` and moved in [`BLOCK_BYTES`] blocks
//! between the disk and page-aligned buffers that are reused ([`BlockPool`]):
//!
//! - [`SpillFile`]: the worker fills one block while a writer thread hands the other to the
//!   disk, so the worker does not wait on the disk unless it spills faster than the disk
//!   writes. The last block is padded to the alignment and the file cut back to its length.
//! - [`SpillReader`]: a reader thread reads the file two blocks ahead of the worker; the
//!   cache starts the readers of the next shards before the worker gets to them.
//!
//! Where the file system refuses `O_DIRECT` (some network and FUSE file systems; tmpfs
//! before Linux 6.6), or on a platform without it, files are written and read through plain
//! buffered I/O instead.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Bytes of one direct read or write, and of each block.
const BLOCK_BYTES: usize = 4 << 20;
/// The alignment `O_DIRECT` needs of buffer addresses, file offsets and lengths (the page
/// size covers every logical block size in use).
const ALIGN: usize = 4096;
/// Blocks a file being written or read holds at once: one with the worker, one with the disk.
const BLOCKS_PER_FILE: usize = 2;
/// Free blocks a pool keeps for the next file.
const POOLED_BLOCKS: usize = 8;

/// Free blocks shared by a worker's spill files, so that each file does not fault in fresh
/// memory for its buffers.
#[derive(Clone, Default)]
pub(crate) struct BlockPool(Arc<Mutex<Vec<AlignedBlock>>>);

impl BlockPool {
    fn take(&self) -> AlignedBlock {
        self.0.lock().ok().and_then(|mut free| free.pop()).unwrap_or_else(AlignedBlock::new)
    }

    fn give_back(&self, block: AlignedBlock) {
        if let Ok(mut free) = self.0.lock()
            && free.len() < POOLED_BLOCKS
        {
            free.push(block);
        }
    }
}

impl std::fmt::Debug for BlockPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockPool")
    }
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

#[cfg(target_os = "linux")]
fn open_direct(options: &mut std::fs::OpenOptions, path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(nix::fcntl::OFlag::O_DIRECT.bits()).open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &mut std::fs::OpenOptions, _: &Path) -> io::Result<File> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "no O_DIRECT on this platform"))
}

/// Waits for a helper thread and returns what it ended with.
fn joined(thread: Option<JoinHandle<io::Result<()>>>, role: &str) -> io::Result<()> {
    match thread.map(JoinHandle::join) {
        Some(Ok(result)) => result,
        Some(Err(_)) => Err(io::Error::other(format!("the spill {role} thread panicked"))),
        None => Err(io::Error::other(format!("the spill {role} thread stopped"))),
    }
}

// ---------------------------------------------------------------------------------------
// Writing

/// A new spill file being written; see the module documentation.
pub(crate) enum SpillFile {
    Direct(DirectWriter),
    Buffered(BufWriter<File>),
}

impl SpillFile {
    /// Creates `path` (truncating it), for direct writes where the file system allows them.
    pub fn create(path: &Path, pool: &BlockPool) -> io::Result<SpillFile> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        match open_direct(&mut options, path) {
            Ok(file) => Ok(SpillFile::Direct(DirectWriter::new(file, pool.clone())?)),
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

/// A block to write at an offset of the file.
struct WriteJob {
    block: AlignedBlock,
    /// Bytes of the block to write: `BLOCK_BYTES`, or the padded tail.
    len: usize,
    offset: u64,
}

/// Writes blocks with `O_DIRECT` on a thread of its own, two blocks in turn.
pub(crate) struct DirectWriter {
    file: Arc<File>,
    pool: BlockPool,
    filling: Option<AlignedBlock>,
    filled: usize,
    /// Bytes handed to the writer thread so far (whole blocks).
    handed: u64,
    /// Blocks taken from the pool and not given back (at most [`BLOCKS_PER_FILE`]).
    blocks: usize,
    jobs: Option<SyncSender<WriteJob>>,
    written: Receiver<AlignedBlock>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl DirectWriter {
    fn new(file: File, pool: BlockPool) -> io::Result<Self> {
        let file = Arc::new(file);
        let (jobs, pending) = sync_channel::<WriteJob>(1);
        let (returned, written) = sync_channel::<AlignedBlock>(BLOCKS_PER_FILE);
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
            filling: Some(pool.take()),
            pool,
            filled: 0,
            handed: 0,
            blocks: 1,
            jobs: Some(jobs),
            written,
            thread: Some(thread),
        })
    }

    /// Hands the filling block (its first `len` bytes) to the writer thread and takes
    /// another: a second one from the pool, then the ones the thread has written.
    fn hand_over(&mut self, len: usize) -> io::Result<()> {
        let Some(block) = self.filling.take() else { return Err(self.thread_error()) };
        self.send(WriteJob { block, len, offset: self.handed })?;
        self.handed += len as u64;
        self.filled = 0;
        let next = match self.written.try_recv() {
            Ok(block) => Some(block),
            Err(_) if self.blocks < BLOCKS_PER_FILE => {
                self.blocks += 1;
                Some(self.pool.take())
            }
            Err(_) => self.written.recv().ok(),
        };
        match next {
            Some(block) => {
                self.filling = Some(block);
                Ok(())
            }
            None => Err(self.thread_error()),
        }
    }

    fn send(&mut self, job: WriteJob) -> io::Result<()> {
        match self.jobs.as_ref().map(|jobs| jobs.send(job)) {
            Some(Ok(())) => Ok(()),
            _ => Err(self.thread_error()),
        }
    }

    /// Why the writer thread stopped (it only stops early on an error).
    fn thread_error(&mut self) -> io::Error {
        self.jobs = None;
        joined(self.thread.take(), "writer")
            .err()
            .unwrap_or_else(|| io::Error::other("the spill writer thread stopped"))
    }

    fn finish(mut self) -> io::Result<u64> {
        let length = self.handed + self.filled as u64;
        if self.filled > 0 {
            let padded = self.filled.div_ceil(ALIGN) * ALIGN;
            // No block filling: an earlier hand-over failed, and the thread says why.
            let Some(mut block) = self.filling.take() else { return Err(self.thread_error()) };
            block.block()[self.filled..padded].fill(0);
            self.send(WriteJob { block, len: padded, offset: self.handed })?;
        }
        self.jobs = None;
        joined(self.thread.take(), "writer")?;
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
    /// Finished or abandoned: stop the thread (after at most one disk write) and give the
    /// blocks back to the pool.
    fn drop(&mut self) {
        self.jobs = None;
        let _ = joined(self.thread.take(), "writer");
        self.filling.take().into_iter().chain(self.written.try_iter()).for_each(|block| self.pool.give_back(block));
    }
}

// ---------------------------------------------------------------------------------------
// Reading

/// A spill file being read back; see the module documentation.
pub(crate) enum SpillReader {
    Direct(DirectReader),
    Buffered(BufReader<File>),
}

impl SpillReader {
    /// Opens `path` and, for direct reads, starts reading it.
    pub fn open(path: &Path, pool: &BlockPool) -> io::Result<SpillReader> {
        match open_direct(std::fs::OpenOptions::new().read(true), path) {
            Ok(file) => Ok(SpillReader::Direct(DirectReader::new(file, pool.clone())?)),
            Err(_) => Ok(SpillReader::Buffered(BufReader::with_capacity(1 << 20, File::open(path)?))),
        }
    }

    /// Whether the file is read with `O_DIRECT` (the page cache does not see it).
    pub fn direct(&self) -> bool {
        matches!(self, SpillReader::Direct(_))
    }
}

impl Read for SpillReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            SpillReader::Direct(reader) => reader.read(out),
            SpillReader::Buffered(reader) => reader.read(out),
        }
    }
}

impl std::fmt::Debug for SpillReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.direct() { "SpillReader::Direct" } else { "SpillReader::Buffered" })
    }
}

/// A block read from the file: its bytes, `len` of them (fewer than a block at the end).
struct ReadBlock {
    block: AlignedBlock,
    len: usize,
}

/// Reads a file with `O_DIRECT` on a thread of its own, [`BLOCKS_PER_FILE`] blocks ahead.
pub(crate) struct DirectReader {
    pool: BlockPool,
    read: Option<Receiver<io::Result<ReadBlock>>>,
    /// Blocks the worker has consumed, back to the thread.
    consumed: Option<SyncSender<AlignedBlock>>,
    /// The block being consumed and how far.
    current: Option<(ReadBlock, usize)>,
    ended: bool,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl DirectReader {
    fn new(file: File, pool: BlockPool) -> io::Result<Self> {
        let (sender, read) = sync_channel::<io::Result<ReadBlock>>(BLOCKS_PER_FILE);
        let (consumed, returned) = sync_channel::<AlignedBlock>(BLOCKS_PER_FILE);
        let blocks: Vec<AlignedBlock> = (0..BLOCKS_PER_FILE).map(|_| pool.take()).collect();
        let thread_pool = pool.clone();
        let thread = std::thread::Builder::new().name("weir-spill-reader".into()).spawn(move || {
            use std::os::unix::fs::FileExt;
            let mut offset = 0u64;
            let mut first = blocks.into_iter();
            while let Some(mut block) = first.next().or_else(|| returned.recv().ok()) {
                // Fill the block. A read that ends off the alignment can only be the end of
                // the file (the next offset could not be read direct anyway); the length
                // check makes sure of it, so that a file cut short is an error, not a
                // stream that silently ends early.
                let mut len = 0;
                let outcome = loop {
                    match file.read_at(&mut block.block()[len..], offset + len as u64) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            len += n;
                            if len == BLOCK_BYTES || len % ALIGN != 0 {
                                break Ok(());
                            }
                        }
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(error) => break Err(error),
                    }
                };
                let outcome = outcome.and_then(|()| match len < BLOCK_BYTES {
                    true => file.metadata().map(|m| m.len()),
                    false => Ok(offset + len as u64),
                });
                let outcome = outcome.and_then(|size| match size == offset + len as u64 {
                    true => Ok(()),
                    false => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("read {} bytes of a {size}-byte spill file", offset + len as u64),
                    )),
                });
                if let Err(error) = outcome {
                    thread_pool.give_back(block);
                    let copy = io::Error::new(error.kind(), error.to_string());
                    let _ = sender.send(Err(error));
                    return Err(copy);
                }
                offset += len as u64;
                let last = len < BLOCK_BYTES;
                if let Err(unsent) = sender.send(Ok(ReadBlock { block, len })) {
                    if let Ok(unsent) = unsent.0 {
                        thread_pool.give_back(unsent.block);
                    }
                    break;
                }
                if last {
                    break;
                }
            }
            first.chain(returned.try_iter()).for_each(|block| thread_pool.give_back(block));
            Ok(())
        })?;
        Ok(DirectReader {
            pool,
            read: Some(read),
            consumed: Some(consumed),
            current: None,
            ended: false,
            thread: Some(thread),
        })
    }

    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((block, position)) = self.current.as_mut()
                && *position < block.len
            {
                let n = out.len().min(block.len - *position);
                out[..n].copy_from_slice(&block.block.block()[*position..*position + n]);
                *position += n;
                return Ok(n);
            }
            if let Some((done, _)) = self.current.take() {
                self.ended = done.len < BLOCK_BYTES;
                match self.consumed.as_ref() {
                    Some(consumed) if !self.ended => {
                        if let Err(back) = consumed.send(done.block) {
                            self.pool.give_back(back.0);
                        }
                    }
                    _ => self.pool.give_back(done.block),
                }
            }
            if self.ended || out.is_empty() {
                return Ok(0);
            }
            match self.read.as_ref().map(Receiver::recv) {
                Some(Ok(Ok(block))) => self.current = Some((block, 0)),
                Some(Ok(Err(error))) => {
                    self.ended = true;
                    return Err(error);
                }
                _ => {
                    self.ended = true;
                    self.read = None;
                    self.consumed = None;
                    let error = joined(self.thread.take(), "reader").err();
                    return Err(error.unwrap_or_else(|| io::Error::other("the spill reader thread stopped")));
                }
            }
        }
    }
}

impl Drop for DirectReader {
    /// Read to the end or not: stop the thread and give the blocks back to the pool.
    fn drop(&mut self) {
        // The thread never waits to send (the channel holds every block), only for a block
        // back, which ends when `consumed` goes.
        self.consumed = None;
        let _ = joined(self.thread.take(), "reader");
        let unread: Vec<ReadBlock> =
            self.read.take().map(|read| read.try_iter().flatten().collect()).unwrap_or_default();
        let current = self.current.take().map(|(block, _)| block);
        for block in unread.into_iter().chain(current) {
            self.pool.give_back(block.block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(lengths: &[usize]) -> Vec<Vec<u8>> {
        let piece = |(index, &length): (usize, &usize)| (0..length).map(|i| (i * 31 + index * 7) as u8).collect();
        lengths.iter().enumerate().map(piece).collect()
    }

    /// Writes the pieces, reads the file back through `SpillReader` in reads of `chunk`
    /// bytes, and returns (read back, written).
    fn round_trip(lengths: &[usize], chunk: usize, pool: &BlockPool) -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill");
        let mut file = SpillFile::create(&path, pool).unwrap();
        assert!(matches!(file, SpillFile::Direct(_)), "a temporary directory on ext4 takes O_DIRECT");
        let written: Vec<u8> = pieces(lengths).concat();
        for piece in pieces(lengths) {
            file.write_all(&piece).unwrap();
        }
        assert_eq!(file.finish().unwrap(), written.len() as u64);
        assert!(std::fs::read(&path).unwrap() == written, "pieces {lengths:?}: the file holds what was written");
        let mut reader = SpillReader::open(&path, pool).unwrap();
        assert!(reader.direct());
        let mut read = Vec::new();
        let mut buffer = vec![0u8; chunk];
        loop {
            let n = reader.read(&mut buffer).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buffer[..n]);
        }
        (read, written)
    }

    #[test]
    fn what_is_written_reads_back_byte_for_byte() {
        let pool = BlockPool::default();
        for lengths in [
            vec![],
            vec![1],
            vec![ALIGN],
            vec![BLOCK_BYTES],
            vec![BLOCK_BYTES - 1, 2],
            vec![3, BLOCK_BYTES * 2 + 5, 4097, 1 << 20, BLOCK_BYTES * 3],
        ] {
            for chunk in [1000, BLOCK_BYTES + 17] {
                let (read, written) = round_trip(&lengths, chunk, &pool);
                assert!(
                    read == written,
                    "pieces {lengths:?}, reads of {chunk}: {} bytes back of {}",
                    read.len(),
                    written.len()
                );
            }
        }
        let pooled = pool.0.lock().unwrap().len();
        assert!((BLOCKS_PER_FILE..=POOLED_BLOCKS).contains(&pooled), "blocks go back to the pool: {pooled}");
    }

    #[test]
    fn a_reader_dropped_half_way_stops_and_returns_its_blocks() {
        let pool = BlockPool::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill");
        let mut file = SpillFile::create(&path, &pool).unwrap();
        file.write_all(&vec![5u8; BLOCK_BYTES * 5]).unwrap();
        file.finish().unwrap();
        let mut reader = SpillReader::open(&path, &pool).unwrap();
        let mut buffer = vec![0u8; 100];
        reader.read_exact(&mut buffer).unwrap();
        assert!(buffer.iter().all(|&b| b == 5));
        drop(reader);
        assert_eq!(pool.0.lock().unwrap().len(), BLOCKS_PER_FILE, "both blocks are back");
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
        let mut read = Vec::new();
        SpillReader::Buffered(BufReader::new(File::open(&path).unwrap())).read_to_end(&mut read).unwrap();
        assert!(read == bytes);
    }

    #[test]
    fn a_write_error_is_returned_not_lost() {
        // /dev/full fails every write with ENOSPC: the thread's error reaches the writer.
        let Ok(file) = std::fs::OpenOptions::new().write(true).open("/dev/full") else { return };
        let mut writer = DirectWriter::new(file, BlockPool::default()).unwrap();
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

    #[test]
    fn a_read_error_is_returned_not_taken_for_the_end() {
        // A directory opened for reading fails every read with EISDIR.
        let dir = tempfile::tempdir().unwrap();
        let file = File::open(dir.path()).unwrap();
        let mut reader = DirectReader::new(file, BlockPool::default()).unwrap();
        let error = reader.read(&mut [0u8; 10]).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(nix::libc::EISDIR), "{error}");
    }
}
