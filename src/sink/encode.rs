//! Row encodings of the Kafka and NATS sinks: JSON (default) or Avro, plain or in the
//! Confluent wire format with the schema registered at start.

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;

use super::SinkError;
use crate::codec::avro_encode::{AvroEncoder, Framing, writer_schema};
use crate::codec::json::EncodedRows as JsonRows;
use crate::spec::{AvroWire, SinkFormatSpec};

/// Encodes result rows for one sink.
#[derive(Debug)]
pub enum RowEncoder {
    /// One JSON object per row.
    Json,
    /// One Avro datum per row.
    Avro(AvroEncoder),
}

/// Encoded rows, one message payload each.
pub enum EncodedRows {
    /// JSON objects in one buffer.
    Json(JsonRows),
    /// Avro datums.
    Avro(Vec<Vec<u8>>),
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

    /// The payload of row `i` (empty when out of range).
    pub fn row(&self, i: usize) -> &[u8] {
        match self {
            EncodedRows::Json(r) => r.row(i),
            EncodedRows::Avro(r) => r.get(i).map(Vec::as_slice).unwrap_or_default(),
        }
    }
}

impl RowEncoder {
    /// Builds the encoder of `format` for rows with `columns`, sent by output `output` to
    /// `topic` (Kafka topic, or NATS subject prefix). Avro in the Confluent framing registers
    /// the writer schema first: an unreachable registry fails the start, clearly.
    pub async fn build(
        format: &SinkFormatSpec,
        columns: &Schema,
        output: &str,
        topic: &str,
    ) -> Result<Self, SinkError> {
        let avro = match format {
            SinkFormatSpec::Json => return Ok(RowEncoder::Json),
            SinkFormatSpec::Avro(avro) => avro,
        };
        let encode_err = |message: String| SinkError::Encode(message);
        let name = avro
            .name
            .clone()
            .unwrap_or_else(|| output.replace('-', "_"));
        let schema = writer_schema(columns, &name, &avro.namespace).map_err(encode_err)?;
        let framing = match avro.wire {
            AvroWire::Plain => Framing::Plain,
            AvroWire::Confluent => {
                let registry = avro.registry.as_ref().ok_or_else(|| {
                    encode_err("`wire: confluent` needs a `registry`".to_string())
                })?;
                let full_name = if avro.namespace.is_empty() {
                    name.clone()
                } else {
                    format!("{}.{name}", avro.namespace)
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
        Ok(RowEncoder::Avro(
            AvroEncoder::new(&schema, framing).map_err(encode_err)?,
        ))
    }

    /// Encodes every row of `batch`.
    pub fn encode(&self, batch: &RecordBatch) -> Result<EncodedRows, SinkError> {
        match self {
            RowEncoder::Json => crate::codec::json::encode_rows(batch)
                .map(EncodedRows::Json)
                .map_err(|e| SinkError::Encode(e.to_string())),
            RowEncoder::Avro(encoder) => encoder
                .encode_rows(batch)
                .map(EncodedRows::Avro)
                .map_err(SinkError::Encode),
        }
    }
}
