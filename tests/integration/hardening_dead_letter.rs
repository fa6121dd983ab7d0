//! A poison pill never stalls a partition: a malformed record carrying a ~1 MiB header or key
//! makes a dead letter bigger than the dead-letter sink's message limit. It is written in a
//! bounded form (context headers, what was cut and how large it was, as much of the original
//! as fits) and the partition moves on (issue 25, item 1).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use streamgate::telemetry::Metrics;
use streamgate::testing::EmbeddedBroker;
use tokio_util::sync::CancellationToken;

use crate::common::{read_all, spawn_pipeline, transactions, wait_committed};
use crate::nats_server::NatsServer;

/// One MiB: more than librdkafka's default `message.max.bytes` (1,000,000) and NATS's default
/// `max_payload` (1 MiB) once the context headers are added.
const POISON: usize = 1 << 20;

/// A record to produce: key, payload, and an extra header.
type Record = (Vec<u8>, Vec<u8>, Option<(String, Vec<u8>)>);

/// Records of the input: good transactions, and at offsets 3 and 7 malformed ones carrying a
/// 1 MiB header and a 1 MiB key.
struct Input {
    records: Vec<Record>,
    poison: [usize; 2],
}

fn input() -> Input {
    let (good, _) = transactions(10, 0.0);
    let mut records: Vec<_> = good.into_iter().map(|(k, v)| (k, v, None)).collect();
    records[3] = (
        b"3".to_vec(),
        b"{not json".to_vec(),
        Some(("poison".into(), vec![b'h'; POISON])),
    );
    records[7] = (vec![b'k'; POISON], b"{not json either".to_vec(), None);
    Input {
        records,
        poison: [3, 7],
    }
}

/// Produces to partition 0 with a limit big enough for the poison pills.
fn produce(bootstrap: &str, topic: &str, input: &Input) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    for (key, payload, header) in &input.records {
        let mut headers = OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "trace",
            value: Some("t-1"),
        });
        if let Some((name, value)) = header {
            headers = headers.insert(rdkafka::message::Header {
                key: name,
                value: Some(value),
            });
        }
        let record = BaseRecord::to(topic)
            .key(key.as_slice())
            .payload(payload.as_slice())
            .headers(headers)
            .partition(0);
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn yaml(bootstrap: &str, name: &str, dead_letter: &str) -> String {
    format!(
        r#"
name: {name}
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [{name}-in]
  group_id: {name}-group
  batch: {{ max_rows: 100, max_age: 5ms }}
  properties: {{ fetch.message.max.bytes: "4000000" }}
format: {{ type: json, schema: ../schemas/transaction.avsc }}
sql: SELECT transaction_id FROM input
outputs:
  - name: out
    sink: {{ type: kafka, topic: {name}-out }}
dead_letter: {dead_letter}
"#
    )
}

async fn compile(yaml: &str) -> Arc<streamgate::plan::CompiledPipeline> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/poison.yaml");
    let loaded = streamgate::spec::load_str(yaml, &file, &|_| None).unwrap();
    streamgate::plan::compile(loaded).await.unwrap()
}

/// Checks one bounded dead letter's headers: context, what was cut, original sizes.
fn assert_bounded(headers: &HashMap<String, String>, offset: usize, cut: &str) {
    assert_eq!(headers["streamgate.stage"], "decode", "{offset}");
    assert_eq!(headers["streamgate.source.offset"], offset.to_string());
    assert_eq!(headers["streamgate.truncated"], cut, "{offset}");
    assert!(headers.contains_key("streamgate.original.payload.bytes"));
    // The small original header is kept; the poison header is not.
    assert_eq!(headers.get("trace").map(String::as_str), Some("t-1"));
    assert!(!headers.contains_key("poison"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_dead_letters_too_large_for_the_producer_are_bounded_and_the_partition_moves_on() {
    let name = "poison";
    let topics = [("poison-in", 1), ("poison-out", 1), ("poison-dlq", 1)];
    let broker = EmbeddedBroker::start(&topics).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let input = input();
    produce(&bootstrap, "poison-in", &input);

    let compiled = compile(&yaml(
        &bootstrap,
        name,
        &format!("{{ type: kafka, topic: {name}-dlq }}"),
    ))
    .await;
    let metrics = Metrics::new();
    let (stop, task) = spawn_pipeline(compiled, &metrics);
    // Before the fix the dead-letter send failed with MessageSizeTooLarge and nothing past
    // offset 3 was ever committed.
    wait_committed(&bootstrap, "poison-group", "poison-in", 1).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let b = bootstrap.clone();
    let (out, dlq) = tokio::task::spawn_blocking(move || {
        (read_all(&b, "poison-out", 1), read_all(&b, "poison-dlq", 1))
    })
    .await
    .unwrap();
    assert_eq!(out.len(), input.records.len() - input.poison.len());
    assert_eq!(dlq.len(), 2);
    let header_pill = &dlq[0];
    assert_bounded(&header_pill.headers, input.poison[0], "headers");
    assert_eq!(header_pill.payload, b"{not json", "the payload fits whole");
    assert_eq!(
        header_pill.headers["streamgate.original.headers.bytes"],
        (5 + 3 + 6 + POISON + 2 * 8).to_string()
    );
    let key_pill = &dlq[1];
    assert_bounded(&key_pill.headers, input.poison[1], "key");
    assert_eq!(key_pill.key.as_ref().map(Vec::len), Some(1024));
    assert_eq!(
        key_pill.headers["streamgate.original.key.bytes"],
        POISON.to_string()
    );
    assert_eq!(key_pill.payload, b"{not json either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_dead_letters_too_large_for_max_payload_are_bounded_and_the_partition_moves_on() {
    let name = "npoison";
    let server = NatsServer::start();
    let client = server.client().await;
    let mut dlq = client.subscribe(format!("{name}.dlq")).await.unwrap();
    client.flush().await.unwrap();
    let topics = [("npoison-in", 1), ("npoison-out", 1)];
    let broker = EmbeddedBroker::start(&topics).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let input = input();
    produce(&bootstrap, "npoison-in", &input);

    let compiled = compile(&yaml(
        &bootstrap,
        name,
        &format!(
            "{{ type: nats, servers: \"{}\", subject: {name}.dlq }}",
            server.url
        ),
    ))
    .await;
    let (stop, task) = spawn_pipeline(compiled, &Metrics::new());
    wait_committed(&bootstrap, "npoison-group", "npoison-in", 1).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let mut letters = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(30), dlq.next())
            .await
            .expect("a dead letter within 30 s")
            .expect("subscription open");
        assert!(message.payload.len() + 4096 < client.server_info().max_payload as usize);
        let headers: HashMap<String, String> = message
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|(k, v)| (k.to_string(), v[0].to_string()))
            .collect();
        letters.push(headers);
    }
    assert_bounded(&letters[0], input.poison[0], "headers");
    // The key is not part of a NATS message: only its size is recorded.
    assert_eq!(
        letters[1]["streamgate.original.key.bytes"],
        POISON.to_string()
    );
}

/// A pipeline running over `records` (partition 0 of `{name}-in`), with the dead-letter sink
/// `dead_letter` (YAML, with the pipeline's `on_undeliverable_dead_letter` line).
struct Run {
    bootstrap: String,
    metrics: Metrics,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<PipelineResult>,
    broker: EmbeddedBroker,
    _server: Option<NatsServer>,
}

/// Starts the broker with `{name}-in`, `{name}-out` and `extra_topics`, produces `records`,
/// lets `prepare` set the broker up, then spawns the pipeline.
async fn start(
    name: &str,
    extra_topics: &[String],
    records: Vec<(Vec<u8>, Vec<u8>)>,
    dead_letter: &str,
    prepare: impl FnOnce(&EmbeddedBroker),
) -> Run {
    let mut topics = vec![(format!("{name}-in"), 1), (format!("{name}-out"), 1)];
    topics.extend(extra_topics.iter().map(|t| (t.clone(), 1)));
    let topics: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let broker = EmbeddedBroker::start(&topics).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let b = bootstrap.clone();
    let topic = format!("{name}-in");
    tokio::task::spawn_blocking(move || crate::common::produce(&b, &topic, 1, &records))
        .await
        .unwrap();
    prepare(&broker);
    let metrics = Metrics::new();
    let (stop, task) = spawn_pipeline(
        compile(&yaml(&bootstrap, name, dead_letter)).await,
        &metrics,
    );
    Run {
        bootstrap,
        metrics,
        stop,
        task,
        broker,
        _server: None,
    }
}

/// `streamgate_dead_letters_undeliverable_total`, summed over its labels.
fn undeliverable_count(metrics: &Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("streamgate_dead_letters_undeliverable_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// A pipeline whose dead-letter sink is a NATS server with a `max_payload` that cannot hold
/// even a dead letter's context headers: every dead letter is undeliverable, and
/// `on_undeliverable_dead_letter` decides. Record 2 of 6 is malformed.
async fn undeliverable(name: &str, policy: &str) -> Run {
    let server = NatsServer::start_with_config("max_payload: 200");
    let (mut records, _) = transactions(6, 0.0);
    records[2].1 = b"{not json".to_vec();
    let dead_letter = format!(
        "{{ type: nats, servers: \"{}\", subject: {name}.dlq }}\non_undeliverable_dead_letter: {policy}",
        server.url
    );
    let mut run = start(name, &[], records, &dead_letter, |_| {}).await;
    run._server = Some(server);
    run
}

type PipelineResult =
    Result<streamgate::source::kafka::SourceReport, streamgate::runtime::RuntimeError>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_dead_letter_is_counted_and_skipped_by_default_policy_drop() {
    let run = undeliverable("undrop", "drop").await;
    let bootstrap = run.bootstrap.clone();
    wait_committed(&bootstrap, "undrop-group", "undrop-in", 1).await;
    assert_eq!(undeliverable_count(&run.metrics), 1);
    let b = bootstrap.clone();
    let out = tokio::task::spawn_blocking(move || read_all(&b, "undrop-out", 1))
        .await
        .unwrap();
    assert_eq!(out.len(), 5);
    run.stop.cancel();
    run.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_dead_letter_stops_the_pipeline_with_policy_fail() {
    let run = undeliverable("unfail", "fail").await;
    let bootstrap = run.bootstrap.clone();
    let result = tokio::time::timeout(Duration::from_secs(120), run.task)
        .await
        .expect("the pipeline stops by itself")
        .unwrap();
    let error = result
        .expect_err("policy fail stops the pipeline")
        .to_string();
    assert!(error.contains("not delivered"), "{error}");
    let b = bootstrap.clone();
    let committed = tokio::task::spawn_blocking(move || {
        crate::common::committed(&b, "unfail-group", "unfail-in", 1)
    })
    .await
    .unwrap();
    let at = committed[&0].unwrap_or(0);
    assert!(
        at <= 2,
        "committed offset {at} passed the undeliverable record"
    );
}

/// A run whose dead-letter topic's broker refuses the first `refusals` produce requests as too
/// large, after the producer accepted the letter (a topic whose `max.message.bytes` is below
/// the producer's `message.max.bytes`). The input is one malformed record, so every produce
/// request is a dead letter's.
async fn refused_late(name: &str, refusals: usize, policy: &str) -> Run {
    let records = vec![(b"k".to_vec(), b"{not json".to_vec())];
    let dead_letter =
        format!("{{ type: kafka, topic: {name}-dlq }}\non_undeliverable_dead_letter: {policy}");
    start(
        name,
        &[format!("{name}-dlq")],
        records,
        &dead_letter,
        |broker| {
            broker.fail_next_produce_requests(&vec![
                    rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
                    refusals
                ])
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_the_broker_refuses_as_too_large_is_sent_again_as_its_context() {
    let run = refused_late("late", 1, "fail").await;
    wait_committed(&run.bootstrap, "late-group", "late-in", 1).await;
    let b = run.bootstrap.clone();
    let letters = tokio::task::spawn_blocking(move || read_all(&b, "late-dlq", 1))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "one dead letter, its context alone");
    let letter = &letters[0];
    let headers = &letter.headers;
    assert_eq!(headers["streamgate.stage"], "decode");
    assert_eq!(headers["streamgate.source.offset"], "0");
    assert_eq!(headers["streamgate.truncated"], "key,payload");
    assert!(letter.payload.is_empty());
    assert_eq!(undeliverable_count(&run.metrics), 0);
    run.stop.cancel();
    run.task.await.unwrap().unwrap();
    drop(run.broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_refused_late_even_as_its_context_is_counted_and_skipped_with_drop() {
    let run = refused_late("latedrop", 2, "drop").await;
    wait_committed(&run.bootstrap, "latedrop-group", "latedrop-in", 1).await;
    assert_eq!(undeliverable_count(&run.metrics), 1);
    let b = run.bootstrap.clone();
    let letters = tokio::task::spawn_blocking(move || read_all(&b, "latedrop-dlq", 1))
        .await
        .unwrap();
    assert!(letters.is_empty());
    run.stop.cancel();
    run.task.await.unwrap().unwrap();
    drop(run.broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_refused_late_even_as_its_context_stops_the_pipeline_with_fail() {
    let run = refused_late("latefail", 2, "fail").await;
    let result = tokio::time::timeout(Duration::from_secs(120), run.task)
        .await
        .expect("the pipeline stops by itself")
        .unwrap();
    let error = result
        .expect_err("policy fail stops the pipeline")
        .to_string();
    assert_stopped_before(&run.bootstrap, &run.metrics, &error, "latefail").await;
    drop(run.broker);
}

/// A run of the one-record input `{name}-in` stopped by policy `fail`: it says the record
/// was not delivered, counted it as undeliverable, and committed nothing past it.
async fn assert_stopped_before(bootstrap: &str, metrics: &Metrics, error: &str, name: &str) {
    assert!(error.contains("not delivered"), "{error}");
    assert_eq!(undeliverable_count(metrics), 1);
    let (b, name) = (bootstrap.to_string(), name.to_string());
    let committed = tokio::task::spawn_blocking(move || {
        crate::common::committed(&b, &format!("{name}-group"), &format!("{name}-in"), 1)
    })
    .await
    .unwrap();
    assert_eq!(
        committed[&0].unwrap_or(0),
        0,
        "nothing committed past the record"
    );
}

/// A run whose dead letters go to a JetStream stream with a `max_msg_size` below the server's
/// `max_payload`: the stream refuses a letter only in its publish ack. The input is one
/// malformed record of 8 KiB.
async fn stream_limited(
    name: &str,
    max_msg_size: i32,
    policy: &str,
) -> (Run, jetstream::stream::Stream) {
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: format!("{name}-dlq"),
            subjects: vec![format!("{name}.dlq")],
            max_message_size: max_msg_size,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut payload = b"{not json ".to_vec();
    payload.resize(8192, b'x');
    let dead_letter = format!(
        "{{ type: nats, servers: \"{}\", subject: {name}.dlq, jetstream: true }}\non_undeliverable_dead_letter: {policy}",
        server.url
    );
    let mut run = start(
        name,
        &[],
        vec![(b"k".to_vec(), payload)],
        &dead_letter,
        |_| {},
    )
    .await;
    run._server = Some(server);
    (run, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_over_the_streams_max_msg_size_is_stored_as_its_context() {
    let (run, mut stream) = stream_limited("jslate", 2048, "fail").await;
    wait_committed(&run.bootstrap, "jslate-group", "jslate-in", 1).await;
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    let letter = stream.get_raw_message(1).await.unwrap();
    let headers = letter.headers;
    assert_eq!(headers.get("streamgate.stage").unwrap().as_str(), "decode");
    assert_eq!(
        headers.get("streamgate.source.offset").unwrap().as_str(),
        "0"
    );
    assert_eq!(
        headers.get("streamgate.truncated").unwrap().as_str(),
        "key,payload"
    );
    assert!(letter.payload.is_empty());
    assert_eq!(undeliverable_count(&run.metrics), 0);
    run.stop.cancel();
    run.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_the_stream_refuses_even_as_its_context_follows_the_policy() {
    // drop: counted, nothing stored, the offset commits.
    let (run, mut stream) = stream_limited("jsdrop", 64, "drop").await;
    wait_committed(&run.bootstrap, "jsdrop-group", "jsdrop-in", 1).await;
    assert_eq!(undeliverable_count(&run.metrics), 1);
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    run.stop.cancel();
    run.task.await.unwrap().unwrap();

    // fail: the pipeline stops without committing past the record.
    let (run, _stream) = stream_limited("jsfail", 64, "fail").await;
    let error = tokio::time::timeout(Duration::from_secs(120), run.task)
        .await
        .expect("the pipeline stops by itself")
        .unwrap()
        .expect_err("policy fail stops the pipeline")
        .to_string();
    assert_stopped_before(&run.bootstrap, &run.metrics, &error, "jsfail").await;
}
