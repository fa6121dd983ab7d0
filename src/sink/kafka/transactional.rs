//! The Kafka sinks' producer in an exactly-once pipeline: transactional, one per pipeline
//! instance, shared by every output and the dead-letter sink (see
//! [`crate::connect::transaction`]).

use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaResult;
use rdkafka::producer::Producer;
use rdkafka::{ClientConfig, TopicPartitionList};

use super::delivery::PacedProducer;
use crate::connect::transaction::TransactionalProducer;

/// The transactional settings of an exactly-once pipeline's producer.
#[derive(Debug, Clone)]
pub struct TransactionalSettings {
    /// `transactional.id`.
    pub id: String,
    /// How often the transaction commits (sets the default `transaction.timeout.ms`).
    pub interval: Duration,
}

/// Least `transaction.timeout.ms` set by default: a crashed instance's open transaction blocks
/// `read_committed` readers until the coordinator aborts it, so keep it short, but well above
/// the commit interval.
const MIN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

impl TransactionalSettings {
    /// Adds the transactional settings to a producer configuration; a
    /// `transaction.timeout.ms` the user set is kept.
    pub(super) fn apply(&self, config: &mut ClientConfig) {
        config.set("transactional.id", &self.id);
        if config.get("transaction.timeout.ms").is_none() {
            let timeout = (self.interval * 10).max(MIN_TRANSACTION_TIMEOUT);
            config.set("transaction.timeout.ms", timeout.as_millis().to_string());
        }
    }
}

impl TransactionalProducer for PacedProducer {
    fn init_transactions(&self, timeout: Duration) -> KafkaResult<()> {
        self.producer().init_transactions(timeout)
    }

    fn begin_transaction(&self) -> KafkaResult<()> {
        self.producer().begin_transaction()
    }

    fn send_offsets_to_transaction(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
        timeout: Duration,
    ) -> KafkaResult<()> {
        self.producer()
            .send_offsets_to_transaction(offsets, group, timeout)
    }

    fn commit_transaction(&self, timeout: Duration) -> KafkaResult<()> {
        self.producer().commit_transaction(timeout)
    }

    fn abort_transaction(&self, timeout: Duration) -> KafkaResult<()> {
        self.producer().abort_transaction(timeout)
    }
}
