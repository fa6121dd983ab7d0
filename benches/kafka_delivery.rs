//! What each delivery guarantee costs on Apache Kafka's own broker: one KRaft node started from
//! the jars `tests/run.sh` fetches (the `real_kafka` tests' harness), in one run:
//!
//! 1. two rdkafka passthroughs (consume → produce each payload unchanged): one message per
//!    `poll` and `send` (the reference of the at-least-once target) and batched (the physical
//!    limit), as in benches/pipeline.rs;
//! 2. the same records through `streamgate::runtime::run_pipeline` with
//!    `delivery: at_least_once`;
//! 3. the same with `delivery: exactly_once` at `transaction_interval` 100 ms and 1 s.
//!
//! Every measurement reads the same preloaded input topic with a consumer group of its own and
//! writes an output topic of its own; `BENCH_RUNS` rounds (default 3) run the five in rotating
//! order so drift of the machine spreads over all of them, and medians are reported. Then the
//! end-to-end latency of the passthrough and the three pipelines at a fixed rate.
//!
//! Prints a table and writes benches/RESULTS-kafka.md. `BENCH_RECORDS` (default 1,000,000),
//! `BENCH_RUNS`, `BENCH_LATENCY_RATE` (records/s, default 5,000) and `BENCH_LATENCY_SECS`
//! (default 10) override the sizes; `BENCH_SINK_PROPERTIES` (a YAML flow-mapping body such as
//! `retry.backoff.ms: "10"`) adds producer properties to every pipeline, for experiments. Needs the Kafka jars (`STREAMGATE_KAFKA_LIBS`, or run
//! `bash tests/run.sh real_kafka` once). Run with `cargo bench --bench kafka_delivery`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use streamgate::runtime::{StatusBoard, run_pipeline};
use streamgate::telemetry::Metrics;
use streamgate::testing::generator;
use tokio_util::sync::CancellationToken;

mod support;
use support::*;

// The integration tests' real-broker harness, compiled into this benchmark (it reaches
// `wait_until` and `pki` through `super::`).
#[path = "../tests/integration/common/pki.rs"]
mod pki;
#[path = "../tests/integration/common/real_kafka.rs"]
mod real_kafka;
use real_kafka::RealKafka;

/// Partitions of the input and output topics.
const PARTITIONS: i32 = 12;
/// Partitions of the latency topics.
const LAT_PARTITIONS: i32 = 4;
/// Records sent before latency is measured (the pipeline joins its group meanwhile).
const WARMUP: u64 = 2000;

const PROJECTION: &str = "SELECT transaction_id, card_id, amount, amount * 100 AS amount_cents, \
     upper(country) AS country, \
     CASE WHEN amount > 2000 THEN 'high' ELSE 'low' END AS risk, \
     distance_from_home_km > 500 AS far";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Passthrough,
    Batched,
    AtLeastOnce,
    ExactlyOnce100ms,
    ExactlyOnce1s,
}

impl Mode {
    const ALL: [Mode; 5] = [
        Mode::Passthrough,
        Mode::Batched,
        Mode::AtLeastOnce,
        Mode::ExactlyOnce100ms,
        Mode::ExactlyOnce1s,
    ];

    fn label(self) -> &'static str {
        match self {
            Mode::Passthrough => "rdkafka passthrough, poll and send per message",
            Mode::Batched => "rdkafka passthrough, batched (physical limit)",
            Mode::AtLeastOnce => "streamgate at_least_once",
            Mode::ExactlyOnce100ms => "streamgate exactly_once, transaction_interval 100ms",
            Mode::ExactlyOnce1s => "streamgate exactly_once, transaction_interval 1s",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Mode::Passthrough => "pt",
            Mode::Batched => "floor",
            Mode::AtLeastOnce => "alo",
            Mode::ExactlyOnce100ms => "eos100",
            Mode::ExactlyOnce1s => "eos1s",
        }
    }

    /// The pipeline's `delivery` settings (None for the passthroughs).
    fn delivery(self, id: &str) -> Option<String> {
        let eos = |interval: &str| {
            format!(
                "delivery: exactly_once\ntransaction_interval: {interval}\ntransactional_id: {id}\n"
            )
        };
        match self {
            Mode::Passthrough | Mode::Batched => None,
            Mode::AtLeastOnce => Some("delivery: at_least_once\n".to_string()),
            Mode::ExactlyOnce100ms => Some(eos("100ms")),
            Mode::ExactlyOnce1s => Some(eos("1s")),
        }
    }

    fn transactional(self) -> bool {
        matches!(self, Mode::ExactlyOnce100ms | Mode::ExactlyOnce1s)
    }
}

/// One throughput measurement.
#[derive(Clone, Copy)]
struct Run {
    records: u64,
    /// From start until every output record is readable by a `read_committed` consumer: the
    /// output topic holds N records (passthroughs, at-least-once), or the transaction with the
    /// last input offsets has committed (exactly-once: outputs and offsets commit together).
    readable_seconds: f64,
    /// From start until the first output record was written.
    first_output_seconds: f64,
    /// From start until the consumer group committed the end of every input partition (the
    /// passthroughs commit nothing: equal to `readable_seconds`).
    committed_seconds: f64,
    /// CPU of this process (client side: pipeline or passthrough) over `readable_seconds`.
    cpu_seconds: f64,
    /// CPU of the broker's JVM over the same span.
    broker_cpu_seconds: f64,
    /// Exactly-once: transactions committed, and the time spent committing them.
    commits: u64,
    commit_seconds: f64,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.records as f64 / self.readable_seconds
    }

    /// Records/s from the first output to the last: without the group join and producer
    /// initialisation.
    fn steady_per_second(&self) -> f64 {
        self.records as f64 / (self.readable_seconds - self.first_output_seconds).max(1e-3)
    }

    fn cpu_us_per_record(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.records as f64
    }

    fn broker_cpu_us_per_record(&self) -> f64 {
        self.broker_cpu_seconds * 1e6 / self.records as f64
    }
}

/// CPU seconds of this process and of the broker.
struct Clock {
    start: Instant,
    cpu: f64,
    broker_pid: String,
    broker_cpu: f64,
}

impl Clock {
    fn start(broker_pid: u32) -> Self {
        let broker_pid = broker_pid.to_string();
        Clock {
            broker_cpu: process_cpu_seconds(&broker_pid).expect("broker /proc stat"),
            broker_pid,
            cpu: cpu_seconds(),
            start: Instant::now(),
        }
    }

    /// (wall seconds, process CPU seconds, broker CPU seconds) since start.
    fn read(&self) -> (f64, f64, f64) {
        (
            self.start.elapsed().as_secs_f64(),
            cpu_seconds() - self.cpu,
            process_cpu_seconds(&self.broker_pid).expect("broker /proc stat") - self.broker_cpu,
        )
    }
}

fn assignment(topic: &str, partitions: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    tpl
}

fn passthrough(bootstrap: &str, output: &str, n: u64, batched: bool, broker_pid: u32) -> Run {
    passthrough_timed(
        bootstrap,
        ("in", output, PARTITIONS),
        n,
        batched,
        || Clock::start(broker_pid),
        |clock| {
            let (seconds, cpu_seconds, broker_cpu_seconds) = clock.read();
            Run {
                records: n,
                readable_seconds: seconds,
                first_output_seconds: 0.0,
                committed_seconds: seconds,
                cpu_seconds,
                broker_cpu_seconds,
                commits: 0,
                commit_seconds: 0.0,
            }
        },
    )
}

/// The benchmark pipeline: JSON decode → projection → Kafka sink, with `mode`'s delivery.
async fn compile(
    bootstrap: &str,
    mode: Mode,
    id: &str,
    input: &str,
    output: &str,
    sql: &str,
    max_age: &str,
) -> Arc<streamgate::plan::CompiledPipeline> {
    let yaml = format!(
        r#"
name: bench-{id}
{delivery}
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [{input}]
  group_id: {id}
  batch: {{ max_rows: 1000, max_age: {max_age} }}
format:
  type: json
  schema: ../schemas/transaction.avsc
sql: |
  {sql}
outputs:
  - name: out
    sink: {{ type: kafka, topic: {output}, key: card_id, properties: {{ {props} }} }}
dead_letter: {{ type: kafka, topic: dlq, properties: {{ {props} }} }}
"#,
        delivery = mode.delivery(id).expect("a streamgate mode"),
        props = std::env::var("BENCH_SINK_PROPERTIES").unwrap_or_default(),
    );
    // As if the file were in pipelines/, so the schema path resolves like the examples'.
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/bench.yaml");
    let loaded = streamgate::spec::load_str(&yaml, &file, &|_| None)
        .unwrap_or_else(|e| panic!("bench pipeline spec: {e:?}\n{yaml}"));
    streamgate::plan::compile(loaded)
        .await
        .unwrap_or_else(|e| panic!("bench pipeline compile: {e:?}\n{yaml}"))
}

/// Records a `read_committed` consumer reads from `topic`, to the end of every partition.
fn count_committed(bootstrap: &str, topic: &str, partitions: i32) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-count")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .expect("counting consumer");
    consumer
        .assign(&assignment(topic, partitions))
        .expect("assign");
    let mut open: HashSet<i32> = (0..partitions).collect();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !open.is_empty() {
        assert!(Instant::now() < deadline, "timed out counting {topic}");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(_)) => count += 1,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
        }
    }
    count
}

/// Streamgate over the preloaded input, writing `output`, with a consumer group (and
/// transactional id) of its own.
async fn streamgate_run(bootstrap: &str, mode: Mode, id: &str, output: &str, n: u64) -> Run {
    let sql = format!("{PROJECTION} FROM input WHERE amount > 0");
    let compiled = compile(bootstrap, mode, id, "in", output, &sql, "20ms").await;
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let broker_pid = BROKER_PID.load(Ordering::Relaxed) as u32;
    let clock = Clock::start(broker_pid);
    let task = tokio::spawn({
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        async move { run_pipeline(compiled, &metrics, shutdown, StatusBoard::default()).await }
    });
    let (b, group, output_topic) = (bootstrap.to_string(), id.to_string(), output.to_string());
    let transactional = mode.transactional();
    let (mut run, clock) = tokio::task::spawn_blocking(move || {
        let watcher = Watcher::new(&b, &group);
        let mut first_output = None;
        let mut readable = None;
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            assert!(Instant::now() < deadline, "streamgate run timed out");
            let written = watcher.len(&output_topic, PARTITIONS);
            if first_output.is_none() && written > 0 {
                first_output = Some(clock.start.elapsed().as_secs_f64());
            }
            // Without transactions every written record is readable; with them, what was
            // written is readable once the transaction with the last offsets commits.
            if !transactional && readable.is_none() && written >= n as i64 {
                readable = Some(clock.read());
            }
            if watcher.fully_committed("in", PARTITIONS) {
                let committed = clock.read();
                let (seconds, cpu_seconds, broker_cpu_seconds) = readable.unwrap_or(committed);
                let run = Run {
                    records: n,
                    readable_seconds: seconds,
                    first_output_seconds: first_output.unwrap_or(0.0),
                    committed_seconds: committed.0,
                    cpu_seconds,
                    broker_cpu_seconds,
                    commits: 0,
                    commit_seconds: 0.0,
                };
                return (run, clock);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await
    .expect("watch thread");
    drop(clock);
    shutdown.cancel();
    task.await.expect("pipeline task").expect("pipeline");
    let commit = metrics
        .transaction_commit
        .with_label_values(&[&format!("bench-{id}")]);
    run.commits = commit.get_sample_count();
    run.commit_seconds = commit.get_sample_sum();

    // Every input record's output exactly once: a clean run with one instance duplicates
    // nothing under either guarantee.
    let (b, output_topic) = (bootstrap.to_string(), output.to_string());
    let out = tokio::task::spawn_blocking(move || count_committed(&b, &output_topic, PARTITIONS))
        .await
        .expect("count");
    assert_eq!(
        out, n,
        "{output} holds {out} readable records, expected {n}"
    );
    run
}

/// The broker's pid, for the CPU accounting of the async runs.
static BROKER_PID: AtomicU64 = AtomicU64::new(0);

struct Latency {
    sent: u64,
    received: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Where a latency reader finds a record's send time.
#[derive(Clone, Copy)]
enum SendTime {
    /// The pipeline's `produced_ms` column (`CAST(_timestamp AS BIGINT)`).
    Column,
    /// The output message's timestamp (the passthrough copies the input's).
    MessageTimestamp,
}

/// Feeds `lat-in-<slug>` at `rate` records/s for `secs` seconds after a warm-up, each message
/// stamped with its send time, and reads `lat-out-<slug>` (read_committed when `committed`).
fn latency_driver(
    bootstrap: &str,
    slug: &str,
    committed: bool,
    send_time: SendTime,
    rate: u64,
    secs: u64,
) -> Latency {
    let measure_from_ms = Arc::new(AtomicU64::new(u64::MAX));
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let output = format!("lat-out-{slug}");
    let reader = {
        let (bootstrap, output, measure_from_ms, expected, stop) = (
            bootstrap.to_string(),
            output.clone(),
            measure_from_ms.clone(),
            expected.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "bench-latency-reader")
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", "5")
                .set(
                    "isolation.level",
                    if committed {
                        "read_committed"
                    } else {
                        "read_uncommitted"
                    },
                )
                .create()
                .expect("reader");
            consumer
                .assign(&assignment(&output, LAT_PARTITIONS))
                .expect("assign");
            let mut latencies_us = Vec::new();
            while !stop.load(Ordering::Relaxed)
                && (latencies_us.len() as u64) < expected.load(Ordering::Relaxed)
            {
                let Some(result) = consumer.poll(Duration::from_millis(10)) else {
                    continue;
                };
                let arrival_us = now_us();
                let m = result.expect("read latency output");
                let sent_ms = match send_time {
                    SendTime::MessageTimestamp => {
                        m.timestamp().to_millis().expect("output timestamp")
                    }
                    SendTime::Column => {
                        let row: serde_json::Value =
                            serde_json::from_slice(m.payload().unwrap_or_default())
                                .expect("output json");
                        row["produced_ms"]
                            .as_i64()
                            .unwrap_or_else(|| panic!("no produced_ms in output row {row}"))
                    }
                };
                if sent_ms as u64 >= measure_from_ms.load(Ordering::Relaxed) {
                    latencies_us.push(arrival_us - sent_ms * 1000);
                }
            }
            latencies_us
        })
    };

    let producer = producer(bootstrap, "0");
    let input = format!("lat-in-{slug}");
    let mut rng = SmallRng::seed_from_u64(7);
    let mut id = 0u64;
    let mut send_one = |rng: &mut SmallRng| {
        let payload = generator::transaction(rng, id);
        let key = id.to_string();
        send(
            &producer,
            BaseRecord::to(&input)
                .key(key.as_bytes())
                .payload(payload.as_slice())
                .partition((id % LAT_PARTITIONS as u64) as i32)
                .timestamp(now_us() / 1000),
        );
        id += 1;
    };
    for _ in 0..WARMUP {
        send_one(&mut rng);
    }
    let watcher = Watcher::new(bootstrap, "bench-latency-watch");
    wait_until(
        "latency warm-up through",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || watcher.len(&output, LAT_PARTITIONS) >= WARMUP as i64,
    );
    let start_ms = (now_us() / 1000 + 1) as u64;
    while ((now_us() / 1000) as u64) < start_ms {
        std::thread::sleep(Duration::from_micros(100));
    }
    measure_from_ms.store(start_ms, Ordering::Relaxed);
    let start = Instant::now();
    let total = rate * secs;
    let mut sent = 0u64;
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            send_one(&mut rng);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    expected.store(sent, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = reader.join().expect("reader thread");
    latencies_us.sort_unstable();
    let pct = |q: f64| {
        if latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies_us.len() as f64 * q).ceil() as usize).clamp(1, latencies_us.len()) - 1;
        latencies_us[i] as f64 / 1000.0
    };
    Latency {
        sent,
        received: latencies_us.len() as u64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: latencies_us.last().map_or(f64::NAN, |v| *v as f64 / 1000.0),
    }
}

/// Passthrough latency: poll and send per message, each output keeping its input's timestamp.
fn passthrough_latency(bootstrap: &str, rate: u64, secs: u64) -> Latency {
    let stop = Arc::new(AtomicBool::new(false));
    let copier = {
        let (bootstrap, stop) = (bootstrap.to_string(), stop.clone());
        std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "bench-latency-passthrough")
                .set("enable.auto.commit", "false")
                .create()
                .expect("consumer");
            consumer
                .assign(&assignment("lat-in-pt", LAT_PARTITIONS))
                .expect("assign");
            let producer = producer(&bootstrap, "5");
            while !stop.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(10)) {
                    Some(Ok(m)) => send(
                        &producer,
                        BaseRecord::to("lat-out-pt")
                            .key(m.key().unwrap_or_default())
                            .payload(m.payload().unwrap_or_default())
                            .partition(m.partition())
                            .timestamp(m.timestamp().to_millis().unwrap_or_default()),
                    ),
                    Some(Err(e)) => panic!("passthrough consume: {e}"),
                    None => {}
                }
            }
            producer.flush(Duration::from_secs(30)).expect("flush");
        })
    };
    let latency = latency_driver(
        bootstrap,
        "pt",
        false,
        SendTime::MessageTimestamp,
        rate,
        secs,
    );
    stop.store(true, Ordering::Relaxed);
    copier.join().expect("passthrough thread");
    latency
}

async fn streamgate_latency(bootstrap: &str, mode: Mode, rate: u64, secs: u64) -> Latency {
    let slug = mode.slug();
    let sql = format!(
        "{PROJECTION}, CAST(_timestamp AS BIGINT) AS produced_ms FROM input WHERE amount > 0"
    );
    let id = format!("bench-latency-{slug}");
    let compiled = compile(
        bootstrap,
        mode,
        &id,
        &format!("lat-in-{slug}"),
        &format!("lat-out-{slug}"),
        &sql,
        "5ms",
    )
    .await;
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        async move { run_pipeline(compiled, &metrics, shutdown, StatusBoard::default()).await }
    });
    let (b, committed) = (bootstrap.to_string(), mode.transactional());
    let latency = tokio::task::spawn_blocking(move || {
        latency_driver(&b, slug, committed, SendTime::Column, rate, secs)
    })
    .await
    .expect("latency driver");
    shutdown.cancel();
    task.await.expect("pipeline task").expect("pipeline");
    latency
}

fn median_by(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(f).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn list(runs: &[Run], f: impl Fn(&Run) -> f64) -> String {
    runs.iter()
        .map(|r| format!("{:.0}", f(r)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let n = env_u64("BENCH_RECORDS", 1_000_000);
    let rounds = env_u64("BENCH_RUNS", 3).max(1);
    let rate = env_u64("BENCH_LATENCY_RATE", 5_000);
    let secs = env_u64("BENCH_LATENCY_SECS", 10);
    let load_before = load_average();

    let mut kafka = RealKafka::single();
    let bootstrap = kafka.bootstrap().to_string();
    let broker_pid = kafka.pid(1);
    BROKER_PID.store(u64::from(broker_pid), Ordering::Relaxed);
    let mut topics = vec![("in".to_string(), PARTITIONS), ("dlq".to_string(), 1)];
    for mode in Mode::ALL {
        for round in 0..rounds {
            topics.push((format!("out-{}-{round}", mode.slug()), PARTITIONS));
        }
        topics.push((format!("lat-in-{}", mode.slug()), LAT_PARTITIONS));
        topics.push((format!("lat-out-{}", mode.slug()), LAT_PARTITIONS));
    }
    kafka.create_topics(&topics);

    eprintln!("generating and preloading {n} transactions");
    let mut rng = SmallRng::seed_from_u64(42);
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| generator::transaction(&mut rng, i))
        .collect();
    let mean_bytes = payloads.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    preload(&bootstrap, "in", PARTITIONS, &payloads);
    drop(payloads);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); Mode::ALL.len()];
    for round in 0..rounds as usize {
        for k in 0..Mode::ALL.len() {
            // Rotate the order each round so no mode always runs first or last.
            let index = (k + round) % Mode::ALL.len();
            let mode = Mode::ALL[index];
            let output = format!("out-{}-{round}", mode.slug());
            eprintln!("round {}/{rounds}: {}", round + 1, mode.label());
            let run = match mode {
                Mode::Passthrough => passthrough(&bootstrap, &output, n, false, broker_pid),
                Mode::Batched => passthrough(&bootstrap, &output, n, true, broker_pid),
                _ => {
                    let id = format!("bench-{}-{round}", mode.slug());
                    runtime.block_on(streamgate_run(&bootstrap, mode, &id, &output, n))
                }
            };
            eprintln!(
                "    {:.0} records/s, {:.1} µs CPU per record",
                run.per_second(),
                run.cpu_us_per_record()
            );
            runs[index].push(run);
        }
    }

    let mut latencies = Vec::new();
    for mode in [
        Mode::Passthrough,
        Mode::AtLeastOnce,
        Mode::ExactlyOnce100ms,
        Mode::ExactlyOnce1s,
    ] {
        eprintln!("latency at {rate} records/s for {secs} s: {}", mode.label());
        let latency = if mode == Mode::Passthrough {
            passthrough_latency(&bootstrap, rate, secs)
        } else {
            runtime.block_on(streamgate_latency(&bootstrap, mode, rate, secs))
        };
        eprintln!(
            "    p50 {:.1} ms, p99 {:.1} ms",
            latency.p50_ms, latency.p99_ms
        );
        latencies.push((mode, latency));
    }
    drop(runtime);
    let load_after = load_average();

    let rate_of = |mode: Mode| median_by(&runs[mode as usize], Run::per_second);
    let steady_of = |mode: Mode| median_by(&runs[mode as usize], Run::steady_per_second);
    let mut table = String::new();
    writeln!(
        table,
        "| Measurement | Records/s (median) | Steady records/s | CPU-µs per record | Broker \
         CPU-µs per record | Input committed after s | Runs, records/s |"
    )
    .unwrap();
    writeln!(table, "|---|---:|---:|---:|---:|---:|---|").unwrap();
    for mode in Mode::ALL {
        let r = &runs[mode as usize];
        writeln!(
            table,
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            mode.label(),
            rate_of(mode),
            steady_of(mode),
            median_by(r, Run::cpu_us_per_record),
            median_by(r, Run::broker_cpu_us_per_record),
            median_by(r, |r| r.committed_seconds),
            list(r, Run::per_second),
        )
        .unwrap();
    }
    writeln!(table).unwrap();
    let alo = rate_of(Mode::AtLeastOnce);
    let ratio = |a: f64, b: f64| a / b;
    writeln!(
        table,
        "- exactly_once at 100ms / at_least_once: **{:.2}** (target ≥ 0.85); steady state {:.2}",
        ratio(rate_of(Mode::ExactlyOnce100ms), alo),
        ratio(
            steady_of(Mode::ExactlyOnce100ms),
            steady_of(Mode::AtLeastOnce)
        ),
    )
    .unwrap();
    writeln!(
        table,
        "- exactly_once at 1s / at_least_once: **{:.2}** (target ≥ 0.95); steady state {:.2}",
        ratio(rate_of(Mode::ExactlyOnce1s), alo),
        ratio(steady_of(Mode::ExactlyOnce1s), steady_of(Mode::AtLeastOnce)),
    )
    .unwrap();
    writeln!(
        table,
        "- at_least_once / passthrough (poll and send): **{:.2}** (target ≥ 0.6); steady state \
         {:.2}; against the physical limit (batched): {:.2}",
        ratio(alo, rate_of(Mode::Passthrough)),
        ratio(steady_of(Mode::AtLeastOnce), rate_of(Mode::Passthrough)),
        ratio(alo, rate_of(Mode::Batched)),
    )
    .unwrap();
    let cpu = |mode: Mode| median_by(&runs[mode as usize], Run::cpu_us_per_record);
    writeln!(
        table,
        "- CPU per record against at_least_once: exactly_once 100ms {:.2}×, 1s {:.2}×; \
         at_least_once against the passthrough {:.2}×",
        cpu(Mode::ExactlyOnce100ms) / cpu(Mode::AtLeastOnce),
        cpu(Mode::ExactlyOnce1s) / cpu(Mode::AtLeastOnce),
        cpu(Mode::AtLeastOnce) / cpu(Mode::Passthrough),
    )
    .unwrap();
    for mode in [Mode::ExactlyOnce100ms, Mode::ExactlyOnce1s] {
        let r = &runs[mode as usize];
        writeln!(
            table,
            "- {}: {:.0} commits per run, {:.1} ms each on average, {:.0}% of the run's time \
             committing (medians over the runs)",
            mode.label(),
            median_by(r, |r| r.commits as f64),
            median_by(r, |r| r.commit_seconds * 1000.0 / r.commits.max(1) as f64),
            median_by(r, |r| 100.0 * r.commit_seconds / r.committed_seconds),
        )
        .unwrap();
    }
    writeln!(table).unwrap();
    writeln!(
        table,
        "| End-to-end latency at {rate} records/s | p50 ms | p99 ms | max ms | measured / sent |"
    )
    .unwrap();
    writeln!(table, "|---|---:|---:|---:|---:|").unwrap();
    for (mode, l) in &latencies {
        writeln!(
            table,
            "| {} | {:.1} | {:.1} | {:.1} | {} / {} |",
            mode.label(),
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            l.received,
            l.sent
        )
        .unwrap();
    }
    println!("\n{table}");

    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let results = format!(
        "# Delivery guarantees on a real Kafka broker\n\n\
         Produced by `cargo bench --bench kafka_delivery` (benches/kafka_delivery.rs); do not \
         edit by hand.\n\n\
         - Date: {date}\n\
         - Machine: {cores} cores (`nproc`), {cpu}; load average before {load_before}, after \
         {load_after}\n\
         - Broker: Apache Kafka {version}, one KRaft node (broker and controller) started by the \
         `real_kafka` tests' harness (JVM -Xmx512m, SerialGC, 2 network and 2 I/O threads), \
         sharing the machine with the client\n\
         - Records: {n} JSON transactions (demo generator, {mean_bytes:.0} B mean) on a \
         {PARTITIONS}-partition topic; {rounds} rounds, the five measurements in rotating order\n\n\
         {table}\n\
         ## Method\n\n\
         - Every measurement reads the same preloaded input topic with its own consumer group \
         and writes its own {PARTITIONS}-partition output topic.\n\
         - Records/s: N divided by the time from start until every output record is readable by \
         a `read_committed` consumer: the output topic holds N records (passthroughs and \
         at_least_once), or the group's committed offsets reach the end of the input (exactly_once: \
         the outputs and the offsets commit in the same transaction). Steady: from the first \
         output record written to that point, without the group join and producer start. \
         Input committed after: when the group's committed offsets reached the end (at_least_once \
         commits stored offsets every second).\n\
         - Passthroughs: as in benches/pipeline.rs (one `BaseConsumer` assigned every partition, \
         one idempotent `ThreadedProducer` with linger.ms 5); no commits.\n\
         - Streamgate: `run_pipeline` with JSON decode against schemas/transaction.avsc → \
         `{PROJECTION} FROM input WHERE amount > 0` → Kafka sink keyed by card_id, batch max_rows \
         1000 / max_age 20ms, default workers; exactly_once with one transactional producer and \
         the input offsets sent to each transaction. After each run a `read_committed` consumer \
         counts the output: exactly N for every run.\n\
         - CPU: user+system ticks (100 Hz) of this process (client side) and of the broker's JVM \
         from /proc over the measured span.\n\
         - Latency: a pipeline per guarantee (the same projection plus `CAST(_timestamp AS BIGINT) \
         AS produced_ms`, batch max_age 5ms) or the poll-and-send passthrough (which keeps each \
         input timestamp), fed at a fixed rate by a producer with linger.ms 0 that stamps each \
         message with its send time; after {WARMUP} warm-up records a consumer of the output \
         (`read_committed` for exactly_once, fetch.wait.max.ms 5) computes arrival − send. The \
         send time is truncated to whole ms, so latencies read 0–1 ms high.\n",
        date = date(),
        cpu = cpu_model(),
        version = kafka_version(),
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/RESULTS-kafka.md");
    std::fs::write(&path, results).expect("write RESULTS-kafka.md");
    eprintln!("wrote {}", path.display());
    drop(kafka);
}

/// The Kafka version tests/kafka/pom.xml pins.
fn kafka_version() -> String {
    let pom = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/pom.xml");
    std::fs::read_to_string(pom)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                Some(
                    line.trim()
                        .strip_prefix("<kafka.version>")?
                        .strip_suffix("</kafka.version>")?
                        .to_string(),
                )
            })
        })
        .unwrap_or_else(|| "unknown".to_string())
}
