//! Acknowledgement bookkeeping of the Kafka source: one ordered tracker per assigned partition,
//! the offsets that became committable, and waiting for in-flight batches to drain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::ack::tracker::PartitionTracker;
use crate::ack::{AckReceiver, AckStatus};
use crate::telemetry::PipelineMetrics;

/// A topic-partition.
pub type TopicPartition = (Arc<str>, i32);

struct PartitionState {
    /// Incremented on every (re)assignment, so acks of an earlier assignment are ignored.
    generation: u64,
    tracker: PartitionTracker,
    /// Committable offset not yet handed to librdkafka's offset store.
    unstored: Option<i64>,
}

/// One partition's slice of a batch: records `first..=last` of `partition`.
#[derive(Debug, Clone)]
pub struct Slice {
    /// The partition.
    pub partition: TopicPartition,
    /// Its assignment generation when the records were read.
    pub generation: u64,
    /// First offset.
    pub first: i64,
    /// Last offset (inclusive).
    pub last: i64,
}

/// A batch handed to the pipeline: slices of one or more partitions (all owned by the same
/// worker, so per-partition order is kept).
struct InFlight {
    slices: Vec<Slice>,
    received_at: Instant,
}

impl InFlight {
    fn touches(&self, partitions: Option<&[TopicPartition]>) -> bool {
        partitions.is_none_or(|ps| self.slices.iter().any(|s| ps.contains(&s.partition)))
    }
}

#[derive(Default)]
struct Inner {
    partitions: HashMap<TopicPartition, PartitionState>,
    in_flight: HashMap<u64, InFlight>,
    next_token: u64,
    next_generation: u64,
    failure: Option<String>,
}

/// Shared between the consumer thread (registers batches, stores offsets), the rebalance
/// callbacks (assign, drain, revoke) and whoever drops the last clone of an ack (resolves).
pub struct AckState {
    inner: Mutex<Inner>,
    changed: Condvar,
    metrics: PipelineMetrics,
    /// Counts assignments and revocations, so the poll loop re-checks its buffered batches
    /// only after a rebalance.
    rebalances: AtomicU64,
}

impl AckState {
    /// New, empty state. A failed batch is reported by [`AckState::failure`].
    pub fn new(metrics: PipelineMetrics) -> Arc<Self> {
        Arc::new(AckState {
            inner: Mutex::new(Inner::default()),
            changed: Condvar::new(),
            metrics,
            rebalances: AtomicU64::new(0),
        })
    }

    /// How many assignments and revocations happened so far.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // loses data (the worst case is a batch never released, i.e. redelivered).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts tracking newly assigned partitions.
    pub fn assign(&self, partitions: impl IntoIterator<Item = TopicPartition>) {
        let mut inner = self.lock();
        for tp in partitions {
            inner.next_generation += 1;
            let generation = inner.next_generation;
            inner.partitions.insert(
                tp,
                PartitionState {
                    generation,
                    tracker: PartitionTracker::new(),
                    unstored: None,
                },
            );
        }
        self.metrics
            .assigned_partitions
            .set(inner.partitions.len() as i64);
    }

    /// Stops tracking revoked partitions; returns their final committable offsets.
    pub fn revoke(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        let mut inner = self.lock();
        let mut done = Vec::new();
        for tp in partitions {
            if let Some(state) = inner.partitions.remove(tp)
                && let Some(offset) = state.tracker.committable()
            {
                done.push((tp.clone(), offset));
            }
        }
        self.metrics
            .assigned_partitions
            .set(inner.partitions.len() as i64);
        done
    }

    /// The generation of a partition's current assignment, if it is assigned.
    pub fn generation(&self, tp: &TopicPartition) -> Option<u64> {
        self.lock().partitions.get(tp).map(|s| s.generation)
    }

    /// Registers a batch about to be handed to the pipeline: one slice per partition it
    /// holds records of. Returns the ack token, or `None` when a slice's partition is no longer
    /// assigned in its generation (the caller drops those records: they are redelivered to the
    /// partition's new owner).
    pub fn register(&self, slices: Vec<Slice>, received_at: Instant) -> Option<u64> {
        let mut inner = self.lock();
        let current = slices.iter().all(|slice| {
            inner
                .partitions
                .get(&slice.partition)
                .is_some_and(|s| s.generation == slice.generation)
        });
        if !current || slices.is_empty() {
            return None;
        }
        for slice in &slices {
            if let Some(state) = inner.partitions.get_mut(&slice.partition) {
                state.tracker.register(slice.first, slice.last);
            }
        }
        inner.next_token += 1;
        let token = inner.next_token;
        inner.in_flight.insert(
            token,
            InFlight {
                slices,
                received_at,
            },
        );
        self.metrics.pending_batches.inc();
        Some(token)
    }

    /// Committable offsets not yet stored (drained: each is returned once).
    pub fn take_unstored(&self) -> Vec<(TopicPartition, i64)> {
        let mut inner = self.lock();
        inner
            .partitions
            .iter_mut()
            .filter_map(|(tp, s)| s.unstored.take().map(|o| (tp.clone(), o)))
            .collect()
    }

    /// The committable offset of every assigned partition that has one.
    pub fn committable(&self) -> Vec<(TopicPartition, i64)> {
        let inner = self.lock();
        inner
            .partitions
            .iter()
            .filter_map(|(tp, s)| s.tracker.committable().map(|o| (tp.clone(), o)))
            .collect()
    }

    /// Waits until no batch of `partitions` (all when `None`) is in flight, or `timeout`.
    /// Returns the number still in flight.
    pub fn wait_drained(&self, partitions: Option<&[TopicPartition]>, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            let pending = inner
                .in_flight
                .values()
                .filter(|f| f.touches(partitions))
                .count();
            let now = Instant::now();
            if pending == 0 || now >= deadline {
                return pending;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Stops the pipeline for `reason` (the first reason stays).
    pub fn fail(&self, reason: String) {
        self.lock().failure.get_or_insert(reason);
        self.changed.notify_all();
    }

    /// Why the pipeline must stop, if a batch failed.
    pub fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }
}

impl AckReceiver for AckState {
    fn resolved(&self, token: u64, status: AckStatus) {
        let mut inner = self.lock();
        let Some(flight) = inner.in_flight.remove(&token) else {
            return;
        };
        self.metrics.pending_batches.dec();
        self.metrics
            .end_to_end_latency
            .observe(flight.received_at.elapsed().as_secs_f64());
        if !status.is_committable() {
            self.metrics.batches_failed.inc();
            let first = &flight.slices[0];
            let reason = format!(
                "batch at {}[{}] offset {} was not delivered ({status:?}); stopping without committing it",
                first.partition.0, first.partition.1, first.first
            );
            tracing::error!(topic = %first.partition.0, partition = first.partition.1, offset = first.first, ?status, "batch failed; pipeline stops, records will be redelivered");
            inner.failure.get_or_insert(reason);
        }
        for slice in &flight.slices {
            if let Some(state) = inner.partitions.get_mut(&slice.partition)
                && state.generation == slice.generation
                && let Some(offset) = state.tracker.resolve(slice.first, status)
            {
                state.unstored = Some(offset);
            }
        }
        drop(inner);
        self.changed.notify_all();
    }
}
