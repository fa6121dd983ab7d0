//! The inference stack against in-tree mock model replicas on loopback: balancing, ejection,
//! retries, canary and sticky routing, bisection of rejected batches, contract errors. Driven
//! through the compiled pipeline's real decode → SQL → inference path, without a broker.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use streamgate::batch::RawRecord;
use streamgate::inference::{InferenceStage, ModelRegistry, StageOutput};
use streamgate::plan::CompiledPipeline;
use streamgate::telemetry::Metrics;
use streamgate::testing::mock_model::{Faults, Latency, MockModel, MockModelConfig};

/// A pipeline whose rows have columns `x` (float), `k` (string key) and `id` (int), calling
/// model `m` with input `x`; `models` is the YAML of the `models:` map, `step_extra` extra
/// step fields.
pub(crate) fn pipeline(models: &str, step_extra: &str) -> String {
    format!(
        r#"
name: inference-test
source: {{ type: kafka, bootstrap_servers: "127.0.0.1:1", topics: [in], group_id: g }}
format:
  type: json
  columns:
    - {{ name: id, type: int64 }}
    - {{ name: x, type: float64 }}
    - {{ name: k, type: string }}
sql: SELECT id, x, k FROM input
models:
{models}
inference:
  - name: score
    model: m
    inputs: [x]
    outputs: [{{ column: s, from: score, type: float64 }}]
    lineage: true
{step_extra}
outputs:
  - name: out
    sink: {{ type: stdout }}
"#
    )
}

/// Compiles a pipeline and builds its model registry.
async fn compile_with_models(
    yaml: &str,
    metrics: &Metrics,
) -> (Arc<CompiledPipeline>, Arc<ModelRegistry>) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/test.yaml");
    let loaded = streamgate::spec::load_str(yaml, &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let registry = ModelRegistry::build(
        &compiled.pipeline.spec.models,
        &compiled.models,
        &metrics.models,
    );
    (compiled, registry)
}

/// Compiles a pipeline and starts its inference stage.
pub(crate) async fn stage(
    yaml: &str,
    metrics: &Metrics,
) -> (Arc<CompiledPipeline>, InferenceStage) {
    let (compiled, registry) = compile_with_models(yaml, metrics).await;
    let stage =
        InferenceStage::start(&compiled.steps, &registry, compiled.output_schema()).unwrap();
    (compiled, stage)
}

/// Rows `first..first + n` through decode and SQL: `x = id`, or `-1` for ids in `negative`;
/// key `k{id % keys}`.
pub(crate) async fn rows(
    compiled: &CompiledPipeline,
    first: i64,
    n: i64,
    keys: i64,
    negative: &HashSet<i64>,
) -> RecordBatch {
    let records: Vec<RawRecord> = (first..first + n)
        .map(|id| {
            let x = if negative.contains(&id) {
                -1.0
            } else {
                id as f64
            };
            crate::common::raw_record(
                format!(r#"{{"id":{id},"x":{x},"k":"k{}"}}"#, id % keys).into_bytes(),
                id,
            )
        })
        .collect();
    let decoded = compiled.decoder.decode(&records);
    assert!(decoded.failures.is_empty());
    compiled.sql.apply(decoded.batch).await.batch
}

fn column<'a>(out: &'a StageOutput, name: &str) -> &'a Arc<dyn Array> {
    out.batch.column(out.batch.schema().index_of(name).unwrap())
}

/// `models:` YAML of model `m` with one OIP v2 version `v1` over `urls`, plus `extra` model
/// fields (each line indented by four spaces, ending with a newline).
fn oip_models(urls: &[String], extra: &str) -> String {
    format!(
        "  m:\n    versions:\n      - name: v1\n        endpoint: {{ protocol: oip_v2, replicas: [{}] }}\n{extra}",
        replica_yaml(urls)
    )
}

fn replica_yaml(urls: &[String]) -> String {
    urls.iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn replicas(n: usize) -> Vec<MockModel> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(MockModel::start(MockModelConfig::default()).await.unwrap());
    }
    out
}

/// Sends `batches` batches of `size` rows, `concurrency` at a time.
async fn drive(
    compiled: &CompiledPipeline,
    stage: &InferenceStage,
    batches: i64,
    size: i64,
    concurrency: usize,
) -> Vec<StageOutput> {
    use futures::StreamExt;
    let mut inputs = Vec::new();
    for b in 0..batches {
        inputs.push(rows(compiled, b * size, size, 1_000_000, &HashSet::new()).await);
    }
    futures::stream::iter(inputs)
        .map(|batch| stage.apply(batch))
        .buffered(concurrency)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_join_back_to_their_rows_with_lineage() {
    let mocks = replicas(1).await;
    let models = oip_models(
        &[mocks[0].url()],
        "    batching: { max_batch_rows: 64, max_delay: 1ms }\n",
    );
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(&models, ""), &metrics).await;
    let out = stage
        .apply(rows(&compiled, 0, 500, 7, &HashSet::new()).await)
        .await;
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert_eq!(out.batch.num_rows(), 500);
    let ids = column(&out, "id").as_primitive::<Int64Type>();
    let scores = column(&out, "s").as_primitive::<Float64Type>();
    for r in 0..500 {
        // The mock's score is the sum of the inputs: here x = id.
        assert_eq!(scores.value(r), ids.value(r) as f64, "row {r}");
    }
    assert_eq!(column(&out, "score_model").as_string::<i32>().value(0), "m");
    assert_eq!(
        column(&out, "score_version").as_string::<i32>().value(0),
        "v1"
    );
    assert_eq!(
        column(&out, "score_replica").as_string::<i32>().value(0),
        mocks[0].url()
    );
    assert_eq!(mocks[0].rows(), 500);
    assert_eq!(mocks[0].calls(), 8, "500 rows in requests of at most 64");
    // Every call is in the per-replica metrics.
    let m = &metrics.models;
    let url = mocks[0].url();
    let replica = ["m", "v1", url.as_str()];
    let outcome_ok = ["m", "v1", url.as_str(), "ok"];
    assert_eq!(m.calls.with_label_values(&outcome_ok).get(), 8);
    assert_eq!(m.rows.with_label_values(&replica).get(), 500);
    assert_eq!(m.latency.with_label_values(&replica).get_sample_count(), 8);
    assert_eq!(m.in_flight.with_label_values(&replica).get(), 0);
    let batch_rows = m.batch_rows.with_label_values(&["m", "v1"]);
    assert_eq!(batch_rows.get_sample_count(), 8);
    assert_eq!(batch_rows.get_sample_sum(), 500.0);
    assert_eq!(m.retries.with_label_values(&["m", "v1"]).get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_is_down_falls_back_and_lineage_names_the_fallback() {
    let mut primary = MockModel::start(MockModelConfig::default()).await.unwrap();
    let fallback = MockModel::start(MockModelConfig::default()).await.unwrap();
    let primary_url = primary.url();
    primary.pause().await; // connections refused
    let models = format!(
        "  m:\n    versions:\n      - name: v1\n        endpoint: {{ protocol: oip_v2, replicas: [\"{primary_url}\"] }}\n      - name: v2\n        weight: 0\n        endpoint: {{ protocol: oip_v2, replicas: [\"{}\"] }}\n    fallback: {{ version: v2 }}\n    batching: {{ max_batch_rows: 64, max_delay: 1ms }}\n    retry: {{ backoff: 1ms }}\n",
        fallback.url()
    );
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(&models, ""), &metrics).await;
    // Without the fallback the stage would hold these rows until v1 comes back.
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        stage.apply(rows(&compiled, 0, 500, 7, &HashSet::new()).await),
    )
    .await
    .expect("rows held instead of going to the fallback");
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let ids = column(&out, "id").as_primitive::<Int64Type>();
    let scores = column(&out, "s").as_primitive::<Float64Type>();
    let versions = column(&out, "score_version").as_string::<i32>();
    let replicas = column(&out, "score_replica").as_string::<i32>();
    for r in 0..500 {
        assert_eq!(scores.value(r), ids.value(r) as f64, "row {r}");
        assert_eq!(versions.value(r), "v2", "row {r}");
        assert_eq!(replicas.value(r), fallback.url(), "row {r}");
    }
    assert_eq!(fallback.rows(), 500);
    let fallbacks = metrics
        .models
        .fallbacks
        .with_label_values(&["m", "v1"])
        .get();
    assert_eq!(fallbacks, fallback.calls(), "every request fell back once");
    assert!(
        metrics
            .models
            .errors
            .with_label_values(&["m", "v1", "connect"])
            .get()
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_never_has_more_requests_than_its_in_flight_limit() {
    let mocks = replicas(1).await;
    mocks[0].set_faults(Faults {
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..Faults::default()
    });
    let models = oip_models(
        &[mocks[0].url()],
        "    batching: { max_batch_rows: 10, max_delay: 0ms }\n    max_in_flight_per_replica: 2\n",
    );
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(&models, ""), &metrics).await;
    // Eight batches at a time, one request each: six wait for a slot.
    let outs = drive(&compiled, &stage, 40, 10, 8).await;
    assert!(outs.iter().all(|o| o.failures.is_empty()));
    assert_eq!(mocks[0].rows(), 400);
    assert_eq!(
        mocks[0].peak_in_flight(),
        2,
        "the limit is reached and never passed"
    );
    let in_flight = metrics
        .models
        .in_flight
        .with_label_values(&["m", "v1", &mocks[0].url()])
        .get();
    assert_eq!(in_flight, 0, "every slot is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_times_slower_replica_gets_under_ten_percent_of_calls() {
    let mocks = replicas(3).await;
    mocks[0].set_faults(Faults {
        latency: Latency::Fixed(Duration::from_millis(5)),
        ..Faults::default()
    });
    mocks[1].set_faults(Faults {
        latency: Latency::Fixed(Duration::from_millis(5)),
        ..Faults::default()
    });
    mocks[2].set_faults(Faults {
        latency: Latency::Fixed(Duration::from_millis(50)),
        ..Faults::default()
    });
    let urls: Vec<String> = mocks.iter().map(MockModel::url).collect();
    let models = oip_models(
        &urls,
        "    batching: { max_batch_rows: 10, max_delay: 0ms }\n",
    );
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(&models, ""), &metrics).await;
    let outs = drive(&compiled, &stage, 600, 10, 4).await;
    assert!(outs.iter().all(|o| o.failures.is_empty()));
    let calls: Vec<u64> = mocks.iter().map(MockModel::calls).collect();
    let total: u64 = calls.iter().sum();
    let slow_share = calls[2] as f64 / total as f64;
    eprintln!("calls per replica {calls:?}, slow share {slow_share:.3}");
    assert!(
        slow_share < 0.10,
        "slow replica got {slow_share:.3} of calls: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answering_only_500s_is_ejected_and_no_row_fails() {
    let mocks = replicas(3).await;
    mocks[1].set_faults(Faults {
        status_mix: vec![(500, 1.0)],
        ..Faults::default()
    });
    let urls: Vec<String> = mocks.iter().map(MockModel::url).collect();
    let models = oip_models(
        &urls,
        "    batching: { max_batch_rows: 10, max_delay: 0ms }\n    retry: { backoff: 1ms }\n",
    );
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(&models, ""), &metrics).await;
    let outs = drive(&compiled, &stage, 1500, 10, 4).await;
    let failed: usize = outs.iter().map(|o| o.failures.len()).sum();
    assert_eq!(failed, 0, "500s are retried on another replica");
    let calls: Vec<u64> = mocks.iter().map(MockModel::calls).collect();
    let total: u64 = calls.iter().sum();
    let share = calls[1] as f64 / total as f64;
    eprintln!("calls per replica {calls:?}, failing share {share:.4}");
    assert!(
        share < 0.01,
        "failing replica got {share:.4} of calls: {calls:?}"
    );
    let ejections = metrics
        .models
        .ejections
        .with_label_values(&["m", "v1", &urls[1]])
        .get();
    assert!(ejections >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_weights_hold_and_sticky_keys_stay_on_one_version() {
    let mocks = replicas(2).await;
    let models = format!(
        "  m:\n    versions:\n      - name: stable\n        weight: 90\n        endpoint: {{ protocol: oip_v2, replicas: [\"{}\"] }}\n      - name: canary\n        weight: 10\n        endpoint: {{ protocol: oip_v2, replicas: [\"{}\"] }}\n",
        mocks[0].url(),
        mocks[1].url()
    );
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(&models, ""), &metrics).await;
    let outs = drive(&compiled, &stage, 20, 500, 2).await;
    assert!(outs.iter().all(|o| o.failures.is_empty()));
    let canary = mocks[1].rows();
    assert_eq!(mocks[0].rows() + canary, 10_000);
    // Binomial(10000, 0.1): mean 1000, sd 30; 5 sd either side.
    assert!((850..=1150).contains(&canary), "canary rows {canary}");

    let (compiled, stage) = stage_sticky(&models, &metrics).await;
    let mut version_of: HashMap<String, String> = HashMap::new();
    for b in 0..10 {
        let out = stage
            .apply(rows(&compiled, b * 500, 500, 100, &HashSet::new()).await)
            .await;
        let keys = column(&out, "k").as_string::<i32>();
        let versions = column(&out, "score_version").as_string::<i32>();
        for r in 0..out.batch.num_rows() {
            let v = version_of
                .entry(keys.value(r).to_string())
                .or_insert_with(|| versions.value(r).to_string());
            assert_eq!(v, versions.value(r), "key {} moved version", keys.value(r));
        }
    }
    let canary_keys = version_of.values().filter(|v| *v == "canary").count();
    assert!(
        (1..40).contains(&canary_keys),
        "{canary_keys} of 100 keys on the canary"
    );
}

async fn stage_sticky(models: &str, metrics: &Metrics) -> (Arc<CompiledPipeline>, InferenceStage) {
    stage(&pipeline(models, "    sticky_key: k"), metrics).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_batches_are_bisected_to_exactly_the_bad_rows() {
    let mocks = replicas(1).await;
    mocks[0].set_faults(Faults {
        poison_status: Some(400),
        ..Faults::default()
    });
    let models = oip_models(&[mocks[0].url()], "    batching: { max_batch_rows: 256 }\n");
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(&models, ""), &metrics).await;
    let bad: HashSet<i64> = [3, 97, 98, 400, 999].into_iter().collect();
    let out = stage.apply(rows(&compiled, 0, 1000, 10, &bad).await).await;
    let failed: HashSet<i64> = out.failures.iter().map(|f| f.row as i64).collect();
    assert_eq!(failed, bad, "exactly the rejected rows fail");
    for f in &out.failures {
        assert_eq!(f.error.kind, streamgate::inference::ErrorKind::Rejected);
        assert!(f.error.message.contains("HTTP 400"), "{}", f.error.message);
    }
    assert_eq!(out.batch.num_rows(), 995);
    let ids = column(&out, "id").as_primitive::<Int64Type>();
    assert!((0..995).all(|r| !bad.contains(&ids.value(r))));
    // 4 requests of 256, each good half answered once: far fewer calls than rows.
    eprintln!("calls with bisection: {}", mocks[0].calls());
    assert!(mocks[0].calls() < 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_violations_and_hangs_are_classified() {
    let mocks = replicas(2).await;
    mocks[0].set_faults(Faults {
        wrong_row_count_probability: 1.0,
        ..Faults::default()
    });
    mocks[1].set_faults(Faults {
        malformed_probability: 1.0,
        ..Faults::default()
    });
    for (mock, expected) in [(&mocks[0], "rows for"), (&mocks[1], "malformed")] {
        let models = oip_models(&[mock.url()], "");
        let metrics = Metrics::new();
        let (compiled, stage) = stage(&pipeline(&models, ""), &metrics).await;
        let out = stage
            .apply(rows(&compiled, 0, 20, 10, &HashSet::new()).await)
            .await;
        assert_eq!(out.failures.len(), 20);
        let e = &out.failures[0].error;
        assert_eq!(e.kind, streamgate::inference::ErrorKind::Contract, "{e}");
        assert!(e.message.contains(expected), "{e}");
    }

    // A hanging replica: the attempt times out and the retry reaches the healthy one.
    let hang = MockModel::start(MockModelConfig::default()).await.unwrap();
    hang.set_faults(Faults {
        hang_probability: 1.0,
        ..Faults::default()
    });
    let healthy = MockModel::start(MockModelConfig::default()).await.unwrap();
    let models = format!(
        "  m:\n    timeout: 200ms\n    balance: round_robin\n    versions:\n      - name: v1\n        endpoint: {{ protocol: oip_v2, replicas: [\"{}\", \"{}\"] }}\n",
        hang.url(),
        healthy.url()
    );
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(&models, ""), &metrics).await;
    for b in 0..4 {
        let out = stage
            .apply(rows(&compiled, b * 10, 10, 10, &HashSet::new()).await)
            .await;
        assert!(out.failures.is_empty(), "{:?}", out.failures);
    }
    let timeouts = metrics
        .models
        .errors
        .with_label_values(&["m", "v1", "timeout"])
        .get();
    assert!(timeouts >= 1);
    // Every row reached the healthy replica. On a loaded machine one of its own answers can
    // take longer than the 200 ms timeout, and that batch (10 rows) is sent again.
    let rows = healthy.rows() as u64;
    assert!(
        (40..=40 + 10 * timeouts).contains(&rows),
        "{rows} rows, {timeouts} timeouts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_calls_wait_for_retry_after_and_succeed() {
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    mock.set_faults(Faults {
        status_mix: vec![(429, 0.5)],
        retry_after_secs: Some(0),
        ..Faults::default()
    });
    let models = oip_models(
        &[mock.url()],
        "    retry: { max_attempts: 10, budget_percent: 1000 }\n    batching: { max_batch_rows: 10 }\n",
    );
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(&models, ""), &metrics).await;
    let out = stage
        .apply(rows(&compiled, 0, 200, 10, &HashSet::new()).await)
        .await;
    assert!(out.failures.is_empty(), "{:?}", out.failures.first());
    assert!(mock.errors() > 0);
    let throttled = metrics
        .models
        .errors
        .with_label_values(&["m", "v1", "throttled"])
        .get();
    assert_eq!(throttled, mock.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_model_that_does_not_fit_fails_the_contract_check_naming_both_sides() {
    let mock = MockModel::start(MockModelConfig {
        output_name: "probabilities".into(),
        output_width: 2,
        declared_inputs: vec![("features".into(), "FP32".into(), vec![-1, 6])],
    })
    .await
    .unwrap();
    let models = format!(
        "  m:\n    versions:\n      - name: v1\n        endpoint: {{ protocol: oip_v2, replicas: [\"{}\"], layout: {{ type: matrix, name: features }} }}\n",
        mock.url()
    );
    let metrics = Metrics::new();
    let (compiled, _stage) = stage(&pipeline(&models, ""), &metrics).await;
    let problems = compiled.check_models_online().await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    let m = &problems[0].message;
    assert!(!problems[0].unreachable);
    assert!(
        m.contains("sends 1 columns (x) but the model expects shape [-1, 6]"),
        "{m}"
    );
    assert!(
        m.contains("reads `score` but the model's outputs are: probabilities"),
        "{m}"
    );
    // Starting the pipeline is refused with the same message, before anything is consumed.
    let (_stop, task) = crate::common::spawn_pipeline(compiled.clone(), &metrics);
    match task.await.unwrap() {
        Err(streamgate::runtime::RuntimeError::Model { message, .. }) => {
            assert!(
                message.contains("the model expects shape [-1, 6]"),
                "{message}"
            );
        }
        other => panic!("the pipeline started against a model that does not fit: {other:?}"),
    }

    let mut down = MockModel::start(MockModelConfig::default()).await.unwrap();
    let url = down.url();
    down.pause().await;
    let models = oip_models(&[url], "");
    let (compiled, _stage) = stage(&pipeline(&models, ""), &metrics).await;
    let problems = compiled.check_models_online().await;
    assert!(problems[0].unreachable, "{problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_round_trips_and_steps_fan_out_concurrently() {
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    let url = mock.url();
    let yaml = format!(
        r#"
name: fan-out
source: {{ type: kafka, bootstrap_servers: "127.0.0.1:1", topics: [in], group_id: g }}
format:
  type: json
  columns:
    - {{ name: id, type: int64 }}
    - {{ name: x, type: float64 }}
    - {{ name: k, type: string }}
models:
  oip:
    versions: [{{ name: "1", endpoint: {{ protocol: oip_v2, replicas: ["{url}"] }} }}]
  chat:
    versions: [{{ name: "1", endpoint: {{ protocol: openai_chat, replicas: ["{url}/v1"], model: m, prompt: "{{k}} costs {{x}}", json_answer: true, api_key: "${{LLM_KEY:-sk-canary}}" }} }}]
  embed:
    versions: [{{ name: "1", endpoint: {{ protocol: openai_embeddings, replicas: ["{url}/v1"], model: e }} }}]
  tf:
    versions: [{{ name: "1", endpoint: {{ protocol: tf_serving, replicas: ["{url}"] }} }}]
  custom:
    versions: [{{ name: "1", endpoint: {{ protocol: custom_json, replicas: ["{url}"], path: /score }} }}]
inference:
  - {{ name: a, model: oip, inputs: [x], outputs: [{{ column: oip_s, from: score }}] }}
  - name: b
    model: chat
    inputs: [k, x]
    outputs:
      - {{ column: label, from: /label, type: string }}
      - {{ column: chars, from: /chars, type: int64 }}
  - {{ name: c, model: embed, inputs: [k], outputs: [{{ column: emb, from: embedding, type: float32_list }}] }}
  - {{ name: d, model: tf, inputs: [x], outputs: [{{ column: tf_s, from: predictions }}] }}
  - {{ name: e, model: custom, inputs: [x, id], outputs: [{{ column: c_s, from: /score }}] }}
outputs:
  - {{ name: out, sink: {{ type: stdout }} }}
"#
    );
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&yaml, &metrics).await;
    let out = stage
        .apply(rows(&compiled, 0, 40, 3, &HashSet::new()).await)
        .await;
    assert!(out.failures.is_empty(), "{:?}", out.failures.first());
    assert_eq!(out.batch.num_rows(), 40);
    let ids = column(&out, "id").as_primitive::<Int64Type>();
    let keys = column(&out, "k").as_string::<i32>();
    let label = column(&out, "label").as_string::<i32>();
    let chars = column(&out, "chars").as_primitive::<Int64Type>();
    let emb = column(&out, "emb").as_list::<i32>();
    for r in 0..40 {
        let id = ids.value(r) as f64;
        assert_eq!(
            column(&out, "oip_s").as_primitive::<Float64Type>().value(r),
            id
        );
        assert_eq!(
            column(&out, "tf_s").as_primitive::<Float64Type>().value(r),
            id
        );
        assert_eq!(
            column(&out, "c_s").as_primitive::<Float64Type>().value(r),
            2.0 * id
        );
        // The mock labels a chat answer with the prompt's first word: the key.
        assert_eq!(label.value(r), keys.value(r));
        let prompt = format!("{} costs {}", keys.value(r), ids.value(r));
        assert_eq!(chars.value(r), prompt.chars().count() as i64);
        let vector = emb.value(r);
        let vector = vector.as_primitive::<datafusion::arrow::datatypes::Float32Type>();
        assert_eq!(vector.value(0), keys.value(r).chars().count() as f32);
    }
    // 40 chat requests (one row each) and one request per other protocol.
    assert_eq!(mock.calls(), 40 + 4);
    let prompt_tokens = metrics
        .models
        .tokens
        .with_label_values(&["chat", "1", "prompt"])
        .get();
    assert_eq!(prompt_tokens, 40 * 3);
    assert!(
        !metrics.render().contains("sk-canary"),
        "a secret reached the metrics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_crashes_the_model_is_isolated_and_the_rest_scored() {
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    mock.set_faults(Faults {
        poison_status: Some(500),
        ..Faults::default()
    });
    let models = oip_models(
        &[mock.url()],
        "    batching: { max_batch_rows: 256 }\n    retry: { backoff: 1ms, min_retries_per_second: 1000 }\n    ejection: { consecutive_failures: 1000 }\n",
    );
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(&models, ""), &metrics).await;
    let bad: HashSet<i64> = [10, 500, 501].into_iter().collect();
    let out = stage.apply(rows(&compiled, 0, 1000, 10, &bad).await).await;
    let failed: HashSet<i64> = out.failures.iter().map(|f| f.row as i64).collect();
    assert_eq!(failed, bad, "only the poison rows fail");
    assert!(
        out.failures
            .iter()
            .all(|f| f.error.kind == streamgate::inference::ErrorKind::ServerError)
    );
    assert_eq!(out.batch.num_rows(), 997);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_404_holds_the_rows_instead_of_dead_lettering_them() {
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    mock.set_faults(Faults {
        status_mix: vec![(404, 1.0)],
        ..Faults::default()
    });
    let models = oip_models(
        &[mock.url()],
        "    retry: { backoff: 1ms, max_backoff: 20ms }\n    ejection: { base_time: 10ms, max_time: 20ms }\n",
    );
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(&models, ""), &metrics).await;
    let batch = rows(&compiled, 0, 100, 10, &HashSet::new()).await;
    let stage = Arc::new(stage);
    let pending = tokio::spawn({
        let stage = stage.clone();
        async move { stage.apply(batch).await }
    });
    // The rows are held while the endpoint is misconfigured...
    crate::common::wait_until_async(
        "the stage to keep probing",
        Duration::from_secs(30),
        Duration::from_millis(5),
        || mock.calls() >= 5,
    )
    .await;
    assert!(!pending.is_finished());
    // ...and scored once it is fixed.
    mock.set_faults(Faults::default());
    let out = pending.await.unwrap();
    assert!(out.failures.is_empty(), "{:?}", out.failures.first());
    assert_eq!(out.batch.num_rows(), 100);
    let waits = metrics.models.outage_waits.with_label_values(&["m"]).get();
    assert!(waits >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_whose_filter_fails_is_published_nowhere() {
    // Regression: a row dead-lettered for one output's filter was still published to the
    // others, so replaying its dead letter duplicated it.
    let yaml = r#"
name: route-failure
source: { type: kafka, bootstrap_servers: "127.0.0.1:1", topics: [in], group_id: g }
format:
  type: json
  columns:
    - { name: id, type: int64 }
    - { name: x, type: float64 }
    - { name: k, type: string }
sql: SELECT id, x, k FROM input
outputs:
  - { name: all, sink: { type: stdout } }
  - { name: picky, where: "id / (id - 3) > 0", sink: { type: stdout } }
"#;
    let out = process_ten_rows(yaml, |id| format!(r#"{{"id":{id},"x":1,"k":"a"}}"#)).await;
    assert_eq!(out.failures.indices().collect::<Vec<_>>(), vec![3]);
    let all = out.routed[0].as_ref().unwrap();
    let ids = all.batch.column(0).as_primitive::<Int64Type>();
    assert_eq!(all.batch.num_rows(), 9);
    assert!((0..9).all(|r| ids.value(r) != 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_reach_no_output_and_did_not_fail_are_counted_as_filtered() {
    let yaml = r#"
name: filtered-count
source: { type: kafka, bootstrap_servers: "127.0.0.1:1", topics: [in], group_id: g }
format:
  type: json
  columns:
    - { name: id, type: int64 }
sql: SELECT id FROM input WHERE id % 3 <> 0
outputs:
  - { name: small, where: "id < 5", sink: { type: stdout } }
  - { name: eight, where: "id = 8", sink: { type: stdout } }
  - { name: fails_on_four, where: "id / (id - 4) > 100", sink: { type: stdout } }
"#;
    let out = process_ten_rows(yaml, |id| format!(r#"{{"id":{id}}}"#)).await;
    // The SQL drops 0, 3, 6 and 9; 4 fails its route; 1, 2 and 8 are published; 5 and 7 match
    // no output.
    assert_eq!(out.failures.indices().collect::<Vec<_>>(), vec![4]);
    assert_eq!(out.filtered, 6);
    let published: usize = out
        .routed
        .iter()
        .flatten()
        .map(|r| r.batch.num_rows())
        .sum();
    assert_eq!(published, 3);
}

/// Runs the pipeline `yaml`'s SQL, inference and routing over the JSON records `record(0..10)`.
async fn process_ten_rows(
    yaml: &str,
    record: impl Fn(i64) -> String,
) -> streamgate::runtime::rows::Processed {
    let metrics = Metrics::new();
    let (compiled, stage) = stage(yaml, &metrics).await;
    let records: Vec<RawRecord> = (0..10)
        .map(|id| crate::common::raw_record(record(id).into_bytes(), id))
        .collect();
    let input = compiled.decoder.decode(&records).batch;
    let pipeline = metrics.pipeline("rows");
    streamgate::runtime::rows::process_rows(&compiled, &stage, input, &pipeline).await
}

/// Calls model `m` of `yaml` once, directly (no stage, so an outage is returned rather than
/// held), with rows `0..n`; returns the result and how long the call took.
async fn call_model_once(
    yaml: &str,
    n: i64,
) -> (
    Result<streamgate::inference::model::Answer, streamgate::inference::error::InferError>,
    Duration,
) {
    let (compiled, registry) = compile_with_models(yaml, &Metrics::new()).await;
    let step = &compiled.steps[0];
    let batch = rows(&compiled, 0, n, 1, &HashSet::new()).await;
    let inputs = batch.project(&step.input_indices).unwrap();
    let model = registry.get("m").unwrap();
    let started = std::time::Instant::now();
    let result = model.call(0, &inputs, &step.contract).await;
    (result, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_bounds_a_call_and_its_retries() {
    use streamgate::inference::error::ErrorKind;
    // A replica that never answers: two attempts time out after 200 ms each, and the third
    // gets only what is left of the 500 ms deadline, although ten attempts are allowed.
    let hung = replicas(1).await;
    hung[0].set_faults(Faults {
        hang_probability: 1.0,
        ..Faults::default()
    });
    let models = oip_models(
        &[hung[0].url()],
        "    timeout: 200ms\n    deadline: 500ms\n    retry: { max_attempts: 10, backoff: 1ms, max_backoff: 1ms }\n",
    );
    let (result, took) = call_model_once(&pipeline(&models, ""), 3).await;
    let error = result.expect_err("no answer");
    assert_eq!(error.kind, ErrorKind::Deadline, "{error}");
    assert_eq!(error.attempts, 3, "{error}");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // A replica that always answers 503: retries stop at the deadline, long before
    // max_attempts.
    let failing = replicas(1).await;
    failing[0].set_faults(Faults {
        status_mix: vec![(503, 1.0)],
        ..Faults::default()
    });
    let models = oip_models(
        &[failing[0].url()],
        "    timeout: 100ms\n    deadline: 400ms\n    retry: { max_attempts: 1000, backoff: 20ms, max_backoff: 20ms, min_retries_per_second: 100000 }\n    ejection: { consecutive_failures: 100000 }\n",
    );
    let (result, took) = call_model_once(&pipeline(&models, ""), 3).await;
    let error = result.expect_err("every attempt fails");
    // A retry that finds no time left reports the failure it was retrying, not "no time left".
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
    assert!(error.message.contains("503"), "{error}");
    assert!(
        error.attempts > 1 && error.attempts < 1000,
        "{} attempts",
        error.attempts
    );
    assert_eq!(failing[0].calls(), error.attempts as u64);
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_steps_of_one_batch_call_their_models_at_the_same_time() {
    // Two models served by one replica that takes 100 ms per request: one batch of rows
    // makes one request per step, and the replica sees both at once.
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    mock.set_faults(Faults {
        latency: Latency::Fixed(Duration::from_millis(100)),
        ..Faults::default()
    });
    let url = mock.url();
    let models = format!(
        "{}  m2:\n    versions:\n      - name: v1\n        endpoint: {{ protocol: oip_v2, replicas: [\"{url}\"] }}\n",
        oip_models(std::slice::from_ref(&url), "")
    );
    let second_step = "  - name: second\n    model: m2\n    inputs: [x]\n    outputs: [{ column: s2, from: score, type: float64 }]\n";
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(&models, second_step), &metrics).await;
    let out = stage
        .apply(rows(&compiled, 0, 10, 1, &HashSet::new()).await)
        .await;
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let first = column(&out, "s").as_primitive::<Float64Type>();
    let second = column(&out, "s2").as_primitive::<Float64Type>();
    assert_eq!(first.values(), second.values(), "both joined back by row");
    assert_eq!(mock.calls(), 2);
    assert_eq!(mock.peak_in_flight(), 2, "the two steps ran concurrently");
}
