//! `minmax`: rescale to a range, like scikit-learn's `MinMaxScaler`.
//!
//! ```toml
//! [[step]]
//! op = "minmax"
//! columns = ["age", "income"]
//! range = [0.0, 1.0]          # the default; scikit-learn's feature_range
//! # fitted = "s3://…/_weir/fitted.json"
//! ```
//!
//! Each value becomes `x * scale + offset` with `scale = (hi - lo) / (max - min)` and
//! `offset = lo - min * scale`, computed in that order, as scikit-learn does; a constant
//! column (`max - min` below 10 ulps) gets `scale = hi - lo`. Values outside the fitted
//! `[min, max]` (when parameters are reused on other data) map outside the range, as in
//! scikit-learn with `clip=False`. Nulls and NaN are ignored by the fit and kept; an
//! infinity or an all-missing column is an error naming the column. Integer columns
//! become `Float64`; float columns keep their width.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::fit::{Fit, FitShape};
use crate::fit_columns::{FloatTransform, NumericColumns, PerColumn, all_missing, no_infinity, numeric_step_schema};
use crate::stats::Range;
use crate::{BoundStep, OpError};

fn default_range() -> [f64; 2] {
    [0.0, 1.0]
}

/// `op = "minmax"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinMaxSpec {
    pub columns: Vec<String>,
    /// The target range `[lo, hi]`, `lo < hi`.
    #[serde(default = "default_range")]
    pub range: [f64; 2],
    /// Reuse the minima and maxima of an earlier run's `_weir/fitted.json`.
    #[serde(default)]
    pub fitted: Option<String>,
    /// Keep the input columns and write the results to new ones named by this pattern
    /// (`"{col}_z"`); see [`crate::output_columns`].
    #[serde(default)]
    pub output: Option<String>,
}

impl MinMaxSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<MinMaxFit, OpError> {
        let [lo, hi] = self.range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(OpError::InvalidSpec(format!("range = [{lo}, {hi}] must be two finite numbers, low < high")));
        }
        Ok(MinMaxFit { columns: numeric_step_schema(&self.columns, input, "minmax")?, range: self.range })
    }
}

/// A `minmax` step bound to its input, before its ranges are fitted.
#[derive(Debug, Clone)]
pub struct MinMaxFit {
    columns: NumericColumns,
    range: [f64; 2],
}

impl MinMaxFit {
    pub(crate) fn columns(&self) -> &NumericColumns {
        &self.columns
    }

    /// One transform per column, in the step's column order; parameters fitted for another
    /// target range are an error.
    pub(crate) fn transforms(&self, params: &MinMaxParams) -> Result<Vec<FloatTransform>, OpError> {
        if params.range != self.range {
            return Err(OpError::InvalidSpec(format!(
                "the fitted parameters are for range {:?}, this step asks for {:?}",
                params.range, self.range
            )));
        }
        let ranges = params.columns.ordered(&self.columns.names)?;
        Ok(ranges.iter().map(|r| FloatTransform::Linear { scale: r.scale, offset: r.offset }).collect())
    }
}

/// The fitted parameters, as saved in `fitted.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinMaxParams {
    /// The target range they were fitted for.
    range: [f64; 2],
    #[serde(flatten)]
    columns: PerColumn<ColumnRange>,
}

/// One column's fitted parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ColumnRange {
    data_min: f64,
    data_max: f64,
    scale: f64,
    offset: f64,
    count: u64,
}

impl Fit for MinMaxFit {
    type Partial = Vec<Range>;
    type Params = MinMaxParams;

    fn shape(&self) -> FitShape {
        self.columns.shape()
    }

    fn new_partial(&self) -> Vec<Range> {
        vec![Range::default(); self.columns.names.len()]
    }

    fn fold(&self, partial: &mut Vec<Range>, batch: &RecordBatch) -> Result<(), OpError> {
        self.columns.fold_each(batch, partial, Range::fold)
    }

    fn merge(&self, into: &mut Vec<Range>, other: Vec<Range>) -> Result<(), OpError> {
        into.iter_mut().zip(&other).for_each(|(a, b)| a.merge(b));
        Ok(())
    }

    fn finish(&self, partial: Vec<Range>) -> Result<MinMaxParams, OpError> {
        let [lo, hi] = self.range;
        let mut fitted = Vec::new();
        for (range, column) in partial.iter().zip(&self.columns.names) {
            if range.count == 0 {
                return Err(all_missing(column, "minimum and maximum"));
            }
            no_infinity(column, "range", range.min.is_infinite() || range.max.is_infinite())?;
            let data_range = range.max - range.min;
            let data_range = if data_range < 10.0 * f64::EPSILON { 1.0 } else { data_range };
            let scale = (hi - lo) / data_range;
            let offset = lo - range.min * scale;
            fitted.push(ColumnRange { data_min: range.min, data_max: range.max, scale, offset, count: range.count });
        }
        Ok(MinMaxParams { range: self.range, columns: PerColumn::new(&self.columns.names, fitted) })
    }

    fn with_params(&self, params: MinMaxParams) -> Result<Box<dyn BoundStep>, OpError> {
        Ok(self.columns.map(self.transforms(&params)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Float64Array};
    use arrow::datatypes::{DataType, Field, Float64Type, Schema};
    use std::sync::Arc;

    #[test]
    fn scales_to_the_range_and_reuse_checks_the_range() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Float64Array::from(vec![Some(2.0), None, Some(6.0), Some(4.0)]))],
        )
        .unwrap();
        let spec = MinMaxSpec { columns: vec!["x".into()], range: [-1.0, 1.0], fitted: None, output: None };
        let fit = crate::fit::erase(spec.bind(&schema).unwrap());
        let mut partial = fit.new_partial();
        fit.fold(&mut partial, &batch).unwrap();
        let params = fit.finish(partial).unwrap();
        let out = fit.with_params(&params).unwrap().apply(batch).unwrap();
        let x = out.column(0).as_primitive::<Float64Type>();
        assert_eq!((x.value(0), x.value(2), x.value(3)), (-1.0, 1.0, 0.0));
        assert!(x.is_null(1));
        let other = crate::fit::erase(MinMaxSpec { range: [0.0, 1.0], ..spec }.bind(&schema).unwrap());
        let err = other.with_params(&params).unwrap_err().to_string();
        assert!(err.contains("range"), "{err}");
    }
}
