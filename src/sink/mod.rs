//! Sinks: where rows (and dead-letter records) go.
//!
//! Contract: [`Sink::send`] returns once the sink has taken responsibility for the input; every
//! fragment it accepted holds a [`crate::ack::PendingReceipt`] derived from the batch's ack and
//! resolves it when the write is confirmed (Kafka delivery report, flushed file). `Err` means
//! nothing was accepted. A sink that can apply backpressure does so by not returning.

pub(crate) mod dead_letter;
pub(crate) mod encode;
pub(crate) mod file;
pub mod kafka;
pub mod nats;
mod projection;
pub(crate) mod stdout;

use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;

pub use dead_letter::{DeadLetterRecord, ModelContext};
pub use encode::RowEncoder;
pub use projection::PayloadColumns;

use crate::ack::Ack;
use crate::batch::{ErrorClass, Position};
use crate::spec::{SinkSpec, SourceSpec};

/// What a sink is asked to write.
#[derive(Debug)]
pub enum SinkInput {
    /// Result rows, encoded by the sink.
    Rows {
        /// The rows.
        batch: RecordBatch,
        /// Where each row came from, for sinks that ask for it ([`Sink::wants_origins`]).
        origins: Option<RowOrigins>,
    },
    /// Failed records with their original bytes and error context.
    DeadLetters(Vec<DeadLetterRecord>),
}

impl SinkInput {
    /// Number of rows or records.
    pub fn len(&self) -> usize {
        match self {
            SinkInput::Rows { batch, .. } => batch.num_rows(),
            SinkInput::DeadLetters(d) => d.len(),
        }
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The source records behind the rows of a [`SinkInput::Rows`].
#[derive(Debug, Clone)]
pub struct RowOrigins {
    /// Positions of the batch's source records.
    pub records: Arc<[Position]>,
    /// For each row, the index of its record in `records`.
    pub record_of_row: Vec<u32>,
    /// The output the rows go to (part of their identity: two outputs may share a stream).
    pub output: Arc<str>,
}

impl RowOrigins {
    /// A stable identity for each row: `output/topic/partition/offset/ordinal`, the ordinal
    /// counting rows of the same record (SQL `UNNEST`). The same input yields the same ids
    /// on redelivery.
    pub fn row_ids(&self) -> Vec<String> {
        let mut ids = Vec::with_capacity(self.record_of_row.len());
        let mut previous = None;
        let mut ordinal = 0u32;
        for &record in &self.record_of_row {
            ordinal = if previous == Some(record) {
                ordinal + 1
            } else {
                0
            };
            previous = Some(record);
            let id = match self.records.get(record as usize) {
                Some(p) => format!(
                    "{}/{}/{}/{}/{ordinal}",
                    self.output, p.topic, p.partition, p.offset
                ),
                None => String::new(),
            };
            ids.push(id);
        }
        ids
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
    /// Publishing to NATS failed.
    #[error("nats publish failed: {0}")]
    Nats(String),
}

/// Rows a sink could not take: (row index in the input batch, error class, why). Permanent:
/// the caller dead-letters their records (stage `encode`); the other rows were taken. For
/// dead-letter input, the letters the sink refused for good even in bounded form.
pub type Rejected = Vec<(usize, ErrorClass, String)>;

/// A dead letter the sink refused for good, even as its context alone.
#[derive(Debug, Clone, Copy)]
pub struct UndeliverableLetter<'a> {
    /// Where the failed record came from.
    pub position: &'a crate::batch::Position,
    /// Stage the record failed at.
    pub stage: crate::batch::Stage,
    /// Error class of that failure.
    pub class: ErrorClass,
    /// Why the sink refused the letter.
    pub why: &'a str,
}

/// The pipeline's `on_undeliverable_dead_letter` policy for letters a sink learns it cannot
/// deliver only after `send` returned (a broker whose topic limit is below the producer's):
/// logs and counts the letter, and returns the status its batch takes (`Delivered` for
/// `drop`, `Rejected` for `fail`).
pub type UndeliverableHook =
    Arc<dyn for<'a> Fn(UndeliverableLetter<'a>) -> crate::ack::AckStatus + Send + Sync>;

/// A destination for rows and dead-letter records.
pub trait Sink: Send + Sync {
    /// Takes responsibility for `input` (except the rows it returns as rejected); receipts
    /// come from `ack`.
    fn send<'a>(
        &'a self,
        input: SinkInput,
        ack: &'a Ack,
    ) -> BoxFuture<'a, Result<Rejected, SinkError>>;

    /// Waits until everything accepted so far is confirmed (or the timeout passes).
    fn flush(&self, timeout: std::time::Duration) -> BoxFuture<'_, Result<(), SinkError>>;

    /// Whether rows should come with their [`RowOrigins`] (for message ids); computing them
    /// costs a little, so only sinks that use them ask.
    fn wants_origins(&self) -> bool {
        false
    }

    /// Sets the policy for dead letters refused after `send` returned. Sinks that learn of
    /// every refusal within `send` (returning it as [`Rejected`]) ignore it.
    fn on_late_undeliverable(&self, hook: UndeliverableHook) {
        let _ = hook;
    }
}

/// The `output` name [`build`] is given for a pipeline's dead-letter sink.
pub const DEAD_LETTER_OUTPUT: &str = "dead_letter";

/// Builds a sink from its spec. Kafka and NATS sinks without their own servers use the
/// source's connection. `output` names the output ([`DEAD_LETTER_OUTPUT`] for the dead-letter sink),
/// `columns` is the schema of the rows it receives and `payload` the columns of them it
/// writes (which give Avro's writer schema). NATS sinks connect and Avro sinks register their
/// schema here, so this is async.
pub async fn build(
    spec: &SinkSpec,
    source: &SourceSpec,
    pipeline: &str,
    output: &str,
    columns: &SchemaRef,
    payload: &PayloadColumns,
    transaction: Option<&Transactional<'_>>,
) -> Result<Arc<dyn Sink>, SinkError> {
    let source_kafka = match source {
        SourceSpec::Kafka(k) => Some(k),
        SourceSpec::Nats(_) => None,
    };
    let payload_schema = payload
        .schema(columns)
        .map_err(|e| SinkError::Encode(e.to_string()))?;
    let encoder = async |format, topic: &str| {
        RowEncoder::build(format, &payload_schema, output, topic)
            .await
            .map(|e| e.with_payload(payload.clone()))
    };
    Ok(match spec {
        SinkSpec::Kafka(k) => {
            let encoder = encoder(&k.format, &k.topic).await?;
            // A pipeline's outputs share a producer when configured alike; its dead-letter sink
            // keeps its own, so dead letters still flow while an output's topic is stuck and
            // its messages fill the shared queue. Under exactly-once, every message goes
            // through the one transactional producer.
            let group = if output == DEAD_LETTER_OUTPUT && transaction.is_none() {
                format!("{pipeline}/{output}")
            } else {
                pipeline.to_string()
            };
            let sink = kafka::KafkaSink::new(
                k,
                source_kafka,
                pipeline,
                &group,
                encoder,
                transaction.map(|t| &t.settings),
            )?;
            if let Some(t) = transaction {
                t.transaction
                    .attach(sink.transactional_producer())
                    .map_err(|e| SinkError::Build {
                        kind: "kafka",
                        message: e.to_string(),
                    })?;
            }
            Arc::new(sink)
        }
        SinkSpec::Stdout(_) => Arc::new(stdout::StdoutSink::new().with_payload(payload.clone())),
        SinkSpec::File(f) => Arc::new(file::FileSink::new(f)?.with_payload(payload.clone())),
        SinkSpec::Nats(n) => {
            let source_nats = match source {
                SourceSpec::Nats(n) => Some(n.connection()),
                SourceSpec::Kafka(_) => None,
            };
            let topic = crate::spec::subject::SubjectTemplate::parse(&n.subject)
                .map(|t| t.literal_prefix())
                .unwrap_or_default();
            let encoder = encoder(&n.format, &topic).await?;
            Arc::new(nats::NatsSink::connect(n, source_nats.as_ref(), pipeline, encoder).await?)
        }
    })
}

/// The transaction of an exactly-once pipeline and its producer's settings: Kafka sinks
/// produce through it (other sinks are refused by validation).
pub struct Transactional<'a> {
    /// The shared transaction.
    pub transaction: &'a crate::connect::transaction::KafkaTransaction,
    /// The transactional producer's settings.
    pub settings: kafka::TransactionalSettings,
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

/// The payload of each row as JSON, each followed by a newline, and the rows that could not be
/// encoded (the caller rejects them: stage `encode`).
pub(crate) fn json_lines(
    batch: &RecordBatch,
    payload: &PayloadColumns,
) -> Result<(Vec<u8>, Rejected), SinkError> {
    let encode_err = |e: datafusion::arrow::error::ArrowError| SinkError::Encode(e.to_string());
    let batch = payload.apply(batch).map_err(encode_err)?;
    let rows = crate::codec::json::encode_rows(&batch).map_err(encode_err)?;
    let mut out = Vec::with_capacity(rows.len() * 64);
    for i in 0..rows.len() {
        if let Ok(row) = rows.row(i) {
            out.extend_from_slice(row);
            out.push(b'\n');
        }
    }
    let rejected = rows
        .failed()
        .iter()
        .map(|(row, why)| (*row, ErrorClass::UnrepresentableValue, why.clone()))
        .collect();
    Ok((out, rejected))
}
