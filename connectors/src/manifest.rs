//! `_weir/manifest.json`: what a committed output holds. Written after every part file is
//! complete and before `_SUCCESS`; readers may trust a manifest only when `_SUCCESS`
//! exists beside it.

use arrow::datatypes::Schema;
use serde::{Deserialize, Serialize};

use crate::parquet_sink::PartFile;

/// Version of the manifest format; bumped on incompatible changes.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// The manifest of one committed run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub weir_version: String,
    pub job: JobInfo,
    pub run_id: String,
    /// The run's variables (`ds`, `run_id` and every `--var`), as substituted into the job.
    #[serde(default)]
    pub variables: std::collections::BTreeMap<String, String>,
    /// RFC 3339 UTC time of the commit.
    pub committed_at: String,
    /// The input files this run read.
    pub inputs: Vec<InputFile>,
    /// The job's other inputs (`[inputs.NAME]`, read whole by `join` steps) and their files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_inputs: Vec<OtherInput>,
    /// Every part file of the output: with `sink.mode = "append"`, the earlier runs' files
    /// as well as this run's.
    pub files: Vec<PartFile>,
    /// Rows and bytes of all of `files`.
    pub rows: u64,
    pub bytes: u64,
    /// 1 for the first commit to the prefix, one more for every commit after it (the
    /// previous manifest's generation + 1, whatever its mode). Manifests written before
    /// generations were counted read as 1.
    #[serde(default = "first_generation")]
    pub generation: u64,
    /// For an incremental source (`source.incremental`), every input file processed into
    /// this output so far, by any run: what the next run skips.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ledger: Vec<LedgerEntry>,
    /// The output's columns (with the partition columns, which the files do not store).
    pub schema: Vec<ColumnInfo>,
    /// `sink.partition_by`: the columns of the `k=v/` folders the files lie in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    pub cluster: ClusterInfo,
    /// `sink.encryption`: the key ids the part files are encrypted under (never a key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::encryption::SinkEncryption>,
    /// The models the job scored with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelInfo>,
    /// Where the run's time went, summed over the workers, in the order the work happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageTime>,
    /// Passes the run made over the source (one per fit, dedupe or check stage, plus the
    /// final one).
    #[serde(default)]
    pub passes: u32,
    /// The results of the job's `check` steps, in step order (the failed ones of a step with
    /// `on_fail = "warn"` included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// `sink.rejects`: where this run's rejected rows were committed, and how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<RejectsInfo>,
}

/// The rejects output a run committed with its main output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectsInfo {
    pub uri: String,
    /// The rows this run rejected.
    pub rows: u64,
}

/// The result of one expectation of a `check` step over the step's whole input. Every
/// field is always written (no `skip_serializing_if`): results also cross processes in
/// bincode, which needs each field present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The step's 1-based position in the job.
    pub step: usize,
    /// The step's `name`, if it has one.
    #[serde(default)]
    pub name: Option<String>,
    /// `not_null`, `unique`, `accepted_values`, `range`, `row_count` or `expression`.
    pub expectation: String,
    /// The columns it looks at (none for `row_count` and `expression`).
    #[serde(default)]
    pub columns: Vec<String>,
    /// `fail` or `warn`.
    pub on_fail: String,
    /// Rows the step saw.
    pub rows: u64,
    /// Rows that break the expectation (absent for `row_count`).
    #[serde(default)]
    pub failing_rows: Option<u64>,
    pub passed: bool,
    /// What was found, with counts and never a value.
    pub message: String,
}

/// The time all workers together spent on one stage of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    /// What the time went to, e.g. `read (wait for fetch + decode)` or `step 2 standardize: apply`.
    pub stage: String,
    /// Seconds summed over the workers (with W workers busy all along, W × wall seconds).
    pub worker_seconds: f64,
    /// Batches (or, for work done once per pass, calls) timed.
    pub batches: u64,
    /// Rows (or an aggregate's groups) the stage moved between workers or to local disk.
    #[serde(default)]
    pub rows: u64,
    /// Bytes the stage moved: serialized for an exchange, written for a spill.
    #[serde(default)]
    pub bytes: u64,
}

/// A model a `score` step ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub uri: String,
    /// SHA-256 (hex) of the model file.
    pub sha256: String,
    pub bytes: u64,
}

/// The job that produced the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub name: String,
    /// SHA-256 of the job's TOML and the values of the variables it names.
    pub sha256: String,
}

fn first_generation() -> u64 {
    1
}

/// An input file processed into an output, with the version it had then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub uri: String,
    pub bytes: u64,
    /// The store's ETag, or the file's modification time when the store gives no ETag.
    pub version: String,
}

/// An input file that was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputFile {
    pub uri: String,
    pub bytes: u64,
    pub rows: u64,
}

/// Another input of the job, read whole: its name in the job, where it is, its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtherInput {
    pub name: String,
    pub uri: String,
    pub files: Vec<InputFile>,
}

/// A column of the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    /// Arrow's name of the type, e.g. `Float64`, `Utf8`.
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

/// The shape of the cluster that ran the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub processes: usize,
    pub workers_per_process: usize,
}

/// Describes `schema`'s columns for the manifest.
pub fn describe_schema(schema: &Schema) -> Vec<ColumnInfo> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnInfo { name: f.name().clone(), data_type: f.data_type().to_string(), nullable: f.is_nullable() })
        .collect()
}
