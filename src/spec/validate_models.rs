//! Validation of the model registry and inference steps (pure, every problem with its path).

use std::collections::{BTreeMap, HashMap};

use super::check::is_valid_name;
use super::{EndpointSpec, InferenceStepSpec, ModelSpec};

/// Problems in `models` and `steps`, as `(path, message)`.
pub(crate) fn validate_models(
    models: &BTreeMap<String, ModelSpec>,
    steps: &[InferenceStepSpec],
) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let mut err = |p: String, m: String| errors.push((p, m));
    for (name, model) in models {
        let path = format!("models.{name}");
        if !is_valid_name(name) {
            err(
                path.clone(),
                format!(
                    "invalid model name {name:?}: expected 1 to 63 lowercase letters, digits, `-` or `_`"
                ),
            );
        }
        if model.versions.is_empty() {
            err(
                format!("{path}.versions"),
                "is empty: declare at least one version".into(),
            );
        }
        let mut seen = HashMap::new();
        for (i, version) in model.versions.iter().enumerate() {
            let vpath = format!("{path}.versions[{i}]");
            if version.name.trim().is_empty() || version.name.contains(['/', ' ']) {
                err(
                    format!("{vpath}.name"),
                    format!("invalid version name {:?}", version.name),
                );
            }
            if let Some(first) = seen.insert(version.name.as_str(), i) {
                err(
                    format!("{vpath}.name"),
                    format!(
                        "duplicate version {:?} (also at {path}.versions[{first}])",
                        version.name
                    ),
                );
            }
            endpoint(&format!("{vpath}.endpoint"), &version.endpoint, &mut err);
            oip_outputs(&format!("{vpath}.oip_outputs"), version, &mut err);
        }
        if !model.versions.is_empty() && model.versions.iter().all(|v| v.weight == 0) {
            err(
                format!("{path}.versions"),
                "every weight is 0: give at least one version traffic".into(),
            );
        }
        if model.timeout.is_zero() {
            err(format!("{path}.timeout"), "must be more than 0".into());
        }
        if model.deadline < model.timeout {
            err(
                format!("{path}.deadline"),
                format!(
                    "{:?} is shorter than the attempt timeout {:?}",
                    model.deadline, model.timeout
                ),
            );
        }
        if model.retry.max_attempts == 0 {
            err(
                format!("{path}.retry.max_attempts"),
                "must be at least 1 (the first attempt)".into(),
            );
        }
        if model.retry.budget_percent > 1000 {
            err(
                format!("{path}.retry.budget_percent"),
                "must be at most 1000".into(),
            );
        }
        if model.batching.max_batch_rows == 0 || model.batching.max_batch_rows > 100_000 {
            err(
                format!("{path}.batching.max_batch_rows"),
                "must be between 1 and 100000".into(),
            );
        }
        if model.batching.max_concurrent_requests == 0 {
            err(
                format!("{path}.batching.max_concurrent_requests"),
                "must be at least 1".into(),
            );
        }
        if model.max_in_flight_per_replica == 0 {
            err(
                format!("{path}.max_in_flight_per_replica"),
                "must be at least 1".into(),
            );
        }
        if model.ejection.consecutive_failures == 0 {
            err(
                format!("{path}.ejection.consecutive_failures"),
                "must be at least 1".into(),
            );
        }
        if let Some(f) = &model.fallback {
            let target_name = f.model.as_deref().unwrap_or(name);
            match models.get(target_name) {
                None => err(
                    format!("{path}.fallback.model"),
                    format!("unknown model `{target_name}` (models: {})", names(models)),
                ),
                Some(target) => {
                    if let Some(v) = &f.version
                        && !target.versions.iter().any(|tv| &tv.name == v)
                    {
                        err(
                            format!("{path}.fallback.version"),
                            format!("model `{target_name}` has no version `{v}`"),
                        );
                    }
                    if f.model.is_none() && f.version.is_none() {
                        err(
                            format!("{path}.fallback"),
                            "name a `model`, a `version` or both".into(),
                        );
                    }
                }
            }
        }
    }
    let mut step_names = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let path = format!("inference[{i}]");
        if !is_valid_name(&step.name) {
            err(
                format!("{path}.name"),
                format!("invalid step name {:?}", step.name),
            );
        }
        if let Some(first) = step_names.insert(step.name.as_str(), i) {
            err(
                format!("{path}.name"),
                format!(
                    "duplicate step name {:?} (also at inference[{first}].name)",
                    step.name
                ),
            );
        }
        if !models.contains_key(&step.model) {
            err(
                format!("{path}.model"),
                format!(
                    "unknown model `{}`: declare it under `models` or in the `model_registry` file (models: {})",
                    step.model,
                    names(models)
                ),
            );
        }
        if step.inputs.is_empty() {
            err(
                format!("{path}.inputs"),
                "is empty: name the SQL columns to send".into(),
            );
        }
        if step.outputs.is_empty() {
            err(
                format!("{path}.outputs"),
                "is empty: declare at least one output column".into(),
            );
        }
    }
    errors
}

/// `oip_outputs` only where the gateway translates, with selectors of the version's protocol
/// and distinct tensor names.
fn oip_outputs(path: &str, version: &super::VersionSpec, err: &mut impl FnMut(String, String)) {
    use super::selector::{Selector, SelectorSyntax};
    if version.oip_outputs.is_empty() {
        return;
    }
    let syntax = match &version.endpoint {
        EndpointSpec::TfServing(_) | EndpointSpec::Onnx(_) => SelectorSyntax::Tensor,
        EndpointSpec::CustomJson(_) => SelectorSyntax::Pointer,
        EndpointSpec::OipV2(_)
        | EndpointSpec::OpenaiChat(_)
        | EndpointSpec::OpenaiEmbeddings(_) => {
            err(
                path.to_string(),
                "is for versions the gateway translates to OIP v2 (tf_serving, custom_json, onnx); OIP v2 versions are forwarded as they are".into(),
            );
            return;
        }
    };
    let mut seen = std::collections::HashSet::new();
    for (i, output) in version.oip_outputs.iter().enumerate() {
        if !seen.insert(output.column.as_str()) {
            err(
                format!("{path}[{i}].column"),
                format!("duplicate output tensor {:?}", output.column),
            );
        }
        if output.data_type == super::OutputType::Float32List {
            err(
                format!("{path}[{i}].type"),
                "float32_list outputs are not served over OIP v2; use one tensor per value".into(),
            );
        }
        if let Err(e) = Selector::parse(&output.from, syntax) {
            err(format!("{path}[{i}].from"), e.to_string());
        }
    }
}

fn names(models: &BTreeMap<String, ModelSpec>) -> String {
    if models.is_empty() {
        return "none declared".to_string();
    }
    models
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn endpoint(path: &str, spec: &EndpointSpec, err: &mut impl FnMut(String, String)) {
    let headers = match spec {
        EndpointSpec::OipV2(s) => Some(&s.headers),
        EndpointSpec::CustomJson(s) => Some(&s.headers),
        _ => None,
    };
    for (name, value) in headers.into_iter().flatten() {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            err(
                format!("{path}.headers"),
                format!("{name:?} is not a valid HTTP header name"),
            );
        }
        // The value is a secret: say what is wrong, never what it is.
        if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
            err(
                format!("{path}.headers[{name:?}]"),
                "the value is not a valid HTTP header value (control or non-ASCII characters)"
                    .into(),
            );
        }
    }
    let replicas = match spec {
        EndpointSpec::OipV2(s) => &s.replicas,
        EndpointSpec::OpenaiChat(s) => &s.replicas,
        EndpointSpec::OpenaiEmbeddings(s) => &s.replicas,
        EndpointSpec::TfServing(s) => &s.replicas,
        EndpointSpec::CustomJson(s) => {
            if !s.path.starts_with('/') {
                err(format!("{path}.path"), "must start with `/`".into());
            }
            let marker = serde_json::to_string(super::ROWS_MARKER).unwrap_or_default();
            let found = serde_json::to_string(&s.body)
                .unwrap_or_default()
                .matches(&marker)
                .count();
            if found != 1 {
                err(
                    format!("{path}.body"),
                    format!(
                        "must hold the string \"{}\" exactly once (found {found}): it is where the rows go",
                        super::ROWS_MARKER
                    ),
                );
            }
            if !s.results_pointer.is_empty() && !s.results_pointer.starts_with('/') {
                err(
                    format!("{path}.results_pointer"),
                    "must be a JSON pointer starting with `/`".into(),
                );
            }
            &s.replicas
        }
        EndpointSpec::Onnx(s) => {
            if s.repository.trim().is_empty() {
                err(
                    format!("{path}.repository"),
                    "is empty: expected a model repository folder".into(),
                );
            }
            return;
        }
    };
    if replicas.is_empty() {
        err(
            format!("{path}.replicas"),
            "is empty: expected at least one base URL".into(),
        );
    }
    for (i, replica) in replicas.iter().enumerate() {
        if let Err(m) = check_url(replica) {
            err(format!("{path}.replicas[{i}]"), m.to_string());
        }
    }
}

/// Why a replica base URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    /// Not a URL.
    #[error("invalid URL: {0}")]
    Invalid(#[source] <reqwest::Url as std::str::FromStr>::Err),
    /// A scheme other than http and https.
    #[error("scheme `{0}` is not http or https")]
    Scheme(String),
    /// No host.
    #[error("the URL has no host")]
    NoHost,
    /// A user name or password in the URL.
    #[error(
        "credentials in the URL are not allowed (they would appear in logs and metric labels); put them in the credential fields (`headers`, `api_key`, or `username` and `password`)"
    )]
    Credentials,
    /// A query or fragment.
    #[error("a replica base URL has no query or fragment")]
    QueryOrFragment,
}

/// A replica base URL: `http://` or `https://`, a host, no credentials (they would end up in
/// logs and metrics labels: use headers or `api_key`), no query or fragment.
pub(crate) fn check_url(url: &str) -> Result<(), UrlError> {
    let parsed = reqwest::Url::parse(url).map_err(UrlError::Invalid)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(parsed.scheme().to_string()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::Credentials);
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(UrlError::QueryOrFragment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1:8000").is_ok());
        assert!(check_url("https://api.openai.com/v1").is_ok());
        assert!(
            check_url("ftp://x")
                .unwrap_err()
                .to_string()
                .contains("scheme")
        );
        assert!(
            check_url("http://user:pw@x")
                .unwrap_err()
                .to_string()
                .contains("credentials")
        );
        assert!(check_url("not a url").is_err());
        assert!(check_url("http://x/?a=1").is_err());
    }
}
