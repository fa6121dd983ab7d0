//! `delivery: exactly_once` on the embedded broker: outputs and dead letters are written in
//! transactions and become visible to `read_committed` readers once each, the consumer never
//! commits offsets itself, and validation refuses what exactly-once cannot cover.
//!
//! librdkafka's mock cluster accepts transactional offset commits but does not store them
//! (its `TxnOffsetCommit` handler answers without committing), and it does not hide aborted
//! transactions: restarts and crashes are proven against Apache Kafka in
//! `real_kafka_exactly_once`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use streamgate::telemetry::Metrics;
use streamgate::testing::EmbeddedBroker;

use crate::common::{produce, spawn_pipeline, transactions, wait_until_async};

const PARTITIONS: i32 = 4;

fn yaml(bootstrap: &str) -> String {
    format!(
        r#"
name: eos
delivery: exactly_once
transaction_interval: 50ms
transactional_id: eos-test-1
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [eos-in]
  group_id: eos-group
  batch: {{ max_rows: 100, max_age: 5ms }}
format:
  type: json
  schema: ../schemas/transaction.avsc
sql: SELECT transaction_id, card_id, amount FROM input
outputs:
  - name: out
    sink: {{ type: kafka, topic: eos-out, key: card_id }}
dead_letter: {{ type: kafka, topic: eos-dlq }}
"#
    )
}

/// Every message (key, payload) of `topic` a `read_committed` reader sees, by partition end (a transactional
/// topic's last offset is a commit marker, never delivered, so the reader stops at each
/// partition's end instead of at its high watermark).
pub(crate) fn read_committed(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "eos-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut open: HashSet<i32> = (0..partitions).collect();
    let mut payloads = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !open.is_empty() {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => payloads.push((
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
        }
    }
    payloads
}

/// Output count per transaction id.
fn ids(messages: &[(Option<Vec<u8>>, Vec<u8>)]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (_, p) in messages {
        let row: serde_json::Value = serde_json::from_slice(p).unwrap();
        *counts
            .entry(row["transaction_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_and_dead_letters_are_visible_once_and_the_consumer_never_commits() {
    let broker = EmbeddedBroker::start(&[
        ("eos-in", PARTITIONS),
        ("eos-out", PARTITIONS),
        ("eos-dlq", 1),
    ])
    .unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let (records, bad) = transactions(3000, 0.01);
    let (b, r) = (bootstrap.clone(), records.clone());
    tokio::task::spawn_blocking(move || produce(&b, "eos-in", PARTITIONS, &r))
        .await
        .unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/eos.yaml");
    let loaded = streamgate::spec::load_str(&yaml(&bootstrap), &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let metrics = Metrics::new();
    let (stop, task) = spawn_pipeline(compiled, &metrics);
    let good = (records.len() - bad.len()) as u64;
    wait_until_async(
        "every output and dead letter",
        Duration::from_secs(120),
        Duration::from_millis(100),
        || {
            let rendered = metrics.render();
            counter(&rendered, "streamgate_records_out_total") >= good
                && counter(&rendered, "streamgate_records_dead_lettered_total") >= bad.len() as u64
        },
    )
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let b = bootstrap.clone();
    let (outputs, letters, committed) = tokio::task::spawn_blocking(move || {
        (
            read_committed(&b, "eos-out", PARTITIONS),
            read_committed(&b, "eos-dlq", 1),
            crate::common::committed(&b, "eos-group", "eos-in", PARTITIONS),
        )
    })
    .await
    .unwrap();
    let counts = ids(&outputs);
    assert_eq!(counts.len() as u64, good, "every good record");
    assert!(
        counts.values().all(|&n| n == 1),
        "duplicates: {:?}",
        counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(letters.len(), bad.len(), "every malformed record, once");
    // Offsets go into the transactions only (which the mock does not store): the consumer
    // itself committed nothing.
    assert!(
        committed.values().all(Option::is_none),
        "the consumer committed on its own: {committed:?}"
    );
}

/// The sum of a counter family's samples.
fn counter(rendered: &str, family: &str) -> u64 {
    rendered
        .lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn exactly_once_is_refused_for_what_a_kafka_transaction_cannot_cover() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/eos.yaml");
    let yaml = yaml("b:9092").replace(
        "dead_letter: { type: kafka, topic: eos-dlq }",
        "dead_letter: { type: stdout }",
    );
    let error = streamgate::spec::load_str(&yaml, &file, &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("dead_letter.type: is not `kafka` but `delivery` is `exactly_once`"),
        "{error}"
    );
}
