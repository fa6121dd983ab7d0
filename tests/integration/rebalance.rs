//! Rebalance safety: a second instance joins the consumer group mid-stream and the first one
//! then stops gracefully. Partitions move twice; revoked partitions are drained and their
//! offsets committed before they are given away, so every record is delivered.
//!
//! On the embedded broker duplicates are counted, not asserted: real Kafka accepts the commit
//! made in the revoke callback (the group is preparing a rebalance), but librdkafka's mock
//! coordinator rejects it with REBALANCE_IN_PROGRESS once another member has rejoined, so there
//! the next owner reprocesses the revoked partitions' last second of records.
//! `real_kafka_delivery` runs the same scenario on Apache Kafka's own broker and asserts that
//! nothing is duplicated.

use std::path::Path;
use std::time::Duration;

use streamgate::telemetry::Metrics;
use streamgate::testing::EmbeddedBroker;
use tokio_util::sync::CancellationToken;

use crate::common::{
    fully_committed, produce, spawn_pipeline, topic_len, transactions, wait_committed,
    wait_until_async,
};
use crate::crash::{PARTITIONS, assert_none_lost, deliveries};

const RECORDS: u64 = 40_000;

/// The topics the scenario needs: (topic, partitions).
pub(crate) fn topics() -> Vec<(String, i32)> {
    crate::crash::topics("rb")
}

/// Which offset commits the instances make.
#[derive(Clone, Copy)]
pub(crate) enum Commits {
    /// The source's own settings: stored offsets are also committed every 250 ms.
    Periodic,
    /// No periodic commits (`auto.commit.interval.ms` of an hour): offsets reach the group
    /// only through the commits made when partitions are revoked and when an instance stops,
    /// so any of those the broker rejects shows as duplicates.
    AtRebalanceAndStop,
}

fn yaml(bootstrap: &str, commits: Commits) -> String {
    let interval = match commits {
        Commits::Periodic => "",
        Commits::AtRebalanceAndStop => r#", auto.commit.interval.ms: "3600000""#,
    };
    format!(
        r#"
name: rebalance
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [rb-in]
  group_id: rb-group
  batch: {{ max_rows: 200, max_age: 5ms }}
  properties: {{ session.timeout.ms: "6000", heartbeat.interval.ms: "500"{interval} }}
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
    commits: Commits,
    metrics: &Metrics,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/rebalance.yaml");
    let loaded = streamgate::spec::load_str(&yaml(bootstrap, commits), &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let (stop, task) = spawn_pipeline(compiled, metrics);
    (
        stop,
        tokio::spawn(async move { task.await.unwrap().map(|_| ()).unwrap() }),
    )
}

/// The instance's `streamgate_assigned_partitions` (0 until the gauge exists: waiting for "not
/// 0" alone would pass before the instance ever joined).
fn assigned_partitions(metrics: &Metrics) -> i64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("streamgate_assigned_partitions{pipeline=\"rebalance\"} "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_joining_and_leaving_lose_nothing() {
    let broker =
        EmbeddedBroker::start(&[("rb-in", PARTITIONS), ("rb-out", PARTITIONS), ("rb-dlq", 1)])
            .unwrap();
    let duplicated = join_and_leave(broker.bootstrap_servers(), Commits::Periodic).await;
    eprintln!("rebalance: {RECORDS} records, {duplicated} duplicates across two partition moves");
}

/// A first instance consumes; a second joins mid-stream (the group rebalances while the first
/// is busy); the first leaves gracefully and its partitions move to the second. Fails unless
/// every record is delivered; returns how many were delivered more than once.
pub(crate) async fn join_and_leave(bootstrap: &str, commits: Commits) -> usize {
    let bootstrap = bootstrap.to_string();
    let (records, _) = transactions(RECORDS, 0.01);
    let half = records.len() / 2;
    {
        let (b, r) = (bootstrap.clone(), records[..half].to_vec());
        tokio::task::spawn_blocking(move || produce(&b, "rb-in", PARTITIONS, &r))
            .await
            .unwrap();
    }

    let (metrics_a, metrics_b) = (Metrics::new(), Metrics::new());
    let (stop_a, task_a) = start(&bootstrap, commits, &metrics_a).await;
    let b = bootstrap.clone();
    wait_until_async(
        "first instance makes progress",
        Duration::from_secs(60),
        Duration::from_millis(10),
        || topic_len(&b, "rb-out", PARTITIONS) > 2_000,
    )
    .await;

    // A second instance joins while the second half streams in: the group rebalances while
    // the first is busy.
    let second_half = {
        let (b, r) = (bootstrap.clone(), records[half..].to_vec());
        tokio::task::spawn_blocking(move || produce(&b, "rb-in", PARTITIONS, &r))
    };
    let (stop_b, task_b) = start(&bootstrap, commits, &metrics_b).await;
    wait_until_async(
        "second instance gets partitions",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || assigned_partitions(&metrics_b) > 0,
    )
    .await;
    second_half.await.unwrap();

    // The first leaves gracefully: its partitions move to the second.
    stop_a.cancel();
    task_a.await.unwrap();
    match commits {
        Commits::Periodic => wait_committed(&bootstrap, "rb-group", "rb-in", PARTITIONS).await,
        // Nothing is committed before the second instance stops: wait for every record in
        // the output instead.
        Commits::AtRebalanceAndStop => {
            let b = bootstrap.clone();
            wait_until_async(
                "every record delivered",
                Duration::from_secs(120),
                Duration::from_millis(200),
                || {
                    topic_len(&b, "rb-out", PARTITIONS) + topic_len(&b, "rb-dlq", 1)
                        >= RECORDS as i64
                        && deliveries(&b, "rb").len() as u64 == RECORDS
                },
            )
            .await;
        }
    }
    stop_b.cancel();
    task_b.await.unwrap();
    let b = bootstrap.clone();
    assert!(
        tokio::task::spawn_blocking(move || fully_committed(&b, "rb-group", "rb-in", PARTITIONS))
            .await
            .unwrap(),
        "the last instance committed everything when it stopped"
    );

    let b = bootstrap.clone();
    let counts = tokio::task::spawn_blocking(move || deliveries(&b, "rb"))
        .await
        .unwrap();
    assert_none_lost(&counts, RECORDS)
}
