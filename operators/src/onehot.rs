//! `onehot`: each category its own 0/1 column, like scikit-learn's `OneHotEncoder`
//! (`sparse_output=False`, `dtype=float64`).
//!
//! ```toml
//! [[step]]
//! op = "onehot"
//! columns = ["country", "plan"]    # string or integer columns
//! handle_unknown = "error"         # error (default) | ignore | infrequent_if_exist
//! # drop = "first"                 # or "if_binary": drop one column per feature
//! # min_frequency = 10             # categories seen fewer times (or a fraction of the rows: 0.01)…
//! # max_categories = 32            # …or beyond the most frequent 31 share one column
//! # categories = { plan = ["free", "pro"] }   # given, in this order, instead of fitted
//! # fitted = "…"
//! ```
//!
//! **Categories.** Fitting counts each column's values across all workers and sorts them:
//! strings by code point (Python's order), integers by value; a null is a category of its
//! own, sorted last, as scikit-learn's `None`. The categories of a column named in
//! `categories` are the ones given, in the order given (a null is never one of them); with
//! every column's categories given and no `min_frequency` or `max_categories` the step needs
//! no fit at all. A value outside the given categories met while fitting is an error under
//! `handle_unknown = "error"`, as in scikit-learn.
//!
//! **Output.** Each encoded column is replaced, where it stands, by one `Float64` column
//! per category, named as `get_feature_names_out` names them: `{column}_{category}`, with a
//! null named `None` and the shared column of the infrequent categories
//! `{column}_infrequent_sklearn` (after the frequent ones). A row has 1.0 in its category's
//! column and 0.0 in the others.
//!
//! **Infrequent categories** are grouped as `ordinal` groups them
//! ([`crate::categories::infrequent`]); the null category takes part, with its count.
//!
//! **`drop`** removes one column per feature after grouping, as scikit-learn does: `first`
//! the first (a feature with one category then has no column), `if_binary` the first of a
//! feature with exactly two. A row of the dropped category has 0.0 in every column of its
//! feature.
//!
//! **Unknown values** (parameters reused on other data, or outside the given categories):
//! `error` fails naming the column and the row, never the value; `ignore` gives 0.0 in every
//! column of the feature; `infrequent_if_exist` counts them as infrequent when the feature
//! has infrequent categories, else as `ignore`.
//!
//! The output's columns depend on the fitted categories, so the planner binds the steps
//! after a fitted `onehot` only once it is fitted ([`crate::fit::FitShape::open`]); they are
//! still checked before any row is written. A feature with more than
//! [`MAX_ONEHOT_COLUMNS`] columns is an error naming the column and the count, with
//! `max_categories` as the remedy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::categories::{MinFrequency, check_category_column, check_distinct, check_grouping, infrequent};
use crate::fit::{Fit, FitShape};
use crate::fit_columns::{PerColumn, names};
use crate::stats::{ModeValue, ValueCounts};
use crate::{BoundStep, OpError, selector};

/// The most columns one encoded column may become: 64 MiB of `Float64` for a batch of 8,192
/// rows (as `hash_encode`'s `n_features`); a wider vocabulary wants `max_categories`.
pub const MAX_ONEHOT_COLUMNS: usize = 1024;

/// What a value outside the categories becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandleUnknown {
    #[default]
    Error,
    Ignore,
    InfrequentIfExist,
}

/// Which column of each feature `drop` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropCategory {
    First,
    IfBinary,
}

/// `op = "onehot"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneHotSpec {
    pub columns: Vec<String>,
    #[serde(default)]
    pub handle_unknown: HandleUnknown,
    #[serde(default)]
    pub drop: Option<DropCategory>,
    #[serde(default)]
    pub min_frequency: Option<MinFrequency>,
    #[serde(default)]
    pub max_categories: Option<usize>,
    /// Given categories, by column name (the others are fitted).
    #[serde(default)]
    pub categories: BTreeMap<String, Vec<CategoryValue>>,
    /// Reuse the categories of an earlier run's `_weir/fitted.json`.
    #[serde(default)]
    pub fitted: Option<String>,
    /// The fitted categories, once known: set by the planner, never by the job, so that
    /// the steps after this one can be bound to the columns it makes.
    #[serde(skip)]
    pub known: Option<PerColumn<OneHotCategories>>,
}

/// A given category, as the job writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CategoryValue {
    Int(i64),
    Text(String),
}

/// One column's categories: the frequent ones in column order, and the infrequent ones,
/// which share one column after them. `None` is the null category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneHotCategories {
    pub categories: Vec<Option<ModeValue>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub infrequent: Vec<Option<ModeValue>>,
}

impl OneHotSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<OneHotFit, OpError> {
        // In schema order: the output replaces each column where it stands.
        let mut indices = selector::resolve(&self.columns, input)?;
        indices.sort_unstable();
        indices.dedup();
        for &index in &indices {
            check_category_column("onehot", input.field(index))?;
        }
        check_grouping(self.min_frequency, self.max_categories)?;
        let names = names(input, &indices);
        let mut given = Vec::with_capacity(names.len());
        for name in &names {
            let values = self.categories.get(name).map(|values| given_categories(name, input, values)).transpose()?;
            given.push(values);
        }
        if let Some(unknown) = self.categories.keys().find(|name| !names.contains(name)) {
            return Err(OpError::InvalidSpec(format!(
                "categories are given for column '{unknown}', which the step does not encode"
            )));
        }
        let fit = OneHotFit {
            indices,
            input_types: names
                .iter()
                .map(|n| input.field_with_name(n).map(|f| f.data_type().clone()))
                .collect::<Result<_, _>>()?,
            names,
            input: input.clone(),
            given,
            handle_unknown: self.handle_unknown,
            drop: self.drop,
            min_frequency: self.min_frequency,
            max_categories: self.max_categories,
            known: None,
        };
        match &self.known {
            Some(params) => {
                let layout = fit.layout(params)?;
                Ok(OneHotFit { known: Some(Arc::new(layout)), ..fit })
            }
            None => Ok(fit),
        }
    }

    /// Whether the step needs no fit: every column's categories are given and nothing is
    /// grouped by frequency.
    pub fn is_fitted(&self) -> bool {
        self.min_frequency.is_some()
            || self.max_categories.is_some()
            || !self.columns.iter().all(|column| self.categories.contains_key(column))
    }
}

/// A column's given categories, checked against its type: distinct, and integers for an
/// integer column.
fn given_categories(column: &str, input: &Schema, values: &[CategoryValue]) -> Result<Vec<ModeValue>, OpError> {
    let integer = input.field_with_name(column)?.data_type().is_integer();
    let mut categories = Vec::with_capacity(values.len());
    for value in values {
        let category = match (value, integer) {
            (CategoryValue::Int(n), true) => ModeValue::Int(*n),
            (CategoryValue::Text(text), false) => ModeValue::Text(text.clone()),
            (CategoryValue::Int(_), false) => {
                return Err(OpError::InvalidSpec(format!(
                    "the categories of column '{column}' must be strings, as its values are"
                )));
            }
            (CategoryValue::Text(_), true) => {
                return Err(OpError::InvalidSpec(format!(
                    "the categories of column '{column}' must be integers, as its values are"
                )));
            }
        };
        if categories.contains(&category) {
            return Err(OpError::InvalidSpec(format!("column '{column}': a category is given twice")));
        }
        categories.push(category);
    }
    if categories.is_empty() {
        return Err(OpError::InvalidSpec(format!("column '{column}': the given categories are empty")));
    }
    Ok(categories)
}

/// A `onehot` step bound to its input, before its categories are fitted (or with them,
/// when the planner knows them).
#[derive(Debug, Clone)]
pub struct OneHotFit {
    indices: Vec<usize>,
    input_types: Vec<DataType>,
    names: Vec<String>,
    input: SchemaRef,
    /// Each column's given categories, if any.
    given: Vec<Option<Vec<ModeValue>>>,
    handle_unknown: HandleUnknown,
    drop: Option<DropCategory>,
    min_frequency: Option<MinFrequency>,
    max_categories: Option<usize>,
    /// The layout of the known categories.
    known: Option<Arc<Layout>>,
}

/// What workers count: each column's values and nulls, and the rows seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneHotPartial {
    counts: Vec<ValueCounts>,
    nulls: Vec<u64>,
    rows: u64,
}

/// A category as the map step looks it up.
#[derive(Debug, Clone, Default)]
struct Lookup {
    text: HashMap<String, usize>,
    int: HashMap<i64, usize>,
    /// The slot of a null, if it has one.
    null: Option<usize>,
}

/// One feature's columns: where each category goes (a slot), and which slot is dropped.
#[derive(Debug, Clone)]
struct Feature {
    lookup: Lookup,
    /// The slot of the infrequent categories' column, if there is one.
    infrequent: Option<usize>,
    /// Slots before dropping.
    slots: usize,
    dropped: Option<usize>,
}

impl Feature {
    /// The output column of `slot`, after the dropped one is taken out; `None`: every
    /// column of the feature is 0.0.
    fn column(&self, slot: usize) -> Option<usize> {
        match self.dropped {
            Some(dropped) if slot == dropped => None,
            Some(dropped) if slot > dropped => Some(slot - 1),
            _ => Some(slot),
        }
    }

    fn width(&self) -> usize {
        self.slots - usize::from(self.dropped.is_some())
    }
}

/// The output of known categories: each feature's lookup and the schema.
#[derive(Debug)]
struct Layout {
    features: Vec<Feature>,
    output: SchemaRef,
    written: Vec<String>,
}

/// The name a category's column takes after `{column}_`.
fn category_name(value: &Option<ModeValue>) -> String {
    match value {
        None => "None".into(),
        Some(ModeValue::Text(text)) => text.clone(),
        Some(ModeValue::Int(n)) => n.to_string(),
        Some(ModeValue::UInt(n)) => n.to_string(),
        Some(ModeValue::Float(x)) => x.to_string(),
    }
}

impl OneHotFit {
    /// Lays out the output of `params`: refuses parameters of other columns, too many
    /// columns, and names that clash.
    fn layout(&self, params: &PerColumn<OneHotCategories>) -> Result<Layout, OpError> {
        let mut features = Vec::with_capacity(self.names.len());
        let mut fields: Vec<Arc<Field>> = Vec::new();
        let mut written = self.names.clone();
        let mut encoded = self.indices.iter().zip(params.ordered(&self.names)?).zip(&self.names).peekable();
        for (index, field) in self.input.fields().iter().enumerate() {
            let Some(((_, categories), name)) = encoded.next_if(|((i, _), _)| **i == index) else {
                fields.push(field.clone());
                continue;
            };
            let mut lookup = Lookup::default();
            let frequent = categories.categories.len();
            let has_infrequent = !categories.infrequent.is_empty();
            let infrequent = categories.infrequent.iter().map(|value| (frequent, value));
            for (slot, value) in categories.categories.iter().enumerate().chain(infrequent) {
                let clash = match value {
                    None => lookup.null.replace(slot).is_some(),
                    Some(ModeValue::Text(text)) => lookup.text.insert(text.clone(), slot).is_some(),
                    Some(ModeValue::Int(n)) => lookup.int.insert(*n, slot).is_some(),
                    Some(ModeValue::UInt(n)) => {
                        let n = i64::try_from(*n).map_err(|_| {
                            OpError::InvalidSpec(format!("column '{name}': a category does not fit in 64 signed bits"))
                        })?;
                        lookup.int.insert(n, slot).is_some()
                    }
                    Some(ModeValue::Float(_)) => {
                        return Err(OpError::InvalidSpec(format!(
                            "column '{name}': the fitted categories are not strings or integers"
                        )));
                    }
                };
                if clash {
                    return Err(OpError::InvalidSpec(format!("column '{name}': a category is listed twice")));
                }
            }
            let slots = frequent + usize::from(has_infrequent);
            if slots == 0 {
                return Err(OpError::InvalidSpec(format!("column '{name}' has no category")));
            }
            let dropped = match self.drop {
                None => None,
                Some(DropCategory::First) => Some(0),
                Some(DropCategory::IfBinary) => (slots == 2).then_some(0),
            };
            let feature = Feature { lookup, infrequent: has_infrequent.then_some(frequent), slots, dropped };
            if feature.width() > MAX_ONEHOT_COLUMNS {
                return Err(OpError::InvalidSpec(format!(
                    "column '{name}' has {} categories: more than {MAX_ONEHOT_COLUMNS} one-hot columns; set max_categories (or encode it with ordinal or hash_encode)",
                    feature.width()
                )));
            }
            let mut labels: Vec<String> = categories.categories.iter().map(category_name).collect();
            if has_infrequent {
                labels.push("infrequent_sklearn".into());
            }
            if let Some(dropped) = dropped {
                labels.remove(dropped);
            }
            for label in labels {
                let column = format!("{name}_{label}");
                fields.push(Arc::new(Field::new(&column, DataType::Float64, false)));
                written.push(column);
            }
            features.push(feature);
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(clash) = fields.iter().find(|field| !seen.insert(field.name().as_str())) {
            return Err(OpError::InvalidSpec(format!(
                "the one-hot column '{}' would have the name of another column; rename one of them first",
                clash.name()
            )));
        }
        let output = Arc::new(Schema::new_with_metadata(fields, self.input.metadata().clone()));
        Ok(Layout { features, output, written })
    }

    /// The categories of column `position` from its counts (sorted values and nulls).
    fn categories(
        &self,
        position: usize,
        counts: &ValueCounts,
        nulls: u64,
        rows: u64,
    ) -> Result<OneHotCategories, OpError> {
        let name = &self.names[position];
        let mut sorted: Vec<(Option<ModeValue>, u64)> = match &self.given[position] {
            Some(given) => {
                let seen = counts.sorted_counts();
                if self.handle_unknown == HandleUnknown::Error
                    && (nulls > 0 || seen.iter().any(|(value, _)| !given.contains(value)))
                {
                    return Err(OpError::InvalidSpec(format!(
                        "column '{name}' holds a value (not shown) outside its given categories (handle_unknown = \"ignore\" lets it through)"
                    )));
                }
                let count = |value: &ModeValue| seen.iter().find(|(v, _)| v == value).map_or(0, |(_, n)| *n);
                given.iter().map(|value| (Some(value.clone()), count(value))).collect()
            }
            None => {
                let mut sorted: Vec<_> = counts.sorted_counts().into_iter().map(|(v, n)| (Some(v), n)).collect();
                if nulls > 0 {
                    sorted.push((None, nulls));
                }
                sorted
            }
        };
        if sorted.is_empty() {
            return Err(OpError::InvalidSpec(format!("column '{name}' has no value to learn categories from")));
        }
        let counts: Vec<u64> = sorted.iter().map(|(_, n)| *n).collect();
        let rare = infrequent(&counts, rows, self.min_frequency, self.max_categories);
        let (mut categories, mut infrequent_categories) = (Vec::new(), Vec::new());
        for ((value, _), rare) in sorted.drain(..).zip(rare) {
            if rare { infrequent_categories.push(value) } else { categories.push(value) }
        }
        Ok(OneHotCategories { categories, infrequent: infrequent_categories })
    }

    /// The parameters of given categories, with nothing to fit.
    pub fn given_params(&self) -> Option<PerColumn<OneHotCategories>> {
        let entries = self
            .given
            .iter()
            .map(|given| {
                given.as_ref().map(|values| OneHotCategories {
                    categories: values.iter().cloned().map(Some).collect(),
                    infrequent: Vec::new(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(PerColumn::new(&self.names, entries))
    }
}

impl Fit for OneHotFit {
    type Partial = OneHotPartial;
    type Params = PerColumn<OneHotCategories>;

    fn shape(&self) -> FitShape {
        match &self.known {
            Some(layout) => FitShape {
                output: layout.output.clone(),
                columns: self.names.clone(),
                written: layout.written.clone(),
                keeps_every_row: true,
                strategy: None,
                open: false,
            },
            None => FitShape {
                output: self.input.clone(),
                columns: self.names.clone(),
                written: self.names.clone(),
                keeps_every_row: true,
                strategy: None,
                open: true,
            },
        }
    }

    fn new_partial(&self) -> OneHotPartial {
        let counts = self
            .input_types
            .iter()
            .map(|data_type| ValueCounts::for_type(data_type).unwrap_or(ValueCounts::Text(HashMap::new())))
            .collect();
        OneHotPartial { counts, nulls: vec![0; self.names.len()], rows: 0 }
    }

    fn fold(&self, partial: &mut OneHotPartial, batch: &RecordBatch) -> Result<(), OpError> {
        partial.rows += batch.num_rows() as u64;
        for (position, &index) in self.indices.iter().enumerate() {
            let column = batch.column(index);
            partial.nulls[position] += column.null_count() as u64;
            partial.counts[position].fold(column)?;
            check_distinct(&self.names[position], partial.counts[position].distinct())?;
        }
        Ok(())
    }

    fn merge(&self, into: &mut OneHotPartial, other: OneHotPartial) -> Result<(), OpError> {
        into.rows += other.rows;
        for (a, b) in into.nulls.iter_mut().zip(other.nulls) {
            *a += b;
        }
        for (a, b) in into.counts.iter_mut().zip(other.counts) {
            a.merge(b)?;
        }
        Ok(())
    }

    fn finish(&self, partial: OneHotPartial) -> Result<PerColumn<OneHotCategories>, OpError> {
        let entries = (0..self.names.len())
            .map(|position| self.categories(position, &partial.counts[position], partial.nulls[position], partial.rows))
            .collect::<Result<Vec<_>, _>>()?;
        let params = PerColumn::new(&self.names, entries);
        self.layout(&params)?; // too many columns, or a clashing name, fails the fit here
        Ok(params)
    }

    fn with_params(&self, params: PerColumn<OneHotCategories>) -> Result<Box<dyn BoundStep>, OpError> {
        let layout = self.layout(&params)?;
        Ok(Box::new(OneHot {
            indices: self.indices.clone(),
            names: self.names.clone(),
            layout: Arc::new(layout),
            handle_unknown: self.handle_unknown,
        }))
    }
}

/// The fitted `onehot` step.
#[derive(Debug)]
pub struct OneHot {
    indices: Vec<usize>,
    names: Vec<String>,
    layout: Arc<Layout>,
    handle_unknown: HandleUnknown,
}

impl OneHot {
    /// The slot of each row of `column` in `feature` (`None`: an unknown value that takes no
    /// column).
    fn slots(&self, position: usize, column: &ArrayRef) -> Result<Vec<Option<usize>>, OpError> {
        let feature = &self.layout.features[position];
        let unknown = |row: usize| -> Result<Option<usize>, OpError> {
            match self.handle_unknown {
                HandleUnknown::Error => Err(OpError::InvalidSpec(format!(
                    "column '{}': the value in row {row} (not shown) is not one of its categories (handle_unknown = \"ignore\" gives it no column)",
                    self.names[position]
                ))),
                HandleUnknown::Ignore => Ok(None),
                HandleUnknown::InfrequentIfExist => Ok(feature.infrequent),
            }
        };
        let found = |row: usize, slot: Option<&usize>| match slot {
            Some(&slot) => Ok(Some(slot)),
            None => unknown(row),
        };
        if column.data_type().is_integer() {
            let values = cast(column, &DataType::Int64)?;
            let values = values.as_primitive::<Int64Type>();
            (0..values.len())
                .map(|row| match values.is_valid(row) {
                    false => found(row, feature.lookup.null.as_ref()),
                    true => found(row, feature.lookup.int.get(&values.value(row))),
                })
                .collect()
        } else {
            let values = cast(column, &DataType::Utf8)?;
            let values = values.as_string::<i32>();
            (0..values.len())
                .map(|row| match values.is_valid(row) {
                    false => found(row, feature.lookup.null.as_ref()),
                    true => found(row, feature.lookup.text.get(values.value(row))),
                })
                .collect()
        }
    }
}

impl BoundStep for OneHot {
    fn output_schema(&self) -> SchemaRef {
        self.layout.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let rows = batch.num_rows();
        let mut encoded: Vec<Vec<ArrayRef>> = Vec::with_capacity(self.indices.len());
        for (position, &index) in self.indices.iter().enumerate() {
            let feature = &self.layout.features[position];
            let mut columns = vec![vec![0.0f64; rows]; feature.width()];
            for (row, slot) in self.slots(position, batch.column(index))?.into_iter().enumerate() {
                if let Some(column) = slot.and_then(|slot| feature.column(slot)) {
                    columns[column][row] = 1.0;
                }
            }
            encoded.push(columns.into_iter().map(|values| Arc::new(Float64Array::from(values)) as ArrayRef).collect());
        }
        let mut encoded = encoded.into_iter();
        let mut columns = Vec::with_capacity(self.layout.output.fields().len());
        for (index, column) in batch.columns().iter().enumerate() {
            match self.indices.contains(&index) {
                true => columns.extend(encoded.next().into_iter().flatten()),
                false => columns.push(column.clone()),
            }
        }
        Ok(RecordBatch::try_new(self.layout.output.clone(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::{erase, fit_in_process};
    use arrow::array::{Int32Array, StringArray};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("color", DataType::Utf8, true),
        ]));
        let ids = Int32Array::from(vec![1, 2, 3, 4, 5]);
        let colors = StringArray::from(vec![Some("red"), None, Some("blue"), Some("red"), Some("green")]);
        RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(colors)]).unwrap()
    }

    fn spec(toml_text: &str) -> OneHotSpec {
        toml::from_str(&format!("columns = [\"color\"]\n{toml_text}")).unwrap()
    }

    fn column_names(schema: &SchemaRef) -> Vec<String> {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    #[test]
    fn a_fitted_column_becomes_its_sorted_categories_and_the_null_one_in_place() {
        let fit = erase(spec("").bind(&batch().schema()).unwrap());
        assert!(fit.shape().open);
        let params = fit_in_process(fit.as_ref(), &[batch().slice(0, 2), batch().slice(2, 3)]);
        let step = fit.with_params(&params).unwrap();
        let out = step.apply(batch()).unwrap();
        assert_eq!(column_names(&out.schema()), ["id", "color_blue", "color_green", "color_red", "color_None"]);
        let row = |r: usize| {
            (1..5).map(|c| out.column(c).as_primitive::<arrow::datatypes::Float64Type>().value(r)).collect::<Vec<_>>()
        };
        assert_eq!(row(0), [0.0, 0.0, 1.0, 0.0]);
        assert_eq!(row(1), [0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn columns_listed_out_of_schema_order_are_encoded_in_place() {
        let spec: OneHotSpec = toml::from_str("columns = [\"color\", \"id\"]").unwrap();
        let fit = erase(spec.bind(&batch().schema()).unwrap());
        let step = fit.with_params(&fit_in_process(fit.as_ref(), &[batch()])).unwrap();
        let out = step.apply(batch()).unwrap();
        assert_eq!(out.num_columns(), 5 + 4);
        assert_eq!(out.schema().field(0).name(), "id_1");
        assert_eq!(out.schema().field(5).name(), "color_blue");
    }

    #[test]
    fn known_categories_close_the_shape_and_a_clashing_name_is_refused() {
        let params = fit_locally_params(&spec("drop = \"first\""));
        let known = OneHotSpec { known: Some(params), ..spec("drop = \"first\"") };
        let shape = known.bind(&batch().schema()).unwrap().shape();
        assert!(!shape.open);
        assert_eq!(column_names(&shape.output), ["id", "color_green", "color_red", "color_None"]);

        let schema = Arc::new(Schema::new(vec![
            Field::new("color", DataType::Utf8, true),
            Field::new("color_red", DataType::Float64, true),
        ]));
        let given = spec("categories = { color = [\"red\"] }");
        let error = given.bind(&schema).unwrap().with_params(given.bind(&schema).unwrap().given_params().unwrap());
        assert!(error.unwrap_err().to_string().contains("'color_red'"));
    }

    fn fit_locally_params(spec: &OneHotSpec) -> PerColumn<OneHotCategories> {
        let fit = erase(spec.bind(&batch().schema()).unwrap());
        serde_json::from_value(fit_in_process(fit.as_ref(), &[batch()])).unwrap()
    }
}
