//! `explain`: per-row Shapley attributions of one ONNX model output.
//!
//! ```toml
//! [[step]]
//! op = "explain"
//! model = "s3://models/churn/v3.onnx"   # fetched once per process, as for `score`
//! features = ["pc_*", "age"]            # the columns of the model's one [batch, F] input
//! output = "probabilities"              # the model output explained (default: its only one)
//! output_index = 1                      # its column, for a [batch, k] output (k > 1)
//! method = "auto"                       # auto | linear | tree | exact | permutation
//! max_evals = 512                       # coalitions a row may cost (auto and permutation)
//! background = 100                      # background rows, sampled from the step's input (≤ 10,000)
//! seed = 0
//! fraction = 0.01                       # explain about this share of the rows (default 1)
//! where = "segment = 'enterprise'"      # explain only the rows this filter expression keeps
//! prefix = "shap_"                      # output columns: shap_<feature>, shap_base, shap_residual
//! # fitted = "…"                        # reuse the background of an earlier run
//! ```
//!
//! The attributions are interventional Shapley values against the background
//! ([`crate::shapley`]): `shap_<feature>` for each feature, `shap_base` (the model's mean
//! output over the background) and `shap_residual` (output − base − Σ attributions, zero up
//! to rounding: every method is exactly additive). All are `Float64`, appended after the
//! input's columns; rows not explained (outside `where` or `fraction`, or with a null or NaN
//! feature) get nulls. `where` takes the `filter` step's expressions.
//!
//! Methods: `linear`, for a model that is one ONNX `LinearRegressor` or `LinearClassifier`
//! node, reads its coefficients from the graph ([`crate::onnx_graph`]): `φ_j = w_j (x_j −
//! mean_b b_j)`, exactly, for the output's raw score (the margin, before a `LOGISTIC` or
//! `SOFTMAX` post-transform: what `shap.LinearExplainer` explains), with no model call.
//! `tree`, for a `TreeEnsembleRegressor` or `TreeEnsembleClassifier`, is interventional
//! TreeSHAP over the trees read from the graph ([`crate::tree_shap`]), exact, of the same
//! raw score (`shap.TreeExplainer(feature_perturbation = "interventional")`'s).
//! `exact` enumerates every coalition (`2^F` of them, each over the background:
//! `2^F · B` model rows a row; at most 16 features). `permutation` estimates them with
//! antithetic pairs of random feature orders, `max_evals / (2 (F − 1))` pairs, so about
//! `max_evals` coalitions a row (`· B` model rows), converging to the exact values as the
//! budget grows. `auto` is `linear` or `tree` for such a model without a post-transform (its
//! output is the raw score), else `exact` when `2^F ≤ max_evals`, else `permutation`. Orders come
//! from `seed`, so results are reproducible and do not depend on the cluster's shape.
//!
//! The background is fitted like any fitted step: every worker keeps the rows (without a
//! null or NaN feature) with the smallest hashes of their feature values and `seed` (a
//! bottom-k sample), the leader merges them, and the `background` rows with the smallest
//! hashes are saved in `fitted.json`. The sample depends only on the rows' values, never
//! on how they were split among workers. `fraction` picks rows by the same kind of hash.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};
use serde::{Deserialize, Serialize};

use crate::filter::{Filter, FilterSpec};
use crate::fit::{Fit, FitShape};
use crate::fit_columns::numeric_columns;
use crate::onnx_graph::{Graph, Node, Tensor as GraphTensor};
use crate::score::{OptimizationLevel, new_session};
use crate::shapley::{self, Attribution, Evaluate};
use crate::tree_shap::{TreeEnsemble, read_ensemble};
use crate::{BoundStep, OpError};

/// The most background rows a step may ask for.
pub const MAX_BACKGROUND: usize = 10_000;

fn default_max_evals() -> usize {
    512
}

fn default_background() -> usize {
    100
}

fn default_prefix() -> String {
    "shap_".to_string()
}

/// How the attributions are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplainMethod {
    #[default]
    Auto,
    Linear,
    Tree,
    Exact,
    Permutation,
}

/// `op = "explain"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainSpec {
    pub model: String,
    /// Expected SHA-256 (hex) of the model file.
    #[serde(default)]
    pub sha256: Option<String>,
    pub features: Vec<String>,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub output_index: Option<usize>,
    #[serde(default)]
    pub method: ExplainMethod,
    #[serde(default = "default_max_evals")]
    pub max_evals: usize,
    #[serde(default = "default_background")]
    pub background: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Explain only the rows this `filter` expression keeps.
    #[serde(default, rename = "where")]
    pub where_expr: Option<String>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Reuse the background of an earlier run's `_weir/fitted.json`.
    #[serde(default)]
    pub fitted: Option<String>,
}

/// The model's one input and the output explained, checked at bind.
#[derive(Debug, Clone)]
struct ModelShape {
    input: String,
    input_f32: bool,
    output: String,
    output_f32: bool,
    /// Columns of the output: 1 for `[batch]` or `[batch, 1]`.
    output_width: usize,
    output_index: usize,
}

/// For a float tensor, whether it is `float` (else `double`); `None` for other types.
fn is_f32(ty: &TensorElementType) -> Option<bool> {
    match ty {
        TensorElementType::Float32 => Some(true),
        TensorElementType::Float64 => Some(false),
        _ => None,
    }
}

fn model_error(model: &str, message: impl std::fmt::Display) -> OpError {
    OpError::InvalidSpec(format!("model '{model}': {message}"))
}

impl ExplainSpec {
    /// Binds the step to `input` and the model's bytes, checking the features, the model's
    /// input and the output explained before any data is read.
    pub fn bind(&self, input: &SchemaRef, model: Arc<[u8]>) -> Result<ExplainFit, OpError> {
        if self.background == 0 || self.max_evals == 0 {
            return Err(OpError::InvalidSpec("background and max_evals must be at least 1".into()));
        }
        if self.background > MAX_BACKGROUND {
            return Err(OpError::InvalidSpec(format!(
                "background = {} is more than {MAX_BACKGROUND} rows; every coalition of every row is evaluated over each",
                self.background
            )));
        }
        if let Some(fraction) = self.fraction
            && !(fraction > 0.0 && fraction <= 1.0)
        {
            return Err(OpError::InvalidSpec(format!("fraction = {fraction} must be in (0, 1]")));
        }
        let indices = numeric_columns(&self.features, input, "explain")?;
        let selection =
            self.where_expr.as_ref().map(|expr| FilterSpec { expr: expr.clone() }.bind(input)).transpose()?;
        let features: Vec<String> = indices.iter().map(|&i| input.field(i).name().clone()).collect();
        if self.method == ExplainMethod::Exact && features.len() > shapley::MAX_EXACT_FEATURES {
            return Err(OpError::InvalidSpec(format!(
                "method = \"exact\" enumerates 2^F coalitions; {} features are more than {}: use \"permutation\"",
                features.len(),
                shapley::MAX_EXACT_FEATURES
            )));
        }
        let shape = self.model_shape(&new_session(&self.model, &model, OptimizationLevel::All, 1)?, features.len())?;
        let graph = read_graph(&model, &shape, features.len());
        let wanted = match self.method {
            ExplainMethod::Linear => Some((
                "linear",
                "one LinearRegressor or LinearClassifier node, or one affine map (MatMul + Add, Gemm) with an optional Sigmoid or Tanh,",
            )),
            ExplainMethod::Tree => {
                Some(("tree", "one TreeEnsembleRegressor, TreeEnsembleClassifier or TreeEnsemble node"))
            }
            _ => None,
        };
        if let Some((method, needs)) = wanted {
            let found = matches!(
                (&graph, self.method),
                (Some(Structure::Linear(_)), ExplainMethod::Linear) | (Some(Structure::Trees(_)), ExplainMethod::Tree)
            );
            if !found {
                return Err(model_error(
                    &self.model,
                    format!(
                        "method = \"{method}\" needs a model that is {needs} from input '{}' to output '{}' \
                         (Identity nodes aside); use \"exact\" or \"permutation\"",
                        shape.input, shape.output
                    ),
                ));
            }
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut names: Vec<String> = features.iter().map(|f| format!("{}{f}", self.prefix)).collect();
        names.push(format!("{}base", self.prefix));
        names.push(format!("{}residual", self.prefix));
        for name in &names {
            if fields.iter().any(|f| f.name() == name) {
                return Err(OpError::InvalidSpec(format!(
                    "output column '{name}' already exists; choose another prefix"
                )));
            }
            fields.push(Field::new(name, DataType::Float64, true));
        }
        Ok(ExplainFit {
            spec: self.clone(),
            model,
            shape,
            features,
            indices,
            written: names,
            structure: graph,
            selection: selection.map(Arc::new),
            output: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
        })
    }

    fn model_shape(&self, session: &Session, width: usize) -> Result<ModelShape, OpError> {
        let [input] = session.inputs() else {
            return Err(model_error(&self.model, "explain needs a model with exactly one input"));
        };
        let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
            return Err(model_error(&self.model, format!("input '{}' is not a tensor", input.name())));
        };
        let input_f32 = is_f32(ty).ok_or_else(|| {
            model_error(&self.model, format!("input '{}' is {ty}; explain feeds float or double", input.name()))
        })?;
        if shape.len() != 2 || (shape[1] != -1 && shape[1] != width as i64) {
            return Err(model_error(
                &self.model,
                format!("input '{}' has shape {shape:?}; the {width} features give [batch, {width}]", input.name()),
            ));
        }
        let floats: Vec<_> = session
            .outputs()
            .iter()
            .filter(|o| matches!(o.dtype(), ValueType::Tensor { ty, .. } if is_f32(ty).is_some()))
            .collect();
        let outlet = match &self.output {
            Some(name) => session.outputs().iter().find(|o| o.name() == name).ok_or_else(|| {
                let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
                model_error(&self.model, format!("has no output '{name}'; its outputs are: {}", names.join(", ")))
            })?,
            None => match floats.as_slice() {
                [only] => *only,
                _ => return Err(model_error(&self.model, "has several float outputs; name one in `output`")),
            },
        };
        let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
            return Err(model_error(&self.model, format!("output '{}' is not a tensor", outlet.name())));
        };
        let output_f32 = is_f32(ty).ok_or_else(|| {
            model_error(&self.model, format!("output '{}' is {ty}; explain attributes a float output", outlet.name()))
        })?;
        let output_width = match (shape.len(), shape.get(1).copied()) {
            (1, _) => 1,
            (2, Some(k)) if k >= 1 => k as usize,
            _ => {
                return Err(model_error(
                    &self.model,
                    format!("output '{}' has shape {shape:?}; explain needs [batch] or [batch, k]", outlet.name()),
                ));
            }
        };
        let output_index = match (self.output_index, output_width) {
            (Some(i), k) if i < k => i,
            (Some(i), k) => {
                return Err(model_error(
                    &self.model,
                    format!("output_index = {i}, but output '{}' has {k} columns", outlet.name()),
                ));
            }
            (None, 1) => 0,
            (None, k) => {
                return Err(model_error(
                    &self.model,
                    format!("output '{}' has {k} columns; choose one with output_index", outlet.name()),
                ));
            }
        };
        Ok(ModelShape {
            input: input.name().to_string(),
            input_f32,
            output: outlet.name().to_string(),
            output_f32,
            output_width,
            output_index,
        })
    }
}

/// An `explain` step bound to its input and model, before its background is sampled.
pub struct ExplainFit {
    spec: ExplainSpec,
    model: Arc<[u8]>,
    shape: ModelShape,
    features: Vec<String>,
    indices: Vec<usize>,
    written: Vec<String>,
    /// The model's coefficients or trees, when it is one linear or tree-ensemble node.
    structure: Option<Structure>,
    /// `where`: the rows to explain.
    selection: Option<Arc<Filter>>,
    output: SchemaRef,
}

impl std::fmt::Debug for ExplainFit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExplainFit").field("model", &self.spec.model).field("features", &self.features).finish()
    }
}

/// A bottom-k sample of rows by hash: `(hash, features)`, sorted by hash, at most
/// `background` long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackgroundSample {
    rows: Vec<(u64, Vec<f64>)>,
}

/// The fitted background, as saved in `fitted.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainParams {
    pub features: Vec<String>,
    pub background: Vec<Vec<f64>>,
}

/// A row's hash: SplitMix64 over `seed` and its values' bits.
fn row_hash(seed: u64, values: &[f64]) -> u64 {
    use crate::splitmix::{GAMMA, mix};
    values.iter().fold(mix(seed ^ 0x5EED), |h, v| mix(h ^ v.to_bits().wrapping_mul(GAMMA)))
}

/// The feature columns of a batch as `Float64`, read row by row into one reused buffer.
struct FeatureRows {
    columns: Vec<Float64Array>,
    buffer: Vec<f64>,
}

impl FeatureRows {
    fn new(batch: &RecordBatch, indices: &[usize]) -> Result<FeatureRows, OpError> {
        let columns: Vec<Float64Array> = indices
            .iter()
            .map(|&i| Ok(cast(batch.column(i), &DataType::Float64)?.as_primitive::<Float64Type>().clone()))
            .collect::<Result<_, OpError>>()?;
        Ok(FeatureRows { buffer: vec![0.0; columns.len()], columns })
    }

    /// Row `r`'s features; `None` when one is null or NaN (such a row is neither sampled
    /// nor explained).
    fn row(&mut self, r: usize) -> Option<&[f64]> {
        for (value, column) in self.buffer.iter_mut().zip(&self.columns) {
            if column.is_null(r) || column.value(r).is_nan() {
                return None;
            }
            *value = column.value(r);
        }
        Some(&self.buffer)
    }
}

impl Fit for ExplainFit {
    type Partial = BackgroundSample;
    type Params = ExplainParams;

    fn shape(&self) -> FitShape {
        FitShape {
            output: self.output.clone(),
            columns: self.features.clone(),
            written: self.written.clone(),
            keeps_every_row: true,
            strategy: None,
            open: false,
        }
    }

    fn new_partial(&self) -> BackgroundSample {
        BackgroundSample { rows: Vec::new() }
    }

    fn fold(&self, partial: &mut BackgroundSample, batch: &RecordBatch) -> Result<(), OpError> {
        let mut rows = FeatureRows::new(batch, &self.indices)?;
        // Once the sample is full, only a row hashing below its largest can enter it.
        let mut bound = self.sample_bound(partial);
        for r in 0..batch.num_rows() {
            let Some(row) = rows.row(r) else { continue };
            let hash = row_hash(self.spec.seed, row);
            if hash <= bound {
                partial.rows.push((hash, row.to_vec()));
                if partial.rows.len() >= 2 * self.spec.background {
                    self.keep_smallest(partial);
                    bound = self.sample_bound(partial);
                }
            }
        }
        self.keep_smallest(partial);
        Ok(())
    }

    fn merge(&self, into: &mut BackgroundSample, other: BackgroundSample) -> Result<(), OpError> {
        into.rows.extend(other.rows);
        self.keep_smallest(into);
        Ok(())
    }

    fn finish(&self, partial: BackgroundSample) -> Result<ExplainParams, OpError> {
        if partial.rows.is_empty() {
            return Err(OpError::InvalidSpec(
                "no row without a null or NaN feature reached the step: there is no background to explain against"
                    .into(),
            ));
        }
        Ok(ExplainParams {
            features: self.features.clone(),
            background: partial.rows.into_iter().map(|(_, row)| row).collect(),
        })
    }

    fn with_params(&self, params: ExplainParams) -> Result<Box<dyn BoundStep>, OpError> {
        if params.features != self.features {
            return Err(OpError::InvalidSpec(format!(
                "the fitted background is over features [{}], this step explains [{}]",
                params.features.join(", "),
                self.features.join(", ")
            )));
        }
        if params.background.is_empty() || params.background.iter().any(|row| row.len() != self.features.len()) {
            return Err(OpError::InvalidSpec(format!(
                "the fitted background must hold rows of {} values",
                self.features.len()
            )));
        }
        let session = new_session(&self.spec.model, &self.model, OptimizationLevel::All, 1)?;
        Ok(Box::new(Explain {
            spec: self.spec.clone(),
            model: self.model.clone(),
            shape: self.shape.clone(),
            indices: self.indices.clone(),
            structure: self.structure.clone(),
            selection: self.selection.clone(),
            background: params.background,
            output: self.output.clone(),
            sessions: Mutex::new(vec![session]),
        }))
    }
}

impl ExplainFit {
    /// The largest hash that may still enter `sample` (kept sorted by [`Self::keep_smallest`]).
    fn sample_bound(&self, sample: &BackgroundSample) -> u64 {
        match sample.rows.get(self.spec.background.saturating_sub(1)) {
            Some((hash, _)) if sample.rows.len() >= self.spec.background => *hash,
            _ => u64::MAX,
        }
    }

    /// Keeps the `background` rows of smallest hash (ties by value, so the sample does not
    /// depend on the order rows came in).
    fn keep_smallest(&self, sample: &mut BackgroundSample) {
        sample.rows.sort_by(|(ha, a), (hb, b)| {
            ha.cmp(hb).then_with(|| {
                a.iter().zip(b).map(|(x, y)| x.total_cmp(y)).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
            })
        });
        sample.rows.truncate(self.spec.background);
    }
}

/// The explained output of a model that is one `LinearRegressor` or `LinearClassifier`
/// node: its raw score is `weights · x + intercept`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    weights: Vec<f64>,
    intercept: f64,
    /// Whether the output is the raw score itself (no post-transform).
    raw_output: bool,
}

impl LinearModel {
    /// Exact interventional Shapley values of the raw score: `w_j (x_j − mean_b b_j)`.
    fn attributions(&self, rows: &[Vec<f64>], background: &[Vec<f64>]) -> Vec<Attribution> {
        let count = background.len() as f64;
        let means: Vec<f64> =
            (0..self.weights.len()).map(|j| background.iter().map(|b| b[j]).sum::<f64>() / count).collect();
        let score = |x: &[f64]| self.weights.iter().zip(x).map(|(w, v)| w * v).sum::<f64>() + self.intercept;
        let base = background.iter().map(|b| score(b)).sum::<f64>() / count;
        rows.iter()
            .map(|x| Attribution {
                values: self.weights.iter().zip(x).zip(&means).map(|((w, v), m)| w * (v - m)).collect(),
                base,
                output: score(x),
            })
            .collect()
    }
}

/// A model Weir can explain from its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Structure {
    Linear(LinearModel),
    Trees(TreeEnsemble),
}

impl Structure {
    fn attributions(&self, rows: &[Vec<f64>], background: &[Vec<f64>]) -> Vec<Attribution> {
        match self {
            Structure::Linear(linear) => linear.attributions(rows, background),
            Structure::Trees(trees) => {
                let width = rows.first().map_or(0, Vec::len);
                let base = background.iter().map(|r| trees.score(r)).sum::<f64>() / background.len() as f64;
                rows.iter()
                    .map(|x| Attribution {
                        values: trees.attributions(x, background, width),
                        base,
                        output: trees.score(x),
                    })
                    .collect()
            }
        }
    }
}

/// The structure behind `shape`'s output, when the graph is one linear or tree-ensemble
/// node from the model's input to it (through Identity nodes); `None` otherwise, or for a
/// graph Weir cannot read.
fn read_graph(model: &[u8], shape: &ModelShape, width: usize) -> Option<Structure> {
    let graph = crate::onnx_graph::graph(model).ok()?;
    let nodes = &graph.nodes;
    let mut output = shape.output.clone();
    // Follow Identity nodes back from the explained output.
    while let Some(identity) = nodes.iter().find(|n| n.op_type == "Identity" && n.outputs.first() == Some(&output)) {
        output = identity.inputs.first()?.clone();
    }
    let working: Vec<&Node> = nodes.iter().filter(|n| n.op_type != "Identity").collect();
    if working.len() > 1 || working.first().is_some_and(|n| matches!(n.op_type.as_str(), "MatMul" | "Gemm" | "Add")) {
        return read_affine(&graph, &working, &output, shape, width).map(Structure::Linear);
    }
    let [node] = working[..] else { return None };
    if node.inputs.first() != Some(&shape.input) {
        return None;
    }
    let scores = match node.op_type.as_str() {
        "LinearClassifier" | "TreeEnsembleClassifier" => node.outputs.get(1)?,
        _ => node.outputs.first()?,
    };
    if scores != &output {
        return None;
    }
    if node.op_type.starts_with("TreeEnsemble") {
        let float32 = shape.input_f32;
        return read_ensemble(node, shape.output_index, shape.output_width, width, float32).map(Structure::Trees);
    }
    let scores_of = |op: &str| matches!(op, "LinearClassifier" | "LinearRegressor");
    if !scores_of(&node.op_type) || node.domain != "ai.onnx.ml" {
        return None;
    }
    let coefficients = &node.attribute("coefficients")?.floats;
    let targets = coefficients.len() / width.max(1);
    if targets != shape.output_width || coefficients.len() != targets * width {
        return None;
    }
    let k = shape.output_index;
    let intercept = match node.attribute("intercepts") {
        Some(intercepts) if intercepts.floats.len() == targets => intercepts.floats[k] as f64,
        Some(_) => return None,
        None => 0.0,
    };
    let transform = node.attribute("post_transform").and_then(|a| a.s.clone()).unwrap_or_default();
    Some(Structure::Linear(LinearModel {
        weights: coefficients[k * width..(k + 1) * width].iter().map(|&w| w as f64).collect(),
        intercept,
        raw_output: transform.is_empty() || transform == b"NONE",
    }))
}

/// A graph that is one affine map of the input (`MatMul` then `Add`, or `Gemm`), with
/// constant weights and bias, optionally followed by an elementwise link (`Sigmoid`, `Tanh`):
/// the explained column's weights and bias. The link, if any, makes the raw score the
/// value before it.
fn read_affine(graph: &Graph, nodes: &[&Node], output: &str, shape: &ModelShape, width: usize) -> Option<LinearModel> {
    let producer = |name: &str| nodes.iter().copied().find(|n| n.outputs.first().map(String::as_str) == Some(name));
    let k = shape.output_width;
    let c = shape.output_index;
    let mut at = producer(output)?;
    let mut used = 1;
    let link = matches!(at.op_type.as_str(), "Sigmoid" | "Tanh");
    if link {
        at = producer(at.inputs.first()?)?;
        used += 1;
    }
    // The bias of column `c`, broadcast from [k], [1, k], [1] or a scalar.
    let bias_of = |tensor: &GraphTensor| match tensor.values.len() {
        1 => Some(tensor.values[0]),
        len if len == k => Some(tensor.values[c]),
        _ => None,
    };
    let (weights, intercept) = match at.op_type.as_str() {
        "Gemm" => {
            let attribute = |name: &str, default: i64| at.attribute(name).and_then(|a| a.i).unwrap_or(default);
            let scale = |name: &str| at.attribute(name).and_then(|a| a.f).unwrap_or(1.0) as f64;
            if at.inputs.first() != Some(&shape.input) || attribute("transA", 0) != 0 {
                return None;
            }
            let w = graph.initializer(at.inputs.get(1)?)?;
            let weights: Vec<f64> = if attribute("transB", 0) != 0 {
                (w.dims == [k as i64, width as i64]).then(|| w.values[c * width..(c + 1) * width].to_vec())?
            } else {
                (w.dims == [width as i64, k as i64]).then(|| (0..width).map(|j| w.values[j * k + c]).collect())?
            };
            let bias = match at.inputs.get(2).filter(|name| !name.is_empty()) {
                Some(name) => bias_of(graph.initializer(name)?)? * scale("beta"),
                None => 0.0,
            };
            (weights.iter().map(|w| w * scale("alpha")).collect(), bias)
        }
        "Add" => {
            let (product, bias) = match (producer(&at.inputs[0]), at.inputs.get(1)) {
                (Some(product), Some(bias)) => (product, graph.initializer(bias)?),
                _ => (producer(at.inputs.get(1)?)?, graph.initializer(&at.inputs[0])?),
            };
            used += 1;
            if product.op_type != "MatMul" || product.inputs.first() != Some(&shape.input) {
                return None;
            }
            let w = graph.initializer(product.inputs.get(1)?)?;
            if w.dims != [width as i64, k as i64] {
                return None;
            }
            ((0..width).map(|j| w.values[j * k + c]).collect(), bias_of(bias)?)
        }
        _ => return None,
    };
    // Nothing else may compute the output.
    (used == nodes.len()).then_some(LinearModel { weights, intercept, raw_output: !link })
}

/// An `explain` step with its background: appends the attributions to each batch.
pub struct Explain {
    spec: ExplainSpec,
    model: Arc<[u8]>,
    shape: ModelShape,
    indices: Vec<usize>,
    structure: Option<Structure>,
    selection: Option<Arc<Filter>>,
    background: Vec<Vec<f64>>,
    output: SchemaRef,
    /// Idle sessions; a worker takes one (or builds one) for each batch.
    sessions: Mutex<Vec<Session>>,
}

impl std::fmt::Debug for Explain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Explain").field("model", &self.spec.model).field("output", &self.output).finish()
    }
}

/// The model output being explained, through one session.
struct SessionModel<'a> {
    session: Mutex<&'a mut Session>,
    shape: &'a ModelShape,
    model: &'a str,
}

impl Evaluate for SessionModel<'_> {
    fn evaluate(&self, rows: &[f64], width: usize) -> Result<Vec<f64>, OpError> {
        let count = rows.len() / width.max(1);
        let failed = |e: ort::Error| model_error(self.model, format!("ONNX Runtime failed while explaining: {e}"));
        let shape = vec![count as i64, width as i64];
        let input: SessionInputValue<'static> = if self.shape.input_f32 {
            Tensor::from_array((shape, rows.iter().map(|&v| v as f32).collect::<Vec<f32>>())).map_err(failed)?.into()
        } else {
            Tensor::from_array((shape, rows.to_vec())).map_err(failed)?.into()
        };
        let mut session = self.session.lock().map_err(|_| OpError::Internal("session poisoned".into()))?;
        let outputs = session.run(vec![(Cow::Owned(self.shape.input.clone()), input)]).map_err(failed)?;
        let value = outputs
            .get(self.shape.output.as_str())
            .ok_or_else(|| model_error(self.model, format!("gave no output '{}'", self.shape.output)))?;
        let (k, index) = (self.shape.output_width, self.shape.output_index);
        let picked: Vec<f64> = if self.shape.output_f32 {
            let (_, data) = value.try_extract_tensor::<f32>().map_err(failed)?;
            data.iter().skip(index).step_by(k).map(|&v| v as f64).collect()
        } else {
            let (_, data) = value.try_extract_tensor::<f64>().map_err(failed)?;
            data.iter().skip(index).step_by(k).copied().collect()
        };
        if picked.len() != count {
            return Err(model_error(
                self.model,
                format!("output '{}' gave {} values for {count} rows", self.shape.output, picked.len()),
            ));
        }
        Ok(picked)
    }
}

impl Explain {
    /// The model structure that explains the rows without calling the model, if the method
    /// (or `auto`) uses it.
    fn uses_structure(&self) -> Option<&Structure> {
        self.structure.as_ref().filter(|structure| match (self.spec.method, structure) {
            (ExplainMethod::Linear, Structure::Linear(_)) | (ExplainMethod::Tree, Structure::Trees(_)) => true,
            (ExplainMethod::Auto, Structure::Linear(linear)) => linear.raw_output,
            (ExplainMethod::Auto, Structure::Trees(trees)) => trees.raw_output,
            _ => false,
        })
    }

    fn attributions(&self, session: &mut Session, rows: &[Vec<f64>]) -> Result<Vec<Attribution>, OpError> {
        let model = SessionModel { session: Mutex::new(session), shape: &self.shape, model: &self.spec.model };
        let width = self.indices.len();
        let exact = match self.spec.method {
            ExplainMethod::Exact => true,
            ExplainMethod::Permutation | ExplainMethod::Linear | ExplainMethod::Tree => false,
            ExplainMethod::Auto => width <= shapley::MAX_EXACT_FEATURES && (1usize << width) <= self.spec.max_evals,
        };
        if exact {
            shapley::exact(&model, rows, &self.background)
        } else {
            let pairs = shapley::pairs_for_budget(self.spec.max_evals, width);
            shapley::permutation(&model, rows, &self.background, pairs, self.spec.seed)
        }
    }
}

impl BoundStep for Explain {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mut rows = FeatureRows::new(&batch, &self.indices)?;
        let fraction = self.spec.fraction.unwrap_or(1.0);
        let selected = self.selection.as_ref().map(|filter| filter.mask(&batch)).transpose()?;
        // Rows explained: kept by `where`, complete, and within `fraction` by hash.
        let mut picked: Vec<usize> = Vec::new();
        let mut explained: Vec<Vec<f64>> = Vec::new();
        for r in 0..batch.num_rows() {
            if selected.as_ref().is_some_and(|mask| !(mask.is_valid(r) && mask.value(r))) {
                continue;
            }
            let Some(row) = rows.row(r) else { continue };
            if fraction < 1.0 && (row_hash(self.spec.seed ^ 0xF2AC, row) as f64) >= fraction * u64::MAX as f64 {
                continue;
            }
            picked.push(r);
            explained.push(row.to_vec());
        }
        let attributions = if explained.is_empty() {
            Vec::new()
        } else if let Some(structure) = self.uses_structure() {
            structure.attributions(&explained, &self.background)
        } else {
            let mut session =
                match self.sessions.lock().map_err(|_| OpError::Internal("session pool poisoned".into()))?.pop() {
                    Some(session) => session,
                    None => new_session(&self.spec.model, &self.model, OptimizationLevel::All, 1)?,
                };
            let found = self.attributions(&mut session, &explained);
            self.sessions.lock().map_err(|_| OpError::Internal("session pool poisoned".into()))?.push(session);
            found?
        };
        let width = self.indices.len();
        let mut columns: Vec<Vec<Option<f64>>> = vec![vec![None; batch.num_rows()]; width + 2];
        for (&r, attribution) in picked.iter().zip(&attributions) {
            for (j, value) in attribution.values.iter().enumerate() {
                columns[j][r] = Some(*value);
            }
            columns[width][r] = Some(attribution.base);
            columns[width + 1][r] = Some(attribution.residual());
        }
        let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
        arrays.extend(columns.into_iter().map(|c| Arc::new(Float64Array::from(c)) as ArrayRef));
        Ok(RecordBatch::try_new(self.output.clone(), arrays)?)
    }
}
