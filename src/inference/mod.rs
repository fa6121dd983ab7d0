//! Model inference: the registry of models, versions and replicas; protocol clients (Open
//! Inference Protocol v2, OpenAI-compatible chat and embeddings, TF Serving, custom JSON,
//! in-process ONNX); micro-batching; balancing; retries, deadlines and outlier ejection; and the
//! pipeline stage that joins model outputs back to rows.
//!
//! # Call path, outermost first (DESIGN.md §3)
//!
//! | file | owns |
//! |---|---|
//! | `stage.rs` | per batch: route rows to versions, hold rows while a model is down, join answers by row |
//! | `batcher.rs` | merge rows into requests, split answers back, bisect a rejected request |
//! | `model.rs` | a model: its router, fallback and policy; `Model::call` enters its layers |
//! | `layers/deadline.rs` | the call's deadline |
//! | `layers/fallback.rs` | the routed version, then the fallback once |
//! | `version.rs` | a version: backend, replicas; `VersionClient::call` enters its layers |
//! | `layers/retry.rs` | budgeted retries, jittered backoff or `Retry-After` (timing and budget in `retry.rs`) |
//! | `layers/balance.rs` | replica pick, in-flight slot, outcome: health, liveness, attempt metrics |
//! | `layers/attempt_timeout.rs` | one attempt's time, never past the deadline |
//! | `layers/backend.rs` | the protocol client and the answer's shape |
//! | `protocol/`, `onnx.rs` | the wire: `http_json.rs` (encode → POST → decode) for `oip`, `openai`, `tf_serving`, `custom_json`; `transport.rs` (bounded reads, error classification); `scrubbed.rs` (secrets out of errors); `onnx.rs` runs a model in process |
//!
//! The layers are composed in one place, `layers/stack.rs`, whose types fix their order
//! (`layers/service.rs`: each layer is generic over the next and bound by the request it
//! sends down). Beside the path: `balance/` (the balancer, a replica's slots and probe, its
//! EWMA and ejection in `balance/health.rs`), `router.rs` (versions and traffic weights),
//! `layers/liveness.rs` and `layers/metrics.rs` (what a version's layers share), `types.rs`
//! (`Answer`, `CallPolicy`, `BatchingPolicy`), `error.rs`, `scrub.rs`.
//!
//! # Compile time
//!
//! `registry.rs` prepares a protocol client per version (ONNX loaded once) and builds the
//! run-time models; `step.rs` compiles steps against the SQL schema; `online.rs` checks them
//! against served models' metadata.

pub(crate) mod balance;
pub(crate) mod batcher;
pub mod error;
pub(crate) mod layers;
pub mod model;
pub(crate) mod online;
pub mod onnx;
pub mod protocol;
pub(crate) mod registry;
pub(crate) mod retry;
pub(crate) mod router;
pub(crate) mod scrub;
pub mod stage;
pub(crate) mod step;
pub mod types;
pub(crate) mod version;

pub use error::{ErrorKind, InferError};
pub use online::{OnlineProblem, check_online};
pub use registry::{ModelRegistry, PreparedBackends};
pub use stage::{InferenceStage, ModelFailure, StageOutput};
pub use step::CompiledStep;
