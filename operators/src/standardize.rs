//! `standardize`: z-scores, like scikit-learn's `StandardScaler`.
//!
//! ```toml
//! [[step]]
//! op = "standardize"
//! columns = ["age", "income"]
//! # fitted = "s3://…/_weir/fitted.json"
//! ```
//!
//! Each value becomes `(x - mean) / scale`, where `scale` is the population standard
//! deviation (ddof = 0), or 1 for a column scikit-learn would call constant (variance
//! within rounding of zero, with scikit-learn's own tolerance). Nulls and NaN are ignored
//! by the fit and stay as they are. An infinity makes the fit an error naming the column;
//! a column with no value at all, too. Integer columns become `Float64`; float columns
//! keep their width. The moments are merged with Chan's update, so a `1e12` offset does
//! not cost the variance its precision.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::fit::{Fit, FitShape};
use crate::fit_columns::{FloatTransform, NumericColumns, PerColumn, all_missing, no_infinity, numeric_step_schema};
use crate::stats::Moments;
use crate::{BoundStep, OpError};

/// `op = "standardize"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandardizeSpec {
    pub columns: Vec<String>,
    /// Reuse the means and scales of an earlier run's `_weir/fitted.json`.
    #[serde(default)]
    pub fitted: Option<String>,
    /// Keep the input columns and write the results to new ones named by this pattern
    /// (`"{col}_z"`); see [`crate::output_columns`].
    #[serde(default)]
    pub output: Option<String>,
}

impl StandardizeSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<StandardizeFit, OpError> {
        Ok(StandardizeFit { columns: numeric_step_schema(&self.columns, input, "standardize")? })
    }
}

/// A `standardize` step bound to its input, before its moments are fitted.
#[derive(Debug, Clone)]
pub struct StandardizeFit {
    columns: NumericColumns,
}

impl StandardizeFit {
    pub(crate) fn columns(&self) -> &NumericColumns {
        &self.columns
    }

    /// One transform per column, in the step's column order.
    pub(crate) fn transforms(&self, params: &PerColumn<ColumnScale>) -> Result<Vec<FloatTransform>, OpError> {
        let scales = params.ordered(&self.columns.names)?;
        Ok(scales.iter().map(|s| FloatTransform::Standardize { mean: s.mean, scale: s.scale }).collect())
    }
}

/// One column's fitted parameters, as saved in `fitted.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnScale {
    mean: f64,
    /// Population variance (ddof = 0).
    var: f64,
    /// What values are divided by: `sqrt(var)`, or 1 for a constant column.
    scale: f64,
    count: u64,
}

/// scikit-learn's `_is_constant_feature`: a variance within rounding of zero.
fn is_constant(var: f64, mean: f64, count: u64) -> bool {
    let n = count as f64;
    let upper_bound = n * f64::EPSILON * var + (n * mean * f64::EPSILON).powi(2);
    var <= upper_bound
}

impl Fit for StandardizeFit {
    type Partial = Vec<Moments>;
    type Params = PerColumn<ColumnScale>;

    fn shape(&self) -> FitShape {
        self.columns.shape()
    }

    fn new_partial(&self) -> Vec<Moments> {
        vec![Moments::default(); self.columns.names.len()]
    }

    fn fold(&self, partial: &mut Vec<Moments>, batch: &RecordBatch) -> Result<(), OpError> {
        self.columns.fold_each(batch, partial, Moments::fold)
    }

    fn merge(&self, into: &mut Vec<Moments>, other: Vec<Moments>) -> Result<(), OpError> {
        into.iter_mut().zip(&other).for_each(|(a, b)| a.merge(b));
        Ok(())
    }

    fn finish(&self, partial: Vec<Moments>) -> Result<PerColumn<ColumnScale>, OpError> {
        let mut scales = Vec::new();
        for (moments, column) in partial.iter().zip(&self.columns.names) {
            no_infinity(column, "mean and variance", moments.infinite)?;
            if moments.count == 0 {
                return Err(all_missing(column, "mean and variance"));
            }
            let var = moments.variance();
            let scale = if is_constant(var, moments.mean(), moments.count) { 1.0 } else { var.sqrt() };
            scales.push(ColumnScale { mean: moments.mean(), var, scale, count: moments.count });
        }
        Ok(PerColumn::new(&self.columns.names, scales))
    }

    fn with_params(&self, params: PerColumn<ColumnScale>) -> Result<Box<dyn BoundStep>, OpError> {
        Ok(self.columns.map(self.transforms(&params)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Float64Array, Int32Array};
    use arrow::datatypes::{DataType, Field, Float64Type, Schema};
    use std::sync::Arc;

    fn fit(batches: &[RecordBatch]) -> (serde_json::Value, Box<dyn BoundStep>) {
        let spec = StandardizeSpec { columns: vec!["*".into()], fitted: None, output: None };
        let fit = crate::fit::erase(spec.bind(&batches[0].schema()).unwrap());
        let params = crate::fit::fit_in_process(fit.as_ref(), batches);
        let step = fit.with_params(&params).unwrap();
        (params, step)
    }

    fn batch(x: Vec<Option<f64>>, n: Vec<i32>) -> RecordBatch {
        let schema =
            Schema::new(vec![Field::new("x", DataType::Float64, true), Field::new("n", DataType::Int32, false)]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(Float64Array::from(x)), Arc::new(Int32Array::from(n))])
            .unwrap()
    }

    #[test]
    fn population_std_over_workers_and_constant_columns_scale_by_one() {
        let a = batch(vec![Some(1.0), None, Some(3.0)], vec![5, 5, 5]);
        let b = batch(vec![Some(f64::NAN), Some(5.0), Some(7.0)], vec![5, 5, 5]);
        let (params, step) = fit(&[a.clone(), b]);
        // x: 1, 3, 5, 7 → mean 4, population variance 5.
        assert_eq!(params["columns"]["x"]["mean"], serde_json::json!(4.0));
        assert_eq!(params["columns"]["x"]["var"], serde_json::json!(5.0));
        assert_eq!(params["columns"]["n"]["scale"], serde_json::json!(1.0));
        let out = step.apply(a).unwrap();
        let x = out.column(0).as_primitive::<Float64Type>();
        assert_eq!(x.value(0), (1.0 - 4.0) / 5f64.sqrt());
        assert!(x.is_null(1));
        assert_eq!(out.schema().field(1).data_type(), &DataType::Float64);
        assert_eq!(out.column(1).as_primitive::<Float64Type>().values().to_vec(), vec![0.0; 3]);
    }

    #[test]
    fn infinity_is_an_error_naming_the_column() {
        let a = batch(vec![Some(1.0), Some(f64::INFINITY)], vec![1, 2]);
        let fit = StandardizeSpec { columns: vec!["x".into()], fitted: None, output: None }.bind(&a.schema()).unwrap();
        let mut partial = fit.new_partial();
        fit.fold(&mut partial, &a).unwrap();
        let err = fit.finish(partial).unwrap_err().to_string();
        assert!(err.contains("column 'x'") && err.contains("infinite"), "{err}");
    }
}
