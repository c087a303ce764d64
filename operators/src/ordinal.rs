//! `ordinal`: categories to integer codes, like scikit-learn's `OrdinalEncoder`.
//!
//! ```toml
//! [[step]]
//! op = "ordinal"
//! columns = ["country", "plan"]   # string or integer columns
//! on_unknown = "error"            # error (default) | null: a value not seen when fitting
//! # unknown_value = -1            # instead: the code of a value not seen when fitting
//! # encoded_missing_value = -2    # the code of a null (default: it stays null)
//! # min_frequency = 10            # categories seen fewer times (or a fraction of the rows: 0.01)…
//! # max_categories = 32           # …or beyond the most frequent 31 share one last code
//! # output = "{col}_code"         # keep the raw column (see `output_columns`)
//! # fitted = "…"
//! ```
//!
//! Fitting collects each column's distinct values across all workers (counted as
//! `impute`'s `most_frequent` counts them) and sorts them: strings by code point (Python's
//! order), integers by value. A value becomes its position in that list, as a `Float64`
//! (scikit-learn's default dtype); a null stays null (scikit-learn's
//! `encoded_missing_value = nan`), or becomes `encoded_missing_value`. A value the fit never
//! saw (parameters reused on other data) is an error naming the column and the row, never
//! the value, or, with `on_unknown = "null"`, a null (scikit-learn's
//! `handle_unknown = "use_encoded_value"` with `unknown_value = nan`), or `unknown_value`.
//! Neither code may be one a category has (scikit-learn refuses that too), and both must be
//! whole numbers.
//!
//! Infrequent categories, as scikit-learn 1.1+ groups them: a category seen fewer than
//! `min_frequency` times (an integer), or in less than that fraction of the rows (a number
//! below 1; the rows with a null count), is infrequent; with `max_categories`, only the
//! `max_categories − 1` most frequent stay frequent (ties: the later category in sorted
//! order stays, as NumPy's stable argsort leaves them). The frequent categories keep their
//! sorted order and codes `0 … k − 1`; every infrequent one is coded `k`. `fitted.json` holds
//! the frequent categories in order and the infrequent ones beside them.
//!
//! Every category is counted on the way, so a column with more than [`crate::categories::MAX_DISTINCT`]
//! distinct values on one worker is an error naming the column and the count, not an
//! out-of-memory kill: such a column is an identifier, for `hash_encode`. The grouping and
//! the bound are [`crate::categories`]'s, shared with `onehot`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::categories::{MinFrequency, check_category_column, check_distinct, check_grouping, infrequent};
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
    /// The code of a value the fit never saw (instead of `on_unknown`).
    #[serde(default)]
    pub unknown_value: Option<f64>,
    /// The code of a null (default: it stays null).
    #[serde(default)]
    pub encoded_missing_value: Option<f64>,
    #[serde(default)]
    pub min_frequency: Option<MinFrequency>,
    #[serde(default)]
    pub max_categories: Option<usize>,
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
            check_category_column("ordinal", input.field(index))?;
        }
        let whole = |name: &str, value: Option<f64>| match value {
            Some(v) if !(v.is_finite() && v.fract() == 0.0) => {
                Err(OpError::InvalidSpec(format!("{name} = {v} must be a whole number")))
            }
            _ => Ok(()),
        };
        whole("unknown_value", self.unknown_value)?;
        whole("encoded_missing_value", self.encoded_missing_value)?;
        if self.unknown_value.is_some() && self.on_unknown == OnUnknown::Null {
            return Err(OpError::InvalidSpec(
                "on_unknown = \"null\" and unknown_value both say what an unknown value becomes; keep one".into(),
            ));
        }
        check_grouping(self.min_frequency, self.max_categories)?;
        let output = schema_with_types(input, &indices.iter().map(|&i| (i, DataType::Float64)).collect::<Vec<_>>());
        let input_types = indices.iter().map(|&i| input.field(i).data_type().clone()).collect();
        Ok(OrdinalFit {
            names: names(input, &indices),
            indices,
            input_types,
            output,
            on_unknown: self.on_unknown,
            unknown_value: self.unknown_value,
            encoded_missing_value: self.encoded_missing_value,
            min_frequency: self.min_frequency,
            max_categories: self.max_categories,
        })
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
    unknown_value: Option<f64>,
    encoded_missing_value: Option<f64>,
    min_frequency: Option<MinFrequency>,
    max_categories: Option<usize>,
}

/// One column's categories: the frequent ones in code order, and the infrequent ones (in
/// sorted order), which share the code after them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Categories {
    pub categories: Vec<ModeValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub infrequent: Vec<ModeValue>,
}

/// What workers count: each column's values, and the rows seen (for a fractional
/// `min_frequency`, which counts rows with a null too, as scikit-learn's `n_samples`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrdinalPartial {
    counts: Vec<ValueCounts>,
    rows: u64,
}

impl Fit for OrdinalFit {
    type Partial = OrdinalPartial;
    type Params = PerColumn<Categories>;

    fn shape(&self) -> FitShape {
        FitShape::rewriting(self.output.clone(), self.names.clone())
    }

    fn new_partial(&self) -> OrdinalPartial {
        let counts = self
            .input_types
            .iter()
            .map(|data_type| ValueCounts::for_type(data_type).unwrap_or(ValueCounts::Text(HashMap::new())))
            .collect();
        OrdinalPartial { counts, rows: 0 }
    }

    fn fold(&self, partial: &mut OrdinalPartial, batch: &RecordBatch) -> Result<(), OpError> {
        partial.rows += batch.num_rows() as u64;
        for ((counts, &index), name) in partial.counts.iter_mut().zip(&self.indices).zip(&self.names) {
            counts.fold(batch.column(index))?;
            check_distinct(name, counts.distinct())?;
        }
        Ok(())
    }

    fn merge(&self, into: &mut OrdinalPartial, other: OrdinalPartial) -> Result<(), OpError> {
        into.rows += other.rows;
        for (a, b) in into.counts.iter_mut().zip(other.counts) {
            a.merge(b)?;
        }
        Ok(())
    }

    fn finish(&self, partial: OrdinalPartial) -> Result<PerColumn<Categories>, OpError> {
        let mut entries = Vec::new();
        for (counts, name) in partial.counts.iter().zip(&self.names) {
            let sorted = counts.sorted_counts();
            if sorted.is_empty() {
                return Err(OpError::InvalidSpec(format!("column '{name}' has no value to learn categories from")));
            }
            let counts: Vec<u64> = sorted.iter().map(|(_, n)| *n).collect();
            let infrequent = infrequent(&counts, partial.rows, self.min_frequency, self.max_categories);
            let (mut categories, mut rare) = (Vec::new(), Vec::new());
            for ((value, _), infrequent) in sorted.into_iter().zip(infrequent) {
                if infrequent { rare.push(value) } else { categories.push(value) }
            }
            entries.push(Categories { categories, infrequent: rare });
        }
        Ok(PerColumn::new(&self.names, entries))
    }

    fn with_params(&self, params: PerColumn<Categories>) -> Result<Box<dyn BoundStep>, OpError> {
        let mut codes = Vec::new();
        for (categories, name) in params.ordered(&self.names)?.into_iter().zip(&self.names) {
            let frequent = categories.categories.len();
            let used = frequent + usize::from(!categories.infrequent.is_empty());
            for (option, value) in
                [("unknown_value", self.unknown_value), ("encoded_missing_value", self.encoded_missing_value)]
            {
                if let Some(value) = value
                    && value >= 0.0
                    && value < used as f64
                {
                    return Err(OpError::InvalidSpec(format!(
                        "{option} = {value} is the code of a category of column '{name}' (codes 0 to {}); pick a negative one or {used}",
                        used - 1
                    )));
                }
            }
            let mut by_value: HashMap<Key, f64> = HashMap::new();
            let infrequent = categories.infrequent.iter().map(|value| (frequent, value));
            for (code, value) in categories.categories.iter().enumerate().chain(infrequent) {
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
            unknown_value: self.unknown_value,
            missing: self.encoded_missing_value,
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
    unknown_value: Option<f64>,
    /// The code of a null (`encoded_missing_value`), or `None`: null.
    missing: Option<f64>,
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
                if let Some(code) = self.unknown_value {
                    return Ok(Some(code));
                }
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
                        false => Ok(self.missing),
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
                        false => Ok(self.missing),
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
