//! The compiled expression: a tree of typed nodes whose operands already have the types
//! their kernels need (binding inserted the casts), and its evaluation, one Arrow kernel per
//! node over the whole batch (the values it passes around are in `value.rs`).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Datum, Int8Array, Scalar, UInt32Array, new_null_array};
use arrow::compute::kernels::boolean::{and_kleene, is_not_null, is_null, not, or_kleene};
use arrow::compute::kernels::{cmp, numeric};
use arrow::compute::{cast, filter_record_batch, take};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::functions::{self, Function};
use super::value::{Fault, Value, canonical_floats, overflow_or, select};

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arithmetic {
    Add,
    Subtract,
    Multiply,
    /// `/`: always a float division.
    Divide,
    /// `//`: truncating for integers; a zero divisor fails.
    IntegerDivide,
    /// `%`.
    Modulo,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl Comparison {
    fn apply(self, left: &dyn Datum, right: &dyn Datum) -> Result<BooleanArray, ArrowError> {
        match self {
            Comparison::Eq => cmp::eq(left, right),
            Comparison::NotEq => cmp::neq(left, right),
            Comparison::Lt => cmp::lt(left, right),
            Comparison::LtEq => cmp::lt_eq(left, right),
            Comparison::Gt => cmp::gt(left, right),
            Comparison::GtEq => cmp::gt_eq(left, right),
        }
    }
}

/// A typed expression node.
#[derive(Debug)]
pub(crate) enum Node {
    /// The input column at `index`, of `data_type`.
    Column {
        index: usize,
        data_type: DataType,
    },
    /// A literal: a one-element array.
    Literal(ArrayRef),
    /// A conversion that cannot fail (a wider number, a dictionary's values, a date to a
    /// timestamp): Arrow's cast.
    Widen {
        input: Box<Node>,
        to: DataType,
    },
    /// `cast(x as T)`, with DuckDB's rules; `text` names it in errors.
    Cast {
        input: Box<Node>,
        to: DataType,
        text: String,
    },
    Arithmetic {
        op: Arithmetic,
        left: Box<Node>,
        right: Box<Node>,
        data_type: DataType,
        text: String,
    },
    Negate {
        input: Box<Node>,
        text: String,
    },
    Compare {
        op: Comparison,
        left: Box<Node>,
        right: Box<Node>,
    },
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    IsNull {
        input: Box<Node>,
        negated: bool,
    },
    /// `x in (…)`: the list's values have `x`'s type.
    InList {
        input: Box<Node>,
        list: Vec<Node>,
        negated: bool,
    },
    /// The value of the first branch whose condition is true, else `otherwise`.
    Case {
        branches: Vec<(Node, Node)>,
        otherwise: Box<Node>,
        data_type: DataType,
    },
    /// The first argument that is not null.
    Coalesce {
        args: Vec<Node>,
        data_type: DataType,
    },
    Call {
        function: Function,
        args: Vec<Node>,
        data_type: DataType,
        text: String,
    },
}

impl Node {
    pub(crate) fn data_type(&self) -> DataType {
        match self {
            Node::Column { data_type, .. }
            | Node::Arithmetic { data_type, .. }
            | Node::Case { data_type, .. }
            | Node::Coalesce { data_type, .. }
            | Node::Call { data_type, .. } => data_type.clone(),
            Node::Literal(array) => array.data_type().clone(),
            Node::Widen { to, .. } | Node::Cast { to, .. } => to.clone(),
            Node::Negate { input, .. } => input.data_type(),
            Node::Compare { .. } | Node::And(_) | Node::Or(_) | Node::Not(_) | Node::IsNull { .. } => DataType::Boolean,
            Node::InList { .. } => DataType::Boolean,
        }
    }

    /// Whether evaluating the node can fail on some values (so that a `case` branch must
    /// see only its own rows).
    fn can_fail(&self) -> bool {
        let own = match self {
            Node::Cast { .. } => true,
            Node::Arithmetic { op, data_type, .. } => {
                data_type.is_integer() || matches!(op, Arithmetic::IntegerDivide | Arithmetic::Modulo)
            }
            Node::Negate { input, .. } => input.data_type().is_integer(),
            Node::Call { function, .. } => function.can_fail(),
            _ => false,
        };
        own || self.children().any(Node::can_fail)
    }

    fn children(&self) -> Box<dyn Iterator<Item = &Node> + '_> {
        match self {
            Node::Column { .. } | Node::Literal(_) => Box::new(std::iter::empty()),
            Node::Widen { input, .. }
            | Node::Cast { input, .. }
            | Node::Negate { input, .. }
            | Node::Not(input)
            | Node::IsNull { input, .. } => Box::new(std::iter::once(input.as_ref())),
            Node::Arithmetic { left, right, .. } | Node::Compare { left, right, .. } => {
                Box::new([left.as_ref(), right.as_ref()].into_iter())
            }
            Node::And(terms) | Node::Or(terms) => Box::new(terms.iter()),
            Node::InList { input, list, .. } => Box::new(std::iter::once(input.as_ref()).chain(list)),
            Node::Case { branches, otherwise, .. } => Box::new(
                branches.iter().flat_map(|(when, then)| [when, then]).chain(std::iter::once(otherwise.as_ref())),
            ),
            Node::Coalesce { args, .. } | Node::Call { args, .. } => Box::new(args.iter()),
        }
    }

    /// The node's value for every row of `batch`.
    pub(crate) fn evaluate(&self, batch: &RecordBatch) -> Result<Value, Fault> {
        let rows = batch.num_rows();
        Ok(match self {
            Node::Column { index, .. } => Value::Array(
                batch
                    .columns()
                    .get(*index)
                    .cloned()
                    .ok_or_else(|| ArrowError::SchemaError(format!("the batch has no column {index}")))?,
            ),
            Node::Literal(array) => Value::Scalar(array.clone()),
            Node::Widen { input, to } => input.evaluate(batch)?.map(|array| Ok(cast(array, to)?))?,
            Node::Cast { input, to, text } => {
                input.evaluate(batch)?.map(|array| functions::cast_value(array, to, text))?
            }
            Node::Arithmetic { op, left, right, data_type, text } => {
                let (left, right) = (left.evaluate(batch)?, right.evaluate(batch)?);
                let array = arithmetic(*op, &left, &right, data_type, text)?;
                Value::like(&[left, right], array)
            }
            Node::Negate { input, text } => {
                input.evaluate(batch)?.map(|array| numeric::neg(array).map_err(|error| overflow_or(error, text)))?
            }
            Node::Compare { op, left, right } => {
                let (left, right) = (normalized(left.evaluate(batch)?)?, normalized(right.evaluate(batch)?)?);
                let array: ArrayRef = Arc::new(op.apply(&left, &right)?);
                Value::like(&[left, right], array)
            }
            Node::And(terms) | Node::Or(terms) => {
                let is_and = matches!(self, Node::And(_));
                let mut terms = terms.iter();
                let first = terms.next().ok_or_else(|| ArrowError::InvalidArgumentError("empty chain".into()))?;
                let mut all = first.evaluate(batch)?.into_array(rows)?.as_boolean().clone();
                for term in terms {
                    // All false (for `and`) or all true (for `or`): so is the chain.
                    let decided = if is_and { all.true_count() == 0 } else { all.true_count() == rows };
                    if decided && all.null_count() == 0 {
                        break;
                    }
                    let term = term.evaluate(batch)?.into_array(rows)?;
                    all =
                        if is_and { and_kleene(&all, term.as_boolean())? } else { or_kleene(&all, term.as_boolean())? };
                }
                Value::Array(Arc::new(all))
            }
            Node::Not(input) => input.evaluate(batch)?.map(|array| Ok(Arc::new(not(array.as_boolean())?)))?,
            Node::IsNull { input, negated } => input
                .evaluate(batch)?
                .map(|array| Ok(Arc::new(if *negated { is_not_null(array)? } else { is_null(array)? }) as ArrayRef))?,
            Node::InList { input, list, negated } => {
                let input = normalized(input.evaluate(batch)?)?;
                let mut any: Option<BooleanArray> = None;
                for item in list {
                    let item = normalized(item.evaluate(batch)?)?;
                    let equal = cmp::eq(&input, &item)?;
                    let equal = if equal.len() == rows || rows == 0 {
                        equal
                    } else {
                        Value::Scalar(Arc::new(equal)).into_array(rows)?.as_boolean().clone()
                    };
                    any = Some(match any {
                        None => equal,
                        Some(acc) => or_kleene(&acc, &equal)?,
                    });
                }
                let any = any.ok_or_else(|| ArrowError::InvalidArgumentError("empty in-list".into()))?;
                Value::Array(Arc::new(if *negated { not(&any)? } else { any }))
            }
            Node::Case { branches, otherwise, data_type } => {
                let mut result = new_null_array(data_type, rows);
                // Rows no earlier branch took.
                let mut open = BooleanArray::new(arrow::buffer::BooleanBuffer::new_set(rows), None);
                let mut taken: Vec<(BooleanArray, &Node)> = Vec::with_capacity(branches.len() + 1);
                for (when, then) in branches {
                    if open.true_count() == 0 {
                        break;
                    }
                    let when = when.evaluate(batch)?.into_array(rows)?;
                    // Null conditions do not take the row.
                    let takes = and_kleene(&open, &is_true(when.as_boolean())?)?;
                    open = and_kleene(&open, &not(&takes)?)?;
                    taken.push((takes, then));
                }
                taken.push((open, otherwise.as_ref()));
                for (rows_taken, node) in taken.into_iter().rev() {
                    if rows_taken.true_count() == 0 {
                        continue;
                    }
                    let values = node.evaluate_where(batch, &rows_taken)?;
                    result = select(&rows_taken, &values, &result)?;
                }

                Value::Array(result)
            }
            Node::Coalesce { args, .. } => {
                let mut args = args.iter();
                let first = args.next().ok_or_else(|| ArrowError::InvalidArgumentError("empty coalesce".into()))?;
                let mut result = first.evaluate(batch)?.into_array(rows)?;
                for arg in args {
                    let missing = is_null(&result)?;
                    if missing.true_count() == 0 {
                        break;
                    }
                    let values = arg.evaluate_where(batch, &missing)?;
                    result = select(&missing, &values, &result)?;
                }
                Value::Array(result)
            }
            Node::Call { function, args, data_type, text } => {
                let args = args.iter().map(|arg| arg.evaluate(batch)).collect::<Result<Vec<_>, _>>()?;
                function.evaluate(&args, rows, data_type, text)?
            }
        })
    }

    /// The node's values on the rows of `batch` where `rows` is true (no nulls in it); the
    /// other rows are null, or whatever the node gives there when it cannot fail (a literal
    /// stays a scalar: the kernels that take the value accept one).
    fn evaluate_where(&self, batch: &RecordBatch, rows: &BooleanArray) -> Result<Value, Fault> {
        let count = rows.true_count();
        if count == rows.len() || !self.can_fail() {
            return self.evaluate(batch);
        }
        let selected = filter_record_batch(batch, rows)?;
        let values = self.evaluate(&selected)?.into_array(count)?;
        // Row i of the batch takes value j, the number of selected rows before it.
        let mut next = 0u32;
        let indices: UInt32Array = rows
            .iter()
            .map(|take| {
                take.unwrap_or(false).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        Ok(Value::Array(take(&values, &indices, None)?))
    }
}

/// True where `mask` is true; false where it is false or null.
fn is_true(mask: &BooleanArray) -> Result<BooleanArray, ArrowError> {
    match mask.nulls() {
        None => Ok(mask.clone()),
        Some(_) => Ok(BooleanArray::new(mask.values() & &is_not_null(mask)?.values().clone(), None)),
    }
}

/// Floats with `-0.0` turned into `0.0` and every `NaN` into the positive one, so that
/// Arrow's total order compares them as DuckDB does (`-0.0 = 0.0`; `NaN` equal to itself
/// and above everything, whatever its sign bit: `0.0 / 0.0` gives a negative `NaN` on x86).
fn normalized(value: Value) -> Result<Value, Fault> {
    match value.array().data_type() {
        DataType::Float64 | DataType::Float32 => value.map(|array| Ok(canonical_floats(array.clone()))),
        _ => Ok(value),
    }
}

/// `left op right`, both of `data_type` (or, for `/`, of a float type).
fn arithmetic(
    op: Arithmetic,
    left: &Value,
    right: &Value,
    data_type: &DataType,
    text: &str,
) -> Result<ArrayRef, Fault> {
    let integer = data_type.is_integer();
    let result = match op {
        Arithmetic::Add => numeric::add(left, right),
        Arithmetic::Subtract => numeric::sub(left, right),
        Arithmetic::Multiply => numeric::mul(left, right),
        Arithmetic::Divide => numeric::div(left, right),
        Arithmetic::IntegerDivide | Arithmetic::Modulo => {
            if !integer && op == Arithmetic::IntegerDivide {
                // DuckDB: a float `//` is a division, and a zero divisor fails all the same.
                let is_zero = cmp::eq(right, &Scalar::new(zero_of(data_type)))?;
                if is_zero.true_count() > 0 {
                    return Err(Fault::data(text, "division by zero", first_true(&is_zero)));
                }
            }
            if op == Arithmetic::Modulo && data_type.is_signed_integer() {
                // The smallest integer % -1 overflows in DuckDB (Arrow's remainder wraps to 0).
                let smallest = cmp::eq(left, &Scalar::new(smallest_of(data_type)?))?;
                if smallest.true_count() > 0 {
                    let minus_one = Scalar::new(cast(&(Arc::new(Int8Array::from(vec![-1])) as ArrayRef), data_type)?);
                    let minus_one = cmp::eq(right, &minus_one)?;
                    // Either side may be a scalar (one value for every row).
                    let rows = smallest.len().max(minus_one.len());
                    let widen = |mask: BooleanArray| -> Result<BooleanArray, ArrowError> {
                        if mask.len() == rows {
                            Ok(mask)
                        } else {
                            Ok(Value::Scalar(Arc::new(mask)).into_array(rows)?.as_boolean().clone())
                        }
                    };
                    let both = arrow::compute::kernels::boolean::and(&widen(smallest)?, &widen(minus_one)?)?;
                    if both.true_count() > 0 {
                        return Err(Fault::data(text, "integer overflow", first_true(&both)));
                    }
                }
            }
            if op == Arithmetic::IntegerDivide { numeric::div(left, right) } else { numeric::rem(left, right) }
        }
    };
    result.map_err(|error| match error {
        ArrowError::DivideByZero => {
            let row = cmp::eq(right, &Scalar::new(zero_of(data_type))).ok().and_then(|zero| first_true(&zero));
            Fault::data(text, "division by zero", row)
        }
        other => overflow_or(other, text),
    })
}

/// The smallest value of a signed integer type, as a one-element array.
fn smallest_of(data_type: &DataType) -> Result<ArrayRef, ArrowError> {
    let smallest: i64 = match data_type {
        DataType::Int8 => i8::MIN.into(),
        DataType::Int16 => i16::MIN.into(),
        DataType::Int32 => i32::MIN.into(),
        _ => i64::MIN,
    };
    cast(&(Arc::new(arrow::array::Int64Array::from(vec![smallest])) as ArrayRef), data_type)
}

fn zero_of(data_type: &DataType) -> ArrayRef {
    cast(&(Arc::new(Int8Array::from(vec![0])) as ArrayRef), data_type).unwrap_or_else(|_| new_null_array(data_type, 1))
}

/// The first row where `mask` is true (a scalar's row is unknown).
fn first_true(mask: &BooleanArray) -> Option<usize> {
    if mask.len() <= 1 {
        return None;
    }
    mask.iter().position(|value| value == Some(true))
}
