//! `impute`: fill missing values, like scikit-learn's `SimpleImputer`.
//!
//! ```toml
//! [[step]]
//! op = "impute"
//! columns = ["age", "income"]
//! strategy = "median"        # mean (default) | median | most_frequent | constant
//! # value = 0                # constant only: the fill value
//! # fitted = "s3://…/_weir/fitted.json"   # reuse an earlier run's fill values
//! ```
//!
//! - Missing means null, and also NaN in float columns (scikit-learn's `missing_values=np.nan`
//!   after a pandas round trip, where nulls are NaN).
//! - `mean` and `median` need numeric columns and write floats: integer columns become
//!   `Float64`, float columns keep their width. The mean is fitted with Chan-merged moments
//!   (an infinity in the column is an error, as in scikit-learn); the median with a
//!   mergeable quantile sketch that is exact up to [`QuantileSketch::K`](crate::quantile_sketch::QuantileSketch::K) values and within
//!   a rank error of 0.001 beyond (Spark's `Imputer` default), where infinities are
//!   ordinary values.
//! - `most_frequent` and `constant` keep the column's type, so integer columns stay
//!   integer; they also accept string columns. Ties in `most_frequent` go to the smallest
//!   value, as in scikit-learn. A `constant` must fit the column's type (`1.5` cannot fill
//!   an integer column; cast it first).
//! - A column with no value to fit on (all missing) is an error naming it; scikit-learn
//!   would drop such a column with a warning, which a pipeline with a fixed output schema
//!   cannot do.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array, Scalar};
use arrow::compute::cast;
use arrow::compute::kernels::boolean::is_null;
use arrow::compute::kernels::zip::zip;
use arrow::datatypes::{DataType, Float32Type, Float64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::exact_quantile::ColumnQuantiles;
use crate::fit::{Fit, FitShape};
use crate::fit_columns::{
    PerColumn, all_missing, as_f64, fill_null_slots, float_output_type, names, no_infinity, numeric_columns,
    replace_columns, schema_with_types,
};
use crate::stats::{ModeValue, Moments, ValueCounts, all_finite, present_values};
use crate::{BoundStep, OpError, selector};

/// How missing values are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImputeStrategy {
    #[default]
    Mean,
    Median,
    MostFrequent,
    Constant,
}

impl ImputeStrategy {
    pub fn name(self) -> &'static str {
        match self {
            ImputeStrategy::Mean => "mean",
            ImputeStrategy::Median => "median",
            ImputeStrategy::MostFrequent => "most_frequent",
            ImputeStrategy::Constant => "constant",
        }
    }
}

/// A fill value as written in the job (`value = 0`, `value = 0.5`, `value = "unknown"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConstantValue {
    Int(i64),
    Float(f64),
    Text(String),
}

/// `op = "impute"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImputeSpec {
    pub columns: Vec<String>,
    #[serde(default)]
    pub strategy: ImputeStrategy,
    /// The fill value of `strategy = "constant"`.
    #[serde(default)]
    pub value: Option<ConstantValue>,
    /// Reuse the fill values of an earlier run's `_weir/fitted.json`.
    #[serde(default)]
    pub fitted: Option<String>,
    /// With `strategy = "median"`: the exact median (`numpy.median`) at any size, found in
    /// later passes ([`crate::exact_quantile`]) when the sketch could not hold every value.
    #[serde(default)]
    pub exact: bool,
    /// Keep the input columns and write the results to new ones named by this pattern
    /// (`"{col}_z"`); see [`crate::output_columns`].
    #[serde(default)]
    pub output: Option<String>,
}

/// What [`ImputeSpec::bind`] gives: a constant fill maps at once; the others are fitted.
#[derive(Debug)]
pub enum BoundImpute {
    Constant(Imputed),
    Fitted(ImputeFit),
}

impl ImputeSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<BoundImpute, OpError> {
        let strategy = self.strategy;
        if strategy == ImputeStrategy::Constant && self.value.is_none() {
            return Err(OpError::InvalidSpec("strategy = \"constant\" needs a `value`".to_string()));
        }
        if strategy != ImputeStrategy::Constant && self.value.is_some() {
            return Err(OpError::InvalidSpec(format!(
                "`value` is only for strategy = \"constant\", not \"{}\"",
                strategy.name()
            )));
        }
        if self.exact && strategy != ImputeStrategy::Median {
            return Err(OpError::InvalidSpec(format!(
                "`exact` is for strategy = \"median\", not \"{}\"",
                strategy.name()
            )));
        }
        if strategy == ImputeStrategy::Constant && self.fitted.is_some() {
            return Err(OpError::InvalidSpec("strategy = \"constant\" is not fitted, so it takes no `fitted`".into()));
        }
        let indices = match strategy {
            ImputeStrategy::Mean | ImputeStrategy::Median => numeric_columns(&self.columns, input, "impute")?,
            ImputeStrategy::MostFrequent | ImputeStrategy::Constant => {
                let indices = selector::resolve(&self.columns, input)?;
                for &index in &indices {
                    let field = input.field(index);
                    if ValueCounts::for_type(field.data_type()).is_none() {
                        return Err(OpError::InvalidSpec(format!(
                            "impute with strategy \"{}\" needs numeric or string columns; column '{}' is {}",
                            strategy.name(),
                            field.name(),
                            field.data_type()
                        )));
                    }
                }
                indices
            }
        };
        let output_types: Vec<(usize, DataType)> = indices
            .iter()
            .map(|&i| {
                let from = input.field(i).data_type();
                let to = match strategy {
                    ImputeStrategy::Mean | ImputeStrategy::Median => float_output_type(from),
                    _ => from.clone(),
                };
                (i, to)
            })
            .collect();
        let fit = ImputeFit {
            strategy,
            columns: names(input, &indices),
            indices,
            input_types: output_types.iter().map(|(i, _)| input.field(*i).data_type().clone()).collect(),
            output: schema_with_types(input, &output_types),
            output_types: output_types.into_iter().map(|(_, t)| t).collect(),
            exact: self.exact,
        };
        match &self.value {
            Some(value) => {
                let fills = fit
                    .output_types
                    .iter()
                    .zip(&fit.columns)
                    .map(|(to, column)| fill_scalar(column, to, &constant_json(value)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(BoundImpute::Constant(fit.imputed(fills)))
            }
            None => Ok(BoundImpute::Fitted(fit)),
        }
    }
}

fn constant_json(value: &ConstantValue) -> serde_json::Value {
    match value {
        ConstantValue::Int(v) => serde_json::json!(v),
        ConstantValue::Float(v) => serde_json::json!(v),
        ConstantValue::Text(v) => serde_json::json!(v),
    }
}

/// An `impute` step bound to its input, before its fill values are fitted.
#[derive(Debug, Clone)]
pub struct ImputeFit {
    strategy: ImputeStrategy,
    columns: Vec<String>,
    indices: Vec<usize>,
    input_types: Vec<DataType>,
    output_types: Vec<DataType>,
    output: SchemaRef,
    /// `exact = true`: the median by exact selection over passes.
    exact: bool,
}

/// What one worker has folded, by strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImputePartial {
    Moments(Vec<Moments>),
    Quantiles(ColumnQuantiles),
    Counts(Vec<ValueCounts>),
}

/// One column's fitted fill value, as saved in `fitted.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnFill {
    /// The fill value, in the column's kind (a number or a string).
    value: serde_json::Value,
    /// Non-missing values the fit saw.
    count: u64,
    /// For `median`: whether the sketch held every value (exact) or was approximate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<bool>,
}

impl ColumnFill {
    /// The fill value as a number, for a numeric column.
    pub(crate) fn number(&self) -> Option<f64> {
        self.value.as_f64()
    }
}

impl ImputeFit {
    pub(crate) fn column_names(&self) -> &[String] {
        &self.columns
    }

    /// Whether the fill is the mean (its partial: the moments of the present values).
    pub(crate) fn is_mean(&self) -> bool {
        self.strategy == ImputeStrategy::Mean
    }

    /// Whether the fill of every column is one `f64` found in a single pass over `Float64`
    /// or integer columns (mean, median from the sketch, a numeric most frequent value),
    /// written without rounding: what [`crate::linear_chain`] can compose through.
    pub(crate) fn fills_with_one_exact_number(&self) -> bool {
        let one_pass = match self.strategy {
            ImputeStrategy::Mean | ImputeStrategy::MostFrequent => true,
            ImputeStrategy::Median => !self.exact,
            ImputeStrategy::Constant => false,
        };
        let exact_types = self.input_types.iter().zip(&self.output_types).all(|(from, to)| {
            (from == &DataType::Float64 || from.is_integer()) && (to == &DataType::Float64 || to.is_integer())
        });
        one_pass && exact_types
    }

    fn imputed(&self, fills: Vec<ArrayRef>) -> Imputed {
        Imputed {
            output: self.output.clone(),
            columns: self
                .indices
                .iter()
                .copied()
                .zip(self.output_types.iter().cloned())
                .zip(fills)
                .map(|((i, t), f)| (i, t, f))
                .collect(),
        }
    }

    fn column_of<'a>(&self, batch: &'a RecordBatch, position: usize) -> Result<&'a ArrayRef, OpError> {
        batch.column_by_name(&self.columns[position]).ok_or_else(|| {
            OpError::Internal(format!("impute: column '{}' missing from a batch", self.columns[position]))
        })
    }
}

impl Fit for ImputeFit {
    type Partial = ImputePartial;
    type Params = PerColumn<ColumnFill>;

    fn shape(&self) -> FitShape {
        FitShape {
            strategy: Some(self.strategy.name().to_string()),
            ..FitShape::rewriting(self.output.clone(), self.columns.clone())
        }
    }

    fn new_partial(&self) -> ImputePartial {
        let n = self.columns.len();
        match self.strategy {
            ImputeStrategy::Mean => ImputePartial::Moments(vec![Moments::default(); n]),
            ImputeStrategy::Median => ImputePartial::Quantiles(ColumnQuantiles::new(n)),
            ImputeStrategy::MostFrequent | ImputeStrategy::Constant => ImputePartial::Counts(
                self.input_types.iter().map(|t| ValueCounts::for_type(t).expect("checked at bind")).collect(),
            ),
        }
    }

    fn fold(&self, partial: &mut ImputePartial, batch: &RecordBatch) -> Result<(), OpError> {
        let mut values = Vec::new();
        for position in 0..self.columns.len() {
            let column = self.column_of(batch, position)?;
            match partial {
                ImputePartial::Moments(moments) => {
                    present_values(&as_f64(column)?, &mut values);
                    moments[position].fold(&values);
                }
                ImputePartial::Quantiles(quantiles) => {
                    present_values(&as_f64(column)?, &mut values);
                    quantiles.fold(position, &values);
                }
                ImputePartial::Counts(counts) => counts[position].fold(column)?,
            }
        }
        Ok(())
    }

    fn merge(&self, into: &mut ImputePartial, other: ImputePartial) -> Result<(), OpError> {
        match (into, other) {
            (ImputePartial::Moments(into), ImputePartial::Moments(other)) => {
                into.iter_mut().zip(&other).for_each(|(a, b)| a.merge(b))
            }
            (ImputePartial::Quantiles(into), ImputePartial::Quantiles(other)) => into.merge(other)?,
            (ImputePartial::Counts(into), ImputePartial::Counts(other)) => {
                for (a, b) in into.iter_mut().zip(other) {
                    a.merge(b)?;
                }
            }
            _ => return Err(OpError::Internal("impute got partials of two strategies".into())),
        }
        Ok(())
    }

    fn next_pass(&self, merged: &mut ImputePartial) -> Result<Option<ImputePartial>, OpError> {
        Ok(match merged {
            ImputePartial::Quantiles(quantiles) if self.exact => {
                quantiles.next_pass(&[0.5]).map(ImputePartial::Quantiles)
            }
            _ => None,
        })
    }

    fn finish(&self, partial: ImputePartial) -> Result<PerColumn<ColumnFill>, OpError> {
        let mut fills = Vec::with_capacity(self.columns.len());
        for (position, column) in self.columns.iter().enumerate() {
            let fill = match &partial {
                ImputePartial::Moments(moments) => {
                    let moments = moments[position];
                    no_infinity(column, "mean", moments.infinite)?;
                    if moments.count == 0 {
                        return Err(all_missing(column, "mean"));
                    }
                    ColumnFill { value: serde_json::json!(moments.mean()), count: moments.count, exact: None }
                }
                ImputePartial::Quantiles(quantiles) => {
                    let found = quantiles.found(position, 0.5);
                    let median = found.value.ok_or_else(|| all_missing(column, "median"))?;
                    no_infinity(column, "median", median.is_infinite())?;
                    ColumnFill { value: serde_json::json!(median), count: found.count, exact: Some(found.exact) }
                }
                ImputePartial::Counts(counts) => {
                    let counts = &counts[position];
                    let mode = counts.mode().ok_or_else(|| all_missing(column, "most frequent value"))?;
                    let value = match mode {
                        ModeValue::Int(v) => serde_json::json!(v),
                        ModeValue::UInt(v) => serde_json::json!(v),
                        ModeValue::Float(v) => {
                            no_infinity(column, "most frequent value", v.is_infinite())?;
                            serde_json::json!(v)
                        }
                        ModeValue::Text(v) => serde_json::json!(v),
                    };
                    ColumnFill { value, count: counts.total(), exact: None }
                }
            };
            fills.push(fill);
        }
        Ok(PerColumn::new(&self.columns, fills))
    }

    fn with_params(&self, params: PerColumn<ColumnFill>) -> Result<Box<dyn BoundStep>, OpError> {
        let fills = params.ordered(&self.columns)?;
        let scalars = fills
            .iter()
            .zip(&self.output_types)
            .zip(&self.columns)
            .map(|((fill, to), column)| fill_scalar(column, to, &fill.value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Box::new(self.imputed(scalars)))
    }
}

/// A one-element array of type `to` holding `value`, or an error naming the column when
/// the value does not fit the type.
fn fill_scalar(column: &str, to: &DataType, value: &serde_json::Value) -> Result<ArrayRef, OpError> {
    let mismatch = || {
        OpError::InvalidSpec(format!(
            "the fill value {value} does not fit column '{column}' of type {to} (cast the column first)"
        ))
    };
    let array: ArrayRef = if to.is_floating() {
        Arc::new(Float64Array::from(vec![value.as_f64().ok_or_else(mismatch)?]))
    } else if to.is_signed_integer() {
        Arc::new(arrow::array::Int64Array::from(vec![value.as_i64().ok_or_else(mismatch)?]))
    } else if to.is_unsigned_integer() {
        Arc::new(arrow::array::UInt64Array::from(vec![value.as_u64().ok_or_else(mismatch)?]))
    } else {
        Arc::new(arrow::array::StringArray::from(vec![value.as_str().ok_or_else(mismatch)?.to_string()]))
    };
    // A value outside the column's range (300 for an Int8) is an error, not a wrap.
    let options = arrow::compute::CastOptions { safe: false, ..Default::default() };
    arrow::compute::cast_with_options(&array, to, &options).map_err(|_| mismatch())
}

/// An `impute` step with its fill values: replaces nulls (and NaN in float columns).
#[derive(Debug)]
pub struct Imputed {
    output: SchemaRef,
    /// Column index, output type, fill value (a one-element array of the output type).
    columns: Vec<(usize, DataType, ArrayRef)>,
}

impl BoundStep for Imputed {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mut replacements = Vec::with_capacity(self.columns.len());
        for (index, to, fill) in &self.columns {
            let column = batch.column(*index);
            let column = if column.data_type() == to { column.clone() } else { cast(column, to)? };
            replacements.push((*index, fill_missing(&column, fill)?));
        }
        replace_columns(&batch, &self.output, replacements)
    }
}

/// `column` with nulls (and NaN, for floats) replaced by the one value of `fill`.
fn fill_missing(column: &ArrayRef, fill: &ArrayRef) -> Result<ArrayRef, OpError> {
    match column.data_type() {
        DataType::Float64 => {
            let fill = fill.as_primitive::<Float64Type>().value(0);
            let values = column.as_primitive::<Float64Type>();
            if values.null_count() == 0 && (all_finite(values.values()) || !values.values().iter().any(|v| v.is_nan()))
            {
                return Ok(column.clone());
            }
            // NaN first, over the raw values (vectorised); then the null slots, a run of
            // them at a time between the validity bitmap's runs of set bits.
            let mut filled: Vec<f64> = values.values().iter().map(|&v| if v.is_nan() { fill } else { v }).collect();
            if let Some(nulls) = values.nulls() {
                fill_null_slots(&mut filled, nulls, fill);
            }
            Ok(Arc::new(Float64Array::from(filled)))
        }
        DataType::Float32 => {
            let fill = fill.as_primitive::<Float32Type>().value(0);
            let values = column.as_primitive::<Float32Type>();
            Ok(Arc::new(Float32Array::from_iter_values(
                values.iter().map(|v| v.filter(|x| !x.is_nan()).unwrap_or(fill)),
            )))
        }
        _ => {
            if column.null_count() == 0 {
                return Ok(column.clone());
            }
            let missing: BooleanArray = is_null(column.as_ref())?;
            Ok(zip(&missing, &Scalar::new(fill.clone()), column)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn float_fills_cover_nulls_and_nan_in_a_sliced_column() {
        let column: ArrayRef =
            Arc::new(Float64Array::from(vec![None, Some(1.0), None, None, Some(f64::NAN), Some(5.0), None]));
        let fill: ArrayRef = Arc::new(Float64Array::from(vec![9.0]));
        let filled = fill_missing(&column.slice(1, 6), &fill).unwrap();
        let filled = filled.as_primitive::<Float64Type>();
        assert_eq!(filled.null_count(), 0);
        assert_eq!(filled.values().to_vec(), vec![1.0, 9.0, 9.0, 9.0, 5.0, 9.0]);
    }

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("x", DataType::Float64, true),
            Field::new("n", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Float64Array::from(vec![Some(1.0), None, Some(f64::NAN), Some(4.0), Some(10.0)])),
                Arc::new(Int32Array::from(vec![Some(2), Some(2), None, Some(7), Some(7)])),
                Arc::new(StringArray::from(vec![Some("b"), None, Some("a"), Some("b"), None])),
            ],
        )
        .unwrap()
    }

    fn spec(columns: &[&str], strategy: ImputeStrategy, value: Option<ConstantValue>) -> ImputeSpec {
        ImputeSpec {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            strategy,
            value,
            fitted: None,
            exact: false,
            output: None,
        }
    }

    fn fit_and_apply(spec: &ImputeSpec, batches: &[RecordBatch]) -> (serde_json::Value, RecordBatch) {
        let BoundImpute::Fitted(fit) = spec.bind(&batches[0].schema()).unwrap() else { panic!("not fitted") };
        let fit = crate::fit::erase(fit);
        let params = crate::fit::fit_in_process(fit.as_ref(), batches);
        let step = fit.with_params(&params).unwrap();
        (params, step.apply(batches[0].clone()).unwrap())
    }

    #[test]
    fn mean_ignores_nulls_and_nan_and_fills_both() {
        let (params, out) = fit_and_apply(&spec(&["x"], ImputeStrategy::Mean, None), &[batch()]);
        assert_eq!(params["columns"]["x"]["value"], serde_json::json!(5.0));
        let x = out.column(0).as_primitive::<Float64Type>();
        assert_eq!(x.values().to_vec(), vec![1.0, 5.0, 5.0, 4.0, 10.0]);
        assert_eq!(x.null_count(), 0);
    }

    #[test]
    fn median_of_an_even_count_is_the_midpoint_and_ints_become_floats() {
        let (params, out) = fit_and_apply(&spec(&["n"], ImputeStrategy::Median, None), &[batch()]);
        assert_eq!(params["columns"]["n"]["value"], serde_json::json!(4.5));
        assert_eq!(out.schema().field(1).data_type(), &DataType::Float64);
        assert_eq!(out.column(1).as_primitive::<Float64Type>().values().to_vec(), vec![2.0, 2.0, 4.5, 7.0, 7.0]);
    }

    #[test]
    fn most_frequent_keeps_integers_and_strings_with_ties_to_the_smallest() {
        let (params, out) = fit_and_apply(&spec(&["n", "s"], ImputeStrategy::MostFrequent, None), &[batch()]);
        assert_eq!(params["columns"]["n"]["value"], serde_json::json!(2));
        assert_eq!(out.schema().field(1).data_type(), &DataType::Int32);
        let n: Vec<i32> = out.column(1).as_primitive::<arrow::datatypes::Int32Type>().values().to_vec();
        assert_eq!(n, vec![2, 2, 2, 7, 7]);
        let s: Vec<&str> = out.column(2).as_string::<i32>().iter().map(|v| v.unwrap()).collect();
        assert_eq!(s, vec!["b", "b", "a", "b", "b"]);
    }

    #[test]
    fn constant_fills_without_fitting_and_checks_the_type() {
        let BoundImpute::Constant(step) =
            spec(&["n"], ImputeStrategy::Constant, Some(ConstantValue::Int(-1))).bind(&batch().schema()).unwrap()
        else {
            panic!("constant is not fitted")
        };
        let out = step.apply(batch()).unwrap();
        assert_eq!(out.column(1).as_primitive::<arrow::datatypes::Int32Type>().values().to_vec(), vec![2, 2, -1, 7, 7]);
        let err = spec(&["n"], ImputeStrategy::Constant, Some(ConstantValue::Float(1.5)))
            .bind(&batch().schema())
            .unwrap_err()
            .to_string();
        assert!(err.contains("column 'n'") && err.contains("1.5"), "{err}");
    }

    #[test]
    fn an_all_missing_column_is_an_error_naming_it() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        let empty =
            RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(vec![None, Some(f64::NAN)]))]).unwrap();
        let BoundImpute::Fitted(fit) = spec(&["x"], ImputeStrategy::Median, None).bind(&empty.schema()).unwrap() else {
            panic!()
        };
        let fit = crate::fit::erase(fit);
        let mut partial = fit.new_partial();
        fit.fold(&mut partial, &empty).unwrap();
        let err = fit.finish(partial).unwrap_err().to_string();
        assert!(err.contains("column 'x'") && err.contains("no non-missing value"), "{err}");
    }

    #[test]
    fn exact_median_past_the_sketch_equals_the_sorted_middle() {
        // 30,001 values, beyond what one sketch holds, with ties, split over three workers.
        let values: Vec<f64> = (0..30_001u64).map(|i| ((i * 7_919) % 10_007) as f64 / 4.0).collect();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        let batches: Vec<RecordBatch> = values
            .chunks(10_001)
            .map(|chunk| {
                RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(chunk.to_vec()))]).unwrap()
            })
            .collect();
        let mut exact = spec(&["x"], ImputeStrategy::Median, None);
        exact.exact = true;
        let (params, _) = fit_and_apply(&exact, &batches);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(params["columns"]["x"]["value"], serde_json::json!(sorted[15_000]));
        assert_eq!(params["columns"]["x"]["exact"], serde_json::json!(true));
    }

    #[test]
    fn mean_on_a_string_column_is_refused() {
        let err = spec(&["s"], ImputeStrategy::Mean, None).bind(&batch().schema()).unwrap_err().to_string();
        assert!(err.contains("column 's'") && err.contains("numeric"), "{err}");
    }
}
