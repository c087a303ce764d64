//! `derive`: new or replaced columns from SQL expressions ([`crate::expr`]).
//!
//! ```toml
//! [[step]]
//! op = "derive"
//! columns = { log_amount = "ln(1 + amount)", hour = "extract(hour from ts)", amount = "abs(amount)" }
//! ```
//!
//! Every expression reads the step's input, as the expressions of one SQL `SELECT` list do:
//! a later entry does not see an earlier one's result (chain two `derive` steps for that). A
//! name that is an input column replaces it where it stands; the other names are added at
//! the end, in the order written. A result's type is the expression's (DuckDB's `typeof`,
//! see [`crate::expr`] for where Weir differs).

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::expr::Expression;
use crate::{BoundStep, OpError};

/// The most columns one `derive` step may compute.
pub const MAX_DERIVED_COLUMNS: usize = 10_000;

/// `op = "derive"`: result column → expression, in the order written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeriveSpec {
    pub columns: IndexMap<String, String>,
}

impl DeriveSpec {
    /// Compiles every expression against `input`; an error names the column and points at
    /// the fault in its expression.
    pub fn bind(&self, input: &SchemaRef) -> Result<Derive, OpError> {
        if self.columns.is_empty() {
            return Err(OpError::InvalidSpec("derive needs at least one entry in columns".into()));
        }
        if self.columns.len() > MAX_DERIVED_COLUMNS {
            return Err(OpError::InvalidSpec(format!(
                "derive computes at most {MAX_DERIVED_COLUMNS} columns, not {}",
                self.columns.len()
            )));
        }
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        let mut slots: Vec<Option<usize>> = (0..fields.len()).map(Some).collect();
        let mut expressions = Vec::with_capacity(self.columns.len());
        for (name, text) in &self.columns {
            if name.is_empty() {
                return Err(OpError::InvalidSpec("derive: a column name is empty".into()));
            }
            let expression = Expression::compile(text, input).map_err(|error| match error {
                OpError::Expression { expr, message, caret } => {
                    OpError::Expression { expr, message: format!("column '{name}': {message}"), caret }
                }
                other => other,
            })?;
            let field = Arc::new(Field::new(name, expression.data_type(), true));
            let position = match input.index_of(name) {
                Ok(index) => {
                    fields[index] = field;
                    slots[index] = None;
                    index
                }
                Err(_) => {
                    fields.push(field);
                    slots.push(None);
                    fields.len() - 1
                }
            };
            expressions.push((position, name.clone(), expression));
        }
        Ok(Derive { expressions, slots, output: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())) })
    }
}

/// A [`DeriveSpec`] bound to its input schema.
#[derive(Debug)]
pub struct Derive {
    /// Output position, column name and expression of each computed column.
    expressions: Vec<(usize, String, Expression)>,
    /// For each output column, the input column it passes through (`None`: computed).
    slots: Vec<Option<usize>>,
    output: SchemaRef,
}

impl BoundStep for Derive {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mut columns: Vec<Option<ArrayRef>> =
            self.slots.iter().map(|slot| slot.and_then(|index| batch.columns().get(index).cloned())).collect();
        for (position, name, expression) in &self.expressions {
            let values = expression.evaluate(&batch).map_err(|error| match error {
                OpError::Evaluation { expr, message } => {
                    OpError::Evaluation { expr, message: format!("{message}, computing column '{name}'") }
                }
                other => other,
            })?;
            columns[*position] = Some(values);
        }
        let columns = columns
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| OpError::Internal("derive: a batch does not have the bound schema".into()))?;
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }

    fn unchanged_columns(&self) -> Option<Vec<Option<usize>>> {
        Some(self.slots.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Float64Array, Int64Array};
    use arrow::datatypes::{DataType, Float64Type, Int64Type};

    fn input() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("amount", DataType::Float64, true),
            Field::new("n", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from(vec![Some(-2.0), None, Some(3.0)])),
                Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(0)])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn the_toml_order_is_the_output_order_and_replacements_stay_in_place() {
        let spec: DeriveSpec =
            toml::from_str("columns = { z = \"n * 2\", amount = \"abs(amount)\", a = \"amount\" }").unwrap();
        let step = spec.bind(&input().schema()).unwrap();
        let names: Vec<_> = step.output_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["amount", "n", "z", "a"]);
        let out = step.apply(input()).unwrap();
        let abs: Vec<_> = out.column(0).as_primitive::<Float64Type>().iter().collect();
        assert_eq!(abs, [Some(2.0), None, Some(3.0)]);
        // `a` reads the input's amount, not the replaced one.
        let a: Vec<_> = out.column(3).as_primitive::<Float64Type>().iter().collect();
        assert_eq!(a, [Some(-2.0), None, Some(3.0)]);
        let z: Vec<_> = out.column(2).as_primitive::<Int64Type>().iter().collect();
        assert_eq!(z, [Some(2), Some(4), Some(0)]);
        assert_eq!(step.unchanged_columns(), Some(vec![None, Some(1), None, None]));
    }

    #[test]
    fn errors_name_the_column_and_never_the_value() {
        let spec: DeriveSpec = toml::from_str("columns = { q = \"n // n\" }").unwrap();
        let err = spec.bind(&input().schema()).unwrap().apply(input()).unwrap_err().to_string();
        assert!(err.contains("division by zero") && err.contains("column 'q'") && err.contains("row 2"), "{err}");
        let spec: DeriveSpec = toml::from_str("columns = { q = \"amont + 1\" }").unwrap();
        let err = spec.bind(&input().schema()).unwrap_err().to_string();
        assert!(err.contains("column 'q': unknown column 'amont'") && err.contains('^'), "{err}");
    }
}
