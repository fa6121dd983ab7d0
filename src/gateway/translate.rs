//! OIP v2 in front of versions that speak another tensor protocol (TF Serving, custom JSON,
//! in-process ONNX): the request's tensors become the columns of one batch, the version is
//! called through the same client as pipelines (balancing, retries, deadline, metrics), and its
//! answer columns become OIP v2 output tensors.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::oip_codec::{self, HEADER_LENGTH, OutputTensor};
use crate::inference::ErrorKind;
use crate::inference::protocol::json_values::{oip_datatype, output_data_type};
use crate::inference::protocol::{Contract, OutputBinding, Selector, SelectorSyntax};
use crate::inference::registry::PreparedBackends;
use crate::spec::{EndpointSpec, ModelSpec, OutputType};

/// What the gateway answers for one translated version.
#[derive(Debug, Clone)]
pub(crate) struct Translation {
    /// Output tensors, in order; empty when none are declared (infer answers 501).
    pub outputs: Vec<OutputBinding>,
    /// Declared inputs for the metadata (ONNX models describe theirs).
    pub inputs: Vec<Value>,
}

/// Translations by (model, version).
pub(crate) type Translations = BTreeMap<(String, String), Translation>;

/// The translation of every version whose protocol is not OIP v2 or OpenAI.
pub(crate) fn build(
    specs: &BTreeMap<String, ModelSpec>,
    prepared: &PreparedBackends,
) -> Translations {
    let mut out = Translations::new();
    for (model, spec) in specs {
        for version in &spec.versions {
            let syntax = match &version.endpoint {
                EndpointSpec::TfServing(_) | EndpointSpec::Onnx(_) => SelectorSyntax::Tensor,
                EndpointSpec::CustomJson(_) => SelectorSyntax::Pointer,
                _ => continue,
            };
            let onnx = prepared
                .get(model)
                .and_then(|v| v.get(&version.name))
                .and_then(|p| p.onnx.clone());
            // Validation checked the selectors; one that does not parse is skipped.
            let mut outputs: Vec<OutputBinding> = version
                .oip_outputs
                .iter()
                .filter_map(|o| {
                    Some(OutputBinding {
                        column: o.column.clone(),
                        selector: Selector::parse(&o.from, syntax).ok()?,
                        data_type: o.data_type,
                    })
                })
                .collect();
            let mut inputs = Vec::new();
            if let Some(onnx) = &onnx {
                inputs = onnx.inputs().iter().map(describe).collect();
                if outputs.is_empty() {
                    outputs = onnx.outputs().iter().filter_map(one_per_row).collect();
                }
            }
            out.insert(
                (model.clone(), version.name.clone()),
                Translation { outputs, inputs },
            );
        }
    }
    out
}

fn describe(t: &crate::inference::onnx::TensorInfo) -> Value {
    json!({
        "name": t.name,
        "datatype": onnx_datatype(t.datum_type),
        "shape": t.shape.iter().map(|d| d.unwrap_or(-1)).collect::<Vec<_>>(),
    })
}

fn onnx_datatype(dt: tract_onnx::prelude::DatumType) -> &'static str {
    use tract_onnx::prelude::DatumType::*;
    match dt {
        F32 => "FP32",
        F64 => "FP64",
        I64 => "INT64",
        I32 => "INT32",
        Bool => "BOOL",
        String => "BYTES",
        _ => "UNSUPPORTED",
    }
}

/// An ONNX output with one value per row (`[N]` or `[N, 1]`) of a type a column can hold.
fn one_per_row(t: &crate::inference::onnx::TensorInfo) -> Option<OutputBinding> {
    use tract_onnx::prelude::DatumType::*;
    let per_row = t.shape.iter().skip(1).all(|d| *d == Some(1));
    let data_type = match t.datum_type {
        F32 => OutputType::Float32,
        F64 => OutputType::Float64,
        I64 | I32 => OutputType::Int64,
        Bool => OutputType::Boolean,
        String => OutputType::String,
        _ => return None,
    };
    per_row.then(|| OutputBinding {
        column: t.name.clone(),
        selector: Selector::Tensor {
            name: t.name.clone(),
            index: None,
        },
        data_type,
    })
}

/// OIP v2 metadata of a translated version.
pub(crate) fn metadata(
    model: &str,
    versions: Vec<String>,
    platform: &str,
    t: &Translation,
) -> Value {
    json!({
        "name": model,
        "versions": versions,
        "platform": platform,
        "inputs": t.inputs,
        "outputs": t.outputs.iter().map(|o| json!({
            "name": o.column,
            "datatype": oip_datatype(&output_data_type(o.data_type)),
            "shape": [-1],
        })).collect::<Vec<_>>(),
    })
}

/// Serves one OIP v2 `infer` call with a translated version.
pub(crate) async fn infer(
    client: &crate::inference::model::VersionClient,
    deadline: std::time::Duration,
    model: &str,
    translation: &Translation,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if translation.outputs.is_empty() {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            &format!(
                "version {} of {model} speaks another protocol and declares no `oip_outputs` to answer OIP v2 calls with",
                client.version
            ),
        );
    }
    let header_length = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()) {
            Some(n) => Some(n),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Inference-Header-Content-Length is not a length",
                );
            }
        },
    };
    let request = match oip_codec::decode_request(body, header_length) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    // Asked-for outputs must exist; none asked means all.
    let mut wanted = Vec::new();
    if request.outputs.is_empty() {
        wanted.extend((0..translation.outputs.len()).map(|i| (i, request.binary_by_default)));
    } else {
        for (name, binary) in &request.outputs {
            match translation.outputs.iter().position(|o| &o.column == name) {
                Some(i) => wanted.push((i, *binary)),
                None => {
                    let known: Vec<&str> = translation
                        .outputs
                        .iter()
                        .map(|o| o.column.as_str())
                        .collect();
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("no output `{name}` (outputs: {})", known.join(", ")),
                    );
                }
            }
        }
    }
    let contract = Contract {
        inputs: request
            .batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
        outputs: translation.outputs.clone(),
    };
    let answer = match client
        .call(&request.batch, &contract, Instant::now() + deadline)
        .await
    {
        Ok(a) => a,
        Err(e) => return error(status_of(e.kind), &e.message),
    };
    let tensors: Vec<OutputTensor<'_>> = wanted
        .iter()
        .map(|(i, binary)| OutputTensor {
            name: &translation.outputs[*i].column,
            values: &answer.columns[*i],
            binary: *binary,
        })
        .collect();
    match oip_codec::encode_response(model, &answer.version, request.id.as_deref(), &tensors) {
        Ok((body, None)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok((body, Some(json_length))) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::HeaderName::from_static(HEADER_LENGTH),
                    json_length.to_string(),
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}

/// The HTTP status for a failed call: the client's fault is 400, the model's 502, its absence
/// 503, its slowness 504.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadInput | ErrorKind::Rejected => StatusCode::BAD_REQUEST,
        ErrorKind::Timeout | ErrorKind::Deadline => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Connect
        | ErrorKind::Unavailable
        | ErrorKind::NoReplica
        | ErrorKind::Saturated
        | ErrorKind::Throttled => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::ServerError | ErrorKind::Contract | ErrorKind::Misconfigured => {
            StatusCode::BAD_GATEWAY
        }
        ErrorKind::Runtime => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}
