//! Column selectors: a list of names and globs (`f_*`, `x?`, `[ab]_id`) resolved against a
//! schema. A selector that matches nothing is an error that names it.

use arrow::datatypes::Schema;
use globset::{Glob, GlobMatcher};

use crate::OpError;

/// True when `selector` contains glob metacharacters.
pub fn is_glob(selector: &str) -> bool {
    selector.contains(['*', '?', '['])
}

fn matcher(selector: &str) -> Result<GlobMatcher, OpError> {
    Glob::new(selector)
        .map(|glob| glob.compile_matcher())
        .map_err(|e| OpError::InvalidSpec(format!("bad column glob '{selector}': {e}")))
}

/// The indices of the columns `selectors` name, in the order written (a glob expands in
/// schema order), each column once.
pub fn resolve(selectors: &[String], schema: &Schema) -> Result<Vec<usize>, OpError> {
    let mut indices = Vec::new();
    for selector in selectors {
        let matched = resolve_one(selector, schema)?;
        for index in matched {
            if !indices.contains(&index) {
                indices.push(index);
            }
        }
    }
    Ok(indices)
}

/// The indices of the columns one selector matches, in schema order.
pub fn resolve_one(selector: &str, schema: &Schema) -> Result<Vec<usize>, OpError> {
    let matched: Vec<usize> = if is_glob(selector) {
        let glob = matcher(selector)?;
        schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, field)| glob.is_match(field.name()))
            .map(|(index, _)| index)
            .collect()
    } else {
        schema.index_of(selector).ok().into_iter().collect()
    };
    if matched.is_empty() {
        return Err(OpError::NoMatchingColumn { selector: selector.to_string(), available: column_list(schema) });
    }
    Ok(matched)
}

/// The schema's column names, comma-separated, for error messages.
pub fn column_list(schema: &Schema) -> String {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if names.is_empty() { "(no columns)".to_string() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("f_1", DataType::Float64, true),
            Field::new("f_0", DataType::Float64, true),
            Field::new("name", DataType::Utf8, true),
        ])
    }

    #[test]
    fn names_keep_written_order_and_globs_expand_in_schema_order() {
        let got = resolve(&["name".into(), "f_*".into(), "id".into()], &schema()).unwrap();
        assert_eq!(got, vec![3, 1, 2, 0]);
    }

    #[test]
    fn a_column_selected_twice_appears_once() {
        let got = resolve(&["f_0".into(), "f_*".into()], &schema()).unwrap();
        assert_eq!(got, vec![2, 1]);
    }

    #[test]
    fn a_selector_matching_nothing_is_named() {
        let err = resolve(&["id".into(), "g_*".into()], &schema()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("'g_*'"), "{message}");
        assert!(message.contains("id, f_1, f_0, name"), "{message}");
    }
}
