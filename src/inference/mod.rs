//! Model inference: the registry of models, versions and replicas; protocol clients (Open
//! Inference Protocol v2, OpenAI-compatible chat and embeddings, TF Serving, custom JSON,
//! in-process ONNX); micro-batching; balancing; retries, deadlines and outlier ejection; and the
//! pipeline stage that joins model outputs back to rows.
//!
//! Call path, outermost first (DESIGN.md §3):
//! `stage` (per batch: route rows to versions, hold rows while a model is down) →
//! `batcher` (merge rows into requests, split answers back, bisect 4xx) →
//! `model::Model` (fallback) → `model::VersionClient` (deadline, budgeted retries with
//! jittered backoff honouring Retry-After) → `balance` (p2c peak-EWMA, ejection, per-replica
//! in-flight limit) → attempt timeout → `protocol` (HTTP or in-process).

pub mod balance;
pub mod batcher;
pub mod error;
pub mod layers;
pub mod model;
pub mod online;
pub mod onnx;
pub mod protocol;
pub mod registry;
pub mod retry;
pub mod router;
pub mod scrub;
pub mod stage;
pub mod step;
pub mod types;
pub mod version;

pub use error::{ErrorKind, InferError};
pub use online::{OnlineProblem, check_online};
pub use registry::{ModelRegistry, PreparedBackends};
pub use stage::{InferenceStage, ModelFailure, StageOutput};
pub use step::CompiledStep;
