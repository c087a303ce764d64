//! `ordinal`: categories to integer codes, like scikit-learn's `OrdinalEncoder`.
//!
//! ```toml
//! [[step]]
//! op = "ordinal"
//! columns = ["country", "plan"]   # string or integer columns
//! on_unknown = "error"            # error (default) | null: a value not seen when fitting
//! # output = "{col}_code"         # keep the raw column (see `output_columns`)
//! # fitted = "…"
//! ```
//!
//! Fitting collects each column's distinct values across all workers (counted as
//! `impute`'s `most_frequent` counts them) and sorts them: strings by code point (Python's
//! order), integers by value. A value becomes its position in that list, as a `Float64`
//! (scikit-learn's default dtype); a null stays null (scikit-learn's
//! `encoded_missing_value = nan`). A value the fit never saw (parameters reused on other
//! data) is an error naming the column and the row, never the value, or, with
//! `on_unknown = "null"`, a null (scikit-learn's `handle_unknown = "use_encoded_value"`
//! with `unknown_value = nan`). `fitted.json` holds the categories in order.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::fit::{Fit, FitShape};
use crate::fit_columns::{PerColumn, names, replace_columns, schema_with_types};
use crate::stats::{ModeValue, ValueCounts};
use crate::{BoundStep, OpError, selector};

/// What a value the fit never saw becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnknown {
    #[default]
    Error,
    Null,
}

/// `op = "ordinal"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdinalSpec {
    pub columns: Vec<String>,
    #[serde(default)]
    pub on_unknown: OnUnknown,
    /// Reuse the categories of an earlier run's `_weir/fitted.json`.
    #[serde(default)]
    pub fitted: Option<String>,
    /// Keep the input columns; see [`crate::output_columns`].
    #[serde(default)]
    pub output: Option<String>,
}

impl OrdinalSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<OrdinalFit, OpError> {
        let indices = selector::resolve(&self.columns, input)?;
        for &index in &indices {
            let field = input.field(index);
            let fits = field.data_type().is_integer()
                || matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
            if !fits {
                return Err(OpError::InvalidSpec(format!(
                    "ordinal encodes string or integer columns; column '{}' is {}",
                    field.name(),
                    field.data_type()
                )));
            }
        }
        let output = schema_with_types(input, &indices.iter().map(|&i| (i, DataType::Float64)).collect::<Vec<_>>());
        let input_types = indices.iter().map(|&i| input.field(i).data_type().clone()).collect();
        Ok(OrdinalFit { names: names(input, &indices), indices, input_types, output, on_unknown: self.on_unknown })
    }
}

/// An `ordinal` step bound to its input, before its categories are fitted.
#[derive(Debug, Clone)]
pub struct OrdinalFit {
    indices: Vec<usize>,
    /// The input types of the columns, in the same order.
    input_types: Vec<DataType>,
    names: Vec<String>,
    output: SchemaRef,
    on_unknown: OnUnknown,
}

/// One column's categories, in code order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Categories {
    pub categories: Vec<ModeValue>,
}

impl Fit for OrdinalFit {
    type Partial = Vec<ValueCounts>;
    type Params = PerColumn<Categories>;

    fn shape(&self) -> FitShape {
        FitShape::rewriting(self.output.clone(), self.names.clone())
    }

    fn new_partial(&self) -> Vec<ValueCounts> {
        self.input_types
            .iter()
            .map(|data_type| ValueCounts::for_type(data_type).unwrap_or(ValueCounts::Text(HashMap::new())))
            .collect()
    }

    fn fold(&self, partial: &mut Vec<ValueCounts>, batch: &RecordBatch) -> Result<(), OpError> {
        for (counts, &index) in partial.iter_mut().zip(&self.indices) {
            counts.fold(batch.column(index))?;
        }
        Ok(())
    }

    fn merge(&self, into: &mut Vec<ValueCounts>, other: Vec<ValueCounts>) -> Result<(), OpError> {
        for (a, b) in into.iter_mut().zip(other) {
            a.merge(b)?;
        }
        Ok(())
    }

    fn finish(&self, partial: Vec<ValueCounts>) -> Result<PerColumn<Categories>, OpError> {
        let mut entries = Vec::new();
        for (counts, name) in partial.iter().zip(&self.names) {
            let categories = counts.sorted_values();
            if categories.is_empty() {
                return Err(OpError::InvalidSpec(format!("column '{name}' has no value to learn categories from")));
            }
            entries.push(Categories { categories });
        }
        Ok(PerColumn::new(&self.names, entries))
    }

    fn with_params(&self, params: PerColumn<Categories>) -> Result<Box<dyn BoundStep>, OpError> {
        let mut codes = Vec::new();
        for categories in params.ordered(&self.names)? {
            let mut by_value: HashMap<Key, f64> = HashMap::new();
            for (code, value) in categories.categories.iter().enumerate() {
                let key = match value {
                    ModeValue::Text(text) => Key::Text(text.clone()),
                    ModeValue::Int(n) => Key::Int(*n),
                    ModeValue::UInt(n) => Key::Int(i64::try_from(*n).map_err(|_| {
                        OpError::InvalidSpec("an integer category does not fit in 64 signed bits".into())
                    })?),
                    ModeValue::Float(_) => {
                        return Err(OpError::InvalidSpec("the fitted categories are not strings or integers".into()));
                    }
                };
                by_value.insert(key, code as f64);
            }
            codes.push(by_value);
        }
        Ok(Box::new(Ordinal {
            indices: self.indices.clone(),
            names: self.names.clone(),
            output: self.output.clone(),
            codes,
            on_unknown: self.on_unknown,
        }))
    }
}

/// A category as the map step looks it up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Int(i64),
    Text(String),
}

/// The fitted `ordinal` step.
#[derive(Debug)]
pub struct Ordinal {
    indices: Vec<usize>,
    names: Vec<String>,
    output: SchemaRef,
    codes: Vec<HashMap<Key, f64>>,
    on_unknown: OnUnknown,
}

impl BoundStep for Ordinal {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mut replacements = Vec::new();
        for ((&index, codes), name) in self.indices.iter().zip(&self.codes).zip(&self.names) {
            let column = batch.column(index);
            let unknown = |row: usize| -> Result<Option<f64>, OpError> {
                match self.on_unknown {
                    OnUnknown::Null => Ok(None),
                    OnUnknown::Error => Err(OpError::InvalidSpec(format!(
                        "column '{name}': the value in row {row} (not shown) was not seen when the categories were fitted (on_unknown = \"null\" makes it null)"
                    ))),
                }
            };
            let encoded: Float64Array = if column.data_type().is_integer() {
                let values = cast(column, &DataType::Int64)?;
                let values = values.as_primitive::<Int64Type>();
                (0..values.len())
                    .map(|row| match values.is_valid(row) {
                        false => Ok(None),
                        true => match codes.get(&Key::Int(values.value(row))) {
                            Some(&code) => Ok(Some(code)),
                            None => unknown(row),
                        },
                    })
                    .collect::<Result<_, _>>()?
            } else {
                let values = cast(column, &DataType::Utf8)?;
                let values = values.as_string::<i32>();
                let mut lookup = Key::Text(String::new());
                (0..values.len())
                    .map(|row| match values.is_valid(row) {
                        false => Ok(None),
                        true => {
                            if let Key::Text(text) = &mut lookup {
                                text.clear();
                                text.push_str(values.value(row));
                            }
                            match codes.get(&lookup) {
                                Some(&code) => Ok(Some(code)),
                                None => unknown(row),
                            }
                        }
                    })
                    .collect::<Result<_, _>>()?
            };
            replacements.push((index, Arc::new(encoded) as ArrayRef));
        }
        replace_columns(&batch, &self.output, replacements)
    }
}
