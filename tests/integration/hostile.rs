//! Hostile input, data-driven: every case of `tests/data/hostile/records.yaml` is one Kafka
//! record through a Kafka → JSON → SQL → Kafka pipeline with a dead-letter topic, and its
//! outcome is asserted exactly: delivered once as valid JSON, or dead-lettered once with the
//! stated stage and class (and, for a bounded dead letter, what was cut). Nothing is lost,
//! nothing stalls, and the whole topic is committed (issue 25).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde::Deserialize;
use streamgate::telemetry::Metrics;
use streamgate::testing::EmbeddedBroker;

use crate::common::{read_all, spawn_pipeline, wait_committed};

/// A valid transaction, field by field (raw JSON values), in the order it is written.
const GOOD: [(&str, &str); 12] = [
    ("transaction_id", r#""tx-1""#),
    ("card_id", r#""card-1""#),
    ("merchant_id", r#""m-1""#),
    ("merchant_category", r#""grocery""#),
    ("amount", "12.5"),
    ("currency", r#""USD""#),
    ("country", r#""DE""#),
    ("channel", r#""pos""#),
    ("card_present", "true"),
    ("event_time", r#""2026-11-26T10:00:00Z""#),
    ("customer_age", "40"),
    ("distance_from_home_km", "1.5"),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    case: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_hex: Option<String>,
    #[serde(default)]
    good: bool,
    #[serde(default)]
    set: BTreeMap<String, Text>,
    #[serde(default)]
    set_hex: BTreeMap<String, String>,
    #[serde(default)]
    drop: Vec<String>,
    #[serde(default)]
    extra: BTreeMap<String, Text>,
    #[serde(default)]
    append: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_hex: Option<String>,
    #[serde(default)]
    key_repeat: Option<usize>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    headers_hex: BTreeMap<String, String>,
    #[serde(default)]
    header_bytes: Option<usize>,
    #[serde(default)]
    timestamp_ms: Option<String>,
    expect: Expect,
}

/// Raw text, given or built.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Text {
    Plain(String),
    Built {
        repeat: String,
        times: usize,
        #[serde(default)]
        close: String,
        #[serde(default)]
        quote: bool,
    },
}

impl Text {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Text::Plain(s) => s.clone().into_bytes(),
            Text::Built {
                repeat,
                times,
                close,
                quote,
            } => {
                let body = repeat.repeat(*times) + &close.repeat(*times);
                if *quote {
                    format!("\"{body}\"").into_bytes()
                } else {
                    body.into_bytes()
                }
            }
        }
    }
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(untagged)]
enum Expect {
    /// `delivered`.
    Delivered(String),
    /// Dead-lettered with these context headers.
    DeadLetter {
        stage: String,
        class: String,
        #[serde(default)]
        truncated: Option<String>,
    },
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

impl Case {
    fn payload(&self) -> Vec<u8> {
        if let Some(v) = &self.value {
            return v.clone().into_bytes();
        }
        if let Some(v) = &self.value_hex {
            return hex(v);
        }
        assert!(self.good, "{}: needs value, value_hex or good", self.case);
        let mut fields: Vec<(String, Vec<u8>)> = GOOD
            .iter()
            .filter(|(name, _)| !self.drop.iter().any(|d| d == name))
            .map(|(name, value)| {
                let value = match (self.set.get(*name), self.set_hex.get(*name)) {
                    (Some(text), _) => text.bytes(),
                    (None, Some(h)) => hex(h),
                    (None, None) => value.as_bytes().to_vec(),
                };
                (name.to_string(), value)
            })
            .collect();
        fields.extend(self.extra.iter().map(|(n, t)| (n.clone(), t.bytes())));
        let mut out = b"{".to_vec();
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(format!("\"{name}\":").as_bytes());
            out.extend_from_slice(value);
        }
        out.push(b'}');
        if let Some(a) = &self.append {
            out.extend_from_slice(a.as_bytes());
        }
        out
    }

    fn key(&self, index: usize) -> Vec<u8> {
        if let Some(k) = &self.key {
            return k.clone().into_bytes();
        }
        if let Some(k) = &self.key_hex {
            return hex(k);
        }
        if let Some(n) = self.key_repeat {
            return vec![b'k'; n];
        }
        format!("case-{index}").into_bytes()
    }

    fn headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut headers: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .chain(self.headers_hex.iter().map(|(k, v)| (k.clone(), hex(v))))
            .collect();
        if let Some(n) = self.header_bytes {
            headers.push(("big".into(), vec![b'h'; n]));
        }
        headers
    }
}

fn cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile/records.yaml");
    let text = std::fs::read_to_string(&path).expect("corpus");
    serde_yaml_ng::from_str(&text).expect("corpus parses")
}

/// Produces case `i` at offset `i` of partition 0, with a limit big enough for the largest.
fn produce(bootstrap: &str, topic: &str, cases: &[Case]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.max.bytes", "8000000")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for (i, case) in cases.iter().enumerate() {
        let payload = case.payload();
        let key = case.key(i);
        let case_headers = case.headers();
        let mut headers = OwnedHeaders::new();
        for (name, value) in &case_headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let mut record = BaseRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(headers)
            .partition(0);
        if let Some(ts) = &case.timestamp_ms {
            record = record.timestamp(ts.parse().expect("timestamp_ms is an i64"));
        }
        producer
            .send(record)
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("{}: {e}", case.case));
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

const PIPELINE: &str = r#"
name: hostile
source:
  type: kafka
  bootstrap_servers: BOOTSTRAP
  topics: [hostile-in]
  group_id: hostile-group
  batch: { max_rows: 100, max_age: 5ms }
format: { type: json, schema: ../schemas/transaction.avsc }
sql: >
  SELECT _offset AS case_offset, transaction_id, merchant_id, amount, event_time,
         _timestamp AS kafka_time
  FROM input
outputs:
  - name: out
    sink: { type: kafka, topic: hostile-out }
dead_letter: { type: kafka, topic: hostile-dlq }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_record_has_exactly_its_expected_outcome() {
    let cases = cases();
    assert!(cases.len() >= 25, "the corpus has {} cases", cases.len());
    let topics = [("hostile-in", 1), ("hostile-out", 1), ("hostile-dlq", 1)];
    let broker = EmbeddedBroker::start(&topics).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    produce(&bootstrap, "hostile-in", &cases);

    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/hostile.yaml");
    let yaml = PIPELINE.replace("BOOTSTRAP", &bootstrap);
    let loaded = streamgate::spec::load_str(&yaml, &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let (stop, task) = spawn_pipeline(compiled, &Metrics::new());
    wait_committed(&bootstrap, "hostile-group", "hostile-in", 1).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let b = bootstrap.clone();
    let (out, dlq) = tokio::task::spawn_blocking(move || {
        (
            read_all(&b, "hostile-out", 1),
            read_all(&b, "hostile-dlq", 1),
        )
    })
    .await
    .unwrap();

    // Outcome of each source offset: delivered (the output's JSON), or dead-lettered.
    let mut delivered: HashMap<i64, serde_json::Value> = HashMap::new();
    for m in &out {
        let row: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_else(|e| {
            panic!(
                "invalid JSON on the output ({e}): {}",
                String::from_utf8_lossy(&m.payload[..m.payload.len().min(300)])
            )
        });
        let offset = row["case_offset"].as_i64().expect("case_offset");
        assert!(
            delivered.insert(offset, row).is_none(),
            "offset {offset} delivered twice"
        );
    }
    let mut dead: HashMap<i64, &HashMap<String, String>> = HashMap::new();
    for m in &dlq {
        let offset: i64 = m.headers["streamgate.source.offset"].parse().unwrap();
        assert!(
            dead.insert(offset, &m.headers).is_none(),
            "offset {offset} dead-lettered twice"
        );
    }

    let mut wrong = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let offset = i as i64;
        let got = match (delivered.get(&offset), dead.get(&offset)) {
            (Some(_), None) => Expect::Delivered("delivered".into()),
            (None, Some(h)) => Expect::DeadLetter {
                stage: h["streamgate.stage"].clone(),
                class: h["streamgate.error.class"].clone(),
                truncated: h.get("streamgate.truncated").cloned(),
            },
            (None, None) => {
                wrong.push(format!(
                    "{}: lost (neither delivered nor dead-lettered)",
                    case.case
                ));
                continue;
            }
            (Some(_), Some(_)) => {
                wrong.push(format!("{}: both delivered and dead-lettered", case.case));
                continue;
            }
        };
        if got != case.expect {
            let message = dead
                .get(&offset)
                .and_then(|h| h.get("streamgate.error.message"))
                .map(String::as_str)
                .unwrap_or("");
            wrong.push(format!(
                "{}: expected {:?}, got {:?} {message}",
                case.case, case.expect, got
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cases wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(delivered.len() + dead.len(), cases.len());
}

/// A hostile request to the gateway and the exact status it must get
/// (`tests/data/hostile/requests.yaml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestCase {
    case: String,
    #[serde(default = "post")]
    method: String,
    path: String,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Body>,
    expect: u16,
}

fn post() -> String {
    "POST".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Auth {
    /// `key` (the valid key), `none`, `wrong`, or an `Authorization` value sent as is.
    Named(String),
    /// A bearer token of `times` copies of `repeat`.
    Long { repeat: String, times: usize },
    #[default]
    #[serde(skip)]
    Key,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Body {
    Text(String),
    Hex {
        hex: String,
    },
    Built {
        #[serde(default)]
        prefix: String,
        repeat: String,
        times: usize,
        #[serde(default)]
        close: String,
        #[serde(default)]
        suffix: String,
    },
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Text(t) => t.clone().into_bytes(),
            Body::Hex { hex: h } => hex(h),
            Body::Built {
                prefix,
                repeat,
                times,
                close,
                suffix,
            } => format!(
                "{prefix}{}{}{suffix}",
                repeat.repeat(*times),
                close.repeat(*times)
            )
            .into_bytes(),
        }
    }
}

const GATEWAY_KEY: &str = "k-hostile";

const GATEWAY: &str = r#"
listen: 127.0.0.1:0
max_body_bytes: 1048576
models:
  fraud:
    versions:
      - name: local
        endpoint: { protocol: onnx, repository: ., model_name: fraud, layout: { type: matrix, name: features } }
  chat:
    versions:
      - name: v1
        endpoint: { protocol: openai_chat, replicas: ["http://127.0.0.1:9"], model: m, prompt: "{text}" }
auth:
  api_keys:
    - { name: all, sha256: KEY_HASH, scopes: ["infer:*"] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_request_gets_exactly_its_expected_status() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile/requests.yaml");
    let cases: Vec<RequestCase> =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).expect("corpus"))
            .expect("corpus parses");
    assert!(cases.len() >= 25, "the corpus has {} cases", cases.len());
    let yaml = GATEWAY.replace(
        "KEY_HASH",
        &streamgate::gateway::auth::key_hash_hex(GATEWAY_KEY),
    );
    // Beside the shipped model repository (models/fraud/local/model.onnx).
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/hostile-test.yaml");
    let (url, _stop) = crate::common::serve_gateway(&yaml, &file, Metrics::new(), None).await;
    let client = crate::common::http();
    let mut wrong = Vec::new();
    for case in &cases {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("method");
        let mut request = client
            .request(method, format!("{url}{}", case.path))
            .header("content-type", "application/json");
        let authorization = match &case.auth {
            Auth::Key => Some(format!("Bearer {GATEWAY_KEY}")),
            Auth::Named(name) => match name.as_str() {
                "key" => Some(format!("Bearer {GATEWAY_KEY}")),
                "none" => None,
                "wrong" => Some("Bearer not-the-key".to_string()),
                value => Some(value.to_string()),
            },
            Auth::Long { repeat, times } => Some(format!("Bearer {}", repeat.repeat(*times))),
        };
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        for (name, value) in &case.headers {
            request = request.header(name, value);
        }
        if let Some(body) = &case.body {
            request = request.body(body.bytes());
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if status != case.expect {
            wrong.push(format!(
                "{}: expected {}, got {status}: {}",
                case.case,
                case.expect,
                &text[..text.len().min(200)]
            ));
        }
        assert!(
            status != 500,
            "{}: a hostile request is never an internal error: {text}",
            case.case
        );
    }
    assert!(
        wrong.is_empty(),
        "{} cases wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
