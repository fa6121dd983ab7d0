//! The source's poll loop: per-partition micro-batches, merging per worker, dispatch with
//! backpressure (wait, then pause), offset storing, and the orderly finish.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::acks::{Slice, TopicPartition};
use super::context::{commit_offsets, commit_transaction};
use super::fetch_queue::{FetchedBatch, FetchedMessage};
use super::{KafkaSource, SourceReport};
use crate::ack::Ack;
use crate::batch::{Position, RawRecord, SourceBatch};
use crate::source::BatchRouter;

/// Longest the poll loop blocks, so shutdown and batch ages are noticed promptly.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);
/// How long a full worker queue may stay full before the partitions are paused. Rebalance
/// callbacks wait at most this long (heartbeats are sent by librdkafka's own thread).
const PAUSE_AFTER: Duration = Duration::from_millis(500);
/// Most messages taken from the fetch queue at once.
const MAX_FETCH_BATCH: usize = 4096;
/// An identical consumer error is logged once, then every this many repeats.
const ERROR_LOG_EVERY: u64 = 100;

/// Records of one partition waiting to become a batch.
pub(super) struct PendingBatch {
    tp: TopicPartition,
    generation: u64,
    records: Vec<RawRecord>,
    first_received: Instant,
}

pub(super) struct PollLoop {
    /// Declared first so that it drops before the consumer (its messages are librdkafka's).
    fetched: Option<FetchedBatch>,
    /// Topic handle → topic index, for messages from the fetch queue.
    topic_handles: Vec<(usize, usize)>,
    source: KafkaSource,
    router: BatchRouter,
    runtime: Handle,
    filling: HashMap<(usize, i32), PendingBatch>,
    /// Full or aged batches waiting for room in a worker queue, in the order they became ready.
    ready: std::collections::VecDeque<PendingBatch>,
    paused: bool,
    next_age_check: Instant,
    workers_gone: bool,
    /// Last consumer error and how often it repeated.
    last_error: Option<(String, u64)>,
    /// Rebalance count when buffered batches were last checked against the assignment.
    seen_rebalances: Option<u64>,
    /// Under exactly-once, when the transaction is next committed.
    next_transaction_commit: Instant,
}

impl PollLoop {
    pub(super) fn new(source: KafkaSource, router: BatchRouter, runtime: Handle) -> Self {
        PollLoop {
            fetched: Some(FetchedBatch::with_capacity(
                source.max_rows.min(MAX_FETCH_BATCH),
            )),
            topic_handles: Vec::new(),
            source,
            router,
            runtime,
            filling: HashMap::new(),
            ready: Default::default(),
            paused: false,
            next_age_check: Instant::now(),
            workers_gone: false,
            last_error: None,
            seen_rebalances: None,
            next_transaction_commit: Instant::now(),
        }
    }

    /// Runs until `shutdown`, then drains and commits. Returns the report and the loop itself:
    /// dropping it closes the consumer, which librdkafka can block on while a cooperative
    /// rebalance is in flight, so the caller reports first and closes after.
    pub(super) fn run(mut self, shutdown: &CancellationToken) -> (SourceReport, Self) {
        let fatal = self.source.acks.clone();
        while !shutdown.is_cancelled() && fatal.failure().is_none() && !self.workers_gone {
            self.dispatch_ready();
            // A full queue is usually momentary: wait for room without polling first. Only a
            // queue that stays full pauses the partitions, because librdkafka drops what it
            // prefetched for a paused partition and fetches it again on resume, so pausing on
            // every brief stall would thrash the broker.
            if !self.ready.is_empty() && !self.paused && self.wait_for_room(PAUSE_AFTER) {
                self.store_offsets();
                continue;
            }
            self.apply_backpressure();
            let wait = if self.paused && !self.ready.is_empty() {
                self.wait_for_room(MAX_POLL_WAIT);
                Duration::ZERO
            } else if self.paused {
                // Paused by an operator: poll only to serve rebalances and age out the
                // batches being filled.
                self.next_age_check
                    .saturating_duration_since(Instant::now())
                    .min(MAX_POLL_WAIT)
            } else {
                self.next_age_check
                    .saturating_duration_since(Instant::now())
                    .min(MAX_POLL_WAIT)
            };
            self.poll_messages(wait);
            self.flush_aged();
            self.drop_revoked();
            self.store_offsets();
        }
        let report = self.finish(fatal.failure().is_none());
        (report, self)
    }

    /// Serves the consumer queue (rebalances, statistics, errors), then takes what the fetch
    /// queue holds, waiting up to `wait` when it is empty.
    fn poll_messages(&mut self, wait: Duration) {
        // Events are rare: one per round keeps them prompt. Messages only arrive here for a
        // partition that could not be routed to the fetch queue (or for all of them, should
        // librdkafka have given no fetch queue: then this is where the loop waits).
        let mut timeout = match self.source.fetch_queue {
            Some(_) => Duration::ZERO,
            None => wait,
        };
        let mut polled = 0;
        while polled < self.source.max_rows {
            let Some(result) = self.source.consumer.poll(timeout) else {
                break;
            };
            timeout = Duration::ZERO;
            polled += 1;
            match result {
                Ok(message) => {
                    let record = self.to_record(&message);
                    drop(message);
                    if let Some((key, record)) = record {
                        self.accept(key, record);
                    }
                }
                Err(e) => self.consumer_error(e),
            }
        }
        let (Some(queue), Some(mut fetched)) =
            (self.source.fetch_queue.clone(), self.fetched.take())
        else {
            return;
        };
        let wait = if polled > 0 { Duration::ZERO } else { wait };
        queue.consume(wait, &mut fetched);
        for message in fetched.iter() {
            if let Some(e) = message.error() {
                self.consumer_error(e);
                continue;
            }
            if let Some((key, record)) = self.fetched_record(&message) {
                self.accept(key, record);
            }
        }
        fetched.clear();
        self.fetched = Some(fetched);
    }

    /// Copies a message of the fetch queue, keyed by (topic index, partition).
    fn fetched_record(
        &mut self,
        message: &FetchedMessage<'_>,
    ) -> Option<((usize, i32), RawRecord)> {
        let handle = message.topic_handle();
        let topic_index = match self.topic_handles.iter().find(|(h, _)| *h == handle) {
            Some(&(_, index)) => index,
            None => {
                let name = message.topic()?;
                let index = self.source.topics.iter().position(|t| **t == *name)?;
                self.topic_handles.push((handle, index));
                index
            }
        };
        let topic = self.source.topics[topic_index].clone();
        let partition = message.partition();
        let record = RawRecord {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers: message.headers(),
            timestamp_ms: message.timestamp().to_millis(),
            position: Position {
                topic,
                partition,
                offset: message.offset(),
            },
        };
        Some(((topic_index, partition), record))
    }

    /// Copies a message out of librdkafka's buffer, keyed by (topic index, partition).
    fn to_record(&self, message: &BorrowedMessage<'_>) -> Option<((usize, i32), RawRecord)> {
        let topic_index = self
            .source
            .topics
            .iter()
            .position(|t| **t == *message.topic())?;
        let tp: TopicPartition = (self.source.topics[topic_index].clone(), message.partition());
        Some(((topic_index, tp.1), raw_record(message, &tp)))
    }

    /// Logs consumer errors (unknown topic, broker down), repeating an identical one only
    /// every `ERROR_LOG_EVERY` occurrences so an outage does not flood the logs.
    fn consumer_error(&mut self, error: KafkaError) {
        let code = error
            .rdkafka_error_code()
            .map_or_else(|| "Other".to_string(), |code| format!("{code:?}"));
        self.source.metrics.kafka_consumer_error(&code);
        let text = error.to_string();
        let repeated = matches!(&self.last_error, Some((last, _)) if *last == text);
        if !repeated {
            self.last_error = Some((text.clone(), 0));
        }
        let count = match &mut self.last_error {
            Some((_, count)) => {
                *count += 1;
                *count
            }
            None => 1,
        };
        if count == 1 || count % ERROR_LOG_EVERY == 0 {
            tracing::warn!(pipeline = self.source.metrics.name(), error = %text, repeated = count, "kafka consumer error");
        }
    }

    fn accept(&mut self, key: (usize, i32), record: RawRecord) {
        let pending = match self.filling.get_mut(&key) {
            Some(p) => p,
            None => {
                let tp: TopicPartition = (record.position.topic.clone(), key.1);
                let generation = self.source.acks.generation(&tp).unwrap_or(0);
                let now = Instant::now();
                self.next_age_check = self.next_age_check.min(now + self.source.max_age);
                self.filling.entry(key).or_insert(PendingBatch {
                    tp,
                    generation,
                    records: Vec::with_capacity(self.source.max_rows),
                    first_received: now,
                })
            }
        };
        pending.records.push(record);
        if pending.records.len() >= self.source.max_rows
            && let Some(full) = self.filling.remove(&key)
        {
            self.ready.push_back(full);
        }
    }

    /// Once the oldest filling batch reaches `max_age`, every filling batch is made ready:
    /// they leave together and dispatch merges them per worker.
    fn flush_aged(&mut self) {
        let now = Instant::now();
        if now < self.next_age_check {
            return;
        }
        let due = self
            .filling
            .values()
            .any(|p| p.first_received + self.source.max_age <= now);
        if due {
            let mut all: Vec<PendingBatch> = self.filling.drain().map(|(_, p)| p).collect();
            // Oldest first, so the merge keeps waiting time fair across partitions.
            all.sort_by_key(|p| p.first_received);
            self.ready.extend(all);
            self.next_age_check = now + self.source.max_age;
        } else {
            self.next_age_check = self
                .filling
                .values()
                .map(|p| p.first_received + self.source.max_age)
                .min()
                .unwrap_or(now + self.source.max_age);
        }
    }

    /// Hands ready batches to workers until one queue is full. Ready batches bound for the
    /// same worker are merged (up to `max_rows` records), so many partitions at a modest rate
    /// still make full batches: per-batch costs (SQL execution, requests) are paid per
    /// hundreds of records, not per handful.
    fn dispatch_ready(&mut self) {
        while let Some(front) = self.ready.front() {
            let worker = self.router.worker_index(&front.tp.0, front.tp.1);
            // A clone of the sender (an Arc) so the permit does not borrow the router.
            let tx = self.router.worker(worker).clone();
            let permit = match tx.try_reserve() {
                Ok(permit) => permit,
                Err(TrySendError::Full(())) => return,
                Err(TrySendError::Closed(())) => {
                    self.workers_gone = true;
                    return;
                }
            };
            let parts = self.take_mergeable(worker);
            let received_at = parts
                .iter()
                .map(|p| p.first_received)
                .min()
                .unwrap_or_else(Instant::now);
            let slices = parts
                .iter()
                .map(|p| Slice {
                    partition: p.tp.clone(),
                    generation: p.generation,
                    first: p.records.first().map_or(0, |r| r.position.offset),
                    last: p.records.last().map_or(0, |r| r.position.offset),
                })
                .collect();
            let Some(token) = self.source.acks.register(slices, received_at) else {
                // A partition was revoked meanwhile: drop_revoked removes its records before
                // the next dispatch; nothing of this batch was registered, so it is simply read
                // again (by whoever owns the partitions now).
                self.ready.extend(parts);
                self.seen_rebalances = None;
                self.drop_revoked();
                continue;
            };
            let mut records = Vec::with_capacity(parts.iter().map(|p| p.records.len()).sum());
            for part in parts {
                records.extend(part.records);
            }
            self.source.metrics.records_in.inc_by(records.len() as u64);
            let ack = Ack::new(token, self.source.acks.clone());
            permit.send(SourceBatch {
                records,
                receipt: ack.receipt(),
                received_at,
                stable_positions: true,
            });
        }
    }

    /// Removes from the ready queue the front batch and the following ones for the same
    /// worker, in queue order, up to `max_rows` records. Once a partition's batch is left
    /// behind, later batches of that partition are left too, so partition order holds.
    fn take_mergeable(&mut self, worker: usize) -> Vec<PendingBatch> {
        let mut taken: Vec<PendingBatch> = Vec::new();
        let mut rows = 0;
        let mut skipped: Vec<TopicPartition> = Vec::new();
        let mut rest = std::collections::VecDeque::with_capacity(self.ready.len());
        while let Some(batch) = self.ready.pop_front() {
            let fits = taken.is_empty() || rows + batch.records.len() <= self.source.max_rows;
            if fits
                && !skipped.contains(&batch.tp)
                && self.router.worker_index(&batch.tp.0, batch.tp.1) == worker
            {
                rows += batch.records.len();
                taken.push(batch);
            } else {
                skipped.push(batch.tp.clone());
                rest.push_back(batch);
            }
        }
        self.ready = rest;
        taken
    }

    fn apply_backpressure(&mut self) {
        let full = !self.ready.is_empty();
        let operator = self.source.operator_paused();
        let want_pause = full || operator;
        if want_pause == self.paused {
            return;
        }
        let assignment = match self.source.consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read assignment");
                return;
            }
        };
        let result = if want_pause {
            if operator {
                tracing::info!(
                    pipeline = self.source.metrics.name(),
                    "paused by an operator"
                );
            } else {
                self.source.metrics.backpressure_pauses.inc();
                tracing::debug!(
                    pipeline = self.source.metrics.name(),
                    "pipeline full: pausing consumption"
                );
            }
            self.source.consumer.pause(&assignment)
        } else {
            tracing::debug!(
                pipeline = self.source.metrics.name(),
                "resuming consumption"
            );
            self.source.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                self.paused = want_pause;
                self.source
                    .consumer
                    .context()
                    .paused
                    .store(want_pause, Ordering::SeqCst);
            }
            Err(e) => tracing::warn!(error = %e, "pause/resume failed"),
        }
    }

    /// Blocks until the queue of the first ready batch has room, or `timeout`. Returns whether
    /// there is room.
    fn wait_for_room(&mut self, timeout: Duration) -> bool {
        let Some(batch) = self.ready.front() else {
            return true;
        };
        let tx = self.router.worker_for(&batch.tp.0, batch.tp.1).clone();
        self.runtime.block_on(async move {
            // The permit is dropped at once; dispatch_ready reserves again.
            tokio::time::timeout(timeout, tx.reserve())
                .await
                .is_ok_and(|r| r.is_ok())
        })
    }

    /// Drops batches of partitions that were revoked (or reassigned) since they were read.
    fn drop_revoked(&mut self) {
        let rebalances = self.source.acks.rebalances();
        if self.seen_rebalances == Some(rebalances) {
            return;
        }
        self.seen_rebalances = Some(rebalances);
        let acks = &self.source.acks;
        let current = |p: &PendingBatch| acks.generation(&p.tp) == Some(p.generation);
        if self.filling.values().all(current) && self.ready.iter().all(current) {
            return;
        }
        self.filling.retain(|_, p| current(p));
        self.ready.retain(current);
    }

    fn store_offsets(&mut self) {
        if let Some(transaction) = &self.source.transaction {
            // Exactly once: offsets go into the transaction, committed every interval.
            if Instant::now() >= self.next_transaction_commit {
                commit_transaction(&self.source.consumer, transaction, &self.source.acks);
                self.next_transaction_commit = Instant::now() + transaction.interval;
            }
            return;
        }
        let offsets = self.source.acks.take_unstored();
        if offsets.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &offsets {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        if let Err(e) = self.source.consumer.store_offsets(&tpl) {
            // Happens for a partition revoked a moment ago; its offsets were committed at
            // revocation, or its records are redelivered.
            tracing::debug!(error = %e, "storing offsets failed");
        }
    }

    /// Orderly stop: hand every complete record to the workers (unless stopping on failure),
    /// close the queues, wait for acknowledgements, commit.
    fn finish(&mut self, hand_over_remaining: bool) -> SourceReport {
        let deadline = Instant::now() + self.source.drain_timeout;
        if hand_over_remaining {
            let filling: Vec<_> = self.filling.drain().map(|(_, p)| p).collect();
            self.ready.extend(filling);
            while !self.ready.is_empty() && !self.workers_gone && Instant::now() < deadline {
                self.dispatch_ready();
                self.wait_for_room(MAX_POLL_WAIT);
            }
        }
        let unsent = self.ready.len() + self.filling.len();
        drop(std::mem::replace(&mut self.router, BatchRouter::closed()));
        let remaining = deadline.saturating_duration_since(Instant::now());
        let abandoned = self.source.acks.wait_drained(None, remaining);
        if abandoned > 0 || unsent > 0 {
            tracing::warn!(
                pipeline = self.source.metrics.name(),
                abandoned,
                unsent,
                "drain deadline passed; unfinished batches will be redelivered"
            );
        }
        let committed = self.source.acks.committable();
        match &self.source.transaction {
            None => commit_offsets(&self.source.consumer, &committed),
            Some(transaction) => {
                if self.source.acks.failure().is_none() {
                    commit_transaction(&self.source.consumer, transaction, &self.source.acks);
                }
                // After a failure, or batches abandoned at the deadline that may still send:
                // nothing more of this transaction may become visible.
                transaction.abort();
            }
        }
        // Closing the consumer revokes the assignment; there is nothing left to drain.
        self.source
            .consumer
            .context()
            .closing
            .store(true, Ordering::SeqCst);
        SourceReport {
            committed,
            abandoned_batches: abandoned,
        }
    }
}

fn raw_record(message: &BorrowedMessage<'_>, tp: &TopicPartition) -> RawRecord {
    let headers = message.headers().map_or_else(Vec::new, |hs| {
        hs.iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect()
    });
    RawRecord {
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
        timestamp_ms: message.timestamp().to_millis(),
        position: Position {
            topic: tp.0.clone(),
            partition: tp.1,
            offset: message.offset(),
        },
    }
}
