//! Issue 25 regression tests: bounds on outside input.
//!
//! - An in-process ONNX model fed the wrong width is the caller's error: 400 at the gateway
//!   naming both shapes, and rejected (dead-lettered, not held as an outage) rows in a
//!   pipeline.
//! - Every parser of outside input refuses hostile nesting and sizes with a clear error, in
//!   time linear in the input: spec YAML (pipeline, gateway, registry), JSON records, Avro
//!   datums, OIP v2 and OpenAI request bodies.
//!
//! No assertion here is about time (the machine is noisy): the hostile inputs are sized so
//! that the unbounded code would fail the assertions on the error, overflow the stack or run
//! for minutes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use serde_json::{Value, json};
use streamgate::gateway::auth::key_hash_hex;
use streamgate::inference::{ErrorKind, InferenceStage, ModelRegistry};
use streamgate::telemetry::Metrics;

use crate::common::{raw_record, serve_gateway};

const KEY: &str = "k-limits";

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ------------------------------------------------------------------------------------------
// ONNX: wrong width

/// A gateway serving the shipped fraud model in process (six FP32 features) and an OpenAI
/// chat model, with a small body limit.
async fn gateway() -> (String, tokio_util::sync::DropGuard) {
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
max_body_bytes: 1048576
models:
  fraud:
    versions:
      - name: local
        endpoint: {{ protocol: onnx, repository: ., model_name: fraud, layout: {{ type: matrix, name: features }} }}
  chat:
    versions:
      - name: v1
        endpoint: {{ protocol: openai_chat, replicas: ["http://127.0.0.1:9"], model: m, prompt: "{{text}}" }}
auth:
  api_keys:
    - {{ name: all, sha256: {key}, scopes: ["infer:*"] }}
"#,
        key = key_hash_hex(KEY),
    );
    // Beside the shipped model repository (models/fraud/local/model.onnx).
    let file = manifest().join("models/limits-test.yaml");
    serve_gateway(&yaml, &file, Metrics::new(), None).await
}

async fn post(url: &str, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = crate::common::http()
        .post(format!("{url}{path}"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

fn features(rows: usize, width: usize) -> Value {
    json!({"inputs": [{
        "name": "features",
        "shape": [rows, width],
        "datatype": "FP32",
        "data": vec![0.5f32; rows * width],
    }]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnx_fed_the_wrong_width_answers_400_naming_both_shapes() {
    let (url, _stop) = gateway().await;
    let infer = "/v2/models/fraud/infer";
    let (status, body) = post(&url, infer, features(2, 6).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([2]));
    // No rows is not a mistake.
    let (status, body) = post(&url, infer, features(0, 6).to_string()).await;
    assert_eq!(
        (status, &body["outputs"][0]["shape"]),
        (200, &json!([0])),
        "{body}"
    );
    for (rows, width) in [(1, 5), (3, 7), (1, 1)] {
        let (status, body) = post(&url, infer, features(rows, width).to_string()).await;
        assert_eq!(status, 400, "{rows}x{width}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains(&format!(
                "model input `features` expects shape [N, 6] but was given shape [{rows}, {width}]"
            )),
            "{message}"
        );
    }
    // One value per row instead of a matrix is the same mistake.
    let one =
        json!({"inputs": [{"name": "features", "shape": [2], "datatype": "FP32", "data": [1, 2]}]});
    let (status, body) = post(&url, infer, one.to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("[N, 6] but was given shape [2, 1] (1 columns: features)"),
        "{body}"
    );
}

/// A pipeline whose SQL yields six float features `f0`..`f5` scored by the shipped fraud
/// model in process.
fn onnx_pipeline() -> String {
    let columns: Vec<String> = (0..6)
        .map(|i| format!("    - {{ name: f{i}, type: float32 }}"))
        .collect();
    let inputs: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    format!(
        r#"
name: limits-onnx
source: {{ type: kafka, bootstrap_servers: "127.0.0.1:1", topics: [in], group_id: g }}
format:
  type: json
  columns:
{columns}
sql: SELECT * FROM input
models:
  fraud:
    versions:
      - name: local
        endpoint: {{ protocol: onnx, repository: ., model_name: fraud, layout: {{ type: matrix, name: features }} }}
inference:
  - name: score
    model: fraud
    inputs: [{inputs}]
    outputs: [{{ column: score, from: fraud_score, type: float64 }}]
outputs:
  - {{ name: out, sink: {{ type: stdout }} }}
"#,
        columns = columns.join("\n"),
        inputs = inputs.join(", "),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnx_fed_the_wrong_width_in_a_pipeline_rejects_the_rows_instead_of_holding_them() {
    let file = manifest().join("models/limits-pipeline.yaml");
    let loaded = streamgate::spec::load_str(&onnx_pipeline(), &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    // Validation refuses a step that sends five columns; a model whose width only shows at
    // run time (or a bug) gets here. Send the first five columns only.
    let mut steps = compiled.steps.clone();
    let mut contract = (*steps[0].contract).clone();
    contract.inputs.truncate(5);
    steps[0].contract = Arc::new(contract);
    steps[0].input_indices.truncate(5);
    let metrics = Metrics::new();
    let registry = ModelRegistry::build(
        &compiled.pipeline.spec.models,
        &compiled.models,
        &metrics.models,
    );
    let stage = InferenceStage::start(&steps, &registry, compiled.output_schema()).unwrap();
    let records: Vec<_> = (0..8)
        .map(|i| {
            raw_record(
                br#"{"f0": 0.1, "f1": 0.2, "f2": 0.3, "f3": 0.4, "f4": 0.5, "f5": 0.6}"#.to_vec(),
                i,
            )
        })
        .collect();
    let decoded = compiled.decoder.decode(&records);
    assert!(decoded.failures.is_empty());
    let batch: RecordBatch = compiled.sql.apply(decoded.batch).await.batch;
    // An outage would hold the rows and retry forever; this bound only turns that into a
    // failure instead of a hang.
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), stage.apply(batch))
        .await
        .expect("the rows were held as if the model were down");
    assert_eq!(out.batch.num_rows(), 0);
    assert_eq!(out.failures.len(), 8);
    for f in &out.failures {
        assert_eq!(f.error.kind, ErrorKind::Rejected, "{}", f.error);
        assert!(!f.error.is_outage() && !f.error.kind.is_retryable());
        assert!(
            f.error.message.contains(
                "expects shape [N, 6] but was given shape [1, 5] (5 columns: f0, f1, f2, f3, f4)"
            ),
            "{}",
            f.error
        );
    }
}

// ------------------------------------------------------------------------------------------
// Gateway request bodies

fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_or_large_request_bodies_are_refused_with_a_clear_error() {
    let (url, _stop) = gateway().await;
    // OIP v2 (translated to the in-process model): nesting past 64 levels.
    for levels in [100, 10_000, 400_000] {
        let body = format!(
            r#"{{"inputs": [{{"name": "features", "shape": [1, 6], "datatype": "FP32", "data": {}}}]}}"#,
            nested(levels)
        );
        let (status, answer) = post(&url, "/v2/models/fraud/infer", body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("the JSON body nests arrays and objects deeper than 64 levels"),
            "{answer}"
        );
    }
    // OpenAI-compatible: its fields are copied as raw JSON, which serde_json skips at any
    // depth; the gateway refuses before anything is sent upstream.
    for path in ["/v1/chat/completions", "/v1/embeddings"] {
        let body = format!(r#"{{"model": "chat", "messages": {}}}"#, nested(400_000));
        let (status, answer) = post(&url, path, body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("deeper than 64 levels"),
            "{answer}"
        );
    }
    // The body limit (here 1 MiB) holds for every route.
    let big = format!(
        r#"{{"model": "chat", "messages": "{}"}}"#,
        "x".repeat(1 << 20)
    );
    let (status, answer) = post(&url, "/v1/chat/completions", big.clone()).await;
    assert_eq!(status, 413, "{answer}");
    let (status, _) = post(&url, "/v2/models/fraud/infer", big).await;
    assert_eq!(status, 413);
}

// ------------------------------------------------------------------------------------------
// Spec YAML

fn pipeline_file() -> PathBuf {
    manifest().join("pipelines/limits-test.yaml")
}

fn load(text: &str) -> streamgate::spec::SpecErrors {
    streamgate::spec::load_str(text, &pipeline_file(), &|_| None).expect_err("refused")
}

#[test]
fn hostile_yaml_is_refused_at_its_line_in_linear_time() {
    let flow = format!("name: x\nsql: {}\n", nested(100_000));
    let flow_map = format!(
        "name: x\nsql: {}1{}\n",
        "{a: ".repeat(100_000),
        "}".repeat(100_000)
    );
    let block_seq = format!("name: x\nsql:\n  {}x\n", "- ".repeat(100_000));
    let mut block_map = String::from("name: x\nsql:\n");
    for i in 0..1_000 {
        block_map.push_str(&format!("{}a:\n", " ".repeat(i + 1)));
    }
    for (name, text, line) in [
        ("flow", flow, 2),
        ("flow map", flow_map, 2),
        ("block sequence", block_seq, 3),
        ("block map", block_map, 66),
    ] {
        let errors = load(&text);
        let e = &errors.0[0];
        assert_eq!(errors.0.len(), 1, "{name}: {errors}");
        assert_eq!(
            e.message, "mappings and sequences nest deeper than 64 levels",
            "{name}"
        );
        assert_eq!(e.line_column.map(|l| l.0), Some(line), "{name}");
    }
    // A gateway file is held to the same bounds.
    let gateway = format!("listen: 127.0.0.1:0\nmodels: {}\n", nested(100_000));
    let e = streamgate::spec::load_gateway_str(&gateway, &pipeline_file(), &|_| None)
        .expect_err("refused");
    assert!(e.to_string().contains(":2:"), "{e}");
    assert!(e.to_string().contains("nest deeper than 64 levels"), "{e}");
}

#[test]
fn alias_expansion_is_bounded() {
    // Each model's versions alias the first model's, whose versions alias one replica list:
    // 120 models of 120 versions of 120 replicas is 1.7 million strings from 11 KiB, which
    // serde_yaml_ng's own alias limit lets through.
    let n = 120;
    let replicas: Vec<String> = (0..n).map(|i| format!("\"http://r{i}:1\"")).collect();
    let mut versions = vec![format!(
        "{{name: v0, endpoint: {{protocol: oip_v2, replicas: &r [{}]}}}}",
        replicas.join(", ")
    )];
    versions.extend(
        (1..n).map(|i| format!("{{name: v{i}, endpoint: {{protocol: oip_v2, replicas: *r}}}}")),
    );
    let mut text = format!(
        "listen: 127.0.0.1:0\nmodels:\n  m0: {{versions: &v [{}]}}\n",
        versions.join(", ")
    );
    for i in 1..n {
        text.push_str(&format!("  m{i}: {{versions: *v}}\n"));
    }
    let e = streamgate::spec::load_gateway_str(&text, &pipeline_file(), &|_| None)
        .expect_err("refused");
    assert!(
        e.to_string()
            .contains("aliases expand the document by more than 100000 nodes"),
        "{e}"
    );
}

#[test]
fn spec_files_over_the_size_limit_are_refused_without_reading_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.yaml");
    let size = streamgate::spec::limits::MAX_SPEC_BYTES as u64 + 1;
    std::fs::File::create(&file).unwrap().set_len(size).unwrap();
    let e = streamgate::spec::load_file(&file).expect_err("refused");
    assert!(
        e.to_string().contains(&format!(
            "the file has {size} bytes; spec files are limited to 4 MiB"
        )),
        "{e}"
    );
    let e = streamgate::spec::load_gateway(&file).expect_err("refused");
    assert!(e.to_string().contains("limited to 4 MiB"), "{e}");
    // A model registry named by a pipeline too.
    let pipeline = dir.path().join("p.yaml");
    let text = "name: x\nsource: { type: kafka, bootstrap_servers: \"127.0.0.1:1\", topics: [in], group_id: g }\nformat: { type: json, columns: [{ name: a, type: int64 }] }\nsql: SELECT a FROM input\nmodel_registry: big.yaml\noutputs:\n  - { name: out, sink: { type: stdout } }\n";
    let e = streamgate::spec::load_str(text, &pipeline, &|_| None).expect_err("refused");
    assert!(e.to_string().contains("big.yaml: the file has"), "{e}");
}

// ------------------------------------------------------------------------------------------
// JSON records

/// Found for issue 25: arrow-json formats a mistyped value recursively for its error message,
/// so a record holding an array nested 100,000 levels deep where a number is declared
/// overflows the stack and aborts the process (deep values in undeclared fields are skipped
/// iteratively and decode). `codec/json.rs` now refuses records nesting deeper than
/// `codec::nesting::MAX_JSON_DEPTH` before decoding (class `too_deep`); without that this test
/// aborts the whole test binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_nested_too_deep_are_refused_one_by_one() {
    let yaml = r#"
name: limits-json
source: { type: kafka, bootstrap_servers: "127.0.0.1:1", topics: [in], group_id: g }
format:
  type: json
  columns:
    - { name: id, type: int64 }
    - { name: x, type: float64, nullable: true }
sql: SELECT id, x FROM input
outputs:
  - { name: out, sink: { type: stdout } }
"#;
    let loaded = streamgate::spec::load_str(yaml, &pipeline_file(), &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let deep = nested(100_000);
    let payloads = [
        r#"{"id": 1, "x": 1.5}"#.to_string(),
        format!(r#"{{"id": 2, "x": {deep}}}"#),
        format!(r#"{{"id": 3, "x": 2.5, "extra": {deep}}}"#),
        format!(
            r#"{{"id": 4, "x": 2.5, "extra": {}1{}}}"#,
            "{\"a\": ".repeat(100_000),
            "}".repeat(100_000)
        ),
        r#"{"id": 5, "x": 3.5}"#.to_string(),
    ];
    let records: Vec<_> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| raw_record(p.clone().into_bytes(), i as i64))
        .collect();
    let decoded = compiled.decoder.decode(&records);
    assert_eq!(decoded.rows, [0, 4]);
    let failed: Vec<usize> = decoded.failures.iter().map(|f| f.index).collect();
    assert_eq!(failed, [1, 2, 3]);
    for f in &decoded.failures {
        assert!(
            f.message.contains("deeper than 64 levels"),
            "{}: {}",
            f.class,
            f.message
        );
    }
}

// ------------------------------------------------------------------------------------------
// Avro datums

/// A zigzag varint, as Avro writes lengths and counts.
fn varint(v: i64) -> Vec<u8> {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A Schema Registry stand-in answering every id with `schema`.
async fn registry(schema: &'static str) -> String {
    let app = axum::Router::new().route(
        "/schemas/ids/{id}",
        axum::routing::get(move || async move { axum::Json(json!({ "schema": schema })) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_datums_nesting_deeply_through_a_recursive_writer_schema_are_refused() {
    // A writer schema (from the registry) that refers to itself: one byte per level.
    let url = registry(
        r#"{"type": "record", "name": "Node", "fields": [
            {"name": "next", "type": ["null", "Node"]}]}"#,
    )
    .await;
    let yaml = format!(
        r#"
name: limits-avro
source: {{ type: kafka, bootstrap_servers: "127.0.0.1:1", topics: [in], group_id: g }}
format:
  type: avro
  schema: ../schemas/transaction.avsc
  wire: confluent
  registry: {{ url: "{url}" }}
outputs:
  - {{ name: out, sink: {{ type: stdout }} }}
"#
    );
    let loaded = streamgate::spec::load_str(&yaml, &pipeline_file(), &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let framed = |datum: Vec<u8>| [vec![0, 0, 0, 0, 7], datum].concat();
    let mut deep = vec![2u8; 1_000_000];
    deep.push(0);
    let records = vec![
        raw_record(framed(deep), 0),
        raw_record(framed(vec![2; 15].into_iter().chain([0]).collect()), 1),
    ];
    compiled.decoder.prepare(&records).await;
    let decoded = compiled.decoder.decode(&records);
    // Without the pre-check, apache-avro recursed once per byte and overflowed the stack.
    let first = &decoded.failures[0];
    assert_eq!(
        (first.index, first.class.as_str()),
        (0, "avro_too_deep"),
        "{}",
        first.message
    );
    assert!(
        first.message.contains("deeper than 16 levels"),
        "{}",
        first.message
    );
    // 16 levels (the root and 15 more) decode; the writer schema does not resolve to the transaction, which is this
    // record's (ordinary) error.
    let second = &decoded.failures[1];
    assert_eq!(
        (second.index, second.class.as_str()),
        (1, "avro_incompatible_schema"),
        "{}",
        second.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_lengths_larger_than_the_datum_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tags.avsc"),
        r#"{"type": "record", "name": "Tagged", "fields": [
            {"name": "id", "type": "long"},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "attributes", "type": {"type": "map", "values": "string"}}]}"#,
    )
    .unwrap();
    let yaml = r#"
name: limits-avro-plain
source: { type: kafka, bootstrap_servers: "127.0.0.1:1", topics: [in], group_id: g }
format: { type: avro, schema: tags.avsc }
outputs:
  - { name: out, sink: { type: stdout } }
"#;
    let loaded = streamgate::spec::load_str(yaml, &dir.path().join("p.yaml"), &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let good = [
        varint(7),
        varint(1),
        varint(1),
        b"a".to_vec(),
        varint(0),
        varint(0),
    ]
    .concat();
    let cases: [(Vec<u8>, &str); 4] = [
        // 16 million array items claimed in four bytes (apache-avro reserved ~1 GiB for them).
        (
            [varint(7), varint(16_000_000)].concat(),
            "array block declares 16000000 items but only 0 bytes are left",
        ),
        // A map of 2^40 entries.
        (
            [varint(7), varint(0), varint(1 << 40)].concat(),
            "map block declares 1099511627776 items",
        ),
        // A 16 MiB string in a 6-byte datum (apache-avro zeroed 16 MiB before failing).
        (
            [varint(7), varint(1), varint(16 << 20)].concat(),
            "declares 16777216 bytes but only 0 are left",
        ),
        // A negative block count, followed by its byte size, claiming as much.
        (
            [varint(7), varint(-16_000_000), varint(1)].concat(),
            "declares 16000000 items",
        ),
    ];
    let mut records = vec![raw_record(good, 0)];
    records.extend(
        cases
            .iter()
            .enumerate()
            .map(|(i, (d, _))| raw_record(d.clone(), i as i64 + 1)),
    );
    let decoded = compiled.decoder.decode(&records);
    assert_eq!(decoded.rows, [0]);
    assert_eq!(decoded.failures.len(), cases.len());
    for (f, (_, expected)) in decoded.failures.iter().zip(&cases) {
        assert_eq!(f.class.as_str(), "avro_truncated", "{}", f.message);
        assert!(f.message.contains(expected), "{}", f.message);
    }
}
