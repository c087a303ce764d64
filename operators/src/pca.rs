//! `pca`: principal component analysis, like scikit-learn's `PCA(svd_solver="full")`.
//!
//! ```toml
//! [[step]]
//! op = "pca"
//! columns = ["f_*"]            # names or globs; numeric columns only
//! components = 8               # a count, or a fraction of the variance to keep (below)
//! output = "pc"                # writes pc_0 … pc_7, appended at the end of the schema
//! whiten = false               # divide each component by its standard deviation
//! keep_inputs = false          # the input columns are dropped unless this is true
//! output_type = "float64"      # or "float32"
//! on_null = "error"            # or "skip": drop rows with a missing input
//! # fitted = "s3://…/_weir/fitted.json"
//! ```
//!
//! **Fit.** Each worker folds its batches into [`CoMoments`]: the count, the mean and the
//! centred cross-product matrix `M = Σ (x − mean)(x − mean)ᵀ`. A batch is gathered into a
//! column-major `f64` matrix, centred on its own mean (two-pass, with the mean kept as
//! `shift + offset` as [`crate::stats::Moments`] does, so a `1e12` offset costs no digits)
//! and multiplied by its transpose with one GEMM from `faer` (lower triangle only); batches
//! and workers are merged with the exact pairwise (Chan) update
//! `M = Ma + Mb + δδᵀ·na·nb/n`. Worker 0 then eigendecomposes the covariance `M / (n − 1)`
//! (scikit-learn's `explained_variance_` uses ddof = 1) in `f64`, clamps the eigenvalues
//! that rounding made slightly negative to 0 (as scikit-learn's `covariance_eigh` solver
//! does), sorts them by decreasing variance and fixes each component's sign so that its
//! largest-|value| entry is positive (scikit-learn's `svd_flip(u_based_decision=False)`).
//! `explained_variance_ratio` is each variance over the total (the trace of the
//! covariance). The parameters in `fitted.json` are `columns`, `mean`, `components` (one
//! row of `d` loadings per component), `explained_variance`, `explained_variance_ratio`,
//! `singular_values`, `n_components`, `n_samples` and `whiten`.
//!
//! **Transform.** `(x − mean) · componentsᵀ` as one matrix product per batch, divided by
//! `sqrt(explained_variance)` per component when whitening (as scikit-learn).
//!
//! **Choices.**
//! - `components = 0.95` (a fraction strictly between 0 and 1) keeps the fewest components
//!   whose cumulative explained variance ratio exceeds it, as scikit-learn does. Weir fixes
//!   every step's output schema before it reads any data, so a fraction needs
//!   `max_components = K`: the output always has the `K` columns `pc_0 … pc_{K-1}`; the
//!   fit keeps `k ≤ K` components, and the columns `pc_k …` are null (their fields are
//!   nullable). If the fraction needs more than `K` components, the first `K` are kept:
//!   `fitted.json` (`n_components`, `explained_variance_ratio`) says what was kept. An
//!   integer `components` gives exactly that many non-null columns.
//! - Whitening a component whose variance is numerically zero (at most 1e-12 of the largest
//!   one: constant or duplicated columns, fewer rows than columns) leaves it unscaled, as
//!   `StandardScaler` scales a constant column by 1. scikit-learn instead divides by
//!   machine epsilon, which turns rounding noise into values of order 1; Weir keeps the
//!   noise at its own size. Nothing is ever divided by zero, so outputs stay finite.
//! - Rank-deficient inputs (constant or duplicated columns, fewer rows than columns) give
//!   zero variances for the missing directions; their components are an arbitrary
//!   orthonormal basis of that null space (as with any eigensolver or SVD), their
//!   explained variance and ratio are 0, and projections of the training data on them are
//!   0 up to rounding. If every input is constant, every ratio is 0.
//! - A null or NaN in an input is an error naming the column (impute first), unless
//!   `on_null = "skip"`, which leaves the row out of the fit and drops it from the output.
//!   An infinity is always an error naming the column.
//! - The fit needs at least 2 rows, and at least as many rows as components (scikit-learn
//!   requires `components ≤ min(rows, columns)`).
//!
//! **Memory.** With `d` input columns each worker holds `d²` `f64` (8 MiB at `d = 1024`)
//! in its partial, plus a `rows × d` copy of the batch being folded or mapped; worker 0
//! holds two more `d × d` matrices for the eigendecomposition. The fit costs one GEMM of
//! `rows × d²` flops per batch and one `d³` eigendecomposition.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array, new_null_array};
use arrow::compute::{filter, filter_record_batch};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use serde::{Deserialize, Serialize};

use crate::co_moments::CoMoments;
use crate::fit::{Fit, FitShape};
use crate::fit_columns::{as_f64, fill_null_slots, names, numeric_columns};
use crate::stats::all_finite;
use crate::{BoundStep, OpError};

/// A whitened component whose variance is at most this share of the largest one is left
/// unscaled (it is rounding noise).
const ZERO_VARIANCE: f64 = 1e-12;

/// `op = "pca"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcaSpec {
    pub columns: Vec<String>,
    /// How many components to keep: a count, or a fraction of the variance (0 < x < 1).
    pub components: Components,
    /// The output's width when `components` is a fraction.
    #[serde(default)]
    pub max_components: Option<usize>,
    /// The prefix of the output columns: `{output}_0`, `{output}_1`, …
    #[serde(default = "default_output")]
    pub output: String,
    #[serde(default)]
    pub whiten: bool,
    #[serde(default)]
    pub keep_inputs: bool,
    #[serde(default)]
    pub output_type: PcaOutputType,
    #[serde(default)]
    pub on_null: OnNull,
    /// Reuse the components of an earlier run's `_weir/fitted.json`.
    #[serde(default)]
    pub fitted: Option<String>,
}

fn default_output() -> String {
    "pc".to_string()
}

/// `components = 8` or `components = 0.95`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Components {
    Count(i64),
    Fraction(f64),
}

/// The type of the output columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcaOutputType {
    #[default]
    #[serde(alias = "double")]
    Float64,
    #[serde(alias = "float")]
    Float32,
}

impl PcaOutputType {
    fn data_type(self) -> DataType {
        match self {
            PcaOutputType::Float64 => DataType::Float64,
            PcaOutputType::Float32 => DataType::Float32,
        }
    }
}

/// What a missing (null or NaN) input value does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNull {
    /// Fail, naming the column.
    #[default]
    Error,
    /// Leave the row out of the fit and drop it from the output.
    Skip,
}

impl PcaSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<PcaFit, OpError> {
        let indices = numeric_columns(&self.columns, input, "pca")?;
        let d = indices.len();
        let width = match (self.components, self.max_components) {
            (Components::Count(k), None) => {
                if k < 1 || k as usize > d {
                    return Err(OpError::InvalidSpec(format!(
                        "pca: components = {k}, but it must be between 1 and the number of input columns ({d})"
                    )));
                }
                k as usize
            }
            (Components::Count(_), Some(_)) => {
                return Err(OpError::InvalidSpec(
                    "pca: max_components goes with a fraction (components = 0.95); with a count it is not needed"
                        .to_string(),
                ));
            }
            (Components::Fraction(f), max) => {
                if !(f > 0.0 && f < 1.0) {
                    return Err(OpError::InvalidSpec(format!(
                        "pca: components = {f} is neither a count (an integer) nor a fraction of the variance \
                         strictly between 0 and 1"
                    )));
                }
                let Some(max) = max else {
                    return Err(OpError::InvalidSpec(format!(
                        "pca: components = {f} (a fraction of the variance) needs max_components = K, the \
                         number of output columns (the output schema is fixed before the fit); columns beyond \
                         the components the fit keeps are null"
                    )));
                };
                if max < 1 || max > d {
                    return Err(OpError::InvalidSpec(format!(
                        "pca: max_components = {max}, but it must be between 1 and the number of input columns ({d})"
                    )));
                }
                max
            }
        };
        if self.output.is_empty() {
            return Err(OpError::InvalidSpec("pca: output (the prefix of the output columns) is empty".to_string()));
        }
        let kept: Vec<usize> = (0..input.fields().len()).filter(|i| self.keep_inputs || !indices.contains(i)).collect();
        let output_names: Vec<String> = (0..width).map(|i| format!("{}_{i}", self.output)).collect();
        for name in &output_names {
            if kept.iter().any(|&i| input.field(i).name() == name) {
                return Err(OpError::InvalidSpec(format!(
                    "pca: output column '{name}' already exists in the input; choose another output prefix, or \
                     drop or rename that column first"
                )));
            }
        }
        let data_type = self.output_type.data_type();
        let nullable = matches!(self.components, Components::Fraction(_));
        let mut fields: Vec<Field> = kept.iter().map(|&i| input.field(i).as_ref().clone()).collect();
        fields.extend(output_names.iter().map(|name| Field::new(name, data_type.clone(), nullable)));
        Ok(PcaFit {
            exact_inputs: indices.iter().all(|&i| {
                let data_type = input.field(i).data_type();
                data_type == &DataType::Float64 || data_type.is_integer()
            }),
            names: names(input, &indices),
            indices,
            kept,
            output_names,
            width,
            count: match self.components {
                Components::Count(k) => Some(k as usize),
                Components::Fraction(_) => None,
            },
            fraction: match self.components {
                Components::Fraction(f) => Some(f),
                Components::Count(_) => None,
            },
            whiten: self.whiten,
            keep_inputs: self.keep_inputs,
            output_type: self.output_type,
            on_null: self.on_null,
            output: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
        })
    }
}

/// A `pca` step bound to its input, before its components are fitted.
#[derive(Debug, Clone)]
pub struct PcaFit {
    /// Whether every input column is `Float64` or an integer (read as `f64` exactly).
    exact_inputs: bool,
    names: Vec<String>,
    indices: Vec<usize>,
    /// The input columns that pass through, in order.
    kept: Vec<usize>,
    output_names: Vec<String>,
    /// The number of output columns.
    width: usize,
    /// `components = k`.
    count: Option<usize>,
    /// `components = 0.95`.
    fraction: Option<f64>,
    whiten: bool,
    keep_inputs: bool,
    output_type: PcaOutputType,
    on_null: OnNull,
    output: SchemaRef,
}

/// What `fitted.json` holds for a `pca` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaParams {
    pub columns: Vec<String>,
    pub mean: Vec<f64>,
    /// One row of loadings per component, by decreasing variance.
    pub components: Vec<Vec<f64>>,
    /// Variance along each component (ddof = 1).
    pub explained_variance: Vec<f64>,
    pub explained_variance_ratio: Vec<f64>,
    pub singular_values: Vec<f64>,
    pub n_components: usize,
    pub n_samples: u64,
    pub whiten: bool,
}

/// The missing-value error of column `name`.
pub(crate) fn missing(name: &str, what: &str) -> OpError {
    OpError::InvalidSpec(format!(
        "column '{name}' holds a {what}; pca needs every input value (impute it first, or set on_null = \"skip\" \
         to drop such rows)"
    ))
}

/// The input columns of `batch` as `f64`, and the mask of the complete rows when some
/// were incomplete (`on_null = "skip"`); the returned columns hold only the complete rows.
/// A missing value with `on_null = "error"`, or an infinity, is an error naming the column.
fn read_inputs(
    batch: &RecordBatch,
    indices: &[usize],
    names: &[String],
    on_null: OnNull,
) -> Result<(Vec<Float64Array>, Option<BooleanArray>), OpError> {
    let rows = batch.num_rows();
    let mut columns = Vec::with_capacity(indices.len());
    let mut complete: Option<Vec<bool>> = None;
    // Whether each column is known to hold only finite values (the common case, one scan).
    let mut finite = Vec::with_capacity(indices.len());
    for (&index, name) in indices.iter().zip(names) {
        let values = as_f64(batch.column(index))?;
        let nulls = values.null_count() > 0;
        finite.push(!nulls && all_finite(values.values()));
        if finite.last() == Some(&true) {
            columns.push(values);
            continue;
        }
        let nan =
            if nulls { values.iter().flatten().any(f64::is_nan) } else { values.values().iter().any(|v| v.is_nan()) };
        if nulls || nan {
            if on_null == OnNull::Error {
                return Err(missing(name, if nulls { "null" } else { "NaN" }));
            }
            let complete = complete.get_or_insert_with(|| vec![true; rows]);
            for (keep, value) in complete.iter_mut().zip(values.iter()) {
                if value.is_none_or(f64::is_nan) {
                    *keep = false;
                }
            }
        }
        columns.push(values);
    }
    let mask = complete.map(BooleanArray::from);
    if let Some(mask) = &mask {
        columns = columns
            .iter()
            .map(|column| Ok(filter(column, mask)?.as_primitive::<Float64Type>().clone()))
            .collect::<Result<_, OpError>>()?;
    }
    for ((column, name), finite) in columns.iter().zip(names).zip(finite) {
        if !finite && column.values().iter().any(|v| v.is_infinite()) {
            return Err(PcaFit::infinite(name));
        }
    }
    Ok((columns, mask))
}

impl PcaFit {
    pub(crate) fn column_names(&self) -> &[String] {
        &self.names
    }

    /// Whether the fit is over every row, on inputs read as `f64` without rounding: what
    /// [`crate::linear_chain`] can compose into.
    pub(crate) fn composable(&self) -> bool {
        self.exact_inputs && self.on_null == OnNull::Error
    }

    /// The error for an infinite value in column `name`.
    pub(crate) fn infinite(name: &str) -> OpError {
        OpError::InvalidSpec(format!(
            "column '{name}' holds an infinite value, so pca cannot use it (filter or clip it first)"
        ))
    }

    fn check_params(&self, params: &PcaParams) -> Result<(), OpError> {
        let d = self.names.len();
        if params.columns != self.names {
            return Err(OpError::InvalidSpec(format!(
                "the pca parameters are over columns [{}], this step reads [{}]",
                params.columns.join(", "),
                self.names.join(", ")
            )));
        }
        if params.whiten != self.whiten {
            return Err(OpError::InvalidSpec(format!(
                "the pca parameters were fitted with whiten = {}, this step asks for whiten = {}",
                params.whiten, self.whiten
            )));
        }
        let k = params.components.len();
        let counts_agree = match self.count {
            Some(count) => k == count,
            None => (1..=self.width).contains(&k),
        };
        if !counts_agree {
            let asked = match (self.count, self.fraction) {
                (Some(count), _) => format!("components = {count}"),
                (None, fraction) => {
                    format!("components = {} with max_components = {}", fraction.unwrap_or(f64::NAN), self.width)
                }
            };
            return Err(OpError::InvalidSpec(format!(
                "the pca parameters hold {k} components, this step asks for {asked}"
            )));
        }
        let well_formed = params.n_components == k
            && params.mean.len() == d
            && params.explained_variance.len() == k
            && params.components.iter().all(|c| c.len() == d);
        if !well_formed {
            return Err(OpError::InvalidSpec(format!(
                "the pca parameters are malformed: {k} components over {d} columns need a mean of {d} values, \
                 {k} rows of {d} loadings and {k} explained variances"
            )));
        }
        let finite = params.mean.iter().chain(params.components.iter().flatten()).chain(&params.explained_variance);
        if !finite.into_iter().all(|v| v.is_finite()) {
            return Err(OpError::InvalidSpec("the pca parameters hold a value that is not finite".to_string()));
        }
        Ok(())
    }
}

impl Fit for PcaFit {
    type Partial = CoMoments;
    type Params = PcaParams;

    fn shape(&self) -> FitShape {
        let mut written = if self.keep_inputs { Vec::new() } else { self.names.clone() };
        written.extend(self.output_names.iter().cloned());
        FitShape {
            output: self.output.clone(),
            columns: self.names.clone(),
            written,
            keeps_every_row: self.on_null == OnNull::Error,
            strategy: None,
            open: false,
        }
    }

    fn new_partial(&self) -> CoMoments {
        CoMoments::new(self.names.len())
    }

    fn fold(&self, partial: &mut CoMoments, batch: &RecordBatch) -> Result<(), OpError> {
        let (columns, _) = read_inputs(batch, &self.indices, &self.names, self.on_null)?;
        let slices: Vec<&[f64]> = columns.iter().map(|c| c.values().as_ref()).collect();
        partial.fold(&slices)
    }

    fn merge(&self, into: &mut CoMoments, other: CoMoments) -> Result<(), OpError> {
        into.merge(&other)
    }

    fn finish(&self, moments: CoMoments) -> Result<PcaParams, OpError> {
        let (d, n) = (moments.dim(), moments.count);
        if n < 2 {
            return Err(OpError::InvalidSpec(format!(
                "pca needs at least 2 complete rows to fit a covariance; it saw {n}"
            )));
        }
        if let Some(k) = self.count
            && (n as usize) < k
        {
            return Err(OpError::InvalidSpec(format!(
                "pca cannot fit components = {k} on {n} rows: at most min(rows, columns) components exist"
            )));
        }
        let scale = 1.0 / (n as f64 - 1.0);
        let covariance = Mat::from_fn(d, d, |i, j| moments.at(i, j) * scale);
        if let Some(j) = (0..d).find(|&j| !covariance[(j, j)].is_finite()) {
            return Err(OpError::InvalidSpec(format!(
                "the variance of column '{}' overflows f64, so pca cannot fit it (scale it first)",
                self.names[j]
            )));
        }
        let eigen = covariance.self_adjoint_eigen(Side::Lower).map_err(|e| {
            OpError::Internal(format!("the eigendecomposition of the covariance did not converge: {e:?}"))
        })?;
        let (values, vectors) = (eigen.S().column_vector(), eigen.U());
        // faer sorts the eigenvalues in nondecreasing order: take them from the end.
        let variance: Vec<f64> = (0..d).map(|i| values[d - 1 - i].max(0.0)).collect();
        let total: f64 = variance.iter().sum();
        let ratio: Vec<f64> = variance.iter().map(|v| if total > 0.0 { v / total } else { 0.0 }).collect();
        let k = match self.fraction {
            None => self.width,
            Some(fraction) => {
                // scikit-learn: np.searchsorted(cumsum(ratio), fraction, side="right") + 1.
                let mut cumulative = 0.0;
                let below = ratio
                    .iter()
                    .take_while(|r| {
                        cumulative += **r;
                        cumulative <= fraction
                    })
                    .count();
                (below + 1).min(self.width).min(n as usize).min(d)
            }
        };
        let components: Vec<Vec<f64>> = (0..k)
            .map(|i| {
                let column = vectors.col(d - 1 - i);
                let mut loadings: Vec<f64> = (0..d).map(|j| column[j]).collect();
                let largest = (0..d).fold(0, |best, j| if loadings[j].abs() > loadings[best].abs() { j } else { best });
                if loadings[largest] < 0.0 {
                    loadings.iter_mut().for_each(|v| *v = -*v);
                }
                loadings
            })
            .collect();
        let params = PcaParams {
            columns: self.names.clone(),
            mean: moments.mean(),
            components,
            explained_variance: variance[..k].to_vec(),
            explained_variance_ratio: ratio[..k].to_vec(),
            singular_values: variance[..k].iter().map(|v| (v * (n as f64 - 1.0)).sqrt()).collect(),
            n_components: k,
            n_samples: n,
            whiten: self.whiten,
        };
        Ok(params)
    }

    fn with_params(&self, params: PcaParams) -> Result<Box<dyn BoundStep>, OpError> {
        Ok(Box::new(self.map(params)?))
    }
}

impl PcaFit {
    /// Whether the input columns are dropped from the output (`keep_inputs = false`).
    pub(crate) fn drops_inputs(&self) -> bool {
        !self.keep_inputs
    }

    /// The map that applies `params` ([`Fit::with_params`], typed).
    pub(crate) fn map(&self, params: PcaParams) -> Result<PcaMap, OpError> {
        self.check_params(&params)?;
        let (d, k) = (self.names.len(), params.components.len());
        let largest = params.explained_variance.first().copied().unwrap_or(0.0);
        let mut weights = vec![0.0; d * k];
        for (i, component) in params.components.iter().enumerate() {
            let variance = params.explained_variance[i];
            let scale = if self.whiten && variance > largest * ZERO_VARIANCE { variance.sqrt() } else { 1.0 };
            for (to, loading) in weights[i * d..(i + 1) * d].iter_mut().zip(component) {
                *to = loading / scale;
            }
        }
        Ok(PcaMap {
            names: self.names.clone(),
            indices: self.indices.clone(),
            kept: self.kept.clone(),
            output: self.output.clone(),
            width: self.width,
            output_type: self.output_type,
            on_null: self.on_null,
            mean: params.mean,
            weights,
            k,
            fills: None,
        })
    }
}

/// A fitted `pca`: projects each batch on the components.
#[derive(Debug)]
pub struct PcaMap {
    names: Vec<String>,
    indices: Vec<usize>,
    kept: Vec<usize>,
    output: SchemaRef,
    width: usize,
    output_type: PcaOutputType,
    on_null: OnNull,
    mean: Vec<f64>,
    /// `componentsᵀ` (÷ the standard deviations when whitening), `d × k` column-major.
    weights: Vec<f64>,
    k: usize,
    /// Set when the map is fused with the `impute` and scaling steps before it
    /// ([`PcaMap::fuse`]): each input's fill for a missing value (`None`: a missing value
    /// is an error, as without them); `mean` and `weights` are then of the raw inputs.
    fills: Option<Vec<Option<f64>>>,
}

impl PcaMap {
    /// Makes this map apply to the raw inputs of the steps before it, when every input `j` of
    /// `pca` went through `fill` (where missing; `None`: never filled) and then the affine map
    /// `y ↦ slope · y + intercept` (`(1, 0)` for none), and nothing else reads what they wrote
    /// (pca drops its inputs). As `pca` computes `(z − m) · W` with `z = a y + b`, that is
    /// `(y − μ) · (a W)` with `μ = (m − b) / a`: one pass over the raw columns. `None` where a
    /// slope is 0 or any of it is not finite: the map is then left as it was, and this
    /// returns false.
    pub(crate) fn fuse(&mut self, inputs: &[(Option<f64>, f64, f64)]) -> bool {
        let d = self.indices.len();
        if inputs.len() != d || self.fills.is_some() {
            return false;
        }
        let mut mean = Vec::with_capacity(d);
        for (&(fill, slope, intercept), &m) in inputs.iter().zip(&self.mean) {
            let raw_mean = (m - intercept) / slope;
            if slope == 0.0 || !slope.is_finite() || !raw_mean.is_finite() || !fill.is_none_or(f64::is_finite) {
                return false;
            }
            mean.push(raw_mean);
        }
        for column in self.weights.chunks_mut(d.max(1)) {
            for (w, &(_, slope, _)) in column.iter_mut().zip(inputs) {
                *w *= slope;
            }
        }
        self.mean = mean;
        self.fills = Some(inputs.iter().map(|&(fill, _, _)| fill).collect());
        true
    }

    /// `(x − mean) · weights` for complete columns: `rows × k`, column-major.
    fn project(&self, columns: &[Float64Array]) -> Vec<f64> {
        let d = self.indices.len();
        let rows = columns.first().map_or(0, |c| c.len());
        let mut centred = vec![0.0; rows * d];
        for ((to, column), mean) in centred.chunks_mut(rows.max(1)).zip(columns).zip(&self.mean) {
            for (to, v) in to.iter_mut().zip(column.values().iter()) {
                *to = v - mean;
            }
        }
        self.project_centred(&centred, rows)
    }

    /// [`PcaMap::project`] for a fused map ([`PcaMap::fuse`]): a missing value takes its column's fill, or is
    /// the error `pca` gives for it; an infinite value is an error too.
    fn project_filled(&self, batch: &RecordBatch, fills: &[Option<f64>]) -> Result<Vec<f64>, OpError> {
        let (d, rows) = (self.indices.len(), batch.num_rows());
        let mut centred = vec![0.0; rows * d];
        for (j, (to, &index)) in centred.chunks_mut(rows.max(1)).zip(&self.indices).enumerate() {
            let values = as_f64(batch.column(index))?;
            let mean = self.mean[j];
            for (to, v) in to.iter_mut().zip(values.values().iter()) {
                *to = v - mean;
            }
            let name = &self.names[j];
            if let Some(nulls) = values.nulls().filter(|n| n.null_count() > 0) {
                let Some(fill) = fills[j] else { return Err(missing(name, "null")) };
                fill_null_slots(to, nulls, fill - mean);
            }
            if all_finite(to) {
                continue;
            }
            // The rare path: a NaN (missing) or an infinity among the present values.
            for (r, to) in to.iter_mut().enumerate() {
                let value = values.value(r);
                if values.is_null(r) || value.is_finite() {
                    continue;
                }
                match fills[j] {
                    _ if value.is_infinite() => return Err(PcaFit::infinite(name)),
                    Some(fill) => *to = fill - mean,
                    None => return Err(missing(name, "NaN")),
                }
            }
        }
        Ok(self.project_centred(&centred, rows))
    }

    /// `centred · weights`: `rows × k`, column-major.
    fn project_centred(&self, centred: &[f64], rows: usize) -> Vec<f64> {
        let (d, k) = (self.indices.len(), self.k);
        let mut projected = vec![0.0; rows * k];
        if rows > 0 {
            faer::linalg::matmul::matmul(
                MatMut::from_column_major_slice_mut(&mut projected, rows, k),
                Accum::Replace,
                MatRef::from_column_major_slice(centred, rows, d),
                MatRef::from_column_major_slice(&self.weights, d, k),
                1.0,
                Par::Seq,
            );
        }
        projected
    }
}

impl BoundStep for PcaMap {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let (batch, projected) = match &self.fills {
            Some(fills) => {
                let projected = self.project_filled(&batch, fills)?;
                (batch, projected)
            }
            None => {
                let (columns, mask) = read_inputs(&batch, &self.indices, &self.names, self.on_null)?;
                let batch = match &mask {
                    Some(mask) => filter_record_batch(&batch, mask)?,
                    None => batch,
                };
                (batch, self.project(&columns))
            }
        };
        let rows = batch.num_rows();
        let mut out: Vec<ArrayRef> = self.kept.iter().map(|&i| batch.column(i).clone()).collect();
        for i in 0..self.width {
            let array: ArrayRef = if i < self.k {
                let values = &projected[i * rows..(i + 1) * rows];
                match self.output_type {
                    PcaOutputType::Float64 => Arc::new(Float64Array::from(values.to_vec())),
                    PcaOutputType::Float32 => {
                        Arc::new(Float32Array::from_iter_values(values.iter().map(|&v| v as f32)))
                    }
                }
            } else {
                new_null_array(&self.output_type.data_type(), rows)
            };
            out.push(array);
        }
        Ok(RecordBatch::try_new(self.output.clone(), out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use arrow::datatypes::Float32Type;

    fn spec(components: Components) -> PcaSpec {
        PcaSpec {
            columns: vec!["x*".into()],
            components,
            max_components: None,
            output: "pc".into(),
            whiten: false,
            keep_inputs: false,
            output_type: PcaOutputType::Float64,
            on_null: OnNull::Error,
            fitted: None,
        }
    }

    /// A batch with float columns `x0`, `x1`, … (rows given row by row) and an `id` column.
    fn batch(rows: &[Vec<f64>]) -> RecordBatch {
        let d = rows.first().map_or(0, Vec::len);
        let mut fields = vec![Field::new("id", DataType::Int32, false)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int32Array::from_iter_values(0..rows.len() as i32))];
        for j in 0..d {
            fields.push(Field::new(format!("x{j}"), DataType::Float64, true));
            columns.push(Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r[j]))));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    /// Fits `fit` on `batches`, each folded into its own partial (one per worker) and merged.
    fn fit_params(fit: &PcaFit, batches: &[RecordBatch]) -> PcaParams {
        let erased = crate::fit::erase(fit.clone());
        serde_json::from_value(crate::fit::fit_in_process(erased.as_ref(), batches)).unwrap()
    }

    fn column(batch: &RecordBatch, name: &str) -> Vec<f64> {
        batch.column_by_name(name).unwrap().as_primitive::<Float64Type>().values().to_vec()
    }

    /// A deterministic pseudo-random number in [-1, 1).
    fn noise(state: &mut u64) -> f64 {
        *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance * (1.0 + b.abs())
    }

    /// Two latent directions with known variances: u1 = (0.6, -0.8) (variance 6, flipped to
    /// (-0.6, 0.8) by the sign rule), u2 = (0.8, 0.6) (variance 2/3), mean (10, -5).
    fn plane() -> Vec<Vec<f64>> {
        let (u1, u2) = ([0.6, -0.8], [0.8, 0.6]);
        [(3.0, 0.0), (-3.0, 0.0), (0.0, 1.0), (0.0, -1.0)]
            .iter()
            .map(|(a, b)| vec![10.0 + a * u1[0] + b * u2[0], -5.0 + a * u1[1] + b * u2[1]])
            .collect()
    }

    #[test]
    fn merged_partials_equal_the_whole_and_the_naive_covariance() {
        let mut state = 7;
        let d = 5;
        let rows: Vec<Vec<f64>> = (0..500)
            .map(|i| (0..d).map(|j| 1e9 + noise(&mut state) * (j + 1) as f64 + (i % 7) as f64).collect())
            .collect();
        let columns: Vec<Vec<f64>> = (0..d).map(|j| rows.iter().map(|r| r[j]).collect()).collect();
        let slices = |lo: usize, hi: usize| -> Vec<&[f64]> { columns.iter().map(|c| &c[lo..hi]).collect() };
        let mut whole = CoMoments::new(d);
        whole.fold(&slices(0, 500)).unwrap();
        for split in [vec![0, 1, 2, 500], vec![0, 77, 300, 301, 500], vec![0, 250, 500]] {
            let mut merged = CoMoments::new(d);
            for pair in split.windows(2) {
                let mut part = CoMoments::new(d);
                part.fold(&slices(pair[0], pair[1])).unwrap();
                merged.merge(&part).unwrap();
            }
            assert_eq!(merged.count, 500);
            for i in 0..d {
                assert!(close(merged.mean()[i], whole.mean()[i], 1e-15));
                for j in 0..d {
                    assert!(close(merged.at(i, j), whole.at(i, j), 1e-9), "{i},{j}");
                }
            }
        }
        // The naive covariance, computed around the exact offset so it loses nothing.
        for i in 0..d {
            for j in 0..d {
                let (ci, cj) = (&columns[i], &columns[j]);
                let mi = ci.iter().map(|v| v - 1e9).sum::<f64>() / 500.0;
                let mj = cj.iter().map(|v| v - 1e9).sum::<f64>() / 500.0;
                let naive: f64 = ci.iter().zip(cj).map(|(a, b)| (a - 1e9 - mi) * (b - 1e9 - mj)).sum();
                assert!(close(whole.at(i, j), naive, 1e-9), "{i},{j}: {} vs {naive}", whole.at(i, j));
            }
        }
    }

    #[test]
    fn a_known_plane_gives_its_components_signs_and_projections() {
        let data = plane();
        let fit = spec(Components::Count(2)).bind(&batch(&data).schema()).unwrap();
        let params = fit_params(&fit, &[batch(&data[..1]), batch(&data[1..3]), batch(&data[3..])]);
        let expected = [[-0.6, 0.8], [0.8, 0.6]];
        for (component, expected) in params.components.iter().zip(expected) {
            assert!(component.iter().zip(expected).all(|(a, b)| close(*a, b, 1e-12)), "{component:?}");
        }
        assert!(
            close(params.explained_variance[0], 6.0, 1e-12) && close(params.explained_variance[1], 2.0 / 3.0, 1e-12)
        );
        assert!(close(params.explained_variance_ratio[0], 0.9, 1e-12));
        assert!(close(params.mean[0], 10.0, 1e-14) && close(params.mean[1], -5.0, 1e-14));
        assert_eq!((params.n_samples, params.n_components), (4, 2));

        let step = fit.with_params(params.clone()).unwrap();
        let out = step.apply(batch(&data)).unwrap();
        let schema = out.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "pc_0", "pc_1"]);
        let (pc0, pc1) = (column(&out, "pc_0"), column(&out, "pc_1"));
        for (got, want) in pc0.iter().zip([-3.0, 3.0, 0.0, 0.0]).chain(pc1.iter().zip([0.0, 0.0, 1.0, -1.0])) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
    }

    #[test]
    fn three_dimensions_with_a_constant_and_a_duplicated_column_stay_finite() {
        // x0 = x2 (duplicated), x3 constant; x1 independent and smaller.
        let mut state = 3;
        let rows: Vec<Vec<f64>> = (0..200)
            .map(|_| {
                let a = noise(&mut state) * 4.0;
                vec![a, noise(&mut state), a, 7.5]
            })
            .collect();
        for whiten in [false, true] {
            let mut spec = spec(Components::Count(4));
            spec.whiten = whiten;
            let fit = spec.bind(&batch(&rows).schema()).unwrap();
            let params = fit_params(&fit, &[batch(&rows[..90]), batch(&rows[90..])]);
            assert!(params.explained_variance.iter().all(|v| v.is_finite() && *v >= 0.0));
            // The duplicated pair loads equally on the first component, the constant not at all.
            let first = &params.components[0];
            assert!((first[0] - first[2]).abs() < 1e-12 && first[0] > 0.7 && first[3].abs() < 1e-12, "{first:?}");
            // Two directions have no variance at all.
            assert!(params.explained_variance[2] < 1e-12 * params.explained_variance[0]);
            assert!(params.explained_variance[3] < 1e-12 * params.explained_variance[0]);
            let ratio: f64 = params.explained_variance_ratio.iter().sum();
            assert!(close(ratio, 1.0, 1e-12));
            let out = fit.with_params(params.clone()).unwrap().apply(batch(&rows)).unwrap();
            for i in 0..4 {
                let values = column(&out, &format!("pc_{i}"));
                assert!(values.iter().all(|v| v.is_finite()), "pc_{i}");
                if i >= 2 {
                    // Unscaled even when whitening: the projections stay at rounding level.
                    assert!(values.iter().all(|v| v.abs() < 1e-9), "pc_{i}: {values:?}");
                }
            }
        }
    }

    #[test]
    fn whitened_components_have_unit_variance() {
        let data = plane();
        let mut spec = spec(Components::Count(2));
        spec.whiten = true;
        spec.keep_inputs = true;
        spec.output_type = PcaOutputType::Float32;
        let fit = spec.bind(&batch(&data).schema()).unwrap();
        let params = fit_params(&fit, &[batch(&data)]);
        assert!(params.whiten);
        let out = fit.with_params(params.clone()).unwrap().apply(batch(&data)).unwrap();
        assert_eq!(out.num_columns(), 5);
        assert_eq!(out.schema().field(3).data_type(), &DataType::Float32);
        for name in ["pc_0", "pc_1"] {
            let values = out.column_by_name(name).unwrap().as_primitive::<Float32Type>();
            let variance: f64 = values.values().iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 3.0;
            assert!((variance - 1.0).abs() < 1e-6, "{name}: {variance}");
        }
        assert_eq!(column(&out, "x0"), column(&batch(&data), "x0"));
    }

    #[test]
    fn a_fraction_keeps_what_scikit_learn_keeps_and_nulls_the_rest() {
        let data = plane();
        let schema = batch(&data).schema();
        let err = spec(Components::Fraction(0.85)).bind(&schema).unwrap_err().to_string();
        assert!(err.contains("max_components"), "{err}");
        for (fraction, kept) in [(0.85, 1), (0.95, 2), (0.5, 1)] {
            let mut spec = spec(Components::Fraction(fraction));
            spec.max_components = Some(2);
            let fit = spec.bind(&schema).unwrap();
            assert!(fit.shape().output.field_with_name("pc_1").unwrap().is_nullable());
            let params = fit_params(&fit, &[batch(&data)]);
            assert_eq!(params.n_components, kept, "{fraction}");
            let out = fit.with_params(params.clone()).unwrap().apply(batch(&data)).unwrap();
            assert_eq!(out.column_by_name("pc_1").unwrap().null_count(), if kept == 1 { 4 } else { 0 });
            assert_eq!(out.column_by_name("pc_0").unwrap().null_count(), 0);
        }
        // A fraction needing more than max_components keeps max_components.
        let mut capped = spec(Components::Fraction(0.95));
        capped.max_components = Some(1);
        let fit = capped.bind(&schema).unwrap();
        assert_eq!(fit_params(&fit, &[batch(&data)]).n_components, 1);
        for bad in [0.0, 1.0, 1.5] {
            let mut spec = spec(Components::Fraction(bad));
            spec.max_components = Some(1);
            assert!(spec.bind(&schema).unwrap_err().to_string().contains("fraction"), "{bad}");
        }
    }

    #[test]
    fn components_parse_as_a_count_or_a_fraction() {
        let parse = |text: &str| serde_json::from_str::<crate::StepSpec>(text).unwrap();
        let crate::StepSpec::Pca(count) = parse(r#"{"op": "pca", "columns": ["x*"], "components": 3}"#) else {
            panic!()
        };
        assert_eq!(
            (count.components, count.output.as_str(), count.on_null),
            (Components::Count(3), "pc", OnNull::Error)
        );
        let crate::StepSpec::Pca(fraction) = parse(
            r#"{"op": "pca", "columns": ["x*"], "components": 0.9, "max_components": 4, "output_type": "float32", "on_null": "skip"}"#,
        ) else {
            panic!()
        };
        assert_eq!(fraction.components, Components::Fraction(0.9));
        assert_eq!((fraction.output_type, fraction.on_null), (PcaOutputType::Float32, OnNull::Skip));
        assert!(
            serde_json::from_str::<crate::StepSpec>(r#"{"op": "pca", "columns": [], "components": 1, "n": 2}"#)
                .is_err()
        );
    }

    #[test]
    fn binding_checks_counts_types_and_output_names() {
        let data = plane();
        let schema = batch(&data).schema();
        let err = spec(Components::Count(3)).bind(&schema).unwrap_err().to_string();
        assert!(err.contains("components = 3") && err.contains("(2)"), "{err}");
        assert!(spec(Components::Count(0)).bind(&schema).is_err());
        // An input of the output's name is fine when it is dropped.
        let mut dropped = spec(Components::Count(1));
        dropped.output = "x".into();
        let with_x_0 =
            Schema::new(vec![Field::new("x0", DataType::Float64, true), Field::new("x_0", DataType::Int32, true)]);
        assert!(dropped.bind(&Arc::new(with_x_0.clone())).is_ok());
        let mut clash = spec(Components::Count(1));
        clash.output = "x".into();
        clash.keep_inputs = true;
        let err = clash.bind(&Arc::new(with_x_0)).unwrap_err().to_string();
        assert!(err.contains("'x_0' already exists"), "{err}");
        let text = Schema::new(vec![Field::new("x0", DataType::Utf8, true)]);
        let err = spec(Components::Count(1)).bind(&Arc::new(text)).unwrap_err().to_string();
        assert!(err.contains("column 'x0'") && err.contains("numeric"), "{err}");
    }

    #[test]
    fn nulls_are_an_error_naming_the_column_unless_skipped() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x0", DataType::Float64, true),
            Field::new("x1", DataType::Int32, true),
        ]));
        let with_gaps = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Float64Array::from(vec![Some(1.0), Some(2.0), Some(f64::NAN), Some(4.0), Some(5.0)])),
                Arc::new(Int32Array::from(vec![Some(1), None, Some(3), Some(5), Some(4)])),
            ],
        )
        .unwrap();
        let fit = spec(Components::Count(1)).bind(&schema).unwrap();
        let err = fit.fold(&mut fit.new_partial(), &with_gaps).unwrap_err().to_string();
        assert!(err.contains("column 'x0' holds a NaN") && err.contains("on_null"), "{err}");
        let mut skip = spec(Components::Count(1));
        skip.on_null = OnNull::Skip;
        let fit = skip.bind(&schema).unwrap();
        assert!(!fit.shape().keeps_every_row);
        let params = fit_params(&fit, std::slice::from_ref(&with_gaps));
        assert_eq!(params.n_samples, 3);
        // Rows 0, 3, 4 remain: x0 = 1, 4, 5 and x1 = 1, 5, 4.
        assert!(close(params.mean[0], 10.0 / 3.0, 1e-15) && close(params.mean[1], 10.0 / 3.0, 1e-15));
        let out = fit.with_params(params.clone()).unwrap().apply(with_gaps).unwrap();
        assert_eq!(out.num_rows(), 3);
        assert_eq!(fit.shape().written, ["x0", "x1", "pc_0"]);
        let inf = batch(&[vec![1.0, f64::INFINITY], vec![2.0, 3.0]]);
        let fit = spec(Components::Count(1)).bind(&inf.schema()).unwrap();
        let err = fit.fold(&mut fit.new_partial(), &inf).unwrap_err().to_string();
        assert!(err.contains("column 'x1'") && err.contains("infinite"), "{err}");
        let mut one = fit.new_partial();
        fit.fold(&mut one, &batch(&[vec![1.0, 2.0]])).unwrap();
        assert!(fit.finish(one).unwrap_err().to_string().contains("at least 2"));
    }

    #[test]
    fn reused_parameters_must_fit_the_step() {
        let data = plane();
        let schema = batch(&data).schema();
        let fit = spec(Components::Count(2)).bind(&schema).unwrap();
        let params = serde_json::to_value(fit_params(&fit, &[batch(&data)])).unwrap();
        let fit = crate::fit::erase(fit);
        let err = crate::fit::erase(spec(Components::Count(1)).bind(&schema).unwrap())
            .with_params(&params)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hold 2 components") && err.contains("components = 1"), "{err}");
        let mut whiten = spec(Components::Count(2));
        whiten.whiten = true;
        let err = crate::fit::erase(whiten.bind(&schema).unwrap()).with_params(&params).unwrap_err().to_string();
        assert!(err.contains("whiten = false"), "{err}");
        let mut other = spec(Components::Count(1));
        other.columns = vec!["x1".into()];
        let err = crate::fit::erase(other.bind(&schema).unwrap()).with_params(&params).unwrap_err().to_string();
        assert!(err.contains("[x0, x1]") && err.contains("[x1]"), "{err}");
        let mut fraction = spec(Components::Fraction(0.5));
        fraction.max_components = Some(2);
        assert!(crate::fit::erase(fraction.bind(&schema).unwrap()).with_params(&params).is_ok());
        let mut broken = params.clone();
        broken["mean"] = serde_json::json!([1.0]);
        assert!(fit.with_params(&broken).unwrap_err().to_string().contains("malformed"));
    }

    #[test]
    fn a_thousand_and_twenty_four_columns_fit() {
        let (d, rows) = (1024, 1500);
        let mut state = 11;
        // Column j is a mix of 8 latent factors plus noise: rank-8 structure in 1,024 dims.
        let factors: Vec<Vec<f64>> = (0..8).map(|_| (0..rows).map(|_| noise(&mut state) * 10.0).collect()).collect();
        let mixing: Vec<f64> = (0..d * 8).map(|_| noise(&mut state)).collect();
        let columns: Vec<Vec<f64>> = (0..d)
            .map(|j| {
                (0..rows)
                    .map(|i| (0..8).map(|f| factors[f][i] * mixing[j * 8 + f]).sum::<f64>() + noise(&mut state) * 0.01)
                    .collect()
            })
            .collect();
        let fields: Vec<Field> = (0..d).map(|j| Field::new(format!("x{j}"), DataType::Float64, false)).collect();
        let arrays: Vec<ArrayRef> =
            columns.iter().map(|c| Arc::new(Float64Array::from(c.clone())) as ArrayRef).collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
        let fit = spec(Components::Count(8)).bind(&batch.schema()).unwrap();
        let params = fit_params(&fit, &[batch.slice(0, 700), batch.slice(700, 800)]);
        let ratio: f64 = params.explained_variance_ratio.iter().sum();
        assert!(ratio > 0.999, "{ratio}");
        for (a, component) in params.components.iter().enumerate() {
            let norm: f64 = component.iter().map(|v| v * v).sum();
            assert!(close(norm, 1.0, 1e-10));
            let other: f64 = component.iter().zip(&params.components[(a + 1) % 8]).map(|(x, y)| x * y).sum();
            assert!(other.abs() < 1e-10);
        }
        let out = fit.with_params(params.clone()).unwrap().apply(batch).unwrap();
        assert_eq!(out.num_columns(), 8);
        assert!(column(&out, "pc_7").iter().all(|v| v.is_finite()));
    }
}
