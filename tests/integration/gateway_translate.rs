//! OIP v2 through the gateway to versions that speak another protocol: the shipped ONNX fraud
//! model in process, a TF Serving predict endpoint and a custom JSON endpoint, called by the
//! official `tritonclient.http` with binary tensor data (its default) and with JSON.

use std::path::Path;

use serde_json::{Value, json};
use streamgate::gateway::auth::key_hash_hex;
use streamgate::telemetry::Metrics;
use streamgate::testing::mock_model::{MockModel, MockModelConfig};

use crate::common::{python, serve_gateway};

const KEY: &str = "k-translate-canary";

fn gateway_yaml(mock: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
models:
  fraud:
    versions:
      - name: local
        endpoint: {{ protocol: onnx, repository: ., model_name: fraud, layout: {{ type: matrix, name: features }} }}
  tfs:
    versions:
      - name: v1
        endpoint: {{ protocol: tf_serving, replicas: ["{mock}"], model_name: m }}
        oip_outputs: [{{ column: score, from: predictions, type: float64 }}]
  custom:
    versions:
      - name: v1
        endpoint: {{ protocol: custom_json, replicas: ["{mock}"], path: /score }}
        oip_outputs: [{{ column: score, from: /score, type: float32 }}]
  undeclared:
    versions:
      - name: v1
        endpoint: {{ protocol: tf_serving, replicas: ["{mock}"] }}
auth:
  api_keys:
    - {{ name: all, sha256: {key}, scopes: ["infer:*"] }}
"#,
        key = key_hash_hex(KEY),
    )
}

async fn start() -> (String, MockModel, tokio_util::sync::DropGuard) {
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    // The file sits beside the shipped model repository (models/fraud/local/model.onnx).
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/translate-test.yaml");
    let (url, stop) = serve_gateway(&gateway_yaml(&mock.url()), &file, Metrics::new(), None).await;
    (url, mock, stop)
}

/// The first rows of the training script's reference: features and the score Python's
/// onnxruntime computed.
fn reference(rows: usize) -> Vec<Value> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fraud/reference.jsonl"),
    )
    .unwrap();
    text.lines()
        .take(rows)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_reaches_onnx_tf_serving_and_custom_json_versions() {
    let (url, mock, _stop) = start().await;
    let rows = reference(32);
    let features: Vec<Value> = rows.iter().map(|r| r["features"].clone()).collect();
    let script = r#"
import sys, json
import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
url, key, features = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
auth = {"Authorization": "Bearer " + key}
# tritonclient writes Inference-Header-Content-Length into the dict it is given: one per call.
headers = lambda: dict(auth)
client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
out = {}
meta = client.get_model_metadata("fraud", headers=headers())
out["fraud_meta"] = meta
# Binary tensor data both ways (tritonclient's default).
x = httpclient.InferInput("features", [len(features), 6], "FP32")
x.set_data_from_numpy(np.array(features, dtype=np.float32))
output = meta["outputs"][0]["name"]
result = client.infer("fraud", [x], outputs=[httpclient.InferRequestedOutput(output)], headers=headers(), request_id="r-7")
out["fraud_scores"] = result.as_numpy(output).reshape(-1).astype(float).tolist()
out["fraud_id"] = result.get_response()["id"]
out["fraud_binary"] = "binary_data_size" in result.get_output(output).get("parameters", {})
# TF Serving: two inputs, one binary and one JSON; the answer as JSON.
a = httpclient.InferInput("amount", [3], "FP64")
a.set_data_from_numpy(np.array([1.0, 2.5, 4.0]))
b = httpclient.InferInput("distance", [3], "FP32")
b.set_data_from_numpy(np.array([10.0, 20.0, 30.0], dtype=np.float32), binary_data=False)
result = client.infer("tfs", [a, b], outputs=[httpclient.InferRequestedOutput("score", binary_data=False)], headers=headers())
out["tfs"] = result.as_numpy("score").tolist()
out["tfs_meta"] = client.get_model_metadata("tfs", headers=headers())
# Custom JSON: all outputs (none requested), JSON both ways.
c = httpclient.InferInput("amount", [2, 1], "INT64")
c.set_data_from_numpy(np.array([[3], [5]], dtype=np.int64), binary_data=False)
result = client.infer("custom", [c], headers=headers())
out["custom"] = result.as_numpy("score").tolist()
out["custom_dtype"] = result.get_output("score")["datatype"]
for model in ["undeclared"]:
    try:
        client.infer(model, [c], headers=headers())
        out[model] = None
    except InferenceServerException as e:
        out[model] = str(e)
print(json.dumps(out))
"#;
    let out = python(
        script,
        vec![url.clone(), KEY.to_string(), json!(features).to_string()],
    )
    .await;

    // The metadata describes the ONNX model's declared input and outputs.
    let meta = &out["fraud_meta"];
    assert_eq!(meta["name"], "fraud");
    assert_eq!(meta["platform"], "streamgate/onnx");
    assert_eq!(meta["inputs"][0]["name"], "features");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 6]));
    // Identical (within 1e-5) to the scores Python's onnxruntime computed for these rows.
    let scores = out["fraud_scores"].as_array().unwrap();
    assert_eq!(scores.len(), rows.len());
    for (got, row) in scores.iter().zip(&rows) {
        let (got, want) = (got.as_f64().unwrap(), row["fraud_score"].as_f64().unwrap());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
    assert_eq!(out["fraud_id"], "r-7");
    assert_eq!(out["fraud_binary"], true, "binary output was asked for");

    // The mock's score is the sum of a row's inputs.
    assert_eq!(out["tfs"], json!([11.0, 22.5, 34.0]));
    assert_eq!(out["tfs_meta"]["outputs"][0]["name"], "score");
    assert_eq!(out["tfs_meta"]["outputs"][0]["datatype"], "FP64");
    assert_eq!(out["custom"], json!([3.0, 5.0]));
    assert_eq!(out["custom_dtype"], "FP32");
    let undeclared = out["undeclared"].as_str().unwrap();
    assert!(undeclared.contains("oip_outputs"), "{undeclared}");
    assert_eq!(mock.calls(), 2, "one TF Serving and one custom JSON call");

    // Malformed requests are the client's fault, with the reason, and reach no model.
    let client = crate::common::http();
    let cases = [
        (
            r#"{"inputs": [{"name": "amount", "shape": [2], "datatype": "FP64", "data": [1]}]}"#,
            None,
            "values of data",
        ),
        (
            r#"{"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64", "data": [1]}], "outputs": [{"name": "nope"}]}"#,
            None,
            "no output `nope`",
        ),
        (
            r#"{"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}]}"#,
            Some("1000"),
            "Inference-Header-Content-Length",
        ),
        (
            r#"{"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64", "data": [1]}]}"#,
            Some("x"),
            "not a length",
        ),
    ];
    for (body, length, expected) in cases {
        let mut request = client
            .post(format!("{url}/v2/models/tfs/infer"))
            .bearer_auth(KEY)
            .body(body);
        if let Some(length) = length {
            request = request.header("inference-header-content-length", length);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{body}");
        let text = response.text().await.unwrap();
        assert!(text.contains(expected), "{body}: {text}");
    }
    assert_eq!(mock.calls(), 2, "a malformed request reached the model");
}
