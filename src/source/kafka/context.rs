//! librdkafka callbacks of the source consumer: rebalances (drain and commit before giving a
//! partition away) and statistics (consumer lag).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::acks::{AckState, TopicPartition};
use super::fetch_queue::FetchQueue;
use crate::connect::transaction::KafkaTransaction;
use crate::telemetry::PipelineMetrics;

/// Consumer context of the Kafka source.
pub(super) struct SourceContext {
    pub(super) acks: Arc<AckState>,
    pub(super) metrics: PipelineMetrics,
    /// How long a revocation waits for in-flight batches of the revoked partitions.
    pub(super) drain_timeout: Duration,
    /// Set once the source committed its final offsets: the revocation that closing the
    /// consumer triggers has nothing left to wait for.
    pub(super) closing: AtomicBool,
    /// Mirrors the poll loop's backpressure state: partitions assigned while the pipeline is
    /// full are paused on arrival, or they would keep filling the loop's ready queue.
    pub(super) paused: AtomicBool,
    /// Where assigned partitions' messages are forwarded (see [`FetchQueue`]); taken out
    /// before the consumer closes.
    pub(super) fetch_queue: Mutex<Option<Arc<FetchQueue>>>,
    /// Under exactly-once, the transaction that commits offsets.
    pub(super) transaction: Option<Arc<KafkaTransaction>>,
    /// librdkafka's totals of request timeouts and disconnects over every broker at the last
    /// statistics, so the counters grow by the difference.
    pub(super) broker_faults: Mutex<BrokerFaults>,
}

/// Request timeouts and disconnects summed over the brokers of one statistics report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct BrokerFaults {
    request_timeouts: u64,
    disconnects: u64,
}

impl BrokerFaults {
    fn of(statistics: &Statistics) -> Self {
        statistics
            .brokers
            .values()
            .fold(BrokerFaults::default(), |sum, b| BrokerFaults {
                request_timeouts: sum.request_timeouts + b.req_timeouts,
                disconnects: sum.disconnects + b.disconnects.unwrap_or(0).max(0) as u64,
            })
    }
}

impl SourceContext {
    fn fetch_queue(&self) -> Option<Arc<FetchQueue>> {
        self.fetch_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::<str>::from(e.topic()), e.partition()))
        .collect()
}

/// Stores and commits `offsets` synchronously; failures are logged (the records will be
/// redelivered).
pub(super) fn commit_offsets(
    consumer: &BaseConsumer<SourceContext>,
    offsets: &[(TopicPartition, i64)],
) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(error = %e, "cannot build commit list");
        }
    }
    // Store them too: librdkafka auto-commits its stored offsets on revocation and close, and
    // a stale stored offset committed after ours would move the group backwards.
    if let Err(e) = consumer.store_offsets(&tpl) {
        tracing::debug!(error = %e, "storing final offsets failed");
    }
    match commit_within(consumer, &tpl, COMMIT_TIMEOUT) {
        Ok(()) => tracing::debug!(partitions = offsets.len(), "committed offsets"),
        Err(e) => {
            tracing::warn!(error = %e, "offset commit failed; uncommitted records will be redelivered")
        }
    }
}

/// Commits the exactly-once transaction with the consumer group's current metadata. A failed
/// commit (the transaction is aborted) stops the pipeline: its consumer has read past what is
/// committed, and only a restart from the committed offsets loses nothing.
pub(super) fn commit_transaction(
    consumer: &BaseConsumer<SourceContext>,
    transaction: &KafkaTransaction,
    acks: &AckState,
) {
    let Some(group) = consumer.group_metadata() else {
        acks.fail("the consumer has no group metadata to commit a transaction with".into());
        return;
    };
    let started = std::time::Instant::now();
    let committed = transaction.commit(&group);
    match committed {
        Ok(partitions) => {
            if partitions > 0 {
                consumer
                    .context()
                    .metrics
                    .transaction_commit
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(partitions, "committed the transaction");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "the Kafka transaction was aborted; stopping so the pipeline restarts from the committed offsets");
            acks.fail(e.to_string());
        }
    }
}

/// Longest a commit may take. librdkafka's synchronous commit waits without limit, so a
/// broker that is gone would hang a shutdown (or a rebalance) for good.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an offset commit failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum CommitError {
    /// The broker (or librdkafka) refused the commit.
    #[error("{0}")]
    Refused(rdkafka::error::RDKafkaErrorCode),
    /// No answer in time.
    #[error("no answer from the broker within {0:?}")]
    Timeout(Duration),
}

/// Commits `tpl` and waits at most `timeout` for the broker's answer, on a queue of its own (so
/// it also works inside a rebalance callback, where the consumer cannot be polled).
fn commit_within(
    consumer: &BaseConsumer<SourceContext>,
    tpl: &TopicPartitionList,
    timeout: Duration,
) -> Result<(), CommitError> {
    use rdkafka::bindings as rd;
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` and `tpl` outlive the calls; the queue is ours until destroyed, and
    // librdkafka keeps its own reference while the commit is pending, so destroying it after a
    // timeout is allowed; the event is destroyed once read.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let err = rd::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
        let result = if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Err(CommitError::Refused(err.into()))
        } else {
            let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            let event = rd::rd_kafka_queue_poll(queue, timeout_ms);
            if event.is_null() {
                Err(CommitError::Timeout(timeout))
            } else {
                let err = rd::rd_kafka_event_error(event);
                rd::rd_kafka_event_destroy(event);
                if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    Ok(())
                } else {
                    Err(CommitError::Refused(err.into()))
                }
            }
        };
        rd::rd_kafka_queue_destroy(queue);
        result
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        // A broker killed, paused or unreachable shows as disconnects and request timeouts
        // (librdkafka retries; nothing is lost, but operators want to see the episode).
        let now = BrokerFaults::of(&statistics);
        let before = std::mem::replace(
            &mut *self.broker_faults.lock().unwrap_or_else(|p| p.into_inner()),
            now,
        );
        // A broker that left the metadata takes its totals along: never count backwards.
        self.metrics
            .kafka_broker_faults("request_timeout")
            .inc_by(now.request_timeouts.saturating_sub(before.request_timeouts));
        self.metrics
            .kafka_broker_faults("disconnect")
            .inc_by(now.disconnects.saturating_sub(before.disconnects));
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // librdkafka reports -1 for partitions this consumer does not fetch.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .set_consumer_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Before the assignment starts fetching, so every message of these partitions arrives
        // on the fetch queue, in order.
        if let Rebalance::Assign(tpl) = rebalance
            && let Some(queue) = self.fetch_queue()
        {
            let missed = queue.route(tpl);
            if missed > 0 {
                tracing::debug!(missed, "partitions read through the consumer queue");
            }
        }
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions_of(tpl);
            // Give in-flight batches of the revoked partitions a chance to finish so the next
            // owner does not reprocess them; whatever is still pending is simply redelivered.
            let timeout = if self.closing.load(Ordering::SeqCst) {
                Duration::ZERO
            } else {
                self.drain_timeout
            };
            let pending = self.acks.wait_drained(Some(&revoked), timeout);
            if pending > 0 {
                tracing::warn!(
                    pending,
                    "revocation drain timed out; those batches will be redelivered"
                );
            }
            match &self.transaction {
                // The revoked partitions' finished batches commit with the transaction; what
                // is still pending is aborted with it later, and redelivered to the new owner.
                Some(transaction) => {
                    if !self.closing.load(Ordering::SeqCst) {
                        commit_transaction(consumer, transaction, &self.acks);
                    }
                    self.acks.revoke(&revoked);
                }
                None => {
                    let done = self.acks.revoke(&revoked);
                    commit_offsets(consumer, &done);
                }
            }
            tracing::info!(partitions = revoked.len(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = partitions_of(tpl);
                tracing::info!(partitions = assigned.len(), "partitions assigned");
                self.acks.assign(assigned);
                if self.paused.load(Ordering::SeqCst)
                    && tpl.count() > 0
                    && let Err(e) = consumer.pause(tpl)
                {
                    tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}
