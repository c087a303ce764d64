//! `filter`: keep the rows where a small SQL-like predicate is true.
//!
//! The language: column names (bare, or double-quoted for odd names), numbers (`-2`,
//! `2.5`), `'strings'`, `true`/`false`, `= != <> < <= > >=`, `x [not] in (lit, …)`,
//! `x is [not] null`, `and`, `or`, `not`, parentheses, and a bare boolean column
//! (`where active`). It is parsed with the `sqlparser` crate's expression parser, checked
//! against the input schema when the step is bound, and evaluated with Arrow's vectorised
//! comparison and Kleene boolean kernels: no per-row code.
//!
//! Semantics are SQL's: a comparison involving a null is null, `and`/`or` are three-valued,
//! and only rows where the predicate is *true* are kept (null and false are dropped).
//! Numbers compare by value across integer and float types (an integer column compared with
//! `2.5` is compared as float64); strings compare with strings; date and timestamp columns
//! compare with string literals such as `'2024-01-31'`. NaN compares as Arrow orders it:
//! equal to itself and greater than every other float.
//!
//! Errors point at the offending character of the expression.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, Scalar, StringArray};
use arrow::compute::kernels::boolean::{and_kleene, not, or_kleene};
use arrow::compute::kernels::cmp;
use arrow::compute::{CastOptions, cast_with_options, filter_record_batch, is_not_null, is_null};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use sqlparser::ast::{BinaryOperator, Expr, InTarget, Spanned, UnaryOperator, Value};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token};

use crate::{BoundStep, OpError, selector};

/// `op = "filter"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    pub expr: String,
}

impl FilterSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<Filter, OpError> {
        let ast = parse(&self.expr)?;
        let predicate = Binder { text: &self.expr, schema: input }.predicate(&ast)?;
        Ok(Filter { predicate, schema: input.clone() })
    }
}

/// A bound filter.
#[derive(Debug)]
pub struct Filter {
    predicate: Predicate,
    schema: SchemaRef,
}

impl BoundStep for Filter {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mask = self.predicate.evaluate(&batch)?;
        if mask.true_count() == batch.num_rows() {
            return Ok(batch);
        }
        Ok(filter_record_batch(&batch, &mask)?)
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl Comparison {
    /// The operator with its operands swapped (`1 < x` is `x > 1`).
    fn flipped(self) -> Self {
        match self {
            Comparison::Lt => Comparison::Gt,
            Comparison::LtEq => Comparison::GtEq,
            Comparison::Gt => Comparison::Lt,
            Comparison::GtEq => Comparison::LtEq,
            other => other,
        }
    }
}

/// A value a comparison reads: a column (cast to a common type when needed) or a literal
/// built once, at bind time.
#[derive(Debug)]
enum Operand {
    Column {
        index: usize,
        cast_to: Option<DataType>,
    },
    Literal(Scalar<ArrayRef>),
    /// A column already read from the current batch.
    Array(ArrayRef),
}

/// A predicate bound to a schema.
#[derive(Debug)]
enum Predicate {
    BooleanColumn(usize),
    Compare { op: Comparison, left: Operand, right: Operand },
    InList { column: Operand, values: Vec<Operand>, negated: bool },
    IsNull { column: usize, negated: bool },
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    Not(Box<Predicate>),
}

impl Operand {
    fn compare(&self, op: Comparison, other: &Operand, batch: &RecordBatch) -> Result<BooleanArray, OpError> {
        let left = self.column(batch)?;
        let right = other.column(batch)?;
        let left: &dyn arrow::array::Datum = match (&left, self) {
            (Some(array), _) => array,
            (None, Operand::Literal(scalar)) => scalar,
            (None, Operand::Column { .. } | Operand::Array(_)) => unreachable_operand()?,
        };
        let right: &dyn arrow::array::Datum = match (&right, other) {
            (Some(array), _) => array,
            (None, Operand::Literal(scalar)) => scalar,
            (None, Operand::Column { .. } | Operand::Array(_)) => unreachable_operand()?,
        };
        Ok(match op {
            Comparison::Eq => cmp::eq(left, right)?,
            Comparison::NotEq => cmp::neq(left, right)?,
            Comparison::Lt => cmp::lt(left, right)?,
            Comparison::LtEq => cmp::lt_eq(left, right)?,
            Comparison::Gt => cmp::gt(left, right)?,
            Comparison::GtEq => cmp::gt_eq(left, right)?,
        })
    }

    /// The column's array (cast if bound so); `None` for a literal.
    fn column(&self, batch: &RecordBatch) -> Result<Option<ArrayRef>, OpError> {
        match self {
            Operand::Column { index, cast_to: None } => Ok(Some(batch.column(*index).clone())),
            Operand::Column { index, cast_to: Some(to) } => Ok(Some(arrow::compute::cast(batch.column(*index), to)?)),
            Operand::Array(array) => Ok(Some(array.clone())),
            Operand::Literal(_) => Ok(None),
        }
    }
}

fn unreachable_operand<T>() -> Result<T, OpError> {
    Err(OpError::InvalidSpec("filter: a column operand yielded no array".into()))
}

impl Predicate {
    fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray, OpError> {
        Ok(match self {
            Predicate::BooleanColumn(index) => batch
                .column(*index)
                .as_any()
                .downcast_ref::<BooleanArray>()
                .cloned()
                .ok_or_else(|| OpError::InvalidSpec("filter: boolean column changed type".into()))?,
            Predicate::Compare { op, left, right } => left.compare(*op, right, batch)?,
            Predicate::InList { column, values, negated } => {
                // The column is read (and cast, if it must be) once for the whole list.
                let array = column.column(batch)?.map(Operand::Array);
                let column = array.as_ref().unwrap_or(column);
                let mut any: Option<BooleanArray> = None;
                for value in values {
                    let equal = column.compare(Comparison::Eq, value, batch)?;
                    any = Some(match any {
                        None => equal,
                        Some(acc) => or_kleene(&acc, &equal)?,
                    });
                }
                let any = any.unwrap_or_else(|| BooleanArray::from(vec![false; batch.num_rows()]));
                if *negated { not(&any)? } else { any }
            }
            Predicate::IsNull { column, negated } => {
                let column = batch.column(*column);
                if *negated { is_not_null(column.as_ref())? } else { is_null(column.as_ref())? }
            }
            Predicate::And(left, right) => and_kleene(&left.evaluate(batch)?, &right.evaluate(batch)?)?,
            Predicate::Or(left, right) => or_kleene(&left.evaluate(batch)?, &right.evaluate(batch)?)?,
            Predicate::Not(inner) => not(&inner.evaluate(batch)?)?,
        })
    }
}

/// 0-based character position of a 1-based sqlparser location in `text`.
fn position(text: &str, location: Location) -> usize {
    if location.line == 0 {
        return 0;
    }
    let before: usize = text.split('\n').take(location.line as usize - 1).map(|line| line.chars().count() + 1).sum();
    before + (location.column as usize).saturating_sub(1)
}

/// Parses the whole expression.
fn parse(text: &str) -> Result<Expr, OpError> {
    let dialect = GenericDialect {};
    let syntax = |e: sqlparser::parser::ParserError| {
        let message = e.to_string();
        let at = message
            .rfind("Line: ")
            .and_then(|start| {
                let rest = &message[start + 6..];
                let (line, rest) = rest.split_once(", Column: ")?;
                let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
                Some(Location { line: line.trim().parse().ok()?, column: column.parse().ok()? })
            })
            .map(|location| position(text, location))
            .unwrap_or(text.chars().count());
        let message = message.split(" at Line: ").next().unwrap_or(&message).replace("sql parser error: ", "");
        OpError::filter_expr(text, at, message)
    };
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(syntax)?;
    let expr = parser.parse_expr().map_err(syntax)?;
    if let Some(keyword) = keyword_as_column(&expr) {
        return Err(OpError::filter_expr(
            text,
            position(text, keyword.span.start),
            format!("expected a column or a value, found the keyword '{}'", keyword.value),
        ));
    }
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(OpError::filter_expr(
            text,
            position(text, next.span.start),
            format!("unexpected '{}' after the expression", next.token),
        ));
    }
    Ok(expr)
}

/// The first unquoted identifier that is one of the language's keywords (`age >= and x`
/// parses with `and` as a column name), so the error can point at it.
fn keyword_as_column(expr: &Expr) -> Option<&sqlparser::ast::Ident> {
    const KEYWORDS: [&str; 6] = ["and", "or", "not", "in", "is", "null"];
    match expr {
        Expr::Identifier(ident)
            if ident.quote_style.is_none() && KEYWORDS.contains(&ident.value.to_ascii_lowercase().as_str()) =>
        {
            Some(ident)
        }
        Expr::BinaryOp { left, right, .. } => keyword_as_column(left).or_else(|| keyword_as_column(right)),
        Expr::UnaryOp { expr, .. } | Expr::Nested(expr) | Expr::IsNull(expr) | Expr::IsNotNull(expr) => {
            keyword_as_column(expr)
        }
        Expr::In { expr, target: InTarget::List(list), .. } => {
            keyword_as_column(expr).or_else(|| list.iter().find_map(keyword_as_column))
        }
        _ => None,
    }
}

/// A literal of the expression, before it is typed against a column.
enum Literal {
    Integer(i64),
    Float(f64),
    String(String),
    Boolean(bool),
}

/// Turns the parsed expression into a [`Predicate`] for one schema.
struct Binder<'a> {
    text: &'a str,
    schema: &'a Schema,
}

/// One side of a comparison, before typing.
enum Side {
    Column(usize),
    Literal(Literal),
}

impl Binder<'_> {
    fn error(&self, expr: &Expr, message: impl Into<String>) -> OpError {
        OpError::filter_expr(self.text, position(self.text, expr.span().start), message)
    }

    fn predicate(&self, expr: &Expr) -> Result<Predicate, OpError> {
        match expr {
            Expr::Nested(inner) => self.predicate(inner),
            Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
                Ok(Predicate::And(Box::new(self.predicate(left)?), Box::new(self.predicate(right)?)))
            }
            Expr::BinaryOp { left, op: BinaryOperator::Or, right } => {
                Ok(Predicate::Or(Box::new(self.predicate(left)?), Box::new(self.predicate(right)?)))
            }
            Expr::UnaryOp { op: UnaryOperator::Not, expr } => Ok(Predicate::Not(Box::new(self.predicate(expr)?))),
            Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Eq => Comparison::Eq,
                    BinaryOperator::NotEq => Comparison::NotEq,
                    BinaryOperator::Lt => Comparison::Lt,
                    BinaryOperator::LtEq => Comparison::LtEq,
                    BinaryOperator::Gt => Comparison::Gt,
                    BinaryOperator::GtEq => Comparison::GtEq,
                    other => {
                        return Err(self.error(expr, format!("unsupported in filter expressions: operator '{other}'")));
                    }
                };
                self.comparison(op, left, right)
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => match self.side(inner)? {
                Side::Column(column) => Ok(Predicate::IsNull { column, negated: matches!(expr, Expr::IsNotNull(_)) }),
                Side::Literal(_) => Err(self.error(inner, "'is null' needs a column")),
            },
            Expr::In { expr: inner, target: InTarget::List(list), negated, .. } => {
                let Side::Column(index) = self.side(inner)? else {
                    return Err(self.error(inner, "'in' needs a column on its left"));
                };
                let mut column = None;
                let mut values = Vec::with_capacity(list.len());
                for item in list {
                    let Side::Literal(literal) = self.side(item)? else {
                        return Err(self.error(item, "'in' lists take literals only"));
                    };
                    let (typed_column, value) = self.typed(index, literal, item)?;
                    column.get_or_insert(typed_column);
                    values.push(value);
                }
                let column = column.ok_or_else(|| self.error(expr, "'in' needs at least one value"))?;
                Ok(Predicate::InList { column, values, negated: *negated })
            }
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match self.side(expr)? {
                Side::Column(index) if self.schema.field(index).data_type() == &DataType::Boolean => {
                    Ok(Predicate::BooleanColumn(index))
                }
                Side::Column(index) => Err(self.error(
                    expr,
                    format!(
                        "column '{}' is {}, not a boolean: compare it with something",
                        self.schema.field(index).name(),
                        self.schema.field(index).data_type()
                    ),
                )),
                Side::Literal(_) => Err(self.error(expr, "expected a predicate")),
            },
            other => Err(self.error(other, format!("unsupported in filter expressions: {other}"))),
        }
    }

    /// A column or a literal.
    fn side(&self, expr: &Expr) -> Result<Side, OpError> {
        match expr {
            Expr::Nested(inner) => self.side(inner),
            Expr::Identifier(ident) => self.schema.index_of(&ident.value).map(Side::Column).map_err(|_| {
                self.error(
                    expr,
                    format!("unknown column '{}'; the input has: {}", ident.value, selector::column_list(self.schema)),
                )
            }),
            Expr::CompoundIdentifier(parts) => {
                let name = parts.iter().map(|p| p.value.as_str()).collect::<Vec<_>>().join(".");
                self.schema.index_of(&name).map(Side::Column).map_err(|_| {
                    self.error(
                        expr,
                        format!("unknown column '{name}'; the input has: {}", selector::column_list(self.schema)),
                    )
                })
            }
            Expr::Value(value) => match &value.value {
                Value::Number(text, _) => self.number(expr, text, false),
                Value::SingleQuotedString(text) => Ok(Side::Literal(Literal::String(text.clone()))),
                Value::Boolean(b) => Ok(Side::Literal(Literal::Boolean(*b))),
                Value::Null => {
                    Err(self.error(expr, "null never compares equal to anything; use 'is null' / 'is not null'"))
                }
                other => Err(self.error(expr, format!("unsupported literal {other}"))),
            },
            Expr::UnaryOp { op: UnaryOperator::Minus, expr: inner } => match inner.as_ref() {
                Expr::Value(value) => match &value.value {
                    Value::Number(text, _) => self.number(expr, text, true),
                    _ => Err(self.error(expr, "'-' applies to numbers only")),
                },
                _ => Err(self.error(expr, "unsupported in filter expressions: arithmetic")),
            },
            other => Err(self.error(other, format!("unsupported in filter expressions: {other}"))),
        }
    }

    fn number(&self, expr: &Expr, text: &str, negative: bool) -> Result<Side, OpError> {
        let signed = if negative { format!("-{text}") } else { text.to_string() };
        if let Ok(integer) = signed.parse::<i64>() {
            return Ok(Side::Literal(Literal::Integer(integer)));
        }
        signed
            .parse::<f64>()
            .map(|float| Side::Literal(Literal::Float(float)))
            .map_err(|_| self.error(expr, format!("'{signed}' is not a number")))
    }

    fn comparison(&self, op: Comparison, left: &Expr, right: &Expr) -> Result<Predicate, OpError> {
        match (self.side(left)?, self.side(right)?) {
            (Side::Column(a), Side::Column(b)) => {
                let (ta, tb) = (self.schema.field(a).data_type(), self.schema.field(b).data_type());
                let common = if ta == tb {
                    None
                } else if ta.is_numeric() && tb.is_numeric() {
                    Some(DataType::Float64)
                } else if is_string(ta) && is_string(tb) {
                    Some(DataType::Utf8)
                } else {
                    return Err(self.error(right, format!("cannot compare {ta} column with {tb} column")));
                };
                Ok(Predicate::Compare {
                    op,
                    left: Operand::Column { index: a, cast_to: common.clone() },
                    right: Operand::Column { index: b, cast_to: common },
                })
            }
            (Side::Column(index), Side::Literal(literal)) => {
                let (left, right) = self.typed(index, literal, right)?;
                Ok(Predicate::Compare { op, left, right })
            }
            (Side::Literal(literal), Side::Column(index)) => {
                let (column, value) = self.typed(index, literal, left)?;
                Ok(Predicate::Compare { op: op.flipped(), left: column, right: value })
            }
            (Side::Literal(_), Side::Literal(_)) => Err(self.error(left, "a comparison needs at least one column")),
        }
    }

    /// Types a literal against the column it is compared with: the column operand (cast
    /// if the comparison needs a wider type) and the literal as a scalar of that type.
    fn typed(&self, index: usize, literal: Literal, at: &Expr) -> Result<(Operand, Operand), OpError> {
        let field = self.schema.field(index);
        let column_type = field.data_type();
        let mismatch = |what: &str| {
            self.error(at, format!("cannot compare column '{}' of type {column_type} with {what}", field.name()))
        };
        let exact = |array: ArrayRef, to: &DataType| -> Option<Scalar<ArrayRef>> {
            let options = CastOptions { safe: false, ..Default::default() };
            let cast = cast_with_options(&array, to, &options).ok()?;
            let back = arrow::compute::cast(&cast, array.data_type()).ok()?;
            (back.as_ref() == array.as_ref()).then(|| Scalar::new(cast))
        };
        let column = |cast_to: Option<DataType>| Operand::Column { index, cast_to };
        match literal {
            Literal::Integer(value) if column_type.is_numeric() => {
                let array: ArrayRef = Arc::new(Int64Array::from(vec![value]));
                match exact(array, column_type) {
                    Some(scalar) => Ok((column(None), Operand::Literal(scalar))),
                    None => Ok((column(Some(DataType::Float64)), Operand::Literal(float_scalar(value as f64)))),
                }
            }
            Literal::Float(value) if column_type.is_numeric() => {
                if column_type == &DataType::Float64 {
                    Ok((column(None), Operand::Literal(float_scalar(value))))
                } else {
                    Ok((column(Some(DataType::Float64)), Operand::Literal(float_scalar(value))))
                }
            }
            Literal::Integer(_) | Literal::Float(_) => Err(mismatch("a number")),
            Literal::Boolean(value) if column_type == &DataType::Boolean => {
                Ok((column(None), Operand::Literal(Scalar::new(Arc::new(BooleanArray::from(vec![value])) as ArrayRef))))
            }
            Literal::Boolean(_) => Err(mismatch("a boolean")),
            Literal::String(text) if is_string(column_type) || is_temporal(column_type) => {
                let array: ArrayRef = Arc::new(StringArray::from(vec![text.clone()]));
                let options = CastOptions { safe: false, ..Default::default() };
                let cast = cast_with_options(&array, column_type, &options)
                    .map_err(|_| self.error(at, format!("'{text}' is not a valid {column_type}")))?;
                Ok((column(None), Operand::Literal(Scalar::new(cast))))
            }
            Literal::String(_) => Err(mismatch("a string")),
        }
    }
}

fn float_scalar(value: f64) -> Scalar<ArrayRef> {
    Scalar::new(Arc::new(Float64Array::from(vec![value])) as ArrayRef)
}

fn is_string(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_temporal(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, Int32Array};
    use arrow::datatypes::Field;

    /// id, age (int32), income (float64), country (utf8), active (bool), score (float32).
    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("age", DataType::Int32, true),
            Field::new("income", DataType::Float64, true),
            Field::new("country", DataType::Utf8, true),
            Field::new("active", DataType::Boolean, true),
            Field::new("score", DataType::Float32, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![0, 1, 2, 3, 4, 5])),
                Arc::new(Int32Array::from(vec![Some(30), Some(17), None, Some(40), Some(2), Some(55)])),
                Arc::new(Float64Array::from(vec![Some(1.0), Some(2.0), Some(3.0), None, Some(2.5), None])),
                Arc::new(StringArray::from(vec![Some("DE"), Some("FR"), Some("US"), Some("US"), None, None])),
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true), Some(true), Some(false)])),
                Arc::new(Float32Array::from(vec![Some(0.5), Some(2.0), Some(2.5), None, Some(3.0), Some(-1.0)])),
            ],
        )
        .unwrap()
    }

    fn ids(expr: &str) -> Vec<i64> {
        let input = batch();
        let filter = FilterSpec { expr: expr.into() }.bind(&input.schema()).unwrap();
        let out = filter.apply(input).unwrap();
        out.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()
    }

    fn error(expr: &str) -> OpError {
        FilterSpec { expr: expr.into() }.bind(&batch().schema()).unwrap_err()
    }

    fn caret(err: &OpError) -> usize {
        match err {
            OpError::FilterExpr { caret, .. } => caret.len() - 1,
            other => panic!("not a filter error: {other}"),
        }
    }

    #[test]
    fn the_design_example_with_nulls() {
        // age >= 18: rows 0, 3, 5 (row 2 is null). country in (DE, FR): row 0 true, 3 false,
        // 5 null; income is not null: 0 true, 3 false, 5 false. So 0 (true), 3 (false), 5 (null).
        assert_eq!(ids("age >= 18 and (country in ('DE', 'FR') or income is not null)"), vec![0]);
    }

    #[test]
    fn three_valued_logic_drops_null_and_false() {
        assert_eq!(ids("not (age > 18)"), vec![1, 4]); // row 2 (null age) is dropped
        assert_eq!(ids("age > 18 or income > 2"), vec![0, 2, 3, 4, 5]);
        assert_eq!(ids("country != 'US'"), vec![0, 1]);
    }

    #[test]
    fn integers_compare_with_floats_by_value() {
        assert_eq!(ids("age > 29.5"), vec![0, 3, 5]);
        assert_eq!(ids("age = 30.0"), vec![0]);
        assert_eq!(ids("age < 3000000000"), vec![0, 1, 3, 4, 5]);
        assert_eq!(ids("-1 < score"), vec![0, 1, 2, 4]);
        assert_eq!(ids("score >= 2.5"), vec![2, 4]);
    }

    #[test]
    fn in_and_not_in() {
        assert_eq!(ids("country in ('US', 'JP')"), vec![2, 3]);
        assert_eq!(ids("country not in ('US')"), vec![0, 1]);
        assert_eq!(ids("age in (2, 17)"), vec![1, 4]);
    }

    #[test]
    fn is_null_and_is_not_null() {
        assert_eq!(ids("income is null"), vec![3, 5]);
        assert_eq!(ids("country is not null and age is not null"), vec![0, 1, 3]);
    }

    #[test]
    fn column_against_column() {
        assert_eq!(ids("income > score"), vec![0, 2]);
        assert_eq!(ids("age > id"), vec![0, 1, 3, 5]);
    }

    #[test]
    fn bare_boolean_columns() {
        assert_eq!(ids("active"), vec![0, 3, 4]);
        assert_eq!(ids("not active"), vec![1, 5]);
        assert_eq!(ids("active = false"), vec![1, 5]);
    }

    #[test]
    fn parse_errors_point_at_the_character() {
        let err = error("age >= and x");
        assert_eq!(caret(&err), 7, "{err}");
        let err = error("age > 1 2");
        assert_eq!(caret(&err), 8, "{err}");
    }

    #[test]
    fn unknown_columns_are_named_and_pointed_at() {
        let err = error("age > 1 and wage < 3");
        assert_eq!(caret(&err), 12);
        let message = err.to_string();
        assert!(message.contains("'wage'") && message.contains("id, age, income"), "{message}");
    }

    #[test]
    fn type_errors() {
        let err = error("country > 3");
        assert!(err.to_string().contains("cannot compare column 'country'"), "{err}");
        assert_eq!(caret(&err), 10);
        assert!(error("age").to_string().contains("not a boolean"));
        assert!(error("age in (1, 'x')").to_string().contains("a string"));
    }

    #[test]
    fn unsupported_constructs_are_refused() {
        assert!(error("abs(age) > 1").to_string().contains("unsupported"));
        assert!(error("age + 1 > 2").to_string().contains("unsupported"));
        assert!(error("age = null").to_string().contains("is null"));
    }

    #[test]
    fn an_empty_batch_stays_empty() {
        let input = batch().slice(0, 0);
        let filter = FilterSpec { expr: "age > 1".into() }.bind(&input.schema()).unwrap();
        assert_eq!(filter.apply(input).unwrap().num_rows(), 0);
    }
}
