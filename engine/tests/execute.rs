//! In-process runs of `execute`: the engine's orchestration (passes, leader rounds, fit and
//! dedupe stages, the commit) at 1 and 3 worker threads, without the binary, each checked
//! against a reference computed here in plain Rust from the generated input.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use weir_connectors::commit::WriteMode;
use weir_connectors::parquet_sink::{Codec, PartOptions};
use weir_connectors::parquet_source::ParquetSource;
use weir_connectors::partitions::Partitioning;
use weir_connectors::source::Source;
use weir_connectors::{Location, StorageOptions};
use weir_engine::{
    ClusterSetup, EnginePlan, FailureKind, JobFailure, PlannedStep, ProcessContext, Progress, RunSummary, StepKind,
    execute,
};
use weir_operators::{BindContext, Bound, StepSpec, bind_steps};

/// One generated input row.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    x: Option<f64>,
    key: String,
    s: String,
}

/// 3 files × 2 row groups: ids in order, `x` with some nulls, `key` repeating, `s` float
/// texts (with `bad` in file 2, row group 1, when asked).
fn write_source(dir: &Path, bad: bool) -> Vec<Row> {
    std::fs::create_dir_all(dir).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("key", DataType::Utf8, false),
        Field::new("s", DataType::Utf8, false),
    ]));
    let mut rows = Vec::new();
    for file in 0..3i64 {
        let part: Vec<Row> = (0..1_000i64)
            .map(|i| {
                let id = file * 1_000 + i;
                let x = (id % 17 != 0).then(|| ((id * 7919) % 1_000) as f64 / 10.0 - 37.5);
                let s = if bad && file == 2 && i == 700 { "oops".to_string() } else { format!("{}", id as f64 / 4.0) };
                Row { id, x, key: format!("k{}", (id * 31) % 211), s }
            })
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(part.iter().map(|r| r.id).collect::<Vec<_>>())),
                Arc::new(Float64Array::from(part.iter().map(|r| r.x).collect::<Vec<_>>())),
                Arc::new(StringArray::from(part.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())),
                Arc::new(StringArray::from(part.iter().map(|r| r.s.as_str()).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let file_path = dir.join(format!("part-{file}.parquet"));
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(500)).build();
        let mut writer =
            ArrowWriter::try_new(std::fs::File::create(file_path).unwrap(), schema.clone(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        rows.extend(part);
    }
    rows
}

#[derive(serde::Deserialize)]
struct Steps {
    #[serde(default)]
    step: Vec<StepSpec>,
}

/// The plan the jobs layer would make for `steps` (TOML `[[step]]` tables) from `src` to `out`.
fn plan(runtime: &tokio::runtime::Runtime, src: &Path, out: &Path, steps: &str, run_id: &str) -> EnginePlan {
    let source_location = Location::parse(src.to_str().unwrap(), &StorageOptions::default()).unwrap();
    let source = runtime.block_on(ParquetSource::open(&source_location, None, Partitioning::Hive, None)).unwrap();
    let specs: Steps = toml::from_str(steps).unwrap();
    let bound = bind_steps(&specs.step, source.schema(), &BindContext::default()).unwrap();
    let output_schema = bound.last().map(|b| b.output_schema()).unwrap_or_else(|| source.schema().clone());
    let steps = bound
        .into_iter()
        .zip(&specs.step)
        .enumerate()
        .map(|(index, (bound, spec))| PlannedStep {
            number: index + 1,
            op: spec.op_name(),
            kind: match bound {
                Bound::Map(step) => StepKind::Map(Arc::from(step)),
                Bound::Fit(fit) => StepKind::Fit(fit),
                Bound::Dedupe(dedupe) => StepKind::Dedupe(dedupe),
                Bound::Check(check) => StepKind::Check(check),
                Bound::Aggregate(aggregate) => StepKind::Aggregate(aggregate),
            },
            reused: None,
        })
        .collect();
    let shards = source.shards(300);
    EnginePlan {
        job_name: "engine-test".into(),
        job_sha256: String::new(),
        run_id: run_id.into(),
        variables: Default::default(),
        attempt: format!("{run_id}.0000abcd"),
        lease_ttl: Duration::from_secs(30),
        force: false,
        source: Arc::new(source),
        shards,
        steps,
        output_schema: output_schema.clone(),
        partition_by: vec![],
        file_schema: output_schema,
        sink: Location::parse(out.to_str().unwrap(), &StorageOptions::default()).unwrap(),
        mode: WriteMode::Overwrite,
        part_options: PartOptions {
            codec: Codec::default(),
            level: None,
            row_group_rows: 1_000,
            encryption: None,
            copy_columns: None,
        },
        batch_size: 128,
        max_batches_in_flight: 4,
        cache_bytes: 64 << 20,
        spill_bytes: 0,
        spill_dir: std::env::temp_dir(),
        spill_keep_free_bytes: None,
        models: vec![],
        incremental_base: None,
        rejects: None,
        rest: None,
        other_inputs: Vec::new(),
        pins: vec![],
        fit_output: None,
    }
}

fn run(
    runtime: &tokio::runtime::Runtime,
    plan: EnginePlan,
    workers: usize,
) -> (Result<RunSummary, JobFailure>, Arc<std::sync::Mutex<Vec<String>>>) {
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = failures.clone();
    let context = ProcessContext {
        runtime: runtime.handle().clone(),
        progress: Arc::new(Progress::default()),
        abort: Arc::new(AtomicBool::new(false)),
        on_failure: Arc::new(move |failure: &JobFailure| seen.lock().unwrap().push(failure.message.clone())),
        cluster_secret: vec![],
        connect_timeout: Duration::from_secs(10),
    };
    (execute(Arc::new(plan), ClusterSetup::SingleProcess { workers }, context), failures)
}

/// The committed output's rows, through the files its manifest lists.
fn read_output(out: &Path) -> Vec<RecordBatch> {
    assert!(out.join("_SUCCESS").exists(), "not committed");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_weir/manifest.json")).unwrap()).unwrap();
    let mut batches = Vec::new();
    for file in manifest["files"].as_array().unwrap() {
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(out.join(file["path"].as_str().unwrap())).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        batches.extend(reader.map(Result::unwrap));
    }
    batches
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch.column_by_name(name).unwrap().as_any().downcast_ref::<T>().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn a_fitted_standardize_equals_the_reference_at_1_and_3_workers() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let rows = write_source(&dir.path().join("src"), false);
    let present: Vec<f64> = rows.iter().filter_map(|r| r.x).collect();
    let mean = present.iter().sum::<f64>() / present.len() as f64;
    let std = (present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / present.len() as f64).sqrt();
    let by_id: HashMap<i64, Option<f64>> = rows.iter().map(|r| (r.id, r.x)).collect();
    for workers in [1, 3] {
        let out = dir.path().join(format!("out-{workers}"));
        let steps = "[[step]]\nop = \"standardize\"\ncolumns = [\"x\"]\n";
        let (outcome, _) = run(&runtime, plan(&runtime, &dir.path().join("src"), &out, steps, "std"), workers);
        let summary = outcome.unwrap();
        assert_eq!((summary.rows_in, summary.rows_out), (3_000, 3_000));
        assert_eq!(summary.passes, 2, "one fit pass, one final pass");
        let mut seen = 0;
        for batch in read_output(&out) {
            let (ids, xs) = (column::<Int64Array>(&batch, "id"), column::<Float64Array>(&batch, "x"));
            for row in 0..batch.num_rows() {
                seen += 1;
                match by_id[&ids.value(row)] {
                    None => assert!(xs.is_null(row)),
                    Some(x) => assert!((xs.value(row) - (x - mean) / std).abs() < 1e-12, "{workers} workers"),
                }
            }
        }
        assert_eq!(seen, 3_000);
        let fitted: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("_weir/fitted.json")).unwrap()).unwrap();
        let fitted_mean = fitted["steps"][0]["params"]["columns"]["x"]["mean"].as_f64().unwrap();
        assert!((fitted_mean - mean).abs() < 1e-12);
    }
}

#[test]
fn dedupe_keeps_each_keys_first_row_at_1_and_3_workers() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let rows = write_source(&dir.path().join("src"), false);
    let mut first: HashMap<&str, i64> = HashMap::new();
    for row in &rows {
        first.entry(row.key.as_str()).or_insert(row.id);
    }
    let mut want: Vec<i64> = first.values().copied().collect();
    want.sort_unstable();
    for workers in [1, 3] {
        let out = dir.path().join(format!("out-{workers}"));
        let steps = "[[step]]\nop = \"dedupe\"\ncolumns = [\"key\"]\n";
        let (outcome, _) = run(&runtime, plan(&runtime, &dir.path().join("src"), &out, steps, "dedupe"), workers);
        assert_eq!(outcome.unwrap().rows_out, want.len() as u64);
        let mut got: Vec<i64> =
            read_output(&out).iter().flat_map(|b| column::<Int64Array>(b, "id").values().to_vec()).collect();
        got.sort_unstable();
        assert_eq!(got, want, "{workers} workers");
    }
}

#[test]
fn aggregate_then_dedupe_gives_each_keys_count_sum_and_first_id_at_1_and_3_workers() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let rows = write_source(&dir.path().join("src"), false);
    // Reference: per key, the row count, the sum of id and the first id (in input order).
    let mut want: HashMap<String, (i64, i64, i64)> = HashMap::new();
    for row in &rows {
        let entry = want.entry(row.key.clone()).or_insert((0, 0, row.id));
        entry.0 += 1;
        entry.1 += row.id;
    }
    for workers in [1, 3] {
        let out = dir.path().join(format!("agg-{workers}"));
        // The dedupe after the aggregate reads the groups (one per key: it keeps them all).
        let steps = "[[step]]\nop = \"aggregate\"\nby = [\"key\"]\naggs = { n = \"count(*)\", total = \"sum(id)\", first_id = \"first(id)\" }\n\
                     [[step]]\nop = \"dedupe\"\ncolumns = [\"key\"]\n";
        let (outcome, _) = run(&runtime, plan(&runtime, &dir.path().join("src"), &out, steps, "aggregate"), workers);
        let summary = outcome.unwrap();
        assert_eq!((summary.rows_in, summary.rows_out), (rows.len() as u64, want.len() as u64));
        let mut got: HashMap<String, (i64, i64, i64)> = HashMap::new();
        for batch in read_output(&out) {
            let keys = column::<arrow::array::StringArray>(&batch, "key");
            let (n, total, first) = (
                column::<Int64Array>(&batch, "n"),
                column::<Int64Array>(&batch, "total"),
                column::<Int64Array>(&batch, "first_id"),
            );
            for i in 0..batch.num_rows() {
                got.insert(keys.value(i).to_string(), (n.value(i), total.value(i), first.value(i)));
            }
        }
        assert_eq!(got, want, "{workers} workers");
    }
}

#[test]
fn overwrite_commits_a_second_run_in_place_of_the_first() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    write_source(&dir.path().join("src"), false);
    let out = dir.path().join("out");
    let keep_some = "[[step]]\nop = \"filter\"\nexpr = \"id < 1200\"\n";
    run(&runtime, plan(&runtime, &dir.path().join("src"), &out, "", "first"), 3).0.unwrap();
    let summary = run(&runtime, plan(&runtime, &dir.path().join("src"), &out, keep_some, "second"), 3).0.unwrap();
    assert_eq!(summary.rows_out, 1_200);
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("part-"))
        .collect();
    assert!(!names.is_empty() && names.iter().all(|n| n.ends_with("-second.parquet")), "{names:?}");
    let total: usize = read_output(&out).iter().map(RecordBatch::num_rows).sum();
    assert_eq!(total, 1_200);
}

#[test]
fn a_worker_failing_mid_pass_fails_the_run_and_commits_nothing() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    write_source(&dir.path().join("src"), true);
    for workers in [1, 3] {
        let out = dir.path().join(format!("out-{workers}"));
        let steps = "[[step]]\nop = \"cast\"\ncolumns = { s = \"float64\" }\non_error = \"fail\"\n";
        let (outcome, reported) = run(&runtime, plan(&runtime, &dir.path().join("src"), &out, steps, "bad"), workers);
        let failure = outcome.unwrap_err();
        assert_eq!(failure.kind, FailureKind::User, "{}", failure.message);
        assert!(failure.message.contains("oops") && failure.message.contains("part-2.parquet"), "{}", failure.message);
        assert!(failure.message.contains("row group 1"), "{}", failure.message);
        assert!(!reported.lock().unwrap().is_empty(), "the failing worker told its process at once");
        assert!(!out.join("_SUCCESS").exists() && !out.join("_weir/manifest.json").exists());
        let runs = out.join("_weir/runs");
        assert!(!runs.exists() || std::fs::read_dir(&runs).unwrap().next().is_none(), "the staging was removed");
    }
}
