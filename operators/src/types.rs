//! Type names as written in job specs (`float64`, `int32`, `string`, …) and their Arrow types.

use arrow::datatypes::{DataType, TimeUnit};

use crate::OpError;

const EXPECTED: &str = "bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, \
     float32, float64, string, large_string, date32, timestamp[s|ms|us|ns]";

/// Parses a type name. Aliases follow Spark/SQL habits: `double`, `float`, `long`, `int`,
/// `boolean`, `utf8`, `date`, `timestamp` (microseconds, no time zone).
pub fn parse_type(name: &str) -> Result<DataType, OpError> {
    let data_type = match name.trim().to_ascii_lowercase().as_str() {
        "bool" | "boolean" => DataType::Boolean,
        "int8" | "tinyint" => DataType::Int8,
        "int16" | "smallint" => DataType::Int16,
        "int32" | "int" | "integer" => DataType::Int32,
        "int64" | "long" | "bigint" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" | "float" | "real" => DataType::Float32,
        "float64" | "double" => DataType::Float64,
        "string" | "utf8" | "str" => DataType::Utf8,
        "large_string" | "large_utf8" => DataType::LargeUtf8,
        "date32" | "date" => DataType::Date32,
        "timestamp" | "timestamp[us]" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamp[s]" => DataType::Timestamp(TimeUnit::Second, None),
        "timestamp[ms]" => DataType::Timestamp(TimeUnit::Millisecond, None),
        "timestamp[ns]" => DataType::Timestamp(TimeUnit::Nanosecond, None),
        _ => {
            return Err(OpError::UnknownType { name: name.to_string(), expected: EXPECTED });
        }
    };
    Ok(data_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases() {
        assert_eq!(parse_type("float64").unwrap(), DataType::Float64);
        assert_eq!(parse_type("DOUBLE").unwrap(), DataType::Float64);
        assert_eq!(parse_type("long").unwrap(), DataType::Int64);
        assert_eq!(parse_type("string").unwrap(), DataType::Utf8);
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let message = parse_type("decimal").unwrap_err().to_string();
        assert!(message.contains("'decimal'") && message.contains("float64"), "{message}");
    }
}
