//! `dedupe`: drop duplicate rows by key columns.
//!
//! ```toml
//! [[step]]
//! op = "dedupe"
//! columns = ["user_id", "day"]   # the key: names or globs
//! keep = "first"                 # first (default) | max | min
//! # order_by = "updated_at"      # with keep = "max" / "min": the row with the largest /
//! #                              # smallest value of this column wins
//! ```
//!
//! Of the rows that share a key, one survives: the first in input order (file order, then
//! row order, as pandas' `drop_duplicates(keep="first")` on the concatenated input), or the
//! one with the largest (`max`) or smallest (`min`) `order_by` value, ties going to the
//! first in input order. Nulls in key columns compare equal to each other (as in pandas);
//! a null `order_by` value loses to any value. Key values compare by their Arrow row
//! encoding, so `-0.0` and `0.0` are different keys and NaN equals NaN.
//!
//! This file only encodes rows into comparable keys and ranks; the keyed exchange across
//! workers, the per-key reduction (differential dataflow) and the filtering of the rows
//! are the engine's, because they need the whole dataset.

use arrow::compute::SortOptions;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};
use serde::{Deserialize, Serialize};

use crate::{OpError, selector};

/// Which row of a key survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    #[default]
    First,
    Max,
    Min,
}

/// `op = "dedupe"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeSpec {
    /// The key columns.
    pub columns: Vec<String>,
    #[serde(default)]
    pub keep: Keep,
    /// The column `keep = "max"` / `"min"` orders by.
    #[serde(default)]
    pub order_by: Option<String>,
}

impl DedupeSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<Dedupe, OpError> {
        let keys = selector::resolve(&self.columns, input)?;
        let key_fields = keys.iter().map(|&i| SortField::new(input.field(i).data_type().clone())).collect();
        let keys_converter = RowConverter::new(key_fields).map_err(|e| {
            OpError::InvalidSpec(format!("dedupe cannot compare the key columns {:?}: {e}", self.columns))
        })?;
        let order = match (self.keep, &self.order_by) {
            (Keep::First, None) => None,
            (Keep::First, Some(_)) => {
                return Err(OpError::InvalidSpec(
                    "`order_by` needs keep = \"max\" or keep = \"min\" (keep = \"first\" keeps input order)".into(),
                ));
            }
            (Keep::Max | Keep::Min, None) => {
                return Err(OpError::InvalidSpec("keep = \"max\" / \"min\" needs an `order_by` column".into()));
            }
            (keep, Some(column)) => {
                let index = input.index_of(column).map_err(|_| {
                    let available: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
                    OpError::NoMatchingColumn { selector: column.clone(), available: available.join(", ") }
                })?;
                // The smallest rank wins: descending for max; nulls always last.
                let options = SortOptions { descending: keep == Keep::Max, nulls_first: false };
                let field = SortField::new_with_options(input.field(index).data_type().clone(), options);
                let converter = RowConverter::new(vec![field])
                    .map_err(|e| OpError::InvalidSpec(format!("dedupe cannot order by column '{column}': {e}")))?;
                Some((index, converter))
            }
        };
        Ok(Dedupe { schema: input.clone(), keys, keys_converter, order })
    }
}

/// A `dedupe` step bound to its input: encodes each row's key and rank as bytes.
#[derive(Debug)]
pub struct Dedupe {
    schema: SchemaRef,
    keys: Vec<usize>,
    keys_converter: RowConverter,
    order: Option<(usize, RowConverter)>,
}

/// The keys and ranks of one batch's rows.
pub struct EncodedRows {
    pub keys: Rows,
    /// `None` for `keep = "first"`: input order alone decides.
    pub ranks: Option<Rows>,
}

impl Dedupe {
    /// Dedupe keeps the schema.
    pub fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Row `i`'s key is `keys.row(i)`: equal keys have equal bytes. Row `i`'s rank is
    /// `ranks.row(i)`: the row with the smallest rank bytes wins.
    pub fn encode(&self, batch: &RecordBatch) -> Result<EncodedRows, OpError> {
        let columns: Vec<_> = self.keys.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = self.keys_converter.convert_columns(&columns)?;
        let ranks = match &self.order {
            Some((index, converter)) => Some(converter.convert_columns(&[batch.column(*index).clone()])?),
            None => None,
        };
        Ok(EncodedRows { keys, ranks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("t", DataType::Int64, true)]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None, Some("a"), None])),
                Arc::new(Int64Array::from(vec![Some(1), Some(5), None, Some(3)])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn equal_keys_encode_equal_and_null_keys_equal_each_other() {
        let spec = DedupeSpec { columns: vec!["k".into()], keep: Keep::First, order_by: None };
        let encoded = spec.bind(&batch().schema()).unwrap().encode(&batch()).unwrap();
        assert_eq!(encoded.keys.row(0), encoded.keys.row(2));
        assert_eq!(encoded.keys.row(1), encoded.keys.row(3));
        assert_ne!(encoded.keys.row(0), encoded.keys.row(1));
        assert!(encoded.ranks.is_none());
    }

    #[test]
    fn max_ranks_the_largest_first_and_nulls_last() {
        let spec = DedupeSpec { columns: vec!["k".into()], keep: Keep::Max, order_by: Some("t".into()) };
        let ranks = spec.bind(&batch().schema()).unwrap().encode(&batch()).unwrap().ranks.unwrap();
        // t = 1, 5, null, 3: 5 < 3 < 1 < null in rank order.
        assert!(ranks.row(1) < ranks.row(3) && ranks.row(3) < ranks.row(0) && ranks.row(0) < ranks.row(2));
        let spec = DedupeSpec { keep: Keep::Min, ..spec };
        let ranks = spec.bind(&batch().schema()).unwrap().encode(&batch()).unwrap().ranks.unwrap();
        assert!(ranks.row(0) < ranks.row(3) && ranks.row(3) < ranks.row(1) && ranks.row(1) < ranks.row(2));
    }

    #[test]
    fn order_by_and_keep_must_agree() {
        let schema = batch().schema();
        let spec = DedupeSpec { columns: vec!["k".into()], keep: Keep::Max, order_by: None };
        assert!(spec.bind(&schema).unwrap_err().to_string().contains("order_by"));
        let spec = DedupeSpec { columns: vec!["k".into()], keep: Keep::First, order_by: Some("t".into()) };
        assert!(spec.bind(&schema).is_err());
        let spec = DedupeSpec { columns: vec!["k".into()], keep: Keep::Min, order_by: Some("zz".into()) };
        assert!(spec.bind(&schema).unwrap_err().to_string().contains("'zz'"));
    }
}
