//! The online check of served models: asks each version's first replica for its metadata and
//! compares it with what the pipeline's steps send and read.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{DataType, SchemaRef};

use super::protocol::ContractProblem;
use super::registry::PreparedBackends;
use super::step::{CompiledStep, reachable_versions};
use crate::spec::ModelSpec;

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
    models: &BTreeMap<String, ModelSpec>,
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
        for (model, k, version) in reachable_versions(&step.model, models) {
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
                let unreachable = matches!(problem, ContractProblem::Unreachable(_));
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
