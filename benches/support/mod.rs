//! Helpers shared by the benchmarks: CPU accounting from /proc, a watcher of watermarks and
//! committed offsets, producing and preloading topics.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The Python virtualenv of comparison scripts (`STREAMGATE_VENV`, default
/// `~/.cache/streamgate-venv`, the one tests/run.sh installs).
pub(crate) fn venv() -> std::path::PathBuf {
    std::env::var_os("STREAMGATE_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/streamgate-venv")
        })
}

/// Starts `streamgate mock-model` on a free loopback port; returns the process and its URL.
pub(crate) fn start_mock_model(output_name: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args([
            "mock-model",
            "--listen",
            "127.0.0.1:0",
            "--output-name",
            output_name,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start mock-model");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("mock-model url");
    let url = line.trim().trim_start_matches("url=").to_string();
    (child, url)
}

/// Clock ticks per second of /proc/*/stat utime/stime (USER_HZ; 100 on Linux).
pub(crate) const CLOCK_TICKS: f64 = 100.0;

/// CPU seconds (user + system) used so far by process `pid` (`self` for this one).
pub(crate) fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)" start at field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS)
}

pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) used so far by this whole process, broker threads included.
pub(crate) fn cpu_seconds() -> f64 {
    process_cpu_seconds("self").expect("/proc/self/stat")
}

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

/// One throughput measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throughput {
    pub records: u64,
    pub seconds: f64,
    pub cpu_seconds: f64,
}

impl Throughput {
    pub(crate) fn per_second(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    pub(crate) fn cpu_per_million(&self) -> f64 {
        self.cpu_seconds / (self.records as f64 / 1e6)
    }
}

/// Reads watermarks and committed offsets through one long-lived client (it never joins a
/// group, so it does not disturb the pipeline's consumer group).
pub(crate) struct Watcher {
    pub consumer: BaseConsumer,
}

impl Watcher {
    pub(crate) fn new(bootstrap: &str, group: &str) -> Self {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("watcher consumer");
        Watcher { consumer }
    }

    pub(crate) fn highs(&self, topic: &str, partitions: i32) -> HashMap<i32, i64> {
        (0..partitions)
            .map(|p| {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .expect("watermarks");
                (p, high)
            })
            .collect()
    }

    pub(crate) fn len(&self, topic: &str, partitions: i32) -> i64 {
        self.highs(topic, partitions).values().sum()
    }

    /// Whether this watcher's group has committed the end of every partition of `topic`.
    pub(crate) fn fully_committed(&self, topic: &str, partitions: i32) -> bool {
        let highs = self.highs(topic, partitions);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        committed.elements().iter().all(|e| match e.offset() {
            Offset::Offset(o) => highs.get(&e.partition()) == Some(&o),
            _ => false,
        })
    }
}

pub(crate) fn producer(
    bootstrap: &str,
    linger_ms: &str,
) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", linger_ms)
        .set("enable.idempotence", "true")
        .set("compression.type", "none")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

pub(crate) fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

/// The passthrough loop, the cheapest way librdkafka allows: assigns `assignment` with every
/// partition's fetch queue forwarded to one queue that is read in batches
/// (`rd_kafka_consume_batch_queue`), and produces each payload and key unchanged, by topic
/// handle, to the same partition of `output`, until `n` records were copied; panics after
/// `timeout`.
pub(crate) fn copy_records(
    consumer: &BaseConsumer,
    assignment: &TopicPartitionList,
    producer: &ThreadedProducer<DefaultProducerContext>,
    output: &str,
    n: u64,
    timeout: Duration,
) {
    use rdkafka::bindings as rd;
    use rdkafka::bindings::rd_kafka_vtype_t::*;
    use std::ffi::CString;
    let deadline = Instant::now() + timeout;
    let consumer_rk = consumer.client().native_ptr();
    let producer_rk = producer.client().native_ptr();
    let output = CString::new(output).expect("topic name");
    // SAFETY: both clients outlive this function; every handle made here is destroyed here.
    unsafe {
        let queue = rd::rd_kafka_queue_new(consumer_rk);
        for e in assignment.elements() {
            let topic = CString::new(e.topic()).expect("topic name");
            let partition_queue =
                rd::rd_kafka_queue_get_partition(consumer_rk, topic.as_ptr(), e.partition());
            assert!(!partition_queue.is_null(), "partition queue");
            rd::rd_kafka_queue_forward(partition_queue, queue);
            rd::rd_kafka_queue_destroy(partition_queue);
        }
        consumer.assign(assignment).expect("assign");
        let topic = rd::rd_kafka_topic_new(producer_rk, output.as_ptr(), std::ptr::null_mut());
        assert!(!topic.is_null(), "output topic handle");
        let mut batch: Vec<*mut rd::rd_kafka_message_t> = vec![std::ptr::null_mut(); 4096];
        let mut consumed = 0u64;
        while consumed < n {
            assert!(
                Instant::now() < deadline,
                "passthrough timed out after {consumed} records"
            );
            // Whatever is there at once; otherwise wait for a first message.
            let mut got =
                rd::rd_kafka_consume_batch_queue(queue, 0, batch.as_mut_ptr(), batch.len());
            if got == 0 {
                got = rd::rd_kafka_consume_batch_queue(queue, 100, batch.as_mut_ptr(), 1);
            }
            for &m in &batch[..usize::try_from(got).unwrap_or(0)] {
                let message = &*m;
                assert_eq!(
                    message.err,
                    rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                    "passthrough consume"
                );
                loop {
                    let err = rd::rd_kafka_producev(
                        producer_rk,
                        RD_KAFKA_VTYPE_RKT,
                        topic,
                        RD_KAFKA_VTYPE_PARTITION,
                        message.partition,
                        RD_KAFKA_VTYPE_MSGFLAGS,
                        rd::RD_KAFKA_MSG_F_COPY,
                        RD_KAFKA_VTYPE_VALUE,
                        message.payload,
                        message.len,
                        RD_KAFKA_VTYPE_KEY,
                        message.key,
                        message.key_len,
                        RD_KAFKA_VTYPE_END,
                    );
                    if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                        break;
                    }
                    assert_eq!(
                        err,
                        rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__QUEUE_FULL,
                        "passthrough produce"
                    );
                    std::thread::sleep(Duration::from_micros(200));
                }
                rd::rd_kafka_message_destroy(m);
                consumed += 1;
            }
        }
        rd::rd_kafka_topic_destroy(topic);
        rd::rd_kafka_queue_destroy(queue);
    }
}

/// The passthrough loop as rust-rdkafka's API suggests writing it: assigns `assignment`, polls
/// one message at a time and `send`s each payload and key unchanged to the same partition of
/// `output`, until `n` records were copied; panics after `timeout`.
pub(crate) fn copy_records_polled(
    consumer: &BaseConsumer,
    assignment: &TopicPartitionList,
    producer: &ThreadedProducer<DefaultProducerContext>,
    output: &str,
    n: u64,
    timeout: Duration,
) {
    use rdkafka::message::Message;
    consumer.assign(assignment).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut consumed = 0u64;
    while consumed < n {
        assert!(
            Instant::now() < deadline,
            "passthrough timed out after {consumed} records"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                send(
                    producer,
                    BaseRecord::to(output)
                        .key(m.key().unwrap_or_default())
                        .payload(m.payload().unwrap_or_default())
                        .partition(m.partition()),
                );
                consumed += 1;
            }
            Some(Err(e)) => panic!("passthrough consume: {e}"),
            None => {}
        }
    }
}

/// Polls `condition` every `every` until it holds; panics after `timeout`.
pub(crate) fn wait_until(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut condition: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
}

/// Produces `payloads` (keyed by index, record `i` to partition `i % partitions`) and waits
/// until the topic holds them all.
pub(crate) fn preload(bootstrap: &str, topic: &str, partitions: i32, payloads: &[Vec<u8>]) {
    let producer = producer(bootstrap, "5");
    for (i, payload) in payloads.iter().enumerate() {
        let key = i.to_string();
        send(
            &producer,
            BaseRecord::to(topic)
                .key(key.as_bytes())
                .payload(payload.as_slice())
                .partition(i as i32 % partitions),
        );
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let watcher = Watcher::new(bootstrap, "bench-preload");
    let n = payloads.len() as i64;
    wait_until(
        &format!("{topic} preloaded"),
        Duration::from_secs(120),
        Duration::from_millis(20),
        || watcher.len(topic, partitions) >= n,
    );
    let highs = watcher.highs(topic, partitions);
    let total: i64 = highs.values().sum();
    assert_eq!(total, n, "{topic} holds {total} records, expected {n}");
    // Nothing may have been purged by the mock broker's per-partition retention.
    for p in 0..partitions {
        let (low, _) = watcher
            .consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        assert_eq!(
            low, 0,
            "{topic} [{p}] lost records to the mock broker's retention"
        );
    }
}

/// The CPU model of this machine, for results files.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The current UTC time (`2026-12-08 04:10 UTC`), for results files.
pub(crate) fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The 1, 5 and 15 minute load averages, for results files.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A passthrough from `input` to `output` (`partitions` each): one `BaseConsumer` assigned
/// every partition from the beginning and one idempotent producer (linger.ms 5) copy `n`
/// records, batched (the physical limit) or one `poll` and `send` per message, until the
/// output topic holds them all. `start` is called right before copying (after the clients
/// are made) and its value handed to `done` once the output is complete: the caller's clock.
pub(crate) fn passthrough_timed<T, R>(
    bootstrap: &str,
    (input, output, partitions): (&str, &str, i32),
    n: u64,
    batched: bool,
    start: impl FnOnce() -> T,
    done: impl FnOnce(T) -> R,
) -> R {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-passthrough")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let producer = producer(bootstrap, "5");
    let watcher = Watcher::new(bootstrap, "bench-passthrough-watch");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(input, p, Offset::Beginning)
            .expect("tpl");
    }
    let clock = start();
    let copy = if batched {
        copy_records
    } else {
        copy_records_polled
    };
    copy(
        &consumer,
        &tpl,
        &producer,
        output,
        n,
        Duration::from_secs(600),
    );
    producer.flush(Duration::from_secs(120)).expect("flush");
    wait_until(
        "passthrough output complete",
        Duration::from_secs(120),
        Duration::from_millis(2),
        || watcher.len(output, partitions) >= n as i64,
    );
    done(clock)
}
