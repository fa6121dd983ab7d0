//! Sources: where records come from. Each source reads raw records, groups them into
//! per-partition micro-batches, hands them to the pipeline's workers through a [`BatchRouter`],
//! and commits positions only as acknowledgements allow.

pub mod kafka;
pub mod nats;

use std::hash::{Hash, Hasher};

use tokio::sync::mpsc;

use crate::batch::SourceBatch;

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
