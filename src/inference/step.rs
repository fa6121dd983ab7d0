//! Compiling the inference steps of a pipeline against the SQL output schema: inputs exist and
//! fit the protocol, output selectors parse, new columns do not collide, in-process models
//! accept what is sent. Pure; the online check of served models is [`super::check_online`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::protocol::json_values::output_data_type;
use super::protocol::openai::ChatBackend;
use super::protocol::{Contract, OutputBinding, Selector};
use super::registry::PreparedBackends;
use crate::codec::schema::column_list;
use crate::spec::{EndpointSpec, InferenceStepSpec, ModelSpec, TensorLayout, VersionSpec};

/// An inference step ready to run.
#[derive(Debug, Clone)]
pub struct CompiledStep {
    /// Step name.
    pub name: Arc<str>,
    /// Model name in the registry.
    pub model: String,
    /// What is sent and read back.
    pub contract: Arc<Contract>,
    /// Input column positions in the SQL output.
    pub input_indices: Vec<usize>,
    /// Sticky key column position.
    pub sticky_index: Option<usize>,
    /// Whether lineage columns are added.
    pub lineage: bool,
}

impl CompiledStep {
    /// Columns this step adds, in order: outputs, then lineage.
    pub fn fields(&self) -> Vec<Field> {
        let mut fields: Vec<Field> = self
            .contract
            .outputs
            .iter()
            .map(|o| Field::new(&o.column, output_data_type(o.data_type), true))
            .collect();
        if self.lineage {
            for (suffix, ty) in LINEAGE {
                fields.push(Field::new(
                    format!("{}_{suffix}", self.name),
                    ty.clone(),
                    false,
                ));
            }
        }
        fields
    }
}

/// Lineage columns, `<step>_<suffix>`.
pub(crate) const LINEAGE: [(&str, DataType); 4] = [
    ("model", DataType::Utf8),
    ("version", DataType::Utf8),
    ("replica", DataType::Utf8),
    ("latency_ms", DataType::Float64),
];

/// Problems as `(spec path, message)`.
pub(crate) type Problems = Vec<(String, String)>;

/// Compiles `steps`; returns them and the schema of rows after inference, or every problem
/// with its spec path.
pub(crate) fn compile_steps(
    steps: &[InferenceStepSpec],
    models: &BTreeMap<String, ModelSpec>,
    prepared: &PreparedBackends,
    schema: &SchemaRef,
) -> Result<(Vec<CompiledStep>, SchemaRef), Problems> {
    let mut errors = Vec::new();
    let mut compiled = Vec::new();
    let mut taken: HashSet<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (i, step) in steps.iter().enumerate() {
        if !models.contains_key(&step.model) {
            // Reported by spec validation.
            continue;
        }
        let path = format!("inference[{i}]");
        let mut err = |p: String, m: String| errors.push((p, m));
        let input_indices = column_indices(step, schema, &path, &mut err);
        let sticky_index = sticky_column(step, schema, &path, &mut err);
        // Every version a call can reach: the model's own and its fallback's.
        let targets = reachable_versions(&step.model, models);
        let outputs = bind_outputs(step, &targets, prepared, &mut taken, &path, &mut err);
        if step.lineage {
            claim_lineage_columns(step, &mut taken, &path, &mut err);
        }
        if input_indices.len() != step.inputs.len() || outputs.len() != step.outputs.len() {
            continue;
        }
        let contract = Contract {
            inputs: step.inputs.clone(),
            outputs,
        };
        let input_types: Vec<&DataType> = input_indices
            .iter()
            .map(|i| schema.field(*i).data_type())
            .collect();
        for target in &targets {
            check_endpoint(
                step,
                target,
                &contract,
                &input_types,
                prepared,
                &path,
                &mut err,
            );
        }
        let compiled_step = CompiledStep {
            name: Arc::from(step.name.as_str()),
            model: step.model.clone(),
            contract: Arc::new(contract),
            input_indices,
            sticky_index,
            lineage: step.lineage,
        };
        fields.extend(compiled_step.fields());
        compiled.push(compiled_step);
    }
    if errors.is_empty() {
        Ok((compiled, Arc::new(Schema::new(fields))))
    } else {
        Err(errors)
    }
}

/// A version a step's call can reach: (model name, version index, spec).
type Target<'a> = (&'a str, usize, &'a VersionSpec);

/// Positions of the step's input columns in the SQL output; a missing column is a problem.
fn column_indices(
    step: &InferenceStepSpec,
    schema: &SchemaRef,
    path: &str,
    err: &mut impl FnMut(String, String),
) -> Vec<usize> {
    let mut indices = Vec::new();
    for (j, input) in step.inputs.iter().enumerate() {
        match schema.index_of(input) {
            Ok(index) => indices.push(index),
            Err(_) => err(
                format!("{path}.inputs[{j}]"),
                format!(
                    "column `{input}` is not in the SQL output (columns: {})",
                    column_list(schema)
                ),
            ),
        }
    }
    indices
}

/// Position of the step's sticky-key column, if it has one.
fn sticky_column(
    step: &InferenceStepSpec,
    schema: &SchemaRef,
    path: &str,
    err: &mut impl FnMut(String, String),
) -> Option<usize> {
    let key = step.sticky_key.as_ref()?;
    match schema.index_of(key) {
        Ok(index) => Some(index),
        Err(_) => {
            err(
                format!("{path}.sticky_key"),
                format!(
                    "column `{key}` is not in the SQL output (columns: {})",
                    column_list(schema)
                ),
            );
            None
        }
    }
}

/// The step's outputs with their selectors. Each output column must be new, and its selector
/// must make sense for every reachable version's protocol.
fn bind_outputs(
    step: &InferenceStepSpec,
    targets: &[Target<'_>],
    prepared: &PreparedBackends,
    taken: &mut HashSet<String>,
    path: &str,
    err: &mut impl FnMut(String, String),
) -> Vec<OutputBinding> {
    let mut outputs = Vec::new();
    for (j, output) in step.outputs.iter().enumerate() {
        if !taken.insert(output.column.clone()) {
            err(
                format!("{path}.outputs[{j}].column"),
                format!(
                    "column `{}` already exists; choose another name",
                    output.column
                ),
            );
        }
        let mut selector = None;
        for (model_name, k, version) in targets {
            let Some(p) = prepared.get(*model_name).and_then(|v| v.get(&version.name)) else {
                continue;
            };
            match Selector::parse(&output.from, p.backend.selector_syntax()) {
                Ok(s) => selector = selector.or(Some(s)),
                Err(m) => err(
                    format!("{path}.outputs[{j}].from"),
                    format!(
                        "{m} (for version `{}`, models.{model_name}.versions[{k}])",
                        version.name
                    ),
                ),
            }
        }
        if let Some(selector) = selector {
            outputs.push(OutputBinding {
                column: output.column.clone(),
                selector,
                data_type: output.data_type,
            });
        }
    }
    outputs
}

/// Claims the step's lineage columns; one that already exists is a problem.
fn claim_lineage_columns(
    step: &InferenceStepSpec,
    taken: &mut HashSet<String>,
    path: &str,
    err: &mut impl FnMut(String, String),
) {
    for (suffix, _) in LINEAGE {
        let column = format!("{}_{suffix}", step.name);
        if !taken.insert(column.clone()) {
            err(
                format!("{path}.lineage"),
                format!("lineage column `{column}` already exists"),
            );
        }
    }
}

/// Whether what the step sends fits the protocol of one reachable version: a chat prompt's
/// placeholders, one text column for embeddings, numbers for a tensor matrix, an in-process
/// model's own inputs and outputs.
fn check_endpoint(
    step: &InferenceStepSpec,
    (model_name, k, version): &Target<'_>,
    contract: &Contract,
    input_types: &[&DataType],
    prepared: &PreparedBackends,
    path: &str,
    err: &mut impl FnMut(String, String),
) {
    let vpath = format!("models.{model_name}.versions[{k}].endpoint");
    match &version.endpoint {
        EndpointSpec::OpenaiChat(chat) => {
            if let Err(m) = ChatBackend::check_prompt(chat, &step.inputs) {
                err(format!("{vpath}.prompt"), format!("{m} (used by {path})"));
            }
        }
        EndpointSpec::OpenaiEmbeddings(_) if step.inputs.len() != 1 || !is_text(input_types[0]) => {
            err(
                format!("{path}.inputs"),
                "an embeddings model takes exactly one text column".to_string(),
            );
        }
        EndpointSpec::OipV2(s) if matches!(s.layout, TensorLayout::Matrix { .. }) => {
            numeric_inputs(&step.inputs, input_types, path, err);
        }
        EndpointSpec::Onnx(_) => {
            numeric_inputs(&step.inputs, input_types, path, err);
            if let Some(onnx) = prepared
                .get(*model_name)
                .and_then(|v| v.get(&version.name))
                .and_then(|p| p.onnx.as_ref())
                && let Err(m) = onnx.check(contract)
            {
                err(
                    path.to_string(),
                    format!("does not fit model {model_name}/{}: {m}", version.name),
                );
            }
        }
        _ => {}
    }
}

/// The versions a call to `model` can reach, as (model name, index, spec): its own, then its
/// fallback's (one version, or every version of another model).
pub(crate) fn reachable_versions<'a>(
    model: &'a str,
    models: &'a BTreeMap<String, ModelSpec>,
) -> Vec<(&'a str, usize, &'a VersionSpec)> {
    let Some(spec) = models.get(model) else {
        return Vec::new();
    };
    let mut out: Vec<(&str, usize, &VersionSpec)> = spec
        .versions
        .iter()
        .enumerate()
        .map(|(k, v)| (model, k, v))
        .collect();
    if let Some(f) = &spec.fallback {
        let target = f.model.as_deref().unwrap_or(model);
        if let Some((name, target_spec)) = models.get_key_value(target)
            && target != model
        {
            out.extend(
                target_spec
                    .versions
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| f.version.as_ref().is_none_or(|want| *want == v.name))
                    .map(|(k, v)| (name.as_str(), k, v)),
            );
        }
    }
    out
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn numeric_inputs(
    names: &[String],
    types: &[&DataType],
    path: &str,
    err: &mut impl FnMut(String, String),
) {
    for (j, (name, ty)) in names.iter().zip(types).enumerate() {
        if !(ty.is_numeric() || **ty == DataType::Boolean) {
            err(
                format!("{path}.inputs[{j}]"),
                format!("column `{name}` is {ty}, but this model takes numbers: cast it in SQL"),
            );
        }
    }
}
