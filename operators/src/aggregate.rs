//! `aggregate`: one row per group of rows sharing the `by` columns' values, with aggregate
//! functions of the group's rows, as SQL's `GROUP BY` computes them (DuckDB is the
//! reference).
//!
//! ```toml
//! [[step]]
//! op = "aggregate"
//! by = ["customer_id", "day"]          # none: one row for the whole input
//! aggs = { n = "count(*)", total = "sum(amount)", avg = "avg(amount)", hi = "max(ts)",
//!          sd = "stddev_pop(amount)", k = "count(distinct product)", last = "last(amount order by ts)" }
//! having = "n >= 2"                    # optional, on the result columns
//! ```
//!
//! The output has the `by` columns (their input names and types), then one column per
//! entry of `aggs`, in the order written. Each function's argument is an expression of the
//! step's input ([`crate::expr`]): `sum(amount * qty)` works. Functions:
//!
//! | function | result | of |
//! | --- | --- | --- |
//! | `count(*)`, `count(x)`, `count(distinct x)` | `int64` (never null) | rows; non-null values; distinct non-null values (exact) |
//! | `sum(x)` | `int64` for integers, `double` for floats | non-null values; null when there is none |
//! | `avg(x)` (`mean`) | `double` | non-null values |
//! | `min(x)`, `max(x)` | `x`'s type | numbers, strings, booleans, dates, timestamps |
//! | `var_pop`, `var_samp` (`variance`), `stddev_pop`, `stddev_samp` (`stddev`) | `double` | non-null values; `_samp` of one value is null |
//! | `first(x [order by o [asc\|desc] [nulls first\|last]])`, `last(…)` | `x`'s type | the value (null or not) of the first / last row in that order |
//!
//! **Semantics.** Nulls are ignored by every function but `count(*)`, `first` and `last`; a
//! group with no non-null value gets null from `sum`, `avg`, `min`, `max` and the
//! variances. Null keys form a group of their own, NaN keys one group and `-0.0` the same
//! group as `0.0` (as in DuckDB, and for `count(distinct …)` too). Without `by`, the step
//! gives exactly one row, even for an empty input (`count(*)` 0, the others null). `first`
//! and `last` order as DuckDB's `ORDER BY` does (nulls last unless told otherwise), and
//! rows that tie, or every row when no `order by` is given, are taken in the input's order
//! (file, row group, row). `avg` and the variances are computed in `double` with Welford's
//! update and Chan's merge; a float `sum` is compensated (Neumaier), so it is at least as
//! accurate as DuckDB's. Output rows are sorted by the key's bytes within each worker.
//!
//! **Where Weir differs from DuckDB.** DuckDB widens an integer `sum` to `HUGEINT`
//! (128-bit); Weir has no such column type, so an integer sum is an `int64` computed
//! exactly in 128 bits and a group whose sum leaves `int64`'s range fails the run, naming
//! the step and the result column (never the value). `first` and `last` without `order
//! by` are deterministic here (input order), where DuckDB's depend on its threads.
//!
//! The group table, its partials and their merge are [`crate::group_table`]; the engine
//! drives them (a pass folding each worker's rows, an exchange of partials by key hash, a
//! merge per worker).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArguments, OrderBySort,
};

use crate::expr::Expression;
use crate::expr::parse::{expr_error, parse, position};
use crate::filter::{Filter, FilterSpec};
use crate::{BoundStep, OpError};

/// The most aggregate functions one step may compute.
pub const MAX_AGGREGATES: usize = 1000;

/// `op = "aggregate"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    /// The key columns (none: one group of every row).
    #[serde(default)]
    pub by: Vec<String>,
    /// Result column → aggregate function, in the order written.
    pub aggs: IndexMap<String, String>,
    /// A predicate on the result columns: the groups it is not true for are dropped.
    #[serde(default)]
    pub having: Option<String>,
    /// MiB of groups each worker holds in memory, in its table of partial groups and again
    /// in its table of merged ones, before it writes them to `source.spill_dir` as a sorted
    /// run (default [`DEFAULT_MEMORY_MB`]); 0 spills after every batch (for tests).
    #[serde(default)]
    pub memory_mb: Option<u64>,
}

/// The default of [`AggregateSpec::memory_mb`].
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// The largest [`AggregateSpec::memory_mb`]: 1 TiB.
const MAX_MEMORY_MB: u64 = 1 << 20;

/// What an aggregate function computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    CountRows,
    Count,
    CountDistinct,
    /// Over integers (`true`, exact in 128 bits) or floats.
    Sum {
        integer: bool,
    },
    Avg {
        integer: bool,
    },
    Variance {
        sample: bool,
        root: bool,
    },
    Min,
    Max,
    /// The value of the first (`last = false`) or last row in the function's order.
    Ordered {
        last: bool,
    },
}

/// One bound aggregate function.
#[derive(Debug)]
pub struct Aggregation {
    /// The result column's name.
    pub name: String,
    pub function: Function,
    /// The argument (none for `count(*)`).
    pub argument: Option<Expression>,
    /// `first` / `last`'s `order by` expression and its sort options.
    pub order: Option<(Expression, SortOptions)>,
    /// The result column's type.
    pub result_type: DataType,
}

impl Aggregation {
    /// The argument's type (the type of the values a min, max, first, last or distinct
    /// count keeps).
    pub fn argument_type(&self) -> DataType {
        self.argument.as_ref().map_or(DataType::Null, Expression::data_type)
    }
}

impl AggregateSpec {
    /// Binds the keys and compiles every function against `input`; errors name the result
    /// column and point at the fault in its expression.
    pub fn bind(&self, input: &SchemaRef) -> Result<Aggregate, OpError> {
        if self.aggs.is_empty() && self.by.is_empty() {
            return Err(OpError::InvalidSpec("aggregate needs `by` columns, `aggs`, or both".into()));
        }
        if self.aggs.len() > MAX_AGGREGATES {
            return Err(OpError::InvalidSpec(format!(
                "aggregate computes at most {MAX_AGGREGATES} functions, not {}",
                self.aggs.len()
            )));
        }
        let mut by = Vec::with_capacity(self.by.len());
        let mut fields = Vec::new();
        for name in &self.by {
            let index = input.index_of(name).map_err(|_| OpError::NoMatchingColumn {
                selector: name.clone(),
                available: input.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
            })?;
            if by.contains(&index) {
                return Err(OpError::InvalidSpec(format!("aggregate: `by` names column '{name}' twice")));
            }
            let field = input.field(index);
            if !RowConverter::supports_fields(&[SortField::new(field.data_type().clone())]) {
                return Err(OpError::InvalidSpec(format!(
                    "aggregate: column '{name}' of type {} cannot be a group key",
                    field.data_type()
                )));
            }
            by.push(index);
            fields.push(Arc::new(Field::new(name, field.data_type().clone(), true)));
        }
        let mut aggregations = Vec::with_capacity(self.aggs.len());
        for (name, text) in &self.aggs {
            if name.is_empty() {
                return Err(OpError::InvalidSpec("aggregate: a result column name is empty".into()));
            }
            if self.by.contains(name) {
                return Err(OpError::InvalidSpec(format!("aggregate: '{name}' is both a `by` column and a result")));
            }
            let aggregation = bind_function(name, text, input).map_err(|error| match error {
                OpError::Expression { expr, message, caret } => {
                    OpError::Expression { expr, message: format!("column '{name}': {message}"), caret }
                }
                other => other,
            })?;
            fields.push(Arc::new(Field::new(name, aggregation.result_type.clone(), true)));
            aggregations.push(aggregation);
        }
        let output = Arc::new(Schema::new(fields));
        let having = self.having.as_ref().map(|expr| FilterSpec { expr: expr.clone() }.bind(&output)).transpose()?;
        let memory_mb = self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
        if memory_mb > MAX_MEMORY_MB {
            return Err(OpError::InvalidSpec(format!(
                "aggregate: memory_mb is at most {MAX_MEMORY_MB}, not {memory_mb}"
            )));
        }
        Ok(Aggregate { by, aggregations, output, having, memory_bytes: (memory_mb as usize) << 20 })
    }
}

/// Parses and binds one aggregate function call.
fn bind_function(name: &str, text: &str, input: &SchemaRef) -> Result<Aggregation, OpError> {
    let ast = parse(text)?;
    let Expr::Function(call) = &ast else {
        return Err(expr_error(
            text,
            0,
            "expected an aggregate function such as sum(amount) or count(*); compute expressions of results in a later derive step",
        ));
    };
    let fault =
        |at: &Expr, message: String| expr_error(text, position(text, sqlparser::ast::Spanned::span(at).start), message);
    let function_name = call.name.to_string().to_ascii_lowercase();
    let FunctionArguments::List(list) = &call.args else {
        return Err(fault(&ast, format!("{function_name} needs parentheses")));
    };
    if call.filter.is_some() || call.over.is_some() || !call.within_group.is_empty() || call.null_treatment.is_some() {
        return Err(fault(
            &ast,
            format!("{function_name}: filter, over, within group and null treatment are not supported"),
        ));
    }
    let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
    let mut order = None;
    for clause in &list.clauses {
        match clause {
            FunctionArgumentClause::OrderBy(items) if items.len() == 1 => order = Some(&items[0]),
            _ => return Err(fault(&ast, format!("{function_name}: only one `order by` expression is supported"))),
        }
    }
    let argument = match list.args.as_slice() {
        [] => None,
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if function_name == "count" && !distinct => None,
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] => Some(arg),
        _ => return Err(fault(&ast, format!("{function_name} takes one argument"))),
    };
    if order.is_some() && !matches!(function_name.as_str(), "first" | "last") {
        return Err(fault(&ast, format!("{function_name}: `order by` is supported in first and last only")));
    }
    if distinct && function_name != "count" {
        return Err(fault(&ast, format!("{function_name}: distinct is supported in count only")));
    }
    let argument = match argument {
        Some(arg) => Some(Expression::compile_part(text, arg, input)?),
        None if function_name == "count" && list.args.len() == 1 => None,
        None => return Err(fault(&ast, format!("{function_name} takes one argument"))),
    };
    let argument_type = argument.as_ref().map(Expression::data_type);
    let numeric = |of: &Option<DataType>| -> Result<bool, OpError> {
        match of {
            Some(t) if t.is_integer() => Ok(true),
            Some(t) if t.is_floating() => Ok(false),
            Some(t) => Err(fault(&ast, format!("{function_name} needs a number, not {}", crate::expr::sql_type(t)))),
            None => Err(fault(&ast, format!("{function_name} takes one argument"))),
        }
    };
    let orderable = |of: &Option<DataType>| -> Result<DataType, OpError> {
        let t = of.clone().unwrap_or(DataType::Null);
        match RowConverter::supports_fields(&[SortField::new(t.clone())]) && t != DataType::Null {
            true => Ok(t),
            false => Err(fault(&ast, format!("{function_name} cannot take values of type {t}"))),
        }
    };
    let (function, result_type) = match function_name.as_str() {
        "count" if argument.is_none() => (Function::CountRows, DataType::Int64),
        "count" if distinct => {
            orderable(&argument_type)?;
            (Function::CountDistinct, DataType::Int64)
        }
        "count" => (Function::Count, DataType::Int64),
        "sum" => {
            let integer = numeric(&argument_type)?;
            (Function::Sum { integer }, if integer { DataType::Int64 } else { DataType::Float64 })
        }
        "avg" | "mean" => (Function::Avg { integer: numeric(&argument_type)? }, DataType::Float64),
        "var_pop" | "var_samp" | "variance" | "stddev_pop" | "stddev_samp" | "stddev" => {
            numeric(&argument_type)?;
            let sample = !function_name.ends_with("_pop");
            (Function::Variance { sample, root: function_name.starts_with("stddev") }, DataType::Float64)
        }
        "min" => (Function::Min, orderable(&argument_type)?),
        "max" => (Function::Max, orderable(&argument_type)?),
        "first" | "last" => (Function::Ordered { last: function_name == "last" }, orderable(&argument_type)?),
        other => {
            return Err(fault(
                &ast,
                format!(
                    "unknown aggregate function '{other}'; expected count, sum, avg, min, max, var_pop, var_samp, stddev_pop, stddev_samp, first or last"
                ),
            ));
        }
    };
    let order = match order {
        None => None,
        Some(item) => {
            let descending = match &item.options.sort {
                None | Some(OrderBySort::Asc) => false,
                Some(OrderBySort::Desc) => true,
                Some(OrderBySort::Using(_)) => {
                    return Err(fault(&item.expr, "order by … using is not supported".into()));
                }
            };
            let expression = Expression::compile_part(text, &item.expr, input)?;
            orderable(&Some(expression.data_type()))
                .map_err(|_| fault(&item.expr, format!("cannot order by values of type {}", expression.data_type())))?;
            // DuckDB's default: nulls last, ascending or descending.
            let nulls_first = item.options.nulls_first.unwrap_or(false);
            Some((expression, SortOptions { descending, nulls_first }))
        }
    };
    Ok(Aggregation { name: name.to_string(), function, argument, order, result_type })
}

/// An [`AggregateSpec`] bound to its input schema.
#[derive(Debug)]
pub struct Aggregate {
    /// The input positions of the key columns.
    pub by: Vec<usize>,
    pub aggregations: Vec<Aggregation>,
    /// The key columns, then one column per aggregation.
    output: SchemaRef,
    having: Option<Filter>,
    /// Bytes of groups a worker's table holds before they are spilled (0: after every batch).
    pub memory_bytes: usize,
}

impl Aggregate {
    /// The schema of the groups' rows.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// The key columns of `batch`, with every NaN one NaN and `-0.0` as `0.0` (so that
    /// equal keys are equal bytes in the row format).
    pub fn keys(&self, batch: &arrow::record_batch::RecordBatch) -> Vec<ArrayRef> {
        self.by.iter().map(|&index| canonical_floats(batch.column(index))).collect()
    }

    /// Drops the groups `having` is not true for.
    pub fn having(&self, batch: arrow::record_batch::RecordBatch) -> Result<arrow::record_batch::RecordBatch, OpError> {
        match &self.having {
            Some(filter) => filter.apply(batch),
            None => Ok(batch),
        }
    }
}

/// `column` with every NaN the same NaN and `-0.0` as `0.0`; other types as they are.
pub fn canonical_floats(column: &ArrayRef) -> ArrayRef {
    fn canonical(value: f64) -> f64 {
        if value.is_nan() { f64::NAN } else { value + 0.0 }
    }
    match column.data_type() {
        DataType::Float64 => Arc::new(column.as_primitive::<Float64Type>().unary::<_, Float64Type>(canonical)),
        DataType::Float32 => {
            Arc::new(column.as_primitive::<Float32Type>().unary::<_, Float32Type>(|v| canonical(f64::from(v)) as f32))
        }
        _ => column.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
            Field::new("n", DataType::Int32, true),
            Field::new("ts", DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None), true),
        ]))
    }

    fn bind(toml_text: &str) -> Result<Aggregate, OpError> {
        let spec: AggregateSpec = toml::from_str(toml_text).unwrap();
        spec.bind(&input())
    }

    #[test]
    fn result_types_follow_duckdb_but_integer_sums_are_int64() {
        let step = bind(
            r#"by = ["k"]
            aggs = { c = "count(*)", s = "sum(n)", f = "sum(amount)", a = "avg(n)", lo = "min(ts)", d = "count(distinct k)", l = "last(amount order by ts desc nulls first)", sd = "stddev(n * 2)" }"#,
        )
        .unwrap();
        let types: Vec<_> = step.output_schema().fields().iter().map(|f| f.data_type().clone()).collect();
        assert_eq!(
            types,
            [
                DataType::Utf8,
                DataType::Int64,
                DataType::Int64,
                DataType::Float64,
                DataType::Float64,
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
                DataType::Int64,
                DataType::Float64,
                DataType::Float64
            ]
        );
        let last = &step.aggregations[6];
        assert_eq!(last.function, Function::Ordered { last: true });
        assert_eq!(last.order.as_ref().unwrap().1, SortOptions { descending: true, nulls_first: true });
        assert_eq!(step.aggregations[7].function, Function::Variance { sample: true, root: true });
    }

    #[test]
    fn errors_name_the_result_column_and_point_at_the_fault() {
        let err = bind(r#"aggs = { s = "sum(k)" }"#).unwrap_err().to_string();
        assert!(err.contains("column 's'") && err.contains("needs a number"), "{err}");
        let err = bind(r#"aggs = { s = "sum(amont)" }"#).unwrap_err().to_string();
        assert!(err.contains("unknown column 'amont'") && err.contains("    sum(amont)\n        ^"), "{err}");
        let err = bind(r#"aggs = { s = "median(n)" }"#).unwrap_err().to_string();
        assert!(err.contains("unknown aggregate function 'median'"), "{err}");
        let err = bind(r#"aggs = { s = "sum(n) + 1" }"#).unwrap_err().to_string();
        assert!(err.contains("expected an aggregate function"), "{err}");
        let err = bind(r#"aggs = { s = "sum(distinct n)" }"#).unwrap_err().to_string();
        assert!(err.contains("distinct is supported in count only"), "{err}");
        let err = bind(
            r#"by = ["kk"]
        aggs = { s = "sum(n)" }"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("'kk'"), "{err}");
        let err = bind(
            r#"aggs = { s = "sum(n)" }
        having = "t > 1""#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown column 't'"), "{err}");
    }
}
