//! What evaluation passes around: a node's [`Value`] (an array, or one value for every
//! row), a [`Fault`] (why a value could not be computed), the type names of messages, and
//! the kernels nodes and functions share (`select`, canonical floats).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, Datum, PrimitiveArray, UInt32Array,
    downcast_primitive_array,
};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::compute::kernels::zip::zip;
use arrow::compute::take;
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use arrow::error::ArrowError;

use crate::OpError;

/// A value of a node: one per row, or one for all rows (a literal, or what was computed
/// from literals only).
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Array(ArrayRef),
    Scalar(ArrayRef),
}

impl Datum for Value {
    fn get(&self) -> (&dyn Array, bool) {
        match self {
            Value::Array(array) => (array.as_ref(), false),
            Value::Scalar(array) => (array.as_ref(), true),
        }
    }
}

impl Value {
    /// The values, one per row of a batch of `rows` rows.
    pub(crate) fn into_array(self, rows: usize) -> Result<ArrayRef, ArrowError> {
        match self {
            Value::Array(array) => Ok(array),
            Value::Scalar(scalar) => take(&scalar, &UInt32Array::from(vec![0u32; rows]), None),
        }
    }

    pub(crate) fn array(&self) -> &ArrayRef {
        match self {
            Value::Array(array) | Value::Scalar(array) => array,
        }
    }

    pub(crate) fn is_scalar(&self) -> bool {
        matches!(self, Value::Scalar(_))
    }

    /// `f` applied to the values, keeping a scalar a scalar.
    pub(crate) fn map(&self, f: impl FnOnce(&ArrayRef) -> Result<ArrayRef, Fault>) -> Result<Value, Fault> {
        Ok(match self {
            Value::Array(array) => Value::Array(f(array)?),
            Value::Scalar(array) => Value::Scalar(f(array)?),
        })
    }

    /// A value computed from `inputs`: a scalar when they all are.
    pub(crate) fn like(inputs: &[Value], array: ArrayRef) -> Value {
        if inputs.iter().all(Value::is_scalar) { Value::Scalar(array) } else { Value::Array(array) }
    }
}

/// Why evaluation failed: a value the expression cannot compute (the user's data), or a
/// kernel's own failure (a fault of Weir).
#[derive(Debug)]
pub(crate) enum Fault {
    /// `message` about the sub-expression `at`, at the 0-based `row` of the batch if known.
    Data {
        at: String,
        message: String,
        row: Option<usize>,
    },
    Arrow(ArrowError),
}

impl From<ArrowError> for Fault {
    fn from(error: ArrowError) -> Self {
        Fault::Arrow(error)
    }
}

impl Fault {
    pub(crate) fn data(at: &str, message: impl Into<String>, row: Option<usize>) -> Fault {
        Fault::Data { at: at.to_string(), message: message.into(), row }
    }

    /// The error of the expression `text`.
    pub(crate) fn into_error(self, text: &str) -> OpError {
        match self {
            Fault::Data { at, message, row } => {
                let row = row.map(|row| format!(" (row {row} of the batch)")).unwrap_or_default();
                let within = if at == text { String::new() } else { format!(" in `{at}`") };
                OpError::Evaluation { expr: text.to_string(), message: format!("{message}{within}{row}") }
            }
            Fault::Arrow(error) => OpError::Arrow(error),
        }
    }
}

/// DuckDB's name of a type, for messages.
pub fn sql_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 => "VARCHAR".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(zone)) => format!("TIMESTAMP WITH TIME ZONE ({zone})"),
        DataType::Null => "NULL".into(),
        other => other.to_string(),
    }
}

/// `truthy` where `mask` is true, else `falsy` (of the same type; `mask` has no nulls):
/// Arrow's `zip`, with a fast path for fixed-width values, where `zip` copies each run of
/// equal mask bits on its own and a mask that alternates costs a copy per row.
pub(crate) fn select(mask: &BooleanArray, truthy: &Value, falsy: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    fn primitive<T: ArrowPrimitiveType>(mask: &BooleanArray, truthy: &Value, f: &PrimitiveArray<T>) -> ArrayRef {
        let t = truthy.array().as_primitive::<T>();
        let bits = mask.values();
        let values: Vec<T::Native> = if truthy.is_scalar() {
            let t = t.values().first().copied().unwrap_or_default();
            bits.iter().zip(f.values().iter()).map(|(take, f)| if take { t } else { *f }).collect()
        } else {
            bits.iter()
                .zip(t.values().iter().zip(f.values().iter()))
                .map(|(take, (t, f))| if take { *t } else { *f })
                .collect()
        };
        let rows = values.len();
        let valid = |array: &PrimitiveArray<T>, scalar: bool| -> BooleanBuffer {
            match (array.nulls(), scalar) {
                (None, _) => BooleanBuffer::new_set(rows),
                (Some(nulls), false) => nulls.inner().clone(),
                (Some(nulls), true) if nulls.is_valid(0) => BooleanBuffer::new_set(rows),
                (Some(_), true) => BooleanBuffer::new_unset(rows),
            }
        };
        let nulls = &(bits & &valid(t, truthy.is_scalar())) | &(&!bits & &valid(f, false));
        let nulls = NullBuffer::new(nulls);
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        Arc::new(PrimitiveArray::<T>::new(values.into(), nulls).with_data_type(f.data_type().clone()))
    }
    let scalar_fits = !truthy.is_scalar() || truthy.array().len() == 1;
    if mask.null_count() == 0 && scalar_fits && truthy.array().data_type() == falsy.data_type() {
        downcast_primitive_array!(
            falsy => return Ok(primitive(mask, truthy, falsy)),
            _ => {}
        )
    }
    zip(mask, truthy, falsy)
}

/// A float array with canonical zeros and `NaN`s (see `normalized` in `node.rs`); any other as is, and
/// so is one that holds neither `-0.0` nor a `NaN` (found in one read, without a copy).
pub(crate) fn canonical_floats(array: ArrayRef) -> ArrayRef {
    let odd64 = |x: &f64| x.is_nan() || x.to_bits() == (-0.0f64).to_bits();
    let odd32 = |x: &f32| x.is_nan() || x.to_bits() == (-0.0f32).to_bits();
    let needed = match array.data_type() {
        DataType::Float64 => array.as_primitive::<Float64Type>().values().iter().any(odd64),
        DataType::Float32 => array.as_primitive::<Float32Type>().values().iter().any(odd32),
        _ => false,
    };
    if !needed {
        return array;
    }
    match array.data_type() {
        DataType::Float64 => Arc::new(arrow::compute::kernels::arity::unary::<Float64Type, _, Float64Type>(
            array.as_primitive::<Float64Type>(),
            |x| if x.is_nan() { f64::NAN } else { x + 0.0 },
        )),
        DataType::Float32 => Arc::new(arrow::compute::kernels::arity::unary::<Float32Type, _, Float32Type>(
            array.as_primitive::<Float32Type>(),
            |x| if x.is_nan() { f32::NAN } else { x + 0.0 },
        )),
        _ => array,
    }
}

/// An Arrow overflow as a data fault (whose message, unlike Arrow's, has no value in it),
/// anything else as is.
pub(crate) fn overflow_or(error: ArrowError, text: &str) -> Fault {
    match error {
        ArrowError::ArithmeticOverflow(_) => Fault::data(text, "integer overflow", None),
        other => Fault::Arrow(other),
    }
}
