//! `clip`: hold values within bounds, fixed or fitted as quantiles.
//!
//! ```toml
//! [[step]]
//! op = "clip"
//! columns = ["income"]
//! lower = 0.0                 # fixed bounds: either or both
//! upper = 1e6
//!
//! [[step]]
//! op = "clip"
//! columns = ["f_*"]
//! quantiles = [0.01, 0.99]    # bounds fitted per column: the 1st and 99th percentiles
//! # fitted = "s3://…/_weir/fitted.json"
//! ```
//!
//! Fitted bounds are `numpy.quantile(values, q)` (linear interpolation) of each column's
//! present values while the column has at most [`QuantileSketch::K`] of them, and within a
//! rank error of 0.001 beyond. Nulls and NaN are left as they are and do not count;
//! infinities are ordinary values (clipping them is often the point), and an infinite
//! bound is no bound. Integer columns become `Float64`; float columns keep their width.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::exact_quantile::ColumnQuantiles;
use crate::fit::{Fit, FitShape};
use crate::fit_columns::{FloatTransform, NumericColumns, PerColumn, all_missing, numeric_step_schema};
use crate::{BoundStep, OpError};

/// `op = "clip"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipSpec {
    pub columns: Vec<String>,
    #[serde(default)]
    pub lower: Option<f64>,
    #[serde(default)]
    pub upper: Option<f64>,
    /// `[low, high]` quantiles to fit the bounds at, `0 <= low <= high <= 1`.
    #[serde(default)]
    pub quantiles: Option<[f64; 2]>,
    /// Reuse the bounds of an earlier run's `_weir/fitted.json`.
    #[serde(default)]
    pub fitted: Option<String>,
    /// With `quantiles`: the exact quantiles (`numpy.quantile`) at any size, found in later
    /// passes ([`crate::exact_quantile`]) when the sketch could not hold every value.
    #[serde(default)]
    pub exact: bool,
    /// Keep the input columns and write the results to new ones named by this pattern
    /// (`"{col}_z"`); see [`crate::output_columns`].
    #[serde(default)]
    pub output: Option<String>,
}

/// What [`ClipSpec::bind`] gives: fixed bounds map at once; quantile bounds are fitted.
#[derive(Debug)]
pub enum BoundClip {
    Fixed(Box<dyn BoundStep>),
    Fitted(ClipFit),
}

impl ClipSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<BoundClip, OpError> {
        let columns = numeric_step_schema(&self.columns, input, "clip")?;
        match self.quantiles {
            Some(quantiles) => {
                if self.lower.is_some() || self.upper.is_some() {
                    return Err(OpError::InvalidSpec("give either `quantiles` or `lower`/`upper`, not both".into()));
                }
                let [low, high] = quantiles;
                if !(0.0..=1.0).contains(&low) || !(0.0..=1.0).contains(&high) || low > high {
                    return Err(OpError::InvalidSpec(format!(
                        "quantiles = [{low}, {high}] must be within [0, 1], low <= high"
                    )));
                }
                Ok(BoundClip::Fitted(ClipFit { columns, quantiles, exact: self.exact }))
            }
            None => {
                if self.fitted.is_some() {
                    return Err(OpError::InvalidSpec("fixed bounds are not fitted, so they take no `fitted`".into()));
                }
                if self.exact {
                    return Err(OpError::InvalidSpec("`exact` is for fitted `quantiles`, not fixed bounds".into()));
                }
                let lower = self.lower.unwrap_or(f64::NEG_INFINITY);
                let upper = self.upper.unwrap_or(f64::INFINITY);
                if self.lower.is_none() && self.upper.is_none() {
                    return Err(OpError::InvalidSpec("clip needs `lower`, `upper` or `quantiles`".into()));
                }
                if lower.is_nan() || upper.is_nan() || lower > upper {
                    return Err(OpError::InvalidSpec(format!("lower = {lower} must not be above upper = {upper}")));
                }
                let transforms = vec![FloatTransform::Clamp { lower, upper }; columns.names.len()];
                Ok(BoundClip::Fixed(columns.map(transforms)))
            }
        }
    }
}

/// A `clip` step with quantile bounds, before they are fitted.
#[derive(Debug)]
pub struct ClipFit {
    columns: NumericColumns,
    quantiles: [f64; 2],
    exact: bool,
}

/// The fitted bounds, as saved in `fitted.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipParams {
    /// The quantiles they were fitted at.
    quantiles: [f64; 2],
    #[serde(flatten)]
    columns: PerColumn<ColumnBounds>,
}

/// One column's fitted bounds (`null`: no bound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ColumnBounds {
    lower: Option<f64>,
    upper: Option<f64>,
    count: u64,
    /// Whether the quantiles are exact (the sketch held every value).
    exact: bool,
}

impl Fit for ClipFit {
    type Partial = ColumnQuantiles;
    type Params = ClipParams;

    fn shape(&self) -> FitShape {
        self.columns.shape()
    }

    fn new_partial(&self) -> ColumnQuantiles {
        ColumnQuantiles::new(self.columns.names.len())
    }

    fn fold(&self, partial: &mut ColumnQuantiles, batch: &RecordBatch) -> Result<(), OpError> {
        self.columns.fold_quantiles(batch, partial, None)
    }

    fn merge(&self, into: &mut ColumnQuantiles, other: ColumnQuantiles) -> Result<(), OpError> {
        into.merge(other)
    }

    fn next_pass(&self, merged: &mut ColumnQuantiles) -> Result<Option<ColumnQuantiles>, OpError> {
        Ok(if self.exact { merged.next_pass(&self.quantiles) } else { None })
    }

    fn finish(&self, partial: ColumnQuantiles) -> Result<ClipParams, OpError> {
        let finite = |v: f64| v.is_finite().then_some(v);
        let [low, high] = self.quantiles;
        let mut bounds = Vec::new();
        for (position, column) in self.columns.names.iter().enumerate() {
            let (lower, upper) = (partial.found(position, low), partial.found(position, high));
            let lower_value = lower.value.ok_or_else(|| all_missing(column, "quantiles"))?;
            let upper_value = upper.value.ok_or_else(|| all_missing(column, "quantiles"))?;
            bounds.push(ColumnBounds {
                lower: finite(lower_value),
                upper: finite(upper_value),
                count: lower.count,
                exact: lower.exact,
            });
        }
        Ok(ClipParams { quantiles: self.quantiles, columns: PerColumn::new(&self.columns.names, bounds) })
    }

    fn with_params(&self, params: ClipParams) -> Result<Box<dyn BoundStep>, OpError> {
        if params.quantiles != self.quantiles {
            return Err(OpError::InvalidSpec(format!(
                "the fitted bounds are for quantiles {:?}, this step asks for {:?}",
                params.quantiles, self.quantiles
            )));
        }
        let bounds = params.columns.ordered(&self.columns.names)?;
        Ok(self.columns.map(
            bounds
                .iter()
                .map(|b| FloatTransform::Clamp {
                    lower: b.lower.unwrap_or(f64::NEG_INFINITY),
                    upper: b.upper.unwrap_or(f64::INFINITY),
                })
                .collect(),
        ))
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

    #[test]
    fn fixed_bounds_keep_nulls_and_nan() {
        let spec = ClipSpec {
            columns: vec!["x".into()],
            lower: Some(0.0),
            upper: None,
            quantiles: None,
            fitted: None,
            exact: false,
            output: None,
        };
        let BoundClip::Fixed(step) = spec.bind(&batch(vec![]).schema()).unwrap() else { panic!() };
        let out = step.apply(batch(vec![Some(-2.0), None, Some(f64::NAN), Some(f64::INFINITY)])).unwrap();
        let x = out.column(0).as_primitive::<Float64Type>();
        assert_eq!(x.value(0), 0.0);
        assert!(x.is_null(1) && x.value(2).is_nan() && x.value(3).is_infinite());
    }

    #[test]
    fn quantile_bounds_interpolate_like_numpy() {
        let values: Vec<Option<f64>> = (0..=100).map(|i| Some(i as f64)).chain([None, Some(f64::NAN)]).collect();
        let spec = ClipSpec {
            columns: vec!["x".into()],
            lower: None,
            upper: None,
            quantiles: Some([0.015, 0.9]),
            fitted: None,
            exact: false,
            output: None,
        };
        let BoundClip::Fitted(fit) = spec.bind(&batch(vec![]).schema()).unwrap() else { panic!() };
        let fit = crate::fit::erase(fit);
        let mut partial = fit.new_partial();
        fit.fold(&mut partial, &batch(values)).unwrap();
        let params = fit.finish(partial).unwrap();
        // numpy.quantile(range(101), 0.015) == 1.5; 0.9 → 90.
        assert_eq!(params["columns"]["x"]["lower"], serde_json::json!(1.5));
        assert_eq!(params["columns"]["x"]["upper"], serde_json::json!(90.0));
        assert_eq!(params["columns"]["x"]["exact"], serde_json::json!(true));
    }

    #[test]
    fn bad_bounds_are_refused() {
        let schema = batch(vec![]).schema();
        let spec = ClipSpec {
            columns: vec!["x".into()],
            lower: Some(2.0),
            upper: Some(1.0),
            quantiles: None,
            fitted: None,
            exact: false,
            output: None,
        };
        assert!(spec.bind(&schema).is_err());
        let spec = ClipSpec {
            columns: vec!["x".into()],
            lower: None,
            upper: None,
            quantiles: Some([0.9, 0.1]),
            fitted: None,
            exact: false,
            output: None,
        };
        assert!(spec.bind(&schema).is_err());
    }
}
