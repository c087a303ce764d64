//! The floor of the peers benchmark (bench/peers.py): the workload's stages, each alone,
//! single-threaded, on data already where the stage needs it, timed and summed:
//!
//! 1. decode: read every Parquet file of the dataset into Arrow batches;
//! 2. arithmetic: mean imputation, standardization, the covariance (one GEMM), its
//!    eigendecomposition and the projection onto 8 components (one GEMM);
//! 3. model: `session.run` over all rows in batches of 8192, one ONNX Runtime thread;
//! 4. encode: write id, category, the components and the score as zstd Parquet.
//!
//! No system can run the workload faster than the sum; a system's ratio to it says how much
//! its engine costs on top of the work itself.
//!
//!     weir-bench-floor DATA_DIR MODEL OUT_FILE     (prints one JSON object)

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, Float32Array, Float64Array};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use arrow::record_batch::RecordBatch;
use faer::{Accum, Mat, Par, Side};
use ort::session::Session;
use ort::value::Tensor;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

const FEATURES: usize = 32;
const COMPONENTS: usize = 8;
const BATCH: usize = 8192;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: weir-bench-floor DATA_DIR MODEL OUT_FILE");
    let (data, model, out) = (Path::new(&args[1]), &args[2], Path::new(&args[3]));

    let started = Instant::now();
    let mut files: Vec<_> = std::fs::read_dir(data)?.flatten().map(|e| e.path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "parquet"));
    files.sort();
    let mut batches = Vec::new();
    for file in &files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(file)?)?.with_batch_size(BATCH).build()?;
        for batch in reader {
            batches.push(batch?);
        }
    }
    let table = concat_batches(&batches[0].schema(), &batches)?;
    drop(batches);
    let decode = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let rows = table.num_rows();
    let mut x = Mat::<f64>::zeros(rows, FEATURES);
    for j in 0..FEATURES {
        let column = table.column_by_name(&format!("f_{j:02}")).context("missing feature")?;
        let values = column.as_primitive::<Float64Type>();
        let (mut sum, mut count) = (0.0, 0usize);
        for v in values.iter().flatten() {
            sum += v;
            count += 1;
        }
        let mean = sum / count as f64;
        let mut squares = 0.0;
        for (i, v) in values.iter().enumerate() {
            let centred = v.unwrap_or(mean) - mean;
            x[(i, j)] = centred;
            squares += centred * centred;
        }
        let scale = (squares / rows as f64).sqrt();
        let scale = if scale == 0.0 { 1.0 } else { scale };
        for i in 0..rows {
            x[(i, j)] /= scale;
        }
    }
    let mut covariance = Mat::<f64>::zeros(FEATURES, FEATURES);
    faer::linalg::matmul::matmul(
        covariance.as_mut(),
        Accum::Replace,
        x.transpose(),
        x.as_ref(),
        1.0 / (rows - 1) as f64,
        Par::Seq,
    );
    let eigen = covariance.self_adjoint_eigen(Side::Lower).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (values, vectors) = (eigen.S().column_vector(), eigen.U());
    let mut order: Vec<usize> = (0..FEATURES).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let mut weights = Mat::<f64>::zeros(FEATURES, COMPONENTS);
    for (k, &c) in order.iter().take(COMPONENTS).enumerate() {
        let largest =
            (0..FEATURES).max_by(|&a, &b| vectors[(a, c)].abs().total_cmp(&vectors[(b, c)].abs())).unwrap_or(0);
        let sign = vectors[(largest, c)].signum();
        for j in 0..FEATURES {
            weights[(j, k)] = vectors[(j, c)] * sign;
        }
    }
    let mut projected = Mat::<f64>::zeros(rows, COMPONENTS);
    faer::linalg::matmul::matmul(projected.as_mut(), Accum::Replace, x.as_ref(), weights.as_ref(), 1.0, Par::Seq);
    drop(x);
    let arithmetic = started.elapsed().as_secs_f64();

    let mut input = vec![0f32; rows * COMPONENTS];
    for i in 0..rows {
        for k in 0..COMPONENTS {
            input[i * COMPONENTS + k] = projected[(i, k)] as f32;
        }
    }
    let environment = weir_operators::onnx_runtime::environment()?;
    let mut session = Session::builder(environment)?
        .with_intra_threads(1)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .commit_from_file(model)?;
    let started = Instant::now();
    let mut scores = Vec::with_capacity(rows);
    for chunk in input.chunks(BATCH * COMPONENTS) {
        let n = chunk.len() / COMPONENTS;
        let tensor = Tensor::from_array((vec![n as i64, COMPONENTS as i64], chunk.to_vec()))?;
        let outputs = session.run(ort::inputs!["x" => tensor])?;
        let (_, values) = outputs["score"].try_extract_tensor::<f32>()?;
        scores.extend_from_slice(values);
    }
    let model_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut fields = vec![Field::new("id", DataType::Int64, false), Field::new("category", DataType::Utf8, true)];
    let mut columns: Vec<ArrayRef> = vec![
        table.column_by_name("id").context("missing id")?.clone(),
        table.column_by_name("category").context("missing category")?.clone(),
    ];
    for k in 0..COMPONENTS {
        fields.push(Field::new(format!("pc_{k}"), DataType::Float64, false));
        columns.push(Arc::new(Float64Array::from_iter_values((0..rows).map(|i| projected[(i, k)]))));
    }
    fields.push(Field::new("score", DataType::Float32, false));
    columns.push(Arc::new(Float32Array::from(scores)));
    let fields: Vec<Field> = fields
        .into_iter()
        .zip(&columns)
        .map(|(f, c)| {
            let nullable = f.is_nullable() || c.null_count() > 0;
            f.with_data_type(c.data_type().clone()).with_nullable(nullable)
        })
        .collect();
    let output = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    let properties = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut writer = ArrowWriter::try_new(File::create(out)?, output.schema(), Some(properties))?;
    for start in (0..rows).step_by(BATCH) {
        writer.write(&output.slice(start, BATCH.min(rows - start)))?;
    }
    writer.close()?;
    let encode = started.elapsed().as_secs_f64();

    let report = serde_json::json!({
        "rows": rows,
        "decode_s": decode,
        "arithmetic_s": arithmetic,
        "model_s": model_seconds,
        "encode_s": encode,
        "total_s": decode + arithmetic + model_seconds + encode,
    });
    println!("{report}");
    Ok(())
}
