//! The model registry and inference steps: which models exist, how to reach them, and how a
//! pipeline calls them.
//!
//! A model has versions (traffic split by weight: canary), each served by replicas behind one
//! protocol. The call policy (timeouts, retries, batching, balancing, ejection) belongs to the
//! model, so every pipeline calling it behaves the same way. What a pipeline sends and which
//! answers become columns belongs to the pipeline's inference step.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// A registry file (`model_registry:` in a pipeline): models by name.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRegistrySpec {
    /// Models by name (lowercase letters, digits, `-`, `_`).
    #[serde(default)]
    pub models: BTreeMap<String, ModelSpec>,
}

/// One model: versions, traffic split and call policy.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Versions of the model. Each call (or each row, with a sticky key) goes to one version,
    /// chosen by weight.
    pub versions: Vec<VersionSpec>,
    /// Where to send a call when every replica of its version failed with a retryable error
    /// or is ejected: another version of this model or another model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackSpec>,
    /// Time allowed for one HTTP attempt (default `"2s"`).
    #[serde(default = "default_attempt_timeout", with = "super::duration")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Time allowed for a call including every retry (default `"10s"`).
    #[serde(default = "default_deadline", with = "super::duration")]
    #[schemars(with = "String")]
    pub deadline: Duration,
    /// Retries of retryable failures.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Client-side micro-batching of rows into requests.
    #[serde(default)]
    pub batching: ModelBatchingSpec,
    /// How a replica is chosen: `p2c_ewma` (default: the less loaded of two random replicas
    /// by peak-EWMA latency × in-flight), `round_robin` or `least_outstanding`.
    #[serde(default)]
    pub balance: BalanceStrategy,
    /// Most requests in flight to one replica (default 32); more wait for a slot.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight_per_replica: usize,
    /// Passive outlier ejection of failing replicas.
    #[serde(default)]
    pub ejection: EjectionSpec,
}

fn default_attempt_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_deadline() -> Duration {
    Duration::from_secs(10)
}

fn default_max_in_flight() -> usize {
    32
}

/// A fallback target: `version` of this model, or `model` (and optionally its `version`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackSpec {
    /// Another model of the registry (default: this model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A version of that model (default: its weighted split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Retry policy. Only retryable failures are retried: connection errors, timeouts, 429 (after
/// its `Retry-After`), 502, 503 and 504.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Most attempts per call, the first included (default 3).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Retries allowed as a share of calls over the last 10 s, in percent (default 20): when
    /// a model is failing, retries cannot multiply its load by more than 1 + this share.
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// Retries always allowed per second regardless of the share (default 10).
    #[serde(default = "default_min_retries_per_second")]
    pub min_retries_per_second: u32,
    /// First backoff (default `"50ms"`); doubles per attempt, with full jitter.
    #[serde(default = "default_backoff", with = "super::duration")]
    #[schemars(with = "String")]
    pub backoff: Duration,
    /// Longest backoff, and longest wait between probes while a model is down (default `"5s"`).
    #[serde(default = "default_max_backoff", with = "super::duration")]
    #[schemars(with = "String")]
    pub max_backoff: Duration,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: default_max_attempts(),
            budget_percent: default_budget_percent(),
            min_retries_per_second: default_min_retries_per_second(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_max_attempts() -> u32 {
    3
}

fn default_budget_percent() -> u32 {
    20
}

fn default_min_retries_per_second() -> u32 {
    10
}

fn default_backoff() -> Duration {
    Duration::from_millis(50)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(5)
}

/// Client-side micro-batching: rows from concurrent pipeline batches are merged into one
/// request of at most `max_batch_rows`, waiting at most `max_delay` for more rows.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelBatchingSpec {
    /// Most rows per request (default 256). `1` sends one request per row.
    #[serde(default = "default_max_batch_rows")]
    pub max_batch_rows: usize,
    /// Longest a row waits for more rows to join its request (default `"2ms"`; `"0ms"` sends
    /// at once).
    #[serde(default = "default_max_delay", with = "super::duration")]
    #[schemars(with = "String")]
    pub max_delay: Duration,
    /// Requests in flight per version across all replicas (default 64).
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
}

impl Default for ModelBatchingSpec {
    fn default() -> Self {
        ModelBatchingSpec {
            max_batch_rows: default_max_batch_rows(),
            max_delay: default_max_delay(),
            max_concurrent_requests: default_max_concurrent_requests(),
        }
    }
}

fn default_max_batch_rows() -> usize {
    256
}

fn default_max_delay() -> Duration {
    Duration::from_millis(2)
}

fn default_max_concurrent_requests() -> usize {
    64
}

/// Replica selection strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BalanceStrategy {
    /// Power of two random choices over peak-EWMA latency × (in-flight + 1).
    #[default]
    P2cEwma,
    /// Each replica in turn.
    RoundRobin,
    /// The replica with the fewest requests in flight.
    LeastOutstanding,
}

/// Passive outlier ejection: a replica failing `consecutive_failures` calls in a row is taken
/// out of rotation for `base_time` × the number of times it was ejected (capped at
/// `max_time`), then tried again.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EjectionSpec {
    /// Consecutive failed attempts (connection errors, timeouts, 5xx) that eject (default 5).
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection time (default `"1s"`).
    #[serde(default = "default_base_ejection", with = "super::duration")]
    #[schemars(with = "String")]
    pub base_time: Duration,
    /// Longest ejection time (default `"30s"`).
    #[serde(default = "default_max_ejection", with = "super::duration")]
    #[schemars(with = "String")]
    pub max_time: Duration,
}

impl Default for EjectionSpec {
    fn default() -> Self {
        EjectionSpec {
            consecutive_failures: default_consecutive_failures(),
            base_time: default_base_ejection(),
            max_time: default_max_ejection(),
        }
    }
}

fn default_consecutive_failures() -> u32 {
    5
}

fn default_base_ejection() -> Duration {
    Duration::from_secs(1)
}

fn default_max_ejection() -> Duration {
    Duration::from_secs(30)
}

/// One version of a model.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    /// Version name (`"1"`, `"2026-11"`, `canary`).
    pub name: String,
    /// Share of traffic relative to the other versions' weights (default 100). `0` takes no
    /// traffic but can still be a fallback.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// How this version is reached.
    pub endpoint: EndpointSpec,
    /// Output tensors the gateway answers OIP v2 `infer` calls with when this version speaks
    /// another tensor protocol (`tf_serving`, `custom_json`, `onnx`): tensor `column` taken
    /// from `from` (the protocol's syntax, as in an inference step) with `type`. ONNX versions
    /// default to the model's declared one-value-per-row outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oip_outputs: Vec<InferenceOutputSpec>,
}

fn default_weight() -> u32 {
    100
}

/// The protocol a version speaks, and its replicas.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum EndpointSpec {
    /// Open Inference Protocol v2 REST (Triton, KServe, MLServer).
    OipV2(OipV2Spec),
    /// OpenAI-compatible chat completions: one request per row, a prompt built from columns.
    OpenaiChat(OpenAiChatSpec),
    /// OpenAI-compatible embeddings: a batch of texts per request.
    OpenaiEmbeddings(OpenAiEmbeddingsSpec),
    /// TensorFlow Serving REST predict (`instances` row format).
    TfServing(TfServingSpec),
    /// Any JSON API: a request body template and JSON pointers into the response.
    CustomJson(CustomJsonSpec),
    /// In-process ONNX model (pure Rust runtime, no network).
    Onnx(OnnxSpec),
}

impl EndpointSpec {
    /// The endpoint's `tls` settings, to change (HTTP protocols only).
    pub fn tls_mut(&mut self) -> Option<&mut super::TlsClientSpec> {
        match self {
            EndpointSpec::OipV2(s) => s.tls.as_mut(),
            EndpointSpec::OpenaiChat(s) => s.tls.as_mut(),
            EndpointSpec::OpenaiEmbeddings(s) => s.tls.as_mut(),
            EndpointSpec::TfServing(s) => s.tls.as_mut(),
            EndpointSpec::CustomJson(s) => s.tls.as_mut(),
            EndpointSpec::Onnx(_) => None,
        }
    }

    /// The endpoint's `tls` settings (HTTP protocols only).
    pub fn tls(&self) -> Option<&super::TlsClientSpec> {
        match self {
            EndpointSpec::OipV2(s) => s.tls.as_ref(),
            EndpointSpec::OpenaiChat(s) => s.tls.as_ref(),
            EndpointSpec::OpenaiEmbeddings(s) => s.tls.as_ref(),
            EndpointSpec::TfServing(s) => s.tls.as_ref(),
            EndpointSpec::CustomJson(s) => s.tls.as_ref(),
            EndpointSpec::Onnx(_) => None,
        }
    }
}

/// Open Inference Protocol v2 endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OipV2Spec {
    /// Base URLs of the replicas (`http://triton-0:8000`).
    pub replicas: Vec<String>,
    /// Model name on the server (default: the registry name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Model version on the server (default: the server's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// How input columns become tensors.
    #[serde(default)]
    pub layout: TensorLayout,
    /// Output tensors to request by name (default: whatever the server returns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_outputs: Vec<String>,
    /// Extra HTTP headers (for example an API key for KServe behind a gateway).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// TLS for `https://` replicas: a CA bundle, a client certificate, a server name
    /// (default: the web PKI roots, no client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::TlsClientSpec>,
}

/// Mapping of input columns to tensors.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TensorLayout {
    /// One tensor per input column, named like the column, shape `[N]` (datatype from the
    /// column type).
    #[default]
    Columns,
    /// One `[N, F]` tensor of all input columns, in order, cast to `datatype`.
    Matrix {
        /// Tensor name (default `input`).
        #[serde(default = "default_tensor_name")]
        name: String,
        /// Element type: `FP32` (default), `FP64`, `INT32` or `INT64`.
        #[serde(default)]
        datatype: TensorDatatype,
    },
}

fn default_tensor_name() -> String {
    "input".to_string()
}

/// Numeric tensor element types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TensorDatatype {
    /// 32-bit float.
    #[default]
    #[serde(rename = "FP32")]
    Fp32,
    /// 64-bit float.
    #[serde(rename = "FP64")]
    Fp64,
    /// 32-bit integer.
    #[serde(rename = "INT32")]
    Int32,
    /// 64-bit integer.
    #[serde(rename = "INT64")]
    Int64,
}

impl TensorDatatype {
    /// The OIP v2 datatype name.
    pub fn as_str(self) -> &'static str {
        match self {
            TensorDatatype::Fp32 => "FP32",
            TensorDatatype::Fp64 => "FP64",
            TensorDatatype::Int32 => "INT32",
            TensorDatatype::Int64 => "INT64",
        }
    }
}

/// OpenAI-compatible chat completions.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiChatSpec {
    /// Base URLs of the replicas, up to and including `/v1` (`http://vllm:8000/v1`).
    pub replicas: Vec<String>,
    /// The `model` field of the request.
    pub model: String,
    /// User message template: `{column}` is replaced by the row's value (`{{` for a brace).
    pub prompt: String,
    /// Optional system message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Ask for a JSON object answer (`response_format: json_object`); output selectors are
    /// then JSON pointers into it (`/label`).
    #[serde(default)]
    pub json_answer: bool,
    /// `max_tokens` of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// `temperature` of the request (default 0).
    #[serde(default)]
    pub temperature: f32,
    /// Bearer token; write `${OPENAI_API_KEY}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// TLS for `https://` replicas: a CA bundle, a client certificate, a server name
    /// (default: the web PKI roots, no client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::TlsClientSpec>,
}

/// OpenAI-compatible embeddings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiEmbeddingsSpec {
    /// Base URLs of the replicas, up to and including `/v1`.
    pub replicas: Vec<String>,
    /// The `model` field of the request.
    pub model: String,
    /// Bearer token; write `${OPENAI_API_KEY}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// TLS for `https://` replicas: a CA bundle, a client certificate, a server name
    /// (default: the web PKI roots, no client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::TlsClientSpec>,
}

/// TensorFlow Serving REST predict.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TfServingSpec {
    /// Base URLs of the replicas (`http://tfserving:8501`).
    pub replicas: Vec<String>,
    /// Model name on the server (default: the registry name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Signature (default: the server's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_name: Option<String>,
    /// Send each row as an object of named inputs (`true`, default) or as a list of the input
    /// values in order (`false`, for single-input models).
    #[serde(default = "default_true")]
    pub named_inputs: bool,
    /// TLS for `https://` replicas: a CA bundle, a client certificate, a server name
    /// (default: the web PKI roots, no client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::TlsClientSpec>,
}

fn default_true() -> bool {
    true
}

/// Custom JSON API: `POST <replica><path>` with the `body` template, in which the string
/// `"{{rows}}"` is replaced by the array of rows (each an object of the input columns); the
/// response's `results_pointer` must be an array with one element per row; output selectors
/// are JSON pointers into each element.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomJsonSpec {
    /// Base URLs of the replicas.
    pub replicas: Vec<String>,
    /// Request path (`/score`).
    pub path: String,
    /// Request body template: any JSON holding the string `"{{rows}}"` exactly once, where the
    /// array of rows goes (default `{"rows": "{{rows}}"}`), for example
    /// `{"data": {"instances": "{{rows}}"}, "mode": "fast"}`. Not interpolated from the
    /// environment: put secrets in `headers`.
    #[serde(default = "default_body")]
    pub body: serde_json::Value,
    /// JSON pointer to the array of per-row results in the response (default `/results`).
    #[serde(default = "default_results_pointer")]
    pub results_pointer: String,
    /// Extra HTTP headers (an API key, say).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// TLS for `https://` replicas: a CA bundle, a client certificate, a server name
    /// (default: the web PKI roots, no client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::TlsClientSpec>,
}

fn default_body() -> serde_json::Value {
    serde_json::json!({ "rows": ROWS_MARKER })
}

/// Where a custom JSON body template takes the array of rows.
pub const ROWS_MARKER: &str = "{{rows}}";

fn default_results_pointer() -> String {
    "/results".to_string()
}

/// In-process ONNX model.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnnxSpec {
    /// Model repository folder, relative to the pipeline file; the model is
    /// `<repository>/<model>/<version>/model.onnx` (Triton layout).
    pub repository: String,
    /// Model folder name in the repository (default: the registry name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// How input columns become the model's input: `matrix` (one `[N, F]` float tensor,
    /// default) or `columns` (one `[N]` tensor per input, in declaration order).
    #[serde(default = "default_onnx_layout")]
    pub layout: TensorLayout,
}

fn default_onnx_layout() -> TensorLayout {
    TensorLayout::Matrix {
        name: default_tensor_name(),
        datatype: TensorDatatype::Fp32,
    }
}

/// An inference step of a pipeline: runs after SQL, before routing. Steps of one pipeline run
/// concurrently on each batch and their columns are joined back by row.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InferenceStepSpec {
    /// Step name (used in metrics, lineage column names and dead-letter headers).
    pub name: String,
    /// Model of the registry to call.
    pub model: String,
    /// SQL output columns sent to the model, in order.
    pub inputs: Vec<String>,
    /// Model outputs that become new columns.
    pub outputs: Vec<InferenceOutputSpec>,
    /// Column whose value pins a row to one version (sticky canary): the same key always
    /// reaches the same version while weights are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_key: Option<String>,
    /// Add lineage columns `<step>_model`, `<step>_version`, `<step>_replica` and
    /// `<step>_latency_ms` (map them to Kafka headers with the sink's `headers`).
    #[serde(default)]
    pub lineage: bool,
}

/// One output column of an inference step.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InferenceOutputSpec {
    /// New column name.
    pub column: String,
    /// What to take from the answer. Tensor protocols (OIP v2, TF Serving, ONNX): an output
    /// name, or `name[i]` for column `i` of an `[N, k]` output. OpenAI chat: `text`, or a JSON
    /// pointer (`/label`) into a JSON answer. OpenAI embeddings: `embedding`. Custom JSON: a
    /// JSON pointer into each row's result (`/score`).
    pub from: String,
    /// Column type (default `float64`).
    #[serde(default, rename = "type")]
    pub data_type: OutputType,
}

/// Types of inference output columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    /// `true` / `false`.
    Boolean,
    /// 64-bit signed integer.
    Int64,
    /// 32-bit float.
    Float32,
    /// 64-bit float.
    #[default]
    Float64,
    /// UTF-8 string.
    String,
    /// List of 32-bit floats (an embedding).
    Float32List,
}
