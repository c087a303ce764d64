//! `drop`: remove the listed columns (names or globs); every selector must match.

use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};

use crate::select::Projection;
use crate::{OpError, selector};

/// `op = "drop"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropSpec {
    pub columns: Vec<String>,
}

impl DropSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<Projection, OpError> {
        let dropped = selector::resolve(&self.columns, input)?;
        let kept = (0..input.fields().len()).filter(|index| !dropped.contains(index)).collect();
        Projection::new(input, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoundStep;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn drops_globbed_columns_and_keeps_the_rest_in_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("pii_email", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
            Field::new("pii_phone", DataType::Utf8, true),
        ]));
        let bound = DropSpec { columns: vec!["pii_*".into()] }.bind(&schema).unwrap();
        let names: Vec<_> = bound.output_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["id", "x"]);
    }
}
