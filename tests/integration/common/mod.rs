//! Test harness: embedded broker helpers, producing and reading topics to the end, waiting on
//! conditions (polling with a deadline, never sleeping as synchronisation), child processes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub(crate) mod pki;
pub(crate) mod real_kafka;

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub(crate) struct ReadMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Produces `records` (key, payload) to `topic`, record `i` to partition `i % partitions`.
/// Returns the (partition, offset) of each record, in order.
pub(crate) fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    records: &[(Vec<u8>, Vec<u8>)],
) -> Vec<(i32, i64)> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for (i, (key, payload)) in records.iter().enumerate() {
        let mut record = BaseRecord::to(topic)
            .key(key.as_slice())
            .payload(payload.as_slice())
            .partition(i as i32 % partitions);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    // Offsets are assigned in send order per partition, starting where the partition was.
    let mut next: HashMap<i32, i64> = HashMap::new();
    let start = low_watermarks_after(bootstrap, topic, partitions, records.len());
    records
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let p = i as i32 % partitions;
            let o = next.entry(p).or_insert(start[&p]);
            let offset = *o;
            *o += 1;
            (p, offset)
        })
        .collect()
}

/// First offset of this produce run per partition: high watermark minus what we just wrote.
fn low_watermarks_after(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
) -> HashMap<i32, i64> {
    let highs = high_watermarks(bootstrap, topic, partitions);
    (0..partitions)
        .map(|p| {
            let written = (n / partitions as usize) as i64
                + i64::from((p as usize) < n % partitions as usize);
            (p, highs[&p] - written)
        })
        .collect()
}

fn consumer(bootstrap: &str, group: Option<&str>) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.auto.commit", "false")
        .set("group.id", group.unwrap_or("streamgate-tests-reader"));
    c.create().expect("consumer")
}

/// High watermark of every partition. Transient errors are retried for up to 30 s: right
/// after a topic is created, Apache Kafka may answer `NotLeaderForPartition` for a moment.
pub(crate) fn high_watermarks(bootstrap: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_high_watermarks(bootstrap, topic, partitions, Duration::from_secs(10)) {
            Ok(highs) => return highs,
            Err(e) if Instant::now() < deadline => {
                eprintln!("watermarks of {topic}: {e}; trying again");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("watermarks of {topic}: {e}"),
        }
    }
}

/// High watermark of every partition, or the first error (a broker down or paused).
pub(crate) fn try_high_watermarks(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<HashMap<i32, i64>> {
    let c = consumer(bootstrap, None);
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, timeout)
                .map(|(_, high)| (p, high))
        })
        .collect()
}

/// Total messages in a topic (sum of high watermarks; nothing is deleted in these tests).
pub(crate) fn topic_len(bootstrap: &str, topic: &str, partitions: i32) -> i64 {
    high_watermarks(bootstrap, topic, partitions).values().sum()
}

/// Committed offsets of `group` for every partition (`None` where nothing is committed).
pub(crate) fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> HashMap<i32, Option<i64>> {
    let c = consumer(bootstrap, Some(group));
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let result = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    result
        .elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), o)
        })
        .collect()
}

/// Whether `group` has committed the end of every partition of `topic`.
pub(crate) fn fully_committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> bool {
    let highs = high_watermarks(bootstrap, topic, partitions);
    let committed = committed(bootstrap, group, topic, partitions);
    highs
        .iter()
        .all(|(p, h)| committed.get(p).copied().flatten() == Some(*h))
}

/// Reads every message currently in `topic` (up to the high watermarks at call time).
pub(crate) fn read_all(bootstrap: &str, topic: &str, partitions: i32) -> Vec<ReadMessage> {
    let highs = high_watermarks(bootstrap, topic, partitions);
    let c = consumer(bootstrap, None);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).expect("assign");
    let mut remaining: HashMap<i32, i64> = highs.into_iter().filter(|(_, h)| *h > 0).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !remaining.is_empty() {
        assert!(
            Instant::now() < deadline,
            "timed out reading {topic}: {remaining:?} left"
        );
        let Some(result) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = result.expect("read");
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ReadMessage {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
        if let Some(h) = remaining.get(&m.partition())
            && m.offset() + 1 >= *h
        {
            remaining.remove(&m.partition());
        }
    }
    out
}

/// A plain reqwest client for tests (reqwest's defaults; ring as the rustls provider, which
/// Streamgate's reqwest build leaves to the application).
pub(crate) fn http() -> reqwest::Client {
    streamgate::tls::install_default_provider();
    reqwest::Client::new()
}

/// A free loopback port for a server that needs its port before it starts (the probing
/// listener is closed again at once).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `condition` every `every` until it holds or `timeout` passes (then panics with `what`).
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

/// Async variant of [`wait_until`] that does not block the runtime.
pub(crate) async fn wait_until_async(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut condition: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

/// (key, payload) pairs.
pub(crate) type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Synthetic transactions: `n` records keyed by their index, a share `malformed` bad.
/// Returns the records and the indices of the malformed ones.
pub(crate) fn transactions(n: u64, malformed: f64) -> (Records, Vec<usize>) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let mut bad = Vec::new();
    let records = (0..n)
        .map(|i| {
            let payload = if streamgate::testing::generator::is_malformed(i, malformed) {
                bad.push(i as usize);
                streamgate::testing::generator::malformed(&mut rng, i)
            } else {
                streamgate::testing::generator::transaction(&mut rng, i)
            };
            (i.to_string().into_bytes(), payload)
        })
        .collect();
    (records, bad)
}

/// The Python virtualenv `tests/run.sh` installs the conformance tools into
/// (`STREAMGATE_VENV`, default `~/.cache/streamgate-venv`).
pub(crate) fn venv() -> std::path::PathBuf {
    std::env::var_os("STREAMGATE_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/streamgate-venv")
        })
}

/// Path of the streamgate binary built for these tests.
pub(crate) fn streamgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_streamgate")
}

/// Resident memory of a process in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs a compiled pipeline in the background; cancel the token to stop it gracefully.
pub(crate) fn spawn_pipeline(
    compiled: std::sync::Arc<streamgate::plan::CompiledPipeline>,
    metrics: &streamgate::telemetry::Metrics,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<
        Result<streamgate::source::kafka::SourceReport, streamgate::runtime::RuntimeError>,
    >,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let (m, s) = (metrics.clone(), stop.clone());
    let task = tokio::spawn(async move {
        streamgate::runtime::run_pipeline(
            compiled,
            &m,
            s,
            streamgate::runtime::StatusBoard::default(),
        )
        .await
    });
    (stop, task)
}

/// Waits, without blocking the runtime, until `group` committed the end of every partition.
pub(crate) async fn wait_committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) {
    let (b, g, t) = (bootstrap.to_string(), group.to_string(), topic.to_string());
    wait_until_async(
        &format!("{group} to commit all of {topic}"),
        Duration::from_secs(300),
        Duration::from_millis(100),
        || fully_committed(&b, &g, &t, partitions),
    )
    .await;
}

/// A record read from partition 0 of topic `in` at `offset`, for driving decoders directly.
pub(crate) fn raw_record(payload: Vec<u8>, offset: i64) -> streamgate::batch::RawRecord {
    streamgate::batch::RawRecord {
        key: None,
        payload,
        headers: vec![],
        timestamp_ms: None,
        position: streamgate::batch::Position {
            topic: "in".into(),
            partition: 0,
            offset,
        },
    }
}

/// Runs a Python script with the conformance virtualenv's interpreter and parses the JSON it
/// prints; fails with the script's standard error when it fails.
pub(crate) async fn python(script: &'static str, args: Vec<String>) -> serde_json::Value {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(venv().join("bin/python"))
            .arg("-c")
            .arg(script)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Loads a gateway file's text (as if it were at `file`, for relative paths), serves it on an
/// ephemeral loopback port, with the admin view of `pipelines` when given. Returns its URL and
/// a guard that stops it when dropped.
pub(crate) async fn serve_gateway(
    yaml: &str,
    file: &std::path::Path,
    metrics: streamgate::telemetry::Metrics,
    pipelines: Option<streamgate::runtime::StatusBoard>,
) -> (String, tokio_util::sync::DropGuard) {
    let loaded = streamgate::spec::load_gateway_str(yaml, file, &|_| None).unwrap();
    let mut gateway =
        streamgate::gateway::Gateway::new(&loaded.spec, loaded.base_dir(), metrics).unwrap();
    if let Some(board) = pipelines {
        gateway = gateway.with_pipelines(board);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, _) = streamgate::gateway::serve(
        "127.0.0.1:0".parse().unwrap(),
        std::sync::Arc::new(gateway),
        stop.clone(),
    )
    .await
    .unwrap();
    (format!("http://{addr}"), stop.drop_guard())
}
