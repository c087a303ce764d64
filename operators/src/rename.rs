//! `rename`: `columns = { old = "new", … }`. Renaming onto an existing column is an error.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::{BoundStep, OpError, selector};

/// `op = "rename"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameSpec {
    pub columns: BTreeMap<String, String>,
}

impl RenameSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<Rename, OpError> {
        let mut names: Vec<String> = input.fields().iter().map(|f| f.name().clone()).collect();
        for (old, new) in &self.columns {
            let index = input.index_of(old).map_err(|_| OpError::NoMatchingColumn {
                selector: old.clone(),
                available: selector::column_list(input),
            })?;
            names[index] = new.clone();
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(duplicate) = names.iter().find(|name| !seen.insert(name.as_str())) {
            return Err(OpError::InvalidSpec(format!("renaming would give two columns the name '{duplicate}'")));
        }
        let fields: Vec<Field> =
            input.fields().iter().zip(&names).map(|(field, name)| field.as_ref().clone().with_name(name)).collect();
        Ok(Rename { output: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())) })
    }
}

/// Replaces the schema; the arrays are shared, not copied.
#[derive(Debug)]
pub struct Rename {
    output: SchemaRef,
}

impl BoundStep for Rename {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        Ok(RecordBatch::try_new_with_options(
            self.output.clone(),
            batch.columns().to_vec(),
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false), Field::new("b", DataType::Int64, false)]))
    }

    #[test]
    fn renames_in_place() {
        let spec = RenameSpec { columns: [("a".to_string(), "z".to_string())].into() };
        let out = spec.bind(&schema()).unwrap().output_schema();
        assert_eq!(out.field(0).name(), "z");
        assert_eq!(out.field(1).name(), "b");
    }

    #[test]
    fn a_clash_is_an_error() {
        let spec = RenameSpec { columns: [("a".to_string(), "b".to_string())].into() };
        assert!(spec.bind(&schema()).unwrap_err().to_string().contains("'b'"));
    }

    #[test]
    fn an_unknown_column_is_named() {
        let spec = RenameSpec { columns: [("q".to_string(), "r".to_string())].into() };
        assert!(spec.bind(&schema()).unwrap_err().to_string().contains("'q'"));
    }
}
