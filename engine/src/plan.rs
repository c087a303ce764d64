//! The engine plan: plain data that every process builds identically from the job and the
//! source's footers, and that the engine interprets.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use weir_connectors::Location;
use weir_connectors::commit::WriteMode;
use weir_connectors::parquet_sink::PartOptions;
use weir_connectors::source::{Shard, Source};
use weir_operators::BoundStep;
use weir_operators::aggregate::Aggregate;
use weir_operators::check::Check;
use weir_operators::dedupe::Dedupe;
use weir_operators::fit::FitStep;
use weir_operators::fitted_file::FittedStep;
use weir_operators::rejects::RejectsLayout;

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
    /// Counts expectations over the step's whole input in a pass of its own (a `unique` key
    /// through the same keyed reduction as a dedupe), then passes rows on unchanged.
    Check(Check),
    /// One row per group: a pass folds each worker's rows into a group table, the partial
    /// groups are exchanged by key hash and merged, and the passes after it read the
    /// groups each worker merged instead of the source's shards.
    Aggregate(Arc<Aggregate>),
}

/// See [`EnginePlan::shard_owners`]; `shards[i].index` must be `i`.
fn balance_by_rows(shards: &[Shard], peers: usize) -> Vec<usize> {
    let peers = peers.max(1);
    let mut order: Vec<&Shard> = shards.iter().collect();
    order.sort_by_key(|shard| (std::cmp::Reverse(shard.rows), shard.index));
    let mut load = vec![0u64; peers];
    let mut owners = vec![0; shards.len()];
    for shard in order {
        let lightest = (0..peers).min_by_key(|&w| (load[w], w)).unwrap_or(0);
        load[lightest] += shard.rows;
        owners[shard.index] = lightest;
    }
    owners
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
    /// What the job reads ([`Source`]: Parquet today).
    pub source: Arc<dyn Source>,
    /// All shards of the source; which worker reads each is [`EnginePlan::shard_owners`].
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
    /// Bytes of the spill directory's file system a spill always leaves free; `None`: the
    /// larger of 2 GiB and 2% of it.
    pub spill_keep_free_bytes: Option<u64>,
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
    /// `sink.rejects`: where the rows that steps reject go, committed with the output.
    pub rejects: Option<RejectsPlan>,
    /// The job's other inputs that steps read whole (a `join`'s), for the manifest.
    pub other_inputs: Vec<weir_connectors::manifest::OtherInput>,
    /// When the last step is open (a `onehot` whose output columns are its fitted
    /// categories): what binds the steps after it once it is fitted. Until then
    /// `output_schema`, `file_schema` and `rejects`' layout are provisional (the open
    /// step's input) and nothing may be written or checked against them.
    pub rest: Option<Arc<dyn PlanRest>>,
}

/// What [`PlanRest::bind`] gives: the plan bound further, once awaited.
pub type BoundRest = std::pin::Pin<Box<dyn std::future::Future<Output = Result<EnginePlan, crate::JobFailure>> + Send>>;

/// The steps of a job after an open step, bound once the steps so far are fitted: the
/// planner's half of late binding (`weir_jobs` implements it; the engine calls it).
pub trait PlanRest: Send + Sync + std::fmt::Debug {
    /// The whole plan again, for the same attempt, source and shards, with the steps so
    /// far bound to `fitted` (every entry of `fitted.json` so far, in step order): its
    /// first steps are those of the plan it continues, and it may itself stop at a later
    /// open step. Errors are the job's (a later step that does not fit the columns made).
    fn bind(self: Arc<Self>, fitted: Vec<weir_operators::fitted_file::FittedStep>) -> BoundRest;
}

impl EnginePlan {
    /// The open step the plan stops at, as (number, op), if it does.
    pub fn open_step(&self) -> Option<(usize, &'static str)> {
        self.rest.as_ref().and(self.steps.last()).map(|step| (step.number, step.op))
    }
}

/// The rejects output of a run (`sink.rejects`): the rows a `cast` with
/// `on_error = "reject"` or a `check` with `on_fail = "reject"` takes out of the flow,
/// written as part files of its own and committed together with the main output
/// ([`weir_connectors::commit::commit`]). Never partitioned nor encrypted.
#[derive(Debug)]
pub struct RejectsPlan {
    pub output: Location,
    pub layout: RejectsLayout,
    pub part_options: PartOptions,
}

impl EnginePlan {
    /// The shards of global worker `worker` among `peers`, in shard order.
    /// The global worker that reads each shard, by shard index: the shards' rows balanced
    /// over `peers` workers, so that a pass ends at about the same time on every worker
    /// (the last row group of a file is often short: `index % peers` left one worker 10%
    /// more rows than the other at 10M rows). The longest shards go first, each to the
    /// worker with the fewest rows so far (ties to the lower index, then the lower worker):
    /// every process computes the same owners from the same plan.
    pub fn shard_owners(&self, peers: usize) -> Vec<usize> {
        balance_by_rows(&self.shards, peers)
    }

    /// After an `aggregate`, a worker's groups are read as one more shard: the shard index
    /// `shards.len() + worker`, owned by that worker.
    pub fn groups_shard(&self, worker: usize) -> usize {
        self.shards.len() + worker
    }

    /// [`EnginePlan::shard_owners`] with the groups' shards after the source's
    /// ([`EnginePlan::groups_shard`]), for the keyed reductions that route rows back.
    pub fn owners_with_groups(&self, peers: usize) -> Vec<usize> {
        let mut owners = self.shard_owners(peers);
        owners.extend(0..peers.max(1));
        owners
    }

    /// The shards `worker` reads, in index order (see [`EnginePlan::shard_owners`]).
    pub fn shards_of(&self, worker: usize, peers: usize) -> impl Iterator<Item = &Shard> {
        let owners = self.shard_owners(peers);
        self.shards.iter().filter(move |shard| owners[shard.index] == worker)
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

    /// Where the leader stages an encrypted output's fitted parameters until the commit,
    /// relative to the sink ([`weir_connectors::encrypted_fitted`]).
    pub fn staged_fitted_name(&self) -> String {
        format!("{}/{}/fitted.parquet.staged", weir_connectors::lease::RUNS_DIR, self.attempt)
    }

    /// A digest of what this process planned to read (each file with its version, the
    /// shards, the incremental base): every process of a cluster must plan the same, and a
    /// source that changed between their plannings would make them differ.
    pub fn input_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for input in self.source.inputs() {
            hasher.update(format!("{}\n{}\n{}\n{}\n", input.uri, input.size, input.version, input.rows));
        }
        hasher.update(format!("{} shards; base {:?}", self.shards.len(), self.incremental_base));
        for other in &self.other_inputs {
            for file in &other.files {
                hasher.update(format!("{}: {}\n{}\n{}\n", other.name, file.uri, file.bytes, file.rows));
            }
        }
        hex::encode(hasher.finalize())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(rows: &[u64]) -> Vec<Shard> {
        rows.iter()
            .enumerate()
            .map(|(index, &rows)| Shard { index, file: 0, row_group: index, offset: 0, rows })
            .collect()
    }

    #[test]
    fn shards_are_balanced_by_rows_not_by_index() {
        // Two files of 19 full row groups and a short last one, as gen_data.py writes them.
        let mut rows = Vec::new();
        for _ in 0..2 {
            rows.extend([131_072; 19]);
            rows.push(9_632);
        }
        let owners = balance_by_rows(&shards(&rows), 2);
        let load = |w: usize| -> u64 { rows.iter().zip(&owners).filter(|(_, o)| **o == w).map(|(r, _)| r).sum() };
        assert_eq!(load(0) + load(1), rows.iter().sum::<u64>());
        assert!(load(0).abs_diff(load(1)) <= 131_072, "{} vs {}", load(0), load(1));
        // (Round robin, index % 2, gives worker 0 twenty full row groups, worker 1 eighteen.)
        let owners = balance_by_rows(&shards(&[5, 5, 5, 1]), 3);
        assert_eq!(owners, vec![0, 1, 2, 0]);
        assert_eq!(balance_by_rows(&shards(&[3, 3]), 0), vec![0, 0], "no peers counts as one");
    }
}
