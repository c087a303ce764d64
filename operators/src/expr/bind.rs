//! Binding: from sqlparser's AST to a typed [`Node`] tree for one input schema. Types follow
//! DuckDB's rules (see the [module docs](super)); every operand is given the type its
//! kernel needs here, so evaluation never meets a type it does not expect.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Schema, TimeUnit, TimestampMicrosecondType};
use sqlparser::ast::{
    BinaryOperator, CastKind, CeilFloorKind, DateTimeField, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    InTarget, Spanned, TrimWhereField, UnaryOperator, Value as SqlValue,
};

use super::functions::{Field, Function, Unit};
use super::node::{Arithmetic, Comparison, Node};
use super::parse::{chain, expr_error, position};
use super::value::sql_type;
use crate::{OpError, selector};

/// The most arguments a function call, `in` list or `case` may have.
const MAX_ARGUMENTS: usize = 1000;
/// The deepest an expression may nest (`a + b + c` is two levels; `and` / `or` chains are
/// flat): binding and evaluation recurse once per level, and must fit a thread's stack.
pub const MAX_DEPTH: usize = 128;

/// The type an expression reads a column of `data_type` as: strings as `varchar`, decimals
/// as `double`, dates as `date`, timestamps in microseconds.
fn read_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Dictionary(_, values) => read_type(values),
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..) => {
            DataType::Float64
        }
        DataType::Float16 => DataType::Float32,
        DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, zone) => DataType::Timestamp(TimeUnit::Microsecond, zone.clone()),
        other => other.clone(),
    }
}

/// How a literal may still adapt to the operand it meets (DuckDB's literal types).
#[derive(Debug, Clone)]
enum Flex {
    /// A value of a column or a computation: its type is fixed.
    Fixed,
    /// An integer literal: takes an integer type it fits, or any float type.
    Integer(i64),
    /// A decimal literal: takes a float type.
    Float,
    /// A string literal: read as a date or timestamp when compared with one.
    String(String),
    /// `null`: takes any type.
    Null,
}

/// A bound operand and how its type may still adapt.
struct Typed {
    node: Node,
    flex: Flex,
}

impl Typed {
    fn fixed(node: Node) -> Typed {
        Typed { node, flex: Flex::Fixed }
    }

    fn data_type(&self) -> DataType {
        self.node.data_type()
    }
}

fn is_numeric(data_type: &DataType) -> bool {
    data_type.is_integer() || data_type.is_floating()
}

fn is_temporal(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Date32 | DataType::Timestamp(..))
}

fn integer_width(data_type: &DataType) -> u32 {
    match data_type {
        DataType::Int8 | DataType::UInt8 => 8,
        DataType::Int16 | DataType::UInt16 => 16,
        DataType::Int32 | DataType::UInt32 => 32,
        _ => 64,
    }
}

fn signed_of_width(bits: u32) -> DataType {
    match bits {
        0..=8 => DataType::Int8,
        9..=16 => DataType::Int16,
        17..=32 => DataType::Int32,
        _ => DataType::Int64,
    }
}

/// The type two fixed types meet in, if any (DuckDB's implicit casts, without strings
/// becoming numbers).
fn promote(a: &DataType, b: &DataType) -> Option<DataType> {
    if a == b {
        return Some(a.clone());
    }
    match (a, b) {
        (DataType::Null, other) | (other, DataType::Null) => Some(other.clone()),
        (a, b) if is_numeric(a) && is_numeric(b) => Some(if a == &DataType::Float64 || b == &DataType::Float64 {
            DataType::Float64
        } else if a == &DataType::Float32 || b == &DataType::Float32 {
            DataType::Float32
        } else if a.is_unsigned_integer() == b.is_unsigned_integer() {
            if integer_width(a) >= integer_width(b) { a.clone() } else { b.clone() }
        } else {
            let (signed, unsigned) = if a.is_unsigned_integer() { (b, a) } else { (a, b) };
            match integer_width(unsigned) {
                // No signed integer holds every UBIGINT (DuckDB goes to HUGEINT).
                64 => DataType::Float64,
                bits => signed_of_width(integer_width(signed).max(2 * bits)),
            }
        }),
        (DataType::Date32, DataType::Timestamp(_, zone)) | (DataType::Timestamp(_, zone), DataType::Date32) => {
            Some(DataType::Timestamp(TimeUnit::Microsecond, zone.clone()))
        }
        _ => None,
    }
}

/// Whether the integer `value` fits `data_type`.
fn fits(value: i64, data_type: &DataType) -> bool {
    let bits = integer_width(data_type);
    if data_type.is_unsigned_integer() {
        value >= 0 && (bits == 64 || value < (1i64 << bits))
    } else {
        bits == 64 || (value >= -(1i64 << (bits - 1)) && value < (1i64 << (bits - 1)))
    }
}

/// Turns the parsed expression into a [`Node`] tree for one schema.
pub(crate) struct Binder<'a> {
    text: &'a str,
    schema: &'a Schema,
    /// How deep the expression being bound is nested here.
    depth: std::cell::Cell<usize>,
}

impl<'a> Binder<'a> {
    pub(crate) fn new(text: &'a str, schema: &'a Schema) -> Binder<'a> {
        Binder { text, schema, depth: std::cell::Cell::new(0) }
    }

    fn error(&self, expr: &Expr, message: impl Into<String>) -> OpError {
        expr_error(self.text, position(self.text, expr.span().start), message)
    }

    /// The whole expression, as a value of a definite type.
    pub(crate) fn bind_value(&self, expr: &Expr) -> Result<Node, OpError> {
        let typed = self.bind(expr)?;
        if typed.data_type() == DataType::Null {
            return Err(self.error(expr, "the expression is always null; give it a type with cast(null as double)"));
        }
        Ok(typed.node)
    }

    fn bind(&self, expr: &Expr) -> Result<Typed, OpError> {
        let depth = self.depth.get() + 1;
        if depth > MAX_DEPTH {
            // Not `expr.span()`: finding it walks the whole (deep) subtree.
            return Err(expr_error(
                self.text,
                0,
                format!("the expression nests deeper than {MAX_DEPTH} levels; split it across two derive steps"),
            ));
        }
        self.depth.set(depth);
        let bound = self.bind_at_depth(expr);
        self.depth.set(depth - 1);
        bound
    }

    fn bind_at_depth(&self, expr: &Expr) -> Result<Typed, OpError> {
        match expr {
            Expr::Nested(inner) => self.bind(inner),
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => self.column(expr),
            Expr::Value(value) => self.literal(expr, &value.value, false),
            Expr::TypedString(typed) => {
                let to = self.type_name(expr, &typed.data_type)?;
                let SqlValue::SingleQuotedString(text) = &typed.value.value else {
                    return Err(self.error(expr, "a typed literal takes a 'string'"));
                };
                let literal = Typed {
                    node: Node::Literal(Arc::new(StringArray::from(vec![text.as_str()]))),
                    flex: Flex::String(text.clone()),
                };
                Ok(Typed::fixed(self.convert(literal, &to, expr)?))
            }
            Expr::UnaryOp { op, expr: inner } => self.unary(expr, *op, inner),
            Expr::BinaryOp { left, op, right } => self.binary(expr, left, op, right),
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                let input = self.bind(inner)?;
                Ok(Typed::fixed(Node::IsNull {
                    input: Box::new(input.node),
                    negated: matches!(expr, Expr::IsNotNull(_)),
                }))
            }
            Expr::In { expr: inner, target: InTarget::List(list), negated, .. } => {
                if list.is_empty() || list.len() > MAX_ARGUMENTS {
                    return Err(self.error(expr, format!("an 'in' list needs 1 to {MAX_ARGUMENTS} values")));
                }
                let mut operands = vec![(self.bind(inner)?, inner.as_ref())];
                for item in list {
                    operands.push((self.bind(item)?, item));
                }
                let mut nodes = self.unify_all(operands, "compare")?.into_iter();
                let input = nodes.next().ok_or_else(|| OpError::Internal("empty in-list".into()))?;
                Ok(Typed::fixed(Node::InList { input: Box::new(input), list: nodes.collect(), negated: *negated }))
            }
            Expr::Between { expr: inner, negated, low, high } => {
                let low = self.comparison(Comparison::GtEq, inner, low)?;
                let high = self.comparison(Comparison::LtEq, inner, high)?;
                let both = Node::And(vec![low, high]);
                Ok(Typed::fixed(if *negated { Node::Not(Box::new(both)) } else { both }))
            }
            Expr::Case { operand, conditions, else_result, .. } => {
                self.case(expr, operand.as_deref(), conditions, else_result.as_deref())
            }
            Expr::Cast { kind, expr: inner, data_type, format } => {
                if format.is_some() || matches!(kind, CastKind::TryCast | CastKind::SafeCast) {
                    return Err(self.error(expr, "only cast(x as T) and x::T are supported"));
                }
                let to = self.type_name(expr, data_type)?;
                let input = self.bind(inner)?;
                self.cast(input, &to, expr)
            }
            Expr::Function(function) => self.function(expr, function),
            Expr::Extract { field, expr: inner, .. } => {
                let field = self.field(expr, &field_name(field))?;
                let input = self.temporal(inner)?;
                Ok(self.call(
                    expr,
                    Function::DatePart(field),
                    vec![input],
                    if field == Field::Epoch { DataType::Float64 } else { DataType::Int64 },
                ))
            }
            Expr::Substring { expr: inner, substring_from, substring_for, .. } => {
                let mut args = vec![self.string(inner)?];
                let from = substring_from.as_deref().ok_or_else(|| self.error(expr, "substring needs a start"))?;
                args.push(self.integer(from)?);
                if let Some(length) = substring_for {
                    args.push(self.integer(length)?);
                }
                Ok(self.call(expr, Function::Substring, args, DataType::Utf8))
            }
            Expr::Trim { trim_where, trim_what, expr: inner, trim_characters } => {
                if trim_what.is_some() || trim_characters.is_some() {
                    return Err(self.error(expr, "trim removes spaces; trimming other characters is not supported"));
                }
                let (start, end) = match trim_where {
                    None | Some(TrimWhereField::Both) => (true, true),
                    Some(TrimWhereField::Leading) => (true, false),
                    Some(TrimWhereField::Trailing) => (false, true),
                };
                let input = self.string(inner)?;
                Ok(self.call(expr, Function::Trim { start, end }, vec![input], DataType::Utf8))
            }
            Expr::Ceil { expr: inner, field } | Expr::Floor { expr: inner, field } => {
                if !matches!(field, CeilFloorKind::DateTimeField(DateTimeField::NoDateTime)) {
                    return Err(self.error(expr, "floor and ceil take one number"));
                }
                let function = if matches!(expr, Expr::Ceil { .. }) { Function::Ceil } else { Function::Floor };
                self.floor_or_ceil(expr, function, inner)
            }
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::In { .. } => {
                Err(self.error(expr, "subqueries are not supported in expressions"))
            }
            Expr::Like { negated, any: false, expr: inner, pattern, escape_char }
            | Expr::ILike { negated, any: false, expr: inner, pattern, escape_char } => {
                let input = self.string(inner)?;
                let text = self.string_literal(pattern)?;
                let escape = match escape_char.as_deref() {
                    None => None,
                    Some(escape) => {
                        let escape = self.string_literal(escape)?;
                        let mut chars = escape.chars();
                        match (chars.next(), chars.next()) {
                            (one, None) => one,
                            _ => return Err(self.error(expr, "an escape is one character")),
                        }
                    }
                };
                let regex = super::functions::like_regex(&text, escape, matches!(expr, Expr::ILike { .. }))
                    .map_err(|message| self.error(pattern, format!("invalid pattern: {message}")))?;
                let like = self.call(expr, Function::Like(regex), vec![input], DataType::Boolean);
                Ok(if *negated { Typed::fixed(Node::Not(Box::new(like.node))) } else { like })
            }
            Expr::Position { expr: part, r#in } => {
                let args = vec![self.string(r#in)?, self.string(part)?];
                Ok(self.call(expr, Function::StrPos, args, DataType::Int64))
            }
            Expr::Like { .. } | Expr::ILike { .. } | Expr::SimilarTo { .. } | Expr::RLike { .. } => {
                Err(self.error(expr, "only [not] like / ilike 'pattern' [escape 'c'] is supported; see regexp_matches"))
            }
            _ => Err(self.error(expr, format!("unsupported in expressions: {expr}"))),
        }
    }

    /// The column an identifier names, read as [`read_type`] says.
    fn column(&self, expr: &Expr) -> Result<Typed, OpError> {
        let name = match expr {
            Expr::Identifier(ident) => ident.value.clone(),
            Expr::CompoundIdentifier(parts) => {
                parts.iter().map(|part| part.value.as_str()).collect::<Vec<_>>().join(".")
            }
            _ => return Err(OpError::Internal("not a column".into())),
        };
        let Ok(index) = self.schema.index_of(&name) else {
            let mut message = format!("unknown column '{name}'; the input has: {}", selector::column_list(self.schema));
            if let Some(field) = self.schema.fields().iter().find(|field| field.name().eq_ignore_ascii_case(&name)) {
                message.push_str(&format!(" (did you mean '{}'? names are case-sensitive)", field.name()));
            }
            return Err(self.error(expr, message));
        };
        let data_type = self.schema.field(index).data_type().clone();
        let read = read_type(&data_type);
        let node = Node::Column { index, data_type: data_type.clone() };
        Ok(Typed::fixed(if read == data_type { node } else { Node::Widen { input: Box::new(node), to: read } }))
    }

    fn literal(&self, expr: &Expr, value: &SqlValue, negative: bool) -> Result<Typed, OpError> {
        let sign = if negative { "-" } else { "" };
        Ok(match value {
            SqlValue::Number(number, _) => {
                let text = format!("{sign}{number}");
                if let Ok(integer) = text.parse::<i64>() {
                    let node = match i32::try_from(integer) {
                        Ok(small) => Node::Literal(Arc::new(Int32Array::from(vec![small]))),
                        Err(_) => Node::Literal(Arc::new(Int64Array::from(vec![integer]))),
                    };
                    Typed { node, flex: Flex::Integer(integer) }
                } else {
                    match text.parse::<f64>() {
                        Ok(float) if float.is_finite() => {
                            Typed { node: Node::Literal(Arc::new(Float64Array::from(vec![float]))), flex: Flex::Float }
                        }
                        _ => return Err(self.error(expr, format!("'{text}' is not a number Weir can represent"))),
                    }
                }
            }
            _ if negative => return Err(self.error(expr, "'-' applies to numbers only")),
            SqlValue::SingleQuotedString(text) => Typed {
                node: Node::Literal(Arc::new(StringArray::from(vec![text.as_str()]))),
                flex: Flex::String(text.clone()),
            },
            SqlValue::Boolean(value) => Typed::fixed(Node::Literal(Arc::new(BooleanArray::from(vec![*value])))),
            SqlValue::Null => Typed { node: Node::Literal(new_null_array(&DataType::Null, 1)), flex: Flex::Null },
            other => return Err(self.error(expr, format!("unsupported literal {other}"))),
        })
    }

    fn unary(&self, expr: &Expr, op: UnaryOperator, inner: &Expr) -> Result<Typed, OpError> {
        match op {
            UnaryOperator::Not => {
                let input = self.boolean(inner)?;
                Ok(Typed::fixed(Node::Not(Box::new(input))))
            }
            UnaryOperator::Plus => {
                let input = self.bind(inner)?;
                if !is_numeric(&input.data_type()) {
                    return Err(
                        self.error(expr, format!("'+' applies to numbers, not {}", sql_type(&input.data_type())))
                    );
                }
                Ok(input)
            }
            UnaryOperator::Minus => {
                let literal = match inner {
                    Expr::Value(value) => Some(&value.value),
                    _ => None,
                };
                if let Some(value @ SqlValue::Number(..)) = literal {
                    return self.literal(expr, value, true);
                }
                let input = self.bind(inner)?;
                let data_type = input.data_type();
                if !is_numeric(&data_type) && data_type != DataType::Null {
                    return Err(self.error(expr, format!("'-' applies to numbers, not {}", sql_type(&data_type))));
                }
                Ok(Typed::fixed(Node::Negate { input: Box::new(input.node), text: expr.to_string() }))
            }
            other => Err(self.error(expr, format!("unsupported operator '{other}'"))),
        }
    }

    fn binary(&self, expr: &Expr, left: &Expr, op: &BinaryOperator, right: &Expr) -> Result<Typed, OpError> {
        let comparison = match op {
            BinaryOperator::Eq => Some(Comparison::Eq),
            BinaryOperator::NotEq => Some(Comparison::NotEq),
            BinaryOperator::Lt => Some(Comparison::Lt),
            BinaryOperator::LtEq => Some(Comparison::LtEq),
            BinaryOperator::Gt => Some(Comparison::Gt),
            BinaryOperator::GtEq => Some(Comparison::GtEq),
            _ => None,
        };
        if let Some(comparison) = comparison {
            // `x = null` is null for every row: almost always meant as `x is null`.
            let is_null = |side: &&&Expr| matches!(side, Expr::Value(value) if value.value == SqlValue::Null);
            if let Some(null) = [left, right].iter().find(is_null) {
                return Err(self
                    .error(null, "a comparison with null is null for every row; use 'x is null' or 'x is not null'"));
            }
            return Ok(Typed::fixed(self.comparison(comparison, left, right)?));
        }
        let arithmetic = match op {
            BinaryOperator::Plus => Arithmetic::Add,
            BinaryOperator::Minus => Arithmetic::Subtract,
            BinaryOperator::Multiply => Arithmetic::Multiply,
            BinaryOperator::Divide => Arithmetic::Divide,
            BinaryOperator::DuckIntegerDivide => Arithmetic::IntegerDivide,
            BinaryOperator::Modulo => Arithmetic::Modulo,
            BinaryOperator::And | BinaryOperator::Or => {
                let terms =
                    chain(expr, op).into_iter().map(|term| self.boolean(term)).collect::<Result<Vec<_>, _>>()?;
                return Ok(Typed::fixed(if *op == BinaryOperator::And { Node::And(terms) } else { Node::Or(terms) }));
            }
            BinaryOperator::StringConcat => {
                let args = vec![self.as_string(left)?, self.as_string(right)?];
                return Ok(self.call(expr, Function::ConcatOperator, args, DataType::Utf8));
            }
            other => return Err(self.error(expr, format!("unsupported operator '{other}'"))),
        };
        let (l, r) = (self.bind(left)?, self.bind(right)?);
        let (lt, rt) = (l.data_type(), r.data_type());
        let numeric = |t: &DataType| is_numeric(t) || t == &DataType::Null;
        if !numeric(&lt) || !numeric(&rt) {
            let hint = if is_temporal(&lt) && is_temporal(&rt) { "; use date_diff('day', a, b)" } else { "" };
            return Err(
                self.error(expr, format!("cannot apply '{op}' to {} and {}{hint}", sql_type(&lt), sql_type(&rt)))
            );
        }
        let common = self.meet(&l, &r).unwrap_or(DataType::Int32);
        let common = if common == DataType::Null { DataType::Int32 } else { common };
        let data_type = match arithmetic {
            Arithmetic::Divide if common != DataType::Float32 => DataType::Float64,
            _ => common,
        };
        let left = self.convert(l, &data_type, left)?;
        let right = self.convert(r, &data_type, right)?;
        Ok(Typed::fixed(Node::Arithmetic {
            op: arithmetic,
            left: Box::new(left),
            right: Box::new(right),
            data_type,
            text: expr.to_string(),
        }))
    }

    fn comparison(&self, op: Comparison, left: &Expr, right: &Expr) -> Result<Node, OpError> {
        let operands = vec![(self.bind(left)?, left), (self.bind(right)?, right)];
        let mut nodes = self.unify_all(operands, "compare")?.into_iter();
        match (nodes.next(), nodes.next()) {
            (Some(left), Some(right)) => Ok(Node::Compare { op, left: Box::new(left), right: Box::new(right) }),
            _ => Err(OpError::Internal("a comparison lost an operand".into())),
        }
    }

    /// The type two operands meet in: a literal adapts to the other operand.
    fn meet(&self, a: &Typed, b: &Typed) -> Option<DataType> {
        let adapt = |literal: &Flex, other: &Typed| -> Option<Option<DataType>> {
            let target = other.data_type();
            if !matches!(other.flex, Flex::Fixed) {
                return None;
            }
            match literal {
                Flex::Null => Some(Some(target)),
                Flex::Integer(value) if target.is_integer() && fits(*value, &target) => Some(Some(target)),
                Flex::Integer(_) | Flex::Float if target.is_floating() => Some(Some(target)),
                Flex::String(_) if is_temporal(&target) => Some(Some(target)),
                _ => None,
            }
        };
        if let Some(found) = adapt(&a.flex, b).or_else(|| adapt(&b.flex, a)) {
            return found;
        }
        promote(&a.data_type(), &b.data_type())
    }

    /// Gives every operand the one type they meet in, or an error naming the first that does not.
    fn unify_all(&self, operands: Vec<(Typed, &Expr)>, verb: &str) -> Result<Vec<Node>, OpError> {
        let mut common: Option<Typed> = None;
        for (operand, at) in &operands {
            common = Some(match common {
                None => {
                    Typed { node: Node::Literal(new_null_array(&operand.data_type(), 1)), flex: operand.flex.clone() }
                }
                Some(sofar) => {
                    let Some(meet) = self.meet(&sofar, operand) else {
                        let (first, first_at) = &operands[0];
                        return Err(self.error(
                            at,
                            format!("cannot {verb} {} with {}", describe(first, first_at), describe(operand, at)),
                        ));
                    };
                    // The running type stays a literal only while every operand so far is one.
                    let flex = match (&sofar.flex, &operand.flex) {
                        (Flex::Null, other) | (other, Flex::Null) => other.clone(),
                        (Flex::Fixed, _) | (_, Flex::Fixed) => Flex::Fixed,
                        (a, _) => a.clone(),
                    };
                    Typed { node: Node::Literal(new_null_array(&meet, 1)), flex }
                }
            });
        }
        let mut target = common.map(|typed| typed.data_type()).unwrap_or(DataType::Null);
        if target == DataType::Null {
            target = DataType::Int32;
        }
        operands.into_iter().map(|(operand, at)| self.convert(operand, &target, at)).collect()
    }

    /// `typed` as a value of `to`: a literal converted now, a column widened per batch.
    fn convert(&self, typed: Typed, to: &DataType, at: &Expr) -> Result<Node, OpError> {
        if &typed.data_type() == to {
            return Ok(typed.node);
        }
        if let Node::Literal(array) = &typed.node {
            let strict = CastOptions { safe: false, ..Default::default() };
            let converted = cast_with_options(array, to, &strict).or_else(|error| match to {
                // A wall-clock time the zone skips or repeats: resolved as DuckDB does.
                DataType::Timestamp(_, Some(zone)) if array.data_type() == &DataType::Utf8 => {
                    let naive = cast_with_options(array, &DataType::Timestamp(TimeUnit::Microsecond, None), &strict)?;
                    let micros = naive.as_primitive::<TimestampMicrosecondType>().value(0);
                    let resolved = super::functions::wall_clock_in(micros, zone).ok_or(error)?;
                    let resolved = TimestampMicrosecondArray::from(vec![resolved]).with_timezone(zone.clone());
                    cast_with_options(&(Arc::new(resolved) as ArrayRef), to, &strict)
                }
                _ => Err(error),
            });
            let converted = converted.map_err(|_| {
                let shown = match &typed.flex {
                    Flex::String(text) => format!("'{text}'"),
                    _ => at.to_string(),
                };
                self.error(at, format!("{shown} is not a valid {}", sql_type(to)))
            })?;
            return Ok(Node::Literal(converted));
        }
        match promote(&typed.data_type(), to) {
            Some(promoted) if &promoted == to => Ok(Node::Widen { input: Box::new(typed.node), to: to.clone() }),
            _ => Err(self.error(
                at,
                format!(
                    "{} is {}, not {}; convert it with cast(… as {})",
                    at,
                    sql_type(&typed.data_type()),
                    sql_type(to),
                    sql_type(to)
                ),
            )),
        }
    }

    /// An explicit `cast`: to the same type is nothing; a literal is converted now.
    fn cast(&self, input: Typed, to: &DataType, expr: &Expr) -> Result<Typed, OpError> {
        let from = input.data_type();
        if &from == to {
            return Ok(Typed::fixed(input.node));
        }
        let castable = |from: &DataType| {
            from == &DataType::Null
                || ((is_numeric(from) || from == &DataType::Utf8 || from == &DataType::Boolean)
                    && (is_numeric(to) || to == &DataType::Utf8 || to == &DataType::Boolean))
                || (from == &DataType::Utf8 && is_temporal(to))
                || (is_temporal(from) && (is_temporal(to) || to == &DataType::Utf8))
        };
        if !castable(&from) {
            return Err(self.error(expr, format!("cannot cast {} to {}", sql_type(&from), sql_type(to))));
        }
        if let (Node::Literal(_), Flex::Null) = (&input.node, &input.flex) {
            return Ok(Typed::fixed(Node::Literal(new_null_array(to, 1))));
        }
        Ok(Typed::fixed(Node::Cast { input: Box::new(input.node), to: to.clone(), text: expr.to_string() }))
    }

    /// A SQL type name of `cast` as an Arrow type (DuckDB's names).
    fn type_name(&self, expr: &Expr, data_type: &sqlparser::ast::DataType) -> Result<DataType, OpError> {
        let name = data_type.to_string().to_ascii_lowercase();
        let base = name.split('(').next().unwrap_or("").trim();
        Ok(match base {
            "boolean" | "bool" | "logical" => DataType::Boolean,
            "tinyint" | "int1" => DataType::Int8,
            "smallint" | "int2" | "short" => DataType::Int16,
            "integer" | "int" | "int4" | "signed" => DataType::Int32,
            "bigint" | "int8" | "long" => DataType::Int64,
            "utinyint" => DataType::UInt8,
            "usmallint" => DataType::UInt16,
            "uinteger" => DataType::UInt32,
            "ubigint" => DataType::UInt64,
            "float" | "real" | "float4" => DataType::Float32,
            "double" | "double precision" | "float8" => DataType::Float64,
            "varchar" | "text" | "string" | "char" | "bpchar" | "character varying" => DataType::Utf8,
            "date" => DataType::Date32,
            "timestamp" | "datetime" | "timestamp without time zone" => {
                DataType::Timestamp(TimeUnit::Microsecond, None)
            }
            _ => {
                return Err(self.error(
                    expr,
                    format!(
                        "unsupported type {data_type}; expected boolean, tinyint, smallint, integer, bigint, utinyint, \
                         usmallint, uinteger, ubigint, float, double, varchar, date or timestamp"
                    ),
                ));
            }
        })
    }

    fn boolean(&self, expr: &Expr) -> Result<Node, OpError> {
        let typed = self.bind(expr)?;
        match typed.data_type() {
            DataType::Boolean => Ok(typed.node),
            DataType::Null => Ok(Node::Literal(new_null_array(&DataType::Boolean, 1))),
            other => Err(self.error(expr, format!("expected a boolean, found {}: {expr}", sql_type(&other)))),
        }
    }

    /// A `varchar` operand (or null).
    fn string(&self, expr: &Expr) -> Result<Node, OpError> {
        let typed = self.bind(expr)?;
        match typed.data_type() {
            DataType::Utf8 => Ok(typed.node),
            DataType::Null => Ok(Node::Literal(new_null_array(&DataType::Utf8, 1))),
            other => Err(self.error(
                expr,
                format!("expected a string, found {}; convert it with cast({expr} as varchar)", sql_type(&other)),
            )),
        }
    }

    /// Any operand as a `varchar` (as `||` and `concat` take them).
    fn as_string(&self, expr: &Expr) -> Result<Node, OpError> {
        let typed = self.bind(expr)?;
        match typed.data_type() {
            DataType::Utf8 => Ok(typed.node),
            DataType::Null => Ok(Node::Literal(new_null_array(&DataType::Utf8, 1))),
            _ => Ok(self.cast(typed, &DataType::Utf8, expr)?.node),
        }
    }

    /// A `bigint` operand (an integer of any width).
    fn integer(&self, expr: &Expr) -> Result<Node, OpError> {
        let typed = self.bind(expr)?;
        let data_type = typed.data_type();
        if !data_type.is_integer() && data_type != DataType::Null {
            return Err(self.error(expr, format!("expected an integer, found {}", sql_type(&data_type))));
        }
        self.convert(typed, &DataType::Int64, expr)
    }

    /// A `double` operand (any number).
    fn double(&self, expr: &Expr) -> Result<Node, OpError> {
        let typed = self.bind(expr)?;
        let data_type = typed.data_type();
        if !is_numeric(&data_type) && data_type != DataType::Null {
            return Err(self.error(expr, format!("expected a number, found {}", sql_type(&data_type))));
        }
        self.convert(typed, &DataType::Float64, expr)
    }

    /// A number operand of its own type (an integer literal as an `integer`).
    fn number(&self, expr: &Expr) -> Result<Node, OpError> {
        let typed = self.bind(expr)?;
        let data_type = typed.data_type();
        if data_type == DataType::Null {
            return Ok(Node::Literal(new_null_array(&DataType::Int32, 1)));
        }
        if !is_numeric(&data_type) {
            return Err(self.error(expr, format!("expected a number, found {}", sql_type(&data_type))));
        }
        Ok(typed.node)
    }

    /// A date or timestamp operand.
    fn temporal(&self, expr: &Expr) -> Result<Node, OpError> {
        let typed = self.bind(expr)?;
        let data_type = typed.data_type();
        match data_type {
            DataType::Date32 | DataType::Timestamp(..) => Ok(typed.node),
            DataType::Null => Ok(Node::Literal(new_null_array(&DataType::Timestamp(TimeUnit::Microsecond, None), 1))),
            _ => Err(self.error(expr, format!("expected a date or a timestamp, found {}", sql_type(&data_type)))),
        }
    }

    fn field(&self, expr: &Expr, name: &str) -> Result<Field, OpError> {
        Field::parse(name)
            .ok_or_else(|| self.error(expr, format!("unknown date part '{name}'; expected one of: {}", Field::NAMES)))
    }

    fn call(&self, expr: &Expr, function: Function, args: Vec<Node>, data_type: DataType) -> Typed {
        Typed::fixed(Node::Call { function, args, data_type, text: expr.to_string() })
    }

    fn floor_or_ceil(&self, expr: &Expr, function: Function, inner: &Expr) -> Result<Typed, OpError> {
        let input = self.number(inner)?;
        let input = if input.data_type().is_integer() {
            Node::Widen { input: Box::new(input), to: DataType::Float64 }
        } else {
            input
        };
        let data_type = input.data_type();
        Ok(self.call(expr, function, vec![input], data_type))
    }

    fn case(
        &self,
        expr: &Expr,
        operand: Option<&Expr>,
        conditions: &[sqlparser::ast::CaseWhen],
        otherwise: Option<&Expr>,
    ) -> Result<Typed, OpError> {
        if conditions.len() > MAX_ARGUMENTS {
            return Err(self.error(expr, format!("a case has at most {MAX_ARGUMENTS} branches")));
        }
        let mut whens = Vec::with_capacity(conditions.len());
        for condition in conditions {
            whens.push(match operand {
                Some(operand) => self.comparison(Comparison::Eq, operand, &condition.condition)?,
                None => self.boolean(&condition.condition)?,
            });
        }
        let mut values = Vec::with_capacity(conditions.len() + 1);
        for condition in conditions {
            values.push((self.bind(&condition.result)?, &condition.result));
        }
        let null = Expr::value(SqlValue::Null);
        let otherwise = otherwise.unwrap_or(&null);
        values.push((self.bind(otherwise)?, otherwise));
        let mut values = self.unify_all(values, "combine")?;
        let otherwise = values.pop().ok_or_else(|| OpError::Internal("case lost its else".into()))?;
        let data_type = otherwise.data_type();
        Ok(Typed::fixed(Node::Case {
            branches: whens.into_iter().zip(values).collect(),
            otherwise: Box::new(otherwise),
            data_type,
        }))
    }

    fn function(&self, expr: &Expr, function: &sqlparser::ast::Function) -> Result<Typed, OpError> {
        let name = function.name.to_string().to_ascii_lowercase();
        let FunctionArguments::List(list) = &function.args else {
            return Err(self.error(expr, format!("{name} needs parentheses")));
        };
        if list.duplicate_treatment.is_some()
            || !list.clauses.is_empty()
            || function.filter.is_some()
            || function.over.is_some()
            || !function.within_group.is_empty()
        {
            return Err(self.error(expr, format!("{name}: only plain arguments are supported")));
        }
        let mut args = Vec::with_capacity(list.args.len());
        for arg in &list.args {
            match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(arg)) => args.push(arg),
                _ => return Err(self.error(expr, format!("{name}: only plain arguments are supported"))),
            }
        }
        if args.len() > MAX_ARGUMENTS {
            return Err(self.error(expr, format!("{name}: at most {MAX_ARGUMENTS} arguments")));
        }
        let count = |allowed: &[usize]| -> Result<(), OpError> {
            if allowed.contains(&args.len()) {
                return Ok(());
            }
            let expected = allowed.iter().map(usize::to_string).collect::<Vec<_>>().join(" or ");
            Err(self.error(expr, format!("{name} takes {expected} argument(s), not {}", args.len())))
        };
        let float = |function: Function| -> Result<Typed, OpError> {
            count(&[1])?;
            let input = self.double(args[0])?;
            Ok(self.call(expr, function, vec![input], DataType::Float64))
        };
        match name.as_str() {
            "abs" => {
                count(&[1])?;
                let input = self.number(args[0])?;
                let data_type = input.data_type();
                Ok(self.call(expr, Function::Abs, vec![input], data_type))
            }
            "sqrt" => float(Function::Sqrt),
            "cbrt" => float(Function::Cbrt),
            "exp" => float(Function::Exp),
            "ln" => float(Function::Ln),
            "log10" => float(Function::Log10),
            "log2" => float(Function::Log2),
            "log" if args.len() == 1 => float(Function::Log10),
            "log" => {
                count(&[1, 2])?;
                let (base, x) = (self.double(args[0])?, self.double(args[1])?);
                Ok(self.call(expr, Function::LogBase, vec![base, x], DataType::Float64))
            }
            "pow" | "power" => {
                count(&[2])?;
                let (x, y) = (self.double(args[0])?, self.double(args[1])?);
                Ok(self.call(expr, Function::Power, vec![x, y], DataType::Float64))
            }
            "round" => {
                count(&[1, 2])?;
                let input = self.number(args[0])?;
                let data_type = input.data_type();
                let function = match args.get(1) {
                    None => Function::Round,
                    Some(digits) => Function::RoundDigits(self.integer_literal(digits)?),
                };
                Ok(self.call(expr, function, vec![input], data_type))
            }
            "floor" | "ceil" | "ceiling" => {
                count(&[1])?;
                let function = if name == "floor" { Function::Floor } else { Function::Ceil };
                self.floor_or_ceil(expr, function, args[0])
            }
            "sign" => {
                count(&[1])?;
                let input = self.number(args[0])?;
                Ok(self.call(expr, Function::Sign, vec![input], DataType::Int8))
            }
            "greatest" | "least" => {
                if args.is_empty() {
                    return Err(self.error(expr, format!("{name} needs at least one argument")));
                }
                let operands =
                    args.iter().map(|arg| Ok((self.bind(arg)?, *arg))).collect::<Result<Vec<_>, OpError>>()?;
                let nodes = self.unify_all(operands, "compare")?;
                let data_type = nodes[0].data_type();
                let function = if name == "greatest" { Function::Greatest } else { Function::Least };
                Ok(self.call(expr, function, nodes, data_type))
            }
            "coalesce" | "ifnull" => {
                if args.is_empty() {
                    return Err(self.error(expr, format!("{name} needs at least one argument")));
                }
                let operands =
                    args.iter().map(|arg| Ok((self.bind(arg)?, *arg))).collect::<Result<Vec<_>, OpError>>()?;
                let nodes = self.unify_all(operands, "combine")?;
                let data_type = nodes[0].data_type();
                Ok(Typed::fixed(Node::Coalesce { args: nodes, data_type }))
            }
            "nullif" => {
                count(&[2])?;
                let equal = self.comparison(Comparison::Eq, args[0], args[1])?;
                let value = self.bind(args[0])?;
                let data_type = match value.data_type() {
                    DataType::Null => DataType::Int32,
                    other => other,
                };
                let value = self.convert(value, &data_type, args[0])?;
                Ok(Typed::fixed(Node::Case {
                    branches: vec![(equal, Node::Literal(new_null_array(&data_type, 1)))],
                    otherwise: Box::new(value),
                    data_type,
                }))
            }
            "lower" | "upper" | "ltrim" | "rtrim" | "trim" => {
                count(&[1])?;
                let function = match name.as_str() {
                    "lower" => Function::Lower,
                    "upper" => Function::Upper,
                    "ltrim" => Function::Trim { start: true, end: false },
                    "rtrim" => Function::Trim { start: false, end: true },
                    _ => Function::Trim { start: true, end: true },
                };
                let input = self.string(args[0])?;
                Ok(self.call(expr, function, vec![input], DataType::Utf8))
            }
            "length" | "char_length" | "character_length" | "len" => {
                count(&[1])?;
                let input = self.string(args[0])?;
                Ok(self.call(expr, Function::Length, vec![input], DataType::Int64))
            }
            "substr" | "substring" => {
                count(&[2, 3])?;
                let mut nodes = vec![self.string(args[0])?, self.integer(args[1])?];
                if let Some(length) = args.get(2) {
                    nodes.push(self.integer(length)?);
                }
                Ok(self.call(expr, Function::Substring, nodes, DataType::Utf8))
            }
            "concat" => {
                if args.is_empty() {
                    return Err(self.error(expr, "concat needs at least one argument"));
                }
                let nodes = args.iter().map(|arg| self.as_string(arg)).collect::<Result<Vec<_>, _>>()?;
                Ok(self.call(expr, Function::Concat, nodes, DataType::Utf8))
            }
            "replace" => {
                count(&[3])?;
                let nodes = args.iter().map(|arg| self.string(arg)).collect::<Result<Vec<_>, _>>()?;
                Ok(self.call(expr, Function::Replace, nodes, DataType::Utf8))
            }
            "left" | "right" => {
                count(&[2])?;
                let nodes = vec![self.string(args[0])?, self.integer(args[1])?];
                let function = if name == "left" { Function::Left } else { Function::Right };
                Ok(self.call(expr, function, nodes, DataType::Utf8))
            }
            "strpos" | "instr" => {
                count(&[2])?;
                let nodes = vec![self.string(args[0])?, self.string(args[1])?];
                Ok(self.call(expr, Function::StrPos, nodes, DataType::Int64))
            }
            "starts_with" | "contains" => {
                count(&[2])?;
                let nodes = vec![self.string(args[0])?, self.string(args[1])?];
                let function = if name == "contains" { Function::Contains } else { Function::StartsWith };
                Ok(self.call(expr, function, nodes, DataType::Boolean))
            }
            "regexp_matches" => {
                count(&[2])?;
                let input = self.string(args[0])?;
                let pattern = self.string_literal(args[1])?;
                let compile = |pattern: &str| regex::RegexBuilder::new(pattern).size_limit(1 << 20).build();
                // Errors are reported on the pattern as written, before its classes become ASCII.
                let regex = compile(&pattern)
                    .and_then(|_| compile(&super::functions::ascii_perl_classes(&pattern)))
                    .map_err(|error| self.error(args[1], format!("invalid regular expression: {error}")))?;
                Ok(self.call(expr, Function::RegexpMatches(regex), vec![input], DataType::Boolean))
            }
            "date_part" | "datepart" => {
                count(&[2])?;
                let field = self.field(args[0], &self.string_literal(args[0])?)?;
                let input = self.temporal(args[1])?;
                let data_type = if field == Field::Epoch { DataType::Float64 } else { DataType::Int64 };
                Ok(self.call(expr, Function::DatePart(field), vec![input], data_type))
            }
            "date_trunc" | "datetrunc" => {
                count(&[2])?;
                let unit = self.unit(args[0])?;
                let input = self.temporal(args[1])?;
                let zone = match input.data_type() {
                    DataType::Timestamp(_, zone) => zone,
                    _ => None,
                };
                let data_type = DataType::Timestamp(TimeUnit::Microsecond, zone);
                Ok(self.call(expr, Function::DateTrunc(unit), vec![input], data_type))
            }
            "date_diff" | "datediff" => {
                count(&[3])?;
                let unit = self.unit(args[0])?;
                let operands = vec![(self.bind(args[1])?, args[1]), (self.bind(args[2])?, args[2])];
                let nodes = self.unify_all(operands, "compare")?;
                if !is_temporal(&nodes[0].data_type()) {
                    return Err(self.error(args[1], "date_diff takes two dates or timestamps"));
                }
                Ok(self.call(expr, Function::DateDiff(unit), nodes, DataType::Int64))
            }
            _ => Err(self.error(expr, format!("unknown function '{name}'"))),
        }
    }

    fn unit(&self, expr: &Expr) -> Result<Unit, OpError> {
        let name = self.string_literal(expr)?;
        Unit::parse(&name)
            .ok_or_else(|| self.error(expr, format!("unknown unit '{name}'; expected one of: {}", Unit::NAMES)))
    }

    fn string_literal(&self, expr: &Expr) -> Result<String, OpError> {
        match expr {
            Expr::Value(value) => match &value.value {
                SqlValue::SingleQuotedString(text) => Ok(text.clone()),
                _ => Err(self.error(expr, "expected a 'string' literal")),
            },
            Expr::Nested(inner) => self.string_literal(inner),
            _ => Err(self.error(expr, "expected a 'string' literal")),
        }
    }

    fn integer_literal(&self, expr: &Expr) -> Result<i64, OpError> {
        match self.bind(expr)? {
            Typed { flex: Flex::Integer(value), .. } => Ok(value),
            _ => Err(self.error(expr, "expected an integer literal")),
        }
    }
}

/// An operand as a type error names it: `column 'age' (INTEGER)`, `the string 'x'`.
fn describe(operand: &Typed, at: &Expr) -> String {
    let shown = match at {
        Expr::Nested(inner) => inner.as_ref(),
        other => other,
    };
    match (&operand.flex, shown) {
        (Flex::String(text), _) => format!("the string '{text}'"),
        (Flex::Integer(_) | Flex::Float, _) => format!("the number {shown}"),
        (_, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) => {
            format!("column '{}' ({})", shown.to_string().trim_matches('"'), sql_type(&operand.data_type()))
        }
        _ => format!("{shown} ({})", sql_type(&operand.data_type())),
    }
}

/// The name of an `extract` field as written.
fn field_name(field: &DateTimeField) -> String {
    match field {
        DateTimeField::Custom(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}
