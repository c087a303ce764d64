//! The engine plan: plain data that every process builds identically from the job and the
//! source's footers, and that the engine interprets.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use weir_connectors::Location;
use weir_connectors::commit::WriteMode;
use weir_connectors::parquet_sink::PartOptions;
use weir_connectors::parquet_source::{ParquetSource, Shard};
use weir_operators::BoundStep;
use weir_operators::dedupe::Dedupe;
use weir_operators::fit::FitStep;
use weir_operators::fitted_file::FittedStep;

/// A step bound to its input schema, with what error messages need to name it.
#[derive(Debug)]
pub struct PlannedStep {
    /// 1-based position in the job.
    pub number: usize,
    pub op: &'static str,
    pub kind: StepKind,
    /// For a fitted step that reuses an earlier run's parameters (`fitted = "…"`): its entry
    /// for this run's `fitted.json`. Its `kind` is then already a map.
    pub reused: Option<FittedStep>,
}

/// What the engine does with a step.
#[derive(Debug)]
pub enum StepKind {
    /// Maps each batch on its own.
    Map(Arc<dyn BoundStep>),
    /// Fitted on the output of the steps before it, in a pass of its own (shared with the
    /// fitted steps right after it when that is equivalent), then mapped.
    Fit(Box<dyn FitStep>),
    /// Keeps one row per key: a pass that sends every row's key through a keyed
    /// differential-dataflow reduction, then a filter that keeps the winners.
    Dedupe(Dedupe),
}

/// Everything a worker needs to run its share of a job.
#[derive(Debug)]
pub struct EnginePlan {
    pub job_name: String,
    /// SHA-256 of the job's TOML after variable substitution.
    pub job_sha256: String,
    pub run_id: String,
    /// The run's variables, recorded in the manifest.
    pub variables: std::collections::BTreeMap<String, String>,
    /// This attempt of the run (`<run_id>.<8 hex>`): names the lease and the staging
    /// directory `_weir/runs/<attempt>/` under the sink.
    pub attempt: String,
    /// Time to live of the output lease (`sink.lease_ttl_s`).
    pub lease_ttl: std::time::Duration,
    /// `--force`: the overwrite guards were skipped; also lets overwrite write beside
    /// objects that no manifest records (never deleting them).
    pub force: bool,
    pub source: ParquetSource,
    /// All shards of the source; shard `i` belongs to global worker `i % peers`.
    pub shards: Vec<Shard>,
    pub steps: Vec<PlannedStep>,
    /// The schema of the rows the steps produce (the output's columns).
    pub output_schema: SchemaRef,
    /// `sink.partition_by`: columns whose values name the folders rows are written to.
    pub partition_by: Vec<String>,
    /// The schema stored in the part files: `output_schema` without the partition columns.
    pub file_schema: SchemaRef,
    pub sink: Location,
    pub mode: WriteMode,
    pub part_options: PartOptions,
    /// Rows per batch read from the source.
    pub batch_size: usize,
    /// Batches a worker may have read but not yet written.
    pub max_batches_in_flight: u64,
    /// Bytes of decoded source batches a process keeps in memory between passes
    /// ([`crate::cache`]).
    pub cache_bytes: u64,
    /// Bytes of decoded source batches a process may spill to local disk between passes,
    /// past `cache_bytes` (0: none); a source read with decryption never spills.
    pub spill_bytes: u64,
    /// Where the spill files go: each worker makes its own temporary directory in it.
    pub spill_dir: std::path::PathBuf,
    /// The models of the job's `score` steps, for the manifest.
    pub models: Vec<weir_connectors::manifest::ModelInfo>,
    /// `score` steps pinned to fitted parameters (`fitted_sha256`): (the score step's
    /// number, the SHA-256). Checked once the steps before it are fitted, before any row is
    /// written.
    pub pins: Vec<(usize, String)>,
    /// `weir fit`: run only the fitting stages and write `fitted.json` here, with no output
    /// and no lease.
    pub fit_output: Option<Location>,
    /// For an incremental source: the generation of the committed output whose ledger
    /// chose `source`'s files (0: no committed output). The commit round refuses to go on
    /// if the output has moved on since, and records the files in the new ledger.
    pub incremental_base: Option<u64>,
}

impl EnginePlan {
    /// The shards of global worker `worker` among `peers`, in shard order.
    pub fn shards_of(&self, worker: usize, peers: usize) -> impl Iterator<Item = &Shard> {
        self.shards.iter().filter(move |shard| shard.index % peers == worker)
    }

    /// Where a worker stages its part file until the commit, relative to the sink. Besides
    /// the hidden `_weir` component, the name lacks the `.parquet` extension, so even a
    /// recursive glob such as `PREFIX/**/*.parquet` does not pick it up.
    /// `folder` is the rows' partition folder (`k=v/…`), or `""`.
    pub fn staged_part_name(&self, worker: usize, folder: &str) -> String {
        let runs = weir_connectors::lease::RUNS_DIR;
        match folder {
            "" => format!("{runs}/{}/part-{worker:05}.staged", self.attempt),
            folder => format!("{runs}/{}/{folder}/part-{worker:05}.staged", self.attempt),
        }
    }

    /// A digest of what this process planned to read (each file with its version, the
    /// shards, the incremental base): every process of a cluster must plan the same, and a
    /// source that changed between their plannings would make them differ.
    pub fn input_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for file in self.source.files() {
            hasher.update(format!("{}\n{}\n{}\n{}\n", file.uri, file.size, file.version, file.rows));
        }
        hasher.update(format!("{} shards; base {:?}", self.shards.len(), self.incremental_base));
        hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The name a worker's part file is published under, relative to the sink.
    pub fn part_name(&self, worker: usize, folder: &str) -> String {
        match folder {
            "" => format!("part-{worker:05}-{}.parquet", self.run_id),
            folder => format!("{folder}/part-{worker:05}-{}.parquet", self.run_id),
        }
    }
}

/// Shared ownership of a plan across worker threads.
pub type SharedPlan = Arc<EnginePlan>;
