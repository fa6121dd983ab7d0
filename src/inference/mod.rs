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
pub mod model;
pub mod onnx;
pub mod protocol;
pub mod registry;
pub mod retry;
pub mod scrub;
pub mod stage;
pub mod step;

pub use error::{ErrorKind, InferError};
pub use registry::{ModelRegistry, PreparedBackends};
pub use stage::{InferenceStage, ModelFailure, StageOutput};
pub use step::CompiledStep;

use datafusion::arrow::datatypes::{DataType, SchemaRef};

/// A problem found by [`check_online`].
#[derive(Debug, Clone)]
pub struct OnlineProblem {
    /// Spec path of the step.
    pub path: String,
    /// What is wrong, naming both sides.
    pub message: String,
    /// Whether the model could not be asked (down, or no metadata), rather than disagreeing.
    pub unreachable: bool,
}

/// Asks every served model version (first replica) for its metadata and checks it against
/// what each step sends and reads. `validate` reports every problem; startup fails on a
/// mismatch and only warns when a model cannot be reached (it may come up later).
pub async fn check_online(
    steps: &[CompiledStep],
    models: &std::collections::BTreeMap<String, crate::spec::ModelSpec>,
    prepared: &PreparedBackends,
    sql_schema: &SchemaRef,
) -> Vec<OnlineProblem> {
    let mut problems = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let input_types: Vec<DataType> = step
            .input_indices
            .iter()
            .map(|j| sql_schema.field(*j).data_type().clone())
            .collect();
        for (model, k, version) in step::reachable_versions(&step.model, models) {
            let Some(p) = prepared.get(model).and_then(|v| v.get(&version.name)) else {
                continue;
            };
            let Some(replica) = p.replicas.first() else {
                continue;
            };
            if let Err(problem) = p
                .backend
                .check_contract(replica, &step.contract, &input_types)
                .await
            {
                let unreachable = matches!(problem, protocol::ContractProblem::Unreachable(_));
                let what = if unreachable {
                    "cannot check"
                } else {
                    "does not fit"
                };
                problems.push(OnlineProblem {
                    path: format!("inference[{i}]"),
                    message: format!(
                        "{what} model {model}/{} (models.{model}.versions[{k}]): {problem}",
                        version.name
                    ),
                    unreachable,
                });
            }
        }
    }
    problems
}
