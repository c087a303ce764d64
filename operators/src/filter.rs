//! `filter`: `expr = "age >= 0 and (country in ('DE', 'FR') or income is not null)"` keeps
//! the rows where an expression of Weir's expression language ([`crate::expr`], the one
//! `derive` uses) is true.
//!
//! The expression must be a boolean: a comparison, `in`, `between`, `is null`, a boolean
//! column or function (`starts_with(name, 'A')`), or `and` / `or` / `not` of those. Every
//! function and operator of the language may appear in it (`ln(1 + amount) > 2`,
//! `extract(hour from ts) between 9 and 17`).
//!
//! # Nulls
//!
//! SQL's three-valued logic: a comparison or an `in` involving a null is null, `and`/`or`
//! are Kleene's (`null and false` is false, `null or true` is true), `not null` is null,
//! and only the rows where the predicate is *true* are kept; false and null rows are
//! dropped. So `not (x > 1)` drops the rows where `x` is null, and so does
//! `x not in (1, 2)`. `is null` / `is not null` are never null. A comparison with the
//! literal `null` (never true) is refused with a pointer to `is null`.
//!
//! # Types
//!
//! DuckDB's rules (see [`crate::expr`]): numbers compare by value across every integer and
//! float width (an integer literal takes the column's type when it fits, a float column
//! compares with a decimal literal at its own precision); strings compare byte-wise; dates
//! and timestamps compare with each other and with string literals read as one
//! (`day >= '2024-01-31'`); a string never compares with a number. Floats compare as in
//! DuckDB: `NaN = NaN`, `NaN` above every other value, `-0.0 = 0.0`.
//!
//! # Evaluation
//!
//! The expression is compiled once, at bind time; each batch is then evaluated with Arrow
//! kernels (no per-row code) and filtered with [`filter_record_batch`], which keeps the
//! order of the rows. A batch whose rows are all kept is returned as is, without a copy.

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::expr::Expression;
use crate::expr::parse::expr_error;
use crate::{BoundStep, OpError};

/// `op = "filter"`: keep the rows where `expr` is true (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// The predicate, e.g. `age >= 0 and country in ('DE', 'FR')`.
    pub expr: String,
}

impl FilterSpec {
    /// Parses the expression and type-checks it against `input`. Errors
    /// ([`OpError::Expression`]) quote the expression with a caret under the offending
    /// character: a syntax error, an unknown column, a type mismatch, a value that is not a
    /// boolean.
    pub fn bind(&self, input: &SchemaRef) -> Result<Filter, OpError> {
        let predicate = Expression::compile(&self.expr, input)?;
        if predicate.data_type() != DataType::Boolean {
            return Err(expr_error(
                &self.expr,
                0,
                format!(
                    "a filter needs a boolean, and this is {}: compare it with something (e.g. {} is not null)",
                    crate::expr::sql_type(&predicate.data_type()),
                    self.expr.trim()
                ),
            ));
        }
        Ok(Filter { predicate, schema: input.clone() })
    }
}

/// A [`FilterSpec`] bound to its input schema: the compiled predicate. Its output schema is
/// the input schema.
#[derive(Debug)]
pub struct Filter {
    predicate: Expression,
    schema: SchemaRef,
}

impl Filter {
    /// Which rows of `batch` the predicate keeps (true), drops (false) or drops as null.
    pub fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray, OpError> {
        let values = self.predicate.evaluate(batch)?;
        values
            .as_boolean_opt()
            .cloned()
            .ok_or_else(|| OpError::Internal(format!("filter: the predicate gave {}", values.data_type())))
    }
}

impl BoundStep for Filter {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mask = self.mask(&batch)?;
        if mask.true_count() == batch.num_rows() {
            return Ok(batch);
        }
        Ok(filter_record_batch(&batch, &mask)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{
        Date32Array, DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray, StringViewArray,
    };
    use arrow::datatypes::{Field, Int32Type, Schema, TimeUnit};

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
            OpError::Expression { caret, .. } => caret.chars().count() - 1,
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
        assert!(err.to_string().contains("'yesterday' is not a valid DATE"), "{err}");
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
        assert!(error("").to_string().contains("expression"));
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
        assert!(err.to_string().contains("cannot compare column 'country' (VARCHAR) with the number 3"), "{err}");
        let err = error("age = '30'");
        assert_eq!(caret(&err), 6, "{err}");
        let err = error("age in (1, 'x')");
        assert_eq!(caret(&err), 11, "{err}");
        assert!(err.to_string().contains("with the string 'x'"), "{err}");
        let err = error("active = 1");
        assert_eq!(caret(&err), 9, "{err}");
        let err = error("country = age");
        assert_eq!(caret(&err), 10, "{err}");
        assert!(err.to_string().contains("with column 'age' (INTEGER)"), "{err}");
        let err = error("age");
        assert!(err.to_string().contains("a filter needs a boolean, and this is INTEGER"), "{err}");
    }

    #[test]
    fn the_whole_expression_language_is_available() {
        assert_eq!(ids("abs(age - 30) <= 10"), vec![0, 3]);
        assert_eq!(ids("id > 0 and age + 1 > 20"), vec![3, 5]);
        assert_eq!(ids("age between 17 and 40"), vec![0, 1, 3]);
        assert_eq!(ids("starts_with(lower(country), 'd')"), vec![0]);
        assert_eq!(ids("country like 'D%' or country ilike '_r'"), vec![0, 1]);
        assert_eq!(ids("extract(month from day) = 1"), vec![0, 1]);
        assert_eq!(ids("(age > 18) = true"), vec![0, 3, 5]);
        assert_eq!(ids("true"), vec![0, 1, 2, 3, 4, 5]);
        // A null in an 'in' list: the rows that match are kept, the others are null (dropped).
        assert_eq!(ids("age in (2, null)"), vec![4]);
    }

    #[test]
    fn unsupported_constructs_are_refused() {
        assert!(error("age in (select 1)").to_string().contains("subqueries"));
        assert!(error("country similar to 'D%'").to_string().contains("regexp_matches"));
        // A comparison with the null literal is never true.
        let err = error("age = null");
        assert_eq!(caret(&err), 6, "{err}");
        assert!(err.to_string().contains("is null"), "{err}");
    }

    #[test]
    fn the_spec_rejects_unknown_fields() {
        let spec: FilterSpec = serde_json::from_str(r#"{"expr": "age > 1"}"#).unwrap();
        assert_eq!(spec.expr, "age > 1");
        assert!(serde_json::from_str::<FilterSpec>(r#"{"expr": "age > 1", "where": "x"}"#).is_err());
    }
}
