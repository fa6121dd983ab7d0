//! Issue 25, item 5: a backend that repeats a credential Streamgate sent it (its API key, a
//! configured secret header) in an error body must not get it out of the process: not in the
//! answers the gateway relays, not in `validate` output, run warnings or dead-letter headers.
//! The mock model's `echo_headers_status` fault answers every request with its headers quoted.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamgate::gateway::auth::key_hash_hex;
use streamgate::telemetry::Metrics;
use streamgate::testing::EmbeddedBroker;
use streamgate::testing::mock_model::{Faults, MockModel, MockModelConfig};

use crate::common::{
    produce, read_all, spawn_pipeline, streamgate_bin, transactions, wait_committed,
    wait_until_async,
};

/// The models' API key (sent as `Authorization: Bearer ...` or OpenAI's bearer token).
const MODEL_KEY: &str = "sk-echo-test-7Qm2Vx9Lp4";
/// A secret header value with characters JSON and URL encodings change.
const HEADER_SECRET: &str = "hdr/secret+value=93";
/// The gateway's own client key.
const CLIENT_KEY: &str = "k-client-secrets-test";

fn env(name: &str) -> Option<String> {
    match name {
        "SG_ECHO_MODEL_KEY" => Some(MODEL_KEY.to_string()),
        "SG_ECHO_HEADER_SECRET" => Some(HEADER_SECRET.to_string()),
        _ => None,
    }
}

/// `text` holds the backend's echo, redacted, and no secret.
fn assert_scrubbed(what: &str, text: &str) {
    for secret in [MODEL_KEY, HEADER_SECRET] {
        assert!(!text.contains(secret), "{what} leaks a secret: {text}");
    }
    assert!(
        text.contains("[REDACTED]"),
        "{what} should quote the backend's echo with the secret redacted: {text}"
    );
}

/// Fast retries, and never ejected: every answer quotes the model, not "every replica is
/// ejected".
const POLICY: &str = "retry: { backoff: 1ms, max_backoff: 2ms }
    ejection: { consecutive_failures: 1000000 }";

const OIP_HEADERS: &str =
    r#"{ authorization: "Bearer ${SG_ECHO_MODEL_KEY}", x-api-key: "${SG_ECHO_HEADER_SECRET}" }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_clients_never_get_a_credential_the_backend_echoes() {
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    let m = mock.url();
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
models:
  scorer:
    {POLICY}
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{m}"], model_name: fraud, headers: {OIP_HEADERS} }}
  custom:
    {POLICY}
    versions:
      - name: v1
        endpoint: {{ protocol: custom_json, replicas: ["{m}"], path: /score, headers: {OIP_HEADERS} }}
        oip_outputs: [{{ column: score, from: /score, type: float32 }}]
  chat:
    {POLICY}
    versions:
      - name: v1
        endpoint: {{ protocol: openai_chat, replicas: ["{m}/v1"], model: m, prompt: "{{text}}", api_key: "${{SG_ECHO_MODEL_KEY}}" }}
  embed:
    {POLICY}
    versions:
      - name: v1
        endpoint: {{ protocol: openai_embeddings, replicas: ["{m}/v1"], model: e, api_key: "${{SG_ECHO_MODEL_KEY}}" }}
auth:
  api_keys:
    - {{ name: client, sha256: {hash}, scopes: ["infer:*"] }}
"#,
        hash = key_hash_hex(CLIENT_KEY),
    );
    let dir = tempfile::tempdir().unwrap();
    let loaded =
        streamgate::spec::load_gateway_str(&yaml, &dir.path().join("gateway.yaml"), &env).unwrap();
    let gateway =
        streamgate::gateway::Gateway::new(&loaded.spec, loaded.base_dir(), Metrics::new()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (addr, _) =
        streamgate::gateway::serve("127.0.0.1:0".parse().unwrap(), Arc::new(gateway), stop)
            .await
            .unwrap();
    let url = format!("http://{addr}");

    let tensor = r#"{"inputs":[{"name":"amount","shape":[1],"datatype":"FP64","data":[1.0]}]}"#;
    let requests = [
        // Relayed verbatim from an OIP v2 backend.
        ("POST", "/v2/models/scorer/infer", tensor.to_string()),
        ("GET", "/v2/models/scorer", String::new()),
        // Translated: the error message of the version's client.
        ("POST", "/v2/models/custom/infer", tensor.to_string()),
        // Relayed verbatim from OpenAI-compatible backends.
        (
            "POST",
            "/v1/chat/completions",
            r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#.to_string(),
        ),
        (
            "POST",
            "/v1/embeddings",
            r#"{"model":"embed","input":["hi"]}"#.to_string(),
        ),
    ];
    let client = crate::common::http();
    // A rejection, a refused key, a crash, and an outage retried until the last answer.
    for status in [400u16, 401, 500, 503] {
        mock.set_faults(Faults {
            echo_headers_status: Some(status),
            ..Faults::default()
        });
        for (method, path, body) in &requests {
            let request = match *method {
                "GET" => client.get(format!("{url}{path}")),
                _ => client
                    .post(format!("{url}{path}"))
                    .header("content-type", "application/json")
                    .body(body.clone()),
            };
            let response = request
                .header("authorization", format!("Bearer {CLIENT_KEY}"))
                .send()
                .await
                .unwrap();
            let code = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert!(code >= 400, "{method} {path} with {status}: {code} {text}");
            assert_scrubbed(&format!("{method} {path} with {status} ({code})"), &text);
        }
    }
}

/// A pipeline reading `tx-in` from `bootstrap` and calling the mock at `model_url` with the
/// secret headers.
fn pipeline_yaml(bootstrap: &str, model_url: &str, schema: &str, outputs: &str) -> String {
    format!(
        r#"
name: echo
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [tx-in]
  group_id: echo-group
  batch: {{ max_rows: 50, max_age: 10ms }}
  properties: {{ fetch.wait.max.ms: "10" }}
format:
  type: json
  schema: {schema}
sql: |
  SELECT transaction_id, card_id, amount FROM input
models:
  fraud:
    retry: {{ backoff: 1ms, max_backoff: 20ms }}
    batching: {{ max_batch_rows: 10, max_delay: 1ms }}
    # Never ejected: every warning quotes the model's answer, not "every replica is ejected".
    ejection: {{ consecutive_failures: 1000000 }}
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{model_url}"], headers: {OIP_HEADERS} }}
inference:
  - name: fraud
    model: fraud
    inputs: [amount]
    outputs: [{{ column: score, from: score }}]
{outputs}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_prints_no_credential_the_backend_echoes() {
    let broker = EmbeddedBroker::start(&[("tx-in", 1)]).unwrap();
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    mock.set_faults(Faults {
        echo_headers_status: Some(401),
        ..Faults::default()
    });
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/transaction.avsc");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("echo.yaml");
    std::fs::write(
        &file,
        pipeline_yaml(
            broker.bootstrap_servers(),
            &mock.url(),
            &schema.display().to_string(),
            "outputs:\n  - { name: out, sink: { type: stdout } }",
        ),
    )
    .unwrap();
    // The mock serves on this runtime: run the binary off it.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(streamgate_bin())
            .arg("validate")
            .arg(&file)
            .env("SG_ECHO_MODEL_KEY", MODEL_KEY)
            .env("SG_ECHO_HEADER_SECRET", HEADER_SECRET)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("cannot check model fraud/v1"), "{text}");
    assert_scrubbed("validate's output", &text);
    assert!(mock.errors() >= 1, "the metadata read reached the model");
}

/// Log lines written by the subscriber of the threads that run a pipeline.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// A running pipeline's warnings (a model refusing its key: the batch is held) and its
/// dead-letter headers (the model rejecting the rows) quote the backend's answer redacted.
#[test]
fn run_warnings_and_dead_letter_headers_carry_no_echoed_credential() {
    let captured = Captured::default();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish(),
    );
    // Every thread of this runtime logs to `captured` (a test-local subscriber: the process
    // may have a global one, and other tests run in parallel).
    let on_start = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&on_start)))
        .build()
        .unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        runtime.block_on(run_pipeline_against_echoing_model(captured.clone()))
    });
}

async fn run_pipeline_against_echoing_model(captured: Captured) {
    const ROWS: usize = 20;
    let broker = EmbeddedBroker::start(&[("tx-in", 2), ("tx-out", 1), ("tx-dlq", 1)]).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let (records, _) = transactions(ROWS as u64, 0.0);
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || produce(&b, "tx-in", 2, &records))
        .await
        .unwrap();
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    mock.set_faults(Faults {
        echo_headers_status: Some(401),
        ..Faults::default()
    });
    let outputs = "outputs:\n  - { name: out, sink: { type: kafka, topic: tx-out } }\n\
                   dead_letter: { type: kafka, topic: tx-dlq }";
    let yaml = pipeline_yaml(
        &bootstrap,
        &mock.url(),
        "../schemas/transaction.avsc",
        outputs,
    );
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/echo.yaml");
    let loaded = streamgate::spec::load_str(&yaml, &file, &env).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let metrics = Metrics::new();
    let (stop, task) = spawn_pipeline(compiled, &metrics);

    // A refused key is an outage: the batch is held, with a warning quoting the answer.
    wait_until_async(
        "the pipeline to warn that the model is unavailable",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || captured.text().contains("holding the batch"),
    )
    .await;
    // A rejection dead-letters the rows, with the answer in a header.
    mock.set_faults(Faults {
        echo_headers_status: Some(400),
        ..Faults::default()
    });
    wait_committed(&bootstrap, "echo-group", "tx-in", 2).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let b = bootstrap.clone();
    let dlq = tokio::task::spawn_blocking(move || read_all(&b, "tx-dlq", 1))
        .await
        .unwrap();
    assert_eq!(dlq.len(), ROWS, "every row is rejected");
    for m in &dlq {
        let headers = format!("{:?}", m.headers);
        for secret in [MODEL_KEY, HEADER_SECRET] {
            assert!(
                !headers.contains(secret),
                "dead-letter headers leak: {headers}"
            );
        }
        assert_scrubbed(
            "the dead-letter message",
            &m.headers["streamgate.error.message"],
        );
    }
    let logs = captured.text();
    let warning = logs
        .lines()
        .find(|l| l.contains("holding the batch"))
        .unwrap_or_default();
    assert_scrubbed("the run warning", warning);
    for secret in [MODEL_KEY, HEADER_SECRET] {
        assert!(
            !logs.contains(secret),
            "the run's logs leak a secret: {logs}"
        );
    }
}
