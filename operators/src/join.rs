//! `join`: the rows of another input of the job matched to each row by key, as SQL joins
//! them (DuckDB is the reference).
//!
//! ```toml
//! [inputs.customers]
//! uri = "s3://lake/customers/"
//! columns = ["customer_id", "segment", "country"]   # optional projection
//!
//! [[step]]
//! op = "join"
//! with = "customers"
//! on = ["customer_id"]             # or left_on = [...] and right_on = [...]
//! how = "left"                     # inner (default) | left | semi | anti
//! # columns = ["segment"]          # the other input's columns to bring (default: all but its keys)
//! # suffix = "_right"              # added to a brought column whose name is taken
//! # validate = "many_to_one"       # the other input's keys must be unique
//! # strategy = "auto"              # auto | broadcast
//! # broadcast_max_mb = 512         # the most the other input may take, decoded
//! ```
//!
//! **Strategy.** The other input is read whole by every process while it plans (its
//! decoded size at most `broadcast_max_mb`, default [`DEFAULT_BROADCAST_MAX_MB`]), and its
//! keys are hashed once per step into a table every worker of the process shares: a
//! broadcast hash join, so the job's own rows never move. An input past the limit is an
//! error naming it and its size; joining two large inputs by exchanging both sides by key
//! (`strategy = "shuffle"`) is not built yet and is refused by name.
//!
//! **Semantics.** `inner` keeps each row once per matching row of the other input;
//! `left` keeps every row, with nulls in the brought columns where nothing matches;
//! `semi` keeps the rows that match at least once, and `anti` those that match none, each
//! once and with no brought column. A null in any key column never matches (so `anti`
//! keeps such a row, as SQL's `NOT EXISTS`); NaN matches NaN and `-0.0` matches `0.0`, as
//! in DuckDB. Rows keep the order they came in; a row's matches follow the other input's
//! order. Keys of different types are compared as DuckDB casts them: integers of any width
//! as `Int64` (an unsigned 64-bit key with a signed one is refused), an integer and a
//! float as `Float64`, any two string types as `Utf8`; other pairs are refused, naming the
//! key. With `on`, the keys are not brought again (SQL's `USING`); with `left_on` and
//! `right_on` the other input's keys come only when named in `columns`.
//!
//! **`validate = "many_to_one"`** fails a key found twice in the other input, naming the
//! input and the key (pandas' `merge(validate=…)`); checked as the table is built, before
//! a row of the job is read. `one_to_one` also needs every key unique among the job's own
//! rows, which no single worker sees: it is refused, with a `check` step's `unique` as the
//! way to say it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::{Deserialize, Serialize};

use crate::{BoundStep, OpError, selector};

/// Default most MiB the other input of a broadcast join may take, decoded.
pub const DEFAULT_BROADCAST_MAX_MB: u64 = 512;

/// Which rows a join keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinHow {
    #[default]
    Inner,
    Left,
    Semi,
    Anti,
}

/// What a join checks of its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinValidate {
    ManyToOne,
    OneToOne,
}

/// How the two sides meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinStrategy {
    #[default]
    Auto,
    Broadcast,
    Shuffle,
}

/// `op = "join"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    /// The name of the other input (`[inputs.NAME]`).
    pub with: String,
    #[serde(default)]
    pub on: Vec<String>,
    #[serde(default)]
    pub left_on: Vec<String>,
    #[serde(default)]
    pub right_on: Vec<String>,
    #[serde(default)]
    pub how: JoinHow,
    /// The other input's columns to bring (names and globs); default: all but its keys.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default = "default_suffix")]
    pub suffix: String,
    #[serde(default)]
    pub validate: Option<JoinValidate>,
    #[serde(default)]
    pub strategy: JoinStrategy,
    /// The most MiB the other input may take, decoded (default [`DEFAULT_BROADCAST_MAX_MB`]).
    #[serde(default)]
    pub broadcast_max_mb: Option<u64>,
}

fn default_suffix() -> String {
    "_right".into()
}

/// Another input of the job, read whole: what a broadcast join builds its table from.
#[derive(Debug)]
pub struct JoinInput {
    pub name: String,
    /// Every row of the input, in one batch.
    pub rows: RecordBatch,
    /// The tables built from it so far, by key columns, key types and uniqueness: a plan
    /// bound again (after an open step) and every worker of the process share one.
    tables: Mutex<HashMap<TableKey, Arc<KeyTable>>>,
}

type TableKey = (Vec<usize>, Vec<DataType>, bool);

/// The other input's row numbers by key, in the row format.
type KeyTable = HashMap<Box<[u8]>, Vec<u32>>;

impl JoinInput {
    pub fn new(name: impl Into<String>, rows: RecordBatch) -> JoinInput {
        JoinInput { name: name.into(), rows, tables: Mutex::default() }
    }

    /// The table of keys `indices` cast to `types`, built once.
    fn table(
        &self,
        converter: &RowConverter,
        indices: &[usize],
        types: &[DataType],
        unique: bool,
    ) -> Result<Arc<KeyTable>, OpError> {
        let key = (indices.to_vec(), types.to_vec(), unique);
        if let Some(table) = self.tables.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(table.clone());
        }
        let keys = key_columns(&self.rows, indices, types)?;
        let table = Arc::new(build_table(converter, &keys, unique, &self.name)?);
        self.tables.lock().unwrap_or_else(|e| e.into_inner()).insert(key, table.clone());
        Ok(table)
    }
}

impl JoinSpec {
    /// The most bytes the other input may take, decoded.
    pub fn broadcast_max_bytes(&self) -> u64 {
        self.broadcast_max_mb.unwrap_or(DEFAULT_BROADCAST_MAX_MB).saturating_mul(1 << 20)
    }

    pub fn bind(&self, input: &SchemaRef, inputs: &HashMap<String, Arc<JoinInput>>) -> Result<Join, OpError> {
        if self.strategy == JoinStrategy::Shuffle {
            return Err(OpError::InvalidSpec(
                "strategy = \"shuffle\" (exchanging both sides by key) is not built yet; the other input is broadcast (strategy = \"auto\" or \"broadcast\") while it fits broadcast_max_mb".into(),
            ));
        }
        if self.validate == Some(JoinValidate::OneToOne) {
            return Err(OpError::InvalidSpec(
                "validate = \"one_to_one\" needs the job's own keys unique across all workers, which a join does not check; put a check step with unique = [the keys] before the join, and use validate = \"many_to_one\"".into(),
            ));
        }
        let other = inputs.get(&self.with).ok_or_else(|| {
            let mut known: Vec<&str> = inputs.keys().map(String::as_str).collect();
            known.sort_unstable();
            OpError::InvalidSpec(format!(
                "no input is named '{}' (the job's [inputs]: {})",
                self.with,
                if known.is_empty() { "none".into() } else { known.join(", ") }
            ))
        })?;
        let right_schema = other.rows.schema();
        let (left_keys, right_keys) = match (self.on.is_empty(), self.left_on.is_empty(), self.right_on.is_empty()) {
            (false, true, true) => (self.on.clone(), self.on.clone()),
            (true, false, false) if self.left_on.len() == self.right_on.len() => {
                (self.left_on.clone(), self.right_on.clone())
            }
            _ => {
                return Err(OpError::InvalidSpec(
                    "a join takes its keys as `on = [...]`, or as `left_on` and `right_on` of the same length".into(),
                ));
            }
        };
        let left_indices = key_indices(&left_keys, input, "this step's input")?;
        let right_indices = key_indices(&right_keys, &right_schema, &format!("input '{}'", self.with))?;
        let mut key_types = Vec::with_capacity(left_keys.len());
        for ((&l, &r), name) in left_indices.iter().zip(&right_indices).zip(&left_keys) {
            let (lt, rt) = (input.field(l).data_type(), right_schema.field(r).data_type());
            key_types.push(common_key_type(lt, rt).ok_or_else(|| {
                OpError::InvalidSpec(format!(
                    "join key '{name}' is {lt} here and {rt} in input '{}'; cast one of them first",
                    self.with
                ))
            })?);
        }
        let brought = self.brought_columns(input, &right_schema, &right_indices)?;
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for (index, name) in &brought {
            let field = right_schema.field(*index);
            let nullable = field.is_nullable() || self.how == JoinHow::Left;
            fields.push(Field::new(name, field.data_type().clone(), nullable));
        }
        let output = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        let converter = RowConverter::new(key_types.iter().map(|t| SortField::new(t.clone())).collect())?;
        let table = other.table(&converter, &right_indices, &key_types, self.validate.is_some())?;
        Ok(Join {
            how: self.how,
            left_indices,
            key_types,
            converter,
            table,
            right: other.rows.clone(),
            brought: brought.into_iter().map(|(index, _)| index).collect(),
            output,
        })
    }

    /// The other input's columns the join brings, with the names they take.
    fn brought_columns(
        &self,
        input: &Schema,
        right: &SchemaRef,
        right_keys: &[usize],
    ) -> Result<Vec<(usize, String)>, OpError> {
        if matches!(self.how, JoinHow::Semi | JoinHow::Anti) {
            return match self.columns {
                Some(_) => Err(OpError::InvalidSpec(
                    "a semi or anti join brings no column of the other input; drop `columns`".into(),
                )),
                None => Ok(Vec::new()),
            };
        }
        let indices = match &self.columns {
            Some(selectors) => selector::resolve(selectors, right)?,
            None => (0..right.fields().len()).filter(|i| !right_keys.contains(i)).collect(),
        };
        let mut taken: Vec<String> = input.fields().iter().map(|f| f.name().clone()).collect();
        let mut brought = Vec::with_capacity(indices.len());
        for index in indices {
            let name = right.field(index).name();
            let name = match taken.contains(name) {
                false => name.clone(),
                true => format!("{name}{}", self.suffix),
            };
            if taken.contains(&name) {
                return Err(OpError::InvalidSpec(format!(
                    "column '{name}' of input '{}' would have the name of a column already here; set another suffix or rename it first",
                    self.with
                )));
            }
            taken.push(name.clone());
            brought.push((index, name));
        }
        Ok(brought)
    }
}

/// The indices of the key columns, each named exactly.
fn key_indices(keys: &[String], schema: &Schema, side: &str) -> Result<Vec<usize>, OpError> {
    keys.iter()
        .map(|key| {
            schema
                .index_of(key)
                .map_err(|_| OpError::InvalidSpec(format!("join key '{key}' is not a column of {side}")))
        })
        .collect()
}

/// The type two key columns are compared as, as DuckDB casts them; `None`: not comparable.
fn common_key_type(left: &DataType, right: &DataType) -> Option<DataType> {
    let is_string = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let is_float = |t: &DataType| matches!(t, DataType::Float32 | DataType::Float64);
    Some(match (left, right) {
        (l, r) if is_string(l) && is_string(r) => DataType::Utf8,
        (l, r) if l.is_integer() && r.is_integer() => {
            let unsigned64 = |t: &DataType| *t == DataType::UInt64;
            let signed = |t: &DataType| t.is_signed_integer();
            match (unsigned64(l) || unsigned64(r), signed(l) || signed(r)) {
                (true, true) => return None,
                (true, false) => DataType::UInt64,
                _ => DataType::Int64,
            }
        }
        (l, r) if (l.is_integer() || is_float(l)) && (r.is_integer() || is_float(r)) => DataType::Float64,
        (l, r) if l == r && matches!(l, DataType::Boolean | DataType::Date32 | DataType::Timestamp(_, _)) => l.clone(),
        _ => return None,
    })
}

/// The key columns of `batch`, cast to `types`, with every NaN one NaN and `-0.0` as `0.0`
/// (so that equal keys are equal bytes in the row format).
fn key_columns(batch: &RecordBatch, indices: &[usize], types: &[DataType]) -> Result<Vec<ArrayRef>, OpError> {
    indices
        .iter()
        .zip(types)
        .map(|(&index, data_type)| {
            let column = cast(batch.column(index), data_type)?;
            Ok(crate::aggregate::canonical_floats(&column))
        })
        .collect()
}

/// Whether row `row` of `columns` has a null key.
fn has_null(columns: &[ArrayRef], row: usize) -> bool {
    columns.iter().any(|column| column.is_null(row))
}

/// The other input's rows by key (rows with a null key left out); with `unique`, a key
/// found twice is an error naming it.
fn build_table(converter: &RowConverter, keys: &[ArrayRef], unique: bool, input: &str) -> Result<KeyTable, OpError> {
    let rows = converter.convert_columns(keys)?;
    let mut table: KeyTable = HashMap::with_capacity(rows.num_rows());
    for row in 0..rows.num_rows() {
        if has_null(keys, row) {
            continue;
        }
        let matches = table.entry(rows.row(row).as_ref().into()).or_default();
        if unique && !matches.is_empty() {
            return Err(OpError::InvalidSpec(format!(
                "validate = \"many_to_one\": input '{input}' has the key ({}) more than once",
                describe_key(keys, row)
            )));
        }
        matches.push(row as u32);
    }
    Ok(table)
}

/// A key's values, as text, for an error.
fn describe_key(keys: &[ArrayRef], row: usize) -> String {
    let options = FormatOptions::default();
    keys.iter()
        .map(|column| match ArrayFormatter::try_new(column.as_ref(), &options) {
            Ok(formatter) => formatter.value(row).to_string(),
            Err(_) => "?".into(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `join` bound to its input, with the other input's hash table.
pub struct Join {
    how: JoinHow,
    left_indices: Vec<usize>,
    key_types: Vec<DataType>,
    converter: RowConverter,
    table: Arc<KeyTable>,
    right: RecordBatch,
    /// The other input's columns brought, in output order.
    brought: Vec<usize>,
    output: SchemaRef,
}

impl std::fmt::Debug for Join {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Join").field("how", &self.how).field("keys", &self.table.len()).finish_non_exhaustive()
    }
}

impl BoundStep for Join {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let keys = key_columns(&batch, &self.left_indices, &self.key_types)?;
        let rows = self.converter.convert_columns(&keys)?;
        let none: &[u32] = &[];
        let mut left: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut right: Vec<Option<u32>> = Vec::new();
        for row in 0..batch.num_rows() {
            let matches = match has_null(&keys, row) {
                true => none,
                false => self.table.get(rows.row(row).as_ref()).map_or(none, Vec::as_slice),
            };
            match self.how {
                JoinHow::Inner => {
                    left.extend(std::iter::repeat_n(row as u32, matches.len()));
                    right.extend(matches.iter().map(|&m| Some(m)));
                }
                JoinHow::Left if matches.is_empty() => {
                    left.push(row as u32);
                    right.push(None);
                }
                JoinHow::Left => {
                    left.extend(std::iter::repeat_n(row as u32, matches.len()));
                    right.extend(matches.iter().map(|&m| Some(m)));
                }
                JoinHow::Semi if !matches.is_empty() => left.push(row as u32),
                JoinHow::Anti if matches.is_empty() => left.push(row as u32),
                JoinHow::Semi | JoinHow::Anti => {}
            }
        }
        let left = UInt32Array::from(left);
        let right = UInt32Array::from(right);
        let mut columns: Vec<ArrayRef> =
            batch.columns().iter().map(|column| take(column.as_ref(), &left, None)).collect::<Result<_, _>>()?;
        for &index in &self.brought {
            columns.push(take(self.right.column(index).as_ref(), &right, None)?);
        }
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(left.len()));
        Ok(RecordBatch::try_new_with_options(self.output.clone(), columns, &options)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Float64Array, Int32Array, Int64Array, StringArray};

    fn input(name: &str, ids: Vec<Option<i64>>, labels: Vec<&str>) -> (String, Arc<JoinInput>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("label", DataType::Utf8, false),
        ]));
        let rows =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(labels))])
                .unwrap();
        (name.to_string(), Arc::new(JoinInput::new(name, rows)))
    }

    fn left() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("x", DataType::Float64, false),
        ]));
        let ids = Int32Array::from(vec![Some(1), None, Some(2), Some(3)]);
        RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(Float64Array::from(vec![0.1, 0.2, 0.3, 0.4]))])
            .unwrap()
    }

    fn spec(how: &str) -> JoinSpec {
        toml::from_str(&format!("with = \"c\"\non = [\"id\"]\nhow = \"{how}\"")).unwrap()
    }

    #[test]
    fn each_kind_keeps_the_rows_sql_keeps_and_null_keys_never_match() {
        let inputs: HashMap<_, _> =
            [input("c", vec![Some(2), Some(1), Some(2), None], vec!["b", "a", "b2", "n"])].into();
        let ids = |how: &str| {
            let out = spec(how).bind(&left().schema(), &inputs).unwrap().apply(left()).unwrap();
            let ids: Vec<Option<i32>> = out.column(0).as_primitive::<arrow::datatypes::Int32Type>().iter().collect();
            let labels = out
                .column_by_name("label")
                .map(|c| c.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>());
            (ids, labels)
        };
        assert_eq!(
            ids("inner"),
            (vec![Some(1), Some(2), Some(2)], Some(vec![Some("a".into()), Some("b".into()), Some("b2".into())]))
        );
        assert_eq!(ids("left").0, vec![Some(1), None, Some(2), Some(2), Some(3)]);
        assert_eq!(ids("left").1.unwrap()[4], None);
        assert_eq!(ids("semi"), (vec![Some(1), Some(2)], None));
        assert_eq!(ids("anti"), (vec![None, Some(3)], None));
    }

    #[test]
    fn a_duplicate_key_under_many_to_one_is_named() {
        let inputs: HashMap<_, _> = [input("c", vec![Some(2), Some(2)], vec!["b", "b2"])].into();
        let spec = JoinSpec { validate: Some(JoinValidate::ManyToOne), ..spec("inner") };
        let error = spec.bind(&left().schema(), &inputs).unwrap_err().to_string();
        assert!(error.contains("input 'c' has the key (2) more than once"), "{error}");
    }

    #[test]
    fn keys_of_types_duckdb_would_not_compare_are_refused() {
        assert_eq!(common_key_type(&DataType::Int32, &DataType::Int64), Some(DataType::Int64));
        assert_eq!(common_key_type(&DataType::Int8, &DataType::Float32), Some(DataType::Float64));
        assert_eq!(common_key_type(&DataType::LargeUtf8, &DataType::Utf8), Some(DataType::Utf8));
        assert_eq!(common_key_type(&DataType::Utf8, &DataType::Int64), None);
        assert_eq!(common_key_type(&DataType::UInt64, &DataType::Int64), None);
    }
}
