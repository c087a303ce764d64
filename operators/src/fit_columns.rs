//! What the fitted ops share to read, type and rewrite numeric columns: Float64 views,
//! output types and schemas, the per-column parameter format of `fitted.json`, and the one
//! float map ([`FloatColumnsMap`]) that standardize, minmax and clip apply once fitted.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::{BoundStep, OpError};

/// A numeric column as `Float64`, the type every fitted statistic is computed in.
pub fn as_f64(column: &ArrayRef) -> Result<Float64Array, OpError> {
    let float =
        if column.data_type() == &DataType::Float64 { column.clone() } else { cast(column, &DataType::Float64)? };
    Ok(float.as_primitive().clone())
}

/// Sets `to[r] = value` at every null slot `r` of `nulls`, a run of them at a time between
/// the validity bitmap's runs of set bits (`to` has one element per slot).
pub fn fill_null_slots(to: &mut [f64], nulls: &NullBuffer, value: f64) {
    let mut next = 0;
    for (start, end) in nulls.inner().set_slices() {
        to[next..start].fill(value);
        next = end;
    }
    to[next..].fill(value);
}

/// True for the types a numeric fitted step accepts: integers and floats.
pub fn is_numeric(data_type: &DataType) -> bool {
    data_type.is_integer() || data_type.is_floating()
}

/// The type a numeric fitted step writes for an input column: floats keep their width,
/// integers become `Float64` (as scikit-learn's transformers return floats).
pub fn float_output_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Float16 | DataType::Float32 => data_type.clone(),
        _ => DataType::Float64,
    }
}

/// Resolves a numeric step's column selectors: the indices, and an error naming the first
/// column that is not an integer or float.
pub fn numeric_columns(selectors: &[String], input: &Schema, op: &str) -> Result<Vec<usize>, OpError> {
    let indices = crate::selector::resolve(selectors, input)?;
    for &index in &indices {
        let field = input.field(index);
        if !is_numeric(field.data_type()) {
            return Err(OpError::InvalidSpec(format!(
                "{op} needs numeric columns; column '{}' is {} (cast it first)",
                field.name(),
                field.data_type()
            )));
        }
    }
    Ok(indices)
}

/// The input schema with the given columns' types replaced.
pub fn schema_with_types(input: &Schema, types: &[(usize, DataType)]) -> SchemaRef {
    let fields: Vec<Field> = input
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| match types.iter().find(|(i, _)| *i == index) {
            Some((_, to)) => Field::new(field.name(), to.clone(), field.is_nullable()),
            None => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

/// `batch` with the given columns replaced, as a batch of `schema`.
pub fn replace_columns(
    batch: &RecordBatch,
    schema: &SchemaRef,
    replacements: Vec<(usize, ArrayRef)>,
) -> Result<RecordBatch, OpError> {
    let mut columns = batch.columns().to_vec();
    for (index, array) in replacements {
        columns[index] = array;
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The names of `indices` in `schema`.
pub fn names(schema: &Schema, indices: &[usize]) -> Vec<String> {
    indices.iter().map(|&i| schema.field(i).name().clone()).collect()
}

/// Parameters with one entry per column, as `fitted.json` holds them:
/// `{"columns": {name: entry, …}}` (ops with more parameters flatten this into theirs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerColumn<T> {
    pub columns: BTreeMap<String, T>,
}

impl<T> PerColumn<T> {
    pub fn new(names: &[String], entries: Vec<T>) -> PerColumn<T> {
        PerColumn { columns: names.iter().cloned().zip(entries).collect() }
    }

    /// The entries of `names`, in that order; a missing column is an error naming it.
    pub fn ordered(&self, names: &[String]) -> Result<Vec<&T>, OpError> {
        names
            .iter()
            .map(|name| {
                self.columns
                    .get(name)
                    .ok_or_else(|| OpError::InvalidSpec(format!("fitted parameters have no entry for column '{name}'")))
            })
            .collect()
    }
}

/// A fitted value that must be finite (a mean, a bound): an infinity in the data makes
/// it an error naming the column.
pub fn no_infinity(column: &str, what: &str, has_infinity: bool) -> Result<(), OpError> {
    if has_infinity {
        return Err(OpError::InvalidSpec(format!(
            "column '{column}' holds an infinite value, so its {what} is undefined (filter or clip it first)"
        )));
    }
    Ok(())
}

/// A column with no non-missing value cannot be fitted.
pub fn all_missing(column: &str, what: &str) -> OpError {
    OpError::InvalidSpec(format!("column '{column}' has no non-missing value (all null or NaN) to fit its {what} on"))
}

/// What a numeric fitted step does to each value of one column, in `f64`. The order of the
/// arithmetic follows scikit-learn's, so results agree to the last bit where it can.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FloatTransform {
    /// `(x - mean) / scale` (`StandardScaler`).
    Standardize { mean: f64, scale: f64 },
    /// `x * scale + offset` (`MinMaxScaler`).
    Linear { scale: f64, offset: f64 },
    /// `x` held within `[lower, upper]`; NaN stays NaN.
    Clamp { lower: f64, upper: f64 },
    /// `(ψ(x, lambda) − mean) / scale`, `ψ` the Yeo-Johnson transform (`power`).
    YeoJohnson { lambda: f64, mean: f64, scale: f64 },
}

impl FloatTransform {
    /// `(slope, intercept)` of an affine transform (`slope · x + intercept`), `None` for a
    /// clamp. For fits composed through it ([`crate::linear_chain`]).
    pub fn affine(self) -> Option<(f64, f64)> {
        match self {
            FloatTransform::Standardize { mean, scale } => Some((1.0 / scale, -mean / scale)),
            FloatTransform::Linear { scale, offset } => Some((scale, offset)),
            FloatTransform::Clamp { .. } | FloatTransform::YeoJohnson { .. } => None,
        }
    }

    fn apply(self, column: &Float64Array) -> Float64Array {
        match self {
            FloatTransform::Standardize { mean, scale } => column.unary(|x| (x - mean) / scale),
            FloatTransform::Linear { scale, offset } => column.unary(|x| x * scale + offset),
            FloatTransform::YeoJohnson { lambda, mean, scale } => {
                column.unary(|x| (yeo_johnson(x, lambda) - mean) / scale)
            }
            FloatTransform::Clamp { lower, upper } => column.unary(|x| {
                if x < lower {
                    lower
                } else if x > upper {
                    upper
                } else {
                    x
                }
            }),
        }
    }
}

/// The Yeo-Johnson transform of `x`, as scikit-learn's `_yeo_johnson_transform` computes it.
pub fn yeo_johnson(x: f64, lambda: f64) -> f64 {
    if x >= 0.0 {
        if lambda.abs() < f64::EPSILON { x.ln_1p() } else { ((x + 1.0).powf(lambda) - 1.0) / lambda }
    } else if (lambda - 2.0).abs() > f64::EPSILON {
        -((1.0 - x).powf(2.0 - lambda) - 1.0) / (2.0 - lambda)
    } else {
        -(-x).ln_1p()
    }
}

/// A numeric fitted step with its parameters: one [`FloatTransform`] per column, computed
/// in `f64` and written in the column's output type. Nulls stay null.
#[derive(Debug)]
pub struct FloatColumnsMap {
    pub output: SchemaRef,
    /// Column index, output type, transform.
    pub columns: Vec<(usize, DataType, FloatTransform)>,
}

impl BoundStep for FloatColumnsMap {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mut replacements = Vec::with_capacity(self.columns.len());
        for (index, to, transform) in &self.columns {
            let mapped: ArrayRef = Arc::new(transform.apply(&as_f64(batch.column(*index))?));
            let mapped = if to == &DataType::Float64 { mapped } else { cast(&mapped, to)? };
            replacements.push((*index, mapped));
        }
        replace_columns(&batch, &self.output, replacements)
    }
}

/// `true`, for a serde field that defaults to it (`#[serde(default = "…::default_true")]`).
pub fn default_true() -> bool {
    true
}

/// The input schema and per-column output types of a numeric fitted step over `selectors`.
pub fn numeric_step_schema(selectors: &[String], input: &SchemaRef, op: &str) -> Result<NumericColumns, OpError> {
    let indices = numeric_columns(selectors, input, op)?;
    let types: Vec<(usize, DataType)> =
        indices.iter().map(|&i| (i, float_output_type(input.field(i).data_type()))).collect();
    Ok(NumericColumns {
        names: names(input, &indices),
        output: schema_with_types(input, &types),
        output_types: types.into_iter().map(|(_, t)| t).collect(),
        indices,
    })
}

/// The columns of a numeric fitted step, resolved.
#[derive(Debug, Clone)]
pub struct NumericColumns {
    pub names: Vec<String>,
    pub indices: Vec<usize>,
    pub output_types: Vec<DataType>,
    pub output: SchemaRef,
}

impl NumericColumns {
    /// The fit shape of a step that rewrites these columns in place.
    pub fn shape(&self) -> crate::fit::FitShape {
        crate::fit::FitShape::rewriting(self.output.clone(), self.names.clone())
    }

    /// The present (non-null, non-NaN) values of column `position` of `batch`, found by name.
    pub fn present(&self, batch: &RecordBatch, position: usize, into: &mut Vec<f64>) -> Result<(), OpError> {
        let name = &self.names[position];
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| OpError::Internal(format!("column '{name}' missing from a batch")))?;
        crate::stats::present_values(&as_f64(column)?, into);
        Ok(())
    }

    /// Folds the present values of each column of `batch` into the column's quantile
    /// partial; with `finite_for` (what the quantiles are for, in the message), an infinity
    /// is an error naming the column.
    pub fn fold_quantiles(
        &self,
        batch: &RecordBatch,
        partial: &mut crate::exact_quantile::ColumnQuantiles,
        finite_for: Option<&str>,
    ) -> Result<(), OpError> {
        let mut values = Vec::new();
        for (position, column) in self.names.iter().enumerate() {
            self.present(batch, position, &mut values)?;
            if let Some(what) = finite_for {
                no_infinity(column, what, values.iter().any(|v| v.is_infinite()))?;
            }
            partial.fold(position, &values);
        }
        Ok(())
    }

    /// Folds the present values of each column of `batch` into that column's accumulator.
    pub fn fold_each<T>(
        &self,
        batch: &RecordBatch,
        accumulators: &mut [T],
        mut fold: impl FnMut(&mut T, &[f64]),
    ) -> Result<(), OpError> {
        let mut values = Vec::new();
        for (position, accumulator) in accumulators.iter_mut().enumerate() {
            self.present(batch, position, &mut values)?;
            fold(accumulator, &values);
        }
        Ok(())
    }

    /// The step that applies one transform per column.
    pub fn map(&self, transforms: Vec<FloatTransform>) -> Box<dyn BoundStep> {
        Box::new(FloatColumnsMap {
            output: self.output.clone(),
            columns: self
                .indices
                .iter()
                .zip(&self.output_types)
                .zip(transforms)
                .map(|((&i, t), f)| (i, t.clone(), f))
                .collect(),
        })
    }
}
