//! The fitted parameters of an output whose sink encrypts it.
//!
//! `fitted.json` holds values of the columns it was fitted on (means, minima, quantiles,
//! the most frequent value), so an encrypted output cannot keep it in the clear. Its JSON
//! is stored instead in `_weir/fitted.parquet`: a Parquet file of one row and one `Utf8`
//! column, `fitted_json`, encrypted as the part files are (`[sink.encryption]`: the same
//! footer key, key mode and footer setting), so any reader that can decrypt the output
//! (pyarrow's `CryptoFactory`, Weir's own `fitted = "…"`) can read it, and nothing else.
//! It is written to the run's staging folder before the commit is decided and moved into
//! place when the commit is published, like a part file: the decision (`commit.json`)
//! never holds the parameters.

use std::sync::Arc;

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

use crate::encryption::{Decryptor, SinkEncryption, SourceDecryption};
use crate::keys::KeySource;
use crate::parquet_sink::{Codec, PartOptions, PartWriter};
use crate::{ConnectorError, Location};

/// The only column of the file.
const COLUMN: &str = "fitted_json";

/// Writes `json` to `name` (relative to `output`), encrypted as `encryption` says.
pub async fn write(
    output: &Location,
    name: &str,
    json: &str,
    encryption: &Arc<SinkEncryption>,
) -> Result<(), ConnectorError> {
    let schema = Arc::new(Schema::new(vec![Field::new(COLUMN, DataType::Utf8, false)]));
    // Column keys name data columns; the parameters go under the footer key.
    let encryption = Arc::new(SinkEncryption { column_keys: Default::default(), ..encryption.as_ref().clone() });
    let options = PartOptions {
        codec: Codec::Zstd,
        level: None,
        row_group_rows: 1,
        encryption: Some(encryption),
        copy_columns: None,
    };
    let mut writer = PartWriter::create(output, name, "fitted", schema.clone(), &options)?;
    let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![json]))])
        .map_err(|e| ConnectorError::Invalid { uri: output.uri(), message: e.to_string() })?;
    writer.write(&batch, None).await?;
    writer.finish().await?;
    Ok(())
}

/// The JSON in the bytes of a `fitted.parquet` read from `uri`, decrypted with `keys`.
pub fn read(uri: &str, bytes: Bytes, keys: KeySource) -> Result<String, ConnectorError> {
    let invalid = |message: String| ConnectorError::Invalid { uri: uri.to_string(), message };
    let decryptor = Decryptor::new(&SourceDecryption::default(), keys).map_err(invalid)?;
    let options = ArrowReaderOptions::new().with_file_decryption_properties(decryptor.properties().clone());
    let unreadable = |e: parquet::errors::ParquetError| {
        invalid(format!(
            "the encrypted fitted parameters cannot be read ({e}); the keys of the output's encryption must be in the environment, as for reading it"
        ))
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options)
        .map_err(unreadable)?
        .build()
        .map_err(unreadable)?;
    for batch in reader {
        let batch = batch.map_err(|e| invalid(format!("the encrypted fitted parameters cannot be read: {e}")))?;
        let Some(column) = batch.column_by_name(COLUMN).and_then(|c| c.as_string_opt::<i32>().cloned()) else {
            return Err(invalid(format!("it has no Utf8 column '{COLUMN}'")));
        };
        if column.len() > 0 && column.is_valid(0) {
            return Ok(column.value(0).to_string());
        }
    }
    Err(invalid("it holds no fitted parameters".into()))
}
