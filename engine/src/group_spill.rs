//! An `aggregate` step's groups on local disk, so that a worker holds at most the step's
//! `memory_mb` of groups in each of its two tables whatever the number of groups.
//!
//! - **Partial groups** (the folding side): when a worker's table of partial groups passes
//!   the budget, its groups are taken out by destination worker and each destination's
//!   share is written to a file; the exchange later sends those files' groups, a chunk at a
//!   time, before what is left in memory ([`GroupSpill::outgoing`]).
//! - **Merged groups** (the receiving side): when the table the exchange merges into passes
//!   the budget, its groups are written sorted by key as a *run*, and the table starts
//!   again. At the end the runs and what is left in memory are merged into one stream
//!   sorted by key, equal keys merged ([`GroupSpill::merged`]: a k-way merge, one group of
//!   each run in memory at a time).
//! - **The groups' rows**: when there were runs, the finished rows are written to an Arrow
//!   IPC file instead of kept in memory ([`GroupSpill::write_rows`]), and the passes after
//!   the aggregate read them back from it ([`SpilledRows`]).
//!
//! Files are bincode records of [`PartialGroup`] behind a count, written and read through
//! plain buffered I/O, in a temporary directory of the worker's own in `source.spill_dir`,
//! removed with everything in it when the step's groups are dropped. Before each file a
//! spill checks that the file system keeps its reserve (`source.spill_keep_free_mb`) after
//! it, and fails the run naming the directory when it would not.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use weir_operators::OpError;
use weir_operators::group_table::{GroupTable, PartialGroup};

use crate::cache::room_on_disk;

/// A failure while an aggregate's groups are spilled, read back or merged.
#[derive(Debug)]
pub(crate) enum GroupsError {
    /// Of the spill files: writing (the disk is full), or reading them back.
    Spill(String),
    /// Of the groups themselves (merging, finishing: an int64 sum out of range).
    Op(OpError),
}

impl From<OpError> for GroupsError {
    fn from(error: OpError) -> Self {
        GroupsError::Op(error)
    }
}

/// Groups read from a file at a time for one exchanged record.
pub(crate) const GROUPS_PER_CHUNK: usize = 4096;

/// A worker's spill files for one aggregate step; see the module documentation.
#[derive(Debug)]
pub(crate) struct GroupSpill {
    parent: PathBuf,
    keep_free: Option<u64>,
    /// Made on the first spill; removed with everything in it when dropped.
    dir: Option<tempfile::TempDir>,
    files: usize,
    /// Per destination worker: the files of partial groups bound for it.
    outgoing: Vec<Vec<PathBuf>>,
    /// Sorted runs of merged groups.
    runs: Vec<PathBuf>,
    /// Bytes written to spill files so far.
    pub bytes: u64,
    /// Groups written to spill files so far.
    pub groups: u64,
}

impl GroupSpill {
    pub fn new(parent: &Path, keep_free: Option<u64>, peers: usize) -> GroupSpill {
        GroupSpill {
            parent: parent.to_path_buf(),
            keep_free,
            dir: None,
            files: 0,
            outgoing: vec![Vec::new(); peers.max(1)],
            runs: Vec::new(),
            bytes: 0,
            groups: 0,
        }
    }

    /// Where the spill files go (made on first use).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(&self.parent, |dir| dir.path())
    }

    /// A new file's path, after checking that `estimate` more bytes leave the reserve.
    fn next_path(&mut self, estimate: u64) -> Result<PathBuf, String> {
        if self.dir.is_none() {
            std::fs::create_dir_all(&self.parent)
                .and_then(|()| tempfile::Builder::new().prefix("weir-groups-").tempdir_in(&self.parent))
                .map(|dir| self.dir = Some(dir))
                .map_err(|error| format!("cannot make a spill directory in {}: {error}", self.parent.display()))?;
        }
        if !room_on_disk(self.dir(), estimate, self.keep_free) {
            return Err(format!(
                "the spill directory {} has no room for about {} MiB more of groups above the free space it keeps (source.spill_keep_free_mb); point source.spill_dir at a larger disk or raise the step's memory_mb",
                self.parent.display(),
                estimate.div_ceil(1 << 20)
            ));
        }
        self.files += 1;
        Ok(self.dir().join(format!("groups-{}.bin", self.files)))
    }

    /// Writes `groups` to a new file (`estimate`: about its size); returns its path.
    fn write(&mut self, groups: &[PartialGroup], estimate: u64) -> Result<PathBuf, String> {
        self.groups += groups.len() as u64;
        let path = self.next_path(estimate)?;
        let failed = |error: &dyn std::fmt::Display| format!("cannot write spill file {}: {error}", path.display());
        let file = File::create(&path).map_err(|e| failed(&e))?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        bincode::serialize_into(&mut writer, &(groups.len() as u64)).map_err(|e| failed(&e))?;
        for group in groups {
            bincode::serialize_into(&mut writer, group).map_err(|e| failed(&e))?;
        }
        writer.flush().map_err(|e| failed(&e))?;
        let file = writer.into_inner().map_err(|e| failed(&e.error()))?;
        self.bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(path)
    }

    /// Spills the partial groups taken out of the folding table, by destination.
    pub fn spill_partials(&mut self, partials: Vec<Vec<PartialGroup>>, estimate: u64) -> Result<(), String> {
        let total: usize = partials.iter().map(Vec::len).sum::<usize>().max(1);
        for (destination, groups) in partials.into_iter().enumerate() {
            if groups.is_empty() {
                continue;
            }
            let share = estimate * groups.len() as u64 / total as u64;
            let path = self.write(&groups, share)?;
            self.outgoing[destination].push(path);
        }
        Ok(())
    }

    /// Spills the merged groups taken out of the receiving table, sorted by key.
    pub fn spill_run(&mut self, sorted: Vec<PartialGroup>, estimate: u64) -> Result<(), String> {
        if !sorted.is_empty() {
            let path = self.write(&sorted, estimate)?;
            self.runs.push(path);
        }
        Ok(())
    }

    /// Whether merged groups were spilled.
    pub fn has_runs(&self) -> bool {
        !self.runs.is_empty()
    }

    /// Every partial group bound for other workers (and this one): the spilled ones first,
    /// then `in_memory`, as (destination, chunk) records of at most [`GROUPS_PER_CHUNK`].
    pub fn outgoing(
        &mut self,
        in_memory: Vec<Vec<PartialGroup>>,
    ) -> impl Iterator<Item = Result<(usize, Vec<PartialGroup>), String>> + use<> {
        let files: Vec<(usize, PathBuf)> = std::mem::take(&mut self.outgoing)
            .into_iter()
            .enumerate()
            .flat_map(|(destination, paths)| paths.into_iter().map(move |path| (destination, path)))
            .collect();
        let from_files = files.into_iter().flat_map(|(destination, path)| {
            let groups: Box<dyn Iterator<Item = Result<PartialGroup, String>>> = match GroupReader::open(&path) {
                Ok(reader) => Box::new(reader),
                Err(error) => Box::new(std::iter::once(Err(error))),
            };
            let mut groups = groups.peekable();
            std::iter::from_fn(move || {
                groups.peek()?;
                let mut chunk = Vec::with_capacity(GROUPS_PER_CHUNK);
                for group in groups.by_ref() {
                    match group {
                        Ok(group) => chunk.push(group),
                        Err(error) => return Some(Err(error)),
                    }
                    if chunk.len() == GROUPS_PER_CHUNK {
                        break;
                    }
                }
                Some(Ok((destination, chunk)))
            })
        });
        let from_memory = in_memory.into_iter().enumerate().flat_map(|(destination, groups)| {
            let mut groups = groups.into_iter().peekable();
            std::iter::from_fn(move || {
                groups.peek()?;
                Some(Ok((destination, groups.by_ref().take(GROUPS_PER_CHUNK).collect())))
            })
        });
        from_files.chain(from_memory)
    }

    /// The runs and `in_memory` (sorted by key) merged into one stream sorted by key, each
    /// key once, its groups merged by `table`.
    pub fn merged<'a>(
        &self,
        in_memory: Vec<PartialGroup>,
        table: &'a GroupTable,
    ) -> Result<impl Iterator<Item = Result<PartialGroup, GroupsError>> + use<'a>, GroupsError> {
        let mut sources: Vec<Box<dyn Iterator<Item = Result<PartialGroup, GroupsError>>>> = Vec::new();
        for path in &self.runs {
            let reader = GroupReader::open(path).map_err(GroupsError::Spill)?;
            sources.push(Box::new(reader.map(|group| group.map_err(GroupsError::Spill))));
        }
        sources.push(Box::new(in_memory.into_iter().map(Ok)));
        KWayMerge::new(sources, table)
    }

    /// Writes the groups' rows to an Arrow IPC file; returns it, for the passes after the step.
    pub fn write_rows(
        &mut self,
        schema: &SchemaRef,
        write: impl FnOnce(&mut dyn FnMut(RecordBatch) -> Result<(), GroupsError>) -> Result<(), GroupsError>,
        estimate: u64,
    ) -> Result<SpilledRows, GroupsError> {
        let path = self.next_path(estimate).map_err(GroupsError::Spill)?;
        let failed = |error: &dyn std::fmt::Display| {
            GroupsError::Spill(format!("cannot write spill file {}: {error}", path.display()))
        };
        let file = File::create(&path).map_err(|e| failed(&e))?;
        let mut writer =
            StreamWriter::try_new(BufWriter::with_capacity(1 << 20, file), schema).map_err(|e| failed(&e))?;
        let mut rows = 0u64;
        write(&mut |batch| {
            rows += batch.num_rows() as u64;
            writer.write(&batch).map_err(|e| failed(&e))
        })?;
        writer.finish().map_err(|e| failed(&e))?;
        let file = writer.into_inner().map_err(|e| failed(&e))?.into_inner().map_err(|e| failed(&e.error()))?;
        self.bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
        // The runs are read: only the rows' file stays, with the directory.
        for run in self.runs.drain(..) {
            let _ = std::fs::remove_file(run);
        }
        Ok(SpilledRows { path, rows, _dir: self.dir.take() })
    }
}

/// An aggregate's rows written to local disk, read again by each pass after it.
#[derive(Debug)]
pub(crate) struct SpilledRows {
    path: PathBuf,
    pub rows: u64,
    /// The directory holding the file: removed when the rows are dropped.
    _dir: Option<tempfile::TempDir>,
}

impl SpilledRows {
    /// The rows' batches, read from the file.
    pub fn batches(&self) -> Result<impl Iterator<Item = Result<RecordBatch, String>> + use<>, String> {
        let path = self.path.clone();
        let file = File::open(&path).map_err(|e| format!("cannot read spill file {}: {e}", path.display()))?;
        let reader = StreamReader::try_new(BufReader::with_capacity(1 << 20, file), None)
            .map_err(|e| format!("cannot read spill file {}: {e}", path.display()))?;
        Ok(reader.map(move |batch| batch.map_err(|e| format!("cannot read spill file {}: {e}", path.display()))))
    }
}

/// The groups of one spill file, in the order written.
struct GroupReader {
    path: PathBuf,
    reader: BufReader<File>,
    remaining: u64,
}

impl GroupReader {
    fn open(path: &Path) -> Result<GroupReader, String> {
        let file = File::open(path).map_err(|e| format!("cannot read spill file {}: {e}", path.display()))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let remaining: u64 = bincode::deserialize_from(&mut reader)
            .map_err(|e| format!("cannot read spill file {}: {e}", path.display()))?;
        Ok(GroupReader { path: path.to_path_buf(), reader, remaining })
    }
}

impl Iterator for GroupReader {
    type Item = Result<PartialGroup, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(
            bincode::deserialize_from(&mut self.reader)
                .map_err(|e| format!("cannot read spill file {}: {e}", self.path.display())),
        )
    }
}

/// Sorted streams of groups merged into one, equal keys merged.
struct KWayMerge<'a> {
    sources: Vec<Box<dyn Iterator<Item = Result<PartialGroup, GroupsError>>>>,
    /// Each source's next group.
    heads: Vec<Option<PartialGroup>>,
    /// The heads' keys, smallest first, with their source.
    order: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
    table: &'a GroupTable,
}

impl<'a> KWayMerge<'a> {
    fn new(
        mut sources: Vec<Box<dyn Iterator<Item = Result<PartialGroup, GroupsError>>>>,
        table: &'a GroupTable,
    ) -> Result<Self, GroupsError> {
        let mut heads = Vec::with_capacity(sources.len());
        let mut order = BinaryHeap::new();
        for (index, source) in sources.iter_mut().enumerate() {
            let head = source.next().transpose()?;
            if let Some(group) = &head {
                order.push(Reverse((group.key.clone(), index)));
            }
            heads.push(head);
        }
        Ok(KWayMerge { sources, heads, order, table })
    }

    /// Takes source `index`'s head and puts its next group in its place.
    fn advance(&mut self, index: usize) -> Result<PartialGroup, GroupsError> {
        let head = self.heads[index]
            .take()
            .ok_or_else(|| GroupsError::Op(OpError::Internal("a merge source without a head".into())))?;
        let next = self.sources[index].next().transpose()?;
        if let Some(group) = &next {
            self.order.push(Reverse((group.key.clone(), index)));
        }
        self.heads[index] = next;
        Ok(head)
    }
}

impl Iterator for KWayMerge<'_> {
    type Item = Result<PartialGroup, GroupsError>;

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse((key, index)) = self.order.pop()?;
        let mut group = match self.advance(index) {
            Ok(group) => group,
            Err(error) => return Some(Err(error)),
        };
        while let Some(Reverse((next, _))) = self.order.peek()
            && *next == key
        {
            let Some(Reverse((_, other))) = self.order.pop() else { break };
            let merged = self
                .advance(other)
                .and_then(|incoming| self.table.merge_into(&mut group, incoming).map_err(GroupsError::Op));
            if let Err(error) = merged {
                return Some(Err(error));
            }
        }
        Some(Ok(group))
    }
}
