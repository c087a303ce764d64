//! Hive-style partitions: `key=value` folders in a dataset's paths, read as columns (as
//! Spark, Polars, DuckDB and pyarrow do) and written by `sink.partition_by`.
//!
//! Reading (`source.partitioning = "hive"`, the default): the folders between the dataset's
//! root (its prefix, or a glob's fixed prefix) and each file that have the form
//! `key=value` become columns, appended after the file's columns in folder order. Every file
//! must have the same keys in the same order. A column's type is inferred from all its
//! values, as Spark does: `Int64` if every value is an integer, else `Float64` if every
//! value is a number, else `Date32` if every value is a `YYYY-MM-DD` date, else `Utf8`.
//! `__HIVE_DEFAULT_PARTITION__` is null. Values are percent-decoded (Hive escapes `/`, `=`,
//! `%` and other characters in folder names).
//!
//! Writing: a row's partition folder is `key=value/…` for the `partition_by` columns, with
//! the same escaping and null spelling; the partition columns are not stored in the files.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Date32Array, Float64Array, Int64Array, StringArray, new_null_array};
use arrow::datatypes::{DataType, Field};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use object_store::path::Path;

use crate::ConnectorError;

/// `source.partitioning`: whether `key=value` folders are read as columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioning {
    /// `key=value` folders are columns (the default, as in Spark, Polars and DuckDB).
    #[default]
    Hive,
    /// Folders are only where files are.
    None,
}

/// How a null partition value is spelled in a folder name (Hive's and Spark's spelling).
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The partition columns of a dataset and each file's values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Partitions {
    /// One field per key, in folder order (nullable).
    pub fields: Vec<Field>,
    /// Per file (in the order given), one decoded value per field; `None` is null.
    pub values: Vec<Vec<Option<String>>>,
}

/// `key=value` folders of `path` below `root`, decoded, in order (the file name excluded).
fn segments(root: &Path, path: &Path) -> Vec<(String, String)> {
    let parts: Vec<String> = match path.prefix_match(root) {
        Some(parts) => parts.map(|p| p.as_ref().to_string()).collect(),
        None => return vec![],
    };
    let folders = &parts[..parts.len().saturating_sub(1)];
    folders
        .iter()
        .filter_map(|folder| {
            let (key, value) = folder.split_once('=')?;
            (!key.is_empty()).then(|| (unescape(key), unescape(value)))
        })
        .collect()
}

/// Reads the partition columns of `files` under `root`. `uri_of` names a file in errors.
pub fn infer(root: &Path, files: &[Path], uri_of: impl Fn(&Path) -> String) -> Result<Partitions, ConnectorError> {
    let per_file: Vec<Vec<(String, String)>> = files.iter().map(|path| segments(root, path)).collect();
    let Some(first) = per_file.first() else { return Ok(Partitions::default()) };
    let keys: Vec<String> = first.iter().map(|(k, _)| k.clone()).collect();
    for (index, file) in per_file.iter().enumerate() {
        let these: Vec<String> = file.iter().map(|(k, _)| k.clone()).collect();
        if these != keys {
            return Err(ConnectorError::Invalid {
                uri: uri_of(&files[index]),
                message: format!(
                    "its partition folders are [{}], but '{}' has [{}]; every file of a dataset needs the same key=value folders (or set source.partitioning = \"none\")",
                    these.join(", "),
                    uri_of(&files[0]),
                    keys.join(", ")
                ),
            });
        }
    }
    if let Some(twice) = keys.iter().enumerate().find(|(i, k)| keys[..*i].contains(k)).map(|(_, k)| k) {
        return Err(ConnectorError::Invalid {
            uri: uri_of(&files[0]),
            message: format!("the partition key '{twice}' appears twice in its folders"),
        });
    }
    let values: Vec<Vec<Option<String>>> = per_file
        .into_iter()
        .map(|file| file.into_iter().map(|(_, v)| (v != NULL_PARTITION).then_some(v)).collect())
        .collect();
    let fields = keys
        .iter()
        .enumerate()
        .map(|(column, key)| {
            let data_type = infer_type(values.iter().filter_map(|file| file[column].as_deref()));
            Field::new(key, data_type, true)
        })
        .collect();
    Ok(Partitions { fields, values })
}

fn infer_type<'a>(values: impl Iterator<Item = &'a str> + Clone) -> DataType {
    if values.clone().all(|v| v.parse::<i64>().is_ok()) {
        DataType::Int64
    } else if values.clone().all(|v| v.parse::<f64>().is_ok()) {
        DataType::Float64
    } else if values.clone().all(|v| v.len() == 10 && chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok()) {
        DataType::Date32
    } else {
        DataType::Utf8
    }
}

/// A column of `rows` copies of a partition value, of the field's type.
pub fn constant_column(field: &Field, value: Option<&str>, rows: usize) -> ArrayRef {
    let Some(value) = value else { return new_null_array(field.data_type(), rows) };
    match field.data_type() {
        DataType::Int64 => match value.parse::<i64>() {
            Ok(v) => Arc::new(Int64Array::from_value(v, rows)),
            Err(_) => new_null_array(field.data_type(), rows),
        },
        DataType::Float64 => match value.parse::<f64>() {
            Ok(v) => Arc::new(Float64Array::from_value(v, rows)),
            Err(_) => new_null_array(field.data_type(), rows),
        },
        DataType::Date32 => {
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
            match chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
                Ok(date) => Arc::new(Date32Array::from_value((date - epoch).num_days() as i32, rows)),
                Err(_) => new_null_array(field.data_type(), rows),
            }
        }
        _ => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(value, rows))),
    }
}

/// The types `sink.partition_by` accepts: their values print exactly and read back as the
/// same value.
pub fn can_partition_by(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Date32
            | DataType::Boolean
    )
}

/// The folder (`k1=v1/k2=v2`) of each row of `columns` (the `partition_by` columns, named
/// `names`), escaped.
pub fn row_folders(names: &[String], columns: &[ArrayRef]) -> Result<Vec<String>, arrow::error::ArrowError> {
    let rows = columns.first().map_or(0, |c| c.len());
    let options = FormatOptions::default();
    let formatters: Vec<ArrayFormatter> =
        columns.iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options)).collect::<Result<_, _>>()?;
    let mut folders = Vec::with_capacity(rows);
    for row in 0..rows {
        let mut folder = String::new();
        for (index, (name, column)) in names.iter().zip(columns).enumerate() {
            if index > 0 {
                folder.push('/');
            }
            folder.push_str(&escape(name));
            folder.push('=');
            if column.is_null(row) {
                folder.push_str(NULL_PARTITION);
            } else {
                folder.push_str(&escape(&formatters[index].value(row).to_string()));
            }
        }
        folders.push(folder);
    }
    Ok(folders)
}

/// Whether `folder` is a partition folder Weir writes: `k=v` components, none empty,
/// hidden (`_`, `.`) or a path trick.
pub fn is_partition_folder(folder: &str) -> bool {
    folder.split('/').all(|part| {
        part.split_once('=').is_some_and(|(key, _)| !key.is_empty())
            && !part.starts_with(['_', '.'])
            && part != ".."
            && !part.contains('\\')
    })
}

/// Hive's escaping of a folder name: `%XX` (UTF-8 bytes) for control characters, DEL and
/// `"#%'*/:=?\^{[]}`; everything else as it is.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_control() || "\"#%'*/:=?\\^{[]}".contains(ch) || ch == '\u{7f}' {
            let mut buffer = [0u8; 4];
            for byte in ch.encode_utf8(&mut buffer).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// Percent-decoding; a `%` not followed by two hex digits is kept as it is.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(names: &[&str]) -> Vec<Path> {
        // As a listing gives them: the keys as they are, not encoded again.
        names.iter().map(|n| Path::parse(format!("root/{n}")).unwrap()).collect()
    }

    #[test]
    fn keys_become_typed_columns() {
        let files = paths(&[
            "date=2026-11-29/n=1/c=DE/a.parquet",
            "date=2026-11-30/n=20/c=a%2Fb/b.parquet",
            "date=2026-11-30/n=__HIVE_DEFAULT_PARTITION__/c=x/c.parquet",
        ]);
        let parts = infer(&Path::from("root"), &files, |p| p.to_string()).unwrap();
        let types: Vec<&DataType> = parts.fields.iter().map(|f| f.data_type()).collect();
        assert_eq!(types, [&DataType::Date32, &DataType::Int64, &DataType::Utf8]);
        assert_eq!(parts.values[1], [Some("2026-11-30".into()), Some("20".into()), Some("a/b".into())]);
        assert_eq!(parts.values[2][1], None);
        let column = constant_column(&parts.fields[0], Some("2026-11-30"), 3);
        assert_eq!(column.as_any().downcast_ref::<Date32Array>().unwrap().value(2), 20_787); // days from 1970-01-01 (Python's datetime.date)
    }

    #[test]
    fn differing_folders_are_an_error_naming_both_files() {
        let files = paths(&["date=1/a.parquet", "b.parquet"]);
        let error = infer(&Path::from("root"), &files, |p| p.to_string()).unwrap_err().to_string();
        assert!(error.contains("root/b.parquet") && error.contains("root/date=1/a.parquet"), "{error}");
        let plain = infer(&Path::from("root"), &paths(&["x/a.parquet", "b.parquet"]), |p| p.to_string()).unwrap();
        assert!(plain.fields.is_empty(), "folders without '=' are not partitions");
    }

    #[test]
    fn folders_are_escaped_and_read_back() {
        let names = vec!["k".to_string(), "n".to_string()];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("a/b=c%"), None, Some("plain")])),
            Arc::new(Int64Array::from(vec![1, 2, -3])),
        ];
        let folders = row_folders(&names, &columns).unwrap();
        assert_eq!(folders, ["k=a%2Fb%3Dc%25/n=1", "k=__HIVE_DEFAULT_PARTITION__/n=2", "k=plain/n=-3"]);
        assert!(folders.iter().all(|f| is_partition_folder(f)));
        assert!(!is_partition_folder("../x") && !is_partition_folder("_weir/k=1") && !is_partition_folder("k"));
        let file = Path::parse(format!("root/{}/part.parquet", folders[0])).unwrap();
        let read = infer(&Path::from("root"), &[file], |p| p.to_string()).unwrap();
        assert_eq!(read.values[0], [Some("a/b=c%".into()), Some("1".into())]);
    }
}
