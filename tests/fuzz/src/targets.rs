//! The fuzz targets: each takes bytes, runs them through Weir's code and says whether Weir
//! accepted them or refused them with an error. Anything else (a panic, an abort, a hang,
//! a broken invariant) is a failure the harness reports.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, DictionaryArray, Float32Array, Float64Array, Int8Array,
    Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{Int32Type, SchemaRef};
use futures::StreamExt;
use weir_connectors::parquet_source::ParquetSource;
use weir_connectors::partitions::Partitioning;
use weir_connectors::source::Source;
use weir_connectors::{Location, StorageOptions};
use weir_jobs::planning::load_job_text;
use weir_jobs::vars::Variables;
use weir_operators::filter::FilterSpec;
use weir_operators::group_table::GroupTable;
use weir_operators::join::JoinInput;
use weir_operators::rejects::RejectsLayout;
use weir_operators::{BindContext, Bound, BoundStep, bind_steps};

use crate::generate;
pub use crate::target::{Outcome, Target};

/// The targets, by name.
pub const NAMES: [&str; 5] = ["job", "filter", "parquet", "onnx", "http"];

/// The target called `name` (one of [`NAMES`]).
pub fn new(name: &str) -> Box<dyn Target> {
    match name {
        "job" => Box::new(JobTarget { batch: sample_batch() }),
        "filter" => Box::new(FilterTarget { batch: sample_batch() }),
        "onnx" => Box::new(OnnxTarget),
        "http" => Box::new(crate::http::HttpTarget::new()),
        _ => Box::new(ParquetTarget::new()),
    }
}

/// The batch every job and filter input runs on: 64 rows with nulls, NaNs, infinities,
/// junk strings, a zoned timestamp, a dictionary and a decimal.
pub fn sample_batch() -> RecordBatch {
    let rows = 64usize;
    let ids: Vec<i64> = (0..rows as i64).collect();
    let pick = |i: usize, values: &[&'static str]| values[i % values.len()];
    let text = |values: &[&'static str], nulls_every: usize| -> ArrayRef {
        Arc::new(StringArray::from(
            (0..rows).map(|i| if i % nulls_every == 3 { None } else { Some(pick(i, values)) }).collect::<Vec<_>>(),
        ))
    };
    let floats = [0.0, -0.0, 1.5, -2.25, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, -1e-300, 42.0, 3.0];
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(ids.clone()))),
        ("age", text(&["34", "x", "-5", "1e3", "nan", "17.5", "", "99999999999"], 9)),
        (
            "income",
            Arc::new(Float64Array::from(
                (0..rows).map(|i| if i % 6 == 1 { None } else { Some(floats[i % floats.len()]) }).collect::<Vec<_>>(),
            )),
        ),
        ("tenure_months", text(&["12", "0", "-3", "2147483648", "seven"], 7)),
        ("country", text(&["DE", "FR", "US", "de", "", "it's"], 5)),
        ("email", text(&["a@example.com", "b@example.org", "c@x.io"], 8)),
        (
            "active",
            Arc::new(BooleanArray::from(
                (0..rows).map(|i| if i % 10 == 4 { None } else { Some(i % 3 == 0) }).collect::<Vec<_>>(),
            )),
        ),
        (
            "ts",
            Arc::new(
                TimestampMicrosecondArray::from(
                    (0..rows)
                        .map(|i| if i % 9 == 2 { None } else { Some(1_704_067_200_000_000 + i as i64 * 3_600_000_000) })
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
        ),
        ("day", Arc::new(Date32Array::from((0..rows).map(|i| Some(19_700 + i as i32)).collect::<Vec<_>>()))),
        (
            "n8",
            Arc::new(Int8Array::from((0..rows).map(|i| Some((i as i32 * 37 % 256 - 128) as i8)).collect::<Vec<_>>())),
        ),
        (
            "u64",
            Arc::new(UInt64Array::from((0..rows).map(|i| Some(u64::MAX - i as u64 * 1_000_003)).collect::<Vec<_>>())),
        ),
        (
            "amount",
            Arc::new(
                Decimal128Array::from((0..rows).map(|i| Some(i as i128 * 1234 - 20_000)).collect::<Vec<_>>())
                    .with_precision_and_scale(10, 2)
                    .expect("a valid decimal type"),
            ),
        ),
        (
            "tag",
            Arc::new(DictionaryArray::<Int32Type>::from_iter(
                (0..rows).map(|i| if i % 4 == 0 { None } else { Some(pick(i, &["red", "green", "blue"])) }),
            )),
        ),
    ];
    let mut all = columns;
    for f in 0..4 {
        let name: &'static str = ["f_0", "f_1", "f_2", "f_3"][f];
        let values: Float32Array =
            (0..rows).map(|i| if (i + f) % 13 == 0 { None } else { Some(((i * (f + 3)) % 17) as f32 - 8.0) }).collect();
        all.push((name, Arc::new(values)));
    }
    RecordBatch::try_from_iter(all).expect("a valid batch")
}

/// The `id`s of a batch's rows.
fn ids(batch: &RecordBatch) -> HashSet<i64> {
    let column = batch.column_by_name("id").expect("filters keep every column");
    let ids = column.as_any().downcast_ref::<Int64Array>().expect("id is Int64");
    ids.iter().flatten().collect()
}

/// `filter`: the input is an expression.
struct FilterTarget {
    batch: RecordBatch,
}

impl Target for FilterTarget {
    fn run(&mut self, input: &[u8]) -> Outcome {
        let expr = String::from_utf8_lossy(input).into_owned();
        let schema = self.batch.schema();
        let Ok(filter) = (FilterSpec { expr: expr.clone() }).bind(&schema) else { return Outcome::Refused };
        let Ok(kept) = filter.apply(self.batch.clone()) else { return Outcome::Refused };
        assert_eq!(kept.schema(), schema, "a filter changed the schema");
        // SQL's three-valued logic: no row is kept by both `e` and `not (e)`. The newlines
        // end a `--` comment at the end of `e`.
        if let Ok(negated) = (FilterSpec { expr: format!("not (\n{expr}\n)") }).bind(&schema)
            && let Ok(other) = negated.apply(self.batch.clone())
        {
            let (kept, other) = (ids(&kept), ids(&other));
            assert!(
                kept.is_disjoint(&other),
                "'{expr}' and its negation both keep rows {:?}",
                kept.intersection(&other)
            );
        }
        Outcome::Accepted
    }

    fn generate(&self, rng: &mut fastrand::Rng) -> Vec<u8> {
        generate::filter_expr(rng, &self.batch.schema()).into_bytes()
    }

    fn generated_percent(&self) -> u8 {
        50
    }

    fn dictionary(&self) -> &[&[u8]] {
        &generate::FILTER_TOKENS
    }

    fn max_len(&self) -> usize {
        64 * 1024
    }
}

/// `job`: `NAME=VALUE` lines, a `---` line, then the job's TOML (or only TOML).
struct JobTarget {
    batch: RecordBatch,
}

impl JobTarget {
    /// Fits and applies bound steps to the sample batch, in order, until one fails or a
    /// step needs the whole dataset (dedupe).
    fn apply(&self, bound: Vec<Bound>) -> Outcome {
        let mut batch = self.batch.clone();
        for step in bound {
            let mapped: Box<dyn BoundStep> = match step {
                Bound::Map(step) => step,
                Bound::Fit(fit) => {
                    let (first, second) = (
                        batch.slice(0, batch.num_rows() / 2),
                        batch.slice(batch.num_rows() / 2, batch.num_rows() - batch.num_rows() / 2),
                    );
                    // Two workers' partials, pass after pass while the fit asks for another.
                    let Ok(mut template) = fit.encode(&fit.new_partial()) else { return Outcome::Refused };
                    let merged = loop {
                        let (Ok(mut left), Ok(mut right)) = (fit.decode(&template), fit.decode(&template)) else {
                            return Outcome::Refused;
                        };
                        if fit.fold(&mut left, &first).is_err() || fit.fold(&mut right, &second).is_err() {
                            return Outcome::Refused;
                        }
                        if fit.merge(&mut left, right).is_err() {
                            return Outcome::Refused;
                        }
                        match fit.next_pass(&mut left) {
                            Ok(Some(next)) => match fit.encode(&next) {
                                Ok(bytes) => template = bytes,
                                Err(_) => return Outcome::Refused,
                            },
                            Ok(None) => break left,
                            Err(_) => return Outcome::Refused,
                        }
                    };
                    let Ok(params) = fit.finish(merged) else { return Outcome::Refused };
                    match fit.with_params(&params) {
                        Ok(step) => step,
                        Err(_) => return Outcome::Refused,
                    }
                }
                Bound::Dedupe(_) => return Outcome::Accepted,
                Bound::Aggregate(aggregate) => {
                    // Two workers' tables, exchanged to two workers and merged, as the engine does.
                    let halves = [
                        batch.slice(0, batch.num_rows() / 2),
                        batch.slice(batch.num_rows() / 2, batch.num_rows() - batch.num_rows() / 2),
                    ];
                    let mut merged = Vec::new();
                    for _ in 0..2 {
                        let Ok(table) = GroupTable::new(aggregate.clone()) else { return Outcome::Refused };
                        merged.push(table);
                    }
                    for (shard, half) in halves.iter().enumerate() {
                        let Ok(mut table) = GroupTable::new(aggregate.clone()) else { return Outcome::Refused };
                        if table.update(half, shard as u32, 0).is_err() {
                            return Outcome::Refused;
                        }
                        for (to, partials) in table.drain_partials(2).into_iter().enumerate() {
                            merged[to].merge(partials).expect("partial groups of one aggregate merge");
                        }
                    }
                    let mut out = Vec::new();
                    for (worker, table) in merged.into_iter().enumerate() {
                        match table.finish(worker == 0, 1024) {
                            Ok(batches) => out.extend(batches),
                            Err(_) => return Outcome::Refused,
                        }
                    }
                    let schema = aggregate.output_schema();
                    batch = arrow::compute::concat_batches(&schema, &out).expect("groups have the declared schema");
                    continue;
                }
                Bound::Check(check) => {
                    let mut counts = check.new_counts();
                    if check.fold(&mut counts, &batch).is_err() || check.unique_keys(&batch).is_err() {
                        return Outcome::Refused;
                    }
                    let results = check.results(&counts, None);
                    if check.failure(&results).is_some() {
                        return Outcome::Refused;
                    }
                    match check.rejecter() {
                        Some(rejecter) => Box::new(rejecter),
                        None => continue,
                    }
                }
            };
            let expected = mapped.output_schema();
            let rows = batch.num_rows();
            let (kept, rejected) = match mapped.apply_rejecting(batch) {
                Ok(split) => split,
                Err(_) => return Outcome::Refused,
            };
            if let Some(rejected) = rejected {
                let schema = mapped.rejected_schema().expect("a step rejected rows but declares no rejected schema");
                assert_eq!(rejected.rows.schema(), schema, "rejected rows differ from the schema the step declared");
                assert_eq!(
                    kept.num_rows() + rejected.rows.num_rows(),
                    rows,
                    "kept and rejected rows are not the input"
                );
                let Ok(layout) = RejectsLayout::new([&schema]) else { return Outcome::Refused };
                layout.rows(1, "fuzz", &rejected).expect("rejected rows convert to the rejects layout");
            }
            batch = kept;
            assert_eq!(batch.schema(), expected, "a step's output differs from the schema it declared");
        }
        Outcome::Accepted
    }
}

impl Target for JobTarget {
    fn run(&mut self, input: &[u8]) -> Outcome {
        let text = String::from_utf8_lossy(input);
        let (pairs, toml) = match text.split_once("\n---\n") {
            Some((head, toml)) => (
                head.lines()
                    .filter_map(|line| line.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                toml,
            ),
            None => (Vec::new(), text.as_ref()),
        };
        let vars = Variables::new(&pairs);
        let Ok(job) = load_job_text("fuzz.toml", toml, &vars) else { return Outcome::Refused };
        // A join's other input: the sample's first rows, under the name the generator uses.
        let other = JoinInput::new("c", self.batch.slice(0, self.batch.num_rows().min(40)));
        let context = BindContext { inputs: [("c".to_string(), Arc::new(other))].into(), ..BindContext::default() };
        let Ok(bound) = bind_steps(&job.spec.steps, &self.batch.schema(), &context) else {
            return Outcome::Refused;
        };
        self.apply(bound)
    }

    fn generate(&self, rng: &mut fastrand::Rng) -> Vec<u8> {
        generate::job(rng, &self.batch.schema()).into_bytes()
    }

    fn generated_percent(&self) -> u8 {
        40
    }

    fn dictionary(&self) -> &[&[u8]] {
        &generate::JOB_TOKENS
    }

    fn max_len(&self) -> usize {
        64 * 1024
    }
}

/// `parquet`: the input is a file.
struct ParquetTarget {
    _dir: tempfile::TempDir,
    path: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl ParquetTarget {
    fn new() -> ParquetTarget {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("input.parquet");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        ParquetTarget { _dir: dir, path, runtime }
    }

    async fn read(location: &Location, columns: Option<&[String]>) -> Result<Option<Vec<String>>, ()> {
        let source = ParquetSource::open(location, columns, Partitioning::None, None).await.map_err(|_| ())?;
        let mut rows = 0u64;
        for shard in source.shards(16) {
            let mut stream = source.read_shard(&shard, 7, None).map_err(|_| ())?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|_| ())?;
                assert_eq!(batch.schema(), *source.schema(), "a batch's schema differs from the source's");
                rows += batch.num_rows() as u64;
            }
        }
        assert_eq!(rows, source.total_rows(), "the rows read differ from the footer's count");
        let schema: &SchemaRef = source.schema();
        Ok(Some(schema.fields().iter().map(|field| field.name().clone()).collect()))
    }
}

impl Target for ParquetTarget {
    fn run(&mut self, input: &[u8]) -> Outcome {
        if std::fs::write(&self.path, input).is_err() {
            return Outcome::Refused;
        }
        let Ok(location) = Location::parse(&self.path.to_string_lossy(), &StorageOptions::default()) else {
            return Outcome::Refused;
        };
        self.runtime.block_on(async {
            let Ok(Some(names)) = Self::read(&location, None).await else { return Outcome::Refused };
            // Again with a projection: the last column alone, through the reader's mask.
            if let Some(last) = names.last()
                && Self::read(&location, Some(std::slice::from_ref(last))).await.is_err()
            {
                return Outcome::Refused;
            }
            Outcome::Accepted
        })
    }

    fn dictionary(&self) -> &[&[u8]] {
        &[b"PAR1", b"\x15\x00", b"\x15\x02", b"\x19\x1c", b"\x00\x00\x00\x00", b"\xff\xff\xff\x7f"]
    }

    fn max_len(&self) -> usize {
        256 * 1024
    }

    fn tail_bias(&self) -> bool {
        true
    }
}

/// `onnx`: the input is a model; Weir's own reader of its protobuf (the graph `explain`
/// reads linear models and tree ensembles from) must refuse what it cannot read, never
/// panic or loop. ONNX Runtime itself is not fuzzed here.
struct OnnxTarget;

impl Target for OnnxTarget {
    fn run(&mut self, input: &[u8]) -> Outcome {
        let graph = weir_operators::onnx_graph::graph(input);
        let nodes = weir_operators::onnx_graph::nodes(input);
        match (graph, nodes) {
            (Ok(graph), Ok(nodes)) => {
                assert_eq!(graph.nodes.len(), nodes.len(), "the graph and its node list disagree");
                Outcome::Accepted
            }
            _ => Outcome::Refused,
        }
    }

    fn dictionary(&self) -> &[&[u8]] {
        // Protobuf keys of the fields the reader follows, lengths at the limits, and op names.
        &[
            b"\x08",
            b"\x0a",
            b"\x12",
            b"\x1a",
            b"\x22",
            b"\x2a",
            b"\x3a",
            b"\x42",
            b"\xff\xff\xff\xff\x0f",
            b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
            b"TreeEnsembleClassifier",
            b"MatMul",
            b"Gemm",
        ]
    }

    fn max_len(&self) -> usize {
        64 * 1024
    }
}
