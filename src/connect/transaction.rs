//! The Kafka transaction an exactly-once pipeline's source and sinks share.
//!
//! Every output and dead letter of the pipeline goes through one transactional producer. A
//! worker holds a [`SendPass`] while it hands one batch's messages to that producer and, once
//! they are all handed over, records the batch's input offsets ([`KafkaTransaction::record`]).
//! The source commits on batch boundaries ([`KafkaTransaction::commit`], every
//! `transaction_interval`, before giving partitions away, and at shutdown): it closes the gate
//! so no batch is half-sent, sends the recorded offsets into the transaction with the consumer
//! group's metadata, and commits. The outputs of a batch and its input offsets therefore
//! become visible to `read_committed` readers together, or not at all.
//!
//! Anything that leaves a batch's messages in the transaction without its offsets (a sink
//! error, a record failing under `on_error: fail`, a delivery the broker refused) poisons the
//! transaction: the next commit aborts it instead, and the pipeline stops so that it restarts
//! from the last committed offsets.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

/// What the transaction needs of the sinks' producer (implemented by the Kafka sink).
pub trait TransactionalProducer: Send + Sync {
    /// Registers the transactional id with the coordinator, fencing an earlier producer of
    /// the same id (its open transaction is aborted).
    fn init_transactions(&self, timeout: Duration) -> KafkaResult<()>;
    /// Starts a transaction.
    fn begin_transaction(&self) -> KafkaResult<()>;
    /// Adds the consumer group's offsets to the transaction.
    fn send_offsets_to_transaction(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
        timeout: Duration,
    ) -> KafkaResult<()>;
    /// Delivers every message of the transaction and commits it.
    fn commit_transaction(&self, timeout: Duration) -> KafkaResult<()>;
    /// Aborts the transaction: its messages are never visible to `read_committed` readers.
    fn abort_transaction(&self, timeout: Duration) -> KafkaResult<()>;
}

/// Why the transaction could not be set up or committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// Two Kafka sinks of the pipeline use different producers.
    #[error(
        "delivery: exactly_once needs every Kafka output and the dead-letter sink to use one \
         producer: give them the same bootstrap_servers, security and properties"
    )]
    SecondProducer,
    /// The pipeline has no Kafka sink to produce with.
    #[error("delivery: exactly_once needs a Kafka output")]
    NoProducer,
    /// A librdkafka transaction call failed.
    #[error("kafka transaction: {step}: {message}")]
    Kafka {
        /// Which call.
        step: &'static str,
        /// librdkafka's error.
        message: String,
    },
    /// A batch's messages went into the transaction without its offsets.
    #[error("transaction aborted: {0}")]
    Poisoned(String),
}

fn kafka(step: &'static str) -> impl Fn(rdkafka::error::KafkaError) -> TransactionError {
    move |e| TransactionError::Kafka {
        step,
        message: e.to_string(),
    }
}

/// The shared transaction of one pipeline instance.
pub struct KafkaTransaction {
    producer: OnceLock<Arc<dyn TransactionalProducer>>,
    gate: Gate,
    state: Mutex<State>,
    /// How often the source commits.
    pub interval: Duration,
    /// Longest a transaction call may take.
    timeout: Duration,
}

#[derive(Default)]
struct State {
    /// Next offset to commit per partition, for batches fully handed to the producer.
    produced: BTreeMap<(Arc<str>, i32), i64>,
    /// Why the open transaction must be aborted.
    poisoned: Option<String>,
    /// Whether a transaction is open.
    open: bool,
}

impl State {
    /// Moves a partition's next offset to commit past `offset`.
    fn advance(&mut self, (topic, partition, offset): (&Arc<str>, i32, i64)) {
        let next = self
            .produced
            .entry((topic.clone(), partition))
            .or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }
}

impl KafkaTransaction {
    /// A transaction committed every `interval`; each call to librdkafka waits at most
    /// `timeout`.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        KafkaTransaction {
            producer: OnceLock::new(),
            gate: Gate::default(),
            state: Mutex::new(State::default()),
            interval,
            timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a sink's producer. The first one is initialised for transactions and a
    /// transaction begins; every later one must be the same producer.
    pub fn attach(&self, producer: Arc<dyn TransactionalProducer>) -> Result<(), TransactionError> {
        if let Some(attached) = self.producer.get() {
            // Compare the objects, not the vtables.
            return if std::ptr::addr_eq(Arc::as_ptr(attached), Arc::as_ptr(&producer)) {
                Ok(())
            } else {
                Err(TransactionError::SecondProducer)
            };
        }
        producer
            .init_transactions(self.timeout)
            .map_err(kafka("init_transactions"))?;
        producer
            .begin_transaction()
            .map_err(kafka("begin_transaction"))?;
        self.lock().open = true;
        let _ = self.producer.set(producer);
        Ok(())
    }

    /// Whether a producer is attached.
    pub fn is_attached(&self) -> bool {
        self.producer.get().is_some()
    }

    /// Waits until no commit is in progress and lets one batch hand its messages over.
    pub async fn send_pass(&self) -> SendPass<'_> {
        self.gate.enter().await
    }

    /// Records that every message of a batch holding `offsets` (topic, partition, offset) is
    /// handed to the producer: their next offsets go into the next commit.
    pub fn record<'a>(&self, offsets: impl IntoIterator<Item = (&'a Arc<str>, i32, i64)>) {
        // A batch holds runs of records of one partition: keep each run's highest offset and
        // touch the map once per run, not once per record.
        let mut state = self.lock();
        let mut run: Option<(&Arc<str>, i32, i64)> = None;
        for (topic, partition, offset) in offsets {
            match &mut run {
                Some((t, p, highest)) if Arc::ptr_eq(t, topic) && *p == partition => {
                    *highest = (*highest).max(offset);
                }
                _ => {
                    if let Some(done) = run.replace((topic, partition, offset)) {
                        state.advance(done);
                    }
                }
            }
        }
        if let Some(done) = run {
            state.advance(done);
        }
    }

    /// Marks the open transaction as holding messages without their offsets: it will be
    /// aborted, and the pipeline must stop.
    pub fn poison(&self, why: impl Into<String>) {
        self.lock().poisoned.get_or_insert_with(|| why.into());
    }

    /// Why the transaction was poisoned, if it was.
    pub fn poisoned(&self) -> Option<String> {
        self.lock().poisoned.clone()
    }

    /// Commits the open transaction with the recorded offsets and begins the next one;
    /// returns how many partitions' offsets it committed. Blocks (a thread, not a task) until
    /// no batch is half-sent. A poisoned or failing transaction is aborted, and the error
    /// says why: the caller stops the pipeline.
    pub fn commit(&self, group: &ConsumerGroupMetadata) -> Result<usize, TransactionError> {
        let Some(producer) = self.producer.get() else {
            return Ok(0);
        };
        let _closed = self.gate.close();
        let mut state = self.lock();
        if !state.open {
            return Err(TransactionError::Poisoned(
                "no transaction is open after an earlier failure".into(),
            ));
        }
        if let Some(why) = state.poisoned.clone() {
            self.abort_locked(producer, &mut state);
            return Err(TransactionError::Poisoned(why));
        }
        if state.produced.is_empty() {
            return Ok(0);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &state.produced {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(kafka("offset list"))?;
        }
        let committed = producer
            .send_offsets_to_transaction(&offsets, group, self.timeout)
            .map_err(kafka("send_offsets_to_transaction"))
            .and_then(|()| {
                producer
                    .commit_transaction(self.timeout)
                    .map_err(kafka("commit_transaction"))
            });
        if let Err(e) = committed {
            self.abort_locked(producer, &mut state);
            return Err(e);
        }
        let partitions = state.produced.len();
        state.produced.clear();
        state.open = false;
        producer
            .begin_transaction()
            .map_err(kafka("begin_transaction"))?;
        state.open = true;
        Ok(partitions)
    }

    /// Aborts the open transaction (at shutdown after a failure): nothing it holds becomes
    /// visible, and no later commit is possible.
    pub fn abort(&self) {
        if let Some(producer) = self.producer.get() {
            let _closed = self.gate.close();
            let mut state = self.lock();
            if state.open {
                self.abort_locked(producer, &mut state);
            }
        }
    }

    fn abort_locked(&self, producer: &Arc<dyn TransactionalProducer>, state: &mut State) {
        if let Err(e) = producer.abort_transaction(self.timeout) {
            // The coordinator aborts it after `transaction.timeout.ms`, or when the next
            // instance with this transactional id starts.
            tracing::warn!(error = %e, "aborting the Kafka transaction failed");
        }
        state.produced.clear();
        state.open = false;
        state.poisoned.get_or_insert_with(|| "aborted".into());
    }
}

/// Lets batches hand messages to the producer, or a commit run with none half-sent.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    /// Wakes the committer when the last pass is returned.
    drained: Condvar,
    /// Wakes senders when the commit is done.
    reopened: tokio::sync::Notify,
}

#[derive(Default)]
struct GateState {
    passes: usize,
    closed: bool,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn enter(&self) -> SendPass<'_> {
        loop {
            let reopened = self.reopened.notified();
            tokio::pin!(reopened);
            // Registered before the check, so a reopening in between is not missed.
            reopened.as_mut().enable();
            {
                let mut state = self.lock();
                if !state.closed {
                    state.passes += 1;
                    return SendPass { gate: self };
                }
            }
            reopened.await;
        }
    }

    fn close(&self) -> Closed<'_> {
        let mut state = self.lock();
        state.closed = true;
        while state.passes > 0 {
            state = self.drained.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        Closed { gate: self }
    }
}

/// Held while a batch hands its messages to the producer; no commit runs meanwhile.
pub struct SendPass<'a> {
    gate: &'a Gate,
}

impl Drop for SendPass<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.passes -= 1;
        if state.passes == 0 {
            self.gate.drained.notify_all();
        }
    }
}

struct Closed<'a> {
    gate: &'a Gate,
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.gate.lock().closed = false;
        self.gate.reopened.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::EmbeddedBroker;
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    /// Records the calls made, in order.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
    }

    impl Recorder {
        fn push(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut self.calls.lock().unwrap())
        }
    }

    impl TransactionalProducer for Recorder {
        fn init_transactions(&self, _: Duration) -> KafkaResult<()> {
            self.push("init".into());
            Ok(())
        }
        fn begin_transaction(&self) -> KafkaResult<()> {
            self.push("begin".into());
            Ok(())
        }
        fn send_offsets_to_transaction(
            &self,
            offsets: &TopicPartitionList,
            _: &ConsumerGroupMetadata,
            _: Duration,
        ) -> KafkaResult<()> {
            let list: Vec<String> = offsets
                .elements()
                .iter()
                .map(|e| {
                    format!(
                        "{}/{}@{}",
                        e.topic(),
                        e.partition(),
                        e.offset().to_raw().unwrap()
                    )
                })
                .collect();
            self.push(format!("offsets {}", list.join(",")));
            Ok(())
        }
        fn commit_transaction(&self, _: Duration) -> KafkaResult<()> {
            self.push("commit".into());
            Ok(())
        }
        fn abort_transaction(&self, _: Duration) -> KafkaResult<()> {
            self.push("abort".into());
            Ok(())
        }
    }

    /// A consumer group's metadata, from a consumer of an embedded broker.
    fn group() -> (EmbeddedBroker, ConsumerGroupMetadata) {
        let broker = EmbeddedBroker::start(&[("in", 1)]).unwrap();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .set("group.id", "g")
            .create()
            .unwrap();
        let metadata = consumer.group_metadata().unwrap();
        (broker, metadata)
    }

    fn attached() -> (Arc<Recorder>, KafkaTransaction) {
        let producer = Arc::new(Recorder::default());
        let tx = KafkaTransaction::new(Duration::from_millis(100), Duration::from_secs(1));
        tx.attach(producer.clone()).unwrap();
        assert_eq!(producer.calls(), ["init", "begin"]);
        (producer, tx)
    }

    #[test]
    fn a_commit_sends_the_next_offset_of_each_recorded_partition_then_begins_again() {
        let (_broker, group) = group();
        let (producer, tx) = attached();
        assert_eq!(
            tx.commit(&group),
            Ok(0),
            "nothing recorded: nothing to commit"
        );
        assert!(producer.calls().is_empty());
        let topic: Arc<str> = Arc::from("in");
        tx.record([(&topic, 0, 10), (&topic, 0, 11), (&topic, 3, 4)]);
        tx.record([(&topic, 0, 7)]);
        assert_eq!(tx.commit(&group), Ok(2));
        assert_eq!(
            producer.calls(),
            ["offsets in/0@12,in/3@5", "commit", "begin"]
        );
    }

    #[test]
    fn a_poisoned_transaction_is_aborted_and_commits_no_more() {
        let (_broker, group) = group();
        let (producer, tx) = attached();
        let topic: Arc<str> = Arc::from("in");
        tx.record([(&topic, 0, 1)]);
        tx.poison("output out: broker down");
        let error = tx.commit(&group).unwrap_err();
        assert_eq!(
            error.to_string(),
            "transaction aborted: output out: broker down"
        );
        assert_eq!(producer.calls(), ["abort"]);
        assert!(tx.commit(&group).is_err());
        assert!(producer.calls().is_empty(), "no second abort, no commit");
    }

    #[test]
    fn a_second_producer_is_refused() {
        let (_producer, tx) = attached();
        let other = Arc::new(Recorder::default());
        assert_eq!(
            tx.attach(other.clone()),
            Err(TransactionError::SecondProducer)
        );
        assert!(other.calls().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_waits_for_the_batch_being_sent() {
        let (_broker, group) = group();
        let (producer, tx) = attached();
        let tx = Arc::new(tx);
        let topic: Arc<str> = Arc::from("in");
        let pass = tx.send_pass().await;
        let committer = {
            let tx = tx.clone();
            std::thread::spawn(move || tx.commit(&group))
        };
        // The committer cannot pass the gate before this batch's offsets are recorded.
        tx.record([(&topic, 0, 41)]);
        drop(pass);
        assert_eq!(committer.join().unwrap(), Ok(1));
        assert_eq!(producer.calls(), ["offsets in/0@42", "commit", "begin"]);
        // The gate is open again.
        drop(tx.send_pass().await);
    }
}
