//! What the YAML says: serde types, environment interpolation, validation and the generated
//! JSON Schema.
//!
//! Loading is three separate steps, never mixed (ripgrep's lowargs → hiargs):
//! 1. parse the text into [`PipelineSpec`] (syntax, unknown fields, wrong types: reported with
//!    line and column);
//! 2. interpolate `${VAR}` / `${VAR:-default}` into string values ([`interpolate`]);
//! 3. validate semantics, collecting every problem with its path ([`validate`]).
//!
//! Before step 1, [`limits::check`] bounds the file's size, nesting depth and alias expansion
//! so that parsing costs time linear in its size.
//!
//! Compiling the SQL against the record schema (so that wrong column names fail here too) is
//! done by [`crate::plan`], which `streamgate validate` also runs.

pub(crate) mod api_keys;
pub(crate) mod check;
pub(crate) mod delivery;
pub(crate) mod duration;
pub mod gateway;
pub(crate) mod interpolate;
mod interpolate_models;
pub mod json_schema;
pub mod kafka;
pub mod limits;
pub(crate) mod models;
pub mod nats;
pub mod reference;
pub(crate) mod secret;
pub(crate) mod selector;
pub(crate) mod subject;
pub(crate) mod tls_client;
pub mod types;
pub(crate) mod validate;
pub(crate) mod validate_models;
pub(crate) mod validate_nats;

use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::sink::file::spec::FileSinkSpec;
pub use crate::sink::kafka::spec::KafkaSinkSpec;
pub use crate::sink::nats::spec::NatsSinkSpec;
pub use crate::sink::stdout::spec::StdoutSinkSpec;
pub use crate::source::kafka::spec::{KafkaSourceSpec, StartFrom};
pub use crate::source::nats::spec::{JetStreamSourceSpec, NatsDelivery, NatsSourceSpec};
pub use gateway::*;
pub use kafka::{KafkaSecurity, SaslMechanism, SaslSpec, SecurityProtocol, TlsSpec};
pub use models::*;
pub use nats::*;
pub use secret::Secret;
pub use tls_client::TlsClientSpec;
pub use types::*;

/// One problem found in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The pipeline file.
    pub file: PathBuf,
    /// Location inside the document, like `outputs[1].sink.topic` (empty for the whole file).
    pub path: String,
    /// 1-based line and column, when known (parse errors).
    pub line_column: Option<(usize, usize)>,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl SpecError {
    /// A problem at `path` without a line number.
    pub fn at(file: &Path, path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            file: file.to_path_buf(),
            path: path.into(),
            line_column: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.line_column {
            write!(f, ":{line}:{column}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for SpecError {}

/// A list of problems, printed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// A parsed, interpolated and validated spec (pipeline or gateway), with the file it came
/// from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The spec.
    pub spec: T,
    /// The file it was read from; relative paths inside it resolve against its folder.
    pub file: PathBuf,
}

/// A loaded pipeline.
pub type LoadedPipeline = Loaded<PipelineSpec>;

/// A loaded gateway file.
pub type LoadedGateway = Loaded<GatewaySpec>;

impl<T> Loaded<T> {
    /// The folder relative paths in the file (schemas, registries) are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }
}

fn read_spec_file(file: &Path) -> Result<String, SpecErrors> {
    read_bounded(file, "file").map_err(|e| SpecErrors(vec![e]))
}

/// Reads a spec file (`what` names it in errors), refusing one over
/// [`limits::MAX_SPEC_BYTES`] without reading more than that (the path may name a device or a
/// huge file).
fn read_bounded(file: &Path, what: &str) -> Result<String, SpecError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| SpecError::at(file, "", format!("cannot read {what}: {e}"));
    let mut text = String::new();
    std::fs::File::open(file)
        .map_err(cannot)?
        .take(limits::MAX_SPEC_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() > limits::MAX_SPEC_BYTES {
        let bytes = std::fs::metadata(file).map_or(text.len() as u64, |m| m.len());
        return Err(limits::too_large(file, bytes));
    }
    Ok(text)
}

/// Deserializes YAML text into `T`, reporting the first problem with its path and line.
fn deserialize_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<T, SpecError> {
    limits::check(text, file)?;
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        SpecError {
            file: file.to_path_buf(),
            path: if path == "." { String::new() } else { path },
            line_column: inner.location().map(|l| (l.line(), l.column())),
            message: inner.to_string(),
        }
    })
}

/// Reads, parses, interpolates from the process environment and validates a pipeline file.
pub fn load_file(file: &Path) -> Result<LoadedPipeline, SpecErrors> {
    let text = read_spec_file(file)?;
    load_str(&text, file, &|name| std::env::var(name).ok())
}

/// Parses, interpolates with `env` and validates pipeline text that was read from `file`.
pub fn load_str(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedPipeline, SpecErrors> {
    let mut spec = parse(text, file).map_err(|e| SpecErrors(vec![e]))?;
    let mut errors = interpolate::interpolate(&mut spec, file, env);
    if errors.is_empty()
        && let Some(registry) = spec.model_registry.clone()
    {
        let base = file.parent().unwrap_or(Path::new("."));
        errors.extend(merge_registry(
            &mut spec.models,
            &registry,
            &base.join(&registry),
            env,
        ));
    }
    errors.extend(validate::validate(&spec, file));
    if errors.is_empty() {
        resolve_sink_schema_paths(&mut spec, file.parent().unwrap_or(Path::new(".")));
        Ok(LoadedPipeline {
            spec,
            file: file.to_path_buf(),
        })
    } else {
        Err(SpecErrors(errors))
    }
}

/// Makes the `.avsc` paths of Avro sink formats absolute (they are relative to the pipeline
/// file), so sinks built later need no base directory.
fn resolve_sink_schema_paths(spec: &mut PipelineSpec, base: &Path) {
    for output in &mut spec.outputs {
        let format = match &mut output.sink {
            SinkSpec::Kafka(k) => &mut k.format,
            SinkSpec::Nats(n) => &mut n.format,
            SinkSpec::Stdout(_) | SinkSpec::File(_) => continue,
        };
        if let SinkFormatSpec::Avro(avro) = format
            && let Some(schema) = &mut avro.schema
            && Path::new(schema.as_str()).is_relative()
        {
            *schema = base.join(schema.as_str()).display().to_string();
        }
    }
}

/// Reads a model registry file and adds its models to `spec` (a model declared in both is an
/// error: one definition per model).
fn merge_registry(
    models: &mut std::collections::BTreeMap<String, ModelSpec>,
    model_registry: &str,
    registry_file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<SpecError> {
    let text = match read_bounded(registry_file, "model registry") {
        Ok(t) => t,
        Err(e) => return vec![e],
    };
    let mut registry: ModelRegistrySpec = match deserialize_yaml(&text, registry_file) {
        Ok(r) => r,
        Err(e) => return vec![e],
    };
    let mut errors = interpolate::interpolate_registry(&mut registry, registry_file, env);
    // Model repositories in the registry are relative to the registry file; the pipeline
    // resolves paths against its own folder, so prefix the registry's folder as the pipeline
    // named it.
    let registry_dir = Path::new(model_registry)
        .parent()
        .unwrap_or(Path::new(""))
        .to_path_buf();
    for model in registry.models.values_mut() {
        for version in &mut model.versions {
            if let EndpointSpec::Onnx(onnx) = &mut version.endpoint {
                onnx.repository = registry_dir.join(&onnx.repository).display().to_string();
            }
            // So are an endpoint's TLS files.
            if let Some(tls) = version.endpoint.tls_mut() {
                for file in [&mut tls.ca_file, &mut tls.client_cert, &mut tls.client_key]
                    .into_iter()
                    .flatten()
                {
                    *file = registry_dir.join(&*file).display().to_string();
                }
            }
        }
    }
    for (name, model) in registry.models {
        match models.entry(name) {
            std::collections::btree_map::Entry::Occupied(e) => errors.push(SpecError::at(
                registry_file,
                format!("models.{}", e.key()),
                "is also declared in the pipeline's `models`: declare each model once",
            )),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(model);
            }
        }
    }
    errors
}

/// Step 1: YAML text into typed spec. The document's shape cannot be trusted after the first
/// structural error, so this reports exactly one, with line, column and path.
pub fn parse(text: &str, file: &Path) -> Result<PipelineSpec, SpecError> {
    limits::check(text, file)?;
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let mut line_column = inner.location().map(|l| (l.line(), l.column()));
        let mut message = inner.to_string();
        // serde_yaml appends " at line X column Y"; we print the location ourselves.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // It also prefixes its own (shallower) path, "outputs[1]: ..."; we print ours.
        if let Some((prefix, rest)) = message.split_once(": ")
            && !prefix.contains(' ')
            && (prefix.contains('.') || prefix.contains('[') || path.starts_with(prefix))
        {
            message = rest.to_string();
        }
        // Inside `type`-tagged components serde buffers the content and loses positions,
        // reporting 1:1; a wrong location is worse than none.
        if line_column == Some((1, 1)) && path != "." {
            line_column = None;
        }
        SpecError {
            file: file.to_path_buf(),
            path: if path == "." { String::new() } else { path },
            line_column,
            message,
        }
    })
}

/// Reads, interpolates and validates a gateway file.
pub fn load_gateway(file: &Path) -> Result<LoadedGateway, SpecErrors> {
    let text = read_spec_file(file)?;
    load_gateway_str(&text, file, &|name| std::env::var(name).ok())
}

/// Parses, interpolates with `env` and validates gateway text read from `file`.
pub fn load_gateway_str(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedGateway, SpecErrors> {
    let mut spec: GatewaySpec = deserialize_yaml(text, file).map_err(|e| SpecErrors(vec![e]))?;
    let mut registry = ModelRegistrySpec {
        models: std::mem::take(&mut spec.models),
    };
    let mut errors = interpolate::interpolate_registry(&mut registry, file, env);
    spec.models = registry.models;
    if let Some(secret) = spec.auth.jwt.as_mut().and_then(|j| j.hs256_secret.as_mut()) {
        errors.extend(interpolate::interpolate_secret(
            secret,
            "auth.jwt.hs256_secret",
            file,
            env,
        ));
    }
    if errors.is_empty()
        && let Some(registry) = spec.model_registry.clone()
    {
        let base = file.parent().unwrap_or(Path::new("."));
        errors.extend(merge_registry(
            &mut spec.models,
            &registry,
            &base.join(&registry),
            env,
        ));
    }
    for (path, message) in validate_models::validate_models(&spec.models, &[]) {
        errors.push(SpecError::at(file, path, message));
    }
    if let Err(e) = spec.listen.parse::<std::net::SocketAddr>() {
        errors.push(SpecError::at(
            file,
            "listen",
            format!(
                "{:?} is not an address (`127.0.0.1:8080`): {e}",
                spec.listen
            ),
        ));
    }
    for (i, key) in spec.auth.api_keys.iter().enumerate() {
        if let Err(e) = api_keys::parse_api_key(key) {
            errors.push(SpecError::at(
                file,
                format!("auth.api_keys[{i}]"),
                e.to_string(),
            ));
        }
    }
    if errors.is_empty() {
        Ok(LoadedGateway {
            spec,
            file: file.to_path_buf(),
        })
    } else {
        Err(SpecErrors(errors))
    }
}
