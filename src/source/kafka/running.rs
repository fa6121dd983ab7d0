//! The Kafka source as a [`Source`]: the poll loop on its dedicated thread, and a handle that
//! waits for the thread's report and then, briefly, for the consumer to close.

use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::{KafkaSource, KafkaSourceError, SourceReport, poll_loop};
use crate::source::{BatchRouter, PauseSignal, Source, SourceHandle};

/// How long the consumer gets to close after its offsets are committed.
const CONSUMER_CLOSE_GRACE: Duration = Duration::from_secs(10);

impl Source for KafkaSource {
    /// Runs the poll loop on a dedicated thread until `shutdown` (or a batch failure), then
    /// drains in-flight batches and commits. The handle resolves once offsets are committed
    /// and the consumer closed, or after `CONSUMER_CLOSE_GRACE` if it does not close.
    fn spawn(
        mut self: Box<Self>,
        router: BatchRouter,
        shutdown: CancellationToken,
        pause: PauseSignal,
    ) -> SourceHandle {
        self.pause = Some(pause);
        let pipeline = self.metrics.name().to_string();
        let (report, thread) = spawn_thread(*self, router, shutdown, Handle::current());
        SourceHandle::new(async move { Ok(finish(report, thread, &pipeline).await?) })
    }
}

/// Starts the poll loop on its thread. The result arrives on the returned channel once
/// offsets are committed, before the consumer is closed (closing can block inside librdkafka
/// during a rebalance; nothing depends on it any more by then).
fn spawn_thread(
    source: KafkaSource,
    router: BatchRouter,
    shutdown: CancellationToken,
    runtime: Handle,
) -> (
    Receiver<Result<SourceReport, KafkaSourceError>>,
    JoinHandle<()>,
) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(format!("kafka-source-{}", source.metrics.name()))
        .spawn(move || {
            let acks = source.acks.clone();
            // Under exactly-once every failure ends in an aborted transaction.
            let transactional = source.transaction.is_some();
            let (report, poll_loop) =
                poll_loop::PollLoop::new(source, router, runtime).run(&shutdown);
            let result = match acks.failure() {
                Some(reason) if transactional => Err(KafkaSourceError::TransactionAborted(reason)),
                Some(reason) => Err(KafkaSourceError::BatchFailed(reason)),
                None => Ok(report),
            };
            let _ = tx.send(result);
            drop(poll_loop);
        })
        .expect("spawning a thread only fails when the OS is out of resources");
    (rx, thread)
}

/// Waits for the source's report, then (briefly) for the consumer to close.
async fn finish(
    report: Receiver<Result<SourceReport, KafkaSourceError>>,
    thread: JoinHandle<()>,
    pipeline: &str,
) -> Result<SourceReport, KafkaSourceError> {
    let result = tokio::task::spawn_blocking(move || report.recv())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| {
            Err(KafkaSourceError::BatchFailed(
                "source thread panicked".to_string(),
            ))
        });
    // Offsets are committed; closing the consumer should take a moment. librdkafka can hang
    // there while a cooperative rebalance is in flight: do not let that hang the shutdown. The
    // thread is polled rather than joined on a blocking task, which would keep the runtime
    // from shutting down if it never ends.
    let close_deadline = tokio::time::Instant::now() + CONSUMER_CLOSE_GRACE;
    while !thread.is_finished() && tokio::time::Instant::now() < close_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if thread.is_finished() {
        let _ = thread.join();
    } else {
        tracing::warn!(pipeline = %pipeline, "the Kafka consumer did not close in time; leaving it behind (offsets are committed)");
    }
    result
}
