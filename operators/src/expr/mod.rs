//! Weir's expression language: SQL expressions, parsed once with sqlparser, type-checked
//! against the input schema, and evaluated with Arrow kernels over whole batches. `derive`
//! computes columns with it; its semantics follow DuckDB's, and where Weir differs it says
//! so here and in docs/jobs.md.
//!
//! # Language
//!
//! - columns: bare identifiers or `"double quoted"` names (case-sensitive);
//! - literals: integers, decimals (`2.5`, `1e6`), `'strings'`, `true`, `false`, `null`;
//! - arithmetic `+ - * / // %` and unary `-`; comparisons `= == != <> < <= > >=`;
//!   `and`, `or`, `not`; `is [not] null`; `[not] in (…)`; `[not] between … and …`;
//!   `||` (string concatenation);
//! - `case when … then … [else …] end`, `case x when v then … end`, `coalesce`, `nullif`,
//!   `cast(x as T)` and `x::T` (T: boolean, tinyint, smallint, integer, bigint, utinyint,
//!   usmallint, uinteger, ubigint, float, double, varchar, date, timestamp);
//! - numbers: `abs`, `sqrt`, `cbrt`, `exp`, `ln`, `log` (base 10; `log(b, x)` base b),
//!   `log10`, `log2`, `pow`/`power`, `round(x[, n])`, `floor`, `ceil`/`ceiling`, `sign`,
//!   `greatest`, `least`;
//! - strings: `lower`, `upper`, `trim`, `ltrim`, `rtrim`, `length`, `substr`/`substring`,
//!   `left`, `right`, `strpos`/`position(part in s)`, `concat`, `replace`, `starts_with`,
//!   `contains`, `regexp_matches` (RE2's ASCII `\w`, `\d`, `\s`, `\b`), `[not] like` and
//!   `ilike` with an optional `escape` (patterns are literals; a backslash is an ordinary
//!   character unless it is the `escape`, as in DuckDB);
//! - dates and timestamps: `extract(field from x)` / `date_part('field', x)` (year, quarter,
//!   month, week, day, dow, isodow, doy, hour, minute, second, epoch), `date_trunc('unit',
//!   x)` (year, quarter, month, week, day, hour, minute, second), `date_diff('unit', a, b)`
//!   (year, quarter, month, week, day, hour, minute, second).
//!
//! # Types and values (DuckDB's rules)
//!
//! - Integer arithmetic stays in the wider operand's type (`int32 + int32` is `int32`, an
//!   integer literal takes the other operand's type when it fits), and an overflow fails
//!   the run, as in DuckDB. `/` is always a float division (`1 / 0` is `inf`, `0 / 0` is
//!   `NaN`); `//` and `%` on integers truncate toward zero, and a zero divisor fails.
//! - Math functions work in `double` (`sqrt(-1)` is `NaN`, `ln(0)` is `-inf`); `abs` and
//!   `round` keep an integer's type; `floor` and `ceil` of an integer are `double`; `sign`
//!   is `tinyint`; `round` rounds half away from zero.
//! - Nulls: every operator and function gives null on a null operand, except `and`/`or`
//!   (Kleene logic), `is null`, `coalesce`, `concat` (which skips nulls) and
//!   `greatest`/`least` (which ignore nulls). `x in (…, null)` is null when nothing matches.
//! - Floats compare as DuckDB's do: `NaN = NaN` is true, `NaN` is greater than every other
//!   value, and `-0.0 = 0.0`.
//! - A `case` branch's value is computed only on the rows that take the branch, so
//!   `case when n = 0 then null else total // n end` never divides by zero.
//! - `cast` of a float to an integer rounds half to even, and a value out of the target's
//!   range fails the run; strings are trimmed of spaces before they are read as numbers.
//!
//! # Where Weir differs from DuckDB
//!
//! - A decimal literal (`2.5`) is a `double`, not a `DECIMAL`: `x * 2.5` on an integer
//!   column is a `double`, and `0.1 + 0.2` is `0.30000000000000004`. Decimal columns are
//!   read as `double`.
//! - A string never turns into a number implicitly: `'1' = 1` and `name + 1` are type
//!   errors (DuckDB tries the conversion per value); write `cast(name as integer)`. A string
//!   literal compared with a date or timestamp is read as one (`day >= '2024-01-31'`).
//! - A `ubigint` mixed with a signed integer is computed in `double` (DuckDB: `HUGEINT`).
//! - `upper` and `lower` map one character to one character (`upper('ß')` is `'ẞ'`, as in
//!   DuckDB); a float cast to `varchar` is written by Arrow's formatter (`1e20`, where
//!   DuckDB writes `1e+20`).
//! - `date_trunc`, `extract`, `date_diff` and `cast(… as date | timestamp | varchar)` read a
//!   timestamp with a time zone in that zone; DuckDB reads it in the session's `TimeZone`
//!   (the same results when that is the column's zone, clock changes included: a wall-clock
//!   time the clock repeats is the later one, one it skips is read with the offset from
//!   before the change, as ICU does). A timestamp without a zone is read as is by both.
//!
//! # Errors
//!
//! Binding errors ([`OpError::Expression`]) quote the expression with a caret under the
//! fault. A failure on the data ([`OpError::Evaluation`]: an overflow, a zero divisor, a
//! value a `cast` cannot convert) names the part of the expression that failed and the
//! row within the batch, never the value.

mod bind;
mod functions;
mod node;
pub(crate) mod parse;
mod value;

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::OpError;
pub use bind::MAX_DEPTH;
use node::Node;
pub use value::sql_type;

/// An expression compiled against one input schema.
#[derive(Debug)]
pub struct Expression {
    text: String,
    node: Node,
}

impl Expression {
    /// Parses `text` and type-checks it against `input`.
    pub fn compile(text: &str, input: &SchemaRef) -> Result<Expression, OpError> {
        let ast = parse::parse(text)?;
        let node = bind::Binder::new(text, input).bind_value(&ast)?;
        Ok(Expression { text: text.to_string(), node })
    }

    /// Type-checks `ast`, a part of the already parsed `text` (an aggregate function's
    /// argument), against `input`; errors quote `text` with the caret at the fault.
    pub(crate) fn compile_part(
        text: &str,
        ast: &sqlparser::ast::Expr,
        input: &SchemaRef,
    ) -> Result<Expression, OpError> {
        let node = bind::Binder::new(text, input).bind_value(ast)?;
        Ok(Expression { text: text.to_string(), node })
    }

    /// The type of the expression's values.
    pub fn data_type(&self) -> DataType {
        self.node.data_type()
    }

    /// The expression's text, as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The expression's value for every row of `batch`.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef, OpError> {
        let value = self.node.evaluate(batch).map_err(|fault| fault.into_error(&self.text))?;
        let array = value.into_array(batch.num_rows()).map_err(OpError::Arrow)?;
        debug_assert_eq!(array.len(), batch.num_rows());
        Ok(array)
    }
}

#[cfg(test)]
mod tests;
