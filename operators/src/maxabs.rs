//! `maxabs`: scale by the largest absolute value, like scikit-learn's `MaxAbsScaler`.
//!
//! ```toml
//! [[step]]
//! op = "maxabs"
//! columns = ["income"]
//! # output = "{col}_scaled"   # keep the raw column (see `output_columns`)
//! # fitted = "…"
//! ```
//!
//! Each value becomes `x / max_abs`, with `max_abs` the largest `|x|` of the column (a
//! column whose values are all 0 keeps them: scale 1, as scikit-learn). The data is not
//! centred, so sparse or sign-carrying features keep their zeros and signs. Nulls and NaN
//! are ignored by the fit and kept; an infinity or an all-missing column is an error
//! naming the column. Integer columns become `Float64`; float columns keep their width.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::fit::{Fit, FitShape};
use crate::fit_columns::{FloatTransform, NumericColumns, PerColumn, all_missing, no_infinity, numeric_step_schema};
use crate::stats::Range;
use crate::{BoundStep, OpError};

/// `op = "maxabs"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxAbsSpec {
    pub columns: Vec<String>,
    /// Reuse the scales of an earlier run's `_weir/fitted.json`.
    #[serde(default)]
    pub fitted: Option<String>,
    /// Keep the input columns; see [`crate::output_columns`].
    #[serde(default)]
    pub output: Option<String>,
}

impl MaxAbsSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<MaxAbsFit, OpError> {
        Ok(MaxAbsFit { columns: numeric_step_schema(&self.columns, input, "maxabs")? })
    }
}

/// A `maxabs` step bound to its input, before its scales are fitted.
#[derive(Debug, Clone)]
pub struct MaxAbsFit {
    columns: NumericColumns,
}

/// One column's fitted parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnMaxAbs {
    max_abs: f64,
    /// What values are divided by: `max_abs`, or 1 for an all-zero column.
    scale: f64,
    count: u64,
}

impl Fit for MaxAbsFit {
    type Partial = Vec<Range>;
    type Params = PerColumn<ColumnMaxAbs>;

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

    fn finish(&self, partial: Vec<Range>) -> Result<PerColumn<ColumnMaxAbs>, OpError> {
        let mut fitted = Vec::new();
        for (range, column) in partial.iter().zip(&self.columns.names) {
            if range.count == 0 {
                return Err(all_missing(column, "largest absolute value"));
            }
            no_infinity(column, "largest absolute value", range.min.is_infinite() || range.max.is_infinite())?;
            let max_abs = range.min.abs().max(range.max.abs());
            let scale = if max_abs == 0.0 { 1.0 } else { max_abs };
            fitted.push(ColumnMaxAbs { max_abs, scale, count: range.count });
        }
        Ok(PerColumn::new(&self.columns.names, fitted))
    }

    fn with_params(&self, params: PerColumn<ColumnMaxAbs>) -> Result<Box<dyn BoundStep>, OpError> {
        let transforms = params
            .ordered(&self.columns.names)?
            .iter()
            .map(|c| FloatTransform::Linear { scale: 1.0 / c.scale, offset: 0.0 })
            .collect();
        Ok(self.columns.map(transforms))
    }
}
