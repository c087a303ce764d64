//! `bucketize`: numbers to the index of the bucket they fall in, between fixed boundaries
//! (NumPy's `digitize`, Spark's `Bucketizer` with open ends) or boundaries fitted on the
//! data (scikit-learn's `KBinsDiscretizer` with `encode="ordinal"`).
//!
//! ```toml
//! [[step]]
//! op = "bucketize"
//! columns = ["age"]
//! boundaries = [18, 30, 50, 65]   # strictly increasing
//! # output = "{col}_bucket"       # keep the raw column (see `output_columns`)
//!
//! [[step]]
//! op = "bucketize"
//! columns = ["income", "f_*"]
//! n_bins = 5                      # fitted per column
//! strategy = "quantile"           # or "uniform"
//! # exact = true                  # false: the quantile sketch (rank error 0.001) on large data
//! # fitted = "…"
//! ```
//!
//! With boundaries `b_0 < b_1 < … < b_{n-1}`, a value `x` becomes the number of boundaries
//! at or below it: `0` for `x < b_0`, `i` for `b_{i-1} <= x < b_i`, `n` for `x >= b_{n-1}`,
//! exactly `numpy.digitize(x, boundaries)` (`right=False`), as a `Float64`. A null, or a
//! NaN (which has no bucket), becomes null. Integer columns are compared as `Float64`.
//!
//! Fitted (`n_bins`), each column's boundaries are the inner edges scikit-learn's
//! `KBinsDiscretizer` finds: `uniform`, `n_bins` equal widths between the column's minimum
//! and maximum (`numpy.linspace`); `quantile`, the `numpy.percentile` (linear) of the
//! column's present values at `linspace(0, 100, n_bins + 1)`, exact at any size by default,
//! with the edges closer than 1e-8 to the one before dropped (so a column of few distinct
//! values gets fewer buckets, as in scikit-learn). A constant column has one bucket, 0.
//! Nulls and NaN are ignored by the fit; an infinity is an error naming the column
//! (scikit-learn refuses it too).
//!
//! `encode = "onehot"` writes each bucket as its own 0/1 column instead
//! ([`BucketsOneHot`], `KBinsDiscretizer(encode="onehot-dense")`); fitted, the number of
//! buckets is known only once the boundaries are, so the step is open
//! ([`crate::fit::FitShape::open`]) until then.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::exact_quantile::ColumnQuantiles;
use crate::fit::{Fit, FitShape};
use crate::fit_columns::{
    NumericColumns, PerColumn, all_missing, as_f64, numeric_columns, numeric_step_schema, replace_columns,
    schema_with_types,
};
use crate::onehot::MAX_ONEHOT_COLUMNS;
use crate::{BoundStep, OpError};

/// How fitted boundaries are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Uniform,
    #[default]
    Quantile,
}

/// `op = "bucketize"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketizeSpec {
    pub columns: Vec<String>,
    /// Fixed boundaries, the same for every column.
    #[serde(default)]
    pub boundaries: Option<Vec<f64>>,
    /// Fitted boundaries: this many buckets per column (at most).
    #[serde(default)]
    pub n_bins: Option<usize>,
    #[serde(default)]
    pub strategy: Strategy,
    /// `quantile`: exact quantiles at any size (the default), or the sketch's.
    #[serde(default = "crate::fit_columns::default_true")]
    pub exact: bool,
    /// Reuse the boundaries of an earlier run's `_weir/fitted.json`.
    #[serde(default)]
    pub fitted: Option<String>,
    /// Keep the input columns; see [`crate::output_columns`].
    #[serde(default)]
    pub output: Option<String>,
    /// `ordinal` (the bucket's index) or `onehot` (a 0/1 column per bucket).
    #[serde(default)]
    pub encode: Encode,
    /// The fitted boundaries, once known: set by the planner, never by the job, so that the
    /// steps after a fitted `encode = "onehot"` can be bound to the columns it makes.
    #[serde(skip)]
    pub known: Option<BucketizeParams>,
}

/// How a bucket is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encode {
    #[default]
    Ordinal,
    #[serde(rename = "onehot")]
    OneHot,
}

/// The most boundaries a step may have, and the most buckets it may fit.
const MAX_BOUNDARIES: usize = 10_000;

/// What [`BucketizeSpec::bind`] gives: fixed boundaries map at once; `n_bins` are fitted.
#[derive(Debug)]
pub enum BoundBucketize {
    Fixed(Box<dyn BoundStep>),
    Fitted(BucketizeFit),
}

impl BucketizeSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<BoundBucketize, OpError> {
        match (&self.boundaries, self.n_bins) {
            (Some(boundaries), None) => {
                if self.fitted.is_some() {
                    return Err(OpError::InvalidSpec(
                        "fixed boundaries are not fitted, so they take no `fitted`".into(),
                    ));
                }
                let increasing = boundaries.windows(2).all(|pair| pair[0] < pair[1]);
                if boundaries.is_empty()
                    || boundaries.len() > MAX_BOUNDARIES
                    || !increasing
                    || boundaries.iter().any(|b| b.is_nan())
                {
                    return Err(OpError::InvalidSpec(format!(
                        "boundaries must be 1 to {MAX_BOUNDARIES} strictly increasing numbers"
                    )));
                }
                let indices = numeric_columns(&self.columns, input, "bucketize")?;
                let buckets = Bucketize::new(input, &indices, vec![boundaries.clone(); indices.len()]);
                Ok(BoundBucketize::Fixed(match self.encode {
                    Encode::Ordinal => Box::new(buckets),
                    Encode::OneHot => Box::new(BucketsOneHot::new(buckets, input)?),
                }))
            }
            (None, Some(n_bins)) => {
                if !(2..=MAX_BOUNDARIES).contains(&n_bins) {
                    return Err(OpError::InvalidSpec(format!(
                        "n_bins must be within 2 and {MAX_BOUNDARIES}, not {n_bins}"
                    )));
                }
                let columns = numeric_step_schema(&self.columns, input, "bucketize")?;
                let output = schema_with_types(
                    input,
                    &columns.indices.iter().map(|&i| (i, DataType::Float64)).collect::<Vec<_>>(),
                );
                let levels = match self.strategy {
                    Strategy::Uniform => vec![0.0, 1.0],
                    // numpy.linspace(0, 100, n + 1), then percentile's division by 100.
                    Strategy::Quantile => {
                        let step = 100.0 / n_bins as f64;
                        (0..=n_bins).map(|i| if i == n_bins { 1.0 } else { i as f64 * step / 100.0 }).collect()
                    }
                };
                let columns = NumericColumns { output, ..columns };
                let mut fit = BucketizeFit {
                    columns,
                    n_bins,
                    strategy: self.strategy,
                    levels,
                    exact: self.exact,
                    onehot: (self.encode == Encode::OneHot).then(|| OneHotShape { input: input.clone(), known: None }),
                };
                if let (Some(onehot), Some(params)) = (&fit.onehot, &self.known) {
                    let known = fit.with_params(params.clone())?.output_schema();
                    fit.onehot = Some(OneHotShape { known: Some(known), ..onehot.clone() });
                }
                Ok(BoundBucketize::Fitted(fit))
            }
            _ => Err(OpError::InvalidSpec("bucketize takes either `boundaries` or `n_bins`".into())),
        }
    }
}

/// A `bucketize` step with boundaries to fit.
#[derive(Debug)]
pub struct BucketizeFit {
    columns: NumericColumns,
    n_bins: usize,
    strategy: Strategy,
    /// The quantiles the fit needs (fractions): `[0, 1]` for `uniform`.
    levels: Vec<f64>,
    exact: bool,
    /// With `encode = "onehot"`: the step's input, and its output once the boundaries are
    /// known (until then the step is open: [`FitShape::open`]).
    onehot: Option<OneHotShape>,
}

#[derive(Debug, Clone)]
struct OneHotShape {
    input: SchemaRef,
    known: Option<SchemaRef>,
}

/// The fitted boundaries, as saved in `fitted.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketizeParams {
    n_bins: usize,
    strategy: Strategy,
    #[serde(flatten)]
    columns: PerColumn<ColumnBoundaries>,
}

/// One column's fitted inner boundaries (scikit-learn's `bin_edges_[j][1:-1]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ColumnBoundaries {
    boundaries: Vec<f64>,
    count: u64,
    exact: bool,
}

impl Fit for BucketizeFit {
    type Partial = ColumnQuantiles;
    type Params = BucketizeParams;

    fn shape(&self) -> FitShape {
        let shape = self.columns.shape();
        match &self.onehot {
            None => shape,
            Some(OneHotShape { input, known: None }) => FitShape { output: input.clone(), open: true, ..shape },
            Some(OneHotShape { input, known: Some(output) }) => {
                let added = output.fields().iter().filter(|f| input.field_with_name(f.name()).is_err());
                let mut written = shape.written.clone();
                written.extend(added.map(|f| f.name().clone()));
                FitShape { output: output.clone(), written, ..shape }
            }
        }
    }

    fn new_partial(&self) -> ColumnQuantiles {
        ColumnQuantiles::new(self.columns.names.len())
    }

    fn fold(&self, partial: &mut ColumnQuantiles, batch: &RecordBatch) -> Result<(), OpError> {
        self.columns.fold_quantiles(batch, partial, Some("bucket boundaries"))
    }

    fn merge(&self, into: &mut ColumnQuantiles, other: ColumnQuantiles) -> Result<(), OpError> {
        into.merge(other)
    }

    fn next_pass(&self, merged: &mut ColumnQuantiles) -> Result<Option<ColumnQuantiles>, OpError> {
        Ok(if self.exact { merged.next_pass(&self.levels) } else { None })
    }

    fn finish(&self, partial: ColumnQuantiles) -> Result<BucketizeParams, OpError> {
        let mut fitted = Vec::with_capacity(self.columns.names.len());
        for (position, column) in self.columns.names.iter().enumerate() {
            let mut edges = Vec::with_capacity(self.levels.len());
            let (mut count, mut exact) = (0, true);
            for &level in &self.levels {
                let found = partial.found(position, level);
                edges.push(found.value.ok_or_else(|| all_missing(column, "bucket boundaries"))?);
                (count, exact) = (found.count, found.exact);
            }
            let (low, high) = (edges[0], edges[edges.len() - 1]);
            let boundaries = if low == high {
                Vec::new() // a constant column: one bucket
            } else {
                let edges = match self.strategy {
                    // numpy.linspace(low, high, n + 1): i * step + low, the last exactly high.
                    Strategy::Uniform => {
                        let step = (high - low) / self.n_bins as f64;
                        (0..=self.n_bins).map(|i| if i == self.n_bins { high } else { i as f64 * step + low }).collect()
                    }
                    // Drop each edge within 1e-8 of the one before it (numpy.ediff1d).
                    Strategy::Quantile => {
                        let mut kept = vec![edges[0]];
                        kept.extend(edges.windows(2).filter(|pair| pair[1] - pair[0] > 1e-8).map(|pair| pair[1]));
                        kept
                    }
                };
                // Inner edges only; a range narrower than the 1e-8 rule keeps one edge, so no
                // boundary: one bucket, as scikit-learn's `searchsorted` over none gives.
                edges.get(1..edges.len().saturating_sub(1)).map(<[f64]>::to_vec).unwrap_or_default()
            };
            fitted.push(ColumnBoundaries { boundaries, count, exact });
        }
        Ok(BucketizeParams {
            n_bins: self.n_bins,
            strategy: self.strategy,
            columns: PerColumn::new(&self.columns.names, fitted),
        })
    }

    fn with_params(&self, params: BucketizeParams) -> Result<Box<dyn BoundStep>, OpError> {
        if params.n_bins != self.n_bins || params.strategy != self.strategy {
            return Err(OpError::InvalidSpec(format!(
                "the fitted boundaries are for n_bins = {} ({:?}); this step asks for n_bins = {} ({:?})",
                params.n_bins, params.strategy, self.n_bins, self.strategy
            )));
        }
        let boundaries = params.columns.ordered(&self.columns.names)?.iter().map(|c| c.boundaries.clone()).collect();
        let buckets =
            Bucketize { indices: self.columns.indices.clone(), boundaries, output: self.columns.output.clone() };
        Ok(match &self.onehot {
            None => Box::new(buckets),
            Some(onehot) => Box::new(BucketsOneHot::new(buckets, &onehot.input)?),
        })
    }
}

/// `encode = "onehot"`: each bucketized column replaced, where it stands, by one `Float64`
/// column per bucket, `{col}_0.0` … (the names `KBinsDiscretizer(encode="onehot-dense")`
/// gives), 1.0 in the row's bucket and 0.0 in the others; a null or NaN, which has no
/// bucket, is 0.0 in all of them (scikit-learn refuses it).
#[derive(Debug)]
pub struct BucketsOneHot {
    buckets: Bucketize,
    output: SchemaRef,
}

impl BucketsOneHot {
    fn new(buckets: Bucketize, input: &SchemaRef) -> Result<BucketsOneHot, OpError> {
        let widest = buckets.boundaries.iter().map(|b| b.len() + 1).max().unwrap_or(0);
        if widest > MAX_ONEHOT_COLUMNS {
            return Err(OpError::InvalidSpec(format!(
                "encode = \"onehot\" would make {widest} columns of one column's buckets, more than {MAX_ONEHOT_COLUMNS}; use fewer buckets or encode = \"ordinal\""
            )));
        }
        let mut fields = Vec::new();
        for (index, field) in input.fields().iter().enumerate() {
            match buckets.indices.iter().position(|&i| i == index) {
                None => fields.push(field.as_ref().clone()),
                Some(position) => {
                    for bucket in 0..=buckets.boundaries[position].len() {
                        fields.push(Field::new(format!("{}_{bucket}.0", field.name()), DataType::Float64, false));
                    }
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(clash) = fields.iter().find(|field| !seen.insert(field.name().clone())) {
            return Err(OpError::InvalidSpec(format!(
                "the one-hot bucket column '{}' would have the name of another column; rename one of them first",
                clash.name()
            )));
        }
        let output = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok(BucketsOneHot { buckets, output })
    }
}

impl BoundStep for BucketsOneHot {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let rows = batch.num_rows();
        let coded = self.buckets.apply(batch)?;
        let mut columns = Vec::with_capacity(self.output.fields().len());
        for (index, column) in coded.columns().iter().enumerate() {
            let Some(position) = self.buckets.indices.iter().position(|&i| i == index) else {
                columns.push(column.clone());
                continue;
            };
            let mut indicators = vec![vec![0.0f64; rows]; self.buckets.boundaries[position].len() + 1];
            for (row, bucket) in column.as_primitive::<Float64Type>().iter().enumerate() {
                if let Some(bucket) = bucket {
                    indicators[bucket as usize][row] = 1.0;
                }
            }
            columns.extend(indicators.into_iter().map(|values| Arc::new(Float64Array::from(values)) as ArrayRef));
        }
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }
}

/// A `bucketize` step bound to its input, with each column's boundaries.
#[derive(Debug)]
pub struct Bucketize {
    indices: Vec<usize>,
    boundaries: Vec<Vec<f64>>,
    output: SchemaRef,
}

impl Bucketize {
    fn new(input: &SchemaRef, indices: &[usize], boundaries: Vec<Vec<f64>>) -> Bucketize {
        let output = schema_with_types(input, &indices.iter().map(|&i| (i, DataType::Float64)).collect::<Vec<_>>());
        Bucketize { indices: indices.to_vec(), boundaries, output }
    }
}

impl BoundStep for Bucketize {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mut replacements = Vec::with_capacity(self.indices.len());
        for (&index, boundaries) in self.indices.iter().zip(&self.boundaries) {
            let values = as_f64(batch.column(index))?;
            let buckets: Float64Array = values
                .iter()
                .map(|value| value.filter(|x| !x.is_nan()).map(|x| boundaries.partition_point(|&b| b <= x) as f64))
                .collect();
            replacements.push((index, Arc::new(buckets) as ArrayRef));
        }
        replace_columns(&batch, &self.output, replacements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_as_numpy_digitize_with_nulls_and_nan_null() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        let values = vec![Some(-5.0), Some(18.0), Some(29.9), Some(30.0), Some(99.0), None, Some(f64::NAN)];
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(values))]).unwrap();
        let spec: BucketizeSpec =
            serde_json::from_value(serde_json::json!({ "columns": ["x"], "boundaries": [18.0, 30.0, 65.0] })).unwrap();
        let BoundBucketize::Fixed(step) = spec.bind(&schema).unwrap() else { panic!("not fixed") };
        let out = step.apply(batch).unwrap();
        let got: Vec<Option<f64>> = out.column(0).as_primitive::<Float64Type>().iter().collect();
        assert_eq!(got, vec![Some(0.0), Some(1.0), Some(1.0), Some(2.0), Some(3.0), None, None]);
        let bad = BucketizeSpec { boundaries: Some(vec![3.0, 3.0]), ..spec.clone() };
        assert!(bad.bind(&schema).unwrap_err().to_string().contains("strictly increasing"));
        let both = BucketizeSpec { n_bins: Some(3), ..spec };
        assert!(both.bind(&schema).unwrap_err().to_string().contains("either"));
    }

    /// Quantile edges closer than 1e-8 to each other over the whole range leave one edge:
    /// one bucket, not a panic (found by the job fuzz target).
    #[test]
    fn a_range_narrower_than_the_edge_rule_is_one_bucket() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        let values: Vec<Option<f64>> = (0..40).map(|i| Some(1.0 + i as f64 * 1e-11)).collect();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(values))]).unwrap();
        let spec: BucketizeSpec =
            serde_json::from_value(serde_json::json!({ "columns": ["x"], "n_bins": 5, "strategy": "quantile" }))
                .unwrap();
        let BoundBucketize::Fitted(fit) = spec.bind(&schema).unwrap() else { panic!("not fitted") };
        let fit = crate::fit::erase(fit);
        let params = crate::fit::fit_in_process(fit.as_ref(), std::slice::from_ref(&batch));
        let out = fit.with_params(&params).unwrap().apply(batch).unwrap();
        assert!(out.column(0).as_primitive::<Float64Type>().values().iter().all(|&b| b == 0.0));
    }
}
