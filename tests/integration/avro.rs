//! Avro records: plain and Confluent wire format against an in-tree Schema Registry stand-in
//! (the registry's HTTP API), records serialized by a real client (Python confluent-kafka's
//! AvroSerializer), schema evolution by the Avro rules, every error class, and a registry
//! outage that holds the batch instead of dead-lettering it; Avro output registered under its
//! subject and read back by the same real client.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::Schema as AvroSchema;
use apache_avro::types::Value;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use datafusion::arrow::array::RecordBatch;
use serde_json::json;
use streamgate::batch::RawRecord;

use crate::common::raw_record;

/// A Schema Registry stand-in: register (`POST /subjects/{s}/versions`) and look up
/// (`GET /schemas/ids/{id}`); `down` makes it answer 503.
#[derive(Clone, Default)]
struct Registry {
    schemas: Arc<Mutex<Vec<String>>>,
    subjects: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
    lookups: Arc<AtomicU32>,
}

impl Registry {
    async fn start(&self) -> String {
        let app = Router::new()
            .route("/subjects/{subject}/versions", post(register))
            .route("/schemas/ids/{id}", get(lookup))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn add(&self, schema: &str) -> u32 {
        let mut schemas = self.schemas.lock().unwrap();
        if let Some(i) = schemas.iter().position(|s| s == schema) {
            return i as u32 + 1;
        }
        schemas.push(schema.to_string());
        schemas.len() as u32
    }
}

async fn register(
    State(r): State<Registry>,
    UrlPath(subject): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let schema = v["schema"].as_str().unwrap_or_default().to_string();
    let id = r.add(&schema);
    r.subjects.lock().unwrap().push(subject.clone());
    axum::Json(json!({"id": id, "version": 1, "subject": subject, "schema": schema}))
        .into_response()
}

async fn lookup(State(r): State<Registry>, UrlPath(id): UrlPath<u32>) -> Response {
    r.lookups.fetch_add(1, Ordering::Relaxed);
    if r.down.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let schemas = r.schemas.lock().unwrap();
    match schemas.get((id as usize).wrapping_sub(1)) {
        Some(s) => axum::Json(json!({"schema": s})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error_code": 40403, "message": "Schema not found"})),
        )
            .into_response(),
    }
}

fn transaction_avsc() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/transaction.avsc"))
        .unwrap()
}

async fn decoder(wire: &str, registry: Option<&str>) -> Arc<streamgate::plan::CompiledPipeline> {
    let registry = registry.map_or(String::new(), |u| {
        format!("\n  registry: {{ url: \"{u}\" }}")
    });
    let yaml = format!(
        r#"
name: avro-test
source: {{ type: kafka, bootstrap_servers: "127.0.0.1:1", topics: [in], group_id: g }}
format:
  type: avro
  schema: ../schemas/transaction.avsc
  wire: {wire}{registry}
outputs:
  - {{ name: out, sink: {{ type: stdout }} }}
"#
    );
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/avro-test.yaml");
    let loaded = streamgate::spec::load_str(&yaml, &file, &|_| None).unwrap();
    streamgate::plan::compile(loaded).await.unwrap()
}

/// `n` demo transactions as JSON and as Avro values of the transaction schema.
fn transactions(n: u64, schema: &AvroSchema) -> Vec<(Vec<u8>, Vec<u8>)> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    (0..n)
        .map(|i| {
            let json_bytes = streamgate::testing::generator::transaction(&mut rng, i);
            let v: serde_json::Value = serde_json::from_slice(&json_bytes).unwrap();
            let ms = chrono_ms(v["event_time"].as_str().unwrap());
            let avro = Value::Record(vec![
                (
                    "transaction_id".into(),
                    Value::String(v["transaction_id"].as_str().unwrap().into()),
                ),
                (
                    "card_id".into(),
                    Value::String(v["card_id"].as_str().unwrap().into()),
                ),
                (
                    "merchant_id".into(),
                    Value::String(v["merchant_id"].as_str().unwrap().into()),
                ),
                (
                    "merchant_category".into(),
                    Value::String(v["merchant_category"].as_str().unwrap().into()),
                ),
                (
                    "amount".into(),
                    Value::Double(v["amount"].as_f64().unwrap()),
                ),
                ("currency".into(), Value::String("USD".into())),
                (
                    "country".into(),
                    Value::String(v["country"].as_str().unwrap().into()),
                ),
                ("channel".into(), {
                    let c = v["channel"].as_str().unwrap();
                    let idx = ["pos", "online", "atm"]
                        .iter()
                        .position(|s| *s == c)
                        .unwrap() as u32;
                    Value::Enum(idx, c.into())
                }),
                (
                    "card_present".into(),
                    Value::Boolean(v["card_present"].as_bool().unwrap()),
                ),
                ("event_time".into(), Value::TimestampMillis(ms)),
                (
                    "customer_age".into(),
                    Value::Union(
                        1,
                        Box::new(Value::Int(v["customer_age"].as_i64().unwrap() as i32)),
                    ),
                ),
                (
                    "distance_from_home_km".into(),
                    Value::Union(
                        1,
                        Box::new(Value::Double(v["distance_from_home_km"].as_f64().unwrap())),
                    ),
                ),
            ]);
            let avro_bytes = apache_avro::to_avro_datum(schema, avro).unwrap();
            (json_bytes, avro_bytes)
        })
        .collect()
}

/// Milliseconds since the epoch of the generator's `2026-11-26THH:MM:SS.mmmZ`.
fn chrono_ms(text: &str) -> i64 {
    let base: i64 = 1_795_651_200_000;
    let h: i64 = text[11..13].parse().unwrap();
    let m: i64 = text[14..16].parse().unwrap();
    let s: i64 = text[17..19].parse().unwrap();
    let ms: i64 = text[20..23].parse().unwrap();
    base + ((h * 60 + m) * 60 + s) * 1000 + ms
}

fn framed(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

fn record_columns(b: &RecordBatch) -> RecordBatch {
    b.project(&(0..12).collect::<Vec<_>>()).unwrap()
}

async fn json_decoded(json: &[Vec<u8>]) -> RecordBatch {
    let yaml = r#"
name: json-test
source: { type: kafka, bootstrap_servers: "127.0.0.1:1", topics: [in], group_id: g }
format: { type: json, schema: ../schemas/transaction.avsc }
outputs:
  - { name: out, sink: { type: stdout } }
"#;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/json-test.yaml");
    let loaded = streamgate::spec::load_str(yaml, &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let records: Vec<RawRecord> = json
        .iter()
        .enumerate()
        .map(|(i, p)| raw_record(p.clone(), i as i64))
        .collect();
    compiled.decoder.decode(&records).batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_confluent_avro_decode_like_the_same_records_in_json() {
    let schema = AvroSchema::parse_str(&transaction_avsc()).unwrap();
    let rows = transactions(500, &schema);
    let expected =
        record_columns(&json_decoded(&rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>()).await);

    let plain = decoder("plain", None).await;
    let records: Vec<RawRecord> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| raw_record(r.1.clone(), i as i64))
        .collect();
    let decoded = plain.decoder.decode(&records);
    assert!(
        decoded.failures.is_empty(),
        "{:?}",
        decoded.failures.first()
    );
    assert_eq!(record_columns(&decoded.batch), expected);

    let registry = Registry::default();
    let url = registry.start().await;
    let id = registry.add(&transaction_avsc());
    let confluent = decoder("confluent", Some(&url)).await;
    let records: Vec<RawRecord> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| raw_record(framed(id, &r.1), i as i64))
        .collect();
    confluent.decoder.prepare(&records).await;
    let decoded = confluent.decoder.decode(&records);
    assert!(
        decoded.failures.is_empty(),
        "{:?}",
        decoded.failures.first()
    );
    assert_eq!(record_columns(&decoded.batch), expected);
    assert_eq!(
        registry.lookups.load(Ordering::Relaxed),
        1,
        "the schema is fetched once and cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_record_gets_its_own_dead_letter_class_and_evolution_resolves() {
    let schema = AvroSchema::parse_str(&transaction_avsc()).unwrap();
    let rows = transactions(3, &schema);
    let registry = Registry::default();
    let url = registry.start().await;
    let id = registry.add(&transaction_avsc());
    // Evolution: a writer without the optional `customer_age` (the reader's default applies)
    // and with an extra field (dropped).
    let mut evolved: serde_json::Value = serde_json::from_str(&transaction_avsc()).unwrap();
    let fields = evolved["fields"].as_array_mut().unwrap();
    fields.retain(|f| f["name"] != "customer_age");
    fields.push(json!({"name": "risk_note", "type": "string", "default": ""}));
    let evolved_text = evolved.to_string();
    let evolved_schema = AvroSchema::parse_str(&evolved_text).unwrap();
    let evolved_id = registry.add(&evolved_text);
    let Value::Record(mut fields) =
        apache_avro::from_avro_datum(&schema, &mut rows[0].1.as_slice(), None).unwrap()
    else {
        panic!()
    };
    fields.retain(|(n, _)| n != "customer_age");
    fields.push(("risk_note".into(), Value::String("manual".into())));
    let evolved_datum = apache_avro::to_avro_datum(&evolved_schema, Value::Record(fields)).unwrap();
    // Incompatible: `amount` became a string.
    let mut broken: serde_json::Value = serde_json::from_str(&transaction_avsc()).unwrap();
    for f in broken["fields"].as_array_mut().unwrap() {
        if f["name"] == "amount" {
            f["type"] = json!("string");
        }
    }
    let broken_text = broken.to_string();
    let broken_schema = AvroSchema::parse_str(&broken_text).unwrap();
    let broken_id = registry.add(&broken_text);
    let Value::Record(mut fields) =
        apache_avro::from_avro_datum(&schema, &mut rows[1].1.as_slice(), None).unwrap()
    else {
        panic!()
    };
    for (n, v) in fields.iter_mut() {
        if n == "amount" {
            *v = Value::String("12.50".into());
        }
    }
    let broken_datum = apache_avro::to_avro_datum(&broken_schema, Value::Record(fields)).unwrap();

    let good = framed(id, &rows[2].1);
    let payloads: Vec<(Vec<u8>, Option<&str>)> = vec![
        (vec![0, 0, 0], Some("avro_short_header")),
        (
            framed(id, &rows[2].1)
                .into_iter()
                .enumerate()
                .map(|(i, b)| if i == 0 { 7 } else { b })
                .collect(),
            Some("avro_bad_magic"),
        ),
        (framed(999, &rows[2].1), Some("avro_unknown_schema")),
        (good[..good.len() - 8].to_vec(), Some("avro_truncated")),
        (
            framed(broken_id, &broken_datum),
            Some("avro_incompatible_schema"),
        ),
        (framed(evolved_id, &evolved_datum), None),
        (good.clone(), None),
    ];
    let compiled = decoder("confluent", Some(&url)).await;
    let records: Vec<RawRecord> = payloads
        .iter()
        .enumerate()
        .map(|(i, (p, _))| raw_record(p.clone(), i as i64))
        .collect();
    compiled.decoder.prepare(&records).await;
    let decoded = compiled.decoder.decode(&records);
    let classes: HashMap<usize, &str> = decoded
        .failures
        .iter()
        .map(|f| (f.index, f.class.as_str()))
        .collect();
    for (i, (_, expected)) in payloads.iter().enumerate() {
        assert_eq!(
            classes.get(&i).copied(),
            *expected,
            "record {i}: {:?}",
            decoded.failures
        );
    }
    assert_eq!(decoded.rows, vec![5, 6]);
    let age = decoded
        .batch
        .column(decoded.batch.schema().index_of("customer_age").unwrap());
    assert!(
        datafusion::arrow::array::Array::is_null(age.as_ref(), 0),
        "the reader's default (null) applies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_holds_the_batch_instead_of_dead_lettering_it() {
    let schema = AvroSchema::parse_str(&transaction_avsc()).unwrap();
    let rows = transactions(10, &schema);
    let registry = Registry::default();
    let url = registry.start().await;
    let id = registry.add(&transaction_avsc());
    registry.down.store(true, Ordering::Relaxed);
    let compiled = decoder("confluent", Some(&url)).await;
    let records: Vec<RawRecord> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| raw_record(framed(id, &r.1), i as i64))
        .collect();
    let pending = tokio::spawn({
        let compiled = compiled.clone();
        let records = records.clone();
        async move {
            compiled.decoder.prepare(&records).await;
            compiled.decoder.decode(&records)
        }
    });
    crate::common::wait_until_async(
        "the registry to be retried",
        Duration::from_secs(30),
        Duration::from_millis(5),
        || registry.lookups.load(Ordering::Relaxed) >= 3,
    )
    .await;
    assert!(
        !pending.is_finished(),
        "records must wait for the registry, not fail"
    );
    registry.down.store(false, Ordering::Relaxed);
    let decoded = pending.await.unwrap();
    assert!(decoded.failures.is_empty(), "{:?}", decoded.failures);
    assert_eq!(decoded.batch.num_rows(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_serialized_by_confluent_kafkas_python_client_decode() {
    let python = crate::common::venv().join("bin/python");
    assert!(
        python.exists(),
        "the test venv is missing: run `bash tests/run.sh`, which installs it"
    );
    let registry = Registry::default();
    let url = registry.start().await;
    let script = r#"
import sys, json
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
url, schema_path = sys.argv[1], sys.argv[2]
client = SchemaRegistryClient({"url": url})
serializer = AvroSerializer(client, open(schema_path).read())
ctx = SerializationContext("transactions", MessageField.VALUE)
for i in range(50):
    record = {
        "transaction_id": f"tx-{i:012d}", "card_id": f"card-{i:06d}", "merchant_id": "m-00001",
        "merchant_category": "grocery", "amount": 10.5 + i, "currency": "USD", "country": "NL",
        "channel": "online" if i % 2 else "pos", "card_present": i % 2 == 0,
        "event_time": 1795651200000 + i, "customer_age": None if i % 5 == 0 else 30 + i,
        "distance_from_home_km": 1.5 * i,
    }
    print(serializer(record, ctx).hex())
"#;
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/transaction.avsc");
    let url_arg = url.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-c", script, &url_arg])
            .arg(schema_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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
    let records: Vec<RawRecord> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, hex)| {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|j| u8::from_str_radix(&hex[j..j + 2], 16).unwrap())
                .collect();
            raw_record(bytes, i as i64)
        })
        .collect();
    assert_eq!(records.len(), 50);
    let compiled = decoder("confluent", Some(&url)).await;
    compiled.decoder.prepare(&records).await;
    let decoded = compiled.decoder.decode(&records);
    assert!(
        decoded.failures.is_empty(),
        "{:?}",
        decoded.failures.first()
    );
    let b = &decoded.batch;
    let ids = b.column(b.schema().index_of("transaction_id").unwrap());
    let ids = datafusion::arrow::array::AsArray::as_string::<i32>(ids);
    assert_eq!(ids.value(49), "tx-000000000049");
    let age = b.column(b.schema().index_of("customer_age").unwrap());
    assert!(datafusion::arrow::array::Array::is_null(age.as_ref(), 0));
    assert!(!datafusion::arrow::array::Array::is_null(age.as_ref(), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_schema_ids_are_asked_once_and_dead_lettered() {
    let registry = Registry::default();
    let url = registry.start().await;
    let compiled = decoder("confluent", Some(&url)).await;
    // Garbage that looks framed: 40 distinct ids the registry never heard of.
    let records: Vec<RawRecord> = (0..200)
        .map(|i| raw_record(framed(1_000 + (i % 40), &[2, 4, 6]), i as i64))
        .collect();
    for _ in 0..2 {
        compiled.decoder.prepare(&records).await;
        let decoded = compiled.decoder.decode(&records);
        assert_eq!(decoded.failures.len(), 200);
        assert!(
            decoded
                .failures
                .iter()
                .all(|f| f.class.as_str() == "avro_unknown_schema")
        );
    }
    assert_eq!(
        registry.lookups.load(Ordering::Relaxed),
        40,
        "each unknown id is asked once, then remembered"
    );
}

/// Kafka → SQL → Avro (Confluent wire format) on the embedded broker: the writer schema is
/// registered under the `topic_record_name` subject, and Python confluent-kafka's
/// AvroDeserializer reads every output message back with the registry's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_output_is_registered_and_read_back_by_confluent_kafkas_python_client() {
    use crate::common::{produce, read_all, spawn_pipeline, transactions, wait_committed};
    let registry = Registry::default();
    let url = registry.start().await;
    let broker =
        streamgate::testing::EmbeddedBroker::start(&[("av-in", 2), ("av-out", 2)]).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let (records, bad) = transactions(300, 0.01);
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || produce(&b, "av-in", 2, &records))
        .await
        .unwrap();
    let yaml = format!(
        r#"
name: avro-out
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [av-in]
  group_id: avro-out
  batch: {{ max_rows: 100, max_age: 5ms }}
  properties: {{ fetch.wait.max.ms: "10" }}
format: {{ type: json, schema: ../schemas/transaction.avsc }}
sql: SELECT transaction_id, amount, customer_age, event_time, amount > 100 AS big FROM input
outputs:
  - name: scored
    sink:
      type: kafka
      topic: av-out
      format:
        type: avro
        name: Scored
        namespace: io.test
        wire: confluent
        registry: {{ url: "{url}" }}
        subject_strategy: topic_record_name
on_error: drop
"#
    );
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/avro-out.yaml");
    let loaded = streamgate::spec::load_str(&yaml, &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let metrics = streamgate::telemetry::Metrics::new();
    let (stop, task) = spawn_pipeline(compiled, &metrics);
    wait_committed(&bootstrap, "avro-out", "av-in", 2).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        *registry.subjects.lock().unwrap(),
        vec!["av-out-io.test.Scored".to_string()]
    );

    let b = bootstrap.clone();
    let messages = tokio::task::spawn_blocking(move || read_all(&b, "av-out", 2))
        .await
        .unwrap();
    assert_eq!(messages.len(), 300 - bad.len());
    let hex: String = messages
        .iter()
        .map(|m| {
            let mut line: String = m.payload.iter().map(|b| format!("{b:02x}")).collect();
            line.push('\n');
            line
        })
        .collect();
    let script = r#"
import sys, json
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField
client = SchemaRegistryClient({"url": sys.argv[1]})
deserializer = AvroDeserializer(client)
ctx = SerializationContext("av-out", MessageField.VALUE)
for line in sys.stdin:
    # timestamp-millis comes back as a datetime: write it as epoch milliseconds.
    print(json.dumps(deserializer(bytes.fromhex(line.strip()), ctx),
                     default=lambda t: round(t.timestamp() * 1000)))
"#;
    let python = crate::common::venv().join("bin/python");
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(python)
            .args(["-c", script, &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(hex.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut rows: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.sort_by_key(|r| r["transaction_id"].as_str().unwrap().to_string());
    assert_eq!(rows.len(), 300 - bad.len());
    let first = &rows[0];
    assert_eq!(first["transaction_id"], "tx-000000000000");
    let amount = first["amount"].as_f64().unwrap();
    assert_eq!(first["big"], amount > 100.0);
    assert!(first["event_time"].is_number(), "{first}");
}
