//! Kafka consumer-group source, at least once.
//!
//! The consumer runs on a dedicated thread (librdkafka's poll loop and its rebalance callbacks
//! may block, e.g. while draining a revoked partition; they must not stall the async runtime).
//! It groups records into per-partition micro-batches, registers each batch with the
//! partition's ordered tracker just before handing it to a worker, and stores only the
//! contiguous delivered prefix as committable (`enable.auto.offset.store=false`); librdkafka
//! auto-commits stored offsets and we commit synchronously on revocation and shutdown.
//!
//! Backpressure: when a worker queue is full, the whole assignment is paused and the thread
//! keeps polling (rebalances, heartbeats) without accepting records until there is room.
//!
//! [`KafkaSource::new`] creates and subscribes the consumer; its [`crate::source::Source`]
//! implementation (`running.rs`) starts the thread and returns the handle that waits for the
//! report and the consumer's close.

mod acks;
mod context;
mod fetch_queue;
mod poll_loop;
mod running;
pub mod spec;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

pub use acks::{AckState, Slice, TopicPartition};
use context::SourceContext;
use fetch_queue::FetchQueue;

pub use super::SourceReport;
use crate::connect::transaction::KafkaTransaction;
use crate::spec::{KafkaSourceSpec, StartFrom};
use crate::telemetry::PipelineMetrics;

/// librdkafka's prefetch queue default is 64 MiB; 16 MiB keeps a paused pipeline's memory
/// bounded while still allowing full-speed fetches. Users can override it in `properties`.
const DEFAULT_QUEUED_KBYTES: &str = "16384";

/// Errors starting or running the Kafka source.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// The consumer could not be created or subscribed.
    #[error("kafka consumer: {0}")]
    Client(#[from] KafkaError),
    /// A batch failed and the pipeline stopped without committing it.
    #[error("{0}")]
    BatchFailed(String),
    /// Under exactly-once, any failure (a commit refused during a rebalance, a fenced
    /// producer, a batch not delivered): the transaction is aborted, nothing of it is visible,
    /// and the pipeline can start again from the committed offsets.
    #[error("{0}")]
    TransactionAborted(String),
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Both handles of the fetch queue go before the consumer closes.
        self.fetch_queue = None;
        self.consumer
            .context()
            .fetch_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// A configured, not yet running, Kafka source.
pub struct KafkaSource {
    /// Dropped before the consumer (see `Drop`), as librdkafka requires of queue handles.
    fetch_queue: Option<Arc<FetchQueue>>,
    consumer: BaseConsumer<SourceContext>,
    acks: Arc<AckState>,
    topics: Vec<Arc<str>>,
    max_rows: usize,
    max_age: Duration,
    drain_timeout: Duration,
    metrics: PipelineMetrics,
    /// Operator pause (admin API, set when the source is spawned): the assignment stays
    /// paused (membership and partitions kept) while it holds `true`.
    pause: Option<super::PauseSignal>,
    /// Under exactly-once, the transaction offsets are committed in (never by the consumer).
    transaction: Option<Arc<KafkaTransaction>>,
}

impl KafkaSource {
    /// Creates the consumer and subscribes.
    pub fn new(
        spec: &KafkaSourceSpec,
        metrics: PipelineMetrics,
        drain_timeout: Duration,
        transaction: Option<Arc<KafkaTransaction>>,
    ) -> Result<Self, KafkaSourceError> {
        let acks = AckState::new(metrics.clone());
        let reset = match spec.start_from {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        };
        // At least once: only offsets we store are committed, by librdkafka's auto-commit and
        // by us on revocation and shutdown. Exactly once: offsets are committed inside the
        // transactions only, and the input is read as committed.
        let (auto_commit, isolation) = match transaction {
            None => ("true", None),
            Some(_) => ("false", Some(("isolation.level", "read_committed"))),
        };
        let mut forced = vec![
            ("group.id", spec.group_id.as_str()),
            ("auto.offset.reset", reset),
            ("enable.auto.offset.store", "false"),
            ("enable.auto.commit", auto_commit),
        ];
        forced.extend(isolation);
        let config = crate::connect::kafka::client_config(
            &spec.bootstrap_servers,
            spec.security.as_ref(),
            &[
                // Delivered offsets reach the group within 250 ms, so a crash replays at most
                // that much delivered work (librdkafka's default is 5 s); still one small
                // request per interval.
                ("auto.commit.interval.ms", "250"),
                ("statistics.interval.ms", "5000"),
                ("queued.max.messages.kbytes", DEFAULT_QUEUED_KBYTES),
                ("enable.partition.eof", "false"),
                // Incremental rebalancing: only the partitions that move are revoked (and
                // drained and committed); the others keep flowing through a rebalance.
                ("partition.assignment.strategy", "cooperative-sticky"),
            ],
            &spec.properties,
            &forced,
        );
        let context = SourceContext {
            acks: acks.clone(),
            metrics: metrics.clone(),
            drain_timeout,
            closing: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            fetch_queue: Mutex::new(None),
            transaction: transaction.clone(),
            broker_faults: Default::default(),
        };
        let consumer: BaseConsumer<SourceContext> = config.create_with_context(context)?;
        // Set before subscribing, so no assignment can happen without it.
        let fetch_queue = FetchQueue::new(&consumer).map(Arc::new);
        *consumer
            .context()
            .fetch_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = fetch_queue.clone();
        let topics: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(KafkaSource {
            fetch_queue,
            consumer,
            acks,
            topics: spec.topics.iter().map(|t| Arc::from(t.as_str())).collect(),
            max_rows: spec.batch.max_rows.max(1),
            pause: None,
            max_age: spec.batch.max_age,
            drain_timeout,
            metrics,
            transaction,
        })
    }

    /// Whether an operator paused the pipeline.
    fn operator_paused(&self) -> bool {
        self.pause.as_ref().is_some_and(|p| *p.borrow())
    }
}
