//! The floor of the peers benchmark (bench/peers.py): the best hand-written Rust program for
//! exactly the benchmark's workload, the lower bound Weir is compared with ("Weir / floor").
//! It knows the columns, the steps and the machine, and uses all of it.
//!
//! ```text
//! weir-bench-floor [--workload peers|score] DATA_DIR MODEL OUT_DIR    (prints one JSON object)
//! ```
//!
//! It reads every `*.parquet` file of DATA_DIR and writes `OUT_DIR/part-N.parquet` (created
//! or overwritten; OUT_DIR is created if missing), one file per thread (zstd at its default
//! level, no dictionary for float columns, row groups of 128 Ki rows for the peers workload:
//! the settings of Weir's Parquet sink). It runs on
//! `std::thread::available_parallelism()` threads, each taking the next unit of work from a
//! shared counter, each with its own ONNX Runtime session of one intra-op thread (all loaded
//! before the work starts). The allocator is the system's: Weir's mimalloc made this
//! program slower (more system time) and larger here.
//!
//! ## `--workload peers` (the default)
//!
//! impute (mean) the 32 features `f_00..f_31` → standardize (population scale, 1 where a
//! column is constant) → PCA, 8 components (the covariance, ddof 1, of the standardized
//! imputed data; components by decreasing eigenvalue, each signed so that its largest
//! |loading| is positive) → score the components with the 8-input MLP → write `id`,
//! `category`, `pc_0..pc_7` (float64) and `score` (float32).
//!
//! 1. Pass 1 (`decode_s`, wall): each thread takes the next row group, reads its bytes with
//!    one read, decodes it in batches of 8192 rows (`read_s`) and folds every batch into the
//!    row group's co-moments (`fold_s`; see [`CoMoments`]: the exact sufficient statistics
//!    of the whole fit, in one pass, although the imputation means are not known until its
//!    end). The decoded batches that pass 2 needs (id, category, the 32 features with their
//!    validity) are kept: the data is decoded once. `read_s` and `fold_s` are the threads'
//!    time in each, summed and divided by the thread count.
//! 2. The fit (`arithmetic_s`, wall): the row groups' co-moments merged in file order (the
//!    result does not depend on which thread read what), shifted to the means, the
//!    covariance of the standardized data and its eigendecomposition (faer).
//! 3. Pass 2 (`pass2_s`, wall): each thread takes the next kept batch and computes its 8
//!    components in one affine map (imputation, standardization and projection folded into
//!    a 32 × 8 weight matrix applied by one GEMM, plus an offset; `project_s`), runs the
//!    model on them (`model_s`) and encodes the rows into its output file (`encode_s`); these
//!    three are the time the threads spent in each, summed and divided by the thread count.
//!
//! Memory: the floor holds the decoded input between the passes (8 bytes per feature value
//! plus validity bitmaps, the ids and the categories: about 2.6 GiB at 10M rows). Its peak
//! RSS, measured, is 0.45 GiB at 1M rows, 2.8 GiB at 10M and 13.2 GiB at 50M (under 300
//! bytes a row): the price of decoding once, which a floor may pay.
//! At sizes that do not fit, the same program would decode twice (pass 1 keeping nothing,
//! pass 2 reading the files again), adding a second decode to the wall, or spill the
//! decoded features to local disk in its own fixed-width layout.
//!
//! ## `--workload score`
//!
//! Score only, one pass: each thread takes the next row group, reads the chunks of `id` and
//! the 32 features with one read, decodes the features, casts them to float32 (a null
//! becomes NaN) in the row-major `[N, 32]` tensor, runs the model (bench/score_setup.py's
//! 32 → 64 → 64 → 2 MLP) and writes what Weir's `score` step writes: the columns read
//! (`id` and the features) and one float32 column `p_K` per output column of the model's
//! first output. Each output row group is one source row group: `id` and the features are
//! copied as the source encoded them (the column chunks spliced in from the bytes read,
//! never decoded and encoded again), the scores encoded (Weir's sink does the same:
//! `sink.copy_unchanged_columns`); this floor assumes the source's codec is the output's
//! (zstd) and that `id` and the features are its first columns, as bench/score_setup.py
//! writes them. Nothing is kept; the stage times are the threads' summed time in each,
//! divided by the thread count (`decode_s`: reading and decoding; `arithmetic_s`: building
//! the tensor; `model_s`; `encode_s`: encoding the scores and writing every row group).
//!
//! `total_s` is the wall time of the whole program, from its start to its report.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use arrow::array::{Array, ArrayRef, AsArray, Float32Array, Float64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Float32Type, Float64Type, Schema, SchemaRef};
use bytes::Bytes;
use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, Mat, MatRef, Par, Side};
use ort::session::Session;
use ort::value::Tensor;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

const FEATURES: usize = 32;
const COMPONENTS: usize = 8;
/// Rows per decoded batch and per `session.run`.
const BATCH: usize = 8192;
/// Rows per output row group: Weir's sink default (`sink.row_group_rows`).
const ROW_GROUP_ROWS: usize = 128 * 1024;

const USAGE: &str = "usage: weir-bench-floor [--workload peers|score] DATA_DIR MODEL OUT_DIR";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Peers,
    Score,
}

struct Args {
    workload: Workload,
    data: PathBuf,
    model: PathBuf,
    out: PathBuf,
}

fn main() -> Result<()> {
    let started = Instant::now();
    let args = parse_args(std::env::args().skip(1))?;
    let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let source = Source::open(&args.data)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create '{}'", args.out.display()))?;
    let mut report = match args.workload {
        Workload::Peers => peers(&source, &args, threads)?,
        Workload::Score => score(&source, &args, threads)?,
    };
    report["threads"] = threads.into();
    report["total_s"] = started.elapsed().as_secs_f64().into();
    println!("{report}");
    Ok(())
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args> {
    let mut workload = Workload::Peers;
    let mut positional = Vec::new();
    let mut args = args;
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--workload") {
            Some("") => Some(args.next().with_context(|| format!("--workload needs a value; {USAGE}"))?),
            Some(rest) => {
                Some(rest.strip_prefix('=').with_context(|| format!("unknown option '{arg}'; {USAGE}"))?.into())
            }
            None => None,
        };
        match value.as_deref() {
            Some("peers") => workload = Workload::Peers,
            Some("score") => workload = Workload::Score,
            Some(other) => bail!("unknown workload '{other}' (peers or score); {USAGE}"),
            None if arg.starts_with("--") => bail!("unknown option '{arg}'; {USAGE}"),
            None => positional.push(PathBuf::from(arg)),
        }
    }
    let [data, model, out]: [PathBuf; 3] =
        positional.try_into().map_err(|given: Vec<PathBuf>| anyhow!("{} arguments given; {USAGE}", given.len()))?;
    Ok(Args { workload, data, model, out })
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// Input: the dataset's row groups, each read with one read and decoded from memory.

struct SourceFile {
    path: PathBuf,
    metadata: ArrowReaderMetadata,
}

/// The dataset's files, their footers read once, and its row groups in file order: the
/// units of pass 1.
struct Source {
    files: Vec<SourceFile>,
    units: Vec<(usize, usize)>,
}

impl Source {
    fn open(dir: &Path) -> Result<Source> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list '{}'", dir.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("cannot list '{}'", dir.display()))?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "parquet"));
        paths.sort();
        ensure!(!paths.is_empty(), "'{}' holds no .parquet file", dir.display());
        let mut files = Vec::with_capacity(paths.len());
        let mut units = Vec::new();
        for path in paths {
            let file = File::open(&path).with_context(|| format!("cannot open '{}'", path.display()))?;
            let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::default())
                .with_context(|| format!("cannot read the footer of '{}'", path.display()))?;
            units.extend((0..metadata.metadata().num_row_groups()).map(|g| (files.len(), g)));
            files.push(SourceFile { path, metadata });
        }
        Ok(Source { files, units })
    }

    /// The field `name` of row group `unit`'s file.
    fn field(&self, unit: usize, name: &str) -> Result<FieldRef> {
        let schema = self.files[self.units[unit].0].metadata.schema();
        Ok(schema.field_with_name(name).map(|f| Arc::new(f.clone()))?)
    }

    /// A reader of row group `unit`'s last `decoded` `columns` in batches of [`BATCH`] rows,
    /// the chunks of all `columns` read into `buffer` first with one read. The buffer comes
    /// back from the [`RowGroupBytes`] returned beside the reader once the reader and every
    /// copy of it are dropped ([`recycle`]), so a thread reads every row group into the same
    /// memory.
    fn reader(
        &self,
        unit: usize,
        columns: &[String],
        decoded: usize,
        mut buffer: Vec<u8>,
    ) -> Result<(parquet::arrow::arrow_reader::ParquetRecordBatchReader, RowGroupBytes)> {
        let (file, group) = self.units[unit];
        let SourceFile { path, metadata } = &self.files[file];
        let schema = metadata.schema();
        let roots = columns
            .iter()
            .map(|name| schema.index_of(name).with_context(|| format!("'{}' has no column '{name}'", path.display())))
            .collect::<Result<Vec<usize>>>()?;
        let chunks = metadata.metadata().row_group(group).columns();
        let (start, end) = roots.iter().fold((u64::MAX, 0), |(start, end), &c| {
            let (offset, length) = chunks[c].byte_range();
            (start.min(offset), end.max(offset + length))
        });
        let length = end.saturating_sub(start);
        let mut handle = File::open(path).with_context(|| format!("cannot open '{}'", path.display()))?;
        buffer.clear();
        handle
            .seek(SeekFrom::Start(start))
            .and_then(|_| (&mut handle).take(length).read_to_end(&mut buffer))
            .with_context(|| format!("cannot read row group {group} of '{}'", path.display()))?;
        ensure!(buffer.len() as u64 == length, "'{}' ends inside row group {group}", path.display());
        let bytes = Bytes::from(buffer);
        let chunk = RowGroupBytes { start, bytes };
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(chunk.clone(), metadata.clone());
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots[roots.len() - decoded..].iter().copied());
        let reader = builder
            .with_row_groups(vec![group])
            .with_projection(mask)
            .with_batch_size(BATCH)
            .build()
            .with_context(|| format!("cannot decode row group {group} of '{}'", path.display()))?;
        Ok((reader, chunk))
    }
}

/// The buffer under `bytes` for the next read, unless something still holds it.
fn recycle(bytes: Bytes) -> Vec<u8> {
    bytes.try_into_mut().map(Vec::from).unwrap_or_default()
}

/// The bytes of a file from `start` on, read into memory: a [`ChunkReader`] at the file's
/// offsets.
#[derive(Clone)]
struct RowGroupBytes {
    start: u64,
    bytes: Bytes,
}

impl RowGroupBytes {
    fn local(&self, offset: u64) -> parquet::errors::Result<usize> {
        offset
            .checked_sub(self.start)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o <= self.bytes.len())
            .ok_or_else(|| parquet::errors::ParquetError::EOF(format!("offset {offset} is outside the row group read")))
    }
}

impl Length for RowGroupBytes {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl ChunkReader for RowGroupBytes {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(bytes::Buf::reader(self.bytes.slice(self.local(start)?..)))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let from = self.local(start)?;
        if from + length > self.bytes.len() {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "{length} bytes at {start} are outside the row group read"
            )));
        }
        Ok(self.bytes.slice(from..from + length))
    }
}

fn feature_names() -> Vec<String> {
    (0..FEATURES).map(|j| format!("f_{j:02}")).collect()
}

fn column(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    batch.column_by_name(name).cloned().with_context(|| format!("the data has no column '{name}'"))
}

// ---------------------------------------------------------------------------------------
// Output.

/// Weir's sink settings: zstd at its default level, row groups of 128 Ki rows, no
/// dictionary for float columns.
fn writer_properties(schema: &Schema) -> WriterProperties {
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for field in schema.fields() {
        if field.data_type().is_floating() {
            properties = properties.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
    }
    properties.build()
}

/// One thread's output file, created at its first batch.
struct Output {
    path: PathBuf,
    writer: Option<ArrowWriter<File>>,
}

impl Output {
    fn new(dir: &Path, thread: usize) -> Output {
        Output { path: dir.join(format!("part-{thread}.parquet")), writer: None }
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.writer.is_none() {
            let file = File::create(&self.path).with_context(|| format!("cannot create '{}'", self.path.display()))?;
            let properties = writer_properties(batch.schema_ref());
            self.writer = Some(ArrowWriter::try_new(file, batch.schema(), Some(properties))?);
        }
        if let Some(writer) = &mut self.writer {
            writer.write(batch).with_context(|| format!("cannot write '{}'", self.path.display()))?;
        }
        Ok(())
    }

    fn close(self) -> Result<()> {
        if let Some(writer) = self.writer {
            writer.close().with_context(|| format!("cannot write '{}'", self.path.display()))?;
        }
        Ok(())
    }
}

/// A session of the model, one intra-op thread, with the names of its only input and its
/// first output.
struct Model {
    session: Session,
    input: String,
    output: String,
}

/// One [`Model`] per thread, loaded before any work starts (a bad model fails at once).
fn models(path: &Path, threads: usize) -> Result<Mutex<Vec<Model>>> {
    let environment = weir_operators::onnx_runtime::environment()?;
    let mut models = Vec::with_capacity(threads);
    for _ in 0..threads {
        let session = Session::builder(environment)?
            .with_intra_threads(1)
            .map_err(|e| anyhow!("{e}"))?
            .commit_from_file(path)
            .with_context(|| format!("ONNX Runtime cannot load '{}'", path.display()))?;
        let inputs = session.inputs();
        ensure!(inputs.len() == 1, "the model '{}' must have one input, not {}", path.display(), inputs.len());
        let input = inputs[0].name().to_string();
        let output =
            session.outputs().first().with_context(|| format!("the model '{}' has no output", path.display()))?;
        let output = output.name().to_string();
        models.push(Model { session, input, output });
    }
    Ok(Mutex::new(models))
}

fn take_model(models: &Mutex<Vec<Model>>) -> Result<Model> {
    models.lock().map_err(|_| anyhow!("a worker thread panicked"))?.pop().context("one model per thread")
}

// ---------------------------------------------------------------------------------------
// Threads.

/// Runs `work(thread, next)` on `threads` scoped threads, where `next()` hands out the
/// indices `0..count` once each, and returns the threads' results in thread order.
fn on_all_threads<T: Send>(
    threads: usize,
    count: usize,
    work: impl Fn(usize, &dyn Fn() -> Option<usize>) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let counter = AtomicUsize::new(0);
    let next = || Some(counter.fetch_add(1, Ordering::Relaxed)).filter(|&i| i < count);
    std::thread::scope(|scope| {
        let (work, next) = (&work, &next);
        let handles: Vec<_> = (0..threads).map(|t| scope.spawn(move || work(t, next))).collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow!("a worker thread panicked"))?).collect()
    })
}

// ---------------------------------------------------------------------------------------
// The peers workload.

/// What pass 2 needs of a decoded batch.
struct Kept {
    id: ArrayRef,
    category: ArrayRef,
    features: Vec<Float64Array>,
}

/// The sufficient statistics of the fit over a set of rows, in one pass.
///
/// With `x` a feature, `p` its presence (1 or 0) and `c` a centre per column, let
/// `z = p (x − c)` (a missing value is 0). The statistics are the row count, `c`,
/// `S = Σ z`, `G = Σ z zᵀ`, `H[j, k] = Σ z_j p_k` and `Q[j, k] = Σ p_j p_k` (so `Q[j, j]` is
/// the count of present values of column j). They determine the fit exactly:
///
/// - the imputation mean is `μ = c + S / Q[j, j]`;
/// - moving the centre to `c'` (with `e = c − c'`, so that `z' = z + p e`) is exact:
///   `S' = S + e Q[j, j]`, `H'[j, k] = H[j, k] + e_j Q[j, k]`, `G'[j, k] = G[j, k] +
///   e_k H[j, k] + e_j H[k, j] + e_j e_k Q[j, k]`;
/// - centred on `μ`, `z` is the imputed value minus its mean (an imputed value is `μ`, so
///   its `z` is 0, and the imputed column's mean is `μ`): `G` is then `n − 1` times the
///   covariance of the imputed data and its diagonal `n` times the squared scales.
///
/// Two sets of rows merge by moving one to the other's centre and adding. A row group's
/// first batch is centred on its own means of present values and the row group's other
/// batches on the same centre (so they merge by adding alone); the row groups then move to
/// the first one's centre and finally to the means. Every sum is thus of deviations from a
/// nearby centre and every shift is small (the numerically sound two-pass / Chan
/// formulation, not raw sums of squares); `G` comes from one GEMM per batch, and
/// `H` and `Q` from the validity bitmaps (`Q` by popcounts; `H[·, k]` as `S` minus the sum
/// of the rows where column k is missing, or as the sum of those where it is present,
/// whichever are fewer: 5% of rows instead of a second GEMM).
#[derive(Clone)]
struct CoMoments {
    rows: u64,
    centre: Vec<f64>,
    sum: Vec<f64>,
    g: Mat<f64>,
    h: Mat<f64>,
    q: Mat<f64>,
}

/// Per-thread buffers of [`CoMoments::of_batch`].
#[derive(Default)]
struct Scratch {
    z: Vec<f64>,
    valid: Vec<Vec<u64>>,
    rows: Vec<u32>,
}

impl CoMoments {
    /// The co-moments of a batch, centred on `centre` (its row group's, so that merging
    /// the row group's batches needs no shift), or on its own means of present values.
    fn of_batch(features: &[Float64Array], centre: Option<&[f64]>, scratch: &mut Scratch) -> CoMoments {
        let rows = features.first().map_or(0, Array::len);
        let words = rows.div_ceil(64);
        let tail = if rows.is_multiple_of(64) { u64::MAX } else { (1u64 << (rows % 64)) - 1 };
        scratch.z.resize(rows * FEATURES, 0.0);
        scratch.valid.resize_with(FEATURES, Vec::new);
        let given = centre;
        let (mut centre, mut sum) = (vec![0.0; FEATURES], vec![0.0; FEATURES]);
        for (j, array) in features.iter().enumerate() {
            let valid = &mut scratch.valid[j];
            validity_words(array, valid);
            let values: &[f64] = array.values();
            let z = &mut scratch.z[j * rows..(j + 1) * rows];
            let c = match given {
                Some(given) => given[j],
                None => {
                    // The mean of the present values: their sum (a missing value as 0).
                    let present: u64 = valid.iter().map(|w| u64::from(w.count_ones())).sum();
                    select(values, valid, 0.0, z);
                    if present == 0 { 0.0 } else { lanes_sum(z) / present as f64 }
                }
            };
            // z = x − c where present; a missing value becomes c, then exactly 0.
            select(values, valid, c, z);
            z.iter_mut().for_each(|v| *v -= c);
            centre[j] = c;
            sum[j] = lanes_sum(z);
        }
        let z = MatRef::from_column_major_slice(&scratch.z, rows, FEATURES);
        let mut g = Mat::<f64>::zeros(FEATURES, FEATURES);
        faer::linalg::matmul::triangular::matmul(
            g.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            z.transpose(),
            BlockStructure::Rectangular,
            z,
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
        let mut q = Mat::<f64>::zeros(FEATURES, FEATURES);
        for j in 0..FEATURES {
            for k in 0..=j {
                let both: u64 =
                    scratch.valid[j].iter().zip(&scratch.valid[k]).map(|(a, b)| u64::from((a & b).count_ones())).sum();
                q[(j, k)] = both as f64;
                q[(k, j)] = both as f64;
                g[(k, j)] = g[(j, k)];
            }
        }
        let mut h = Mat::<f64>::zeros(FEATURES, FEATURES);
        for k in 0..FEATURES {
            // The rows where column k is missing, or those where it is present: the fewer.
            let missing = rows as f64 - q[(k, k)];
            let take_missing = 2.0 * missing <= rows as f64;
            scratch.rows.clear();
            for (w, &word) in scratch.valid[k].iter().enumerate() {
                let mut bits = if take_missing { !word } else { word };
                if w + 1 == words {
                    bits &= tail;
                }
                while bits != 0 {
                    scratch.rows.push((w * 64) as u32 + bits.trailing_zeros());
                    bits &= bits - 1;
                }
            }
            for j in 0..FEATURES {
                let column = &scratch.z[j * rows..(j + 1) * rows];
                let partial = gathered_sum(column, &scratch.rows);
                h[(j, k)] = if take_missing { sum[j] - partial } else { partial };
            }
        }
        CoMoments { rows: rows as u64, centre, sum, g, h, q }
    }

    /// Moves the centre to `to` (exactly, in exact arithmetic; see the type's doc).
    fn shift_to(&mut self, to: &[f64]) {
        let e: Vec<f64> = self.centre.iter().zip(to).map(|(c, t)| c - t).collect();
        for j in 0..FEATURES {
            for k in 0..FEATURES {
                self.g[(j, k)] += e[k] * self.h[(j, k)] + e[j] * self.h[(k, j)] + e[j] * e[k] * self.q[(j, k)];
            }
        }
        for (j, &ej) in e.iter().enumerate() {
            for k in 0..FEATURES {
                self.h[(j, k)] += ej * self.q[(j, k)];
            }
            self.sum[j] += ej * self.q[(j, j)];
        }
        self.centre = to.to_vec();
    }

    fn merge(&mut self, other: &CoMoments) {
        if other.rows == 0 {
            return;
        }
        if self.rows == 0 {
            *self = other.clone();
            return;
        }
        let mut other = other.clone();
        other.shift_to(&self.centre);
        self.rows += other.rows;
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        self.g += &other.g;
        self.h += &other.h;
        self.q += &other.q;
    }
}

/// `to[i] = values[i]` where bit `i` of `valid` is set, else `otherwise`: word by word, so
/// that the compiler vectorizes it.
fn select(values: &[f64], valid: &[u64], otherwise: f64, to: &mut [f64]) {
    for ((to, values), &word) in to.chunks_mut(64).zip(values.chunks(64)).zip(valid) {
        for (b, (to, &v)) in to.iter_mut().zip(values).enumerate() {
            *to = if word >> b & 1 == 1 { v } else { otherwise };
        }
    }
}

/// The sum of `values` in 8 interleaved partial sums (vectorized, and more accurate than
/// one running sum).
fn lanes_sum(values: &[f64]) -> f64 {
    let mut lanes = [0.0; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f64>() + chunks.remainder().iter().sum::<f64>()
}

/// `Σ column[i]` over `rows`, in 4 interleaved partial sums (not one chain of dependent
/// additions).
fn gathered_sum(column: &[f64], rows: &[u32]) -> f64 {
    let mut lanes = [0.0; 4];
    let mut chunks = rows.chunks_exact(4);
    for chunk in &mut chunks {
        for (lane, &i) in lanes.iter_mut().zip(chunk) {
            *lane += column[i as usize];
        }
    }
    lanes.iter().sum::<f64>() + chunks.remainder().iter().map(|&i| column[i as usize]).sum::<f64>()
}

/// The validity of `array` as 64-bit words (bit i of word i / 64 for row i), the bits past
/// its end cleared.
fn validity_words(array: &dyn Array, to: &mut Vec<u64>) {
    let rows = array.len();
    let words = rows.div_ceil(64);
    to.clear();
    match array.nulls() {
        Some(nulls) => to.extend(nulls.inner().bit_chunks().iter_padded().take(words)),
        None => to.resize(words, u64::MAX),
    }
    if let (Some(last), false) = (to.last_mut(), rows.is_multiple_of(64)) {
        *last &= (1u64 << (rows % 64)) - 1;
    }
}

/// The fitted transform: `pc = y · weights + offset`, `y` the row with missing values
/// filled (`fill`); imputation, standardization and projection folded into one map.
struct Fit {
    fill: Vec<f64>,
    weights: Mat<f64>,
    offset: Vec<f64>,
}

fn fit(mut moments: CoMoments) -> Result<Fit> {
    let n = moments.rows;
    ensure!(n >= 2, "the fit needs at least 2 rows, not {n}");
    let names = feature_names();
    let mut mean = vec![0.0; FEATURES];
    for j in 0..FEATURES {
        let present = moments.q[(j, j)];
        ensure!(present > 0.0, "column '{}' has no value to impute from", names[j]);
        mean[j] = moments.centre[j] + moments.sum[j] / present;
    }
    moments.shift_to(&mean);
    let g = &moments.g;
    let scale: Vec<f64> = (0..FEATURES)
        .map(|j| (g[(j, j)] / n as f64).sqrt())
        .map(|s| if s == 0.0 || !s.is_finite() { 1.0 } else { s })
        .collect();
    let covariance = Mat::<f64>::from_fn(FEATURES, FEATURES, |j, k| g[(j, k)] / (n - 1) as f64 / (scale[j] * scale[k]));
    let eigen = covariance.self_adjoint_eigen(Side::Lower).map_err(|e| anyhow!("eigendecomposition failed: {e:?}"))?;
    let (values, vectors) = (eigen.S().column_vector(), eigen.U());
    let mut order: Vec<usize> = (0..FEATURES).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let mut weights = Mat::<f64>::zeros(FEATURES, COMPONENTS);
    for (k, &c) in order.iter().take(COMPONENTS).enumerate() {
        let largest =
            (0..FEATURES).max_by(|&a, &b| vectors[(a, c)].abs().total_cmp(&vectors[(b, c)].abs())).unwrap_or(0);
        let sign = if vectors[(largest, c)] < 0.0 { -1.0 } else { 1.0 };
        for j in 0..FEATURES {
            weights[(j, k)] = sign * vectors[(j, c)] / scale[j];
        }
    }
    let offset = (0..COMPONENTS).map(|k| -(0..FEATURES).map(|j| mean[j] * weights[(j, k)]).sum::<f64>()).collect();
    Ok(Fit { fill: mean, weights, offset })
}

/// Pass 1's result for one row group.
struct Unit {
    index: usize,
    moments: CoMoments,
    kept: Vec<Kept>,
}

/// Pass 2's time per thread.
#[derive(Default)]
struct Spent {
    project: Duration,
    model: Duration,
    encode: Duration,
}

fn peers(source: &Source, args: &Args, threads: usize) -> Result<serde_json::Value> {
    let models = models(&args.model, threads)?;
    // Pass 1: decode every row group once, fold its co-moments, keep what pass 2 needs.
    let started = Instant::now();
    let features = feature_names();
    let mut columns = vec!["id".to_string(), "category".to_string()];
    columns.extend(features.iter().cloned());
    let per_thread = on_all_threads(threads, source.units.len(), |_, next| {
        let (mut scratch, mut buffer) = (Scratch::default(), Vec::new());
        let (mut units, mut read, mut folding) = (Vec::new(), Duration::ZERO, Duration::ZERO);
        while let Some(index) = next() {
            let mut moments: Option<CoMoments> = None;
            let mut kept = Vec::new();
            let clock = Instant::now();
            let (mut reader, bytes) = source.reader(index, &columns, columns.len(), std::mem::take(&mut buffer))?;
            read += clock.elapsed();
            loop {
                let clock = Instant::now();
                let Some(batch) = reader.next() else { break };
                let batch = batch.context("cannot decode a batch")?;
                read += clock.elapsed();
                let clock = Instant::now();
                let features = features
                    .iter()
                    .map(|name| {
                        Ok(cast(&column(&batch, name)?, &DataType::Float64)?.as_primitive::<Float64Type>().clone())
                    })
                    .collect::<Result<Vec<Float64Array>>>()?;
                let centre = moments.as_ref().map(|m| m.centre.as_slice());
                let of_batch = CoMoments::of_batch(&features, centre, &mut scratch);
                match &mut moments {
                    Some(m) => m.merge(&of_batch),
                    None => moments = Some(of_batch),
                }
                kept.push(Kept { id: column(&batch, "id")?, category: column(&batch, "category")?, features });
                folding += clock.elapsed();
            }
            drop(reader);
            buffer = recycle(bytes.bytes);
            if let Some(moments) = moments {
                units.push(Unit { index, moments, kept });
            }
        }
        Ok((units, read, folding))
    })?;
    let read = per_thread.iter().map(|(_, read, _)| seconds(*read)).sum::<f64>() / threads as f64;
    let folding = per_thread.iter().map(|(_, _, folding)| seconds(*folding)).sum::<f64>() / threads as f64;
    let mut units: Vec<Unit> = per_thread.into_iter().flat_map(|(units, _, _)| units).collect();
    units.sort_by_key(|u| u.index);
    let decode = started.elapsed();

    // The fit: the row groups' co-moments merged in file order, then the eigenproblem.
    let started = Instant::now();
    let mut kept = Vec::new();
    let mut total: Option<CoMoments> = None;
    for unit in units {
        match &mut total {
            Some(t) => t.merge(&unit.moments),
            None => total = Some(unit.moments),
        }
        kept.extend(unit.kept.into_iter().map(|k| Mutex::new(Some(k))));
    }
    let total = total.context("the data has no rows")?;
    let rows = total.rows;
    let fit = fit(total)?;
    let arithmetic = started.elapsed();

    // Pass 2: project, score and encode every kept batch.
    let started = Instant::now();
    let spent = on_all_threads(threads, kept.len(), |thread, next| {
        let Model { mut session, input, output } = take_model(&models)?;
        let mut out = Output::new(&args.out, thread);
        let mut spent = Spent::default();
        let mut schema: Option<SchemaRef> = None;
        let (mut y, mut valid) = (Vec::new(), Vec::new());
        while let Some(index) = next() {
            let batch = kept[index].lock().map_err(|_| anyhow!("a worker thread panicked"))?.take();
            let Some(batch) = batch else { continue };
            let clock = Instant::now();
            let rows = batch.id.len();
            y.resize(rows * FEATURES, 0.0);
            for (j, array) in batch.features.iter().enumerate() {
                let to = &mut y[j * rows..(j + 1) * rows];
                match array.nulls() {
                    Some(_) => {
                        validity_words(array, &mut valid);
                        select(array.values(), &valid, fit.fill[j], to);
                    }
                    None => to.copy_from_slice(array.values()),
                }
            }
            let mut pc = Mat::<f64>::zeros(rows, COMPONENTS);
            faer::linalg::matmul::matmul(
                pc.as_mut(),
                Accum::Replace,
                MatRef::from_column_major_slice(&y, rows, FEATURES),
                fit.weights.as_ref(),
                1.0,
                Par::Seq,
            );
            let mut pcs: Vec<Vec<f64>> = Vec::with_capacity(COMPONENTS);
            for (k, offset) in fit.offset.iter().enumerate() {
                pcs.push(pc.col_as_slice(k).iter().map(|v| v + offset).collect());
            }
            let mut x = vec![0f32; rows * COMPONENTS];
            for (k, values) in pcs.iter().enumerate() {
                for (i, v) in values.iter().enumerate() {
                    x[i * COMPONENTS + k] = *v as f32;
                }
            }
            let tensor = Tensor::from_array((vec![rows as i64, COMPONENTS as i64], x))?;
            spent.project += clock.elapsed();

            let clock = Instant::now();
            let outputs = session.run(ort::inputs![input.as_str() => tensor])?;
            let (_, scores) = outputs[output.as_str()].try_extract_tensor::<f32>()?;
            ensure!(scores.len() == rows, "the model gave {} scores for {rows} rows", scores.len());
            let score = Float32Array::from(scores.to_vec());
            drop(outputs);
            spent.model += clock.elapsed();

            let clock = Instant::now();
            let schema = schema.get_or_insert_with(|| {
                let mut fields = vec![
                    Field::new("id", batch.id.data_type().clone(), true),
                    Field::new("category", batch.category.data_type().clone(), true),
                ];
                fields.extend((0..COMPONENTS).map(|k| Field::new(format!("pc_{k}"), DataType::Float64, false)));
                fields.push(Field::new("score", DataType::Float32, false));
                Arc::new(Schema::new(fields))
            });
            let mut columns: Vec<ArrayRef> = vec![batch.id, batch.category];
            columns.extend(pcs.into_iter().map(|values| Arc::new(Float64Array::from(values)) as ArrayRef));
            columns.push(Arc::new(score));
            out.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
            spent.encode += clock.elapsed();
        }
        let clock = Instant::now();
        out.close()?;
        spent.encode += clock.elapsed();
        Ok(spent)
    })?;
    let pass2 = started.elapsed();
    let per_thread = |f: fn(&Spent) -> Duration| spent.iter().map(|s| seconds(f(s))).sum::<f64>() / threads as f64;
    Ok(serde_json::json!({
        "workload": "peers",
        "rows": rows,
        "decode_s": seconds(decode),
        "read_s": read,
        "fold_s": folding,
        "arithmetic_s": seconds(arithmetic),
        "pass2_s": seconds(pass2),
        "project_s": per_thread(|s| s.project),
        "model_s": per_thread(|s| s.model),
        "encode_s": per_thread(|s| s.encode),
    }))
}

// ---------------------------------------------------------------------------------------
// The score-only workload.

#[derive(Default)]
struct ScoreSpent {
    rows: u64,
    decode: Duration,
    tensor: Duration,
    model: Duration,
    encode: Duration,
}

fn score(source: &Source, args: &Args, threads: usize) -> Result<serde_json::Value> {
    let models = models(&args.model, threads)?;
    let features = feature_names();
    let mut columns = vec!["id".to_string()];
    columns.extend(features.iter().cloned());
    let spent = on_all_threads(threads, source.units.len(), |thread, next| {
        let Model { mut session, input, output } = take_model(&models)?;
        let mut out = CopyOutput::new(&args.out, thread);
        let mut spent = ScoreSpent::default();
        let mut buffer = Vec::new();
        while let Some(index) = next() {
            let clock = Instant::now();
            let (mut reader, bytes) = source.reader(index, &columns, FEATURES, std::mem::take(&mut buffer))?;
            spent.decode += clock.elapsed();
            let mut group: Option<(Vec<ArrowColumnWriter>, Vec<FieldRef>)> = None;
            loop {
                let clock = Instant::now();
                let Some(batch) = reader.next() else { break };
                let batch = batch.context("cannot decode a batch")?;
                spent.decode += clock.elapsed();

                let clock = Instant::now();
                let rows = batch.num_rows();
                let mut x = vec![0f32; rows * FEATURES];
                for (j, name) in features.iter().enumerate() {
                    let array = cast(&column(&batch, name)?, &DataType::Float32)?;
                    let array = array.as_primitive::<Float32Type>();
                    let values = array.values().iter().enumerate();
                    match array.nulls() {
                        Some(nulls) => values
                            .for_each(|(i, &v)| x[i * FEATURES + j] = if nulls.is_valid(i) { v } else { f32::NAN }),
                        None => values.for_each(|(i, &v)| x[i * FEATURES + j] = v),
                    }
                }
                let tensor = Tensor::from_array((vec![rows as i64, FEATURES as i64], x))?;
                spent.tensor += clock.elapsed();

                let clock = Instant::now();
                let outputs = session.run(ort::inputs![input.as_str() => tensor])?;
                let (shape, values) = outputs[output.as_str()].try_extract_tensor::<f32>()?;
                let width = if shape.len() == 2 { usize::try_from(shape[1])? } else { 1 };
                ensure!(values.len() == rows * width, "the model gave {} values for {rows} rows", values.len());
                let scores: Vec<ArrayRef> = (0..width)
                    .map(|k| {
                        Arc::new(Float32Array::from_iter_values((0..rows).map(|i| values[i * width + k]))) as ArrayRef
                    })
                    .collect();
                drop(outputs);
                spent.model += clock.elapsed();

                let clock = Instant::now();
                if group.is_none() {
                    // What a score step writes: its input's columns, then the scores.
                    let mut fields: Vec<FieldRef> =
                        columns.iter().map(|name| source.field(index, name)).collect::<Result<_>>()?;
                    let scored: Vec<FieldRef> =
                        (0..width).map(|k| Arc::new(Field::new(format!("p_{k}"), DataType::Float32, false))).collect();
                    fields.extend(scored.iter().cloned());
                    let writers = out.column_writers(Arc::new(Schema::new(fields)))?;
                    group = Some((writers.into_iter().skip(columns.len()).collect(), scored));
                }
                if let Some((writers, fields)) = group.as_mut() {
                    for ((writer, field), array) in writers.iter_mut().zip(fields.iter()).zip(&scores) {
                        for leaf in compute_leaves(field, array)? {
                            writer.write(&leaf)?;
                        }
                    }
                }
                spent.rows += rows as u64;
                spent.encode += clock.elapsed();
            }
            drop(reader);
            let clock = Instant::now();
            if let Some((writers, _)) = group {
                out.write_row_group(source, index, &bytes, columns.len(), writers)?;
            }
            spent.encode += clock.elapsed();
            buffer = recycle(bytes.bytes);
        }
        let clock = Instant::now();
        out.close()?;
        spent.encode += clock.elapsed();
        Ok(spent)
    })?;
    let per_thread = |f: fn(&ScoreSpent) -> Duration| spent.iter().map(|s| seconds(f(s))).sum::<f64>() / threads as f64;
    Ok(serde_json::json!({
        "workload": "score",
        "rows": spent.iter().map(|s| s.rows).sum::<u64>(),
        "decode_s": per_thread(|s| s.decode),
        "arithmetic_s": per_thread(|s| s.tensor),
        "model_s": per_thread(|s| s.model),
        "encode_s": per_thread(|s| s.encode),
    }))
}

/// One thread's output file of the score workload: each row group is one source row group,
/// its source columns copied as they are encoded in the source and the scores encoded.
struct CopyOutput {
    path: PathBuf,
    writer: Option<(SerializedFileWriter<File>, ArrowRowGroupWriterFactory)>,
    row_groups: usize,
}

impl CopyOutput {
    fn new(dir: &Path, thread: usize) -> CopyOutput {
        CopyOutput { path: dir.join(format!("part-{thread}.parquet")), writer: None, row_groups: 0 }
    }

    /// The encoders of the next row group's columns, of the output's `schema` (the file is
    /// created at the first call).
    fn column_writers(&mut self, schema: SchemaRef) -> Result<Vec<ArrowColumnWriter>> {
        if self.writer.is_none() {
            let file = File::create(&self.path).with_context(|| format!("cannot create '{}'", self.path.display()))?;
            let properties = writer_properties(&schema);
            self.writer = Some(ArrowWriter::try_new(file, schema, Some(properties))?.into_serialized_writer()?);
        }
        let (_, factory) = self.writer.as_ref().context("opened above")?;
        Ok(factory.create_column_writers(self.row_groups)?)
    }

    /// Writes source row group `unit` as the next row group: its first `copied` columns'
    /// chunks spliced in from `bytes` (the read of the row group), then the `encoded` ones.
    fn write_row_group(
        &mut self,
        source: &Source,
        unit: usize,
        bytes: &RowGroupBytes,
        copied: usize,
        encoded: Vec<ArrowColumnWriter>,
    ) -> Result<()> {
        let (file, group) = source.units[unit];
        let metadata = source.files[file].metadata.metadata().row_group(group);
        let (writer, _) = self.writer.as_mut().context("no row group was started")?;
        let mut row_group = writer.next_row_group()?;
        for chunk in &metadata.columns()[..copied] {
            // A chunk of another column or type is refused by `append_column` itself.
            ensure!(
                matches!(chunk.compression(), Compression::ZSTD(_)),
                "the floor copies zstd chunks only; {} is {}",
                chunk.column_path(),
                chunk.compression()
            );
            let close = ColumnCloseResult {
                bytes_written: chunk.compressed_size() as u64,
                rows_written: metadata.num_rows() as u64,
                metadata: chunk.clone(),
                bloom_filter: None,
                column_index: None,
                offset_index: None,
            };
            row_group.append_column(bytes, close)?;
        }
        for writer in encoded {
            let mut chunk = writer.close()?;
            chunk.close_mut().column_index = None;
            chunk.close_mut().offset_index = None;
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        self.row_groups += 1;
        Ok(())
    }

    fn close(self) -> Result<()> {
        if let Some((writer, _)) = self.writer {
            writer.close().with_context(|| format!("cannot write '{}'", self.path.display()))?;
        }
        Ok(())
    }
}
