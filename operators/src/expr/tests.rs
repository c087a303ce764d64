//! Unit tests of the expression language on a small batch; the values expected are
//! DuckDB 2.0's on the same input (the end-to-end test `tests/e2e/test_derive.py` compares
//! every function with DuckDB itself).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Float64Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Field, Float64Type, Int8Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use arrow::record_batch::RecordBatch;

use super::Expression;
use crate::OpError;

/// 2024-01-07 (a Sunday) as days since the epoch.
const JAN_7_2024: i32 = 54 * 365 + 13 + 6;

/// | i  | big                 | x    | s         | day        | ts                  |
/// |----|---------------------|------|-----------|------------|---------------------|
/// | 7  | 9223372036854775807 | 2.5  | ' Ab '    | 2024-01-07 | 2024-01-07 10:34:56 |
/// | 0  | 1                   | NaN  | 'héllo'   | 2024-01-08 | null                |
/// | -7 | null                | -0.0 | null      | null       | 2024-03-30 23:59:59 |
/// | null | 2                 | null | ''        | 2024-12-31 | 2024-01-01 00:00:00 |
fn batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("i", DataType::Int32, true),
        Field::new("big", DataType::Int64, true),
        Field::new("x", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("day", DataType::Date32, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]));
    let d = JAN_7_2024;
    let second = 1_000_000i64;
    let jan_7 = i64::from(d) * 86_400 * second;
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from(vec![Some(7), Some(0), Some(-7), None])),
            Arc::new(Int64Array::from(vec![Some(i64::MAX), Some(1), None, Some(2)])),
            Arc::new(Float64Array::from(vec![Some(2.5), Some(f64::NAN), Some(-0.0), None])),
            Arc::new(StringArray::from(vec![Some(" Ab "), Some("héllo"), None, Some("")])),
            Arc::new(Date32Array::from(vec![Some(d), Some(d + 1), None, Some(d + 359)])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(jan_7 + (10 * 3600 + 34 * 60 + 56) * second),
                None,
                Some(jan_7 + (84 * 86_400 - 1) * second),
                Some(jan_7 - 6 * 86_400 * second),
            ])),
        ],
    )
    .unwrap()
}

fn eval(text: &str) -> ArrayRef {
    let input = batch();
    let expression = Expression::compile(text, &input.schema()).unwrap_or_else(|e| panic!("{text}: {e}"));
    let values = expression.evaluate(&input).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(values.data_type(), &expression.data_type(), "{text}");
    values
}

fn ints(text: &str) -> Vec<Option<i64>> {
    let values = eval(text);
    arrow::compute::cast(&values, &DataType::Int64).unwrap().as_primitive::<Int64Type>().iter().collect()
}

fn floats(text: &str) -> Vec<Option<f64>> {
    eval(text).as_primitive::<Float64Type>().iter().collect()
}

fn strings(text: &str) -> Vec<Option<String>> {
    eval(text).as_string::<i32>().iter().map(|s| s.map(str::to_string)).collect()
}

fn bools(text: &str) -> Vec<Option<bool>> {
    eval(text).as_boolean().iter().collect()
}

fn error(text: &str) -> String {
    let input = batch();
    match Expression::compile(text, &input.schema()) {
        Err(error) => error.to_string(),
        Ok(expression) => expression.evaluate(&input).map(|_| ()).unwrap_err().to_string(),
    }
}

fn same_floats(got: Vec<Option<f64>>, want: &[Option<f64>]) {
    let same = |a: &Option<f64>, b: &Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits() || a == b,
        (None, None) => true,
        _ => false,
    };
    assert!(got.len() == want.len() && got.iter().zip(want).all(|(a, b)| same(a, b)), "{got:?} != {want:?}");
}

#[test]
fn integer_arithmetic_keeps_the_operands_type_and_literals_adapt() {
    let type_of = |text: &str| Expression::compile(text, &batch().schema()).unwrap().data_type();
    assert_eq!(type_of("i + 1"), DataType::Int32);
    assert_eq!(type_of("big + i"), DataType::Int64);
    assert_eq!(type_of("i * 2.5"), DataType::Float64);
    assert_eq!(type_of("1 + 1"), DataType::Int32);
    assert_eq!(type_of("i + 3000000000"), DataType::Int64);
    assert_eq!(ints("i * 3 - 1"), [Some(20), Some(-1), Some(-22), None]);
    assert_eq!(ints("i // 2"), [Some(3), Some(0), Some(-3), None]);
    assert_eq!(ints("i % 3"), [Some(1), Some(0), Some(-1), None]);
    assert_eq!(ints("-i"), [Some(-7), Some(0), Some(7), None]);
}

#[test]
fn division_is_a_float_division_and_integer_division_by_zero_fails() {
    same_floats(floats("i / 2"), &[Some(3.5), Some(0.0), Some(-3.5), None]);
    same_floats(floats("1 / i"), &[Some(1.0 / 7.0), Some(f64::INFINITY), Some(-1.0 / 7.0), None]);
    same_floats(floats("i / i"), &[Some(1.0), Some(f64::NAN), Some(1.0), None]);
    let err = error("7 // i");
    assert!(err.contains("division by zero") && err.contains("row 1"), "{err}");
    assert!(error("i % i").contains("division by zero"));
    assert!(error("x // 0").contains("division by zero"));
}

#[test]
fn overflow_fails_without_showing_the_value() {
    let err = error("big + 1");
    assert!(err.contains("integer overflow") && !err.contains("9223372036854775807"), "{err}");
    assert!(error("big * big").contains("integer overflow"));
    assert!(error("abs(-big - 1)").contains("integer overflow"));
    // Arrow's remainder wraps the smallest integer % -1 to 0; DuckDB calls it an overflow.
    let err = error("(-big - 1) % -1");
    assert!(err.contains("integer overflow") && err.contains("row 0"), "{err}");
    assert_eq!(ints("(-big - 1) % 7")[1], Some(-2));
}

#[test]
fn floats_compare_as_duckdb_does() {
    // NaN = NaN, NaN above everything, -0.0 = 0.0.
    assert_eq!(bools("x = x"), [Some(true), Some(true), Some(true), None]);
    assert_eq!(bools("x > 1e308"), [Some(false), Some(true), Some(false), None]);
    assert_eq!(bools("x = 0"), [Some(false), Some(false), Some(true), None]);
    assert_eq!(bools("x in (2.5, null)"), [Some(true), None, None, None]);
    // 0 / 0 computes a NaN with its sign bit set on x86: still above everything.
    assert_eq!(bools("i / i > 1e308"), [Some(false), Some(true), Some(false), None]);
    assert_eq!(bools("greatest(i / i, 1) = i / i"), [Some(true), Some(true), Some(true), None]);
    assert_eq!(bools("i between 0 and 7"), [Some(true), Some(true), Some(false), None]);
    assert_eq!(bools("i not between 0 and 7"), [Some(false), Some(false), Some(true), None]);
}

#[test]
fn case_computes_a_branch_only_on_its_rows() {
    assert_eq!(ints("case when i = 0 then null else 7 // i end"), [Some(1), None, Some(-1), None]);
    assert_eq!(ints("case i when 7 then 1 when -7 then 2 else 3 end"), [Some(1), Some(3), Some(2), Some(3)]);
    assert_eq!(eval("case when i > 0 then 1 else 2.5 end").data_type(), &DataType::Float64);
    assert_eq!(ints("coalesce(big, i, 5)"), [Some(i64::MAX), Some(1), Some(-7), Some(2)]);
    assert_eq!(ints("nullif(i, 0)"), [Some(7), None, Some(-7), None]);
    // `when null` never matches (only `x = null` written out is refused).
    assert_eq!(ints("case i when null then 1 else 0 end"), [Some(0); 4]);
}

#[test]
fn math_functions_follow_duckdb() {
    same_floats(floats("sqrt(i)"), &[Some(7f64.sqrt()), Some(0.0), Some(f64::NAN), None]);
    same_floats(floats("ln(i)"), &[Some(7f64.ln()), Some(f64::NEG_INFINITY), Some(f64::NAN), None]);
    same_floats(floats("round(x)"), &[Some(3.0), Some(f64::NAN), Some(-0.0), None]);
    same_floats(floats("round(2.345 * i, 2)"), &[Some(16.42), Some(0.0), Some(-16.42), None]);
    assert_eq!(ints("round(i * 15, -1)"), [Some(110), Some(0), Some(-110), None]);
    same_floats(floats("floor(i / 2)"), &[Some(3.0), Some(0.0), Some(-4.0), None]);
    assert_eq!(eval("floor(i)").data_type(), &DataType::Float64);
    assert_eq!(
        eval("sign(x)").as_primitive::<Int8Type>().iter().collect::<Vec<_>>(),
        [Some(1), Some(0), Some(0), None]
    );
    assert_eq!(ints("greatest(i, 1, null)"), [Some(7), Some(1), Some(1), Some(1)]);
    same_floats(floats("least(x, 1)"), &[Some(1.0), Some(1.0), Some(0.0), Some(1.0)]);
    same_floats(floats("log(2, 8)"), &[Some(3.0); 4]);
    assert_eq!(ints("abs(i)"), [Some(7), Some(0), Some(7), None]);
}

#[test]
fn string_functions_follow_duckdb() {
    let s = |v: &[Option<&str>]| v.iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>();
    assert_eq!(strings("upper(s)"), s(&[Some(" AB "), Some("HÉLLO"), None, Some("")]));
    assert_eq!(strings("trim(s)"), s(&[Some("Ab"), Some("héllo"), None, Some("")]));
    assert_eq!(ints("length(s)"), [Some(4), Some(5), None, Some(0)]);
    assert_eq!(strings("substr(s, 2, 2)"), s(&[Some("Ab"), Some("él"), None, Some("")]));
    assert_eq!(strings("substring(s from -2)"), s(&[Some("b "), Some("lo"), None, Some("")]));
    assert_eq!(strings("concat(s, '-', i)"), s(&[Some(" Ab -7"), Some("héllo-0"), Some("--7"), Some("-")]));
    assert_eq!(strings("s || i"), s(&[Some(" Ab 7"), Some("héllo0"), None, None]));
    assert_eq!(strings("replace(s, 'l', 'L')"), s(&[Some(" Ab "), Some("héLLo"), None, Some("")]));
    assert_eq!(bools("starts_with(s, 'hé')"), [Some(false), Some(true), None, Some(false)]);
    assert_eq!(bools("regexp_matches(s, 'l+o$')"), [Some(false), Some(true), None, Some(false)]);
    // `like`: no escape but the one given (a backslash is an ordinary character).
    assert_eq!(bools("s like '%l_o'"), [Some(false), Some(true), None, Some(false)]);
    assert_eq!(bools("s ilike '%HÉ%'"), [Some(false), Some(true), None, Some(false)]);
    assert_eq!(bools("s not like '%'"), [Some(false), Some(false), None, Some(false)]);
    assert_eq!(bools("'a%' like 'a\\%'"), [Some(false); 4]);
    assert_eq!(bools("'a%' like 'a!%' escape '!'"), [Some(true); 4]);
    assert_eq!(strings("left(s, -1)"), s(&[Some(" Ab"), Some("héll"), None, Some("")]));
    assert_eq!(strings("right(s, 2)"), s(&[Some("b "), Some("lo"), None, Some("")]));
    assert_eq!(ints("strpos(s, 'l')"), [Some(0), Some(3), None, Some(0)]);
    assert_eq!(ints("position('' in s)"), [Some(1), Some(1), None, Some(1)]);
}

#[test]
fn dates_follow_duckdb() {
    assert_eq!(ints("extract(dow from day)"), [Some(0), Some(1), None, Some(2)]);
    assert_eq!(ints("extract(isodow from day)"), [Some(7), Some(1), None, Some(2)]);
    assert_eq!(ints("extract(doy from day)"), [Some(7), Some(8), None, Some(366)]);
    assert_eq!(ints("date_part('hour', ts)"), [Some(10), None, Some(23), Some(0)]);
    assert_eq!(ints("extract(hour from day)"), [Some(0), Some(0), None, Some(0)]);
    let micros = |text: &str| eval(text).as_primitive::<TimestampMicrosecondType>().iter().collect::<Vec<_>>();
    let day = |days: i32| Some(i64::from(days) * 86_400_000_000);
    // 2024-01-07 (Sunday) truncates to Monday 2024-01-01; 2024-12-31 is a Tuesday.
    assert_eq!(
        micros("date_trunc('week', day)"),
        [day(JAN_7_2024 - 6), day(JAN_7_2024 + 1), None, day(JAN_7_2024 + 358)]
    );
    assert_eq!(micros("date_trunc('quarter', ts)")[2], day(JAN_7_2024 - 6));
    assert_eq!(ints("date_diff('day', ts, day)"), [Some(0), None, None, Some(365)]);
    assert_eq!(ints("date_diff('month', day, ts)"), [Some(0), None, None, Some(-11)]);
    assert_eq!(bools("day >= '2024-01-08'"), [Some(false), Some(true), None, Some(true)]);
    same_floats(floats("extract(epoch from ts)")[..1].to_vec(), &[Some(1_704_623_696.0)]);
    same_floats(floats("extract(epoch from day)")[..1].to_vec(), &[Some(1_704_585_600.0)]);
    assert_eq!(eval("cast(day as date)").data_type(), &DataType::Date32);
    assert_eq!(eval("date_trunc('day', day)").data_type(), &DataType::Timestamp(TimeUnit::Microsecond, None));
    let dates: Vec<_> = eval("cast(ts as date)").as_primitive::<Date32Type>().iter().collect();
    assert_eq!(dates, [Some(JAN_7_2024), None, Some(JAN_7_2024 + 83), Some(JAN_7_2024 - 6)]);
}

#[test]
fn casts_round_half_to_even_and_fail_on_what_does_not_fit() {
    assert_eq!(ints("cast(2.5 as integer)")[0], Some(2));
    assert_eq!(ints("cast(3.5 as integer)")[0], Some(4));
    assert_eq!(ints("cast(-2.5 as integer)")[0], Some(-2));
    assert_eq!(ints("cast(' 12 ' as bigint)"), [Some(12); 4]);
    assert_eq!(strings("cast(i as varchar)")[2], Some("-7".to_string()));
    let err = error("cast(x as integer)");
    assert!(err.contains("cannot be cast to INTEGER") && err.contains("row 1") && !err.contains("NaN"), "{err}");
    assert!(error("cast(s as integer)").contains("cannot be cast"));
    assert!(error("cast(big as tinyint)").contains("cannot be cast to TINYINT"));
}

#[test]
fn binding_errors_point_at_the_fault() {
    // The caret line is indented by four spaces, then one space per character before the fault.
    let caret = |err: &str| err.lines().last().and_then(|line| line.find('^')).map(|at| at - 4);
    let err = error("ln(1 + amont)");
    assert!(err.contains("unknown column 'amont'"), "{err}");
    assert_eq!(caret(&err), Some(7), "{err}");
    assert_eq!(caret(&error("i + s")), Some(0));
    assert!(error("s + 1").contains("cannot apply '+' to VARCHAR and INTEGER"));
    assert!(error("frobnicate(i)").contains("unknown function 'frobnicate'"));
    assert!(error("s = 1").contains("cannot compare column 's' (VARCHAR) with the number 1"));
    assert!(error("i +").contains("expression"));
    assert!(error("null").contains("always null"));
    assert!(error("i = null").contains("use 'x is null'"));
    assert!(error("date_part('fortnight', day)").contains("unknown date part 'fortnight'"));
    assert!(error("regexp_matches(s, '(')").contains("invalid regular expression"));
    assert!(error("day - day").contains("date_diff"));
    assert!(matches!(Expression::compile("i +", &batch().schema()), Err(OpError::Expression { .. })));
}

/// An expression as deep as the parser accepts (1,000 operators, each a level of the tree)
/// is refused on a thread with a 1 MiB stack (half what Rust gives a thread), and the
/// deepest one accepted binds and evaluates there.
#[test]
fn the_deepest_accepted_expression_fits_a_small_stack() {
    for operator in ["+", "*", "||", "-", "//"] {
        let text = format!("i {}", format!("{operator} i ").repeat(999));
        let outcome = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                let input = batch();
                let compiled = Expression::compile(&text, &input.schema());
                compiled.map(|expression| expression.evaluate(&input).is_ok()).map_err(|e| e.to_string())
            })
            .unwrap()
            .join()
            .unwrap();
        let err = outcome.unwrap_err();
        assert!(err.contains("nests deeper than 128 levels"), "{operator}: {err}");
    }
    let nested = format!("{}i{}", "abs(".repeat(300), ")".repeat(300));
    let outcome = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || Expression::compile(&nested, &batch().schema()).map(|_| ()).map_err(|e| e.to_string()))
        .unwrap()
        .join()
        .unwrap();
    // (sqlparser's own limit on nested calls refuses this one first.)
    assert!(outcome.unwrap_err().starts_with("expression: "));
    // 127 levels bind and evaluate there.
    let text = format!("i {}", "+ i ".repeat(126));
    let outcome = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            let input = batch();
            Expression::compile(&text, &input.schema()).unwrap().evaluate(&input).map(|values| values.len())
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(outcome.unwrap(), 4);
}

/// The fast path of `select` equals Arrow's `zip` on every kind of operand: arrays and
/// scalars, with and without nulls, and a zoned timestamp keeps its type.
#[test]
fn select_equals_zip() {
    use super::value::{Value, select};
    use arrow::compute::kernels::zip::zip;
    let mask = arrow::array::BooleanArray::from((0..50).map(|i| i % 3 == 0 || i % 7 == 1).collect::<Vec<_>>());
    let values = |offset: i64| -> ArrayRef {
        Arc::new(Int64Array::from((0..50).map(|i| (i % 5 != 2).then_some(i + offset)).collect::<Vec<_>>()))
    };
    let cases: Vec<(Value, ArrayRef)> = vec![
        (Value::Array(values(100)), values(0)),
        (Value::Scalar(Arc::new(Int64Array::from(vec![7]))), values(0)),
        (Value::Scalar(Arc::new(Int64Array::from(vec![None::<i64>]))), values(0)),
        (
            Value::Array(Arc::new(TimestampMicrosecondArray::from(vec![1i64; 50]).with_timezone("Europe/Berlin"))),
            Arc::new(TimestampMicrosecondArray::from(vec![Some(2i64); 50]).with_timezone("Europe/Berlin")),
        ),
    ];
    for (truthy, falsy) in cases {
        let fast = select(&mask, &truthy, &falsy).unwrap();
        let reference = zip(&mask, &truthy, &falsy).unwrap();
        assert_eq!(fast.as_ref(), reference.as_ref());
        assert_eq!(fast.data_type(), falsy.data_type());
    }
}

/// Timestamps at the ends of what chrono represents (year -262143 and +262142) neither panic
/// nor wrap in the date functions: a result past the range is null.
#[test]
fn extreme_timestamps_give_nulls_not_panics() {
    let (min, max) = (
        chrono::NaiveDateTime::MIN.and_utc().timestamp_micros(),
        chrono::NaiveDateTime::MAX.and_utc().timestamp_micros(),
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("b", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]));
    let input = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampMicrosecondArray::from(vec![min, max])),
            Arc::new(TimestampMicrosecondArray::from(vec![max, min])),
        ],
    )
    .unwrap();
    let micros = |text: &str| {
        let values = Expression::compile(text, &input.schema()).unwrap().evaluate(&input).unwrap();
        arrow::compute::cast(&values, &DataType::Int64).unwrap().as_primitive::<Int64Type>().iter().collect::<Vec<_>>()
    };
    // The span overflows a 64-bit count of microseconds: null, not a wrapped number.
    assert_eq!(micros("date_diff('second', a, b)"), [None, None]);
    // The week of the earliest representable day starts before it: null.
    assert_eq!(micros("date_trunc('week', a)")[0], None);
    assert_eq!(micros("date_diff('year', a, b)"), [Some(524_285), Some(-524_285)]);
}
