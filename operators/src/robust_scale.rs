//! `robust_scale`: centre on the median and scale by the interquartile range, like
//! scikit-learn's `RobustScaler`.
//!
//! ```toml
//! [[step]]
//! op = "robust_scale"
//! columns = ["income", "f_*"]
//! # quantile_range = [25.0, 75.0]   # percentiles of the range, as scikit-learn
//! # with_centering = true
//! # with_scaling = true
//! # exact = true                     # false: the quantile sketch (rank error 0.001) on large data
//! # output = "{col}_robust"          # keep the raw column (see `output_columns`)
//! # fitted = "…"
//! ```
//!
//! Each value becomes `(x - median) / (q_high - q_low)`, the quantiles being
//! `numpy.nanpercentile`'s (linear interpolation) of the column's present values, exact at
//! any size by default (later passes find the order statistics, [`crate::exact_quantile`]).
//! A column whose range is 0 is scaled by 1, as scikit-learn does. Nulls and NaN are ignored
//! by the fit and kept; an infinity is an error naming the column (scikit-learn refuses it
//! too). Integer columns become `Float64`; float columns keep their width.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::exact_quantile::ColumnQuantiles;
use crate::fit::{Fit, FitShape};
use crate::fit_columns::{FloatTransform, NumericColumns, PerColumn, all_missing, numeric_step_schema};
use crate::{BoundStep, OpError};

fn default_range() -> [f64; 2] {
    [25.0, 75.0]
}

/// `op = "robust_scale"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobustScaleSpec {
    pub columns: Vec<String>,
    /// The percentiles whose distance is the scale, `0 <= low < high <= 100`.
    #[serde(default = "default_range")]
    pub quantile_range: [f64; 2],
    #[serde(default = "crate::fit_columns::default_true")]
    pub with_centering: bool,
    #[serde(default = "crate::fit_columns::default_true")]
    pub with_scaling: bool,
    /// Exact quantiles at any size (the default), or the sketch's beyond 8,192 values.
    #[serde(default = "crate::fit_columns::default_true")]
    pub exact: bool,
    /// Reuse the medians and ranges of an earlier run's `_weir/fitted.json`.
    #[serde(default)]
    pub fitted: Option<String>,
    /// Keep the input columns; see [`crate::output_columns`].
    #[serde(default)]
    pub output: Option<String>,
}

impl RobustScaleSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<RobustScaleFit, OpError> {
        let [low, high] = self.quantile_range;
        if !(0.0..=100.0).contains(&low) || !(0.0..=100.0).contains(&high) || low >= high {
            return Err(OpError::InvalidSpec(format!(
                "quantile_range = [{low}, {high}] must be percentiles within [0, 100], low < high"
            )));
        }
        Ok(RobustScaleFit {
            columns: numeric_step_schema(&self.columns, input, "robust_scale")?,
            quantiles: [low / 100.0, 0.5, high / 100.0],
            with_centering: self.with_centering,
            with_scaling: self.with_scaling,
            exact: self.exact,
        })
    }
}

/// A `robust_scale` step bound to its input, before its medians and ranges are fitted.
#[derive(Debug, Clone)]
pub struct RobustScaleFit {
    columns: NumericColumns,
    /// `[low, median, high]` as fractions.
    quantiles: [f64; 3],
    with_centering: bool,
    with_scaling: bool,
    exact: bool,
}

/// The fitted parameters, as saved in `fitted.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustScaleParams {
    /// `[low, median, high]` quantiles (fractions) they were fitted at.
    quantiles: [f64; 3],
    with_centering: bool,
    with_scaling: bool,
    #[serde(flatten)]
    columns: PerColumn<ColumnRobust>,
}

/// One column's parameters: what is subtracted (`center`) and what divides (`scale`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ColumnRobust {
    center: f64,
    scale: f64,
    /// The interquartile (or requested) range before a zero range became 1.
    range: f64,
    count: u64,
    exact: bool,
}

impl Fit for RobustScaleFit {
    type Partial = ColumnQuantiles;
    type Params = RobustScaleParams;

    fn shape(&self) -> FitShape {
        self.columns.shape()
    }

    fn new_partial(&self) -> ColumnQuantiles {
        ColumnQuantiles::new(self.columns.names.len())
    }

    fn fold(&self, partial: &mut ColumnQuantiles, batch: &RecordBatch) -> Result<(), OpError> {
        self.columns.fold_quantiles(batch, partial, Some("median and quantile range"))
    }

    fn merge(&self, into: &mut ColumnQuantiles, other: ColumnQuantiles) -> Result<(), OpError> {
        into.merge(other)
    }

    fn next_pass(&self, merged: &mut ColumnQuantiles) -> Result<Option<ColumnQuantiles>, OpError> {
        Ok(if self.exact { merged.next_pass(&self.quantiles) } else { None })
    }

    fn finish(&self, partial: ColumnQuantiles) -> Result<RobustScaleParams, OpError> {
        let [low, median, high] = self.quantiles;
        let mut fitted = Vec::new();
        for (position, column) in self.columns.names.iter().enumerate() {
            let found = |q: f64| {
                let found = partial.found(position, q);
                found
                    .value
                    .map(|value| (value, found.count, found.exact))
                    .ok_or_else(|| all_missing(column, "quantiles"))
            };
            let (center, count, exact) = found(median)?;
            let range = found(high)?.0 - found(low)?.0;
            fitted.push(ColumnRobust {
                center: if self.with_centering { center } else { 0.0 },
                // scikit-learn's `_handle_zeros_in_scale`: a zero range scales by 1.
                scale: if !self.with_scaling || range == 0.0 { 1.0 } else { range },
                range,
                count,
                exact,
            });
        }
        Ok(RobustScaleParams {
            quantiles: self.quantiles,
            with_centering: self.with_centering,
            with_scaling: self.with_scaling,
            columns: PerColumn::new(&self.columns.names, fitted),
        })
    }

    fn with_params(&self, params: RobustScaleParams) -> Result<Box<dyn BoundStep>, OpError> {
        if params.quantiles != self.quantiles
            || params.with_centering != self.with_centering
            || params.with_scaling != self.with_scaling
        {
            return Err(OpError::InvalidSpec(format!(
                "the fitted parameters are for quantiles {:?} (centering {}, scaling {}); this step asks for {:?} \
                 (centering {}, scaling {})",
                params.quantiles,
                params.with_centering,
                params.with_scaling,
                self.quantiles,
                self.with_centering,
                self.with_scaling
            )));
        }
        let transforms = params
            .columns
            .ordered(&self.columns.names)?
            .iter()
            .map(|c| FloatTransform::Standardize { mean: c.center, scale: c.scale })
            .collect();
        Ok(self.columns.map(transforms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Float64Array};
    use arrow::datatypes::{DataType, Field, Float64Type, Schema};
    use std::sync::Arc;

    fn batch(values: Vec<Option<f64>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(values))]).unwrap()
    }

    fn spec(range: [f64; 2]) -> RobustScaleSpec {
        serde_json::from_value(serde_json::json!({ "columns": ["x"], "quantile_range": range })).unwrap()
    }

    fn fitted(spec: &RobustScaleSpec, values: Vec<Option<f64>>) -> (serde_json::Value, Box<dyn BoundStep>) {
        let fit = crate::fit::erase(spec.bind(&batch(vec![]).schema()).unwrap());
        let mut partial = fit.new_partial();
        fit.fold(&mut partial, &batch(values)).unwrap();
        let params = fit.finish(partial).unwrap();
        let step = fit.with_params(&params).unwrap();
        (params, step)
    }

    #[test]
    fn median_and_quartiles_like_numpy_and_nulls_kept() {
        // numpy.nanpercentile(range(11), [25, 50, 75]) = [2.5, 5, 7.5].
        let values: Vec<Option<f64>> = (0..=10).map(|i| Some(i as f64)).chain([None, Some(f64::NAN)]).collect();
        let (params, step) = fitted(&spec([25.0, 75.0]), values.clone());
        assert_eq!(params["columns"]["x"]["center"], serde_json::json!(5.0));
        assert_eq!(params["columns"]["x"]["scale"], serde_json::json!(5.0));
        let out = step.apply(batch(values)).unwrap();
        let x = out.column(0).as_primitive::<Float64Type>();
        assert_eq!(x.value(0), -1.0);
        assert_eq!(x.value(10), 1.0);
        assert!(x.is_null(11) && x.value(12).is_nan());
    }

    #[test]
    fn a_constant_column_scales_by_one_and_bad_ranges_and_infinities_are_refused() {
        let (params, _) = fitted(&spec([10.0, 90.0]), vec![Some(3.0); 5]);
        assert_eq!(params["columns"]["x"]["scale"], serde_json::json!(1.0));
        assert_eq!(params["columns"]["x"]["range"], serde_json::json!(0.0));
        assert!(spec([75.0, 25.0]).bind(&batch(vec![]).schema()).is_err());
        assert!(spec([0.0, 101.0]).bind(&batch(vec![]).schema()).is_err());
        let fit = crate::fit::erase(spec([25.0, 75.0]).bind(&batch(vec![]).schema()).unwrap());
        let mut partial = fit.new_partial();
        let err = fit.fold(&mut partial, &batch(vec![Some(1.0), Some(f64::INFINITY)])).unwrap_err();
        assert!(err.to_string().contains("column 'x' holds an infinite value"), "{err}");
    }
}
