//! Kafka → SQL → model → Kafka with a misbehaving model: nothing is lost when 30% of calls
//! fail (rows that exhaust their retries are dead-lettered with their context, and retries stay
//! within the budget), and a model that goes down pauses consumption instead of flooding the
//! dead-letter topic, then everything flows once it is back.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use streamgate::telemetry::Metrics;
use streamgate::testing::EmbeddedBroker;
use streamgate::testing::mock_model::{Faults, MockModel, MockModelConfig};

use crate::common::{
    fully_committed, produce, read_all, spawn_pipeline, transactions, wait_until_async,
};

const PARTITIONS: i32 = 4;

fn pipeline_yaml(bootstrap: &str, model_url: &str, model_extra: &str) -> String {
    format!(
        r#"
name: scored
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [tx-in]
  group_id: scored-group
  batch: {{ max_rows: 200, max_age: 10ms }}
  properties: {{ fetch.wait.max.ms: "10" }}
format:
  type: json
  schema: ../schemas/transaction.avsc
sql: |
  SELECT transaction_id, card_id, amount FROM input
models:
  fraud:
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{model_url}"] }}
    batching: {{ max_batch_rows: 50, max_delay: 1ms }}
{model_extra}
inference:
  - name: fraud
    model: fraud
    inputs: [amount]
    outputs: [{{ column: score, from: score }}]
outputs:
  - name: out
    sink: {{ type: kafka, topic: tx-out, key: card_id }}
dead_letter: {{ type: kafka, topic: tx-dlq }}
"#
    )
}

async fn start(
    yaml: &str,
    metrics: &Metrics,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<
        Result<streamgate::source::kafka::SourceReport, streamgate::runtime::RuntimeError>,
    >,
) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/scored.yaml");
    let loaded = streamgate::spec::load_str(yaml, &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    spawn_pipeline(compiled, metrics)
}

/// Waits until the group committed everything, failing at once if the pipeline stopped.
async fn wait_done(
    bootstrap: &str,
    task: &tokio::task::JoinHandle<
        Result<streamgate::source::kafka::SourceReport, streamgate::runtime::RuntimeError>,
    >,
) {
    let b = bootstrap.to_string();
    wait_until_async(
        "the pipeline to commit everything",
        Duration::from_secs(300),
        Duration::from_millis(100),
        || task.is_finished() || fully_committed(&b, "scored-group", "tx-in", PARTITIONS),
    )
    .await;
    assert!(!task.is_finished(), "the pipeline stopped early");
}

/// An embedded broker whose input topic holds `n` transactions.
async fn broker_with_transactions(n: u64) -> (EmbeddedBroker, String) {
    let broker =
        EmbeddedBroker::start(&[("tx-in", PARTITIONS), ("tx-out", PARTITIONS), ("tx-dlq", 1)])
            .unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let (records, _) = transactions(n, 0.0);
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || produce(&b, "tx-in", PARTITIONS, &records))
        .await
        .unwrap();
    (broker, bootstrap)
}

/// The output and dead-letter topics' messages.
async fn read_outputs(
    bootstrap: &str,
) -> (
    Vec<crate::common::ReadMessage>,
    Vec<crate::common::ReadMessage>,
) {
    let b = bootstrap.to_string();
    tokio::task::spawn_blocking(move || {
        (
            read_all(&b, "tx-out", PARTITIONS),
            read_all(&b, "tx-dlq", 1),
        )
    })
    .await
    .unwrap()
}

fn ids(messages: &[crate::common::ReadMessage]) -> Vec<usize> {
    messages
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            match v.get("transaction_id") {
                Some(t) => t.as_str().unwrap()[3..].parse().unwrap(),
                // Dead letters keep the original record; its key is the index.
                None => String::from_utf8_lossy(m.key.as_deref().unwrap())
                    .parse()
                    .unwrap(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_503s_lose_nothing_and_retries_stay_in_budget() {
    let (_broker, bootstrap) = broker_with_transactions(20_000).await;
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    mock.set_faults(Faults {
        status_mix: vec![(503, 0.3)],
        ..Faults::default()
    });

    let budget = "    retry: { budget_percent: 20, min_retries_per_second: 0, backoff: 1ms }";
    let metrics = Metrics::new();
    let (stop, task) = start(&pipeline_yaml(&bootstrap, &mock.url(), budget), &metrics).await;
    wait_done(&bootstrap, &task).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let (out, dlq) = read_outputs(&bootstrap).await;
    let delivered: HashSet<usize> = ids(&out).into_iter().collect();
    let dead: HashSet<usize> = ids(&dlq).into_iter().collect();
    assert_eq!(
        out.len(),
        delivered.len(),
        "no duplicates in a run without crashes"
    );
    assert!(delivered.is_disjoint(&dead));
    assert_eq!(
        delivered.len() + dead.len(),
        20_000,
        "every record is delivered or dead-lettered"
    );
    for m in &dlq {
        let h = &m.headers;
        assert_eq!(h["streamgate.stage"], "model");
        assert_eq!(h["streamgate.model"], "fraud");
        assert_eq!(h["streamgate.model.version"], "v1");
        assert!(h["streamgate.error.message"].contains("503"), "{h:?}");
        assert!(h["streamgate.attempts"].parse::<u32>().unwrap() >= 1);
    }
    // Requests the pipeline made (each counted once) versus what reached the model.
    let requests = metrics
        .models
        .batch_rows
        .with_label_values(&["fraud", "v1"])
        .get_sample_count();
    let upstream = mock.calls();
    let ratio = upstream as f64 / requests as f64;
    eprintln!(
        "delivered {}, dead-lettered {}, requests {requests}, upstream calls {upstream}, ratio {ratio:.3}",
        delivered.len(),
        dead.len()
    );
    // The budget is a sliding 10 s window kept in buckets: as a bucket rotates out, the
    // credit it held can be spent again, so a long run may end a little above 20%.
    assert!(
        ratio <= 1.2 + 0.02,
        "retries exceeded the 20% budget: {ratio:.3}"
    );
    assert!(
        !dead.is_empty(),
        "with a 20% budget some rows exhaust their retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_outage_pauses_consumption_and_loses_nothing() {
    let (_broker, bootstrap) = broker_with_transactions(20_000).await;
    let mut mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    let url = mock.url();
    mock.pause().await;

    let extra =
        "    retry: { max_backoff: 200ms }\n    ejection: { base_time: 100ms, max_time: 300ms }";
    let metrics = Metrics::new();
    let (stop, task) = start(&pipeline_yaml(&bootstrap, &url, extra), &metrics).await;
    let m = metrics.clone();
    wait_until_async(
        "consumption to pause",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || m.backpressure_pauses.with_label_values(&["scored"]).get() >= 1,
    )
    .await;
    let waits = metrics
        .models
        .outage_waits
        .with_label_values(&["fraud"])
        .get();
    assert!(waits >= 1);
    let b = bootstrap.clone();
    let committed_during_outage = tokio::task::spawn_blocking(move || {
        fully_committed(&b, "scored-group", "tx-in", PARTITIONS)
    })
    .await
    .unwrap();
    assert!(!committed_during_outage);
    let dead_during_outage = metrics
        .records_dead_lettered
        .with_label_values(&["scored", "model", "connect"])
        .get()
        + metrics
            .records_dead_lettered
            .with_label_values(&["scored", "model", "no_replica"])
            .get();
    assert_eq!(dead_during_outage, 0, "an outage is not bad input");

    mock.resume().await.unwrap();
    wait_done(&bootstrap, &task).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let (out, dlq) = read_outputs(&bootstrap).await;
    assert!(dlq.is_empty(), "{} dead letters after an outage", dlq.len());
    let delivered: HashSet<usize> = ids(&out).into_iter().collect();
    assert_eq!(
        delivered.len(),
        20_000,
        "every record delivered once the model is back"
    );
    eprintln!(
        "outage waits {}, pauses {}",
        metrics
            .models
            .outage_waits
            .with_label_values(&["fraud"])
            .get(),
        metrics
            .backpressure_pauses
            .with_label_values(&["scored"])
            .get()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_rows_are_dead_lettered_by_the_model_stage_and_scored_rows_carry_lineage_headers()
{
    const RECORDS: u64 = 5_000;
    let (_broker, bootstrap) = broker_with_transactions(RECORDS).await;
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    // The model answers 400 to any request holding a negative amount: a poison row.
    mock.set_faults(Faults {
        poison_status: Some(400),
        ..Faults::default()
    });
    let base = pipeline_yaml(&bootstrap, &mock.url(), "");
    let replace = |yaml: String, from: &str, to: &str| {
        assert!(yaml.contains(from), "{from}");
        yaml.replace(from, to)
    };
    let yaml = replace(
        base,
        "SELECT transaction_id, card_id, amount FROM input",
        "SELECT transaction_id, card_id, CASE WHEN CAST(substr(transaction_id, 4) AS BIGINT) % 100 = 7 THEN -amount ELSE amount END AS amount FROM input",
    );
    let yaml = replace(
        yaml,
        "outputs: [{ column: score, from: score }]",
        "outputs: [{ column: score, from: score }]\n    lineage: true",
    );
    let yaml = replace(
        yaml,
        "key: card_id }",
        "key: card_id, headers: { model-version: fraud_version, model-replica: fraud_replica, model-latency-ms: fraud_latency_ms } }",
    );
    let metrics = Metrics::new();
    let (stop, task) = start(&yaml, &metrics).await;
    wait_done(&bootstrap, &task).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let (out, dlq) = read_outputs(&bootstrap).await;
    let poison: HashSet<usize> = (0..RECORDS as usize).filter(|i| i % 100 == 7).collect();
    let dead: HashSet<usize> = ids(&dlq).into_iter().collect();
    assert_eq!(dead, poison, "exactly the rejected rows are dead-lettered");
    assert_eq!(dlq.len(), poison.len(), "each once");
    for m in &dlq {
        let h = &m.headers;
        assert_eq!(h["streamgate.stage"], "model");
        assert_eq!(h["streamgate.error.class"], "rejected", "{h:?}");
        assert_eq!(h["streamgate.model"], "fraud");
        assert_eq!(h["streamgate.model.version"], "v1");
        assert!(h["streamgate.error.message"].contains("400"), "{h:?}");
    }
    let delivered: HashSet<usize> = ids(&out).into_iter().collect();
    assert_eq!(out.len(), RECORDS as usize - poison.len());
    assert!(delivered.is_disjoint(&poison));
    for m in &out {
        let h = &m.headers;
        assert_eq!(h["model-version"], "v1");
        assert_eq!(h["model-replica"], mock.url());
        let latency: f64 = h["model-latency-ms"].parse().unwrap();
        assert!(latency >= 0.0, "{h:?}");
    }
}

/// A model that breaks its contract on every answer (here: a wrong row count) must not drain
/// the stream into the dead-letter topic: past `on_systematic_failure`'s rate the pipeline
/// holds the batch, pauses, reports `held` (not ready, gauge 1) and dead-letters nothing more;
/// once the model answers right again, the held batch goes through and the stream completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_failing_every_row_holds_the_stream_instead_of_dead_lettering_it() {
    let (_broker, bootstrap) = broker_with_transactions(20_000).await;
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    mock.set_faults(Faults {
        wrong_row_count_probability: 1.0,
        ..Faults::default()
    });
    let yaml = format!(
        "{}on_systematic_failure: {{ max_failure_rate: 0.5, min_records: 400, retry_every: 200ms }}\n",
        pipeline_yaml(&bootstrap, &mock.url(), "")
    );
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/scored.yaml");
    let compiled =
        streamgate::plan::compile(streamgate::spec::load_str(&yaml, &file, &|_| None).unwrap())
            .await
            .unwrap();
    let metrics = Metrics::new();
    let board = streamgate::runtime::StatusBoard::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let (metrics, board, stop) = (metrics.clone(), board.clone(), stop.clone());
        async move { streamgate::runtime::run_pipeline(compiled, &metrics, stop, board).await }
    });
    let dead_lettered = |m: &Metrics| {
        m.render()
            .lines()
            .filter(|l| l.starts_with("streamgate_records_dead_lettered_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let held = || {
        matches!(
            board.snapshot().get("scored"),
            Some(streamgate::runtime::PipelineState::Held(_))
        )
    };
    wait_until_async(
        "the guard to trip",
        Duration::from_secs(60),
        Duration::from_millis(20),
        held,
    )
    .await;
    assert!(!board.ready(), "a held pipeline is not ready");
    assert!(
        metrics
            .render()
            .contains("streamgate_systematic_failure{pipeline=\"scored\"} 1")
    );
    // The held batch is retried (each retry calls the model again) and nothing more is
    // dead-lettered meanwhile (batches other workers passed before the trip finish first).
    let retries = async |n: u64| {
        let calls = mock.calls();
        wait_until_async(
            "retries",
            Duration::from_secs(30),
            Duration::from_millis(20),
            || mock.calls() >= calls + n,
        )
        .await;
    };
    retries(3).await;
    let at_trip = dead_lettered(&metrics);
    retries(5).await;
    assert!(held());
    assert_eq!(dead_lettered(&metrics), at_trip, "dead letters while held");
    assert!(
        at_trip < 2_000,
        "the guard trips early: {at_trip} dead letters of 20,000"
    );

    // The model is fixed: the next retry succeeds, the guard clears, the stream completes.
    mock.set_faults(Faults::default());
    wait_done(&bootstrap, &task).await;
    assert_eq!(
        board.snapshot()["scored"],
        streamgate::runtime::PipelineState::Running
    );
    assert!(
        metrics
            .render()
            .contains("streamgate_systematic_failure{pipeline=\"scored\"} 0")
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    let (out, dlq) = read_outputs(&bootstrap).await;
    assert_eq!(
        dlq.len() as u64,
        at_trip,
        "nothing dead-lettered after the trip"
    );
    assert_eq!(
        out.len() + dlq.len(),
        20_000,
        "every record scored or dead-lettered"
    );
}
