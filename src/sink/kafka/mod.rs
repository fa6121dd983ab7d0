//! Kafka sink: one message per row (JSON), or the original bytes for dead letters, produced
//! with an idempotent producer. Receipts ride along as the delivery opaque and resolve when
//! the delivery report arrives (served in bursts, see `delivery`), so a row counts as
//! delivered only once the broker acknowledged it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use datafusion::arrow::array::Array;
use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, NoCustomPartitioner, Producer, ProducerContext};

mod delivery;
mod letters;
mod produce;
pub mod spec;
mod transactional;

pub use transactional::TransactionalSettings;

use crate::ack::{Ack, AckStatus, PendingReceipt};
use crate::batch::ErrorClass;
use crate::sink::{RowEncoder, Sink, SinkError, SinkInput, column_as_strings};
use crate::spec::{KafkaSinkSpec, KafkaSourceSpec};
use delivery::PacedProducer;
use produce::{NativeHeaders, TopicHandle};

/// How long to wait before retrying a send when librdkafka's local queue is full: the queue
/// drains at broker speed, so a short pause is all that is needed; this is the backpressure
/// path, not a synchronisation.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);

/// Resolves receipts from the delivery reports rust-rdkafka serves itself (while flushing);
/// the others are served by `delivery`'s thread the same way.
pub struct DeliveryContext;

impl ClientContext for DeliveryContext {}

/// A message's receipt rides as its opaque without a box of its own: librdkafka hands each
/// opaque back exactly once (in the delivery report, or with a refused send).
impl rdkafka::util::IntoOpaque for PendingReceipt {
    fn into_ptr(self) -> *mut std::ffi::c_void {
        self.into_raw()
    }

    unsafe fn from_ptr(ptr: *mut std::ffi::c_void) -> Self {
        // SAFETY: `ptr` comes from `into_ptr` and librdkafka returns it once.
        unsafe { PendingReceipt::from_raw(ptr) }
    }
}

impl ProducerContext<NoCustomPartitioner> for DeliveryContext {
    type DeliveryOpaque = PendingReceipt;

    fn delivery(&self, result: &DeliveryResult<'_>, receipt: Self::DeliveryOpaque) {
        match result {
            Ok(_) => settle(receipt, None),
            Err((e, message)) => {
                let code = e.rdkafka_error_code();
                settle(receipt, Some((message.topic(), e, code)))
            }
        }
    }
}

/// Resolves a message's receipt from its delivery report: delivered, or errored (and logged)
/// with the topic and librdkafka's error; a refusal as too large says so (a dead letter is
/// then sent again in its smallest form). Both ways of serving reports end here.
fn settle(
    receipt: PendingReceipt,
    failure: Option<(&str, &dyn std::fmt::Display, Option<RDKafkaErrorCode>)>,
) {
    match failure {
        None => receipt.delivered(),
        Some((topic, error, code)) => {
            tracing::error!(%topic, %error, "kafka delivery failed");
            if code == Some(RDKafkaErrorCode::MessageSizeTooLarge) {
                receipt.refused_too_large();
            } else {
                receipt.resolve(AckStatus::Errored);
            }
        }
    }
}

type SharedProducer = Arc<PacedProducer>;

/// Producers of the sinks alive in this process, by sharing group and whole configuration. A
/// pipeline's outputs usually configure the same producer and then share one: one connection,
/// broker thread and delivery-report thread, and produce requests that carry every output's
/// messages, instead of one set per sink. Weak, so a producer goes away with its last sink.
static PRODUCERS: LazyLock<Mutex<HashMap<Vec<u8>, WeakProducer>>> = LazyLock::new(Default::default);

type WeakProducer = Weak<PacedProducer>;

/// Why a producer cannot be created.
#[derive(Debug, thiserror::Error)]
enum ProducerError {
    /// librdkafka refused the configuration.
    #[error(transparent)]
    Create(#[from] rdkafka::error::KafkaError),
    /// The delivery-report thread cannot be started.
    #[error("cannot start the delivery-report thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The live producer of `group` configured exactly like `config`, or a new one.
fn shared_producer(group: &str, config: &ClientConfig) -> Result<SharedProducer, ProducerError> {
    let key = producer_key(group, config);
    let mut producers = PRODUCERS.lock().unwrap_or_else(|p| p.into_inner());
    producers.retain(|_, p| p.strong_count() > 0);
    if let Some(producer) = producers.get(&key).and_then(Weak::upgrade) {
        return Ok(producer);
    }
    let producer = config.create_with_context(DeliveryContext)?;
    let producer: SharedProducer =
        Arc::new(PacedProducer::start(producer).map_err(ProducerError::Thread)?);
    producers.insert(key, Arc::downgrade(&producer));
    Ok(producer)
}

/// A digest of the group and every setting's raw value. `config_map` blanks passwords, so it
/// cannot tell two credentials apart; hashing the raw values can, without keeping them.
fn producer_key(group: &str, config: &ClientConfig) -> Vec<u8> {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(group.as_bytes());
    for name in config.config_map().keys() {
        digest.update(b"\0");
        digest.update(name.as_bytes());
        digest.update(b"=");
        digest.update(config.get(name).unwrap_or_default().as_bytes());
    }
    digest.finish().as_ref().to_vec()
}

/// Where a sink's messages go: a topic of a (shared) producer. Shared with the tasks that
/// answer dead letters refused late (see `letters`).
struct Destination {
    /// Declared before the producer: a topic handle must go before its client.
    topic: TopicHandle,
    producer: SharedProducer,
}

impl Destination {
    /// Enqueues one message, waiting while librdkafka's queue is full. A refusal comes back
    /// with librdkafka's code and the receipt (which resolves as errored if dropped).
    async fn try_produce(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        mut headers: Option<NativeHeaders>,
        mut receipt: PendingReceipt,
    ) -> Result<(), (RDKafkaErrorCode, PendingReceipt)> {
        loop {
            match self.topic.produce(key, payload, &mut headers, receipt) {
                Ok(()) => return Ok(()),
                Err((RDKafkaErrorCode::QueueFull, back)) => {
                    receipt = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err(refused) => return Err(refused),
            }
        }
    }
}

/// Produces rows to one topic.
pub struct KafkaSink {
    destination: Arc<Destination>,
    /// The pipeline's policy for dead letters the broker refuses after `send` returned.
    late_undeliverable: std::sync::OnceLock<crate::sink::UndeliverableHook>,
    key: Option<String>,
    headers: Vec<(String, String)>,
    encoder: RowEncoder,
    /// The producer's `message.max.bytes`: librdkafka refuses a bigger message at once.
    max_message_bytes: usize,
}

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

impl KafkaSink {
    /// The sink's producer, for the pipeline's transaction (when it is transactional).
    pub fn transactional_producer(
        &self,
    ) -> Arc<dyn crate::connect::transaction::TransactionalProducer> {
        self.destination.producer.clone()
    }

    /// Creates the sink. Without `bootstrap_servers` the source's connection is used. Sinks
    /// of the same `producer_group` whose settings are equal share one producer (see
    /// `sink::build` for the groups).
    pub fn new(
        spec: &KafkaSinkSpec,
        source: Option<&KafkaSourceSpec>,
        pipeline: &str,
        producer_group: &str,
        encoder: RowEncoder,
        transactional: Option<&TransactionalSettings>,
    ) -> Result<Self, SinkError> {
        let (servers, security) = match (&spec.bootstrap_servers, source) {
            (Some(servers), _) => (servers.as_str(), spec.security.as_ref()),
            (None, Some(src)) => (
                src.bootstrap_servers.as_str(),
                spec.security.as_ref().or(src.security.as_ref()),
            ),
            (None, None) => {
                return Err(SinkError::Build {
                    kind: "kafka",
                    message: "bootstrap_servers is required when the source is not Kafka".into(),
                });
            }
        };
        let client_id = format!("streamgate-{pipeline}");
        let mut config = crate::connect::kafka::client_config(
            servers,
            security,
            &[
                ("client.id", &client_id),
                // Small lingering batches many rows per request at high rates while adding at
                // most 5 ms of latency at low rates.
                ("linger.ms", "5"),
                ("compression.type", "none"),
            ],
            &spec.properties,
            // Idempotence gives ordered, duplicate-free retries per partition (acks=all).
            &[("enable.idempotence", "true")],
        );
        if let Some(settings) = transactional {
            settings.apply(&mut config);
        }
        let producer = shared_producer(producer_group, &config).map_err(|e| SinkError::Build {
            kind: "kafka",
            message: e.to_string(),
        })?;
        let topic =
            TopicHandle::new(producer.producer(), &spec.topic).map_err(|e| SinkError::Build {
                kind: "kafka",
                message: e.to_string(),
            })?;
        let max_message_bytes = config
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        Ok(KafkaSink {
            max_message_bytes,
            destination: Arc::new(Destination { topic, producer }),
            late_undeliverable: std::sync::OnceLock::new(),
            key: spec.key.clone(),
            headers: spec
                .headers
                .iter()
                .map(|(h, c)| (h.clone(), c.clone()))
                .collect(),
            encoder,
        })
    }

    async fn send_rows(
        &self,
        batch: datafusion::arrow::record_batch::RecordBatch,
        ack: &Ack,
    ) -> Result<crate::sink::Rejected, SinkError> {
        let rows = self.encoder.encode(&batch)?;
        let mut rejected = Vec::new();
        let keys = match &self.key {
            Some(column) => Some(column_as_strings(&batch, column)?),
            None => None,
        };
        let header_values = self
            .headers
            .iter()
            .map(|(name, column)| Ok((name.as_str(), column_as_strings(&batch, column)?)))
            .collect::<Result<Vec<_>, SinkError>>()?;
        for i in 0..rows.len() {
            let payload = match rows.row(i) {
                Ok(p) => p,
                Err(e) => {
                    rejected.push((i, ErrorClass::UnrepresentableValue, e.to_string()));
                    continue;
                }
            };
            let key = keys
                .as_ref()
                .and_then(|k| k.is_valid(i).then(|| k.value(i).as_bytes()));
            let headers = (!header_values.is_empty()).then(|| {
                let mut headers = NativeHeaders::with_capacity(header_values.len());
                for (name, values) in &header_values {
                    headers.add(name, values.is_valid(i).then(|| values.value(i).as_bytes()));
                }
                headers
            });
            match (self.destination)
                .try_produce(key, payload, headers, ack.receipt())
                .await
            {
                Ok(()) => {}
                // A row too large for any message is that row's failure (dead-lettered in a
                // bounded form), not a reason to stall the partition.
                Err((code @ RDKafkaErrorCode::MessageSizeTooLarge, receipt)) => {
                    receipt.delivered();
                    let why = KafkaError::MessageProduction(code).to_string();
                    rejected.push((i, ErrorClass::MessageTooLarge, why));
                }
                Err((code, _refused_receipt_resolves_as_errored)) => {
                    return Err(SinkError::Kafka(
                        KafkaError::MessageProduction(code).to_string(),
                    ));
                }
            }
        }
        Ok(rejected)
    }
}

impl Sink for KafkaSink {
    fn send<'a>(
        &'a self,
        input: SinkInput,
        ack: &'a Ack,
    ) -> BoxFuture<'a, Result<crate::sink::Rejected, SinkError>> {
        async move {
            match input {
                SinkInput::Rows { batch, .. } => self.send_rows(batch, ack).await,
                SinkInput::DeadLetters(records) => {
                    letters::send(
                        &self.destination,
                        self.max_message_bytes,
                        self.late_undeliverable.get(),
                        records,
                        ack,
                    )
                    .await
                }
            }
        }
        .boxed()
    }

    fn on_late_undeliverable(&self, hook: crate::sink::UndeliverableHook) {
        let _ = self.late_undeliverable.set(hook);
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), SinkError>> {
        async move {
            let producer = self.destination.producer.clone();
            tokio::task::spawn_blocking(move || producer.producer().flush(timeout))
                .await
                .map_err(|e| SinkError::Kafka(e.to_string()))?
                .map_err(|e| SinkError::Kafka(e.to_string()))
        }
        .boxed()
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // Deliver what is queued; anything left resolves as errored (and is redelivered).
        let _ = self
            .destination
            .producer
            .producer()
            .flush(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SinkFormatSpec;
    use datafusion::arrow::datatypes::Schema;

    /// Keeps the final status of every ack it receives.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, AckStatus)>>);
    impl crate::ack::AckReceiver for Recorder {
        fn resolved(&self, token: u64, status: AckStatus) {
            self.0.lock().unwrap().push((token, status));
        }
    }

    impl Recorder {
        /// The only ack received, once it arrives (delivery reports come on another thread).
        async fn wait_for_one(&self) -> (u64, AckStatus) {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                {
                    let got = self.0.lock().unwrap();
                    if !got.is_empty() {
                        assert_eq!(got.len(), 1, "{got:?}");
                        return got[0];
                    }
                }
                assert!(std::time::Instant::now() < deadline, "no delivery report");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn sink(topic: &str, properties: &[(&str, &str)], group: &str) -> KafkaSink {
        let spec = KafkaSinkSpec {
            bootstrap_servers: Some("127.0.0.1:1".to_string()),
            topic: topic.to_string(),
            key: None,
            headers: Default::default(),
            security: None,
            format: SinkFormatSpec::default(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let encoder = RowEncoder::build(&spec.format, &Schema::empty(), "out", topic)
            .await
            .unwrap();
        // No broker is needed: librdkafka connects on the first message.
        KafkaSink::new(&spec, None, "p", group, encoder, None).unwrap()
    }

    /// Rows reach the topic with their key and configured headers (a null column value is a
    /// header without value), and the batch's ack resolves once the broker has them all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_arrive_with_key_and_headers_and_resolve_the_ack() {
        use datafusion::arrow::array::{Float64Array, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field};
        use datafusion::arrow::record_batch::RecordBatch;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::Headers;

        let broker = crate::testing::EmbeddedBroker::start(&[("out", 1)]).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("card_id", DataType::Utf8, true),
            Field::new("level", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("c1"), Some("c2"), None])),
                Arc::new(StringArray::from(vec![Some("high"), None, Some("low")])),
                Arc::new(Float64Array::from(vec![1.5, 2.0, 3.25])),
            ],
        )
        .unwrap();
        let spec = KafkaSinkSpec {
            bootstrap_servers: Some(broker.bootstrap_servers().to_string()),
            topic: "out".to_string(),
            key: Some("card_id".to_string()),
            headers: [("risk-level".to_string(), "level".to_string())].into(),
            security: None,
            format: SinkFormatSpec::default(),
            properties: Default::default(),
        };
        let encoder = RowEncoder::build(&spec.format, &schema, "out", "out")
            .await
            .unwrap();
        let sink = KafkaSink::new(&spec, None, "p", "headers-test", encoder, None).unwrap();
        let recorder = Arc::new(Recorder::default());
        let ack = Ack::new(9, recorder.clone());
        let input = SinkInput::Rows {
            batch,
            origins: None,
        };
        assert!(sink.send(input, &ack).await.unwrap().is_empty());
        drop(ack);
        sink.flush(Duration::from_secs(10)).await.unwrap();
        // The delivery reports resolve on the producer's own thread, right after the flush.
        assert_eq!(recorder.wait_for_one().await, (9, AckStatus::Delivered));

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .set("group.id", "headers-test-reader")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset("out", 0, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.len() < 3 && std::time::Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.unwrap();
            let headers: Vec<(String, Option<Vec<u8>>)> = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            let payload: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap()).unwrap();
            got.push((
                message.key().map(<[u8]>::to_vec),
                payload["amount"].clone(),
                headers,
            ));
        }
        let header =
            |v: Option<&str>| vec![("risk-level".to_string(), v.map(|v| v.as_bytes().to_vec()))];
        assert_eq!(
            got,
            vec![
                (
                    Some(b"c1".to_vec()),
                    serde_json::json!(1.5),
                    header(Some("high"))
                ),
                (Some(b"c2".to_vec()), serde_json::json!(2.0), header(None)),
                (None, serde_json::json!(3.25), header(Some("low"))),
            ]
        );
    }

    /// A message the broker never acknowledges (here: no broker, and a short delivery timeout)
    /// resolves its batch's ack as errored, so the source does not commit it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_undelivered_message_errors_the_ack() {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::{DataType, Field};
        use datafusion::arrow::record_batch::RecordBatch;

        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])
                .unwrap();
        let spec = KafkaSinkSpec {
            bootstrap_servers: Some("127.0.0.1:1".to_string()),
            topic: "nowhere".to_string(),
            key: None,
            headers: Default::default(),
            security: None,
            format: SinkFormatSpec::default(),
            properties: [("message.timeout.ms".to_string(), "50".to_string())].into(),
        };
        let encoder = RowEncoder::build(&spec.format, &schema, "out", "nowhere")
            .await
            .unwrap();
        let sink = KafkaSink::new(&spec, None, "p", "undelivered-test", encoder, None).unwrap();
        let recorder = Arc::new(Recorder::default());
        let ack = Ack::new(4, recorder.clone());
        let input = SinkInput::Rows {
            batch,
            origins: None,
        };
        assert!(sink.send(input, &ack).await.unwrap().is_empty());
        drop(ack);
        assert_eq!(recorder.wait_for_one().await, (4, AckStatus::Errored));
    }

    #[tokio::test]
    async fn sinks_configured_alike_share_one_producer() {
        let scored = sink("scored", &[], "share-a").await;
        let alerts = sink("alerts", &[], "share-a").await;
        assert!(Arc::ptr_eq(
            &scored.destination.producer,
            &alerts.destination.producer
        ));
        // A different setting, or another pipeline (its own client.id), gets its own.
        let lingering = sink("alerts", &[("linger.ms", "50")], "share-a").await;
        assert!(!Arc::ptr_eq(
            &scored.destination.producer,
            &lingering.destination.producer
        ));
        let other = sink("scored", &[], "share-b").await;
        assert!(!Arc::ptr_eq(
            &scored.destination.producer,
            &other.destination.producer
        ));
        // Settings librdkafka's config_map blanks (passwords) still tell producers apart.
        let one = sink("scored", &[("sasl.password", "one")], "share-a").await;
        let two = sink("scored", &[("sasl.password", "two")], "share-a").await;
        assert!(!Arc::ptr_eq(
            &one.destination.producer,
            &two.destination.producer
        ));
        // The producer lives as long as one of its sinks.
        let weak = Arc::downgrade(&scored.destination.producer);
        drop(scored);
        assert!(weak.upgrade().is_some());
        drop(alerts);
        assert!(weak.upgrade().is_none());
    }
}
