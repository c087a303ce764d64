//! `score`: run an ONNX model over the rows, in batches, with ONNX Runtime.
//!
//! ```toml
//! [[step]]
//! op = "score"
//! model = "s3://models/churn/v3.onnx"     # any URI; fetched once per process
//! sha256 = "9f2c…"                        # optional pin
//! inputs = { float_input = ["pc_*", "age"] }        # columns stacked into one [batch, n] tensor
//! outputs = { probabilities = ["p_stay", "p_churn"], label = "churn" }
//! batch_size = 8192                       # rows per model call (default 8192)
//! intra_op_threads = 1                    # per worker (default 1; parallelism comes from workers)
//! optimization_level = "all"              # disable | basic | extended | all (default)
//! provider = "cpu"                        # cpu (default) | cuda
//! on_null = "error"                       # error (default) | skip | nan
//! ```
//!
//! Inputs: each model input is fed from a list of columns (names or globs, in order),
//! stacked into a row-major `[batch, n]` tensor, or from one column given as a string, fed
//! as `[batch]` (or `[batch, 1]` when the model's input has rank 2). The tensor has the
//! model input's element type (float, double, int64 or int32); columns are cast to it with
//! Arrow's cast kernels. Every model input must be fed, and the widths and types are checked
//! against the model when the step is bound, before any data is read.
//!
//! Outputs: `outputs` maps model outputs to columns: a string names the column of a `[batch]`
//! (or `[batch, 1]`) output, or is the prefix of `PREFIX_0 … PREFIX_{k-1}` for a `[batch, k]`
//! output; a list names the `k` columns. Unmapped outputs are dropped. Without `outputs`,
//! every output is kept under its own name (as a prefix for `[batch, k]`). Float outputs
//! become `float32` / `float64` columns, int64 labels `int64`, string labels `string`. New
//! columns are appended after the input's columns, which are all kept.
//!
//! Nulls in the columns a model reads: `on_null = "error"` stops with the column named,
//! `"skip"` drops the row (it is not scored and not written), `"nan"` feeds NaN (float inputs
//! only).
//!
//! Each worker thread runs its own ONNX Runtime session (created on first use from the
//! model's bytes, then reused), so workers score in parallel without sharing a session.
//! `provider = "cuda"` needs a Weir built with CUDA support; this build has none, so it is
//! refused rather than silently run on the CPU.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
};
use arrow::compute::kernels::boolean::is_not_null;
use arrow::compute::{cast, concat_batches, filter_record_batch};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float32Type, Float64Type, Int32Type, Int64Type, Schema, SchemaRef,
};
use arrow::record_batch::RecordBatch;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use serde::{Deserialize, Serialize};

use crate::{BoundStep, OpError, onnx_runtime, selector};

fn default_batch_size() -> usize {
    8192
}

fn default_threads() -> usize {
    1
}

/// Columns feeding one model input, or receiving one model output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Columns {
    /// One column (an input fed as `[batch]`), or an output's column or prefix.
    One(String),
    /// Columns stacked into / unstacked from `[batch, n]`.
    Many(Vec<String>),
}

/// Graph optimisations ONNX Runtime applies to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizationLevel {
    Disable,
    Basic,
    Extended,
    #[default]
    All,
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    #[default]
    Cpu,
    Cuda,
}

/// What a null in a model's input column does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNull {
    #[default]
    Error,
    Skip,
    Nan,
}

/// `op = "score"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreSpec {
    /// The model's URI.
    pub model: String,
    /// Expected SHA-256 (hex) of the model file.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The SHA-256 of the fitted parameters the model was trained on (as `weir fit` prints
    /// it): the run fails if the fitted steps before this one end up with others.
    #[serde(default)]
    pub fitted_sha256: Option<String>,
    /// Model input name → columns.
    pub inputs: BTreeMap<String, Columns>,
    /// Model output name → column(s); all outputs under their own names when absent.
    #[serde(default)]
    pub outputs: Option<BTreeMap<String, Columns>>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_threads")]
    pub intra_op_threads: usize,
    #[serde(default)]
    pub optimization_level: OptimizationLevel,
    #[serde(default)]
    pub provider: Provider,
    #[serde(default)]
    pub on_null: OnNull,
}

/// The element types Weir feeds and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    F32,
    F64,
    I64,
    I32,
    Text,
}

impl Element {
    fn of(ty: TensorElementType) -> Option<Element> {
        Some(match ty {
            TensorElementType::Float32 => Element::F32,
            TensorElementType::Float64 => Element::F64,
            TensorElementType::Int64 => Element::I64,
            TensorElementType::Int32 => Element::I32,
            TensorElementType::String => Element::Text,
            _ => return None,
        })
    }

    fn arrow(self) -> DataType {
        match self {
            Element::F32 => DataType::Float32,
            Element::F64 => DataType::Float64,
            Element::I64 => DataType::Int64,
            Element::I32 => DataType::Int32,
            Element::Text => DataType::Utf8,
        }
    }
}

/// The most ONNX Runtime threads one scoring worker may ask for.
pub const MAX_INTRA_OP_THREADS: usize = 64;

/// One model input and the columns that feed it.
#[derive(Debug)]
struct BoundInput {
    name: String,
    element: Element,
    columns: Vec<usize>,
    /// Rank of the model input: 1 (`[batch]`) or 2 (`[batch, n]`).
    rank: usize,
}

/// One model output and the columns it becomes.
#[derive(Debug)]
struct BoundOutput {
    name: String,
    element: Element,
    /// Output column names; one for `[batch]`, `k` for `[batch, k]`.
    columns: Vec<String>,
    /// Whether the model gives `[batch, k]` (unstacked into `columns`) or `[batch]`.
    stacked: bool,
}

/// A `score` step bound to its input schema and its model.
pub struct Score {
    model: Arc<[u8]>,
    spec: ScoreSpec,
    inputs: Vec<BoundInput>,
    outputs: Vec<BoundOutput>,
    input_columns: Vec<usize>,
    output: SchemaRef,
    /// Idle sessions; a worker takes one (or builds one) for each call.
    sessions: Mutex<Vec<Session>>,
}

impl std::fmt::Debug for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Score").field("model", &self.spec.model).field("output", &self.output).finish()
    }
}

fn model_error(model: &str, message: impl std::fmt::Display) -> OpError {
    OpError::InvalidSpec(format!("model '{model}': {message}"))
}

impl ScoreSpec {
    /// Binds the step to `input` and the model's bytes: loads the model into ONNX Runtime
    /// and checks every mapped input and output against it.
    pub fn bind(&self, input: &SchemaRef, model: Arc<[u8]>) -> Result<Score, OpError> {
        if self.batch_size == 0 || self.intra_op_threads == 0 {
            return Err(OpError::InvalidSpec("batch_size and intra_op_threads must be at least 1".into()));
        }
        if self.intra_op_threads > MAX_INTRA_OP_THREADS {
            return Err(OpError::InvalidSpec(format!(
                "intra_op_threads = {} is more than {MAX_INTRA_OP_THREADS}; each scoring worker starts that many \
                 threads (parallelism comes from workers)",
                self.intra_op_threads
            )));
        }
        if self.provider == Provider::Cuda {
            return Err(OpError::InvalidSpec(
                "provider = \"cuda\" needs a Weir built with CUDA support; this build runs models on the CPU only"
                    .into(),
            ));
        }
        let session = new_session(&self.model, &model, self.optimization_level, self.intra_op_threads)?;
        let inputs = self.bind_inputs(input, &session)?;
        let outputs = self.bind_outputs(input, &session)?;
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for output in &outputs {
            for column in &output.columns {
                fields.push(Field::new(column, output.element.arrow(), false));
            }
        }
        let mut input_columns: Vec<usize> = inputs.iter().flat_map(|i| i.columns.iter().copied()).collect();
        input_columns.sort_unstable();
        input_columns.dedup();
        Ok(Score {
            model,
            spec: self.clone(),
            inputs,
            outputs,
            input_columns,
            output: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
            sessions: Mutex::new(vec![session]),
        })
    }

    fn bind_inputs(&self, schema: &SchemaRef, session: &Session) -> Result<Vec<BoundInput>, OpError> {
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for name in self.inputs.keys() {
            if !names.contains(&name.as_str()) {
                return Err(model_error(
                    &self.model,
                    format!("has no input '{name}'; its inputs are: {}", names.join(", ")),
                ));
            }
        }
        let mut bound = Vec::new();
        for outlet in session.inputs() {
            let name = outlet.name();
            let Some(columns) = self.inputs.get(name) else {
                return Err(model_error(&self.model, format!("input '{name}' is not fed; map it in `inputs`")));
            };
            let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
                return Err(model_error(&self.model, format!("input '{name}' is not a tensor ({})", outlet.dtype())));
            };
            let element = Element::of(*ty).filter(|e| *e != Element::Text).ok_or_else(|| {
                model_error(
                    &self.model,
                    format!("input '{name}' has element type {ty}; Weir feeds float, double, int64 and int32"),
                )
            })?;
            let (indices, single) = match columns {
                Columns::One(column) => {
                    (selector::resolve(std::slice::from_ref(column), schema)?, !selector::is_glob(column))
                }
                Columns::Many(list) => {
                    // A column named twice would silently narrow the tensor (each column is
                    // stacked once): say so.
                    let mut seen = std::collections::HashSet::new();
                    if let Some(twice) = list.iter().find(|c| !selector::is_glob(c) && !seen.insert(c.as_str())) {
                        return Err(OpError::InvalidSpec(format!(
                            "input '{name}' names column '{twice}' twice; each column is stacked once"
                        )));
                    }
                    (selector::resolve(list, schema)?, false)
                }
            };
            let rank = shape.len();
            let width = indices.len() as i64;
            let fits = match rank {
                1 => single,
                2 => shape[1] == -1 || shape[1] == width,
                _ => false,
            };
            if !fits {
                let expected =
                    shape.iter().map(|d| if *d < 0 { "batch".to_string() } else { d.to_string() }).collect::<Vec<_>>();
                let given = if single { "[batch]".to_string() } else { format!("[batch, {width}]") };
                return Err(model_error(
                    &self.model,
                    format!("input '{name}' expects shape [{}], the mapped columns give {given}", expected.join(", ")),
                ));
            }
            for &index in &indices {
                let field = schema.field(index);
                let data_type = field.data_type();
                let castable = data_type.is_numeric() || data_type == &DataType::Boolean;
                if !castable {
                    return Err(model_error(
                        &self.model,
                        format!(
                            "input '{name}' is {ty}, but column '{}' is {data_type}; cast it to a number first",
                            field.name()
                        ),
                    ));
                }
            }
            bound.push(BoundInput { name: name.to_string(), element, columns: indices, rank });
        }
        if self.on_null == OnNull::Nan && bound.iter().any(|i| !matches!(i.element, Element::F32 | Element::F64)) {
            return Err(OpError::InvalidSpec(
                "on_null = \"nan\" needs float model inputs; use \"skip\" or \"error\"".into(),
            ));
        }
        Ok(bound)
    }

    fn bind_outputs(&self, schema: &SchemaRef, session: &Session) -> Result<Vec<BoundOutput>, OpError> {
        let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if let Some(outputs) = &self.outputs {
            for name in outputs.keys() {
                if !names.contains(&name.as_str()) {
                    return Err(model_error(
                        &self.model,
                        format!("has no output '{name}'; its outputs are: {}", names.join(", ")),
                    ));
                }
            }
        }
        let mut bound = Vec::new();
        for outlet in session.outputs() {
            let name = outlet.name();
            let target = match &self.outputs {
                Some(outputs) => match outputs.get(name) {
                    Some(target) => target.clone(),
                    None => continue,
                },
                None => Columns::One(name.to_string()),
            };
            let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
                return Err(model_error(
                    &self.model,
                    format!(
                        "output '{name}' is a {}, not a tensor (convert scikit-learn classifiers with zipmap=False)",
                        outlet.dtype()
                    ),
                ));
            };
            let element = Element::of(*ty).ok_or_else(|| {
                model_error(&self.model, format!("output '{name}' has element type {ty}, which Weir cannot write"))
            })?;
            let width = match shape.len() {
                1 => None,
                2 if shape[1] == 1 => None,
                2 => Some(shape[1]),
                _ => {
                    return Err(model_error(
                        &self.model,
                        format!("output '{name}' has rank {}; Weir writes [batch] and [batch, k]", shape.len()),
                    ));
                }
            };
            let (columns, stacked) = match (target, width) {
                (Columns::One(column), None) => (vec![column], shape.len() == 2),
                (Columns::One(prefix), Some(k)) if k > 0 => ((0..k).map(|i| format!("{prefix}_{i}")).collect(), true),
                (Columns::One(_), Some(_)) => {
                    return Err(model_error(
                        &self.model,
                        format!("output '{name}' has a dynamic width; list its columns in `outputs`"),
                    ));
                }
                (Columns::Many(list), width) => {
                    if width.is_some_and(|k| k != list.len() as i64) || (width.is_none() && list.len() != 1) {
                        return Err(model_error(
                            &self.model,
                            format!(
                                "output '{name}' has shape {shape:?}, but {} columns are listed for it",
                                list.len()
                            ),
                        ));
                    }
                    (list, true)
                }
            };
            for column in &columns {
                if schema.field_with_name(column).is_ok()
                    || bound.iter().any(|o: &BoundOutput| o.columns.contains(column))
                {
                    return Err(OpError::InvalidSpec(format!(
                        "output column '{column}' already exists; choose another name"
                    )));
                }
            }
            bound.push(BoundOutput { name: name.to_string(), element, columns, stacked });
        }
        if bound.is_empty() {
            return Err(model_error(&self.model, "no output is mapped to a column"));
        }
        Ok(bound)
    }
}

/// A session of `model` (named `model_name` in errors), ready to run.
pub(crate) fn new_session(
    model_name: &str,
    model: &[u8],
    optimization_level: OptimizationLevel,
    intra_op_threads: usize,
) -> Result<Session, OpError> {
    let environment = onnx_runtime::environment()?;
    let level = match optimization_level {
        OptimizationLevel::Disable => GraphOptimizationLevel::Disable,
        OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
        OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
        OptimizationLevel::All => GraphOptimizationLevel::All,
    };
    let failed = |e: &dyn std::fmt::Display| model_error(model_name, format!("ONNX Runtime cannot load it: {e}"));
    let builder = Session::builder(environment).map_err(|e| failed(&e))?;
    let builder = builder.with_optimization_level(level).map_err(|e| failed(&e))?;
    let mut builder = builder.with_intra_threads(intra_op_threads).map_err(|e| failed(&e))?;
    builder.commit_from_memory(model).map_err(|e| failed(&e))
}

impl Score {
    fn run_chunk(&self, batch: &RecordBatch) -> Result<RecordBatch, OpError> {
        let rows = batch.num_rows();
        let mut values: Vec<(Cow<'static, str>, SessionInputValue<'static>)> = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            values.push((Cow::Owned(input.name.clone()), self.tensor(batch, input)?));
        }
        let mut session =
            match self.sessions.lock().map_err(|_| OpError::Internal("session pool poisoned".into()))?.pop() {
                Some(session) => session,
                None => new_session(
                    &self.spec.model,
                    &self.model,
                    self.spec.optimization_level,
                    self.spec.intra_op_threads,
                )?,
            };
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        {
            let outputs = session
                .run(values)
                .map_err(|e| model_error(&self.spec.model, format!("ONNX Runtime failed on a batch: {e}")))?;
            for output in &self.outputs {
                let value = outputs
                    .get(output.name.as_str())
                    .ok_or_else(|| model_error(&self.spec.model, format!("gave no output '{}'", output.name)))?;
                columns.extend(self.unstack(value, output, rows)?);
            }
        }
        self.sessions.lock().map_err(|_| OpError::Internal("session pool poisoned".into()))?.push(session);
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }

    /// The input tensor of one model input: its columns cast and interleaved row-major.
    fn tensor(&self, batch: &RecordBatch, input: &BoundInput) -> Result<SessionInputValue<'static>, OpError> {
        let rows = batch.num_rows();
        let width = input.columns.len();
        let shape: Vec<i64> = if input.rank == 1 { vec![rows as i64] } else { vec![rows as i64, width as i64] };
        let to = input.element.arrow();
        let cast_columns = input
            .columns
            .iter()
            .map(|&i| {
                let column = batch.column(i);
                if column.data_type() == &to {
                    return Ok(column.clone());
                }
                let cast_column = cast(column, &to)?;
                if to.is_integer() {
                    check_exact_integers(batch.schema().field(i).name(), column, &cast_column, &input.name)?;
                }
                Ok(cast_column)
            })
            .collect::<Result<Vec<ArrayRef>, OpError>>()?;
        let ort_error =
            |e: ort::Error| OpError::Internal(format!("cannot build the tensor of input '{}': {e}", input.name));
        Ok(match input.element {
            Element::F32 => {
                let data = interleave::<Float32Type>(&cast_columns, rows, f32::NAN);
                Tensor::from_array((shape, data)).map_err(ort_error)?.into()
            }
            Element::F64 => {
                let data = interleave::<Float64Type>(&cast_columns, rows, f64::NAN);
                Tensor::from_array((shape, data)).map_err(ort_error)?.into()
            }
            Element::I64 => {
                let data = interleave::<Int64Type>(&cast_columns, rows, 0);
                Tensor::from_array((shape, data)).map_err(ort_error)?.into()
            }
            Element::I32 => {
                let data = interleave::<Int32Type>(&cast_columns, rows, 0);
                Tensor::from_array((shape, data)).map_err(ort_error)?.into()
            }
            Element::Text => return Err(OpError::Internal("string inputs are refused at bind".into())),
        })
    }

    /// One model output as Arrow columns: `[batch]` as is, `[batch, k]` split into `k`.
    fn unstack(&self, value: &DynValue, output: &BoundOutput, rows: usize) -> Result<Vec<ArrayRef>, OpError> {
        let wrong = |e: ort::Error| model_error(&self.spec.model, format!("output '{}': {e}", output.name));
        let width = output.columns.len();
        let check = |shape: &[i64]| {
            let expected = if output.stacked { vec![rows as i64, width as i64] } else { vec![rows as i64] };
            if shape != expected.as_slice() {
                return Err(model_error(
                    &self.spec.model,
                    format!("output '{}' came back with shape {shape:?}, expected {expected:?}", output.name),
                ));
            }
            Ok(())
        };
        fn split<T: Copy, A: Array + From<Vec<T>> + 'static>(data: &[T], rows: usize, width: usize) -> Vec<ArrayRef> {
            if width == 1 {
                return vec![Arc::new(A::from(data.to_vec()))];
            }
            (0..width)
                .map(|j| Arc::new(A::from((0..rows).map(|r| data[r * width + j]).collect::<Vec<T>>())) as ArrayRef)
                .collect()
        }
        Ok(match output.element {
            Element::F32 => {
                let (shape, data) = value.try_extract_tensor::<f32>().map_err(wrong)?;
                check(shape)?;
                split::<f32, Float32Array>(data, rows, width)
            }
            Element::F64 => {
                let (shape, data) = value.try_extract_tensor::<f64>().map_err(wrong)?;
                check(shape)?;
                split::<f64, Float64Array>(data, rows, width)
            }
            Element::I64 => {
                let (shape, data) = value.try_extract_tensor::<i64>().map_err(wrong)?;
                check(shape)?;
                split::<i64, Int64Array>(data, rows, width)
            }
            Element::I32 => {
                let (shape, data) = value.try_extract_tensor::<i32>().map_err(wrong)?;
                check(shape)?;
                split::<i32, Int32Array>(data, rows, width)
            }
            Element::Text => {
                let (shape, data) = value.try_extract_strings().map_err(wrong)?;
                check(shape)?;
                (0..width)
                    .map(|j| {
                        Arc::new(StringArray::from_iter_values((0..rows).map(|r| data[r * width + j].as_str())))
                            as ArrayRef
                    })
                    .collect()
            }
        })
    }

    /// Applies `on_null`: the rows to score (all of them, or those without a null input).
    fn handle_nulls(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let with_nulls: Vec<usize> =
            self.input_columns.iter().copied().filter(|&i| batch.column(i).null_count() > 0).collect();
        if with_nulls.is_empty() {
            return Ok(batch);
        }
        match self.spec.on_null {
            OnNull::Nan => Ok(batch),
            OnNull::Error => {
                let column = batch.schema().field(with_nulls[0]).name().clone();
                Err(OpError::InvalidSpec(format!(
                    "column '{column}' feeds the model and holds a null (impute it, or set on_null = \"skip\" or \"nan\")"
                )))
            }
            OnNull::Skip => {
                let mut keep: Option<BooleanArray> = None;
                for &i in &with_nulls {
                    let present = is_not_null(batch.column(i).as_ref())?;
                    keep = Some(match keep {
                        None => present,
                        Some(k) => arrow::compute::and(&k, &present)?,
                    });
                }
                let keep = keep.unwrap_or_else(|| BooleanArray::from(vec![true; batch.num_rows()]));
                Ok(filter_record_batch(&batch, &keep)?)
            }
        }
    }
}

/// Refuses to feed an integer model input a value that the cast to its type changed: NaN,
/// an infinity, a fraction, or a number out of the type's range (Arrow's cast would make
/// it null, which the tensor would then carry as 0).
fn check_exact_integers(name: &str, column: &ArrayRef, cast_column: &ArrayRef, input: &str) -> Result<(), OpError> {
    let as_f64 = |array: &ArrayRef| cast(array, &DataType::Float64);
    let (before, after) = (as_f64(column)?, as_f64(cast_column)?);
    let (before, after) = (before.as_primitive::<Float64Type>(), after.as_primitive::<Float64Type>());
    let changed = (0..column.len())
        .find(|&row| before.is_valid(row) && (after.is_null(row) || before.value(row) != after.value(row)));
    match changed {
        None => Ok(()),
        Some(row) => Err(OpError::InvalidSpec(format!(
            "column '{name}' feeds the integer model input '{input}' and holds {}, which is not a {} value; \
             round, clip or filter it first",
            before.value(row),
            cast_column.data_type()
        ))),
    }
}

/// Interleaves `columns` (all of Arrow type `P`) into a row-major `[rows, n]` buffer, in
/// one pass per column; null slots get `null_value`.
fn interleave<P: ArrowPrimitiveType>(columns: &[ArrayRef], rows: usize, null_value: P::Native) -> Vec<P::Native> {
    let width = columns.len();
    if width == 1 && columns[0].null_count() == 0 {
        return columns[0].as_primitive::<P>().values().to_vec();
    }
    let mut data = vec![P::Native::default(); rows * width];
    for (j, column) in columns.iter().enumerate() {
        let array = column.as_primitive::<P>();
        let values = array.values();
        match array.nulls() {
            None => (0..rows).for_each(|r| data[r * width + j] = values[r]),
            Some(nulls) => {
                (0..rows).for_each(|r| data[r * width + j] = if nulls.is_valid(r) { values[r] } else { null_value })
            }
        }
    }
    data
}

impl BoundStep for Score {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let batch = self.handle_nulls(batch)?;
        if batch.num_rows() <= self.spec.batch_size {
            return self.run_chunk(&batch);
        }
        let mut scored = Vec::with_capacity(batch.num_rows().div_ceil(self.spec.batch_size));
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = self.spec.batch_size.min(batch.num_rows() - offset);
            scored.push(self.run_chunk(&batch.slice(offset, len))?);
            offset += len;
        }
        Ok(concat_batches(&self.output, &scored)?)
    }

    /// Every input column, unchanged, then the model's outputs; rows are kept unless
    /// `on_null = "skip"` drops some.
    fn unchanged_columns(&self) -> Option<Vec<Option<usize>>> {
        if self.spec.on_null == OnNull::Skip {
            return None;
        }
        let inputs = self.output.fields().len() - self.outputs.iter().map(|o| o.columns.len()).sum::<usize>();
        Some((0..self.output.fields().len()).map(|i| (i < inputs).then_some(i)).collect())
    }
}
