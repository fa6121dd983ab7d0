//! NATS and JetStream against a real `nats-server -js`: core subjects and JetStream end to
//! end with 1% poison messages, kill -9 and graceful stops, two instances sharing a queue
//! group or a durable consumer, TLS without a silent plaintext fallback, and credentials.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use rand::{Rng, SeedableRng};
use streamgate::runtime::{PipelineState, StatusBoard, run_pipeline};
use streamgate::telemetry::Metrics;
use tokio_util::sync::CancellationToken;

use crate::common::transactions;
use crate::nats_server::NatsServer;
use crate::process::{start_gateway, terminate, transaction_schema, write_pipeline};

/// Creates a stream capturing `subjects`.
async fn create_stream(js: &jetstream::Context, name: &str, subjects: &[String]) {
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: subjects.to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Publishes every payload to `subject` on JetStream and waits for the stream's acks.
async fn publish_all(js: &jetstream::Context, subject: &str, payloads: &[Vec<u8>]) {
    for chunk in payloads.chunks(500) {
        let mut acks = Vec::with_capacity(chunk.len());
        for p in chunk {
            acks.push(
                js.publish(subject.to_string(), p.clone().into())
                    .await
                    .unwrap(),
            );
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
}

async fn stream_len(js: &jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap()
        .state
        .messages
}

/// Every message of a stream: (subject, payload, headers).
async fn stream_messages(
    js: &jetstream::Context,
    name: &str,
) -> Vec<(String, Vec<u8>, HashMap<String, String>)> {
    let stream = js.get_stream(name).await.unwrap();
    let info = stream.get_info().await.unwrap();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if info.state.messages == 0 {
            break;
        }
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue;
        };
        let headers = m
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.first()
                        .map(|v| v.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        out.push((m.subject.to_string(), m.payload.to_vec(), headers));
    }
    out
}

/// `transaction_id` → number of times it appears in the stream's JSON rows.
async fn id_counts(js: &jetstream::Context, name: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (_, payload, _) in stream_messages(js, name).await {
        let row: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let id = row["transaction_id"].as_str().unwrap().to_string();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

async fn consumer_info(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
) -> jetstream::consumer::Info {
    let mut consumer: jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await
        .unwrap()
        .get_consumer(durable)
        .await
        .unwrap();
    consumer.info().await.unwrap().clone()
}

/// Deliveries beyond the first of each message, over the consumer's life: its delivery
/// counter minus the last stream sequence it delivered (it consumes from sequence 1).
async fn redeliveries(js: &jetstream::Context, stream: &str, durable: &str) -> u64 {
    let info = consumer_info(js, stream, durable).await;
    info.delivered.consumer_sequence - info.delivered.stream_sequence
}

/// Waits until the durable consumer has nothing pending and nothing unacknowledged.
async fn wait_settled(js: &jetstream::Context, stream: &str, durable: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let info = consumer_info(js, stream, durable).await;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer {durable} still has {} pending and {} unacknowledged",
            info.num_pending,
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A JetStream → SQL → JetStream pipeline (`jetstream_out: false` publishes with core NATS
/// into a subject the output stream captures, so duplicates are visible).
fn jetstream_pipeline(url: &str, name: &str, jetstream_out: bool) -> String {
    format!(
        r#"
name: {name}
source:
  type: nats
  servers: {url}
  jetstream: {{ stream: {name}_in, durable: {name}, ack_wait: 2s, nak_delay: 100ms }}
  batch: {{ max_rows: 100, max_age: 5ms }}
format: {{ type: json, schema: {schema} }}
sql: SELECT transaction_id, card_id, amount, country FROM input
outputs:
  - name: scored
    sink:
      type: nats
      subject: "{name}.out.{{country}}"
      jetstream: {jetstream_out}
      headers: {{ card: card_id }}
dead_letter: {{ type: nats, subject: {name}.dlq, jetstream: true }}
"#,
        schema = transaction_schema()
    )
}

async fn compile(yaml: &str) -> Arc<streamgate::plan::CompiledPipeline> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/nats-test.yaml");
    let loaded = streamgate::spec::load_str(yaml, &file, &|_| None).unwrap();
    streamgate::plan::compile(loaded).await.unwrap()
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<
        Result<streamgate::source::SourceReport, streamgate::runtime::RuntimeError>,
    >,
    metrics: Metrics,
}

/// Starts a pipeline in process and waits until it is subscribed.
async fn start(compiled: Arc<streamgate::plan::CompiledPipeline>) -> Running {
    let metrics = Metrics::new();
    let stop = CancellationToken::new();
    let status = StatusBoard::default();
    let (m, s, st) = (metrics.clone(), stop.clone(), status.clone());
    let task = tokio::spawn(async move { run_pipeline(compiled, &m, s, st).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !status.ready() {
        if let Some(PipelineState::Failed(e)) = status.snapshot().values().next() {
            panic!("pipeline failed to start: {e}");
        }
        assert!(tokio::time::Instant::now() < deadline, "pipeline never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running {
        stop,
        task,
        metrics,
    }
}

impl Running {
    async fn stop(self) -> Metrics {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        self.metrics
    }
}

fn metric(metrics: &Metrics, name: &str, label: &str) -> f64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn payloads(n: u64) -> (Vec<Vec<u8>>, Vec<usize>) {
    let (records, bad) = transactions(n, 0.01);
    (records.into_iter().map(|(_, p)| p).collect(), bad)
}

fn good_ids(n: u64, bad: &[usize]) -> Vec<String> {
    (0..n as usize)
        .filter(|i| !bad.contains(i))
        .map(|i| format!("tx-{i:012}"))
        .collect()
}

async fn streams_for(js: &jetstream::Context, name: &str) {
    create_stream(js, &format!("{name}_in"), &[format!("{name}.in")]).await;
    create_stream(js, &format!("{name}_out"), &[format!("{name}.out.>")]).await;
    create_stream(js, &format!("{name}_dlq"), &[format!("{name}.dlq")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_to_sql_to_jetstream_with_poison_messages() {
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let name = "jsflow";
    streams_for(&js, name).await;
    const N: u64 = 3_000;
    let (payloads, bad) = payloads(N);
    publish_all(&js, &format!("{name}.in"), &payloads).await;

    let running = start(compile(&jetstream_pipeline(&server.url, name, true)).await).await;
    wait_until_async_js(&js, &format!("{name}_out"), N - bad.len() as u64).await;
    wait_settled(&js, &format!("{name}_in"), name).await;
    let metrics = running.stop().await;

    // Every good record exactly once, under the subject built from its country column, with
    // the header taken from a column.
    let out = stream_messages(&js, &format!("{name}_out")).await;
    let mut ids: Vec<String> = Vec::new();
    for (subject, payload, headers) in &out {
        let row: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(
            subject,
            &format!("{name}.out.{}", row["country"].as_str().unwrap())
        );
        assert_eq!(headers["card"], row["card_id"].as_str().unwrap());
        assert!(headers.contains_key("Nats-Msg-Id"));
        ids.push(row["transaction_id"].as_str().unwrap().to_string());
    }
    ids.sort();
    assert_eq!(ids, good_ids(N, &bad));

    // Poison messages: dead-lettered with their original bytes and context, then terminated.
    let dlq = stream_messages(&js, &format!("{name}_dlq")).await;
    assert_eq!(dlq.len(), bad.len());
    for (_, payload, headers) in &dlq {
        assert!(
            payloads.contains(payload),
            "dead letter keeps the original bytes"
        );
        assert_eq!(headers["streamgate.stage"], "decode");
        assert_eq!(headers["streamgate.pipeline"], name);
    }
    assert_eq!(
        metric(&metrics, "streamgate_nats_acks_total", "kind=\"term\""),
        bad.len() as f64
    );
    assert_eq!(
        metric(&metrics, "streamgate_nats_acks_total", "kind=\"ack\""),
        (N - bad.len() as u64) as f64
    );
}

async fn wait_until_async_js(js: &jetstream::Context, stream: &str, at_least: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let n = stream_len(js, stream).await;
        if n >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stream} has {n} of {at_least} messages"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_to_sql_to_nats_with_poison_messages() {
    let server = NatsServer::start();
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    let name = "coreflow";
    // The output and dead-letter subjects are captured by streams so the test can read them.
    create_stream(&js, "coreflow_out", &["coreflow.out.>".to_string()]).await;
    create_stream(&js, "coreflow_dlq", &["coreflow.dlq".to_string()]).await;
    let yaml = format!(
        r#"
name: {name}
source:
  type: nats
  servers: {url}
  subjects: [{name}.in]
  batch: {{ max_rows: 100, max_age: 5ms }}
format: {{ type: json, schema: {schema} }}
sql: SELECT transaction_id, amount, country FROM input WHERE amount >= 0
outputs:
  - name: scored
    sink: {{ type: nats, subject: "{name}.out.{{country}}" }}
dead_letter: {{ type: nats, subject: {name}.dlq }}
"#,
        url = server.url,
        schema = transaction_schema()
    );
    let running = start(compile(&yaml).await).await;
    const N: u64 = 2_000;
    let (payloads, bad) = payloads(N);
    for p in &payloads {
        client
            .publish(format!("{name}.in"), p.clone().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    wait_until_async_js(&js, "coreflow_out", N - bad.len() as u64).await;
    wait_until_async_js(&js, "coreflow_dlq", bad.len() as u64).await;
    running.stop().await;
    let counts = id_counts(&js, "coreflow_out").await;
    let mut ids: Vec<String> = counts.keys().cloned().collect();
    ids.sort();
    assert_eq!(ids, good_ids(N, &bad));
    assert!(counts.values().all(|c| *c == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_mid_stream_has_no_duplicates() {
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let name = "jsgraceful";
    streams_for(&js, name).await;
    const N: u64 = 20_000;
    let (payloads, bad) = payloads(N);
    publish_all(&js, &format!("{name}.in"), &payloads).await;
    // Core publishing to the output: the output stream keeps every copy, so a duplicate
    // caused by the stop would show.
    let compiled = compile(&jetstream_pipeline(&server.url, name, false)).await;

    let first = start(compiled.clone()).await;
    wait_until_async_js(&js, &format!("{name}_out"), 1_000).await;
    first.stop().await;
    let after_stop = stream_len(&js, &format!("{name}_out")).await;
    assert!(after_stop < N - bad.len() as u64, "stopped mid-stream");

    let second = start(compiled).await;
    wait_until_async_js(&js, &format!("{name}_out"), N - bad.len() as u64).await;
    wait_settled(&js, &format!("{name}_in"), name).await;
    second.stop().await;

    let counts = id_counts(&js, &format!("{name}_out")).await;
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    assert_eq!(duplicates, 0, "a graceful stop must not duplicate");
    assert_eq!(counts.len() as u64, N - bad.len() as u64);
    // Messages read but not yet handed to a worker when the stop came are nak'ed (and
    // prefetched ones time out): redelivered, but never published twice.
    let redelivered = redeliveries(&js, &format!("{name}_in"), name).await;
    eprintln!("graceful stop: {redelivered} unprocessed messages redelivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_durable_consumer() {
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let name = "jsshared";
    streams_for(&js, name).await;
    let compiled = compile(&jetstream_pipeline(&server.url, name, true)).await;
    let a = start(compiled.clone()).await;
    let b = start(compiled).await;
    const N: u64 = 10_000;
    let (payloads, bad) = payloads(N);
    publish_all(&js, &format!("{name}.in"), &payloads).await;
    wait_until_async_js(&js, &format!("{name}_out"), N - bad.len() as u64).await;
    wait_settled(&js, &format!("{name}_in"), name).await;
    let (ma, mb) = (a.stop().await, b.stop().await);
    let (ra, rb) = (
        metric(&ma, "streamgate_records_in_total", ""),
        metric(&mb, "streamgate_records_in_total", ""),
    );
    eprintln!("durable consumer shared: {ra} and {rb} records");
    assert!(
        ra > 0.0 && rb > 0.0,
        "both instances took part: {ra} / {rb}"
    );
    assert_eq!(ra + rb, N as f64);
    let counts = id_counts(&js, &format!("{name}_out")).await;
    assert_eq!(counts.len() as u64, N - bad.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_queue_group() {
    let server = NatsServer::start();
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    let name = "queued";
    create_stream(&js, "queued_out", &["queued.out".to_string()]).await;
    let yaml = format!(
        r#"
name: {name}
source:
  type: nats
  servers: {url}
  subjects: [{name}.in]
  queue_group: scorers
  batch: {{ max_rows: 50, max_age: 5ms }}
format: {{ type: json, schema: {schema} }}
sql: SELECT transaction_id FROM input
outputs:
  - name: out
    sink: {{ type: nats, subject: {name}.out }}
on_error: drop
"#,
        url = server.url,
        schema = transaction_schema()
    );
    let compiled = compile(&yaml).await;
    let a = start(compiled.clone()).await;
    let b = start(compiled).await;
    const N: u64 = 4_000;
    let (payloads, bad) = payloads(N);
    for p in &payloads {
        client
            .publish(format!("{name}.in"), p.clone().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    wait_until_async_js(&js, "queued_out", N - bad.len() as u64).await;
    let (ma, mb) = (a.stop().await, b.stop().await);
    let (ra, rb) = (
        metric(&ma, "streamgate_records_in_total", ""),
        metric(&mb, "streamgate_records_in_total", ""),
    );
    assert!(
        ra > 0.0 && rb > 0.0,
        "both instances took part: {ra} / {rb}"
    );
    assert_eq!(
        ra + rb,
        N as f64,
        "each message went to exactly one instance"
    );
    let counts = id_counts(&js, "queued_out").await;
    assert_eq!(counts.len() as u64, N - bad.len() as u64);
}

/// kill -9 at random moments, restart, and finally stop gracefully: every message delivered
/// at least once (the output stream's duplicate window collapses redeliveries, so exactly
/// once here), every poison message on the dead-letter subject, none left unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_delivers_everything() {
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let name = "jscrash";
    streams_for(&js, name).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        name,
        &jetstream_pipeline(&server.url, name, true),
    );
    let log = dir.path().join("gateway.log");
    let seed: u64 = rand::rng().random();
    eprintln!("nats crash test seed {seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    const ROUNDS: u64 = 3;
    const PER_ROUND: u64 = 5_000;
    let (payloads, bad) = payloads(ROUNDS * PER_ROUND);
    let out = format!("{name}_out");
    for round in 0..ROUNDS {
        let chunk = &payloads[(round * PER_ROUND) as usize..((round + 1) * PER_ROUND) as usize];
        publish_all(&js, &format!("{name}.in"), chunk).await;
        let before = stream_len(&js, &out).await;
        let mut gateway = start_gateway(&file, &log, Stdio::null());
        let target = before + rng.random_range(1..4_000);
        wait_until_async_js(&js, &out, target).await;
        gateway.kill().unwrap();
        gateway.wait().unwrap();
    }
    let gateway = start_gateway(&file, &log, Stdio::null());
    let total_good = ROUNDS * PER_ROUND - bad.len() as u64;
    wait_until_async_js(&js, &out, total_good).await;
    wait_settled(&js, &format!("{name}_in"), name).await;
    terminate(&gateway);
    let mut gateway = gateway;
    assert!(gateway.wait().unwrap().success(), "SIGTERM exits 0");

    let counts = id_counts(&js, &out).await;
    let mut ids: Vec<String> = counts.keys().cloned().collect();
    ids.sort();
    assert_eq!(
        ids,
        good_ids(ROUNDS * PER_ROUND, &bad),
        "every record delivered"
    );
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    assert_eq!(duplicates, 0, "Nats-Msg-Id collapses redelivered rows");
    let dlq = stream_messages(&js, &format!("{name}_dlq")).await;
    assert_eq!(
        dlq.len(),
        bad.len(),
        "every poison message dead-lettered once"
    );
    let redelivered = redeliveries(&js, &format!("{name}_in"), name).await;
    eprintln!("nats crash test: {ROUNDS} kill -9 rounds, {redelivered} messages redelivered");
    assert!(redelivered > 0, "the kills interrupted work in flight");
}

/// A model slower than `ack_wait`: progress acks keep the server from redelivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_acks_keep_slow_batches_from_being_redelivered() {
    use streamgate::testing::mock_model::{Faults, Latency, MockModel, MockModelConfig};
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let name = "jsslow";
    streams_for(&js, name).await;
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    mock.set_faults(Faults {
        latency: Latency::Fixed(Duration::from_millis(2_500)),
        ..Faults::default()
    });
    let yaml = format!(
        r#"
name: {name}
source:
  type: nats
  servers: {url}
  jetstream: {{ stream: {name}_in, durable: {name}, ack_wait: 1s }}
  batch: {{ max_rows: 100, max_age: 5ms }}
format: {{ type: json, schema: {schema} }}
sql: SELECT transaction_id, amount FROM input
models:
  fraud:
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{model}"] }}
    timeout: 10s
    deadline: 20s
    batching: {{ max_batch_rows: 100, max_delay: 1ms }}
inference:
  - name: fraud
    model: fraud
    inputs: [amount]
    outputs: [{{ column: score, from: score }}]
outputs:
  - name: scored
    sink: {{ type: nats, subject: {name}.out.all, jetstream: false }}
on_error: drop
"#,
        url = server.url,
        model = mock.url(),
        schema = transaction_schema()
    );
    const N: u64 = 300;
    let (payloads, bad) = payloads(N);
    publish_all(&js, &format!("{name}.in"), &payloads).await;
    let running = start(compile(&yaml).await).await;
    wait_until_async_js(&js, &format!("{name}_out"), N - bad.len() as u64).await;
    wait_settled(&js, &format!("{name}_in"), name).await;
    let metrics = running.stop().await;
    assert!(metric(&metrics, "streamgate_nats_acks_total", "kind=\"progress\"") > 0.0);
    assert_eq!(redeliveries(&js, &format!("{name}_in"), name).await, 0);
    let counts = id_counts(&js, &format!("{name}_out")).await;
    assert!(counts.values().all(|c| *c == 1), "no row published twice");
}

/// The output stream is missing at first, so publishing fails: batches are nak'ed with a
/// delay and redelivered; once the stream exists everything arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_sink_failures_nak_and_redeliver_without_loss() {
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let name = "jsnak";
    create_stream(&js, &format!("{name}_in"), &[format!("{name}.in")]).await;
    create_stream(&js, &format!("{name}_dlq"), &[format!("{name}.dlq")]).await;
    const N: u64 = 500;
    let (payloads, bad) = payloads(N);
    publish_all(&js, &format!("{name}.in"), &payloads).await;
    let running = start(compile(&jetstream_pipeline(&server.url, name, true)).await).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while metric(
        &running.metrics,
        "streamgate_nats_acks_total",
        "kind=\"nak\"",
    ) < 1.0
    {
        assert!(tokio::time::Instant::now() < deadline, "no nak");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    create_stream(&js, &format!("{name}_out"), &[format!("{name}.out.>")]).await;
    wait_until_async_js(&js, &format!("{name}_out"), N - bad.len() as u64).await;
    wait_settled(&js, &format!("{name}_in"), name).await;
    running.stop().await;
    assert!(redeliveries(&js, &format!("{name}_in"), name).await > 0);
    let counts = id_counts(&js, &format!("{name}_out")).await;
    assert_eq!(counts.len() as u64, N - bad.len() as u64);
    assert!(counts.values().all(|c| *c == 1));
}

/// With `max_deliver`, a message that fails on its last delivery is counted and logged, and
/// the server stops redelivering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_deliver_is_respected() {
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let name = "jsmax";
    create_stream(&js, &format!("{name}_in"), &[format!("{name}.in")]).await;
    create_stream(&js, &format!("{name}_dlq"), &[format!("{name}.dlq")]).await;
    let (payloads, _) = payloads(50);
    let good: Vec<Vec<u8>> = payloads.into_iter().take(50).collect();
    publish_all(&js, &format!("{name}.in"), &good[..40]).await;
    let yaml = jetstream_pipeline(&server.url, name, true)
        .replace("nak_delay: 100ms }", "nak_delay: 50ms, max_deliver: 2 }");
    let running = start(compile(&yaml).await).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while metric(
        &running.metrics,
        "streamgate_nats_acks_total",
        "kind=\"exhausted\"",
    ) < 40.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "messages not exhausted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_settled(&js, &format!("{name}_in"), name).await;
    let info = consumer_info(&js, &format!("{name}_in"), name).await;
    assert_eq!(
        info.delivered.consumer_sequence, 80,
        "two deliveries each, no more"
    );
    running.stop().await;
}

/// Rows the Avro output schema cannot hold (a channel that is not one of its enum symbols) are
/// dead-lettered with stage `encode`; the others are published as Avro with the user's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_output_schema_rejects_are_dead_lettered() {
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let name = "jsenc";
    streams_for(&js, name).await;
    let dir = tempfile::tempdir().unwrap();
    let avsc = dir.path().join("out.avsc");
    std::fs::write(
        &avsc,
        r#"{"type": "record", "name": "Out", "fields": [
             {"name": "transaction_id", "type": "string"},
             {"name": "channel", "type": {"type": "enum", "name": "C", "symbols": ["pos", "atm"]}},
             {"name": "origin", "type": "string", "default": "streamgate"}]}"#,
    )
    .unwrap();
    let yaml = format!(
        r#"
name: {name}
source:
  type: nats
  servers: {url}
  jetstream: {{ stream: {name}_in, durable: {name} }}
format: {{ type: json, schema: {schema} }}
sql: SELECT transaction_id, CAST(channel AS VARCHAR) AS channel FROM input
outputs:
  - name: out
    sink:
      type: nats
      subject: {name}.out.all
      jetstream: true
      format: {{ type: avro, schema: {avsc:?} }}
dead_letter: {{ type: nats, subject: {name}.dlq, jetstream: true }}
"#,
        url = server.url,
        schema = transaction_schema(),
        avsc = avsc.display().to_string()
    );
    const N: u64 = 500;
    let (payloads, bad) = payloads(N);
    let online: Vec<usize> = payloads
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            !bad.contains(i)
                && serde_json::from_slice::<serde_json::Value>(p).unwrap()["channel"] == "online"
        })
        .map(|(i, _)| i)
        .collect();
    assert!(!online.is_empty());
    publish_all(&js, &format!("{name}.in"), &payloads).await;
    let running = start(compile(&yaml).await).await;
    let expected_out = N - bad.len() as u64 - online.len() as u64;
    wait_until_async_js(&js, &format!("{name}_out"), expected_out).await;
    wait_until_async_js(
        &js,
        &format!("{name}_dlq"),
        (bad.len() + online.len()) as u64,
    )
    .await;
    wait_settled(&js, &format!("{name}_in"), name).await;
    running.stop().await;
    let schema = apache_avro::Schema::parse_str(&std::fs::read_to_string(&avsc).unwrap()).unwrap();
    for (_, payload, _) in stream_messages(&js, &format!("{name}_out")).await {
        let value = apache_avro::from_avro_datum(&schema, &mut &payload[..], None).unwrap();
        let json = serde_json::Value::try_from(value).unwrap();
        assert_ne!(json["channel"], "online");
        assert_eq!(json["origin"], "streamgate");
    }
    let encode_failures = stream_messages(&js, &format!("{name}_dlq"))
        .await
        .into_iter()
        .filter(|(_, _, h)| h["streamgate.stage"] == "encode")
        .count();
    assert_eq!(encode_failures, online.len());
}

/// Writes a CA and a server certificate for 127.0.0.1 into `dir`; returns the CA path.
fn write_certificates(dir: &Path) -> std::path::PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

fn connection(
    url: &str,
    auth: Option<streamgate::spec::NatsAuth>,
    tls: Option<streamgate::spec::NatsTls>,
) -> streamgate::spec::NatsConnectionSpec {
    streamgate::spec::NatsConnectionSpec {
        servers: url.to_string(),
        auth,
        tls,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_required_and_never_falls_back_to_plaintext() {
    let certs = tempfile::tempdir().unwrap();
    let ca = write_certificates(certs.path());
    let server = NatsServer::start_with_config(&format!(
        "tls {{ cert_file: {:?}, key_file: {:?} }}",
        certs.path().join("server.pem"),
        certs.path().join("server-key.pem")
    ));
    let tls = |ca_file: Option<String>| streamgate::spec::NatsTls {
        ca_file,
        ..Default::default()
    };

    // Without the CA the server's certificate is not trusted: refused.
    let err =
        streamgate::connect::nats::connect(&connection(&server.url, None, Some(tls(None))), "t")
            .await
            .unwrap_err();
    eprintln!("without the CA: {err}");
    // Without TLS settings the client still must not talk plaintext to a TLS server.
    assert!(
        streamgate::connect::nats::connect(&connection(&server.url, None, None), "t")
            .await
            .is_err()
    );
    // With the CA: connected, and messages flow.
    let ca = ca.display().to_string();
    let client = streamgate::connect::nats::connect(
        &connection(&server.url, None, Some(tls(Some(ca.clone())))),
        "t",
    )
    .await
    .unwrap();
    client.publish("x", "y".into()).await.unwrap();
    client.flush().await.unwrap();

    // A plaintext server is refused when TLS is configured: no silent downgrade.
    let plain = NatsServer::start();
    assert!(
        streamgate::connect::nats::connect(&connection(&plain.url, None, Some(tls(Some(ca)))), "t")
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_used_and_never_echoed() {
    use streamgate::spec::{NatsAuth, Secret};
    let canary = "canary-secret-7f3a";

    let server = NatsServer::start_with_config(&format!("authorization {{ token: {canary:?} }}"));
    let good = NatsAuth::Token {
        token: Secret::new(canary),
    };
    streamgate::connect::nats::connect(&connection(&server.url, Some(good), None), "t")
        .await
        .unwrap();
    let wrong = NatsAuth::Token {
        token: Secret::new("wrong-canary-9c1e"),
    };
    let err = streamgate::connect::nats::connect(&connection(&server.url, Some(wrong), None), "t")
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("canary"), "secret echoed: {err}");

    let server = NatsServer::start_with_config(&format!(
        "authorization {{ users: [ {{ user: scorer, password: {canary:?} }} ] }}"
    ));
    let auth = |password: &str| NatsAuth::UserPassword {
        username: "scorer".into(),
        password: Secret::new(password),
    };
    streamgate::connect::nats::connect(&connection(&server.url, Some(auth(canary)), None), "t")
        .await
        .unwrap();
    let err = streamgate::connect::nats::connect(
        &connection(&server.url, Some(auth("bad-canary")), None),
        "t",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(!err.contains("canary"), "secret echoed: {err}");

    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let server = NatsServer::start_with_config(&format!(
        "authorization {{ users: [ {{ nkey: {:?} }} ] }}",
        user.public_key()
    ));
    let nkey = |seed: &str| NatsAuth::Nkey {
        seed: Secret::new(seed),
    };
    streamgate::connect::nats::connect(&connection(&server.url, Some(nkey(&seed)), None), "t")
        .await
        .unwrap();
    let other = nkeys::KeyPair::new_user().seed().unwrap();
    let err =
        streamgate::connect::nats::connect(&connection(&server.url, Some(nkey(&other)), None), "t")
            .await
            .unwrap_err()
            .to_string();
    assert!(!err.contains(&other[..10]), "seed echoed: {err}");

    // A missing .creds file is a clear error naming the file, not its content.
    let creds = NatsAuth::Credentials {
        file: "/nonexistent/user.creds".into(),
    };
    let err = streamgate::connect::nats::connect(&connection(&server.url, Some(creds), None), "t")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/user.creds"), "{err}");
}

/// The core-NATS source cannot promise at-least-once; validation says so.
#[test]
fn at_least_once_on_core_nats_is_refused_in_plain_words() {
    let yaml = r#"
name: core-alo
source:
  type: nats
  servers: nats://127.0.0.1:4222
  subjects: [in]
  delivery: at_least_once
format: { type: json, columns: [ { name: id, type: string } ] }
outputs:
  - name: out
    sink: { type: nats, subject: out }
"#;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/x.yaml");
    let Err(err) = streamgate::spec::load_str(yaml, &file, &|_| None) else {
        panic!("core NATS with at_least_once must be refused");
    };
    let err = err.to_string();
    assert!(
        err.contains("source.delivery: core NATS cannot deliver at least once"),
        "{err}"
    );
}
