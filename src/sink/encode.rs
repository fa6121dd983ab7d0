//! Row encodings of the Kafka and NATS sinks: JSON (default) or Avro, plain or in the
//! Confluent wire format with the schema registered at start.

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;

use super::{PayloadColumns, SinkError};
use crate::codec::avro_encode::{AvroEncodeError, AvroEncoder, Framing, writer_schema};
use crate::codec::json::EncodedRows as JsonRows;
use crate::spec::{AvroWire, SinkFormatSpec};

/// Encodes result rows for one sink: the payload columns of each row, in the sink's format.
#[derive(Debug)]
pub struct RowEncoder {
    format: RowFormat,
    payload: PayloadColumns,
}

/// A payload format.
#[derive(Debug)]
enum RowFormat {
    /// One JSON object per row.
    Json,
    /// One Avro datum per row.
    Avro(Box<AvroEncoder>),
}

/// Encoded rows, one message payload each.
pub enum EncodedRows {
    /// JSON objects in one buffer.
    Json(JsonRows),
    /// Avro datums, or why a row could not be encoded.
    Avro(Vec<Result<Vec<u8>, AvroEncodeError>>),
}

/// Why one row has no payload.
#[derive(Debug, thiserror::Error)]
pub enum RowError<'a> {
    /// The row holds a value JSON cannot represent.
    #[error("{0}")]
    Json(&'a str),
    /// The row cannot be written as an Avro datum.
    #[error(transparent)]
    Avro(&'a AvroEncodeError),
    /// There is no such row.
    #[error("row out of range")]
    OutOfRange,
}

/// Why an `.avsc` file cannot be used as an output schema.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaFileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path} is not JSON: {source}")]
    NotJson {
        /// The file.
        path: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The file is JSON but not an Avro schema.
    #[error("{path} is not an Avro schema: {source}")]
    NotAvro {
        /// The file.
        path: String,
        /// Why the schema does not parse.
        #[source]
        source: apache_avro::Error,
    },
}

impl EncodedRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            EncodedRows::Json(r) => r.len(),
            EncodedRows::Avro(r) => r.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload of row `i`, or why it could not be encoded.
    pub fn row(&self, i: usize) -> Result<&[u8], RowError<'_>> {
        match self {
            EncodedRows::Json(r) => r.row(i).map_err(RowError::Json),
            EncodedRows::Avro(r) => match r.get(i) {
                Some(Ok(bytes)) => Ok(bytes),
                Some(Err(e)) => Err(RowError::Avro(e)),
                None => Err(RowError::OutOfRange),
            },
        }
    }
}

impl RowEncoder {
    /// A JSON encoder of every column.
    pub fn json() -> Self {
        RowEncoder {
            format: RowFormat::Json,
            payload: PayloadColumns::all(),
        }
    }

    /// Encodes only the `payload` columns of each row; `columns` given to [`Self::build`]
    /// must then be the payload's schema.
    pub fn with_payload(mut self, payload: PayloadColumns) -> Self {
        self.payload = payload;
        self
    }

    /// Builds the encoder of `format` for payloads with `columns`, sent by output `output` to
    /// `topic` (Kafka topic, or NATS subject prefix). Avro in the Confluent framing registers
    /// the writer schema first: an unreachable registry fails the start, clearly.
    pub async fn build(
        format: &SinkFormatSpec,
        columns: &Schema,
        output: &str,
        topic: &str,
    ) -> Result<Self, SinkError> {
        let avro = match format {
            SinkFormatSpec::Json => return Ok(Self::json()),
            SinkFormatSpec::Avro(avro) => avro,
        };
        let encode_err = |e: &dyn std::error::Error| SinkError::Encode(e.to_string());
        let name = avro
            .name
            .clone()
            .unwrap_or_else(|| output.replace('-', "_"));
        let derived = writer_schema(columns, &name, &avro.namespace).map_err(|e| encode_err(&e))?;
        let user = match &avro.schema {
            Some(path) => Some(read_schema(path).map_err(|e| encode_err(&e))?),
            None => None,
        };
        let schema = user.clone().unwrap_or_else(|| derived.clone());
        let framing = match avro.wire {
            AvroWire::Plain => Framing::Plain,
            AvroWire::Confluent => {
                let registry = avro.registry.as_ref().ok_or_else(|| {
                    SinkError::Encode("`wire: confluent` needs a `registry`".to_string())
                })?;
                let full_name = match &user {
                    Some(user) => full_name(user),
                    None if avro.namespace.is_empty() => name.clone(),
                    None => format!("{}.{name}", avro.namespace),
                };
                let subject = crate::codec::registry_client::subject(
                    avro.subject_strategy,
                    topic,
                    &full_name,
                );
                let id = crate::codec::registry_client::register(registry, &subject, &schema)
                    .await
                    .map_err(|e| SinkError::Build {
                        kind: "avro",
                        message: format!("registering the output schema as {subject:?}: {e}"),
                    })?;
                Framing::Confluent(id)
            }
        };
        let encoder = match &user {
            Some(user) => AvroEncoder::resolving(&derived, user, framing),
            None => AvroEncoder::new(&derived, framing),
        };
        Ok(RowEncoder {
            format: RowFormat::Avro(Box::new(encoder.map_err(|e| encode_err(&e))?)),
            payload: PayloadColumns::all(),
        })
    }

    /// Encodes the payload of every row of `batch`.
    pub fn encode(&self, batch: &RecordBatch) -> Result<EncodedRows, SinkError> {
        let encode_err = |e: datafusion::arrow::error::ArrowError| SinkError::Encode(e.to_string());
        let batch = self.payload.apply(batch).map_err(encode_err)?;
        match &self.format {
            RowFormat::Json => crate::codec::json::encode_rows(&batch)
                .map(EncodedRows::Json)
                .map_err(encode_err),
            RowFormat::Avro(encoder) => encoder
                .encode_each(&batch)
                .map(EncodedRows::Avro)
                .map_err(|e| SinkError::Encode(e.to_string())),
        }
    }
}

/// Reads and parses an `.avsc` file (as JSON; Avro parsing happens in the encoder).
pub(crate) fn read_schema(path: &str) -> Result<serde_json::Value, SchemaFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SchemaFileError::Read {
        path: path.to_string(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| SchemaFileError::NotJson {
            path: path.to_string(),
            source,
        })?;
    apache_avro::Schema::parse(&json).map_err(|source| SchemaFileError::NotAvro {
        path: path.to_string(),
        source,
    })?;
    Ok(json)
}

/// `namespace.name` of a record schema (the name alone without a namespace).
fn full_name(schema: &serde_json::Value) -> String {
    let name = schema["name"].as_str().unwrap_or("record");
    if name.contains('.') {
        return name.to_string();
    }
    match schema["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}
