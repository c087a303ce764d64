//! `filter`: `expr = "age >= 0 and (country in ('DE', 'FR') or income is not null)"` keeps
//! the rows where a small SQL-like predicate is true.
//!
//! # Language
//!
//! - column names: bare identifiers (`age`, `a.b` for a column named `a.b`), or
//!   double-quoted for any other name (`"net income"`); names are case-sensitive;
//! - literals: integers and floats (`42`, `-2`, `2.5`, `1e6`), `'strings'` (`''` is a quote),
//!   `true` and `false`;
//! - comparisons `= != <> < <= > >=` (and `==`, read as `=`) between a column and a literal (either side) or two
//!   columns;
//! - `x in (lit, …)` and `x not in (lit, …)`, with literals only and no `null`;
//! - `x is null`, `x is not null`;
//! - `and`, `or`, `not`, parentheses; a bare boolean column is a predicate (`active`,
//!   `not active`).
//!
//! Anything else (function calls, arithmetic, `between`, `like`, casts, subqueries, `null`
//! literals, …) is refused when the step is bound, with the position of the offending
//! construct.
//!
//! # Nulls
//!
//! SQL's three-valued logic: a comparison or an `in` involving a null is null, `and`/`or`
//! are Kleene's (`null and false` is false, `null or true` is true), `not null` is null,
//! and only the rows where the predicate is *true* are kept; false and null rows are
//! dropped. So `not (x > 1)` drops the rows where `x` is null, and so does
//! `x not in (1, 2)`. `is null` / `is not null` are never null.
//!
//! # Types
//!
//! The expression is type-checked against the input schema when the step is bound:
//!
//! - numbers compare by value across all integer, float and decimal widths. A literal is
//!   converted to the column's type when it is exactly representable there (`n = 3` on an
//!   `Int8` column compares `Int8`s); otherwise the column is compared as `Float64`
//!   (`n > 2.5` on an integer column, or `n < 1000` on an `Int8` column). A float column
//!   compares with the literal rounded to its own precision (`score = 0.1` on a `Float32`
//!   column matches the `Float32` nearest to 0.1);
//! - two numeric columns of different types are compared as `Int64` (or `UInt64`) when both
//!   are integers that fit, otherwise as `Float64`;
//! - string columns (`Utf8`, `LargeUtf8`, `Utf8View`, and dictionaries of them) compare with
//!   string literals and with each other, byte-wise;
//! - boolean columns compare with `true`/`false`;
//! - date, time and timestamp columns compare with string literals, which are parsed with
//!   Arrow's cast rules when the step is bound (`day >= '2024-01-31'`,
//!   `ts < '2024-01-31 12:00:00'`), and with columns of the same kind;
//! - anything else (a string column against a number, an `in` list mixing strings and
//!   numbers, …) is an error naming the column and its type.
//!
//! Floats follow Arrow's total order: NaN equals NaN and is greater than every other value,
//! including infinity, and `-0.0 < 0.0`.
//!
//! # Evaluation
//!
//! The predicate is compiled once, at bind time, into a tree of Arrow kernels with its
//! literals already built as typed scalars; each batch is then evaluated with vectorised
//! comparison and Kleene boolean kernels (no per-row code) and filtered with
//! [`filter_record_batch`], which keeps the order of the rows. A batch whose rows are all
//! kept is returned as is, without a copy.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Datum, Float64Array, Int64Array, Scalar, StringArray};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::boolean::{and_kleene, is_not_null, is_null, not, or_kleene};
use arrow::compute::kernels::cmp;
use arrow::compute::{CastOptions, cast, cast_with_options, filter_record_batch};
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use sqlparser::ast::{BinaryOperator, Expr, Ident, InTarget, Spanned, UnaryOperator, Value};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::{BoundStep, OpError, selector};

/// `op = "filter"`: keep the rows where `expr` is true (see the [module docs](self) for the
/// language).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// The predicate, e.g. `age >= 0 and country in ('DE', 'FR')`.
    pub expr: String,
}

impl FilterSpec {
    /// Parses the expression and type-checks it against `input`. Errors
    /// ([`OpError::FilterExpr`]) quote the expression with a caret under the offending
    /// character: a syntax error, an unknown column, a type mismatch or an unsupported
    /// construct.
    pub fn bind(&self, input: &SchemaRef) -> Result<Filter, OpError> {
        let ast = parse(&self.expr)?;
        let predicate = Binder { text: &self.expr, schema: input }.predicate(&ast)?;
        Ok(Filter { predicate, schema: input.clone() })
    }
}

/// A [`FilterSpec`] bound to its input schema: the compiled predicate. Its output schema is
/// the input schema.
#[derive(Debug)]
pub struct Filter {
    predicate: Predicate,
    schema: SchemaRef,
}

impl Filter {
    /// Which rows of `batch` the predicate keeps (a null result keeps none).
    pub fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray, OpError> {
        self.predicate.evaluate(batch)
    }
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

// ---------------------------------------------------------------------------------------
// The compiled predicate and its evaluation.

/// A comparison operator.
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
            Comparison::Eq | Comparison::NotEq => self,
        }
    }

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

/// A column read from each batch, cast to the type of the comparison when it differs.
#[derive(Debug)]
struct ColumnRef {
    index: usize,
    cast_to: Option<DataType>,
}

impl ColumnRef {
    fn read(&self, batch: &RecordBatch) -> Result<ArrayRef, OpError> {
        let column = column_of(batch, self.index)?;
        Ok(match &self.cast_to {
            None => column.clone(),
            Some(to) => cast(column, to)?,
        })
    }
}

/// The column at `index`, or an error (not a panic) if the batch does not have the bound
/// schema.
fn column_of(batch: &RecordBatch, index: usize) -> Result<&ArrayRef, OpError> {
    batch.columns().get(index).ok_or_else(|| {
        OpError::Arrow(ArrowError::SchemaError(format!(
            "filter: the batch has {} columns, the bound schema more",
            batch.num_columns()
        )))
    })
}

/// The right-hand side of a comparison: another column, or a literal built at bind time.
#[derive(Debug)]
enum Operand {
    Column(ColumnRef),
    Literal(Scalar<ArrayRef>),
}

/// A predicate bound to a schema.
#[derive(Debug)]
enum Predicate {
    /// A boolean column used as a predicate.
    Column(usize),
    Compare {
        op: Comparison,
        left: ColumnRef,
        right: Operand,
    },
    /// `column [not] in (values…)`; `values` is never empty.
    InList {
        column: ColumnRef,
        values: Vec<Scalar<ArrayRef>>,
        negated: bool,
    },
    IsNull {
        column: usize,
        negated: bool,
    },
    /// A chain `a and b and …`, kept flat so that long chains do not nest deeply.
    And(Vec<Predicate>),
    /// A chain `a or b or …`.
    Or(Vec<Predicate>),
    Not(Box<Predicate>),
}

impl Predicate {
    /// The predicate's value for every row of `batch` (true, false or null).
    fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray, OpError> {
        Ok(match self {
            Predicate::Column(index) => column_of(batch, *index)?.as_boolean_opt().cloned().ok_or_else(|| {
                OpError::Arrow(ArrowError::SchemaError(format!("filter: column {index} is not boolean in this batch")))
            })?,
            Predicate::Compare { op, left, right } => {
                let left = left.read(batch)?;
                match right {
                    Operand::Literal(scalar) => op.apply(&left, scalar)?,
                    Operand::Column(column) => op.apply(&left, &column.read(batch)?)?,
                }
            }
            Predicate::InList { column, values, negated } => {
                // The column is read (and cast) once for the whole list.
                let array = column.read(batch)?;
                let mut any: Option<BooleanArray> = None;
                for value in values {
                    let equal = cmp::eq(&array, value)?;
                    any = Some(match any {
                        None => equal,
                        Some(acc) => or_kleene(&acc, &equal)?,
                    });
                }
                let any = any.unwrap_or_else(|| BooleanArray::new(BooleanBuffer::new_unset(batch.num_rows()), None));
                if *negated { not(&any)? } else { any }
            }
            Predicate::IsNull { column, negated } => {
                let column = column_of(batch, *column)?;
                if *negated { is_not_null(column)? } else { is_null(column)? }
            }
            Predicate::And(terms) => {
                let mut terms = terms.iter();
                let mut all = terms.next().map(|t| t.evaluate(batch)).transpose()?.unwrap_or_else(|| all_true(batch));
                for term in terms {
                    if all.true_count() == 0 && all.null_count() == 0 {
                        break; // all false: so is the conjunction
                    }
                    all = and_kleene(&all, &term.evaluate(batch)?)?;
                }
                all
            }
            Predicate::Or(terms) => {
                let mut terms = terms.iter();
                let mut any = terms.next().map(|t| t.evaluate(batch)).transpose()?.unwrap_or_else(|| all_true(batch));
                for term in terms {
                    if any.true_count() == any.len() {
                        break; // all true: so is the disjunction
                    }
                    any = or_kleene(&any, &term.evaluate(batch)?)?;
                }
                any
            }
            Predicate::Not(inner) => not(&inner.evaluate(batch)?)?,
        })
    }
}

fn all_true(batch: &RecordBatch) -> BooleanArray {
    BooleanArray::new(BooleanBuffer::new_set(batch.num_rows()), None)
}

// ---------------------------------------------------------------------------------------
// Parsing.

/// The most `and` / `or` / `not` operators a filter may hold. Deeper expressions cost stack
/// in the parser's tree; long lists of alternatives belong in `col in (…)`.
pub const MAX_BOOLEAN_OPERATORS: usize = 1000;
/// The most other operators (comparisons, arithmetic, `||`, `is`, `in`, `between`, `like`, …)
/// a filter may hold: a chain of them nests as deep as it is long, in the parser and in
/// every walk over its tree.
pub const MAX_OTHER_OPERATORS: usize = 1000;

/// How many boolean and how many other operators the tokens hold. Literals, column names,
/// commas and parentheses are not operators (parentheses are bounded by sqlparser's own
/// recursion limit).
fn count_operators(tokens: &[Token]) -> (usize, usize) {
    let (mut boolean, mut other) = (0, 0);
    for token in tokens {
        match token {
            Token::Whitespace(_)
            | Token::Comma
            | Token::LParen
            | Token::RParen
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::EOF => {}
            Token::Word(word) if word.quote_style.is_some() => {}
            Token::Word(word) => match word.keyword {
                Keyword::AND | Keyword::OR | Keyword::NOT => boolean += 1,
                Keyword::IS | Keyword::IN | Keyword::BETWEEN | Keyword::LIKE | Keyword::ILIKE => other += 1,
                _ => {}
            },
            _ => other += 1,
        }
    }
    (boolean, other)
}

/// The 0-based character position in `text` of a 1-based sqlparser location (line 0 is
/// sqlparser's "unknown": the start).
fn position(text: &str, location: Location) -> usize {
    if location.line == 0 {
        return 0;
    }
    let line = usize::try_from(location.line - 1).unwrap_or(usize::MAX);
    let before: usize = text.split('\n').take(line).map(|line| line.chars().count() + 1).sum();
    before + usize::try_from(location.column).unwrap_or(usize::MAX).saturating_sub(1)
}

/// A [`OpError::FilterExpr`] at the 0-based character `position` of `text`. The quoted
/// expression is shown on one line (line breaks and tabs as spaces, one character each) so
/// that the caret lines up whatever the expression's layout.
fn expr_error(text: &str, position: usize, message: impl Into<String>) -> OpError {
    let shown: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    OpError::filter_expr(&shown, position, message)
}

/// A sqlparser error as a [`OpError::FilterExpr`], its "at Line: L, Column: C" turned into
/// a caret (at the end of the expression when the error carries no location).
fn syntax_error(text: &str, error: ParserError) -> OpError {
    let message = error.to_string();
    let message = message.strip_prefix("sql parser error: ").unwrap_or(&message);
    let (message, at) = match message.rfind(" at Line: ") {
        Some(start) => {
            let location = message[start + " at Line: ".len()..].split_once(", Column: ").and_then(|(line, rest)| {
                let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
                Some(Location { line: line.trim().parse().ok()?, column: column.parse().ok()? })
            });
            match location {
                Some(location) => (&message[..start], position(text, location)),
                None => (message, text.chars().count()),
            }
        }
        None => (message, text.chars().count()),
    };
    expr_error(text, at, message)
}

/// Parses the whole expression: trailing tokens are an error.
fn parse(text: &str) -> Result<Expr, OpError> {
    let dialect = GenericDialect {};
    // A text that does not tokenize is left to the parser, which reports where.
    let tokens = Tokenizer::new(&dialect, text).tokenize().unwrap_or_default();
    let (operators, others) = count_operators(&tokens);
    if operators > MAX_BOOLEAN_OPERATORS {
        return Err(expr_error(
            text,
            0,
            format!(
                "the expression has {operators} 'and' / 'or' / 'not' operators; at most {MAX_BOOLEAN_OPERATORS} are \
                 allowed (write long lists of alternatives as `column in (…)`)"
            ),
        ));
    }
    if others > MAX_OTHER_OPERATORS {
        return Err(expr_error(
            text,
            0,
            format!(
                "the expression has {others} comparison, arithmetic and other operators besides 'and' / 'or' / \
                 'not'; at most {MAX_OTHER_OPERATORS} are allowed (write long lists of alternatives as `column in (…)`)"
            ),
        ));
    }
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(|e| syntax_error(text, e))?;
    let expr = parser.parse_expr().map_err(|e| syntax_error(text, e))?;
    if let Some(keyword) = keyword_as_column(&expr) {
        return Err(expr_error(
            text,
            position(text, keyword.span.start),
            format!("expected a column or a value, found the keyword '{}'", keyword.value),
        ));
    }
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(expr_error(
            text,
            position(text, next.span.start),
            format!("unexpected '{}' after the end of the expression", next.token),
        ));
    }
    Ok(expr)
}

/// The operands of a chain of one operator, `a op b op c …` (however sqlparser nested it),
/// left to right, found without recursion.
fn chain<'e>(expr: &'e Expr, operator: &BinaryOperator) -> Vec<&'e Expr> {
    let mut terms = Vec::new();
    let mut pending = vec![expr];
    while let Some(next) = pending.pop() {
        match next {
            Expr::BinaryOp { left, op, right } if op == operator => {
                pending.push(right);
                pending.push(left);
            }
            other => terms.push(other),
        }
    }
    terms
}

/// The first unquoted identifier that is one of the language's keywords: sqlparser reads
/// `age >= and x` as `age >= "and"` followed by `x`, and the error should point at `and`.
fn keyword_as_column(expr: &Expr) -> Option<&Ident> {
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

// ---------------------------------------------------------------------------------------
// Binding: from sqlparser's AST to a typed `Predicate`.

/// A literal of the expression, before it is typed against a column.
#[derive(Debug, Clone)]
enum Literal {
    Integer(i64),
    Float(f64),
    String(String),
    Boolean(bool),
}

impl Literal {
    /// How the literal is named in a type error.
    fn describe(&self) -> String {
        match self {
            Literal::Integer(value) => format!("the number {value}"),
            Literal::Float(value) => format!("the number {value}"),
            Literal::String(value) => format!("the string '{value}'"),
            Literal::Boolean(value) => format!("the boolean {value}"),
        }
    }

    /// The literal as a one-element array of its natural type.
    fn array(&self) -> ArrayRef {
        match self {
            Literal::Integer(value) => Arc::new(Int64Array::from(vec![*value])),
            Literal::Float(value) => Arc::new(Float64Array::from(vec![*value])),
            Literal::String(value) => Arc::new(StringArray::from(vec![value.as_str()])),
            Literal::Boolean(value) => Arc::new(BooleanArray::from(vec![*value])),
        }
    }

    /// The literal as a float, for a comparison done in `Float64`.
    fn as_f64(&self) -> Option<f64> {
        match self {
            Literal::Integer(value) => Some(*value as f64),
            Literal::Float(value) => Some(*value),
            Literal::String(_) | Literal::Boolean(_) => None,
        }
    }
}

/// One operand of a comparison, before typing.
enum Side {
    Column(usize),
    Literal(Literal),
}

/// A literal typed against the column it is compared with.
struct Typed {
    /// The type the column must be cast to for the comparison, if not its own.
    cast_column_to: Option<DataType>,
    scalar: Scalar<ArrayRef>,
}

/// Turns the parsed expression into a [`Predicate`] for one schema.
struct Binder<'a> {
    text: &'a str,
    schema: &'a Schema,
}

impl Binder<'_> {
    /// An error pointing at the start of `expr`.
    fn error(&self, expr: &Expr, message: impl Into<String>) -> OpError {
        expr_error(self.text, position(self.text, expr.span().start), message)
    }

    fn unsupported(&self, expr: &Expr) -> OpError {
        let what = match expr {
            Expr::Function(_) => "function calls".to_string(),
            Expr::In { target: InTarget::List(_), .. } | Expr::IsNull(_) | Expr::IsNotNull(_) => {
                "a predicate used as a value".to_string()
            }
            Expr::BinaryOp {
                op:
                    BinaryOperator::And
                    | BinaryOperator::Or
                    | BinaryOperator::Eq
                    | BinaryOperator::NotEq
                    | BinaryOperator::Lt
                    | BinaryOperator::LtEq
                    | BinaryOperator::Gt
                    | BinaryOperator::GtEq,
                ..
            }
            | Expr::UnaryOp { op: UnaryOperator::Not, .. } => "a predicate used as a value".to_string(),
            Expr::BinaryOp { op, .. } => format!("the operator '{op}'"),
            Expr::UnaryOp { op, .. } => format!("the operator '{op}'"),
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::In { .. } => "subqueries".to_string(),
            Expr::Between { .. } => "between (write 'x >= a and x <= b')".to_string(),
            Expr::Like { .. } | Expr::ILike { .. } | Expr::SimilarTo { .. } | Expr::RLike { .. } => {
                "pattern matching".to_string()
            }
            Expr::Cast { .. } | Expr::TypedString(_) => "casts".to_string(),
            Expr::Case { .. } => "case expressions".to_string(),
            Expr::IsTrue(_)
            | Expr::IsNotTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsNotFalse(_)
            | Expr::IsUnknown(_)
            | Expr::IsNotUnknown(_) => "'is true/false/unknown' (compare with true or false instead)".to_string(),
            Expr::IsDistinctFrom(..) | Expr::IsNotDistinctFrom(..) => "'is distinct from'".to_string(),
            Expr::Value(_) => "a constant predicate".to_string(),
            _ => "this construct".to_string(),
        };
        self.error(expr, format!("unsupported in filter expressions: {what}: {expr}"))
    }

    fn predicate(&self, expr: &Expr) -> Result<Predicate, OpError> {
        match expr {
            Expr::Nested(inner) => self.predicate(inner),
            Expr::BinaryOp { op: BinaryOperator::And, .. } => chain(expr, &BinaryOperator::And)
                .into_iter()
                .map(|term| self.predicate(term))
                .collect::<Result<_, _>>()
                .map(Predicate::And),
            Expr::BinaryOp { op: BinaryOperator::Or, .. } => chain(expr, &BinaryOperator::Or)
                .into_iter()
                .map(|term| self.predicate(term))
                .collect::<Result<_, _>>()
                .map(Predicate::Or),
            Expr::UnaryOp { op: UnaryOperator::Not, expr: inner } => {
                Ok(Predicate::Not(Box::new(self.predicate(inner)?)))
            }
            Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Eq => Comparison::Eq,
                    BinaryOperator::NotEq => Comparison::NotEq,
                    BinaryOperator::Lt => Comparison::Lt,
                    BinaryOperator::LtEq => Comparison::LtEq,
                    BinaryOperator::Gt => Comparison::Gt,
                    BinaryOperator::GtEq => Comparison::GtEq,
                    _ => return Err(self.unsupported(expr)),
                };
                self.comparison(op, left, right)
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => match self.side(inner)? {
                Side::Column(column) => Ok(Predicate::IsNull { column, negated: matches!(expr, Expr::IsNotNull(_)) }),
                Side::Literal(_) => Err(self.error(inner, "'is null' applies to a column, not a literal")),
            },
            Expr::In { expr: inner, target: InTarget::List(list), negated, .. } => {
                self.in_list(expr, inner, list, *negated)
            }
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                let index = self.column(expr)?;
                let field = self.schema.field(index);
                if field.data_type() == &DataType::Boolean {
                    Ok(Predicate::Column(index))
                } else {
                    Err(self.error(
                        expr,
                        format!(
                            "column '{}' is {}, not boolean: compare it with something (e.g. {} is not null)",
                            field.name(),
                            field.data_type(),
                            expr
                        ),
                    ))
                }
            }
            _ => Err(self.unsupported(expr)),
        }
    }

    /// The index of the column an identifier names.
    fn column(&self, expr: &Expr) -> Result<usize, OpError> {
        let name = match expr {
            Expr::Identifier(ident) => ident.value.clone(),
            Expr::CompoundIdentifier(parts) => {
                parts.iter().map(|part| part.value.as_str()).collect::<Vec<_>>().join(".")
            }
            _ => return Err(self.unsupported(expr)),
        };
        if let Ok(index) = self.schema.index_of(&name) {
            return Ok(index);
        }
        let mut message = format!("unknown column '{name}'; the input has: {}", selector::column_list(self.schema));
        if let Some(field) = self.schema.fields().iter().find(|field| field.name().eq_ignore_ascii_case(&name)) {
            message.push_str(&format!(" (did you mean '{}'? names are case-sensitive)", field.name()));
        }
        Err(self.error(expr, message))
    }

    /// A column or a literal.
    fn side(&self, expr: &Expr) -> Result<Side, OpError> {
        match expr {
            Expr::Nested(inner) => self.side(inner),
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => self.column(expr).map(Side::Column),
            Expr::Value(value) => match &value.value {
                Value::Number(number, _) => self.number(expr, &number.to_string()),
                Value::SingleQuotedString(text) => Ok(Side::Literal(Literal::String(text.clone()))),
                Value::Boolean(value) => Ok(Side::Literal(Literal::Boolean(*value))),
                Value::Null => Err(self.error(
                    expr,
                    "null is not a value here (a comparison with null is never true); use 'is null' or 'is not null'",
                )),
                other => Err(self.error(expr, format!("unsupported literal {other}"))),
            },
            Expr::UnaryOp { op: op @ (UnaryOperator::Minus | UnaryOperator::Plus), expr: inner } => {
                match inner.as_ref() {
                    Expr::Value(value) => match &value.value {
                        Value::Number(number, _) => {
                            let sign = if *op == UnaryOperator::Minus { "-" } else { "" };
                            self.number(expr, &format!("{sign}{number}"))
                        }
                        _ => Err(self.error(expr, format!("'{op}' applies to numbers only"))),
                    },
                    _ => Err(self.unsupported(expr)),
                }
            }
            _ => Err(self.unsupported(expr)),
        }
    }

    fn number(&self, expr: &Expr, text: &str) -> Result<Side, OpError> {
        if let Ok(integer) = text.parse::<i64>() {
            return Ok(Side::Literal(Literal::Integer(integer)));
        }
        match text.parse::<f64>() {
            Ok(float) if float.is_finite() => Ok(Side::Literal(Literal::Float(float))),
            _ => Err(self.error(expr, format!("'{text}' is not a number this filter can represent"))),
        }
    }

    fn comparison(&self, op: Comparison, left: &Expr, right: &Expr) -> Result<Predicate, OpError> {
        match (self.side(left)?, self.side(right)?) {
            (Side::Column(a), Side::Column(b)) => {
                let (cast_a, cast_b) = self.common_type(a, b).ok_or_else(|| {
                    let (fa, fb) = (self.schema.field(a), self.schema.field(b));
                    self.error(
                        right,
                        format!(
                            "cannot compare column '{}' of type {} with column '{}' of type {}",
                            fa.name(),
                            fa.data_type(),
                            fb.name(),
                            fb.data_type()
                        ),
                    )
                })?;
                Ok(Predicate::Compare {
                    op,
                    left: ColumnRef { index: a, cast_to: cast_a },
                    right: Operand::Column(ColumnRef { index: b, cast_to: cast_b }),
                })
            }
            (Side::Column(index), Side::Literal(literal)) => {
                let typed = self.typed(index, &literal, right, false, "")?;
                Ok(Predicate::Compare {
                    op,
                    left: ColumnRef { index, cast_to: typed.cast_column_to },
                    right: Operand::Literal(typed.scalar),
                })
            }
            (Side::Literal(literal), Side::Column(index)) => {
                let typed = self.typed(index, &literal, left, false, "")?;
                Ok(Predicate::Compare {
                    op: op.flipped(),
                    left: ColumnRef { index, cast_to: typed.cast_column_to },
                    right: Operand::Literal(typed.scalar),
                })
            }
            (Side::Literal(_), Side::Literal(_)) => {
                Err(self.error(left, "a comparison needs a column on at least one side"))
            }
        }
    }

    fn in_list(&self, whole: &Expr, column: &Expr, list: &[Expr], negated: bool) -> Result<Predicate, OpError> {
        let Side::Column(index) = self.side(column)? else {
            return Err(self.error(column, "'in' needs a column on its left"));
        };
        let mut literals = Vec::with_capacity(list.len());
        for item in list {
            match self.side(item)? {
                Side::Literal(literal) => literals.push((literal, item)),
                Side::Column(_) => return Err(self.error(item, "an 'in' list takes literals only")),
            }
        }
        if literals.is_empty() {
            return Err(self.error(whole, "an 'in' list needs at least one value"));
        }
        const IN_LIST: &str = " in an 'in' list";
        let mut typed = Vec::with_capacity(literals.len());
        for (literal, at) in &literals {
            typed.push(self.typed(index, literal, at, false, IN_LIST)?);
        }
        // Numbers that do not all fit the column's type: compare all of them as Float64.
        if typed.iter().any(|t| t.cast_column_to != typed[0].cast_column_to) {
            typed.clear();
            for (literal, at) in &literals {
                typed.push(self.typed(index, literal, at, true, IN_LIST)?);
            }
        }
        let cast_to = typed.first().and_then(|t| t.cast_column_to.clone());
        Ok(Predicate::InList {
            column: ColumnRef { index, cast_to },
            values: typed.into_iter().map(|t| t.scalar).collect(),
            negated,
        })
    }

    /// Types a literal against the column it is compared with (see the module docs);
    /// `as_float` forces a numeric comparison in `Float64`. `context` ends type errors.
    fn typed(
        &self,
        index: usize,
        literal: &Literal,
        at: &Expr,
        as_float: bool,
        context: &str,
    ) -> Result<Typed, OpError> {
        let field = self.schema.field(index);
        let column_type = field.data_type();
        let value_type = value_type(column_type);
        let mismatch = || {
            self.error(
                at,
                format!(
                    "cannot compare column '{}' of type {column_type} with {}{context}",
                    field.name(),
                    literal.describe()
                ),
            )
        };
        let as_is = |scalar: ArrayRef| Typed { cast_column_to: None, scalar: Scalar::new(scalar) };
        match literal {
            Literal::Integer(_) | Literal::Float(_) if value_type.is_numeric() => {
                let float = literal.as_f64().ok_or_else(mismatch)?;
                let float_typed = || Typed {
                    cast_column_to: (column_type != &DataType::Float64).then_some(DataType::Float64),
                    scalar: Scalar::new(Arc::new(Float64Array::from(vec![float])) as ArrayRef),
                };
                if as_float {
                    return Ok(float_typed());
                }
                let converted = if value_type.is_floating() && matches!(literal, Literal::Float(_)) {
                    // A float column compares with the literal at its own precision.
                    cast_with_options(&literal.array(), value_type, &strict()).ok()
                } else {
                    exact_cast(&literal.array(), value_type)
                };
                Ok(converted.map(as_is).unwrap_or_else(float_typed))
            }
            Literal::Boolean(_) if value_type == &DataType::Boolean => Ok(as_is(literal.array())),
            Literal::String(text) if is_string(value_type) || is_temporal(value_type) => {
                let scalar = cast_with_options(&literal.array(), value_type, &strict())
                    .map_err(|_| self.error(at, format!("'{text}' is not a valid {value_type}{context}")))?;
                Ok(as_is(scalar))
            }
            _ => Err(mismatch()),
        }
    }

    /// The types two columns are cast to (`None`: as they are) to be compared, or `None`
    /// when they cannot be compared.
    fn common_type(&self, a: usize, b: usize) -> Option<(Option<DataType>, Option<DataType>)> {
        let (ta, tb) = (self.schema.field(a).data_type(), self.schema.field(b).data_type());
        let (va, vb) = (value_type(ta), value_type(tb));
        if va == vb {
            // Arrow compares a dictionary with its values' type directly.
            return comparable(va).then_some((None, None));
        }
        let common = if va.is_numeric() && vb.is_numeric() {
            numeric_common_type(va, vb)
        } else if is_string(va) && is_string(vb) {
            if matches!(va, DataType::LargeUtf8) || matches!(vb, DataType::LargeUtf8) {
                DataType::LargeUtf8
            } else {
                DataType::Utf8
            }
        } else {
            temporal_common_type(va, vb)?
        };
        let cast_to = |t: &DataType| (t != &common).then(|| common.clone());
        Some((cast_to(ta), cast_to(tb)))
    }
}

/// Casts that fail instead of producing nulls.
fn strict() -> CastOptions<'static> {
    CastOptions { safe: false, ..Default::default() }
}

/// `literal` cast to `to` if the cast is exact (casting back gives the literal again).
fn exact_cast(literal: &ArrayRef, to: &DataType) -> Option<ArrayRef> {
    let converted = cast_with_options(literal, to, &strict()).ok()?;
    let back = cast_with_options(&converted, literal.data_type(), &strict()).ok()?;
    (back.as_ref() == literal.as_ref()).then_some(converted)
}

/// The type of a column's values (a dictionary's value type).
fn value_type(data_type: &DataType) -> &DataType {
    match data_type {
        DataType::Dictionary(_, values) => values,
        other => other,
    }
}

fn is_string(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_temporal(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) | DataType::Time32(_) | DataType::Time64(_)
    )
}

/// Types Arrow's comparison kernels order (two columns of the same such type compare).
fn comparable(data_type: &DataType) -> bool {
    data_type.is_numeric()
        || is_string(data_type)
        || is_temporal(data_type)
        || matches!(data_type, DataType::Boolean | DataType::Duration(_))
}

/// The type two different numeric types are compared in.
fn numeric_common_type(a: &DataType, b: &DataType) -> DataType {
    let fits_int64 = |t: &DataType| t.is_signed_integer() || (t.is_unsigned_integer() && t != &DataType::UInt64);
    if a.is_unsigned_integer() && b.is_unsigned_integer() {
        DataType::UInt64
    } else if fits_int64(a) && fits_int64(b) {
        DataType::Int64
    } else {
        DataType::Float64
    }
}

/// The type two different temporal types are compared in: dates as `Date64`, timestamps of
/// the same time zone in the finer unit.
fn temporal_common_type(a: &DataType, b: &DataType) -> Option<DataType> {
    fn rank(unit: &TimeUnit) -> u8 {
        match unit {
            TimeUnit::Second => 0,
            TimeUnit::Millisecond => 1,
            TimeUnit::Microsecond => 2,
            TimeUnit::Nanosecond => 3,
        }
    }
    match (a, b) {
        (DataType::Date32 | DataType::Date64, DataType::Date32 | DataType::Date64) => Some(DataType::Date64),
        (DataType::Timestamp(ua, za), DataType::Timestamp(ub, zb)) if za == zb => {
            let unit = if rank(ua) >= rank(ub) { *ua } else { *ub };
            Some(DataType::Timestamp(unit, za.clone()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, DictionaryArray, Float32Array, Int32Array, StringViewArray};
    use arrow::datatypes::{Field, Int32Type};

    /// 2024-01-01 as days since the epoch: 54 years of 365 days plus 13 leap days.
    const JAN_1_2024: i32 = 54 * 365 + 13;

    /// Six rows; `id` is the row number.
    ///
    /// | id | age  | income | country | active | score | day        |
    /// |----|------|--------|---------|--------|-------|------------|
    /// | 0  | 30   | 1.0    | DE      | true   | 0.1   | 2024-01-01 |
    /// | 1  | 17   | 2.0    | FR      | false  | 2.0   | 2024-01-31 |
    /// | 2  | null | 3.0    | US      | null   | 2.5   | 2024-02-01 |
    /// | 3  | 40   | null   | US      | true   | null  | null       |
    /// | 4  | 2    | 2.5    | null    | true   | 3.0   | 2023-12-31 |
    /// | 5  | 55   | null   | null    | false  | -1.0  | 2024-03-01 |
    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("age", DataType::Int32, true),
            Field::new("income", DataType::Float64, true),
            Field::new("country", DataType::Utf8, true),
            Field::new("active", DataType::Boolean, true),
            Field::new("score", DataType::Float32, true),
            Field::new("day", DataType::Date32, true),
        ]));
        let d = JAN_1_2024;
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![0, 1, 2, 3, 4, 5])),
                Arc::new(Int32Array::from(vec![Some(30), Some(17), None, Some(40), Some(2), Some(55)])),
                Arc::new(Float64Array::from(vec![Some(1.0), Some(2.0), Some(3.0), None, Some(2.5), None])),
                Arc::new(StringArray::from(vec![Some("DE"), Some("FR"), Some("US"), Some("US"), None, None])),
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true), Some(true), Some(false)])),
                Arc::new(Float32Array::from(vec![Some(0.1), Some(2.0), Some(2.5), None, Some(3.0), Some(-1.0)])),
                Arc::new(Date32Array::from(vec![Some(d), Some(d + 30), Some(d + 31), None, Some(d - 1), Some(d + 60)])),
            ],
        )
        .unwrap()
    }

    /// The ids of the rows `expr` keeps.
    fn ids(expr: &str) -> Vec<i64> {
        let input = batch();
        let filter = FilterSpec { expr: expr.into() }.bind(&input.schema()).unwrap_or_else(|e| panic!("{e}"));
        let out = filter.apply(input).unwrap();
        assert_eq!(out.schema(), filter.output_schema());
        out.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()
    }

    fn error(expr: &str) -> OpError {
        FilterSpec { expr: expr.into() }.bind(&batch().schema()).unwrap_err()
    }

    /// The 0-based character position of the caret.
    fn caret(err: &OpError) -> usize {
        match err {
            OpError::FilterExpr { caret, .. } => caret.chars().count() - 1,
            other => panic!("not a filter error: {other}"),
        }
    }

    #[test]
    fn the_example_with_nulls_in_income_and_country() {
        // age >= 0:         T T N T T T
        // country in DE,FR: T T F F N N
        // income not null:  T T T F T F
        // (in) or (not null): T T T F T N  → and with age: T T N F T N
        assert_eq!(ids("age >= 0 and (country in ('DE', 'FR') or income is not null)"), vec![0, 1, 4]);
    }

    #[test]
    fn three_valued_logic_drops_null_and_false() {
        // age > 18: T F N T F T; not: F T N F T F (row 2, null age, is dropped).
        assert_eq!(ids("not (age > 18)"), vec![1, 4]);
        // income > 2: F F T N T N; or with age > 18: T F T T T T.
        assert_eq!(ids("age > 18 or income > 2"), vec![0, 2, 3, 4, 5]);
        // and: F F N N F N: nothing is true.
        assert_eq!(ids("age > 18 and income > 2"), Vec::<i64>::new());
        assert_eq!(ids("country != 'US'"), vec![0, 1]);
        assert_eq!(ids("not (country = 'US')"), vec![0, 1]);
        assert_eq!(ids("country <> 'US' or country is null"), vec![0, 1, 4, 5]);
    }

    #[test]
    fn integer_columns_compare_with_float_literals_by_value() {
        assert_eq!(ids("age > 29.5"), vec![0, 3, 5]);
        assert_eq!(ids("age < 17.5"), vec![1, 4]);
        assert_eq!(ids("age = 30.0"), vec![0]);
        assert_eq!(ids("id >= 2.5"), vec![3, 4, 5]);
        assert_eq!(ids("2.5 < id"), vec![3, 4, 5]);
        // Out of Int32's range: compared as Float64, not wrapped.
        assert_eq!(ids("age < 3000000000"), vec![0, 1, 3, 4, 5]);
        assert_eq!(ids("age > -3000000000"), vec![0, 1, 3, 4, 5]);
        assert_eq!(ids("age > -1"), vec![0, 1, 3, 4, 5]);
    }

    #[test]
    fn float_columns_compare_at_their_own_precision() {
        assert_eq!(ids("score = 0.1"), vec![0]);
        assert_eq!(ids("score > 0.1"), vec![1, 2, 4]);
        assert_eq!(ids("-1 < score"), vec![0, 1, 2, 4]);
        assert_eq!(ids("score <= -1"), vec![5]);
        assert_eq!(ids("score >= 2.5"), vec![2, 4]);
        assert_eq!(ids("income = 2"), vec![1]);
    }

    #[test]
    fn in_and_not_in() {
        assert_eq!(ids("country in ('US', 'JP')"), vec![2, 3]);
        // Null countries are neither in nor not in the list.
        assert_eq!(ids("country not in ('US')"), vec![0, 1]);
        assert_eq!(ids("age in (2, 17)"), vec![1, 4]);
        assert_eq!(ids("age not in (2, 17)"), vec![0, 3, 5]);
        // Integers and a float that does not fit Int32: all compared as Float64.
        assert_eq!(ids("age in (17, 29.5, 40)"), vec![1, 3]);
        assert_eq!(ids("active in (false)"), vec![1, 5]);
    }

    #[test]
    fn is_null_and_is_not_null() {
        assert_eq!(ids("income is null"), vec![3, 5]);
        assert_eq!(ids("country is not null and age is not null"), vec![0, 1, 3]);
        assert_eq!(ids("not (active is null)"), vec![0, 1, 3, 4, 5]);
    }

    #[test]
    fn column_against_column() {
        // Float64 against Float32 (as Float64): 1 > 0.1, 2 > 2, 3 > 2.5, null, 2.5 > 3, null.
        assert_eq!(ids("income > score"), vec![0, 2]);
        // Int32 against Int64: 30 > 0, 17 > 1, null, 40 > 3, 2 > 4, 55 > 5.
        assert_eq!(ids("age > id"), vec![0, 1, 3, 5]);
        // Int64 against Float64: 0 < 1, 1 < 2, 2 < 3, null, 4 < 2.5, null.
        assert_eq!(ids("id < income"), vec![0, 1, 2]);
    }

    #[test]
    fn bare_boolean_columns() {
        assert_eq!(ids("active"), vec![0, 3, 4]);
        assert_eq!(ids("not active"), vec![1, 5]);
        assert_eq!(ids("active = false"), vec![1, 5]);
        assert_eq!(ids("active and age > 18"), vec![0, 3]);
        // T, F or F, null or T, T, T or null, F or null.
        assert_eq!(ids("active or country = 'US'"), vec![0, 2, 3, 4]);
    }

    #[test]
    fn dates_compare_with_date_strings() {
        assert_eq!(ids("day >= '2024-01-31'"), vec![1, 2, 5]);
        assert_eq!(ids("day < '2024-01-01'"), vec![4]);
        let err = error("day > 'yesterday'");
        assert_eq!(caret(&err), 6, "{err}");
        assert!(err.to_string().contains("'yesterday' is not a valid Date32"), "{err}");
    }

    #[test]
    fn views_dictionaries_and_quoted_names() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Utf8View, true),
            Field::new("d", DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)), true),
            Field::new("odd name", DataType::Utf8, true),
        ]));
        let input = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringViewArray::from(vec![Some("a"), Some("b"), None, Some("a long string, not inlined")])),
                Arc::new(
                    vec![Some("a"), Some("c"), Some("a"), None].into_iter().collect::<DictionaryArray<Int32Type>>(),
                ),
                Arc::new(StringArray::from(vec![Some("a"), Some("b"), Some("a"), Some("a long string, not inlined")])),
            ],
        )
        .unwrap();
        let rows = |expr: &str| {
            let filter = FilterSpec { expr: expr.into() }.bind(&input.schema()).unwrap_or_else(|e| panic!("{e}"));
            let out = filter.apply(input.clone()).unwrap();
            let names = out.column(2).as_string::<i32>();
            names.iter().map(|name| name.unwrap_or("∅").to_string()).collect::<Vec<_>>()
        };
        assert_eq!(rows("v = 'a'"), vec!["a"]);
        assert_eq!(rows("v = 'a long string, not inlined'"), vec!["a long string, not inlined"]);
        assert_eq!(rows("d = 'a'"), vec!["a", "a"]);
        assert_eq!(rows("d in ('c', 'x')"), vec!["b"]);
        assert_eq!(rows("d = \"odd name\""), vec!["a", "a"]);
        assert_eq!(rows("\"odd name\" = v"), vec!["a", "b", "a long string, not inlined"]);
    }

    #[test]
    fn decimals_unsigned_timestamps_and_large_strings() {
        use arrow::array::{Decimal128Array, LargeStringArray, TimestampMillisecondArray, UInt64Array};
        let schema = Arc::new(Schema::new(vec![
            Field::new("dec", DataType::Decimal128(10, 2), true),
            Field::new("u", DataType::UInt64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("big", DataType::LargeUtf8, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let day_ms = 86_400_000_i64;
        let jan_30 = i64::from(JAN_1_2024 + 29) * day_ms;
        let input = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    Decimal128Array::from(vec![Some(150), Some(200), None]).with_precision_and_scale(10, 2).unwrap(),
                ),
                Arc::new(UInt64Array::from(vec![1, u64::MAX, 3])),
                Arc::new(TimestampMillisecondArray::from(vec![Some(jan_30), Some(jan_30 + day_ms + day_ms / 2), None])),
                Arc::new(LargeStringArray::from(vec!["a", "b", "c"])),
                Arc::new(StringArray::from(vec!["a", "x", "c"])),
            ],
        )
        .unwrap();
        let rows = |expr: &str| {
            let filter = FilterSpec { expr: expr.into() }.bind(&input.schema()).unwrap_or_else(|e| panic!("{e}"));
            let out = filter.apply(input.clone()).unwrap();
            out.column(4).as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string()).collect::<Vec<_>>()
        };
        assert_eq!(rows("dec = 1.5"), vec!["a"]);
        assert_eq!(rows("dec > 1.505"), vec!["x"]);
        assert_eq!(rows("dec >= 2"), vec!["x"]);
        assert_eq!(rows("u > -1"), vec!["a", "x", "c"]);
        assert_eq!(rows("u = 3"), vec!["c"]);
        assert_eq!(rows("u > dec"), vec!["x"]);
        assert_eq!(rows("ts >= '2024-01-31'"), vec!["x"]);
        assert_eq!(rows("ts < '2024-01-31 12:00:00'"), vec!["a"]);
        assert_eq!(rows("big = s"), vec!["a", "c"]);
        assert_eq!(rows("big in ('b')"), vec!["x"]);
    }

    #[test]
    fn a_batch_whose_rows_are_all_kept_is_not_copied() {
        let input = batch();
        let filter = FilterSpec { expr: "id >= 0".into() }.bind(&input.schema()).unwrap();
        let out = filter.apply(input.clone()).unwrap();
        assert!(Arc::ptr_eq(out.column(3), input.column(3)));
        assert_eq!(out.num_rows(), 6);
    }

    #[test]
    fn an_empty_batch_stays_empty() {
        let input = batch().slice(0, 0);
        let filter = FilterSpec { expr: "age > 1 or not active".into() }.bind(&input.schema()).unwrap();
        let out = filter.apply(input).unwrap();
        assert_eq!(out.num_rows(), 0);
        assert_eq!(out.schema(), batch().schema());
    }

    #[test]
    fn parse_errors_point_at_the_character() {
        // 'and' is at 0-based position 7.
        let err = error("age >= and x");
        assert_eq!(caret(&err), 7, "{err}");
        assert!(err.to_string().contains("'and'"), "{err}");
        // An unterminated string is reported where it starts.
        let err = error("country = 'DE");
        assert_eq!(caret(&err), 10, "{err}");
        // Nothing after the operator: the caret is past the end.
        let err = error("age >=");
        assert_eq!(caret(&err), 6, "{err}");
        assert!(error("").to_string().contains("filter expression"));
    }

    #[test]
    fn long_chains_are_flat_and_too_long_ones_are_refused() {
        // 999 operators: bound on this thread, evaluated on a thread with a small stack.
        let terms: Vec<String> = (0..998).map(|i| format!("id = {}", i % 7 + 10)).collect();
        let expr = format!("{} or id = 4 and age >= 2", terms.join(" or "));
        let input = batch();
        let filter = FilterSpec { expr }.bind(&input.schema()).unwrap();
        let out = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || filter.apply(input).unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(out.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec(), vec![4]);
        let many: Vec<String> = (0..5000).map(|i| format!("id = {i}")).collect();
        let err = error(&many.join(" or ")).to_string();
        assert!(err.contains("4999 'and' / 'or' / 'not' operators") && err.contains("in ("), "{err}");
    }

    /// A chain of any operator nests as deep as it is long: thousands of them are refused
    /// before sqlparser builds the tree (they overflowed the stack, taking `weir serve` down).
    #[test]
    fn long_chains_of_any_operator_are_refused_before_parsing() {
        for operator in ["+", "*", "||", "=", "-", "<", "is not null", "not"] {
            let expr = format!("id {}", format!("{operator} id ").repeat(3000));
            let err = std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || error(&expr).to_string())
                .unwrap()
                .join()
                .unwrap();
            assert!(err.contains("at most 1000 are allowed"), "{operator}: {err}");
        }
        // 1000 of them parse (and are then refused only for what the language lacks).
        let err = error(&format!("id {}> 1", "+ id ".repeat(999))).to_string();
        assert!(!err.contains("at most 1000"), "{err}");
    }

    #[test]
    fn trailing_garbage_is_an_error() {
        let err = error("age > 1 2");
        assert_eq!(caret(&err), 8, "{err}");
        assert!(err.to_string().contains("unexpected '2'"), "{err}");
        assert_eq!(caret(&error("age > 1)")), 7);
    }

    #[test]
    fn unknown_columns_are_named_listed_and_pointed_at() {
        let err = error("age > 1 and wage < 3");
        assert_eq!(caret(&err), 12, "{err}");
        let message = err.to_string();
        assert!(message.contains("unknown column 'wage'"), "{message}");
        assert!(message.contains("id, age, income, country, active, score, day"), "{message}");
        assert!(err.is_user_error());
        // Positions count characters, not bytes, and lines.
        assert_eq!(caret(&error("country = 'ü' and wage < 3")), 18);
        let err = error("age > 1\n  and wage < 3");
        assert_eq!(caret(&err), 14, "{err}");
        assert!(err.to_string().contains("age > 1   and wage < 3\n"), "{err}");
        assert!(error("Age > 1").to_string().contains("did you mean 'age'"));
    }

    #[test]
    fn type_errors_point_at_the_literal() {
        let err = error("country > 3");
        assert_eq!(caret(&err), 10, "{err}");
        assert!(err.to_string().contains("cannot compare column 'country' of type Utf8 with the number 3"), "{err}");
        let err = error("age = '30'");
        assert_eq!(caret(&err), 6, "{err}");
        let err = error("age in (1, 'x')");
        assert_eq!(caret(&err), 11, "{err}");
        assert!(err.to_string().contains("the string 'x' in an 'in' list"), "{err}");
        let err = error("active = 1");
        assert_eq!(caret(&err), 9, "{err}");
        let err = error("country = age");
        assert_eq!(caret(&err), 10, "{err}");
        assert!(err.to_string().contains("with column 'age' of type Int32"), "{err}");
        let err = error("age");
        assert!(err.to_string().contains("not boolean"), "{err}");
        assert!(error("1 = 1").to_string().contains("needs a column"));
    }

    #[test]
    fn unsupported_constructs_are_refused() {
        let err = error("abs(age) > 1");
        assert_eq!(caret(&err), 0, "{err}");
        assert!(err.to_string().contains("unsupported in filter expressions: function calls"), "{err}");
        let err = error("id > 0 and age + 1 > 2");
        assert_eq!(caret(&err), 11, "{err}");
        assert!(err.to_string().contains("unsupported in filter expressions: the operator '+'"), "{err}");
        assert!(error("age in (select 1)").to_string().contains("subqueries"));
        assert!(error("age between 1 and 2").to_string().contains("between"));
        assert!(error("country like 'D%'").to_string().contains("unsupported"));
        assert!(error("true").to_string().contains("unsupported"));
        assert!(error("(age > 1) = true").to_string().contains("a predicate used as a value"));
        assert!(error("(age in (1)) = true").to_string().contains("a predicate used as a value"));
        // Null literals: comparisons and 'in' lists.
        assert!(error("age = null").to_string().contains("is null"));
        let err = error("age in (1, null)");
        assert_eq!(caret(&err), 11, "{err}");
        assert!(err.to_string().contains("is null"), "{err}");
    }

    #[test]
    fn the_spec_rejects_unknown_fields() {
        let spec: FilterSpec = serde_json::from_str(r#"{"expr": "age > 1"}"#).unwrap();
        assert_eq!(spec.expr, "age > 1");
        assert!(serde_json::from_str::<FilterSpec>(r#"{"expr": "age > 1", "where": "x"}"#).is_err());
    }
}
