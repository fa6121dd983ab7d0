//! The unit of work: raw records read from a source, with their positions, plus the receipt that
//! reports their fate back to the source; and the vocabulary every stage uses to say why a
//! record failed ([`failure`]).

pub(crate) mod failure;

pub use failure::{
    ErrorClass, Failure, Failures, ModelContext, RecordFailure, Stage, truncate_message,
};

use std::sync::Arc;
use std::time::Instant;

use crate::ack::PendingReceipt;

/// Where a record came from. For Kafka: topic, partition, offset. Other sources map onto the
/// same three fields (NATS: subject, 0, stream sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Kafka topic (or NATS subject, or file path).
    pub topic: Arc<str>,
    /// Kafka partition; 0 where the source has none.
    pub partition: i32,
    /// Offset within the partition (or stream sequence, or row index).
    pub offset: i64,
}

/// One record exactly as the source delivered it. The original bytes are kept so that a record
/// that fails anywhere in the pipeline can be dead-lettered unchanged.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// Message key, if any.
    pub key: Option<Vec<u8>>,
    /// Message payload (empty for a tombstone).
    pub payload: Vec<u8>,
    /// Message headers in their original order; a header without value has `None`.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Broker or producer timestamp in milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// Source position.
    pub position: Position,
}

/// A micro-batch of records from one source partition, in position order.
#[derive(Debug)]
pub struct SourceBatch {
    /// The records, in order.
    pub records: Vec<RawRecord>,
    /// Fail-safe receipt for the whole batch: resolved by the pipeline once every row has been
    /// handed to its outputs (each of which holds its own receipt).
    pub receipt: PendingReceipt,
    /// When the first record of the batch was received (for end-to-end latency).
    pub received_at: Instant,
    /// Whether the positions identify the records across restarts (Kafka offsets, JetStream
    /// sequences), so sinks may derive message ids from them; false for core NATS.
    pub stable_positions: bool,
}

impl SourceBatch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
