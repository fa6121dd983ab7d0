//! Conformance with a real Open Inference Protocol v2 server nobody here wrote: MLServer
//! (`mlserver` + `mlserver-sklearn` from PyPI, installed into a virtualenv by tests/run.sh)
//! serving a scikit-learn model trained in the test setup. Streamgate reads its metadata for
//! the contract check and scores rows through it; the scores must equal what scikit-learn's
//! own `predict_proba` gives for the same rows.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use streamgate::telemetry::Metrics;

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/mlserver")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_mlserver(model_dir: &Path) -> (Server, String) {
    assert!(
        crate::common::venv().join("bin/mlserver").exists(),
        "MLServer is not installed in {}: run `bash tests/run.sh`, which installs it",
        crate::common::venv().display()
    );
    let port = crate::common::free_port();
    let child = Command::new("bash")
        .arg(conformance_dir().join("start.sh"))
        .arg(model_dir)
        .arg(port.to_string())
        .arg("0")
        .arg("off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let url = format!("http://127.0.0.1:{port}");
    let ready = format!("{url}/v2/health/ready");
    let client = crate::common::http();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = client.get(&ready).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "MLServer did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (server, url)
}

fn pipeline(url: &str, inputs: &str) -> String {
    format!(
        r#"
name: mlserver-conformance
source: {{ type: kafka, bootstrap_servers: "127.0.0.1:1", topics: [in], group_id: g }}
format:
  type: json
  columns:
    - {{ name: id, type: int64 }}
    - {{ name: f0, type: float32 }}
    - {{ name: f1, type: float32 }}
    - {{ name: f2, type: float32 }}
    - {{ name: f3, type: float32 }}
    - {{ name: f4, type: float32 }}
    - {{ name: f5, type: float32 }}
models:
  fraud-sklearn:
    versions:
      - name: v1
        endpoint:
          protocol: oip_v2
          replicas: ["{url}"]
          model_version: v1
          layout: {{ type: matrix, name: features, datatype: FP32 }}
          request_outputs: [predict_proba]
    batching: {{ max_batch_rows: 64 }}
inference:
  - name: sk
    model: fraud-sklearn
    inputs: [{inputs}]
    outputs: [{{ column: p_fraud, from: "predict_proba[1]", type: float64 }}]
outputs:
  - name: out
    sink: {{ type: stdout }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlserver_scores_rows_like_scikit_learn_and_its_metadata_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let python = crate::common::venv().join("bin/python");
    let status = Command::new(&python)
        .arg(conformance_dir().join("train.py"))
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "training the scikit-learn model failed");
    let (_server, url) = start_mlserver(dir.path()).await;

    // Rows with varied features, and what scikit-learn itself says about them.
    let rows: Vec<[f32; 6]> = (0..300)
        .map(|i| {
            let i = i as f32;
            [
                1.0 + (i * 0.37) % 8.0,
                (i * 0.91) % 9.0,
                (i as i32 % 2) as f32,
                (i as i32 % 3 == 0) as i32 as f32,
                (i as i32 % 5 == 0) as i32 as f32,
                (i as i32 % 7 == 0) as i32 as f32,
            ]
        })
        .collect();
    let features = serde_json::to_string(&rows).unwrap();
    let script = "import sys, json, joblib, numpy as np\n\
        m = joblib.load(sys.argv[1])\n\
        x = np.array(json.loads(sys.stdin.read()), dtype=np.float32)\n\
        print(json.dumps([float(p) for p in m.predict_proba(x)[:, 1]]))";
    let mut child = Command::new(&python)
        .args(["-c", script])
        .arg(dir.path().join("model.joblib"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(features.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let expected: Vec<f64> = serde_json::from_slice(&output.stdout).unwrap();

    let metrics = Metrics::new();
    let (compiled, stage) =
        crate::inference::stage(&pipeline(&url, "f0, f1, f2, f3, f4, f5"), &metrics).await;
    let problems = compiled.check_models_online().await;
    assert!(problems.is_empty(), "{problems:?}");
    let records: Vec<streamgate::batch::RawRecord> = rows
        .iter()
        .enumerate()
        .map(|(id, f)| {
            crate::common::raw_record(
                format!(
                    r#"{{"id":{id},"f0":{},"f1":{},"f2":{},"f3":{},"f4":{},"f5":{}}}"#,
                    f[0], f[1], f[2], f[3], f[4], f[5]
                )
                .into_bytes(),
                id as i64,
            )
        })
        .collect();
    let decoded = compiled.decoder.decode(&records);
    let batch = compiled.sql.apply(decoded.batch).await.batch;
    let out = stage.apply(batch).await;
    assert!(out.failures.is_empty(), "{:?}", out.failures.first());
    let ids = out
        .batch
        .column(out.batch.schema().index_of("id").unwrap())
        .as_primitive::<Int64Type>();
    let p = out
        .batch
        .column(out.batch.schema().index_of("p_fraud").unwrap())
        .as_primitive::<Float64Type>();
    let mut seen = HashSet::new();
    for r in 0..out.batch.num_rows() {
        let id = ids.value(r) as usize;
        seen.insert(id);
        assert!(
            (p.value(r) - expected[id]).abs() < 1e-6,
            "row {id}: {} vs {}",
            p.value(r),
            expected[id]
        );
    }
    assert_eq!(seen.len(), 300);

    // The contract check reads MLServer's metadata: five columns do not fit [-1, 6].
    let (compiled, _stage) =
        crate::inference::stage(&pipeline(&url, "f0, f1, f2, f3, f4"), &metrics).await;
    let problems = compiled.check_models_online().await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .message
            .contains("sends 5 columns (f0, f1, f2, f3, f4) but the model expects shape [-1, 6]"),
        "{}",
        problems[0].message
    );
}
