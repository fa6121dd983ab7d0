//! Broker faults on a three-node Apache Kafka cluster (replication 3, `min.insync.replicas=2`,
//! see `common::real_kafka`): while records stream in at a fixed rate, the node hosting the
//! pipeline's group coordinator is `kill -9`ed and later restarted, or paused with SIGSTOP for
//! longer than the sink's request timeout and then resumed. The same `streamgate run` process
//! keeps going through the episode (it makes progress while the node is gone), every record
//! arrives (0 lost, counted by id), and the metrics and the log show the episode.

use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::common::real_kafka::RealKafka;
use crate::common::{
    Records, fully_committed, topic_len, transactions, try_high_watermarks, wait_until,
};
use crate::crash::{Extra, PARTITIONS, assert_none_lost, deliveries, pipeline_with, topics};
use crate::process::{admin_addr, metric, start_gateway, terminate, write_pipeline};

/// Three JVMs per test on two cores: one cluster at a time.
static CLUSTER: Mutex<()> = Mutex::new(());

const RECORDS: u64 = 20_000;
const PER_SECOND: f64 = 800.0;
/// The sink's `request.timeout.ms`; a paused node stays paused at least twice as long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

enum Fault {
    /// `kill -9`, then a restart once the pipeline made progress without the node.
    Kill,
    /// SIGSTOP for longer than the request timeout (and the broker session), then SIGCONT.
    Pause,
}

/// Produces `records` to `topic` at `per_second` (record `i` to partition `i % partitions`),
/// idempotently, riding out broker faults; returns once all are acknowledged.
fn stream_at_rate(
    bootstrap: String,
    topic: String,
    records: Records,
    per_second: f64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "180000")
            .create()
            .expect("producer");
        let start = Instant::now();
        for (i, (key, payload)) in records.iter().enumerate() {
            // Pacing, not synchronisation: record i is due i/rate seconds after the start.
            let due = start + Duration::from_secs_f64(i as f64 / per_second);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut record = BaseRecord::to(&topic)
                .key(key.as_slice())
                .payload(payload.as_slice())
                .partition(i as i32 % PARTITIONS);
            while let Err((_, r)) = producer.send(record) {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
        }
        producer
            .flush(Duration::from_secs(180))
            .expect("every record acknowledged");
    })
}

/// Output length, or `None` while a node does not answer.
fn output_len(bootstrap: &str, topic: &str) -> Option<i64> {
    try_high_watermarks(bootstrap, topic, PARTITIONS, Duration::from_secs(2))
        .ok()
        .map(|h| h.values().sum())
}

fn broker_fault(name: &str, fault: Fault) {
    let _one_cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut kafka = RealKafka::cluster();
    kafka.create_topics(&topics(name));
    let bootstrap = kafka.bootstrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    // Timeouts a user would lower for fast failover: requests to a silent broker give up
    // after 5 s (default 30 s) and sockets after 10 s (default 60 s).
    let yaml = pipeline_with(
        &bootstrap,
        name,
        &Extra {
            source_properties: r#", socket.timeout.ms: "10000""#,
            sink_properties: &format!(
                r#"request.timeout.ms: "{}", socket.timeout.ms: "10000""#,
                REQUEST_TIMEOUT.as_millis()
            ),
            ..Extra::default()
        },
    );
    let file = write_pipeline(dir.path(), name, &yaml);
    let log = dir.path().join("gateway.log");
    let mut gateway = start_gateway(&file, &log, Stdio::null());

    let (records, _) = transactions(RECORDS, 0.01);
    let (input, output) = (format!("{name}-in"), format!("{name}-out"));
    let producer = stream_at_rate(bootstrap.clone(), input.clone(), records, PER_SECOND);
    let grown_to = |target: i64| {
        let (b, o) = (bootstrap.clone(), output.clone());
        move || output_len(&b, &o).is_some_and(|n| n >= target)
    };
    wait_until(
        "output before the fault",
        Duration::from_secs(60),
        Duration::from_millis(50),
        grown_to(2_000),
    );

    let group = format!("{name}-group");
    let victim = kafka.coordinator(&group);
    let led: Vec<i32> = (0..PARTITIONS)
        .filter(|p| kafka.leader(&input, *p) == victim)
        .collect();
    let before = output_len(&bootstrap, &output).unwrap();
    eprintln!(
        "{name}: node {victim} (coordinator of {group}, leader of {input} partitions {led:?}) \
         fails at output {before}"
    );
    match fault {
        Fault::Kill => {
            kafka.kill(victim);
            wait_until(
                "progress with a node dead",
                Duration::from_secs(90),
                Duration::from_millis(100),
                grown_to(before + 3_000),
            );
            kafka.restart(victim);
        }
        Fault::Pause => {
            kafka.pause(victim);
            let paused = Instant::now();
            let progressed = grown_to(before + 3_000);
            wait_until(
                "progress with a node paused past the request timeout",
                Duration::from_secs(90),
                Duration::from_millis(100),
                || paused.elapsed() >= 2 * REQUEST_TIMEOUT && progressed(),
            );
            kafka.resume(victim);
        }
    }
    assert!(
        gateway.try_wait().unwrap().is_none(),
        "the gateway survived the fault"
    );

    producer
        .join()
        .expect("the test producer wrote every record");
    assert_eq!(topic_len(&bootstrap, &input, PARTITIONS), RECORDS as i64);
    wait_until(
        "everything committed after the fault",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || fully_committed(&bootstrap, &group, &input, PARTITIONS),
    );
    // Recovered without a restart: still the process started before the fault.
    assert!(
        gateway.try_wait().unwrap().is_none(),
        "the gateway is still the first process"
    );
    // The metrics show the episode: the consumer's request timeouts or broken connections to
    // the node (from librdkafka's statistics, every 5 s), and the errors it reported.
    let admin = admin_addr(&log);
    let faults = || metric(&admin, "streamgate_kafka_broker_faults_total");
    wait_until(
        "streamgate_kafka_broker_faults_total to show the episode",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || faults() > 0,
    );
    let (broker_faults, consumer_errors) = (
        faults(),
        metric(&admin, "streamgate_kafka_consumer_errors_total"),
    );
    terminate(&gateway);
    assert!(gateway.wait().unwrap().success(), "graceful stop exits 0");

    let duplicates = assert_none_lost(&deliveries(&bootstrap, name), RECORDS);
    // The log shows the episode: librdkafka's and the pipeline's warnings about the node.
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains(" WARN ")).collect();
    eprintln!(
        "{name}: {RECORDS} records, 0 lost, {duplicates} duplicates, {consumer_errors} consumer \
         errors and {broker_faults} broker faults counted, {:.1?} in all; the gateway's warnings:\n{}",
        started.elapsed(),
        warnings.join("\n")
    );
    assert!(
        !warnings.is_empty(),
        "the gateway's log does not show the episode:\n{text}"
    );
}

#[test]
fn kill_9_of_a_broker_mid_stream_loses_nothing() {
    broker_fault("bf-kill", Fault::Kill);
}

#[test]
fn a_broker_paused_past_the_request_timeout_loses_nothing() {
    broker_fault("bf-pause", Fault::Pause);
}
