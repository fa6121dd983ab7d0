//! The source's own queue of fetched messages, read in batches.
//!
//! rust-rdkafka's `poll` hands out one message per call: a lock, a wake-up check, an event and
//! an `Arc` per record, which made the poll thread the third-largest CPU cost of a pipeline.
//! librdkafka can return many messages per call (`rd_kafka_consume_batch_queue`), but not from
//! the consumer queue: that queue also carries rebalance events, which a batch call would serve
//! itself by forcing an unassign, bypassing the drain-and-commit the source does on revocation.
//! So the fetch queue of every assigned partition is forwarded to a queue of our own that only
//! ever holds messages and per-partition errors, and the consumer queue keeps the events.

use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Timestamp;

/// A librdkafka queue that the fetch queues of assigned partitions are forwarded to.
///
/// It must be dropped before the consumer is closed (librdkafka's rule for queue handles).
pub(super) struct FetchQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    client: NonNull<rd::rd_kafka_t>,
}

// SAFETY: librdkafka queues are thread-safe; the handle is only destroyed in `drop`.
unsafe impl Send for FetchQueue {}
// SAFETY: as above; every operation used here locks the queue inside librdkafka.
unsafe impl Sync for FetchQueue {}

impl FetchQueue {
    /// A new, empty queue of `consumer`'s client.
    pub(super) fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<Self> {
        let client = consumer.client().native_ptr();
        // SAFETY: `client` is a live handle for as long as the consumer lives, which outlives
        // this queue (see the type's docs).
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(client) })?;
        Some(FetchQueue {
            queue,
            client: NonNull::new(client)?,
        })
    }

    /// Forwards the fetch queues of `partitions` here. Called before they are assigned, so
    /// their first message already arrives here; librdkafka keeps an application's forward when
    /// it starts fetching. Returns how many partitions could not be forwarded (their messages
    /// then arrive on the consumer queue, which the poll loop also reads).
    pub(super) fn route(&self, partitions: &TopicPartitionList) -> usize {
        let mut missed = 0;
        for element in partitions.elements() {
            let Ok(topic) = std::ffi::CString::new(element.topic()) else {
                missed += 1;
                continue;
            };
            // SAFETY: the client is live; the partition handle is a reference-counted view of
            // the partition's fetch queue that we release at once (the forward stays).
            unsafe {
                let partition_queue = rd::rd_kafka_queue_get_partition(
                    self.client.as_ptr(),
                    topic.as_ptr(),
                    element.partition(),
                );
                if partition_queue.is_null() {
                    missed += 1;
                    continue;
                }
                rd::rd_kafka_queue_forward(partition_queue, self.queue.as_ptr());
                rd::rd_kafka_queue_destroy(partition_queue);
            }
        }
        missed
    }

    /// Moves up to `batch.capacity()` messages into `batch` (which is cleared first). Returns
    /// at once with what is there; only when nothing is there does it wait up to `wait` for a
    /// first message (librdkafka's batch call itself would wait for a full batch).
    pub(super) fn consume(&self, wait: Duration, batch: &mut FetchedBatch) {
        batch.clear();
        let capacity = batch.messages.capacity();
        if capacity == 0 {
            return;
        }
        let mut got = self.consume_into(0, batch.messages.as_mut_ptr(), capacity);
        if got == 0 && !wait.is_zero() {
            let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
            got = self.consume_into(wait_ms, batch.messages.as_mut_ptr(), 1);
            if got == 1 && capacity > 1 {
                // SAFETY: offset 1 is inside the allocation of `capacity` pointers.
                let rest = unsafe { batch.messages.as_mut_ptr().add(1) };
                got += self.consume_into(0, rest, capacity - 1);
            }
        }
        // SAFETY: librdkafka initialised the first `got` (≤ capacity) slots.
        unsafe { batch.messages.set_len(got) };
    }

    fn consume_into(
        &self,
        timeout_ms: i32,
        slots: *mut *mut rd::rd_kafka_message_t,
        size: usize,
    ) -> usize {
        // SAFETY: `slots` points to at least `size` writable pointer slots; the returned
        // messages are ours until `rd_kafka_message_destroy` (FetchedBatch::clear / drop).
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), timeout_ms, slots, size)
        };
        usize::try_from(n).unwrap_or(0)
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: the handle was created by `rd_kafka_queue_new` and is destroyed once. Fetch
        // queues still forwarded here keep the underlying queue alive; it is disabled, so later
        // messages are dropped by librdkafka (and fetched again by the next owner).
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// Messages taken from a [`FetchQueue`], owned until the next `consume` or drop.
pub(super) struct FetchedBatch {
    messages: Vec<*mut rd::rd_kafka_message_t>,
}

// SAFETY: the messages are plain heap objects of librdkafka, owned by this batch.
unsafe impl Send for FetchedBatch {}

impl FetchedBatch {
    /// Room for up to `capacity` messages per `consume`.
    pub(super) fn with_capacity(capacity: usize) -> Self {
        FetchedBatch {
            messages: Vec::with_capacity(capacity.max(1)),
        }
    }

    /// The messages, in queue order (each partition's in offset order).
    pub(super) fn iter(&self) -> impl Iterator<Item = FetchedMessage<'_>> {
        self.messages.iter().filter_map(|&m| {
            // SAFETY: every stored pointer is a live message until `clear`.
            NonNull::new(m).map(|message| FetchedMessage {
                message: unsafe { message.as_ref() },
            })
        })
    }

    /// Destroys the messages (their payloads live in librdkafka's fetch buffers).
    pub(super) fn clear(&mut self) {
        for message in self.messages.drain(..) {
            // SAFETY: each message was returned by librdkafka and is destroyed exactly once.
            unsafe { rd::rd_kafka_message_destroy(message) };
        }
    }
}

impl Drop for FetchedBatch {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A read-only view of one fetched message.
pub(super) struct FetchedMessage<'a> {
    message: &'a rd::rd_kafka_message_t,
}

impl<'a> FetchedMessage<'a> {
    /// The error librdkafka reports in place of a message (for example an offset out of
    /// range), if this is one.
    pub(super) fn error(&self) -> Option<rdkafka::error::KafkaError> {
        let err = self.message.err;
        (err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| {
            rdkafka::error::KafkaError::MessageConsumption(rdkafka::error::RDKafkaErrorCode::from(
                err,
            ))
        })
    }

    /// The topic handle: stable for the consumer's life, so it identifies the topic cheaply.
    pub(super) fn topic_handle(&self) -> usize {
        self.message.rkt as usize
    }

    /// The topic's name.
    pub(super) fn topic(&self) -> Option<&'a str> {
        if self.message.rkt.is_null() {
            return None;
        }
        // SAFETY: a message's topic handle lives as long as the message; the name is a
        // NUL-terminated string owned by it.
        unsafe { std::ffi::CStr::from_ptr(rd::rd_kafka_topic_name(self.message.rkt)) }
            .to_str()
            .ok()
    }

    pub(super) fn partition(&self) -> i32 {
        self.message.partition
    }

    pub(super) fn offset(&self) -> i64 {
        self.message.offset
    }

    pub(super) fn key(&self) -> Option<&'a [u8]> {
        bytes(self.message.key, self.message.key_len)
    }

    pub(super) fn payload(&self) -> Option<&'a [u8]> {
        bytes(self.message.payload, self.message.len)
    }

    /// Create or log-append time, in milliseconds since the epoch.
    pub(super) fn timestamp(&self) -> Timestamp {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        let ptr = std::ptr::from_ref(self.message).cast_mut();
        // SAFETY: reads the live message's timestamp.
        let ms = unsafe { rd::rd_kafka_message_timestamp(ptr, &mut kind) };
        match kind {
            _ if ms == -1 => Timestamp::NotAvailable,
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME => {
                Timestamp::CreateTime(ms)
            }
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => {
                Timestamp::LogAppendTime(ms)
            }
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => {
                Timestamp::NotAvailable
            }
        }
    }

    /// The headers in order; a header without value has `None`.
    pub(super) fn headers(&self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut headers = std::ptr::null_mut();
        let ptr = std::ptr::from_ref(self.message).cast_mut();
        // SAFETY: the headers belong to the live message and are only read here.
        unsafe {
            if rd::rd_kafka_message_headers(ptr, &mut headers)
                != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                || headers.is_null()
            {
                return Vec::new();
            }
            let count = rd::rd_kafka_header_cnt(headers);
            let mut out = Vec::with_capacity(count);
            for index in 0..count {
                let mut name = std::ptr::null();
                let mut value = std::ptr::null();
                let mut size = 0;
                if rd::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size)
                    != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    || name.is_null()
                {
                    break;
                }
                let name = std::ffi::CStr::from_ptr(name)
                    .to_string_lossy()
                    .into_owned();
                out.push((name, bytes(value.cast_mut(), size).map(<[u8]>::to_vec)));
            }
            out
        }
    }
}

fn bytes<'a>(ptr: *mut std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: librdkafka gives `len` readable bytes at `ptr`, alive with the message.
    Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::EmbeddedBroker;
    use rdkafka::config::ClientConfig;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::{Offset, TopicPartitionList};

    const PARTITIONS: i32 = 3;
    const PER_PARTITION: i64 = 40;

    fn produce(bootstrap: &str) {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        for partition in 0..PARTITIONS {
            for i in 0..PER_PARTITION {
                let payload = format!("{partition}:{i}");
                let mut record = BaseRecord::to("in")
                    .partition(partition)
                    .payload(&payload)
                    .key("k")
                    .timestamp(1_700_000_000_000 + i);
                if i == 0 {
                    record = record.headers(
                        OwnedHeaders::new()
                            .insert(Header {
                                key: "a",
                                value: Some("1"),
                            })
                            .insert(Header {
                                key: "b",
                                value: None::<&str>,
                            }),
                    );
                }
                producer.send(record).map_err(|(e, _)| e).unwrap();
            }
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    /// Every message of the routed partitions arrives on the fetch queue, in offset order per
    /// partition, with key, payload, headers and timestamp; none on the consumer queue.
    #[test]
    fn routed_partitions_arrive_on_the_fetch_queue_in_order() {
        let broker = EmbeddedBroker::start(&[("in", PARTITIONS)]).unwrap();
        produce(broker.bootstrap_servers());
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .set("group.id", "fetch-queue-test")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let queue = FetchQueue::new(&consumer).unwrap();
        let mut assignment = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            assignment
                .add_partition_offset("in", partition, Offset::Beginning)
                .unwrap();
        }
        assert_eq!(queue.route(&assignment), 0);
        consumer.assign(&assignment).unwrap();

        let mut next = [0i64; PARTITIONS as usize];
        let mut batch = FetchedBatch::with_capacity(16);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while next.iter().sum::<i64>() < PER_PARTITION * i64::from(PARTITIONS) {
            assert!(std::time::Instant::now() < deadline, "got {next:?}");
            assert!(
                consumer.poll(Duration::ZERO).is_none(),
                "a message went to the consumer queue"
            );
            queue.consume(Duration::from_millis(100), &mut batch);
            for message in batch.iter() {
                assert!(message.error().is_none());
                assert_eq!(message.topic(), Some("in"));
                let p = message.partition() as usize;
                assert_eq!(message.offset(), next[p], "partition {p} out of order");
                let i = next[p];
                assert_eq!(message.payload(), Some(format!("{p}:{i}").as_bytes()));
                assert_eq!(message.key(), Some(&b"k"[..]));
                assert_eq!(
                    message.timestamp(),
                    Timestamp::CreateTime(1_700_000_000_000 + i)
                );
                let expected_headers = if i == 0 {
                    vec![
                        ("a".to_string(), Some(b"1".to_vec())),
                        ("b".to_string(), None),
                    ]
                } else {
                    Vec::new()
                };
                assert_eq!(message.headers(), expected_headers);
                next[p] += 1;
            }
        }
        // Empty and waiting: returns after the wait with nothing.
        queue.consume(Duration::from_millis(10), &mut batch);
        assert_eq!(batch.iter().count(), 0);
        drop(batch);
        drop(queue);
        drop(consumer);
    }
}
