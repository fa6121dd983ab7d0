//! The inference gateway: every route's access policy (the handler never runs on a
//! rejection), body limits, and conformance with real clients nobody here wrote: the `openai`
//! Python SDK (chat, streamed chat, embeddings) and `tritonclient.http` (metadata, infer),
//! both through the gateway to the in-tree mock model server.

use std::sync::Arc;

use streamgate::gateway::auth::key_hash_hex;
use streamgate::gateway::{Listener, ROUTES, RouteDef};
use streamgate::telemetry::Metrics;
use streamgate::testing::mock_model::{MockModel, MockModelConfig};

use crate::common::{python, serve_gateway};

const ALL: &str = "k-all-canary";
const SCORER_ONLY: &str = "k-scorer-canary";
const ADMIN_ONLY: &str = "k-admin-canary";
const OPS: &str = "k-ops-canary";

fn gateway_yaml(mock: &str, audit: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
max_body_bytes: 65536
models:
  scorer:
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{mock}"], model_name: fraud }}
      - name: v2
        weight: 0
        endpoint: {{ protocol: oip_v2, replicas: ["{mock}"], model_name: fraud-v2 }}
  chat:
    versions:
      - name: v1
        endpoint: {{ protocol: openai_chat, replicas: ["{mock}/v1"], model: mock-llm, prompt: "{{text}}" }}
  embed:
    versions:
      - name: v1
        endpoint: {{ protocol: openai_embeddings, replicas: ["{mock}/v1"], model: mock-embed }}
auth:
  api_keys:
    - {{ name: all, sha256: {all}, scopes: ["infer:*", "admin:read"] }}
    - {{ name: scorer-only, sha256: {scorer}, scopes: ["infer:scorer"] }}
    - {{ name: admin-only, sha256: {admin}, scopes: ["admin:read"] }}
    - {{ name: ops, sha256: {ops}, scopes: ["infer:*", "admin:write"] }}
audit_log: {audit}
replica_allow_list: ["127.0.0.1"]
"#,
        all = key_hash_hex(ALL),
        scorer = key_hash_hex(SCORER_ONLY),
        admin = key_hash_hex(ADMIN_ONLY),
        ops = key_hash_hex(OPS),
    )
}

struct Running {
    url: String,
    mock: MockModel,
    dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

async fn start() -> Running {
    start_with(|mock| gateway_yaml(mock, "audit.jsonl")).await
}

async fn start_with(yaml: impl FnOnce(&str) -> String) -> Running {
    start_in(tempfile::tempdir().unwrap(), yaml).await
}

/// Starts a mock model and a gateway whose file (`yaml(mock_url)`) lives in `dir`.
async fn start_in(dir: tempfile::TempDir, yaml: impl FnOnce(&str) -> String) -> Running {
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    let file = dir.path().join("gateway.yaml");
    let yaml = yaml(&mock.url());
    // One pipeline on the board, so the pipeline routes have something to act on.
    let board = streamgate::runtime::StatusBoard::default();
    board.set("p1", streamgate::runtime::PipelineState::Running);
    let (url, stop) = serve_gateway(&yaml, &file, Metrics::new(), Some(board)).await;
    Running {
        url,
        mock,
        dir,
        _stop: stop,
    }
}

impl Running {
    /// The audit log's entries.
    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let response = crate::common::http()
            .request(method, format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }
}

fn concrete(path: &str) -> String {
    path.replace("{model}", "scorer")
        .replace("{version}", "v1")
        .replace("{pipeline}", "p1")
}

fn body_for(path: &str) -> &'static str {
    match path {
        "/admin/models/{model}/weights" => r#"{"weights": {"v1": 100}}"#,
        "/admin/models/{model}/versions/{version}/replicas" => {
            r#"{"replicas": ["http://127.0.0.1:9"]}"#
        }
        "/v1/chat/completions" => {
            r#"{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}"#
        }
        "/v1/embeddings" => r#"{"model": "embed", "input": "hi"}"#,
        _ => r#"{"inputs": [{"name": "amount", "datatype": "FP32", "shape": [1], "data": [1.5]}]}"#,
    }
}

/// The routes of the gateway's listener (the admin port's own probes are in `admin_cli`).
fn routes() -> Vec<&'static RouteDef> {
    ROUTES
        .iter()
        .filter(|r| r.served_on(&Listener::Gateway))
        .collect()
}

async fn call(url: &str, def: &streamgate::gateway::RouteDef, key: Option<&str>) -> u16 {
    let client = crate::common::http();
    let target = format!("{url}{}", concrete(def.path));
    let mut request = match def.method {
        "GET" => client.get(target),
        "PUT" => client
            .put(target)
            .header("content-type", "application/json")
            .body(body_for(def.path)),
        _ => client
            .post(target)
            .header("content-type", "application/json")
            .body(body_for(def.path)),
    };
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.send().await.unwrap().status().as_u16()
}

/// The authentication and authorization matrix: every route × (no key, malformed header,
/// unknown key, a key without the scope). Only liveness is public; no rejected request
/// reaches the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_declares_a_policy_and_rejects_before_the_handler() {
    use streamgate::gateway::auth::Policy;
    let gw = start().await;
    let public: Vec<&str> = routes()
        .into_iter()
        .filter(|r| r.policy == Policy::Public)
        .map(|r| r.path)
        .collect();
    assert_eq!(
        public,
        ["/v2/health/live", "/"],
        "only liveness and the status page's data-free shell are public"
    );
    let client = crate::common::http();
    let shell = client
        .get(format!("{}/", gw.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shell.contains("<title>Streamgate status</title>"));
    for private in ["scorer", "chat", "embed", "p1", &gw.mock.url()] {
        assert!(
            !shell.contains(private),
            "the public page shell holds {private}"
        );
    }
    for def in routes() {
        if def.policy == Policy::Public {
            assert_eq!(call(&gw.url, def, None).await, 200, "{}", def.path);
            continue;
        }
        assert_eq!(call(&gw.url, def, None).await, 401, "no key: {}", def.path);
        assert_eq!(
            call(&gw.url, def, Some("not-a-key")).await,
            401,
            "unknown (or revoked) key: {}",
            def.path
        );
        // A malformed Authorization header.
        let malformed = client
            .get(format!("{}{}", gw.url, concrete(def.path)))
            .header("authorization", "Basic Zm9vOmJhcg==")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert!(
            malformed == 401 || malformed == 405,
            "{}: {malformed}",
            def.path
        );
        // A valid key without the scope the route needs.
        let lacking = match def.policy {
            Policy::Infer => ADMIN_ONLY,
            Policy::AdminRead | Policy::AdminWrite => SCORER_ONLY,
            Policy::Authenticated | Policy::Public => continue,
        };
        assert_eq!(
            call(&gw.url, def, Some(lacking)).await,
            403,
            "insufficient scope: {}",
            def.path
        );
    }
    // A key scoped to one model cannot reach another through body routing.
    let chat = routes()
        .into_iter()
        .find(|r| r.path == "/v1/chat/completions")
        .unwrap();
    assert_eq!(call(&gw.url, chat, Some(SCORER_ONLY)).await, 403);
    assert_eq!(gw.mock.calls(), 0, "a rejected request reached the model");

    // Reading the admin API does not allow changing it.
    for def in routes()
        .into_iter()
        .filter(|r| r.policy == Policy::AdminWrite)
    {
        assert_eq!(call(&gw.url, def, Some(ALL)).await, 403, "{}", def.path);
    }
    assert!(gw.audit().is_empty(), "a refused change was audited");

    // With the right key, requests go through.
    for def in routes() {
        let key = match def.policy {
            Policy::AdminWrite => OPS,
            _ => ALL,
        };
        let status = call(&gw.url, def, Some(key)).await;
        assert!(
            status == 200,
            "{} {} with a full key answered {status}",
            def.method,
            def.path
        );
    }
    assert!(gw.mock.calls() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_unknown_models_404() {
    let gw = start().await;
    let client = crate::common::http();
    let big = format!(
        r#"{{"model": "chat", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(100 * 1024)
    );
    let status = client
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("authorization", format!("Bearer {ALL}"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 413);
    let status = client
        .get(format!("{}/v2/models/nope", gw.url))
        .header("authorization", format!("Bearer {ALL}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);
    assert_eq!(gw.mock.calls(), 0);
}

/// A model's sized answer is passed on with its `Content-Length` (one write with the headers,
/// no chunked encoding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sized_answers_keep_their_length() {
    let gw = start().await;
    let client = crate::common::http();
    let post = |path: &str, body: &str| {
        client
            .post(format!("{}{path}", gw.url))
            .header("authorization", format!("Bearer {ALL}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let infer = post(
        "/v2/models/scorer/infer",
        body_for("/v2/models/{model}/infer"),
    )
    .await
    .unwrap();
    assert_eq!(infer.status().as_u16(), 200);
    assert!(infer.headers().get("transfer-encoding").is_none());
    let length: usize = infer.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = infer.bytes().await.unwrap();
    assert_eq!(body.len(), length);
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(answer["outputs"].is_array(), "{answer}");

    // Server-sent events the backend sent with a length (the mock does) keep it too; a stream
    // without one stays chunked (a_streamed_answer_holds_its_concurrency_slot_until_it_ends).
    let events = post(
        "/v1/chat/completions",
        r#"{"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]}"#,
    )
    .await
    .unwrap();
    assert_eq!(events.status().as_u16(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    assert!(events.headers().get("content-length").is_some());
    let text = events.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

/// The official `openai` SDK against the gateway: chat completion, streamed chat completion
/// and embeddings, routed by model name to an OpenAI-compatible backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_chat_streamed_chat_and_embeddings() {
    let gw = start().await;
    let script = r#"
import sys, json
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
chat = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Approve this payment"}])
streamed = "".join(
    chunk.choices[0].delta.content or ""
    for chunk in client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Approve this payment"}], stream=True)
    if chunk.choices)
emb = client.embeddings.create(model="embed", input=["abc", "hello"])
try:
    OpenAI(base_url=sys.argv[1] + "/v1", api_key="wrong", max_retries=0).embeddings.create(model="embed", input="x")
    refused = None
except Exception as e:
    refused = type(e).__name__
print(json.dumps({
    "chat": chat.choices[0].message.content,
    "usage": chat.usage.total_tokens,
    "streamed": streamed,
    "embeddings": [d.embedding for d in emb.data],
    "refused": refused,
}))
"#;
    let out = python(script, vec![gw.url.clone(), ALL.to_string()]).await;
    let answer: serde_json::Value = serde_json::from_str(out["chat"].as_str().unwrap()).unwrap();
    assert_eq!(answer["label"], "approve");
    assert_eq!(out["usage"], 8);
    assert_eq!(
        out["streamed"], out["chat"],
        "the streamed answer is the same text"
    );
    assert_eq!(out["embeddings"][1][0], 5.0);
    assert_eq!(out["refused"], "AuthenticationError");
}

/// The official `tritonclient.http` against the gateway's OIP v2 routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_metadata_and_infer() {
    let gw = start().await;
    let script = r#"
import sys, json
import numpy as np
import tritonclient.http as httpclient
url, key = sys.argv[1], sys.argv[2]
headers = {"Authorization": "Bearer " + key}
client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
live = client.is_server_live()
meta = client.get_model_metadata("scorer", headers=headers)
ready = client.is_model_ready("scorer", headers=headers)
a = httpclient.InferInput("amount", [3], "FP32")
a.set_data_from_numpy(np.array([1.0, 2.5, 4.0], dtype=np.float32), binary_data=False)
b = httpclient.InferInput("distance", [3], "FP32")
b.set_data_from_numpy(np.array([10.0, 20.0, 30.0], dtype=np.float32), binary_data=False)
result = client.infer("scorer", [a, b], outputs=[httpclient.InferRequestedOutput("score", binary_data=False)], headers=headers)
try:
    client.get_model_metadata("scorer")
    refused = None
except Exception as e:
    refused = str(e)[:80]
print(json.dumps({"live": live, "ready": ready, "name": meta["name"],
                  "score": result.as_numpy("score").reshape(-1).tolist(), "refused": refused}))
"#;
    let out = python(script, vec![gw.url.clone(), ALL.to_string()]).await;
    assert_eq!(out["live"], true);
    assert_eq!(out["ready"], true);
    assert_eq!(out["name"], "scorer");
    assert_eq!(out["score"], serde_json::json!([11.0, 22.5, 34.0]));
    assert!(
        out["refused"].is_string(),
        "a call without a key is refused"
    );
    assert_eq!(gw.mock.calls(), 1);
}

/// Traffic weights changed through the admin API move inference to the canary; a rollback
/// restores them; both are in the audit log with who, before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_change_and_roll_back_with_an_audit_trail() {
    use reqwest::Method;
    let gw = start().await;
    let infer =
        r#"{"inputs": [{"name": "amount", "datatype": "FP32", "shape": [1], "data": [1.5]}]}"#;
    let served_by =
        |v: &serde_json::Value| v["model_name"].as_str().unwrap_or_default().to_string();
    let (_, answer) = gw
        .send(Method::POST, "/v2/models/scorer/infer", ALL, infer)
        .await;
    assert_eq!(served_by(&answer), "fraud");

    let (status, _) = gw
        .send(
            Method::PUT,
            "/admin/models/scorer/weights",
            OPS,
            r#"{"weights": {"v3": 1}}"#,
        )
        .await;
    assert_eq!(status, 400, "unknown version");
    let (status, _) = gw
        .send(Method::POST, "/admin/models/scorer/rollback", OPS, "")
        .await;
    assert_eq!(status, 409, "nothing to roll back to");

    let (status, body) = gw
        .send(
            Method::PUT,
            "/admin/models/scorer/weights",
            OPS,
            r#"{"weights": {"v2": 100}}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["weights"], serde_json::json!({"v1": 0, "v2": 100}));
    for _ in 0..5 {
        let (_, answer) = gw
            .send(Method::POST, "/v2/models/scorer/infer", ALL, infer)
            .await;
        assert_eq!(served_by(&answer), "fraud-v2");
    }
    let (status, body) = gw
        .send(Method::POST, "/admin/models/scorer/rollback", OPS, "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["weights"], serde_json::json!({"v1": 100, "v2": 0}));
    let (_, answer) = gw
        .send(Method::POST, "/v2/models/scorer/infer", ALL, infer)
        .await;
    assert_eq!(served_by(&answer), "fraud");

    let audit = gw.audit();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["who"], "ops");
    assert_eq!(audit[0]["action"], "set_weights");
    assert_eq!(audit[0]["before"], serde_json::json!({"v1": 100, "v2": 0}));
    assert_eq!(audit[0]["after"], serde_json::json!({"v1": 0, "v2": 100}));
    assert_eq!(audit[1]["action"], "rollback");
    assert!(audit[1]["at_ms"].as_u64().unwrap() >= audit[0]["at_ms"].as_u64().unwrap());
    let (_, listed) = gw.send(Method::GET, "/admin/audit", ADMIN_ONLY, "").await;
    assert_eq!(listed["entries"].as_array().unwrap().len(), 2);
    // No key material anywhere in what the admin API shows.
    let (_, models) = gw.send(Method::GET, "/admin/models", ADMIN_ONLY, "").await;
    for text in [models.to_string(), listed.to_string()] {
        assert!(!text.contains("canary"), "{text}");
    }
}

/// Per-key rate and concurrency limits answer 429 with Retry-After; past the gateway's
/// capacity inference is shed with 503 at once while admin routes keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_load_shedding() {
    use reqwest::Method;
    use streamgate::testing::mock_model::{Faults, Latency};
    let gw = start_with(|mock| {
        format!(
            r#"
listen: 127.0.0.1:0
max_concurrent_infer: 3
models:
  scorer:
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{mock}"] }}
    timeout: 10s
auth:
  api_keys:
    - {{ name: limited, sha256: {limited}, scopes: ["infer:*"], rate_per_second: 1, burst: 3 }}
    - {{ name: narrow, sha256: {narrow}, scopes: ["infer:*"], max_concurrent: 1 }}
    - {{ name: wide, sha256: {wide}, scopes: ["infer:*", "admin:read"] }}
"#,
            limited = key_hash_hex("k-limited"),
            narrow = key_hash_hex("k-narrow"),
            wide = key_hash_hex("k-wide"),
        )
    })
    .await;
    let infer =
        r#"{"inputs": [{"name": "amount", "datatype": "FP32", "shape": [1], "data": [1.5]}]}"#;
    // Rate: a burst of 3, then 429 with Retry-After.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            gw.send(Method::POST, "/v2/models/scorer/infer", "k-limited", infer)
                .await
                .0,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let response = crate::common::http()
        .post(format!("{}/v2/models/scorer/infer", gw.url))
        .header("authorization", "Bearer k-limited")
        .body(infer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");

    // Concurrency and shedding: the model takes 400 ms per call.
    gw.mock.set_faults(Faults {
        latency: Latency::Fixed(std::time::Duration::from_millis(400)),
        ..Faults::default()
    });
    let concurrent = |key: &'static str, n: usize| {
        let url = gw.url.clone();
        async move {
            let calls = (0..n).map(|_| {
                let url = url.clone();
                async move {
                    crate::common::http()
                        .post(format!("{url}/v2/models/scorer/infer"))
                        .header("authorization", format!("Bearer {key}"))
                        .body(infer)
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                }
            });
            let mut s = futures::future::join_all(calls).await;
            s.sort();
            s
        }
    };
    assert_eq!(concurrent("k-narrow", 3).await, [200, 429, 429]);

    let shed = tokio::spawn(concurrent("k-wide", 6));
    // While inference is saturated (3 calls in flight at the model), the admin API answers,
    // well within one model call's time.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let started = std::time::Instant::now();
        let (status, models) = gw.send(Method::GET, "/admin/models", "k-wide", "").await;
        assert_eq!(status, 200);
        assert!(started.elapsed() < std::time::Duration::from_millis(200));
        if models["models"][0]["versions"][0]["replicas"][0]["in_flight"] == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls never arrived"
        );
    }
    assert_eq!(shed.await.unwrap(), [200, 200, 200, 503, 503, 503]);
}

/// JWT bearer tokens, table-driven: every way a token can be wrong gives 401 (a missing scope
/// 403) on every protected route, and nothing reaches the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_matrix() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use streamgate::gateway::auth::Policy;
    let ec = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let secret = "hs-secret-canary";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ec.pem"), ec.public_key_pem()).unwrap();
    let gw = start_in(dir, |mock| {
        format!(
            r#"
listen: 127.0.0.1:0
models:
  scorer:
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{mock}"] }}
auth:
  jwt:
    algorithms: [ES256, HS256]
    issuer: https://idp.example
    audience: streamgate
    hs256_secret: "${{JWT_SECRET:-{secret}}}"
    public_key_file: ec.pem
    leeway_seconds: 0
"#
        )
    })
    .await;
    let url = gw.url.clone();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |exp: u64, nbf: u64, aud: &str, scope: &str| {
        serde_json::json!({
            "sub": "svc-fraud", "iss": "https://idp.example", "aud": aud,
            "exp": exp, "nbf": nbf, "scope": scope,
        })
    };
    let es = |c: &serde_json::Value, key: &rcgen::KeyPair| {
        encode(
            &Header::new(Algorithm::ES256),
            c,
            &EncodingKey::from_ec_der(&key.serialize_der()),
        )
        .unwrap()
    };
    let hs = |c: &serde_json::Value, s: &str| {
        encode(
            &Header::new(Algorithm::HS256),
            c,
            &EncodingKey::from_secret(s.as_bytes()),
        )
        .unwrap()
    };
    let b64 = |v: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let good = claims(now + 600, now - 10, "streamgate", "infer:* admin:read");
    let alg_none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(&good)
    );
    let cases: Vec<(&str, String, u16)> = vec![
        ("valid ES256", es(&good, &ec), 200),
        ("valid HS256", hs(&good, secret), 200),
        ("wrong signature", es(&good, &other), 401),
        ("wrong HS256 secret", hs(&good, "another-secret"), 401),
        (
            "expired",
            es(&claims(now - 60, now - 600, "streamgate", "infer:*"), &ec),
            401,
        ),
        (
            "not yet valid",
            es(&claims(now + 600, now + 300, "streamgate", "infer:*"), &ec),
            401,
        ),
        (
            "wrong audience",
            es(&claims(now + 600, now - 10, "other", "infer:*"), &ec),
            401,
        ),
        ("alg none", alg_none, 401),
        ("malformed", "a.b.c".to_string(), 401),
        (
            "insufficient scope",
            es(
                &claims(now + 600, now - 10, "streamgate", "profile email"),
                &ec,
            ),
            403,
        ),
    ];
    let infer =
        r#"{"inputs": [{"name": "amount", "datatype": "FP32", "shape": [1], "data": [1.5]}]}"#;
    for (name, token, expected) in &cases {
        for def in routes()
            .into_iter()
            .filter(|r| r.policy == Policy::Infer && r.path.starts_with("/v2"))
        {
            let target = format!("{url}{}", concrete(def.path));
            let request = match def.method {
                "GET" => crate::common::http().get(target),
                _ => crate::common::http().post(target).body(infer),
            };
            let status = request
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            assert_eq!(status, *expected, "{name}: {} {}", def.method, def.path);
        }
    }
    // Only the valid tokens reached the model (two infer routes each).
    assert_eq!(gw.mock.calls(), 4);
}

/// A raw HTTP/1.1 GET over TLS with `roots` (and a client certificate when given); the
/// status code, or the error.
async fn tls_get(
    addr: &str,
    path: &str,
    roots: &rcgen::Certificate,
    client: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = rustls::RootCertStore::empty();
    store.add(roots.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))
}

/// TLS on the listener, with client-certificate authentication: no plaintext, no
/// connection without a client certificate signed by the configured CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_with_client_certificates() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["client".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
    std::fs::write(
        dir.path().join("server-key.pem"),
        server_key.serialize_pem(),
    )
    .unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let gw = start_in(dir, |mock| {
        format!(
            r#"
listen: 127.0.0.1:0
tls: {{ cert_file: server.pem, key_file: server-key.pem, client_ca_file: ca.pem }}
models:
  scorer:
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{mock}"] }}
"#
        )
    })
    .await;
    let addr = gw.url.trim_start_matches("http://").to_string();
    let ca_cert = ca.as_ref();
    assert_eq!(
        tls_get(
            &addr,
            "/v2/health/live",
            ca_cert,
            Some((&client, &client_key))
        )
        .await,
        Ok(200)
    );
    assert_eq!(
        tls_get(
            &addr,
            "/v2/health/ready",
            ca_cert,
            Some((&client, &client_key))
        )
        .await,
        Ok(401),
        "TLS does not replace the API key"
    );
    assert!(
        tls_get(&addr, "/v2/health/live", ca_cert, None)
            .await
            .is_err(),
        "no client certificate, no answer"
    );
    let plain = reqwest::get(format!("http://{addr}/v2/health/live")).await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plaintext is never served"
    );
}

/// RS/ES tokens verified against a JWKS file: the token's `kid` selects the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_keys_from_a_jwks_file() {
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let key = rcgen::KeyPair::generate().unwrap();
    let point = key.public_key_raw();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": b64(&point[1..33]), "y": b64(&point[33..]),
    }]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let gw = start_in(dir, |mock| {
        format!(
            r#"
listen: 127.0.0.1:0
models:
  scorer:
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{mock}"] }}
auth:
  jwt: {{ algorithms: [ES256], issuer: idp, audience: streamgate, jwks_file: jwks.json, scopes_claim: scp }}
"#
        )
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "sub": "svc", "iss": "idp", "aud": "streamgate", "exp": now + 600,
        "scp": ["infer:scorer", "openid"],
    });
    let token = |kid: &str| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_string());
        encode(
            &header,
            &claims,
            &EncodingKey::from_ec_der(&key.serialize_der()),
        )
        .unwrap()
    };
    let status = |token: String| {
        let url = format!("{}/v2/models/scorer/ready", gw.url);
        async move {
            crate::common::http()
                .get(url)
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        status(token("k1")).await,
        200,
        "kid selects the key; scopes from a list claim"
    );
    assert_eq!(
        status(token("unknown")).await,
        401,
        "an unknown kid is refused"
    );
}

/// A client that never finishes its headers is disconnected, and one that never finishes its
/// body gets 408, after `client_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = start_with(|mock| {
        format!(
            r#"
listen: 127.0.0.1:0
client_timeout: 300ms
models:
  chat:
    versions:
      - name: v1
        endpoint: {{ protocol: openai_chat, replicas: ["{mock}/v1"], model: m, prompt: "{{x}}" }}
auth:
  api_keys:
    - {{ name: all, sha256: {all}, scopes: ["infer:*"] }}
"#,
            all = key_hash_hex(ALL)
        )
    })
    .await;
    let addr = gw.url.trim_start_matches("http://").to_string();
    let limit = std::time::Duration::from_secs(5);

    let mut headers_only = tokio::net::TcpStream::connect(&addr).await.unwrap();
    headers_only
        .write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(limit, headers_only.read_to_end(&mut answer))
        .await
        .expect("the server closes a connection whose headers never end")
        .ok();
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));

    let mut slow_body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALL}\r\n\
                 Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"model\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(limit, slow_body.read(&mut answer))
        .await
        .expect("the server answers a body that never ends")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(gw.mock.calls(), 0);
}

/// Regression: a limit slot was released when the answer's headers were sent, so a long
/// streamed answer no longer counted against the key's concurrency. It is held until the body
/// ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_holds_its_concurrency_slot_until_it_ends() {
    use futures::StreamExt;
    // A chat backend whose stream stays open until the test sends its last chunk.
    let (chunks, rx) = tokio::sync::mpsc::channel::<&'static str>(4);
    let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let backend = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let rx = rx.clone();
            async move {
                let rx = rx.lock().await.take().expect("one streamed call");
                let body = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|c| (Ok::<_, std::convert::Infallible>(c), rx))
                });
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(body),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, backend).await });
    let gw = start_with(|_| {
        format!(
            r#"
listen: 127.0.0.1:0
models:
  chat:
    versions:
      - name: v1
        endpoint: {{ protocol: openai_chat, replicas: ["{backend_url}"], model: m, prompt: "{{text}}" }}
auth:
  api_keys:
    - {{ name: narrow, sha256: {narrow}, scopes: ["infer:*"], max_concurrent: 1 }}
"#,
            narrow = key_hash_hex("k-narrow"),
        )
    })
    .await;
    let chat =
        r#"{"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]}"#;
    let client = crate::common::http();
    let send_chat = || {
        client
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth("k-narrow")
            .body(chat)
            .send()
    };
    let first = send_chat().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    // No length known: the answer is relayed chunked, as it arrives.
    assert_eq!(first.headers()["transfer-encoding"], "chunked");
    chunks.send("data: {\"part\": 1}\n\n").await.unwrap();
    let mut stream = first.bytes_stream();
    let part = stream.next().await.unwrap().unwrap();
    assert!(part.starts_with(b"data: {\"part\": 1}"));
    // The stream is open: the key's one slot is taken.
    let second = send_chat().await.unwrap();
    assert_eq!(second.status().as_u16(), 429);
    // The stream ends: the slot is free again (the backend's one stream is used up, so the
    // next call fails upstream, but it is admitted).
    chunks.send("data: [DONE]\n\n").await.unwrap();
    drop(chunks);
    while let Some(part) = stream.next().await {
        part.unwrap();
    }
    let third = send_chat().await.unwrap();
    assert_ne!(third.status().as_u16(), 429, "the slot outlived its stream");
}

/// Replicas changed through the admin API: only to allowed addresses (never link-local or
/// metadata ones through a broad entry), audited, and traffic follows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_change_only_within_the_allow_list() {
    use reqwest::Method;
    let second = MockModel::start(MockModelConfig::default()).await.unwrap();
    let gw = start_with(|mock| {
        gateway_yaml(mock, "audit.jsonl").replace(
            r#"replica_allow_list: ["127.0.0.1"]"#,
            r#"replica_allow_list: ["127.0.0.0/8", "0.0.0.0/0"]"#,
        )
    })
    .await;
    let infer =
        r#"{"inputs": [{"name": "amount", "datatype": "FP32", "shape": [1], "data": [1.5]}]}"#;
    let path = "/admin/models/scorer/versions/v1/replicas";
    for (body, expected) in [
        (
            r#"{"replicas": ["http://169.254.169.254/"]}"#,
            "link-local or metadata",
        ),
        (
            r#"{"replicas": ["http://[fe80::1]:80/"]}"#,
            "link-local or metadata",
        ),
        (
            r#"{"replicas": ["http://u:secret-canary@127.0.0.1:1/"]}"#,
            "credentials",
        ),
        (r#"{"replicas": ["file:///etc/passwd"]}"#, "only http"),
        (r#"{"replicas": []}"#, "1 to 64"),
    ] {
        let (status, answer) = gw.send(Method::PUT, path, OPS, body).await;
        assert!(status == 403 || status == 400, "{body}: {status}");
        let text = answer.to_string();
        assert!(text.contains(expected), "{body}: {text}");
        assert!(!text.contains("secret-canary"), "{text}");
    }
    assert!(gw.audit().is_empty(), "a refused change was audited");
    // An allowed change: traffic moves to the new replica.
    let body = format!(r#"{{"replicas": ["{}"]}}"#, second.url());
    let (status, answer) = gw.send(Method::PUT, path, OPS, &body).await;
    assert_eq!(status, 200, "{answer}");
    let before = gw.mock.calls();
    let (status, _) = gw
        .send(Method::POST, "/v2/models/scorer/infer", ALL, infer)
        .await;
    assert_eq!(status, 200);
    assert_eq!(second.calls(), 1);
    assert_eq!(gw.mock.calls(), before);
    let audit = gw.audit();
    assert_eq!(audit[0]["action"], "set_replicas");
    assert_eq!(audit[0]["version"], "v1");
    assert_eq!(audit[0]["before"], serde_json::json!([gw.mock.url()]));
    assert_eq!(audit[0]["after"], serde_json::json!([second.url()]));
    let (_, models) = gw.send(Method::GET, "/admin/models", ALL, "").await;
    let scorer = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "scorer")
        .unwrap();
    assert_eq!(
        scorer["versions"][0]["replicas"][0]["address"],
        second.url(),
        "{models}"
    );

    // Without an allow-list nothing can be changed.
    let locked = start_with(|mock| {
        gateway_yaml(mock, "audit.jsonl").replace(r#"replica_allow_list: ["127.0.0.1"]"#, "")
    })
    .await;
    let (status, answer) = locked.send(Method::PUT, path, OPS, &body).await;
    assert_eq!(status, 403);
    assert!(
        answer.to_string().contains("no replica_allow_list"),
        "{answer}"
    );
}
