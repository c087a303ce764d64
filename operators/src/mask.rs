//! `mask`: hide the values of sensitive columns (`columns = ["email", "phone_*"]`, names or
//! globs) before the data leaves a trusted zone.
//!
//! Two methods:
//!
//! - `method = "hmac"` (the default) replaces each value by the lowercase hex of its
//!   HMAC-SHA256 under a secret key: the same value always gives the same 64-character
//!   token for the same key (across rows, batches, files and runs), so masked columns still
//!   join, group and count distinct, but cannot be reversed or recomputed without the key.
//!   What is hashed is the UTF-8 text of the value: strings as they are (`Utf8`,
//!   `LargeUtf8`, `Utf8View`, and dictionaries of them), integers of every width as their
//!   decimal text (`42` hashes as `"42"`, so an integer column and a string column holding
//!   the same digits give the same tokens), booleans as `"true"` / `"false"`. Any other type
//!   is refused when the step is bound; cast it to a string first, or redact it.
//! - `method = "redact"` replaces each value, of any type, by `replacement` (default `"***"`).
//!
//! The key never appears in the job file (there is no field for it): `key_env` names the
//! environment variable that holds it, read once when the step is bound; the key is the
//! UTF-8 bytes of that variable's value, which must be set and non-empty. The key is never
//! printed: not in errors, and not in the bound step's `Debug` output.
//!
//! Nulls stay null. A masked column keeps its name, its position and its nullability, and
//! becomes `Utf8`; other columns pass through untouched.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray, StringBuilder};
use arrow::compute::take;
use arrow::datatypes::{
    DataType, Field, Int8Type, Int16Type, Int32Type, Int64Type, Schema, SchemaRef, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type,
};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{BoundStep, OpError, selector};

type HmacSha256 = Hmac<Sha256>;

/// The replacement `method = "redact"` uses when the spec gives none.
pub const DEFAULT_REPLACEMENT: &str = "***";

/// How a masked value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMethod {
    /// The lowercase hex HMAC-SHA256 of the value, under the key held in `key_env`.
    #[default]
    Hmac,
    /// The fixed text `replacement`.
    Redact,
}

impl MaskMethod {
    fn name(self) -> &'static str {
        match self {
            MaskMethod::Hmac => "hmac",
            MaskMethod::Redact => "redact",
        }
    }
}

/// `op = "mask"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskSpec {
    /// Column names or globs to mask.
    pub columns: Vec<String>,
    #[serde(default)]
    pub method: MaskMethod,
    /// `hmac` only (required there): the name of the environment variable holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// `redact` only: the text every non-null value becomes (default `"***"`).
    #[serde(default)]
    pub replacement: Option<String>,
}

impl MaskSpec {
    /// Binds the step to `input`, reading the key (for `hmac`) from the process environment.
    pub fn bind(&self, input: &SchemaRef) -> Result<Mask, OpError> {
        self.bind_with_env(input, |name| std::env::var(name))
    }

    /// Binds the step to `input`, reading the key (for `hmac`) through `lookup`, which
    /// answers like [`std::env::var`] (tests pass their own environment).
    pub fn bind_with_env(
        &self,
        input: &SchemaRef,
        lookup: impl Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Mask, OpError> {
        let masking = match self.method {
            MaskMethod::Hmac => {
                if self.replacement.is_some() {
                    return Err(OpError::InvalidSpec(
                        "replacement is only for method = \"redact\"; method = \"hmac\" replaces each value by its \
                         HMAC-SHA256"
                            .to_string(),
                    ));
                }
                let Some(key_env) = &self.key_env else {
                    return Err(OpError::InvalidSpec(
                        "method = \"hmac\" needs key_env, the name of the environment variable that holds the key \
                         (e.g. key_env = \"WEIR_MASK_KEY\"); the key itself never goes in the job file"
                            .to_string(),
                    ));
                };
                if key_env.is_empty() || key_env.contains(['=', '\0']) {
                    return Err(OpError::InvalidSpec(format!(
                        "key_env = {key_env:?} is not an environment variable name"
                    )));
                }
                None
            }
            MaskMethod::Redact => {
                if self.key_env.is_some() {
                    return Err(OpError::InvalidSpec(
                        "key_env is only for method = \"hmac\"; method = \"redact\" uses no key".to_string(),
                    ));
                }
                Some(Masking::Redact {
                    replacement: self.replacement.clone().unwrap_or_else(|| DEFAULT_REPLACEMENT.to_string()),
                })
            }
        };
        if self.columns.is_empty() {
            return Err(OpError::InvalidSpec("columns is empty: name at least one column to mask".to_string()));
        }
        let indices = selector::resolve(&self.columns, input)?;
        let masking = match masking {
            Some(redact) => redact,
            None => {
                for &index in &indices {
                    let field = input.field(index);
                    if !hashable(field.data_type()) {
                        return Err(OpError::InvalidSpec(format!(
                            "column '{}' of type {} cannot be masked with method = \"hmac\", which hashes strings, \
                             integers and booleans (and dictionaries of them); cast it to string first, or use \
                             method = \"redact\"",
                            field.name(),
                            field.data_type()
                        )));
                    }
                }
                // Checked above: key_env is set for hmac.
                let key_env = self.key_env.clone().unwrap_or_default();
                Masking::Hmac { mac: keyed_mac(&key_env, &lookup)?, key_env }
            }
        };
        let fields: Vec<Field> = input
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| {
                if indices.contains(&index) {
                    Field::new(field.name(), DataType::Utf8, field.is_nullable())
                } else {
                    field.as_ref().clone()
                }
            })
            .collect();
        Ok(Mask { indices, masking, output: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())) })
    }
}

/// Reads the key from the variable `key_env` and prepares the keyed HMAC state once.
fn keyed_mac(
    key_env: &str,
    lookup: &impl Fn(&str) -> Result<String, std::env::VarError>,
) -> Result<HmacSha256, OpError> {
    let problem = match lookup(key_env) {
        Ok(key) if !key.is_empty() => {
            return HmacSha256::new_from_slice(key.as_bytes())
                .map_err(|_| OpError::InvalidSpec(format!("the key in environment variable {key_env} is refused")));
        }
        Ok(_) => "is empty",
        Err(std::env::VarError::NotPresent) => "is not set",
        Err(std::env::VarError::NotUnicode(_)) => "is not valid UTF-8",
    };
    Err(OpError::InvalidSpec(format!(
        "environment variable {key_env} (key_env) {problem}; it must hold the HMAC key for method = \"hmac\""
    )))
}

/// True when `hmac` can hash values of this type.
fn hashable(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean => true,
        DataType::Dictionary(_, values) => hashable(values),
        other => other.is_integer(),
    }
}

/// What a bound mask does to each selected column.
enum Masking {
    /// The keyed HMAC state (key already absorbed), cloned for every value.
    Hmac {
        mac: HmacSha256,
        key_env: String,
    },
    Redact {
        replacement: String,
    },
}

/// A bound `mask` step. Its `Debug` output never shows the key.
pub struct Mask {
    /// The masked columns, in the order the spec selects them.
    indices: Vec<usize>,
    masking: Masking,
    output: SchemaRef,
}

impl fmt::Debug for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns: Vec<&str> = self.indices.iter().map(|&index| self.output.field(index).name().as_str()).collect();
        let mut out = f.debug_struct("Mask");
        out.field("columns", &columns);
        match &self.masking {
            Masking::Hmac { key_env, .. } => {
                out.field("method", &MaskMethod::Hmac.name()).field("key_env", key_env).field("key", &"<redacted>")
            }
            Masking::Redact { replacement } => {
                out.field("method", &MaskMethod::Redact.name()).field("replacement", replacement)
            }
        };
        out.finish()
    }
}

impl BoundStep for Mask {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mut columns = batch.columns().to_vec();
        for &index in &self.indices {
            let column = columns[index].as_ref();
            columns[index] = match &self.masking {
                Masking::Hmac { mac, .. } => hash_column(mac, self.output.field(index).name(), column)?,
                Masking::Redact { replacement } => redact_column(column, replacement),
            };
        }
        Ok(RecordBatch::try_new_with_options(
            self.output.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?)
    }
}

/// Every non-null value (logical nulls included, e.g. a dictionary's null values) becomes
/// `replacement`.
fn redact_column(column: &dyn Array, replacement: &str) -> ArrayRef {
    let nulls = column.logical_nulls();
    let valid = column.len() - nulls.as_ref().map_or(0, |nulls| nulls.null_count());
    let mut builder = StringBuilder::with_capacity(column.len(), valid * replacement.len());
    for row in 0..column.len() {
        if nulls.as_ref().is_some_and(|nulls| nulls.is_null(row)) {
            builder.append_null();
        } else {
            builder.append_value(replacement);
        }
    }
    Arc::new(builder.finish())
}

/// The HMAC of every value of a column, as a `Utf8` array of lowercase hex.
fn hash_column(mac: &HmacSha256, name: &str, column: &dyn Array) -> Result<ArrayRef, OpError> {
    let rows = column.len();
    let valid = rows - column.null_count();
    let mut out = HexHasher::new(mac, rows, valid);
    match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().iter().for_each(|v| out.append(v.map(str::as_bytes))),
        DataType::LargeUtf8 => column.as_string::<i64>().iter().for_each(|v| out.append(v.map(str::as_bytes))),
        DataType::Utf8View => column.as_string_view().iter().for_each(|v| out.append(v.map(str::as_bytes))),
        DataType::Boolean => column.as_boolean().iter().for_each(|v| {
            out.append(v.map(|b| if b { b"true".as_slice() } else { b"false".as_slice() }));
        }),
        DataType::Int8 => out.append_integers(column.as_primitive::<Int8Type>()),
        DataType::Int16 => out.append_integers(column.as_primitive::<Int16Type>()),
        DataType::Int32 => out.append_integers(column.as_primitive::<Int32Type>()),
        DataType::Int64 => out.append_integers(column.as_primitive::<Int64Type>()),
        DataType::UInt8 => out.append_integers(column.as_primitive::<UInt8Type>()),
        DataType::UInt16 => out.append_integers(column.as_primitive::<UInt16Type>()),
        DataType::UInt32 => out.append_integers(column.as_primitive::<UInt32Type>()),
        DataType::UInt64 => out.append_integers(column.as_primitive::<UInt64Type>()),
        DataType::Dictionary(_, _) => {
            let dictionary = column.as_any_dictionary();
            let values = dictionary.values();
            return Ok(if values.len() <= rows {
                // Each distinct value is hashed once, then spread over the rows.
                take(hash_column(mac, name, values.as_ref())?.as_ref(), dictionary.keys(), None)?
            } else {
                // A dictionary larger than the batch (shared across batches): hash the rows.
                hash_column(mac, name, take(values.as_ref(), dictionary.keys(), None)?.as_ref())?
            });
        }
        other => {
            return Err(OpError::InvalidSpec(format!(
                "column '{name}' of type {other} cannot be masked with method = \"hmac\""
            )));
        }
    }
    Ok(out.finish())
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Builds a `Utf8` array of hex HMACs, reusing one hex buffer and one text buffer for all rows.
struct HexHasher<'a> {
    mac: &'a HmacSha256,
    builder: StringBuilder,
    /// The hex digest of the current value.
    hex: String,
    /// The decimal text of the current integer.
    text: String,
}

impl<'a> HexHasher<'a> {
    fn new(mac: &'a HmacSha256, rows: usize, valid: usize) -> Self {
        Self {
            mac,
            builder: StringBuilder::with_capacity(rows, valid * 64),
            hex: String::with_capacity(64),
            text: String::with_capacity(20),
        }
    }

    fn append(&mut self, value: Option<&[u8]>) {
        let Some(bytes) = value else {
            self.builder.append_null();
            return;
        };
        let mut mac = self.mac.clone();
        mac.update(bytes);
        let digest = mac.finalize().into_bytes();
        self.hex.clear();
        for byte in digest {
            self.hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            self.hex.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
        }
        self.builder.append_value(&self.hex);
    }

    /// Hashes each integer as its decimal text.
    fn append_integers<T>(&mut self, array: &PrimitiveArray<T>)
    where
        T: ArrowPrimitiveType,
        T::Native: fmt::Display,
    {
        for value in array.iter() {
            match value {
                None => self.append(None),
                Some(value) => {
                    let mut text = std::mem::take(&mut self.text);
                    text.clear();
                    // Writing to a String cannot fail.
                    let _ = write!(text, "{value}");
                    self.append(Some(text.as_bytes()));
                    self.text = text;
                }
            }
        }
    }

    fn finish(mut self) -> ArrayRef {
        Arc::new(self.builder.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::env::VarError;

    use arrow::array::{
        BooleanArray, DictionaryArray, Float64Array, Int8Array, Int64Array, LargeStringArray, StringArray,
        StringViewArray, UInt64Array,
    };
    use arrow::datatypes::Int32Type;

    const JEFE_DIGEST: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    fn env(name: &'static str, value: &'static str) -> impl Fn(&str) -> Result<String, VarError> {
        move |asked| if asked == name { Ok(value.to_string()) } else { Err(VarError::NotPresent) }
    }

    fn hmac_spec(columns: &[&str], key_env: &str) -> MaskSpec {
        MaskSpec {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            method: MaskMethod::Hmac,
            key_env: Some(key_env.to_string()),
            replacement: None,
        }
    }

    fn redact_spec(columns: &[&str], replacement: Option<&str>) -> MaskSpec {
        MaskSpec {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            method: MaskMethod::Redact,
            key_env: None,
            replacement: replacement.map(str::to_string),
        }
    }

    fn batch_of(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter_with_nullable(columns.into_iter().map(|(name, array)| (name, array, true))).unwrap()
    }

    fn strings(array: &ArrayRef) -> Vec<Option<String>> {
        assert_eq!(array.data_type(), &DataType::Utf8);
        array.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()
    }

    /// Masks column 0 of `batch` with the key "Jefe" and returns it.
    fn hash_with_jefe(batch: RecordBatch) -> Vec<Option<String>> {
        let name = batch.schema().field(0).name().clone();
        let mask = hmac_spec(&[&name], "K").bind_with_env(&batch.schema(), env("K", "Jefe")).unwrap();
        strings(mask.apply(batch).unwrap().column(0))
    }

    fn bind_error(spec: &MaskSpec, batch: &RecordBatch, lookup: impl Fn(&str) -> Result<String, VarError>) -> String {
        let err = spec.bind_with_env(&batch.schema(), lookup).unwrap_err();
        assert!(err.is_user_error());
        err.to_string()
    }

    #[test]
    fn rfc_4231_test_case_2_through_the_operator() {
        let text: ArrayRef = Arc::new(StringArray::from(vec![Some("what do ya want for nothing?"), None]));
        let id: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let input = batch_of(vec![("id", id.clone()), ("text", text)]);
        let mask =
            hmac_spec(&["text"], "MASK_KEY_RFC").bind_with_env(&input.schema(), env("MASK_KEY_RFC", "Jefe")).unwrap();
        let out = mask.apply(input).unwrap();
        assert_eq!(out.schema().field(1).name(), "text");
        assert_eq!(out.schema().field(1).data_type(), &DataType::Utf8);
        assert!(out.schema().field(1).is_nullable());
        assert_eq!(strings(out.column(1)), vec![Some(JEFE_DIGEST.to_string()), None]);
        assert_eq!(out.column(0), &id, "unselected columns pass through");
    }

    #[test]
    fn the_same_value_and_key_give_the_same_token_and_another_key_does_not() {
        let input = batch_of(vec![("s", Arc::new(StringArray::from(vec!["a", "b", "a"])) as ArrayRef)]);
        let first = hash_with_jefe(input.clone());
        assert_eq!(first, hash_with_jefe(input.clone()));
        assert_eq!(first[0], first[2]);
        assert_ne!(first[0], first[1]);
        let other = hmac_spec(&["s"], "K").bind_with_env(&input.schema(), env("K", "another key")).unwrap();
        assert_ne!(strings(other.apply(input).unwrap().column(0))[0], first[0]);
    }

    #[test]
    fn integers_hash_as_their_decimal_text() {
        let ints = vec![Some(42), None, Some(-7), Some(i64::MIN), Some(0)];
        let text: Vec<Option<String>> = ints.iter().map(|v| v.map(|v: i64| v.to_string())).collect();
        let want = hash_with_jefe(batch_of(vec![("s", Arc::new(StringArray::from(text.clone())) as ArrayRef)]));
        assert_eq!(want[1], None);
        assert_eq!(hash_with_jefe(batch_of(vec![("n", Arc::new(Int64Array::from(ints)) as ArrayRef)])), want);

        let small: ArrayRef = Arc::new(Int8Array::from(vec![Some(42), None, Some(-7)]));
        assert_eq!(hash_with_jefe(batch_of(vec![("n", small)])), want[..3]);
        let unsigned: ArrayRef = Arc::new(UInt64Array::from(vec![u64::MAX]));
        let max_text: ArrayRef = Arc::new(StringArray::from(vec![u64::MAX.to_string()]));
        assert_eq!(hash_with_jefe(batch_of(vec![("n", unsigned)])), hash_with_jefe(batch_of(vec![("s", max_text)])));
    }

    #[test]
    fn booleans_hash_as_true_and_false() {
        let bools: ArrayRef = Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)]));
        let text: ArrayRef = Arc::new(StringArray::from(vec![Some("true"), None, Some("false")]));
        assert_eq!(hash_with_jefe(batch_of(vec![("b", bools)])), hash_with_jefe(batch_of(vec![("s", text)])));
    }

    #[test]
    fn large_view_and_dictionary_strings_hash_like_plain_strings() {
        let values = vec![Some("what do ya want for nothing?"), None, Some("x"), Some("what do ya want for nothing?")];
        let want = hash_with_jefe(batch_of(vec![("s", Arc::new(StringArray::from(values.clone())) as ArrayRef)]));
        assert_eq!(want[0].as_deref(), Some(JEFE_DIGEST));
        assert_eq!(want[1], None);

        let large: ArrayRef = Arc::new(LargeStringArray::from(values.clone()));
        assert_eq!(hash_with_jefe(batch_of(vec![("s", large)])), want);
        let view: ArrayRef = Arc::new(StringViewArray::from(values.clone()));
        assert_eq!(hash_with_jefe(batch_of(vec![("s", view)])), want);
        let dictionary: ArrayRef = Arc::new(values.iter().copied().collect::<DictionaryArray<Int32Type>>());
        assert_eq!(hash_with_jefe(batch_of(vec![("s", dictionary)])), want);

        // A dictionary bigger than the batch, with unused entries and a null value.
        let big_values: ArrayRef = Arc::new(StringArray::from(vec![
            Some("unused"),
            Some("x"),
            None,
            Some("what do ya want for nothing?"),
            Some("also unused"),
            Some("and this"),
        ]));
        let keys = arrow::array::Int32Array::from(vec![Some(3), None, Some(1), Some(2)]);
        let big: ArrayRef = Arc::new(DictionaryArray::new(keys, big_values));
        let mut want_big = want.clone();
        want_big[3] = None;
        assert_eq!(hash_with_jefe(batch_of(vec![("s", big)])), want_big);
    }

    #[test]
    fn globs_select_several_columns_and_the_others_pass_through() {
        let input = batch_of(vec![
            ("phone_home", Arc::new(StringArray::from(vec!["1"])) as ArrayRef),
            ("age", Arc::new(Int64Array::from(vec![30])) as ArrayRef),
            ("phone_work", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ]);
        let mask = hmac_spec(&["phone_*"], "K").bind_with_env(&input.schema(), env("K", "Jefe")).unwrap();
        let schema = mask.output_schema();
        let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(types, vec![&DataType::Utf8, &DataType::Int64, &DataType::Utf8]);
        let out = mask.apply(input).unwrap();
        assert_eq!(strings(out.column(0)), strings(out.column(2)), "1 and \"1\" give the same token");
    }

    #[test]
    fn redact_replaces_every_non_null_value_of_any_type() {
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.5), None, Some(f64::NAN)]));
        let dictionary: ArrayRef =
            Arc::new(vec![Some("a"), None, Some("b")].into_iter().collect::<DictionaryArray<Int32Type>>());
        let input = batch_of(vec![("f", floats), ("d", dictionary)]);
        let mask = redact_spec(&["f", "d"], None).bind_with_env(&input.schema(), env("K", "Jefe")).unwrap();
        let out = mask.apply(input.clone()).unwrap();
        let star = Some("***".to_string());
        assert_eq!(strings(out.column(0)), vec![star.clone(), None, star.clone()]);
        assert_eq!(strings(out.column(1)), vec![star.clone(), None, star]);

        let custom =
            redact_spec(&["f"], Some("[hidden]")).bind_with_env(&input.schema(), |_| Err(VarError::NotPresent));
        let out = custom.unwrap().apply(input).unwrap();
        assert_eq!(strings(out.column(0)), vec![Some("[hidden]".to_string()), None, Some("[hidden]".to_string())]);
        assert_eq!(
            out.schema().field(1).data_type(),
            &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        );
    }

    #[test]
    fn hmac_refuses_types_it_cannot_hash() {
        let input = batch_of(vec![("f", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef)]);
        let message = bind_error(&hmac_spec(&["f"], "K"), &input, env("K", "Jefe"));
        assert!(message.contains("'f'") && message.contains("Float64") && message.contains("redact"), "{message}");
    }

    #[test]
    fn key_env_is_required_for_hmac_and_refused_for_redact() {
        let input = batch_of(vec![("s", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)]);
        let mut spec = hmac_spec(&["s"], "K");
        spec.key_env = None;
        let message = bind_error(&spec, &input, env("K", "Jefe"));
        assert!(message.contains("key_env") && message.contains("hmac"), "{message}");

        let mut spec = redact_spec(&["s"], None);
        spec.key_env = Some("K".to_string());
        let message = bind_error(&spec, &input, env("K", "Jefe"));
        assert!(message.contains("key_env") && message.contains("redact"), "{message}");

        let mut spec = hmac_spec(&["s"], "K");
        spec.replacement = Some("x".to_string());
        let message = bind_error(&spec, &input, env("K", "Jefe"));
        assert!(message.contains("replacement") && message.contains("redact"), "{message}");
    }

    #[test]
    fn a_missing_or_empty_key_names_the_variable() {
        let input = batch_of(vec![("s", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)]);
        let spec = hmac_spec(&["s"], "MASK_KEY_MISSING");
        let message = bind_error(&spec, &input, env("OTHER", "Jefe"));
        assert!(message.contains("MASK_KEY_MISSING") && message.contains("not set"), "{message}");
        assert!(message.contains("must hold the HMAC key"), "{message}");
        let message = bind_error(&spec, &input, env("MASK_KEY_MISSING", ""));
        assert!(message.contains("MASK_KEY_MISSING") && message.contains("empty"), "{message}");
        let message = bind_error(&hmac_spec(&["s"], "A=B"), &input, env("OTHER", "Jefe"));
        assert!(message.contains("\"A=B\""), "{message}");
    }

    #[test]
    fn the_real_environment_is_read_by_bind() {
        let input = batch_of(vec![("s", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)]);
        let message =
            hmac_spec(&["s"], "WEIR_MASK_TEST_SURELY_UNSET_7f3a").bind(&input.schema()).unwrap_err().to_string();
        assert!(message.contains("WEIR_MASK_TEST_SURELY_UNSET_7f3a") && message.contains("not set"), "{message}");
    }

    #[test]
    fn unknown_columns_get_the_selector_error() {
        let input = batch_of(vec![("s", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)]);
        let message = bind_error(&hmac_spec(&["email"], "K"), &input, env("K", "Jefe"));
        assert!(message.contains("'email'") && message.contains("matches no column"), "{message}");
        let message = bind_error(&redact_spec(&[], None), &input, env("K", "Jefe"));
        assert!(message.contains("columns is empty"), "{message}");
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let input = batch_of(vec![("s", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)]);
        let mask = hmac_spec(&["s"], "K").bind_with_env(&input.schema(), env("K", "sup3r-s3cret-key")).unwrap();
        for text in [format!("{mask:?}"), format!("{mask:#?}")] {
            assert!(!text.contains("sup3r-s3cret-key"), "{text}");
            assert!(text.contains("<redacted>") && text.contains("\"K\"") && text.contains("\"s\""), "{text}");
        }
        let redact = redact_spec(&["s"], Some("#")).bind_with_env(&input.schema(), env("K", "x")).unwrap();
        assert!(format!("{redact:?}").contains("replacement: \"#\""));
    }

    #[test]
    fn the_spec_deserializes_and_refuses_unknown_fields() {
        let spec: crate::StepSpec =
            from_json(r#"{"op": "mask", "columns": ["email", "phone_*"], "key_env": "WEIR_MASK_KEY"}"#).unwrap();
        let crate::StepSpec::Mask(mask) = &spec else { panic!("{spec:?}") };
        assert_eq!(spec.op_name(), "mask");
        assert_eq!(mask.method, MaskMethod::Hmac);
        assert_eq!(mask.key_env.as_deref(), Some("WEIR_MASK_KEY"));
        let spec: crate::StepSpec = from_json(r#"{"op": "mask", "columns": ["a"], "method": "redact"}"#).unwrap();
        assert!(matches!(spec, crate::StepSpec::Mask(MaskSpec { method: MaskMethod::Redact, .. })));
        assert!(from_json(r#"{"op": "mask", "columns": ["a"], "key": "secret"}"#).is_err());
    }

    /// The step registry's serde shape, through JSON (weir-jobs reads the same shape from TOML).
    fn from_json(json: &str) -> Result<crate::StepSpec, serde_json::Error> {
        serde_json::from_str(json)
    }
}
