//! NATS source: core subjects (at most once, optionally in a queue group) or a JetStream
//! durable pull consumer (at least once).
//!
//! One task (`read.rs`) reads messages and groups them into micro-batches (`batch.max_rows`,
//! `batch.max_age`), registers each batch with the settler (`settle.rs`) and hands it to a
//! worker, waiting while the workers are full (backpressure: a pull consumer then stops
//! pulling; a core subscription buffers up to its capacity and then the server drops messages
//! for this slow consumer, which is what at-most-once means). The settler acks, terminates or
//! naks each JetStream message once its batch's ack resolves.

mod read;
mod settle;
pub mod spec;

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self};
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{BatchRouter, PauseSignal, Source, SourceHandle, SourceReport};
use crate::batch::{Position, RawRecord};
use crate::connect::nats::NatsConnectError;
use crate::spec::{JetStreamSourceSpec, NatsSourceSpec};
use crate::telemetry::PipelineMetrics;
use read::Reader;
use settle::{Failure, Pending, SettlePolicy, Settler};

/// Errors starting or running the NATS source.
#[derive(Debug, thiserror::Error)]
pub enum NatsSourceError {
    /// The server could not be reached or refused us.
    #[error(transparent)]
    Connect(#[from] NatsConnectError),
    /// Subscribing, or finding the stream or consumer, failed.
    #[error("nats: {0}")]
    Subscribe(String),
    /// A batch failed and the pipeline stopped without acknowledging it.
    #[error("{0}")]
    BatchFailed(String),
}

/// A message as read, with what is needed to settle it.
struct Incoming {
    record: RawRecord,
    pending: Pending,
}

/// A connected, not yet running, NATS source.
pub struct NatsSource {
    client: async_nats::Client,
    messages: BoxStream<'static, Incoming>,
    jetstream: Option<JetStreamSourceSpec>,
    max_rows: usize,
    max_age: Duration,
    drain_timeout: Duration,
    metrics: PipelineMetrics,
}

impl NatsSource {
    /// Connects and subscribes (core), or finds the stream and creates or binds the durable
    /// consumer (JetStream), so that configuration problems fail the start.
    pub async fn connect(
        spec: &NatsSourceSpec,
        metrics: PipelineMetrics,
        drain_timeout: Duration,
    ) -> Result<Self, NatsSourceError> {
        let client = crate::connect::nats::connect(
            &spec.connection(),
            &format!("streamgate-{}", metrics.name()),
        )
        .await?;
        let messages = match &spec.jetstream {
            Some(js) => jetstream_messages(&client, spec, js).await?,
            None => core_messages(&client, spec).await?,
        };
        Ok(NatsSource {
            client,
            messages,
            jetstream: spec.jetstream.clone(),
            max_rows: spec.batch.max_rows.max(1),
            max_age: spec.batch.max_age,
            drain_timeout,
            metrics,
        })
    }

    /// Reads until `shutdown` (or a batch failure), then waits up to the drain timeout for
    /// batches in flight and settles them.
    async fn run(
        self,
        router: BatchRouter,
        shutdown: CancellationToken,
        pause: PauseSignal,
    ) -> Result<SourceReport, NatsSourceError> {
        let NatsSource {
            client,
            messages,
            jetstream,
            max_rows,
            max_age,
            drain_timeout,
            metrics,
        } = self;
        let failure = Failure::default();
        let stop = shutdown.child_token();
        let closing = CancellationToken::new();
        let (events, events_rx) = mpsc::unbounded_channel();
        let settler = Settler::new(
            client.clone(),
            settle_policy(jetstream.as_ref()),
            metrics.clone(),
            failure.clone(),
            stop.clone(),
        );
        let settler = tokio::spawn(settler.run(events_rx, closing.clone(), drain_timeout));
        let mut reader = Reader::new(
            messages,
            pause,
            max_rows,
            max_age,
            jetstream.is_some(),
            metrics,
            events,
        );
        reader.read(&router, &stop).await;
        let ended = reader.finish(router);
        closing.cancel();
        let abandoned = settler.await.unwrap_or(0);
        drop(client);
        if let Some(reason) = failure.get() {
            return Err(NatsSourceError::BatchFailed(reason));
        }
        if ended && !shutdown.is_cancelled() {
            return Err(NatsSourceError::Subscribe(
                "the subscription ended (connection closed for good)".to_string(),
            ));
        }
        Ok(SourceReport {
            committed: Vec::new(),
            abandoned_batches: abandoned,
        })
    }
}

/// How messages are settled: the JetStream consumer's settings, or (core NATS, nothing to
/// acknowledge) fixed values.
fn settle_policy(jetstream: Option<&JetStreamSourceSpec>) -> SettlePolicy {
    match jetstream {
        Some(js) => SettlePolicy {
            ack_wait: js.ack_wait,
            nak_delay: js.nak_delay,
            max_deliver: js.max_deliver,
        },
        None => SettlePolicy {
            ack_wait: Duration::from_secs(30),
            nak_delay: Duration::from_secs(1),
            max_deliver: None,
        },
    }
}

impl Source for NatsSource {
    /// Runs on a tokio task until `shutdown` (or a batch failure), then waits up to the drain
    /// timeout for batches in flight and settles them.
    /// While `pause` holds `true` no message is read (JetStream keeps the rest on the server;
    /// core NATS drops what overflows the client's buffer, as it would for a slow consumer).
    fn spawn(
        self: Box<Self>,
        router: BatchRouter,
        shutdown: CancellationToken,
        pause: PauseSignal,
    ) -> SourceHandle {
        let task = tokio::spawn((*self).run(router, shutdown, pause));
        SourceHandle::new(async move {
            match task.await {
                Ok(result) => Ok(result?),
                Err(_) => {
                    Err(NatsSourceError::BatchFailed("source task panicked".to_string()).into())
                }
            }
        })
    }
}

/// Subscribes to every subject (in the queue group, if any) and merges the subscriptions.
async fn core_messages(
    client: &async_nats::Client,
    spec: &NatsSourceSpec,
) -> Result<BoxStream<'static, Incoming>, NatsSourceError> {
    let mut subscriptions = Vec::new();
    for subject in &spec.subjects {
        let sub = match &spec.queue_group {
            Some(group) => client.queue_subscribe(subject.clone(), group.clone()).await,
            None => client.subscribe(subject.clone()).await,
        }
        .map_err(|e| NatsSourceError::Subscribe(format!("subscribing to {subject:?}: {e}")))?;
        subscriptions.push(sub);
    }
    let mut sequence = 0i64;
    Ok(futures::stream::select_all(subscriptions)
        .map(move |m| {
            sequence += 1;
            Incoming {
                record: record(&m, sequence, None),
                pending: Pending {
                    reply: None,
                    delivered: 1,
                },
            }
        })
        .boxed())
}

/// Binds (or creates) the durable pull consumer and returns its message stream.
async fn jetstream_messages(
    client: &async_nats::Client,
    spec: &NatsSourceSpec,
    js: &JetStreamSourceSpec,
) -> Result<BoxStream<'static, Incoming>, NatsSourceError> {
    let context = jetstream::new(client.clone());
    let stream = context.get_stream(&js.stream).await.map_err(|e| {
        NatsSourceError::Subscribe(format!("JetStream stream {:?}: {e}", js.stream))
    })?;
    let config = pull::Config {
        durable_name: Some(js.durable.clone()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: js.ack_wait,
        max_deliver: js.max_deliver.map_or(-1, i64::from),
        max_ack_pending: i64::from(js.max_ack_pending),
        deliver_policy: DeliverPolicy::All,
        filter_subjects: spec.subjects.clone(),
        ..Default::default()
    };
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(&js.durable, config)
        .await
        .map_err(|e| {
            NatsSourceError::Subscribe(format!(
                "JetStream consumer {:?} on stream {:?}: {e}",
                js.durable, js.stream
            ))
        })?;
    let max_rows = spec.batch.max_rows.max(1);
    let messages = consumer
        .stream()
        .max_messages_per_batch(max_rows)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| NatsSourceError::Subscribe(format!("pulling from {:?}: {e}", js.durable)))?;
    let stream_name = js.stream.clone();
    Ok(messages
        .filter_map(move |m| {
            let stream_name = stream_name.clone();
            async move {
                match m {
                    Ok(m) => {
                        let (sequence, delivered, published_ms) = match m.info() {
                            Ok(info) => (
                                info.stream_sequence as i64,
                                info.delivered.max(1) as u64,
                                Some((info.published.unix_timestamp_nanos() / 1_000_000) as i64),
                            ),
                            Err(_) => (0, 1, None),
                        };
                        let record = record(&m.message, sequence, published_ms);
                        Some(Incoming {
                            record,
                            pending: Pending {
                                reply: m.message.reply.clone(),
                                delivered,
                            },
                        })
                    }
                    // Missed heartbeats and the like: the stream recovers by itself.
                    Err(e) => {
                        tracing::warn!(stream = %stream_name, error = %e, "JetStream pull failed; retrying");
                        None
                    }
                }
            }
        })
        .boxed())
}

/// A raw record from a NATS message: subject as topic, stream sequence (or a per-process
/// counter on core NATS) as offset.
fn record(m: &async_nats::Message, offset: i64, timestamp_ms: Option<i64>) -> RawRecord {
    let headers = m
        .headers
        .iter()
        .flat_map(|h| h.iter())
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), Some(v.as_str().as_bytes().to_vec())))
        })
        .collect();
    RawRecord {
        key: None,
        payload: m.payload.to_vec(),
        headers,
        timestamp_ms: timestamp_ms.or_else(now_ms),
        position: Position {
            topic: std::sync::Arc::from(m.subject.as_str()),
            partition: 0,
            offset,
        },
    }
}

fn now_ms() -> Option<i64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}
