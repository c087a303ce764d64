//! `select`: keep only the listed columns (names or globs), in the order written.

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::{BoundStep, OpError, selector};

/// `op = "select"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectSpec {
    pub columns: Vec<String>,
}

impl SelectSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<Projection, OpError> {
        if self.columns.is_empty() {
            return Err(OpError::InvalidSpec("select needs at least one column".into()));
        }
        Projection::new(input, selector::resolve(&self.columns, input)?)
    }
}

/// Keeps the columns at `indices` (zero-copy: the arrays are shared, not copied).
/// Shared by `select` and `drop`.
#[derive(Debug)]
pub struct Projection {
    indices: Vec<usize>,
    output: SchemaRef,
}

impl Projection {
    pub fn new(input: &SchemaRef, indices: Vec<usize>) -> Result<Self, OpError> {
        let output = Arc::new(Schema::new_with_metadata(
            indices.iter().map(|&i| input.field(i).clone()).collect::<Vec<_>>(),
            input.metadata().clone(),
        ));
        Ok(Projection { indices, output })
    }
}

impl BoundStep for Projection {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        Ok(batch.project(&self.indices)?)
    }

    fn unchanged_columns(&self) -> Option<Vec<Option<usize>>> {
        Some(self.indices.iter().copied().map(Some).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn keeps_the_written_order() {
        let schema =
            Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false), Field::new("b", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(StringArray::from(vec!["x", "y"]))],
        )
        .unwrap();
        let spec = SelectSpec { columns: vec!["b".into(), "a".into()] };
        let out = spec.bind(&schema).unwrap().apply(batch).unwrap();
        assert_eq!(out.schema().field(0).name(), "b");
        assert_eq!(out.column(1).as_ref(), &Int64Array::from(vec![1, 2]));
    }
}
