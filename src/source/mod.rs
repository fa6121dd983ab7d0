//! Sources: where records come from. Each source reads raw records, groups them into
//! per-partition micro-batches, hands them to the pipeline's workers through a [`BatchRouter`],
//! and commits positions only as acknowledgements allow.
//!
//! [`build`] is the only place that knows the kinds: it turns a [`SourceSpec`] into a
//! `Box<dyn` [`Source`]`>`, connected and subscribed. The runtime then calls
//! [`Source::spawn`] and awaits the [`SourceHandle`] for the [`SourceReport`]; how each kind
//! runs stays behind its implementation:
//!
//! - [`kafka`]: a consumer group on a dedicated thread (poll loop, rebalance callbacks,
//!   ordered offset tracking), whose handle waits for the committed report and then, for a
//!   bounded time, for the consumer to close;
//! - [`nats`]: core subscriptions or a JetStream pull consumer on a tokio task, with a settler
//!   task that acks, terminates or naks each message as its batch resolves.
//!
//! Adding a kind: a `SourceSpec` variant, a module here implementing [`Source`], and a branch
//! in [`build`].

pub mod kafka;
pub mod nats;

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::batch::SourceBatch;
use crate::spec::SourceSpec;
use crate::telemetry::PipelineMetrics;

/// The operator's pause switch for one pipeline (admin API): while it holds `true` the source
/// reads nothing new, and it resumes when it turns `false`.
pub type PauseSignal = tokio::sync::watch::Receiver<bool>;

/// A configured source, connected (or subscribed) but not yet reading.
///
/// The runtime drives every source through this one call and the [`SourceHandle`] it returns:
///
/// - **start**: [`Source::spawn`] starts reading at once, on whatever the source needs (the
///   Kafka consumer's dedicated thread, a tokio task for NATS), and hands batches to the
///   workers through the [`BatchRouter`];
/// - **pause and resume**: the source follows the [`PauseSignal`] by itself;
/// - **stop and drain**: cancelling `shutdown` stops reading; the source then waits (up to the
///   drain timeout it was built with) for the batches in flight, commits or settles what their
///   acks allow, and closes the worker queues by dropping the router;
/// - **report**: awaiting the handle yields the [`SourceReport`], or why the source failed.
///
/// Why this shape: the source is consumed (`self: Box<Self>`, so `dyn Source` can be moved
/// into its thread or task), and the handle is a future rather than a `JoinHandle` because the
/// kinds report differently: Kafka over a channel from its OS thread, then a bounded wait for
/// the consumer to close (librdkafka can hang there), NATS as a task's result. Awaiting the
/// handle is the only thing the runtime does with it, so the difference stays inside each
/// kind. Dropping the handle does not stop the source; cancelling `shutdown` does.
pub trait Source: Send {
    /// Starts reading into `router` until `shutdown` is cancelled (or a batch fails), following
    /// `pause`. Must be called inside a tokio runtime.
    fn spawn(
        self: Box<Self>,
        router: BatchRouter,
        shutdown: CancellationToken,
        pause: PauseSignal,
    ) -> SourceHandle;
}

/// A running source: a future that resolves to its report once it stopped, drained and
/// committed. See [`Source`].
pub struct SourceHandle(BoxFuture<'static, Result<SourceReport, SourceError>>);

impl SourceHandle {
    /// A handle that resolves to what `report` yields.
    pub fn new(
        report: impl Future<Output = Result<SourceReport, SourceError>> + Send + 'static,
    ) -> Self {
        SourceHandle(Box::pin(report))
    }
}

impl Future for SourceHandle {
    type Output = Result<SourceReport, SourceError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// Builds the source a spec describes: creates and subscribes the Kafka consumer, or connects
/// to NATS and subscribes, so that configuration problems fail the start. The only place that
/// knows the source kinds.
pub async fn build(
    spec: &SourceSpec,
    metrics: &PipelineMetrics,
    drain_timeout: Duration,
    transaction: Option<Arc<crate::connect::transaction::KafkaTransaction>>,
) -> Result<Box<dyn Source>, SourceError> {
    Ok(match spec {
        SourceSpec::Kafka(kafka) => Box::new(kafka::KafkaSource::new(
            kafka,
            metrics.clone(),
            drain_timeout,
            transaction,
        )?),
        SourceSpec::Nats(nats) => {
            Box::new(nats::NatsSource::connect(nats, metrics.clone(), drain_timeout).await?)
        }
    })
}

/// Sends batches to the pipeline's workers. All batches of one partition go to the same
/// worker, so per-partition order is kept end to end.
#[derive(Clone)]
pub struct BatchRouter {
    workers: Vec<mpsc::Sender<SourceBatch>>,
}

impl BatchRouter {
    /// A router over the given worker queues (at least one).
    pub fn new(workers: Vec<mpsc::Sender<SourceBatch>>) -> Self {
        BatchRouter { workers }
    }

    /// A router with no workers (after the source closed its queues).
    pub fn closed() -> Self {
        BatchRouter {
            workers: Vec::new(),
        }
    }

    /// Index of the worker that owns `(topic, partition)`.
    pub fn worker_index(&self, topic: &str, partition: i32) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        topic.hash(&mut h);
        partition.hash(&mut h);
        (h.finish() % self.workers.len().max(1) as u64) as usize
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are no workers.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The queue of worker `index`.
    pub fn worker(&self, index: usize) -> &mpsc::Sender<SourceBatch> {
        &self.workers[index]
    }

    /// The queue of the worker that owns `(topic, partition)`.
    pub fn worker_for(&self, topic: &str, partition: i32) -> &mpsc::Sender<SourceBatch> {
        &self.workers[self.worker_index(topic, partition)]
    }
}

/// Final state of a source after it stopped.
#[derive(Debug, Default, Clone)]
pub struct SourceReport {
    /// Offsets committed at shutdown (Kafka).
    pub committed: Vec<(kafka::TopicPartition, i64)>,
    /// Batches still unresolved when the drain deadline passed (redelivered on restart).
    pub abandoned_batches: usize,
}

/// Errors of any source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Kafka.
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaSourceError),
    /// NATS.
    #[error(transparent)]
    Nats(#[from] nats::NatsSourceError),
}
