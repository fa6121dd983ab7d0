//! Error policies: `fail` stops the pipeline without committing the bad record (nor anything
//! after it in its partition); `drop` skips and counts bad records and commits everything.

use std::path::Path;
use std::time::Duration;

use streamgate::runtime::{StatusBoard, run_pipeline};
use streamgate::telemetry::Metrics;
use streamgate::testing::EmbeddedBroker;
use tokio_util::sync::CancellationToken;

use crate::common::{committed, produce, read_all, spawn_pipeline, transactions, wait_committed};

fn yaml(bootstrap: &str, name: &str, policy: &str) -> String {
    format!(
        r#"
name: {name}
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [{name}-in]
  group_id: {name}-group
  batch: {{ max_rows: 10, max_age: 5ms }}
format: {{ type: json, schema: ../schemas/transaction.avsc }}
sql: SELECT transaction_id FROM input
outputs:
  - name: out
    sink: {{ type: kafka, topic: {name}-out }}
on_error: {policy}
"#
    )
}

async fn compile(
    bootstrap: &str,
    name: &str,
    policy: &str,
) -> std::sync::Arc<streamgate::plan::CompiledPipeline> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/policy.yaml");
    let loaded =
        streamgate::spec::load_str(&yaml(bootstrap, name, policy), &file, &|_| None).unwrap();
    streamgate::plan::compile(loaded).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_policy_stops_without_committing_the_bad_record() {
    let broker = EmbeddedBroker::start(&[("fail-in", 1), ("fail-out", 1)]).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    // One partition; record 99 of 200 is malformed (is_malformed(i, 0.01) marks i % 100 == 99).
    let (records, bad) = transactions(200, 0.01);
    assert_eq!(bad, vec![99, 199]);
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || produce(&b, "fail-in", 1, &records))
        .await
        .unwrap();

    let compiled = compile(&bootstrap, "fail", "fail").await;
    let result = tokio::time::timeout(
        Duration::from_secs(120),
        run_pipeline(
            compiled,
            &Metrics::new(),
            CancellationToken::new(),
            StatusBoard::default(),
        ),
    )
    .await
    .expect("the pipeline stops by itself on a bad record");
    let error = result
        .expect_err("a bad record with on_error: fail is an error")
        .to_string();
    assert!(error.contains("not delivered"), "{error}");

    // Nothing at or after the bad record's batch (offsets 90..=99) is committed.
    let b = bootstrap.clone();
    let (committed, out) = tokio::task::spawn_blocking(move || {
        (
            committed(&b, "fail-group", "fail-in", 1),
            read_all(&b, "fail-out", 1),
        )
    })
    .await
    .unwrap();
    let at = committed[&0].unwrap_or(0);
    assert!(at <= 90, "committed offset {at} passed the failed batch");
    // The records before it were delivered.
    assert!(
        out.len() >= 90,
        "only {} records delivered before the failure",
        out.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_policy_skips_counts_and_commits() {
    let broker = EmbeddedBroker::start(&[("drop-in", 2), ("drop-out", 2)]).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let (records, bad) = transactions(1_000, 0.01);
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || produce(&b, "drop-in", 2, &records))
        .await
        .unwrap();

    let compiled = compile(&bootstrap, "drop", "drop").await;
    let metrics = Metrics::new();
    let (stop, task) = spawn_pipeline(compiled, &metrics);
    wait_committed(&bootstrap, "drop-group", "drop-in", 2).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let b = bootstrap.clone();
    let out = tokio::task::spawn_blocking(move || read_all(&b, "drop-out", 2))
        .await
        .unwrap();
    assert_eq!(out.len(), 1_000 - bad.len());
    let dropped: u64 = metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("streamgate_records_dropped_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(dropped, bad.len() as u64);
}
