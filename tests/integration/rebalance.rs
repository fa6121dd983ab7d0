//! Rebalance safety: a second instance joins the consumer group mid-stream and the first one
//! then stops gracefully. Partitions move twice; revoked partitions are drained and their
//! offsets committed before they are given away, so every record is delivered.
//!
//! Duplicates are counted, not asserted: real Kafka accepts the commit made in the revoke
//! callback (the group is preparing a rebalance), but librdkafka's mock coordinator rejects
//! it with REBALANCE_IN_PROGRESS once another member has rejoined, so on the embedded broker
//! the next owner reprocesses the revoked partitions' last second of records.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use streamgate::telemetry::Metrics;
use streamgate::testing::EmbeddedBroker;
use tokio_util::sync::CancellationToken;

use crate::common::{
    produce, read_all, spawn_pipeline, topic_len, transactions, wait_committed, wait_until_async,
};

const PARTITIONS: i32 = 8;
const RECORDS: u64 = 40_000;

fn yaml(bootstrap: &str) -> String {
    format!(
        r#"
name: rebalance
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [rb-in]
  group_id: rb-group
  batch: {{ max_rows: 200, max_age: 5ms }}
  properties: {{ session.timeout.ms: "6000", heartbeat.interval.ms: "500" }}
format: {{ type: json, schema: ../schemas/transaction.avsc }}
sql: SELECT transaction_id, card_id FROM input
outputs:
  - name: out
    sink: {{ type: kafka, topic: rb-out }}
dead_letter: {{ type: kafka, topic: rb-dlq }}
"#
    )
}

async fn start(
    bootstrap: &str,
    metrics: &Metrics,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/rebalance.yaml");
    let loaded = streamgate::spec::load_str(&yaml(bootstrap), &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let (stop, task) = spawn_pipeline(compiled, metrics);
    (
        stop,
        tokio::spawn(async move { task.await.unwrap().map(|_| ()).unwrap() }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_joining_and_leaving_lose_nothing() {
    let broker =
        EmbeddedBroker::start(&[("rb-in", PARTITIONS), ("rb-out", PARTITIONS), ("rb-dlq", 1)])
            .unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let (records, _) = transactions(RECORDS, 0.01);
    let half = records.len() / 2;
    {
        let (b, r) = (bootstrap.clone(), records[..half].to_vec());
        tokio::task::spawn_blocking(move || produce(&b, "rb-in", PARTITIONS, &r))
            .await
            .unwrap();
    }

    let (metrics_a, metrics_b) = (Metrics::new(), Metrics::new());
    let (stop_a, task_a) = start(&bootstrap, &metrics_a).await;
    let b = bootstrap.clone();
    wait_until_async(
        "first instance makes progress",
        Duration::from_secs(60),
        Duration::from_millis(10),
        || topic_len(&b, "rb-out", PARTITIONS) > 2_000,
    )
    .await;

    // A second instance joins: the group rebalances while the first is busy.
    let (stop_b, task_b) = start(&bootstrap, &metrics_b).await;
    wait_until_async(
        "second instance gets partitions",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || {
            !metrics_b
                .render()
                .contains("streamgate_assigned_partitions{pipeline=\"rebalance\"} 0")
        },
    )
    .await;
    {
        let (b, r) = (bootstrap.clone(), records[half..].to_vec());
        tokio::task::spawn_blocking(move || produce(&b, "rb-in", PARTITIONS, &r))
            .await
            .unwrap();
    }

    // The first leaves gracefully: its partitions move to the second.
    stop_a.cancel();
    task_a.await.unwrap();
    wait_committed(&bootstrap, "rb-group", "rb-in", PARTITIONS).await;
    stop_b.cancel();
    task_b.await.unwrap();

    let b = bootstrap.clone();
    let (out, dlq) = tokio::task::spawn_blocking(move || {
        (
            read_all(&b, "rb-out", PARTITIONS),
            read_all(&b, "rb-dlq", 1),
        )
    })
    .await
    .unwrap();
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for m in &out {
        let row: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        *counts
            .entry(
                row["transaction_id"].as_str().unwrap()[3..]
                    .parse()
                    .unwrap(),
            )
            .or_default() += 1;
    }
    for m in &dlq {
        *counts
            .entry(
                String::from_utf8_lossy(m.key.as_deref().unwrap())
                    .parse()
                    .unwrap(),
            )
            .or_default() += 1;
    }
    assert_eq!(counts.len() as u64, RECORDS, "every record delivered");
    let duplicated: usize = counts.values().map(|c| c - 1).sum();
    eprintln!("rebalance: {RECORDS} records, {duplicated} duplicates across two partition moves");
}
