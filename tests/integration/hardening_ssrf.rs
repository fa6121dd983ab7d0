//! Issue 25, item 6: SSRF through the admin API. With an allow-list as wide as they come, a
//! replica that reaches the metadata service (169.254.169.254) through an IPv6 address carrying
//! it (NAT64, IPv4-compatible, IPv4-mapped, 6to4, Teredo) or an IPv4 spelling the URL parser
//! rewrites (decimal, octal, hex, short forms) is refused before anything changes, while
//! ordinary replicas, by address or by name (resolved through the guarded resolver at connect
//! time), still take traffic. Nothing here sends a packet beyond loopback: refused replicas are
//! never installed.

use reqwest::Method;
use streamgate::gateway::auth::key_hash_hex;
use streamgate::telemetry::Metrics;
use streamgate::testing::mock_model::{MockModel, MockModelConfig};

use crate::common::serve_gateway;

const OPS: &str = "k-ssrf-ops";

fn gateway_yaml(mock: &str, audit: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
models:
  scorer:
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{mock}"], model_name: fraud }}
auth:
  api_keys:
    - {{ name: ops, sha256: {ops}, scopes: ["infer:*", "admin:read", "admin:write"] }}
audit_log: {audit}
replica_allow_list: ["0.0.0.0/0", "::/0"]
"#,
        ops = key_hash_hex(OPS),
    )
}

async fn send(url: &str, method: Method, path: &str, body: &str) -> (u16, serde_json::Value) {
    let response = crate::common::http()
        .request(method, format!("{url}{path}"))
        .header("authorization", format!("Bearer {OPS}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hiding_the_metadata_address_are_refused() {
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    let second = MockModel::start(MockModelConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let yaml = gateway_yaml(&mock.url(), "audit.jsonl");
    let (url, _stop) = serve_gateway(
        &yaml,
        &dir.path().join("gateway.yaml"),
        Metrics::new(),
        None,
    )
    .await;
    let path = "/admin/models/scorer/versions/v1/replicas";

    for replica in [
        // IPv6 addresses carrying 169.254.169.254.
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[64:ff9b:1::a9fe:a9fe]/",
        "http://[::a9fe:a9fe]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::]/",
        "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",
        // IPv4 spellings of it.
        "http://2852039166/",
        "http://0251.0376.0251.0376/",
        "http://0xa9fea9fe/",
        "http://169.254.43518/",
        // The Alibaba metadata address through NAT64.
        "http://[64:ff9b::6464:64c8]/",
    ] {
        let body = format!(r#"{{"replicas": ["{}", "{replica}"]}}"#, second.url());
        let (status, answer) = send(&url, Method::PUT, path, &body).await;
        assert_eq!(status, 403, "{replica} was accepted: {answer}");
        assert!(
            answer.to_string().contains("link-local or metadata"),
            "{replica}: {answer}"
        );
    }
    assert!(
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .is_empty(),
        "a refused change was audited"
    );

    // Ordinary replicas are still accepted and take traffic: one by address, one by name
    // (which the client resolves through the guarded resolver when it connects).
    let by_name = format!("http://localhost:{}", second.addr().port());
    let body = format!(r#"{{"replicas": ["{by_name}"]}}"#);
    let (status, answer) = send(&url, Method::PUT, path, &body).await;
    assert_eq!(status, 200, "{answer}");
    let before = mock.calls();
    let infer =
        r#"{"inputs": [{"name": "amount", "datatype": "FP32", "shape": [1], "data": [1.5]}]}"#;
    let (status, answer) = send(&url, Method::POST, "/v2/models/scorer/infer", infer).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(second.calls(), 1);
    assert_eq!(mock.calls(), before);
}
