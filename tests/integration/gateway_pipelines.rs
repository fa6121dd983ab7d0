//! The gateway serving the pipelines of its process (`streamgate run --gateway`): pipeline
//! status, throughput and errors in the admin API, pause and resume (audited), weight changes
//! that reach the pipelines' models, and the status page rendered by headless Chromium with its
//! numbers checked against the admin API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use streamgate::gateway::auth::key_hash_hex;
use streamgate::runtime::{PipelineState, StatusBoard, run_pipeline};
use streamgate::telemetry::Metrics;
use streamgate::testing::EmbeddedBroker;
use streamgate::testing::mock_model::{MockModel, MockModelConfig};
use tokio_util::sync::CancellationToken;

use crate::common::{produce, serve_gateway, transactions, wait_until_async};

const PARTITIONS: i32 = 2;
const READER: &str = "k-reader-canary";
const OPS: &str = "k-ops-canary";

fn pipeline_yaml(bootstrap: &str, model: &str) -> String {
    format!(
        r#"
name: scoring
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [tx-in]
  group_id: scoring-group
  batch: {{ max_rows: 100, max_age: 10ms }}
  properties: {{ fetch.wait.max.ms: "10" }}
format:
  type: json
  schema: ../schemas/transaction.avsc
sql: |
  SELECT transaction_id, card_id, amount FROM input
models:
  scorer:
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{model}"] }}
      - name: v2
        weight: 0
        endpoint: {{ protocol: oip_v2, replicas: ["{model}"] }}
inference:
  - name: score
    model: scorer
    inputs: [amount]
    outputs: [{{ column: score, from: score }}]
outputs:
  - name: out
    sink: {{ type: kafka, topic: tx-out, key: card_id }}
"#
    )
}

fn gateway_yaml(model: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
models:
  scorer:
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{model}"] }}
      - name: v2
        weight: 0
        endpoint: {{ protocol: oip_v2, replicas: ["{model}"] }}
auth:
  api_keys:
    - {{ name: reader, sha256: {reader}, scopes: ["admin:read", "infer:*"] }}
    - {{ name: ops, sha256: {ops}, scopes: ["admin:read", "admin:write"] }}
audit_log: audit.jsonl
"#,
        reader = key_hash_hex(READER),
        ops = key_hash_hex(OPS),
    )
}

/// A pipeline and a gateway in one process, sharing metrics and the status board.
struct Setup {
    /// Dropped first: the pipeline stops while the broker is still there.
    _stop: tokio_util::sync::DropGuard,
    _gateway: tokio_util::sync::DropGuard,
    url: String,
    bootstrap: String,
    board: StatusBoard,
    dir: tempfile::TempDir,
    _broker: EmbeddedBroker,
    _mock: MockModel,
}

async fn setup() -> Setup {
    let broker = EmbeddedBroker::start(&[("tx-in", PARTITIONS), ("tx-out", PARTITIONS)]).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    let metrics = Metrics::new();
    let board = StatusBoard::default();
    let stop = CancellationToken::new();

    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/scoring.yaml");
    let loaded =
        streamgate::spec::load_str(&pipeline_yaml(&bootstrap, &mock.url()), &file, &|_| None)
            .unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let (m, s, b) = (metrics.clone(), stop.clone(), board.clone());
    tokio::spawn(async move { run_pipeline(compiled, &m, s, b).await });

    let dir = tempfile::tempdir().unwrap();
    let gateway_file = dir.path().join("gateway.yaml");
    let (url, gateway_stop) = serve_gateway(
        &gateway_yaml(&mock.url()),
        &gateway_file,
        metrics,
        Some(board.clone()),
    )
    .await;
    let b = board.clone();
    wait_until_async(
        "the pipeline to run",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || b.snapshot().get("scoring") == Some(&PipelineState::Running),
    )
    .await;
    Setup {
        url,
        bootstrap,
        board,
        dir,
        _broker: broker,
        _mock: mock,
        _stop: stop.drop_guard(),
        _gateway: gateway_stop,
    }
}

impl Setup {
    async fn request(&self, method: reqwest::Method, path: &str, key: &str, body: &str) -> Value {
        let response = crate::common::http()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    async fn pipeline(&self) -> Value {
        let list = self
            .request(reqwest::Method::GET, "/admin/pipelines", READER, "")
            .await;
        list["pipelines"][0].clone()
    }

    async fn produce(&self, from: u64, n: u64) {
        let (records, _) = transactions(from + n, 0.0);
        let records = records[from as usize..].to_vec();
        let b = self.bootstrap.clone();
        tokio::task::spawn_blocking(move || produce(&b, "tx-in", PARTITIONS, &records))
            .await
            .unwrap();
    }

    async fn wait_out(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let p = self.pipeline().await;
            if p["records_out"] == n {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "stuck at {p}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_in_the_admin_api_pause_resume_and_shared_weights() {
    let s = setup().await;
    s.produce(0, 500).await;
    s.wait_out(500).await;
    let p = s.pipeline().await;
    assert_eq!(p["name"], "scoring");
    assert_eq!(p["state"], "running");
    assert_eq!(p["paused"], false);
    assert_eq!(p["records_in"], 500);
    assert_eq!(p["errors"], 0);
    assert!(
        p["in_per_second"].is_number() && p["lag"].is_number(),
        "{p}"
    );

    // Pause: nothing more is consumed, though records arrive.
    let paused = s
        .request(
            reqwest::Method::POST,
            "/admin/pipelines/scoring/pause",
            OPS,
            "",
        )
        .await;
    assert_eq!(paused["paused"], true);
    assert!(s.board.is_paused("scoring"));
    s.produce(500, 300).await;
    // A negative check needs a window: two seconds of polling, well past the 10 ms batches.
    for _ in 0..20 {
        let p = s.pipeline().await;
        assert_eq!(p["records_in"], 500, "consumed while paused: {p}");
        assert_eq!(p["paused"], true);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.request(
        reqwest::Method::POST,
        "/admin/pipelines/scoring/resume",
        OPS,
        "",
    )
    .await;
    s.wait_out(800).await;

    // Unknown pipelines are 404; readers cannot pause.
    let status = |path: &'static str, key: &'static str| {
        let url = format!("{}{path}", s.url);
        async move {
            crate::common::http()
                .post(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("/admin/pipelines/nope/pause", OPS).await, 404);
    assert_eq!(status("/admin/pipelines/scoring/pause", READER).await, 403);

    // A canary shift through the gateway reaches the pipeline's copy of the model; a rollback
    // restores it.
    let pipeline_weights = || {
        let registries = s.board.registries();
        let (_, registry) = registries.iter().find(|(p, _)| p == "scoring").unwrap();
        registry.get("scorer").unwrap().router.weights()
    };
    assert_eq!(pipeline_weights(), [100, 0]);
    s.request(
        reqwest::Method::PUT,
        "/admin/models/scorer/weights",
        OPS,
        r#"{"weights": {"v1": 10, "v2": 90}}"#,
    )
    .await;
    assert_eq!(pipeline_weights(), [10, 90]);
    s.request(
        reqwest::Method::POST,
        "/admin/models/scorer/rollback",
        OPS,
        "",
    )
    .await;
    assert_eq!(pipeline_weights(), [100, 0]);

    // Every change is in the audit log with who, before and after.
    let audit: Vec<Value> = std::fs::read_to_string(s.dir.path().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["pause", "resume", "set_weights", "rollback"]);
    assert_eq!(audit[0]["who"], "ops");
    assert_eq!(audit[0]["pipeline"], "scoring");
    assert_eq!(audit[0]["before"]["paused"], false);
    assert_eq!(audit[0]["after"]["paused"], true);
}

/// Debian's Chromium, installed by `tests/run.sh`.
fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "headless Chromium is missing: run `bash tests/run.sh` (it installs Debian's chromium)"
    );
    path
}

/// Runs headless Chromium on `url` with `mode` (`--dump-dom`, `--screenshot=...`), letting the
/// page's scripts run for a few seconds of virtual time.
async fn headless(url: &str, mode: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,900",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(mode)
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the element with `data-k="key"` in a serialised DOM.
fn shown(dom: &str, key: &str) -> String {
    let marker = format!("data-k=\"{key}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("the page shows no {key}"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    rest[start..end].to_string()
}

fn shown_number(dom: &str, key: &str) -> u64 {
    let text = shown(dom, key).replace(',', "");
    text.parse()
        .unwrap_or_else(|_| panic!("{key} shows {text:?}, not a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium_matches_the_admin_api() {
    let s = setup().await;
    s.produce(0, 400).await;
    s.wait_out(400).await;
    // Gateway traffic to the model as well.
    for _ in 0..7 {
        s.request(
            reqwest::Method::POST,
            "/v2/models/scorer/infer",
            READER,
            r#"{"inputs": [{"name": "amount", "datatype": "FP64", "shape": [1], "data": [2.5]}]}"#,
        )
        .await;
    }
    // Without a key the page shows no data, only the key form.
    let anonymous = headless(&format!("{}/", s.url), "--dump-dom").await;
    assert!(anonymous.contains("id=\"login\""), "{anonymous}");
    assert!(
        !anonymous.contains("data-k=\"pipeline:"),
        "data without a key"
    );

    // With a key (in the fragment, which is never sent to the server).
    let page = format!("{}/#key={READER}", s.url);
    let dom = headless(&page, "--dump-dom").await;
    assert!(
        shown_number(&dom, "refreshes") >= 1,
        "the page never refreshed"
    );
    assert_eq!(shown(&dom, "problem"), "");
    let api = s.pipeline().await;
    for field in ["records_in", "records_out", "errors"] {
        assert_eq!(
            shown_number(&dom, &format!("pipeline:scoring:{field}")),
            api[field].as_u64().unwrap(),
            "{field}"
        );
    }
    assert_eq!(shown(&dom, "pipeline:scoring:state"), "running");
    let models = s
        .request(reqwest::Method::GET, "/admin/models", READER, "")
        .await;
    // The pipeline's calls to the model count too: one registry of metrics per process.
    let v1_calls = models["models"][0]["versions"][0]["calls"]
        .as_u64()
        .unwrap();
    assert!(v1_calls > 7, "{models}");
    assert_eq!(shown_number(&dom, "model:scorer:v1:calls"), v1_calls);
    assert_eq!(shown_number(&dom, "model:scorer:v1:weight"), 100);
    assert_eq!(shown_number(&dom, "model:scorer:v2:weight"), 0);
    assert_eq!(shown(&dom, "model:scorer:v1:replicas_up"), "1/1");
    assert_eq!(shown(&dom, "model:scorer:v1:error_rate"), "0.0%");

    // Live: a pause and more traffic show up on the next render.
    s.request(
        reqwest::Method::POST,
        "/admin/pipelines/scoring/pause",
        OPS,
        "",
    )
    .await;
    s.request(
        reqwest::Method::POST,
        "/v2/models/scorer/infer",
        READER,
        r#"{"inputs": [{"name": "amount", "datatype": "FP64", "shape": [1], "data": [2.5]}]}"#,
    )
    .await;
    let dom = headless(&page, "--dump-dom").await;
    assert_eq!(shown(&dom, "pipeline:scoring:state"), "paused");
    assert_eq!(shown_number(&dom, "model:scorer:v1:calls"), v1_calls + 1);

    // The screenshot, kept for people to look at.
    let shot = std::env::temp_dir().join(format!("streamgate-status-{}.png", std::process::id()));
    headless(&page, &format!("--screenshot={}", shot.display())).await;
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a blank screenshot ({} bytes)",
        png.len()
    );
    eprintln!("status page screenshot: {}", shot.display());
}
