//! Sinks: where rows (and dead-letter records) go.
//!
//! Contract: [`Sink::send`] returns once the sink has taken responsibility for the input; every
//! fragment it accepted holds a [`crate::ack::PendingReceipt`] derived from the batch's ack and
//! resolves it when the write is confirmed (Kafka delivery report, flushed file). `Err` means
//! nothing was accepted. A sink that can apply backpressure does so by not returning.

pub mod dead_letter;
pub mod file;
pub mod kafka;
pub mod stdout;

use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;

pub use dead_letter::{DeadLetterRecord, ModelContext};

use crate::ack::Ack;
use crate::spec::{KafkaSourceSpec, SinkSpec};

/// What a sink is asked to write.
#[derive(Debug)]
pub enum SinkInput {
    /// Result rows, encoded by the sink.
    Rows(RecordBatch),
    /// Failed records with their original bytes and error context.
    DeadLetters(Vec<DeadLetterRecord>),
}

impl SinkInput {
    /// Number of rows or records.
    pub fn len(&self) -> usize {
        match self {
            SinkInput::Rows(b) => b.num_rows(),
            SinkInput::DeadLetters(d) => d.len(),
        }
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Errors of sinks.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink could not be created.
    #[error("cannot create {kind} sink: {message}")]
    Build {
        /// Sink type.
        kind: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Rows could not be encoded.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// Writing failed.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// The Kafka producer rejected a message.
    #[error("kafka produce failed: {0}")]
    Kafka(String),
}

/// A destination for rows and dead-letter records.
pub trait Sink: Send + Sync {
    /// Takes responsibility for `input`; receipts come from `ack`.
    fn send<'a>(&'a self, input: SinkInput, ack: &'a Ack) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Waits until everything accepted so far is confirmed (or the timeout passes).
    fn flush(&self, timeout: std::time::Duration) -> BoxFuture<'_, Result<(), SinkError>>;
}

/// Builds a sink from its spec. Kafka sinks without their own `bootstrap_servers` use the
/// Kafka source's connection.
pub fn build(
    spec: &SinkSpec,
    source_kafka: Option<&KafkaSourceSpec>,
    pipeline: &str,
) -> Result<Arc<dyn Sink>, SinkError> {
    Ok(match spec {
        SinkSpec::Kafka(k) => Arc::new(kafka::KafkaSink::new(k, source_kafka, pipeline)?),
        SinkSpec::Stdout(_) => Arc::new(stdout::StdoutSink::new()),
        SinkSpec::File(f) => Arc::new(file::FileSink::new(f)?),
    })
}

/// The values of `column` as strings (`None` for nulls), for keys and headers.
pub(crate) fn column_as_strings(
    batch: &RecordBatch,
    column: &str,
) -> Result<StringArray, SinkError> {
    let array = batch
        .column_by_name(column)
        .ok_or_else(|| SinkError::Encode(format!("column `{column}` is missing")))?;
    let utf8 = cast(array, &DataType::Utf8).map_err(|e| SinkError::Encode(e.to_string()))?;
    utf8.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| SinkError::Encode(format!("column `{column}` is not castable to string")))
}

/// Appends each encoded row followed by a newline.
pub(crate) fn json_lines(batch: &RecordBatch) -> Result<Vec<u8>, SinkError> {
    let rows =
        crate::codec::json::encode_rows(batch).map_err(|e| SinkError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(rows.len() * 64);
    for i in 0..rows.len() {
        out.extend_from_slice(rows.row(i));
        out.push(b'\n');
    }
    Ok(out)
}
