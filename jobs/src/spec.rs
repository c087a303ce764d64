//! The job definition as written in TOML. Unknown fields are errors; defaults follow Spark
//! where the design is silent (`sink.mode = "error_if_exists"`).

pub use crate::schedule::{Catchup, ScheduleSpec};
use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::DeTable;
use weir_connectors::StorageOptions;
use weir_connectors::commit::WriteMode;
use weir_connectors::encryption::{SinkEncryption, SourceDecryption};
use weir_connectors::parquet_sink::Codec;
use weir_connectors::partitions::Partitioning;
use weir_connectors::readiness::Readiness;
use weir_operators::StepSpec;

use crate::vars::toml_message;

/// Default rows per batch on the map path (sized for caches and for ONNX Runtime).
pub const DEFAULT_BATCH_SIZE: usize = 8192;
/// Default longest shard: row groups with more rows are sliced.
pub const DEFAULT_MAX_SHARD_ROWS: u64 = 1 << 20;
/// Default bytes of decoded source batches a process keeps between passes, in MiB.
pub const DEFAULT_CACHE_MB: u64 = 256;

/// Default MiB of decoded batches each process may spill to local disk between passes, past
/// the in-memory cache: enough for a few hundred million rows of numeric features, bounded
/// so a run cannot fill a shared disk.
pub const DEFAULT_SPILL_MB: u64 = 32 * 1024;
/// Default rows per row group of the part files.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;

/// A job file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// `[a-z0-9_-]+`.
    pub name: String,
    /// Reuse the fitted parameters of this earlier run's output (or `fitted.json`) in every
    /// fitted step that does not name its own `fitted`.
    #[serde(default)]
    pub fitted: Option<String>,
    /// When the job service runs the job by itself; `weir run` ignores it.
    #[serde(default)]
    pub schedule: Option<ScheduleSpec>,
    pub source: SourceSpec,
    /// `[inputs.NAME]`: further datasets the steps read by name (a `join`'s other side).
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, InputSpec>,
    #[serde(default, rename = "step")]
    pub steps: Vec<StepSpec>,
    pub sink: SinkSpec,
    /// Overrides of the store configuration (never secrets).
    #[serde(default)]
    pub storage: StorageOptions,
    /// The job service retries a run that failed for an External reason (a store or the
    /// cluster, never bad input) up to this many times (default 0); `weir run` does not.
    #[serde(default)]
    pub retries: u32,
    /// Seconds between a failed attempt and its retry (default 60).
    #[serde(default)]
    pub retry_delay_s: Option<u64>,
    /// The job service waits this long, from the first attempt, for a source that has no
    /// data yet ("input not ready"), trying again every `retry_delay_s` (default 0: no wait).
    #[serde(default)]
    pub wait_for_input_s: u64,
    /// `[vars]`: the variables the job takes, typed (see [`crate::declared_vars`]); when
    /// present, no other variable is accepted.
    #[serde(default)]
    pub vars: Option<std::collections::BTreeMap<String, crate::declared_vars::VarSpec>>,
}

/// The most retries a job may ask for.
pub const MAX_RETRIES: u32 = 10;

/// Default seconds between a failed attempt and its retry.
pub const DEFAULT_RETRY_DELAY_S: u64 = 60;

/// Data formats. Only Parquet, for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Parquet,
}

/// `[inputs.NAME]`: another dataset of the job, read whole by the steps that name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// A file, a prefix or a glob; a path, `file://` or `s3://`.
    pub uri: String,
    #[serde(default)]
    pub format: Format,
    /// Columns to read (pushed into the Parquet reader); all when absent.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// As `source.partitioning`.
    #[serde(default)]
    pub partitioning: Partitioning,
}

/// `[source]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A file, a prefix or a glob; a path, `file://` or `s3://`.
    pub uri: String,
    #[serde(default)]
    pub format: Format,
    /// Columns to read, in this order (pushed into the Parquet reader); all when absent.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Rows per batch (default 8192).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Row groups longer than this are cut into several shards (default 1,048,576).
    #[serde(default)]
    pub max_shard_rows: Option<u64>,
    /// MiB of decoded batches each process keeps in memory for the passes after the first
    /// (jobs with fitted steps or a dedupe read the source once per stage); 0 turns the
    /// cache off (default 256: past it, spilling to local disk costs about the same and keeps
    /// the process small; bench/README.md has the measurement).
    #[serde(default)]
    pub cache_mb: Option<u64>,
    /// MiB of decoded batches each process may write to local disk (uncompressed Arrow IPC)
    /// for the passes after the first, once `cache_mb` is full, so the source is decoded
    /// once; 0 turns spilling off (default 32768). A source read with `[source.decryption]`
    /// never spills.
    #[serde(default)]
    pub spill_mb: Option<u64>,
    /// MiB of the spill directory's file system that spilling always leaves free (default:
    /// the larger of 2 GiB and 2% of the file system), so a spill cannot starve the output
    /// or anything else sharing the disk. A shard that would cross it is read again instead.
    #[serde(default)]
    pub spill_keep_free_mb: Option<u64>,
    /// The directory spill files go in (each worker makes its own temporary directory there
    /// and removes it at the end of the run); default: the system's temporary directory
    /// (`TMPDIR`).
    #[serde(default)]
    pub spill_dir: Option<std::path::PathBuf>,
    /// `hive` (default): `key=value` folders below the source's root are typed columns,
    /// after the files' own; `none`: they are not.
    #[serde(default)]
    pub partitioning: Partitioning,
    /// Read only the files not processed into the output before: the output's manifest
    /// keeps a ledger of every input file (URI, size, ETag or modification time) whose rows
    /// it holds. Needs `sink.mode = "append"`.
    #[serde(default)]
    pub incremental: bool,
    /// What an incremental run does when a file it processed before has changed: `fail`
    /// (default: exit 2 naming it, nothing committed) or `skip` (a warning; it is not read).
    #[serde(default)]
    pub on_changed: Option<OnChanged>,
    /// `[source.decryption]`: the input files may be Parquet-encrypted; their keys come
    /// from `WEIR_KEY_<ID>` or `WEIR_KEY_DIR`, never from the job.
    #[serde(default)]
    pub decryption: Option<SourceDecryption>,
    /// `[source.ready]`: when the source counts as landed (a marker object, a least number
    /// of files or bytes, no write for some seconds); otherwise the run fails as "input not
    /// ready" (exit 4), which the job service retries while `wait_for_input_s` lasts.
    #[serde(default)]
    pub ready: Option<Readiness>,
}

/// `source.on_changed`: an incremental source's answer to a processed file that changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnChanged {
    #[default]
    Fail,
    Skip,
}

/// `[sink]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// The output prefix.
    pub uri: String,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub compression: Codec,
    /// The codec's level: zstd -131072 to 22 (default 1; negative levels write faster and
    /// larger), gzip 0 to 9, brotli 0 to 11; snappy, lz4 and none have none.
    #[serde(default)]
    pub compression_level: Option<i32>,
    #[serde(default)]
    pub mode: WriteMode,
    /// Write rows into `k=v/` folders by these columns' values (Hive style); the files do
    /// not store them. Integer, string, date and boolean columns.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Rows per row group in the part files (default 131,072).
    #[serde(default)]
    pub row_group_rows: Option<usize>,
    /// Whether columns a job passes through unchanged are copied into the part files as
    /// the source encoded them instead of being encoded again (default true; see
    /// `weir_connectors::chunk_copy` and docs/output.md).
    #[serde(default = "default_true")]
    pub copy_unchanged_columns: bool,
    /// Seconds a run's lease on the output outlives its last heartbeat (default 60): how
    /// long a killed run keeps others from the prefix.
    #[serde(default)]
    pub lease_ttl_s: Option<u64>,
    /// `[sink.encryption]`: Parquet modular encryption of the part files, by key ids.
    #[serde(default)]
    pub encryption: Option<SinkEncryption>,
    /// Where the rows that steps reject (a `cast` with `on_error = "reject"`, a `check` with
    /// `on_fail = "reject"`) are committed, with the main output: a prefix on the same store.
    #[serde(default)]
    pub rejects: Option<String>,
}

fn default_true() -> bool {
    true
}

impl JobSpec {
    /// Every place the job reads or writes, with the field that names it: the source, the
    /// sink, a job-level `fitted`, and each step's models and `fitted`.
    pub fn places(&self) -> Vec<(String, &str)> {
        let mut places: Vec<(String, &str)> =
            vec![("source.uri".into(), &self.source.uri), ("sink.uri".into(), &self.sink.uri)];
        if let Some(rejects) = &self.sink.rejects {
            places.push(("sink.rejects".into(), rejects));
        }
        if let Some(fitted) = &self.fitted {
            places.push(("fitted".into(), fitted));
        }
        for (name, input) in &self.inputs {
            places.push((format!("inputs.{name}"), &input.uri));
        }
        for (index, step) in self.steps.iter().enumerate() {
            for uri in step.uris() {
                places.push((format!("step {} ({})", index + 1, step.op_name()), uri));
            }
        }
        places
    }

    /// Parses a job's TOML (no variables); errors carry TOML's line, column and a snippet.
    pub fn from_toml(text: &str) -> Result<JobSpec, String> {
        let document = toml::de::DeTable::parse(text).map_err(|error| toml_message(error, text))?;
        JobSpec::from_document(document, text)
    }

    /// Deserializes a parsed document (after [`Variables::parse_and_substitute`]); `text`
    /// is what it was parsed from, for the error's line, column and snippet.
    ///
    /// [`Variables::parse_and_substitute`]: crate::vars::Variables::parse_and_substitute
    pub fn from_document(document: Spanned<DeTable<'_>>, text: &str) -> Result<JobSpec, String> {
        JobSpec::deserialize(toml::de::Deserializer::from(document)).map_err(|error| toml_message(error, text))
    }

    /// Checks what serde cannot: the job name's alphabet and positive sizes.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err(format!("job name '{}' must match [a-z0-9_-]+", self.name));
        }
        if let Some(schedule) = &self.schedule {
            crate::schedule::Schedule::new(schedule)?;
        }
        if self.retries > MAX_RETRIES {
            return Err(format!("retries is {}; at most {MAX_RETRIES} are allowed", self.retries));
        }
        if self.source.batch_size == Some(0) {
            return Err("source.batch_size must be positive".into());
        }
        if self.source.max_shard_rows == Some(0) {
            return Err("source.max_shard_rows must be positive".into());
        }
        if let Some(ready) = &self.source.ready {
            ready.check()?;
        }
        self.sink.compression.compression(self.sink.compression_level)?;
        if self.sink.row_group_rows == Some(0) {
            return Err("sink.row_group_rows must be positive".into());
        }
        if self.sink.lease_ttl_s == Some(0) {
            return Err("sink.lease_ttl_s must be positive".into());
        }
        if self.source.incremental && self.sink.mode != WriteMode::Append {
            return Err(
                "source.incremental needs sink.mode = \"append\": each run adds the rows of the new files to the output"
                    .into(),
            );
        }
        if self.source.on_changed.is_some() && !self.source.incremental {
            return Err("source.on_changed applies only to an incremental source (source.incremental = true)".into());
        }
        for name in self.inputs.keys() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                return Err(format!("input name '{name}' must match [a-z0-9_]+"));
            }
            if !self.steps.iter().any(|step| step.joined_input().is_some_and(|(with, _)| with == name)) {
                return Err(format!("[inputs.{name}] is declared, but no step reads it (join with = \"{name}\")"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = r#"
name = "clean-events"

[source]
uri = "data/in/"
columns = ["id", "age"]

[[step]]
op = "cast"
columns = { age = "float64" }

[[step]]
op = "filter"
expr = "age >= 0"

[sink]
uri = "data/out/"
mode = "overwrite"
"#;

    #[test]
    fn parses_a_job_with_defaults() {
        let job = JobSpec::from_toml(JOB).unwrap();
        assert_eq!(job.steps.len(), 2);
        assert_eq!(job.steps[1].op_name(), "filter");
        assert_eq!(job.sink.compression, Codec::Zstd);
        assert_eq!(job.sink.mode, WriteMode::Overwrite);
        job.check().unwrap();
    }

    #[test]
    fn unknown_fields_are_errors_with_a_position() {
        let text = JOB.replace("expr = \"age >= 0\"", "expr = \"age >= 0\"\nexprs = 1");
        let err = JobSpec::from_toml(&text).unwrap_err();
        assert!(err.contains("exprs") && err.contains("line"), "{err}");
    }

    #[test]
    fn unknown_ops_are_errors_naming_the_op() {
        let text = JOB.replace("op = \"filter\"", "op = \"filtr\"");
        let err = JobSpec::from_toml(&text).unwrap_err();
        assert!(err.contains("filtr"), "{err}");
    }

    #[test]
    fn sink_mode_defaults_to_error_if_exists() {
        let job = JobSpec::from_toml(&JOB.replace("mode = \"overwrite\"", "")).unwrap();
        assert_eq!(job.sink.mode, WriteMode::ErrorIfExists);
    }

    #[test]
    fn schedules_are_checked() {
        let with = |table: &str| JobSpec::from_toml(&format!("{JOB}\n[schedule]\n{table}")).unwrap();
        let job = with("cron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\ncatchup = \"all\"");
        job.check().unwrap();
        assert_eq!(job.schedule.unwrap().catchup, Catchup::All);
        assert!(with("cron = \"at two\"").check().unwrap_err().contains("'at two' is not a cron expression"));
        assert!(with("cron = \"0 2 * * *\"\ntimezone = \"Mars/Base\"").check().unwrap_err().contains("'Mars/Base'"));
        assert!(with("cron = \"*/2 * * * * *\"").check().is_ok(), "six fields: seconds");
    }

    #[test]
    fn bad_names_are_refused() {
        let job = JobSpec::from_toml(&JOB.replace("clean-events", "Clean Events")).unwrap();
        assert!(job.check().unwrap_err().contains("[a-z0-9_-]+"));
    }
}
