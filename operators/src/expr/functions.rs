//! The functions of the expression language and `cast`, as kernels over whole arrays. Each
//! receives arguments of the types binding gave it (see `bind.rs`), so a kernel's
//! downcasts hold by construction.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Float64Array, Int64Array, Int64Builder, StringArray,
    StringBuilder, TimestampMicrosecondArray,
};
use arrow::compute::kernels::arity::unary;
use arrow::compute::kernels::boolean::is_null;
use arrow::compute::kernels::{cmp, numeric, zip::zip};
use arrow::compute::{CastOptions, DatePart, cast, cast_with_options, date_part};
use arrow::datatypes::{DataType, Date32Type, Float32Type, Float64Type, TimeUnit, TimestampMicrosecondType};
use arrow::error::ArrowError;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike};

use super::value::{Fault, Value, canonical_floats, overflow_or, select, sql_type};

/// A field of `extract` / `date_part`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Year,
    Quarter,
    Month,
    Week,
    Day,
    DayOfWeek,
    IsoDayOfWeek,
    DayOfYear,
    Hour,
    Minute,
    Second,
    Epoch,
}

impl Field {
    pub(crate) fn parse(name: &str) -> Option<Field> {
        Some(match name.to_ascii_lowercase().as_str() {
            "year" | "years" => Field::Year,
            "quarter" | "quarters" => Field::Quarter,
            "month" | "months" => Field::Month,
            "week" | "weeks" | "weekofyear" => Field::Week,
            "day" | "days" | "dayofmonth" => Field::Day,
            "dow" | "dayofweek" => Field::DayOfWeek,
            "isodow" => Field::IsoDayOfWeek,
            "doy" | "dayofyear" => Field::DayOfYear,
            "hour" | "hours" => Field::Hour,
            "minute" | "minutes" => Field::Minute,
            "second" | "seconds" => Field::Second,
            "epoch" => Field::Epoch,
            _ => return None,
        })
    }

    pub(crate) const NAMES: &'static str =
        "year, quarter, month, week, day, dow, isodow, doy, hour, minute, second, epoch";
}

/// A unit of `date_trunc` and `date_diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Year,
    Quarter,
    Month,
    Week,
    Day,
    Hour,
    Minute,
    Second,
}

impl Unit {
    pub(crate) fn parse(name: &str) -> Option<Unit> {
        Some(match name.to_ascii_lowercase().as_str() {
            "year" | "years" => Unit::Year,
            "quarter" | "quarters" => Unit::Quarter,
            "month" | "months" => Unit::Month,
            "week" | "weeks" => Unit::Week,
            "day" | "days" => Unit::Day,
            "hour" | "hours" => Unit::Hour,
            "minute" | "minutes" => Unit::Minute,
            "second" | "seconds" => Unit::Second,
            _ => return None,
        })
    }

    pub(crate) const NAMES: &'static str = "year, quarter, month, week, day, hour, minute, second";
}

/// A function call, bound to its arguments' types.
#[derive(Debug)]
pub(crate) enum Function {
    Abs,
    Sqrt,
    Cbrt,
    Exp,
    Ln,
    Log10,
    Log2,
    /// `log(b, x)`.
    LogBase,
    Power,
    Round,
    RoundDigits(i64),
    Floor,
    Ceil,
    Sign,
    Greatest,
    Least,
    Lower,
    Upper,
    Trim {
        start: bool,
        end: bool,
    },
    Length,
    Substring,
    Concat,
    /// `a || b`: null when either is.
    ConcatOperator,
    Replace,
    StartsWith,
    Contains,
    RegexpMatches(regex::Regex),
    /// `like` / `ilike`, the pattern compiled to an anchored regular expression.
    Like(regex::Regex),
    /// `left(s, n)`, `right(s, n)`: the first / last `n` characters (all but the last /
    /// first `-n` for a negative `n`).
    Left,
    Right,
    /// `strpos(s, part)`: the 1-based character position of `part` in `s`, 0 if absent.
    StrPos,
    DatePart(Field),
    DateTrunc(Unit),
    DateDiff(Unit),
}

impl Function {
    /// Whether some values make the function fail (an integer overflow).
    pub(crate) fn can_fail(&self) -> bool {
        matches!(self, Function::Abs | Function::RoundDigits(_))
    }

    /// The function's value on `args`, of `data_type`.
    pub(crate) fn evaluate(
        &self,
        args: &[Value],
        rows: usize,
        data_type: &DataType,
        text: &str,
    ) -> Result<Value, Fault> {
        let arg = |i: usize| &args[i];
        let rows = if args.iter().all(Value::is_scalar) && !args.is_empty() { 1 } else { rows };
        let array = match self {
            Function::Abs => return abs(arg(0), text),
            Function::Sqrt => return float_unary(arg(0), f64::sqrt),
            Function::Cbrt => return float_unary(arg(0), f64::cbrt),
            Function::Exp => return float_unary(arg(0), f64::exp),
            Function::Ln => return float_unary(arg(0), f64::ln),
            Function::Log10 => return float_unary(arg(0), f64::log10),
            Function::Log2 => return float_unary(arg(0), f64::log2),
            Function::LogBase => float_binary(arg(0), arg(1), rows, |base, x| x.ln() / base.ln())?,
            Function::Power => float_binary(arg(0), arg(1), rows, f64::powf)?,
            Function::Round => return float_or_identity(arg(0), f64::round, f32::round),
            Function::RoundDigits(digits) => return round_digits(arg(0), *digits, text),
            Function::Floor => return float_or_identity(arg(0), f64::floor, f32::floor),
            Function::Ceil => return float_or_identity(arg(0), f64::ceil, f32::ceil),
            Function::Sign => {
                let values = cast(arg(0).array(), &DataType::Float64)?;
                let signs: arrow::array::Int8Array =
                    unary::<Float64Type, _, arrow::datatypes::Int8Type>(values.as_primitive::<Float64Type>(), |x| {
                        if x > 0.0 {
                            1
                        } else if x < 0.0 {
                            -1
                        } else {
                            0
                        }
                    });
                return Ok(Value::like(&args[..1], Arc::new(signs)));
            }
            Function::Greatest | Function::Least => extreme(args, rows, matches!(self, Function::Greatest))?,
            Function::Lower => map_strings(args, rows, |values, _, out| {
                let Some(s) = values[0] else { return false };
                out.push_str(s);
                if s.is_ascii() {
                    out.make_ascii_lowercase();
                } else {
                    out.clear();
                    out.extend(s.chars().map(lower));
                }
                true
            })?,
            Function::Upper => map_strings(args, rows, |values, _, out| {
                let Some(s) = values[0] else { return false };
                out.push_str(s);
                if s.is_ascii() {
                    out.make_ascii_uppercase();
                } else {
                    out.clear();
                    out.extend(s.chars().map(upper));
                }
                true
            })?,
            Function::Trim { start, end } => map_strings(args, rows, |values, _, out| {
                let Some(s) = values[0] else { return false };
                let s = if *start { s.trim_start_matches(' ') } else { s };
                out.push_str(if *end { s.trim_end_matches(' ') } else { s });
                true
            })?,
            Function::Length => {
                let strings = arg(0).array().as_string::<i32>();
                if strings.values().is_ascii() {
                    // One byte per character: Arrow's byte lengths.
                    cast(&arrow::compute::kernels::length::length(strings)?, &DataType::Int64)?
                } else {
                    let lengths: Int64Array = strings.iter().map(|s| s.map(|s| s.chars().count() as i64)).collect();
                    Arc::new(lengths)
                }
            }
            Function::Substring => map_strings(args, rows, |values, row, out| {
                let Some(s) = values[0] else { return false };
                let Some(start) = integer_at(&args[1], row) else { return false };
                let length = if args.len() > 2 { integer_at(&args[2], row) } else { Some(i64::MAX / 2) };
                let Some(length) = length else { return false };
                out.push_str(substring(s, start, length));
                true
            })?,
            Function::Concat => map_strings(args, rows, |values, _, out| {
                values.iter().flatten().for_each(|s| out.push_str(s));
                true
            })?,
            Function::ConcatOperator => map_strings(args, rows, |values, _, out| {
                let (Some(a), Some(b)) = (values[0], values[1]) else { return false };
                out.push_str(a);
                out.push_str(b);
                true
            })?,
            Function::Replace => map_strings(args, rows, |values, _, out| {
                let (Some(s), Some(from), Some(to)) = (values[0], values[1], values[2]) else { return false };
                if from.is_empty() {
                    out.push_str(s);
                    return true;
                }
                let mut rest = s;
                while let Some(at) = rest.find(from) {
                    out.push_str(&rest[..at]);
                    out.push_str(to);
                    rest = &rest[at + from.len()..];
                }
                out.push_str(rest);
                true
            })?,
            Function::StartsWith => test_strings(args, rows, |a, b| a.starts_with(b)),
            Function::Contains => test_strings(args, rows, |a, b| a.contains(b)),
            Function::RegexpMatches(regex) | Function::Like(regex) => {
                test_strings(args, rows, |a, _| regex.is_match(a))
            }
            Function::Left | Function::Right => map_strings(args, rows, |values, row, out| {
                let (Some(s), Some(n)) = (values[0], integer_at(&args[1], row)) else { return false };
                let size = s.chars().count() as i64;
                let keep = if n >= 0 { n.min(size) } else { (size + n).max(0) };
                let (from, to) = if matches!(self, Function::Left) { (0, keep) } else { (size - keep, size) };
                out.extend(s.chars().skip(from as usize).take((to - from) as usize));
                true
            })?,
            Function::StrPos => {
                let (strings, parts) = (Strings::of(arg(0)), Strings::of(arg(1)));
                let positions: Int64Array = (0..rows)
                    .map(|row| {
                        let s = strings.and_then(|strings| strings.at(row))?;
                        let part = parts.and_then(|parts| parts.at(row))?;
                        Some(s.find(part).map_or(0, |at| s[..at].chars().count() as i64 + 1))
                    })
                    .collect();
                Arc::new(positions)
            }
            Function::DatePart(field) => return date_part_of(arg(0), *field),
            Function::DateTrunc(unit) => {
                let timestamps = as_timestamps(arg(0).array())?;
                let zone = zone_of(timestamps.data_type())?;
                let truncated: TimestampMicrosecondArray = timestamps
                    .as_primitive::<TimestampMicrosecondType>()
                    .unary_opt(|micros| truncate(micros, *unit, &zone))
                    .with_timezone_opt(zone_name(timestamps.data_type()));
                return Ok(Value::like(&args[..1], Arc::new(truncated)));
            }
            Function::DateDiff(unit) => date_diff(arg(0), arg(1), rows, *unit)?,
        };
        debug_assert_eq!(array.data_type(), data_type, "{self:?}");
        Ok(Value::like(args, array))
    }
}

/// `f` on each value of a `double` argument.
fn float_unary(value: &Value, f: fn(f64) -> f64) -> Result<Value, Fault> {
    value.map(|array| Ok(Arc::new(unary::<Float64Type, _, Float64Type>(array.as_primitive::<Float64Type>(), f))))
}

/// `f` on a float argument's values, or the values themselves for an integer.
fn float_or_identity(value: &Value, f64_op: fn(f64) -> f64, f32_op: fn(f32) -> f32) -> Result<Value, Fault> {
    value.map(|array| {
        Ok(match array.data_type() {
            DataType::Float64 => Arc::new(unary::<Float64Type, _, Float64Type>(array.as_primitive(), f64_op)),
            DataType::Float32 => Arc::new(unary::<Float32Type, _, Float32Type>(array.as_primitive(), f32_op)),
            _ => array.clone(),
        })
    })
}

/// `f(a, b)` on two `double` arguments, row by row of `rows`.
fn float_binary(a: &Value, b: &Value, rows: usize, f: fn(f64, f64) -> f64) -> Result<ArrayRef, Fault> {
    let (a, b) = (a.clone().into_array(rows)?, b.clone().into_array(rows)?);
    let result: Float64Array =
        arrow::compute::kernels::arity::binary(a.as_primitive::<Float64Type>(), b.as_primitive::<Float64Type>(), f)?;
    Ok(Arc::new(result))
}

/// `abs(x)`: the type of `x`; the most negative integer of a type overflows.
fn abs(value: &Value, text: &str) -> Result<Value, Fault> {
    value.map(|array| {
        let data_type = array.data_type();
        if data_type.is_unsigned_integer() {
            return Ok(array.clone());
        }
        if data_type.is_floating() {
            return Ok(match data_type {
                DataType::Float32 => Arc::new(unary::<Float32Type, _, Float32Type>(array.as_primitive(), f32::abs)),
                _ => Arc::new(unary::<Float64Type, _, Float64Type>(array.as_primitive(), f64::abs)),
            });
        }
        let zero = cast(&(Arc::new(arrow::array::Int8Array::from(vec![0])) as ArrayRef), data_type)?;
        let negative = cmp::lt(array, &arrow::array::Scalar::new(zero))?;
        if negative.true_count() == 0 {
            return Ok(array.clone());
        }
        let negated = numeric::neg(array).map_err(|error| overflow_or(error, text))?;
        Ok(zip(&negative, &negated, array)?)
    })
}

/// `round(x, digits)`: DuckDB's `round(x * 10^d) / 10^d` (half away from zero) for floats,
/// to a multiple of `10^-d` for integers when `d` is negative.
fn round_digits(value: &Value, digits: i64, text: &str) -> Result<Value, Fault> {
    value.map(|array| {
        let data_type = array.data_type().clone();
        if data_type.is_floating() {
            let values = cast(array, &DataType::Float64)?;
            let rounded = unary::<Float64Type, _, Float64Type>(values.as_primitive(), move |x| {
                let modifier = 10f64.powi(digits.unsigned_abs().min(400) as i32);
                let rounded =
                    if digits >= 0 { (x * modifier).round() / modifier } else { (x / modifier).round() * modifier };
                if rounded.is_finite() { rounded } else { x }
            });
            return Ok(cast(&(Arc::new(rounded) as ArrayRef), &data_type)?);
        }
        if digits >= 0 {
            return Ok(array.clone());
        }
        let values = cast(array, &DataType::Int64)?;
        let step = 10i128.checked_pow(digits.unsigned_abs().min(38) as u32).unwrap_or(i128::MAX);
        let rounded: Int64Array = values.as_primitive::<arrow::datatypes::Int64Type>().unary_opt(|x| {
            let x = i128::from(x);
            let half = step / 2;
            let rounded = if x >= 0 { (x + half) / step * step } else { (x - half) / step * step };
            i64::try_from(rounded).ok()
        });
        let options = CastOptions { safe: true, ..Default::default() };
        let back = cast_with_options(&(Arc::new(rounded) as ArrayRef), &data_type, &options)?;
        if back.null_count() > array.null_count() {
            return Err(Fault::data(text, "integer overflow", None));
        }
        Ok(back)
    })
}

/// `greatest` / `least` of arguments of one type, ignoring nulls, in DuckDB's order (`NaN`
/// above everything, `-0.0` as `0.0`).
fn extreme(args: &[Value], rows: usize, greatest: bool) -> Result<ArrayRef, Fault> {
    let normalize = canonical_floats;
    let mut result = normalize(args[0].clone().into_array(rows)?);
    for arg in &args[1..] {
        let next = normalize(arg.clone().into_array(rows)?);
        let better = if greatest { cmp::gt(&next, &result)? } else { cmp::lt(&next, &result)? };
        let better = BooleanArray::new(better.values() & &not_null_bits(&better), None);
        let replace = arrow::compute::kernels::boolean::or(&better, &is_null(&result)?)?;
        result = select(&replace, &Value::Array(next), &result)?;
    }
    Ok(result)
}

fn not_null_bits(array: &BooleanArray) -> arrow::buffer::BooleanBuffer {
    match array.nulls() {
        Some(nulls) => nulls.inner().clone(),
        None => arrow::buffer::BooleanBuffer::new_set(array.len()),
    }
}

/// The string of a `varchar` argument at `row` (a scalar's only value whatever the row).
/// A `varchar` argument, downcast once for all its rows.
#[derive(Clone, Copy)]
struct Strings<'a> {
    array: &'a StringArray,
    scalar: bool,
}

impl<'a> Strings<'a> {
    /// `None` for an argument of another type.
    fn of(value: &'a Value) -> Option<Strings<'a>> {
        Some(Strings { array: value.array().as_string_opt::<i32>()?, scalar: value.is_scalar() })
    }

    fn at(self, row: usize) -> Option<&'a str> {
        let row = if self.scalar { 0 } else { row };
        self.array.is_valid(row).then(|| self.array.value(row))
    }
}

fn integer_at(value: &Value, row: usize) -> Option<i64> {
    let array = value.array().as_primitive::<arrow::datatypes::Int64Type>();
    let row = if value.is_scalar() { 0 } else { row };
    array.is_valid(row).then(|| array.value(row))
}

/// A `varchar` result, one row at a time: `f` gets the row's string arguments (`None` for a
/// null, or for an argument of another type, which `f` reads itself with the row number)
/// and writes the row's value into a buffer, returning false for a null. The buffers are
/// reused from row to row: nothing is allocated per row.
fn map_strings(
    args: &[Value],
    rows: usize,
    f: impl Fn(&[Option<&str>], usize, &mut String) -> bool,
) -> Result<ArrayRef, Fault> {
    let mut out = StringBuilder::with_capacity(rows, 0);
    let strings: Vec<Option<Strings>> = args.iter().map(Strings::of).collect();
    let mut values: Vec<Option<&str>> = Vec::with_capacity(args.len());
    let mut buffer = String::new();
    for row in 0..rows {
        values.clear();
        values.extend(strings.iter().map(|strings| strings.and_then(|strings| strings.at(row))));
        buffer.clear();
        if f(&values, row, &mut buffer) {
            out.append_value(&buffer);
        } else {
            out.append_null();
        }
    }
    let array: StringArray = out.finish();
    Ok(Arc::new(array))
}

/// A boolean of two `varchar` arguments (null when either is).
fn test_strings(args: &[Value], rows: usize, f: impl Fn(&str, &str) -> bool) -> ArrayRef {
    let mut out = BooleanBuilder::with_capacity(rows);
    let (first, second) = (args.first().and_then(Strings::of), args.get(1).and_then(Strings::of));
    for row in 0..rows {
        let b = if args.len() > 1 { second.and_then(|strings| strings.at(row)) } else { Some("") };
        out.append_option(first.and_then(|strings| strings.at(row)).zip(b).map(|(a, b)| f(a, b)));
    }
    Arc::new(out.finish())
}

/// A `like` pattern (`%` any run of characters, `_` one character, `escape` the character
/// that makes the next one literal; no other escape, as in DuckDB) as an anchored regular
/// expression, case-insensitive for `ilike`.
pub(crate) fn like_regex(pattern: &str, escape: Option<char>, case_insensitive: bool) -> Result<regex::Regex, String> {
    let mut out = String::from(if case_insensitive { "(?s)(?i)^" } else { "(?s)^" });
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            c if Some(c) == escape => match chars.next() {
                Some(next) => out.push_str(&regex::escape(&next.to_string())),
                None => return Err("the pattern ends with its escape character".into()),
            },
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push('$');
    regex::RegexBuilder::new(&out).size_limit(1 << 20).build().map_err(|error| error.to_string())
}

/// DuckDB's `lower`: one character for one.
fn lower(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(one), None) => one,
        _ => c,
    }
}

/// DuckDB's `upper`: one character for one (`ß` becomes `ẞ`).
fn upper(c: char) -> char {
    if c == 'ß' {
        return 'ẞ';
    }
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(one), None) => one,
        _ => c,
    }
}

/// DuckDB's `substring(s, start, length)`: 1-based characters; `start` 0 begins one before
/// the first, a negative `start` counts from the end, a negative `length` goes backwards.
fn substring(s: &str, start: i64, length: i64) -> &str {
    let size = s.chars().count() as i64;
    let from = match start {
        1.. => start - 1,
        ..0 => size.saturating_add(start),
        0 => -1,
    };
    let (from, to) =
        if length >= 0 { (from, from.saturating_add(length)) } else { (from.saturating_add(length), from) };
    let (from, to) = (from.clamp(0, size), to.clamp(0, size));
    if from >= to {
        return "";
    }
    let byte = |chars: i64| s.char_indices().nth(chars as usize).map_or(s.len(), |(index, _)| index);
    &s[byte(from)..byte(to)]
}

/// A `date` argument as timestamps (microseconds, no zone); a timestamp as it is.
fn as_timestamps(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    match array.data_type() {
        DataType::Date32 => cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None)),
        _ => Ok(array.clone()),
    }
}

fn zone_name(data_type: &DataType) -> Option<Arc<str>> {
    match data_type {
        DataType::Timestamp(_, zone) => zone.clone(),
        _ => None,
    }
}

/// The time zone a timestamp's fields are read in (none: as written).
fn zone_of(data_type: &DataType) -> Result<Option<arrow::array::timezone::Tz>, ArrowError> {
    zone_name(data_type).map(|name| name.parse()).transpose()
}

/// The wall-clock time of `micros` (since the epoch, UTC) in `zone`.
fn local(micros: i64, zone: &Option<arrow::array::timezone::Tz>) -> Option<NaiveDateTime> {
    let utc = DateTime::from_timestamp_micros(micros)?;
    Some(match zone {
        Some(zone) => zone.from_utc_datetime(&utc.naive_utc()).naive_local(),
        None => utc.naive_utc(),
    })
}

/// The microseconds since the epoch of a wall-clock time in `zone`, resolved as ICU (and so
/// DuckDB) does: a time the clock passes twice is the later one, and a time the clock skips
/// is read with the offset from before the change.
fn from_local(time: NaiveDateTime, zone: &Option<arrow::array::timezone::Tz>) -> Option<i64> {
    let Some(zone) = zone else { return Some(time.and_utc().timestamp_micros()) };
    match zone.from_local_datetime(&time) {
        chrono::LocalResult::Single(instant) => Some(instant.timestamp_micros()),
        chrono::LocalResult::Ambiguous(_, later) => Some(later.timestamp_micros()),
        chrono::LocalResult::None => {
            let before = zone.offset_from_utc_datetime(&time.checked_sub_signed(Duration::days(1))?);
            let seconds = chrono::Offset::fix(&before).local_minus_utc();
            Some(time.checked_sub_signed(Duration::seconds(i64::from(seconds)))?.and_utc().timestamp_micros())
        }
    }
}

/// A wall-clock time (microseconds of a timestamp without a zone) read in the time zone
/// `zone`, resolved as [`from_local`] does: for a literal that names a time the clock skips
/// or passes twice, which Arrow's cast refuses.
pub(crate) fn wall_clock_in(micros: i64, zone: &str) -> Option<i64> {
    let time = DateTime::from_timestamp_micros(micros)?.naive_utc();
    from_local(time, &Some(zone.parse().ok()?))
}

/// The start of the `unit` that holds `time`.
fn truncate_local(time: NaiveDateTime, unit: Unit) -> Option<NaiveDateTime> {
    let date = time.date();
    let day = |date: NaiveDate| date.and_hms_opt(0, 0, 0);
    match unit {
        Unit::Year => day(NaiveDate::from_ymd_opt(date.year(), 1, 1)?),
        Unit::Quarter => day(NaiveDate::from_ymd_opt(date.year(), (date.month() - 1) / 3 * 3 + 1, 1)?),
        Unit::Month => day(NaiveDate::from_ymd_opt(date.year(), date.month(), 1)?),
        Unit::Week => day(date.checked_sub_signed(Duration::days(i64::from(date.weekday().num_days_from_monday())))?),
        Unit::Day => day(date),
        Unit::Hour => date.and_hms_opt(time.hour(), 0, 0),
        Unit::Minute => date.and_hms_opt(time.hour(), time.minute(), 0),
        Unit::Second => date.and_hms_opt(time.hour(), time.minute(), time.second()),
    }
}

/// `micros` truncated to the start of its `unit` in `zone`. Minutes and seconds are cut on
/// the instant itself (every zone's offset is whole minutes), so an instant in a repeated
/// hour stays in its own pass; hours and longer go through the wall clock and back, where
/// a repeated time is the later one (DuckDB's ICU does both).
fn truncate(micros: i64, unit: Unit, zone: &Option<arrow::array::timezone::Tz>) -> Option<i64> {
    match unit {
        Unit::Second => Some(micros - micros.rem_euclid(1_000_000)),
        Unit::Minute if zone.is_none() || local(micros, zone)?.second() == local(micros, &None)?.second() => {
            Some(micros - micros.rem_euclid(60_000_000))
        }
        _ => from_local(truncate_local(local(micros, zone)?, unit)?, zone),
    }
}

/// `extract(field from x)`: `bigint`, or `double` for `epoch`.
fn date_part_of(value: &Value, field: Field) -> Result<Value, Fault> {
    value.map(|array| {
        if field == Field::Epoch {
            let seconds: Float64Array = match array.data_type() {
                DataType::Date32 => array.as_primitive::<Date32Type>().unary(|days| f64::from(days) * 86_400.0),
                _ => cast(array, &DataType::Timestamp(TimeUnit::Microsecond, zone_name(array.data_type())))?
                    .as_primitive::<TimestampMicrosecondType>()
                    .unary(|micros| micros as f64 / 1e6),
            };
            return Ok(Arc::new(seconds));
        }
        let part = match field {
            Field::Year => DatePart::Year,
            Field::Quarter => DatePart::Quarter,
            Field::Month => DatePart::Month,
            Field::Week => DatePart::Week,
            Field::Day => DatePart::Day,
            Field::DayOfWeek => DatePart::DayOfWeekSunday0,
            Field::IsoDayOfWeek => DatePart::DayOfWeekMonday0,
            Field::DayOfYear => DatePart::DayOfYear,
            Field::Hour => DatePart::Hour,
            Field::Minute => DatePart::Minute,
            Field::Second | Field::Epoch => DatePart::Second,
        };
        let parts = date_part(&as_timestamps(array)?, part)?;
        let parts = cast(&parts, &DataType::Int64)?;
        if field == Field::IsoDayOfWeek {
            return Ok(numeric::add(&parts, &Int64Array::new_scalar(1))?);
        }
        Ok(parts)
    })
}

/// `date_diff(unit, a, b)`: how many `unit` boundaries lie between `a` and `b` (DuckDB's
/// rule; weeks are whole 7-day spans). Days and longer count on the calendar of the
/// timestamps' zone; hours, minutes and seconds count the time elapsed between the two
/// truncated to the unit, so a clock change counts as it passed (as DuckDB's ICU does). A
/// span past 64 bits of microseconds (timestamps 500,000 years apart) is null.
fn date_diff(a: &Value, b: &Value, rows: usize, unit: Unit) -> Result<ArrayRef, Fault> {
    let (a, b) = (as_timestamps(&a.clone().into_array(rows)?)?, as_timestamps(&b.clone().into_array(rows)?)?);
    let zone = zone_of(a.data_type())?;
    let (a, b) = (a.as_primitive::<TimestampMicrosecondType>(), b.as_primitive::<TimestampMicrosecondType>());
    let mut out = Int64Builder::with_capacity(rows);
    for row in 0..rows {
        let pair = (a.is_valid(row) && b.is_valid(row)).then(|| (a.value(row), b.value(row)));
        out.append_option(pair.and_then(|(a_micros, b_micros)| {
            let (a, b) = (local(a_micros, &zone)?, local(b_micros, &zone)?);
            let months = |t: NaiveDateTime| i64::from(t.year()) * 12 + i64::from(t.month0());
            let days = (b.date() - a.date()).num_days();
            let span = |size: i64| -> Option<i64> {
                Some(truncate(b_micros, unit, &zone)?.checked_sub(truncate(a_micros, unit, &zone)?)?.div_euclid(size))
            };
            Some(match unit {
                Unit::Year => i64::from(b.year()) - i64::from(a.year()),
                Unit::Quarter => months(b).div_euclid(3) - months(a).div_euclid(3),
                Unit::Month => months(b) - months(a),
                Unit::Week => days / 7,
                Unit::Day => days,
                Unit::Hour => span(3_600_000_000)?,
                Unit::Minute => span(60_000_000)?,
                Unit::Second => span(1_000_000)?,
            })
        }));
    }
    Ok(Arc::new(out.finish()))
}

/// `cast(x as T)` with DuckDB's rules: floats to integers round half to even, strings are
/// trimmed of spaces before they are read, and a value that does not fit fails (naming the
/// row, never the value).
pub(crate) fn cast_value(array: &ArrayRef, to: &DataType, text: &str) -> Result<ArrayRef, Fault> {
    let from = array.data_type();
    let prepared: ArrayRef = if from.is_floating() && to.is_integer() {
        let values = cast(array, &DataType::Float64)?;
        Arc::new(unary::<Float64Type, _, Float64Type>(values.as_primitive(), f64::round_ties_even))
    } else if from == &DataType::Utf8 && to != &DataType::Utf8 {
        let strings = array.as_string::<i32>();
        let trimmed: StringArray = strings.iter().map(|s| s.map(|s| s.trim_matches(' '))).collect();
        Arc::new(trimmed)
    } else {
        array.clone()
    };
    if to == &DataType::Utf8 {
        match from {
            DataType::Float64 | DataType::Float32 => return Ok(float_text(array)?),
            DataType::Timestamp(..) => return Ok(timestamp_text(array)?),
            _ => {}
        }
    }
    if let (DataType::Timestamp(_, Some(_)), DataType::Timestamp(_, None) | DataType::Date32) = (from, to) {
        // DuckDB: a zoned timestamp becomes its wall-clock time (Arrow's cast keeps UTC's).
        let micros = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, zone_name(from)))?;
        let zone = zone_of(from)?;
        let wall: TimestampMicrosecondArray = micros
            .as_primitive::<TimestampMicrosecondType>()
            .unary_opt(|value| local(value, &zone).map(|time| time.and_utc().timestamp_micros()));
        return cast_value(&(Arc::new(wall) as ArrayRef), to, text);
    }
    let cast = cast_with_options(&prepared, to, &CastOptions { safe: true, ..Default::default() })?;
    if cast.null_count() > prepared.null_count() {
        let row = (0..cast.len()).find(|&row| prepared.is_valid(row) && cast.is_null(row));
        let row = if cast.len() > 1 { row } else { None };
        return Err(Fault::data(text, format!("a value cannot be cast to {}", sql_type(to)), row));
    }
    Ok(cast)
}

/// Floats as DuckDB writes them: the shortest digits that read back to the same value, in
/// positional notation with at least one decimal (`100.0`) unless the exponent is below -4
/// or from 16 up (`1e-07`, `1e+20`); `nan`, `inf`, `-inf`.
fn float_text(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    fn text(scientific: String) -> String {
        // `scientific` is Rust's shortest round-trip form, `d.ddde±x`.
        let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
        let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        if !(-4..16).contains(&exponent) {
            let (first, rest) = digits.split_at(1);
            let fraction = if rest.is_empty() { String::new() } else { format!(".{rest}") };
            let exponent_sign = if exponent < 0 { '-' } else { '+' };
            return format!("{sign}{first}{fraction}e{exponent_sign}{:02}", exponent.abs());
        }
        let point = exponent + 1;
        let (whole, fraction) = if point <= 0 {
            ("0".to_string(), format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)))
        } else if point as usize >= digits.len() {
            (format!("{digits}{}", "0".repeat(point as usize - digits.len())), String::new())
        } else {
            let (whole, fraction) = digits.split_at(point as usize);
            (whole.to_string(), fraction.to_string())
        };
        let fraction = if fraction.is_empty() { "0".to_string() } else { fraction };
        format!("{sign}{whole}.{fraction}")
    }
    fn special(x: f64) -> Option<String> {
        if x.is_nan() {
            Some("nan".into())
        } else if x.is_infinite() {
            Some(if x > 0.0 { "inf" } else { "-inf" }.into())
        } else {
            None
        }
    }
    let strings: StringArray = match array.data_type() {
        DataType::Float32 => array
            .as_primitive::<Float32Type>()
            .iter()
            .map(|x| x.map(|x| special(f64::from(x)).unwrap_or_else(|| text(format!("{x:e}")))))
            .collect(),
        _ => array
            .as_primitive::<Float64Type>()
            .iter()
            .map(|x| x.map(|x| special(x).unwrap_or_else(|| text(format!("{x:e}")))))
            .collect(),
    };
    Ok(Arc::new(strings))
}

/// Timestamps as DuckDB writes them: `2024-01-02 03:04:05.5` (a space, the fraction
/// without trailing zeros); a zoned one in its zone, with its offset (`+01`, `+05:30`).
fn timestamp_text(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let micros = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, zone_name(array.data_type())))?;
    let zone = zone_of(micros.data_type())?;
    let strings: StringArray = micros
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .map(|value| {
            let utc = DateTime::from_timestamp_micros(value?)?;
            let (time, offset) = match &zone {
                Some(zone) => {
                    let local = zone.from_utc_datetime(&utc.naive_utc());
                    let seconds = chrono::Offset::fix(local.offset()).local_minus_utc();
                    let (sign, seconds) = if seconds < 0 { ('-', -seconds) } else { ('+', seconds) };
                    let minutes =
                        if seconds % 3600 == 0 { String::new() } else { format!(":{:02}", seconds % 3600 / 60) };
                    (local.naive_local(), format!("{sign}{:02}{minutes}", seconds / 3600))
                }
                None => (utc.naive_utc(), String::new()),
            };
            let fraction = format!("{:06}", time.and_utc().timestamp_subsec_micros());
            let fraction = fraction.trim_end_matches('0');
            let fraction = if fraction.is_empty() { String::new() } else { format!(".{fraction}") };
            Some(format!("{}{fraction}{offset}", time.format("%Y-%m-%d %H:%M:%S")))
        })
        .collect();
    Ok(Arc::new(strings))
}

/// A pattern with RE2's (and so DuckDB's) ASCII meaning of `\w`, `\d`, `\s` and `\b`, which
/// the `regex` crate reads as Unicode classes.
pub(crate) fn ascii_perl_classes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('w') => out.push_str("[0-9A-Za-z_]"),
            Some('W') => out.push_str("[^0-9A-Za-z_]"),
            Some('d') => out.push_str("[0-9]"),
            Some('D') => out.push_str("[^0-9]"),
            Some('s') => out.push_str("[\\t\\n\\f\\r ]"),
            Some('S') => out.push_str("[^\\t\\n\\f\\r ]"),
            Some('b') => out.push_str("(?-u:\\b)"),
            Some('B') => out.push_str("(?-u:\\B)"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_and_timestamps_read_as_duckdb_writes_them() {
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![
            100.0,
            1e20,
            1e-7,
            0.1,
            -2.5,
            1e15,
            1e16,
            0.0001,
            123456.789,
            -0.0,
            f64::NAN,
            f64::NEG_INFINITY,
            1.5e300,
        ]));
        let text = float_text(&floats).unwrap();
        let text: Vec<_> = text.as_string::<i32>().iter().flatten().collect();
        assert_eq!(
            text,
            [
                "100.0",
                "1e+20",
                "1e-07",
                "0.1",
                "-2.5",
                "1000000000000000.0",
                "1e+16",
                "0.0001",
                "123456.789",
                "-0.0",
                "nan",
                "-inf",
                "1.5e+300"
            ]
        );
        let times: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![-500_000, 0, 1_704_585_600_123_400]));
        let text = timestamp_text(&times).unwrap();
        let text: Vec<_> = text.as_string::<i32>().iter().flatten().collect();
        assert_eq!(text, ["1969-12-31 23:59:59.5", "1970-01-01 00:00:00", "2024-01-07 00:00:00.1234"]);
        let zoned: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone("Asia/Kolkata"));
        let text = timestamp_text(&zoned).unwrap();
        assert_eq!(text.as_string::<i32>().value(0), "1970-01-01 05:30:00+05:30");
    }

    #[test]
    fn perl_classes_are_ascii_as_in_re2() {
        let re = |p: &str| regex::Regex::new(&ascii_perl_classes(p)).unwrap();
        assert!(!re(r"^\w+$").is_match("Zürich"));
        assert!(re(r"^\w+$").is_match("Zurich_1"));
        assert!(re(r"^[\w-]+$").is_match("a-b"));
        assert!(re(r"\\d").is_match("\\d"));
        assert!(!re(r"\d").is_match("٣"));
        assert!(!re(r"\bß").is_match("ß"));
        assert!(re(r"\s").is_match("\u{c}") && !re(r"\s").is_match("\u{b}"));
    }

    #[test]
    fn substring_follows_duckdb() {
        assert_eq!(substring("hello", 2, 3), "ell");
        assert_eq!(substring("hello", 0, 2), "h");
        assert_eq!(substring("hello", -3, 2), "ll");
        assert_eq!(substring("hello", 10, 2), "");
        assert_eq!(substring("hello", 2, -1), "h");
        assert_eq!(substring("hello", -10, 3), "");
        assert_eq!(substring("hello", 3, 0), "");
        assert_eq!(substring("hello", -2, i64::MAX / 2), "lo");
        assert_eq!(substring("hello", 0, i64::MAX / 2), "hello");
        assert_eq!(substring("héllo", 2, 2), "él");
    }

    #[test]
    fn case_maps_one_character_to_one() {
        assert_eq!("ß".chars().map(upper).collect::<String>(), "ẞ");
        assert_eq!("ÀB".chars().map(lower).collect::<String>(), "àb");
        assert_eq!("ﬁ".chars().map(upper).collect::<String>(), "ﬁ");
    }
}
