//! NATS sink: one JSON message per row (dead letters keep their original bytes and headers),
//! to a subject built from columns.
//!
//! Core NATS: a batch counts as delivered once the server has answered a flush (it has
//! processed every message before it). JetStream: once the stream acknowledged every message;
//! `Nats-Msg-Id` comes from the input identity so a redelivered input is dropped by the
//! stream's duplicate window instead of being stored twice.

pub mod spec;

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use async_nats::jetstream;
use bytes::Bytes;
use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::ack::{Ack, AckStatus, PendingReceipt};
use crate::batch::ErrorClass;
use crate::sink::{
    DeadLetterRecord, RowEncoder, RowOrigins, Sink, SinkError, SinkInput, column_as_strings,
};
use crate::spec::subject::SubjectTemplate;
use crate::spec::{NatsConnectionSpec, NatsSinkSpec};

/// Publish acks awaited at once per connection; past this, publishing waits (bounded memory).
const MAX_ACKS_IN_FLIGHT: usize = 8192;

/// How long JetStream may take to acknowledge one publish before it counts as failed (and the
/// batch is redelivered).
const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes rows to NATS or JetStream.
pub struct NatsSink {
    client: async_nats::Client,
    jetstream: Option<jetstream::Context>,
    subject: SubjectTemplate,
    headers: Vec<(HeaderName, String)>,
    encoder: RowEncoder,
    /// Confirmation tasks still running (flushes and publish acks).
    pending: tokio_util::task::TaskTracker,
}

impl NatsSink {
    /// Connects. Without its own `servers` the sink uses the NATS source's connection
    /// settings (a connection of its own, so publishing never queues behind acks).
    pub async fn connect(
        spec: &NatsSinkSpec,
        source: Option<&NatsConnectionSpec>,
        pipeline: &str,
        encoder: RowEncoder,
    ) -> Result<Self, SinkError> {
        let build = |message: String| SinkError::Build {
            kind: "nats",
            message,
        };
        let connection = spec.connection(source).ok_or_else(|| {
            build("`servers` is required when the source is not NATS".to_string())
        })?;
        let subject = SubjectTemplate::parse(&spec.subject).map_err(|e| build(e.to_string()))?;
        let headers = spec
            .headers
            .iter()
            .map(|(name, column)| {
                name.parse::<HeaderName>()
                    .map(|n| (n, column.clone()))
                    .map_err(|_| build(format!("invalid header name {name:?}")))
            })
            .collect::<Result<_, _>>()?;
        let client = crate::connect::nats::connect(&connection, &format!("streamgate-{pipeline}"))
            .await
            .map_err(|e| build(e.to_string()))?;
        let jetstream = spec.jetstream.then(|| {
            jetstream::ContextBuilder::new()
                .ack_timeout(PUBLISH_ACK_TIMEOUT)
                .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
                .backpressure_on_inflight(true)
                .build(client.clone())
        });
        Ok(NatsSink {
            client,
            jetstream,
            subject,
            headers,
            encoder,
            pending: tokio_util::task::TaskTracker::new(),
        })
    }

    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
        message_id: Option<&str>,
        acks: &mut Vec<jetstream::context::PublishAckFuture>,
    ) -> Result<(), Refused> {
        match &self.jetstream {
            Some(js) => {
                let mut publish = jetstream::message::PublishMessage::build()
                    .payload(payload)
                    .headers(headers);
                if let Some(id) = message_id.filter(|id| !id.is_empty()) {
                    publish = publish.message_id(id);
                }
                let ack = js.send_publish(subject, publish).await.map_err(|e| {
                    let too_large =
                        e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded;
                    Refused::new(too_large, &e)
                })?;
                acks.push(ack);
            }
            None => self
                .client
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| {
                    let too_large =
                        e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded;
                    Refused::new(too_large, &e)
                })?,
        }
        Ok(())
    }

    /// Resolves `receipt` once everything published so far is confirmed.
    fn confirm(&self, receipt: PendingReceipt, acks: Vec<jetstream::context::PublishAckFuture>) {
        let client = self.client.clone();
        let jetstream = self.jetstream.is_some();
        self.pending.spawn(async move {
            let ok = if jetstream {
                let mut ok = true;
                for ack in acks {
                    if let Err(e) = ack.await {
                        tracing::error!(error = %e, "jetstream publish was not acknowledged; the batch will be redelivered");
                        ok = false;
                    }
                }
                ok
            } else {
                match client.flush().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "nats flush failed; the batch will be redelivered");
                        false
                    }
                }
            };
            receipt.resolve(if ok {
                AckStatus::Delivered
            } else {
                AckStatus::Errored
            });
        });
    }

    async fn send_rows(
        &self,
        batch: RecordBatch,
        origins: Option<RowOrigins>,
        ack: &Ack,
    ) -> Result<crate::sink::Rejected, SinkError> {
        let rows = self.encoder.encode(&batch)?;
        let mut rejected = Vec::new();
        let subject_columns: Vec<(&str, StringArray)> = self
            .subject
            .columns()
            .map(|c| Ok((c, column_as_strings(&batch, c)?)))
            .collect::<Result<_, SinkError>>()?;
        let header_values: Vec<(&HeaderName, StringArray)> = self
            .headers
            .iter()
            .map(|(name, column)| Ok((name, column_as_strings(&batch, column)?)))
            .collect::<Result<_, SinkError>>()?;
        let ids = match (&self.jetstream, origins) {
            (Some(_), Some(origins)) => origins.row_ids(),
            _ => Vec::new(),
        };
        let receipt = ack.receipt();
        let mut acks = Vec::new();
        for i in 0..rows.len() {
            let payload = match rows.row(i) {
                Ok(p) => Bytes::copy_from_slice(p),
                Err(e) => {
                    rejected.push((i, ErrorClass::UnrepresentableValue, e.to_string()));
                    continue;
                }
            };
            let subject = self.subject.render(|column| {
                let (_, values) = subject_columns.iter().find(|(c, _)| *c == column)?;
                values.is_valid(i).then(|| values.value(i))
            });
            let mut headers = HeaderMap::new();
            for (name, values) in &header_values {
                if values.is_valid(i) {
                    headers.insert((*name).clone(), header_value(values.value(i)));
                }
            }
            match self
                .publish(
                    subject,
                    headers,
                    payload,
                    ids.get(i).map(String::as_str),
                    &mut acks,
                )
                .await
            {
                Ok(()) => {}
                // A row too large for any message is that row's failure (dead-lettered in a
                // bounded form), not a reason to stall the stream.
                Err(Refused {
                    too_large: true,
                    message,
                }) => rejected.push((i, ErrorClass::MessageTooLarge, message)),
                Err(refused) => return Err(refused.into()),
            }
        }
        self.confirm(receipt, acks);
        Ok(rejected)
    }

    /// Publishes dead letters, each bounded to the server's `max_payload` (see
    /// [`DeadLetterRecord::fit`]). One refused as too large even so is sent again as its
    /// context alone; one refused even then is returned as undeliverable, for the pipeline's
    /// `on_undeliverable_dead_letter` policy. Any other refusal fails the send (retried).
    ///
    /// On JetStream the stream's own `max_msg_size` may be below `max_payload`, and the stream
    /// refuses only in the publish ack: dead letters therefore wait for their acks here, so
    /// such a refusal is handled the same way instead of failing the batch on every retry.
    async fn send_dead_letters(
        &self,
        records: Vec<DeadLetterRecord>,
        ack: &Ack,
    ) -> Result<crate::sink::Rejected, SinkError> {
        let receipt = ack.receipt();
        let mut undeliverable = Vec::new();
        let subject = self.subject.render(|_| None);
        for (i, dl) in records.iter().enumerate() {
            let p = &dl.record.position;
            let id = format!("dead-letter/{}/{}/{}", p.topic, p.partition, p.offset);
            let mut refusal = None;
            for limit in [self.client.max_payload(), 0] {
                let letter = dl.fit(limit);
                let headers = letter_headers(&letter);
                let payload = Bytes::copy_from_slice(letter.payload);
                let mut letter_acks = Vec::new();
                let published = self
                    .publish(
                        subject.clone(),
                        headers,
                        payload,
                        Some(&id),
                        &mut letter_acks,
                    )
                    .await;
                let stored = match (published, letter_acks.pop()) {
                    (Ok(()), Some(ack)) => ack
                        .await
                        .map(drop)
                        .map_err(|e| Refused::new(stream_refused_as_too_large(&e), &e)),
                    (published, _) => published,
                };
                match stored {
                    Ok(()) => {
                        refusal = None;
                        break;
                    }
                    Err(refused) if refused.too_large => refusal = Some(refused.message),
                    Err(refused) => {
                        // Letters already stored stay (their ids make a retry a duplicate
                        // the stream drops); the batch is retried.
                        receipt.resolve(AckStatus::Errored);
                        return Err(refused.into());
                    }
                }
            }
            if let Some(message) = refusal {
                undeliverable.push((i, ErrorClass::MessageTooLarge, message));
            }
        }
        // JetStream letters are confirmed above; core NATS ones by the flush.
        self.confirm(receipt, Vec::new());
        Ok(undeliverable)
    }
}

/// Whether a JetStream publish ack refused the message as larger than the stream's
/// `max_msg_size` (JetStream error 10054).
fn stream_refused_as_too_large(error: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code() == jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
}

/// The NATS headers of a dead letter: the original headers kept (those whose names NATS
/// accepts), then the context.
fn letter_headers(letter: &crate::sink::dead_letter::Letter<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &letter.original_headers {
        // Headers from another system (Kafka) may not be valid NATS header names.
        if let Ok(name) = name.parse::<HeaderName>() {
            let value = value
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            headers.append(name, header_value(&value));
        }
    }
    for (name, value) in &letter.context {
        if let Ok(name) = name.parse::<HeaderName>() {
            headers.insert(name, header_value(value));
        }
    }
    headers
}

/// A publish the client or server refused.
struct Refused {
    /// The message exceeds the server's `max_payload`.
    too_large: bool,
    message: String,
}

impl Refused {
    fn new(too_large: bool, error: &dyn std::fmt::Display) -> Self {
        Refused {
            too_large,
            message: error.to_string(),
        }
    }
}

impl From<Refused> for SinkError {
    fn from(refused: Refused) -> Self {
        SinkError::Nats(refused.message)
    }
}

/// A header value with line breaks replaced (NATS headers are line-based).
fn header_value(value: &str) -> HeaderValue {
    let clean: String = value
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    HeaderValue::from(clean)
}

impl Sink for NatsSink {
    fn send<'a>(
        &'a self,
        input: SinkInput,
        ack: &'a Ack,
    ) -> BoxFuture<'a, Result<crate::sink::Rejected, SinkError>> {
        async move {
            match input {
                SinkInput::Rows { batch, origins } => self.send_rows(batch, origins, ack).await,
                SinkInput::DeadLetters(records) => self.send_dead_letters(records, ack).await,
            }
        }
        .boxed()
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), SinkError>> {
        async move {
            self.pending.close();
            let done = tokio::time::timeout(timeout, self.pending.wait()).await;
            self.pending.reopen();
            done.map_err(|_| SinkError::Nats("publish confirmations timed out".into()))
        }
        .boxed()
    }

    fn wants_origins(&self) -> bool {
        self.jetstream.is_some()
    }
}
