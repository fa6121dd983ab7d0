//! Open Inference Protocol v2 routes: model (version) metadata, readiness and `infer`.
//! OIP v2 versions are forwarded to as they are; versions of another tensor protocol are
//! reached through [`crate::gateway::translate`].

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Target, passthrough, pick_version, protocol_name, proxy_error, read_body};
use crate::gateway::proxy::{self, Forward};
use crate::gateway::response::{error, not_found};
use crate::gateway::route_table::Handler;
use crate::gateway::{Gateway, oip_codec, translate};
use crate::spec::{EndpointSpec, OipV2Spec, Secret};

/// One OIP v2 request, once its model and version are known.
struct Call<'a> {
    gateway: &'a Gateway,
    handler: Handler,
    /// The model as the client named it (the gateway's name).
    model: &'a str,
    target: Target<'a>,
    headers: &'a HeaderMap,
    body: Bytes,
}

/// `GET .../{model}[/versions/{version}][/ready]` and `POST .../infer`.
pub(crate) async fn handle(
    gateway: &Gateway,
    handler: Handler,
    parts: &Parts,
    body: Body,
) -> Response {
    let Some((model, version)) = path_params(parts) else {
        return error(StatusCode::NOT_FOUND, "no such model");
    };
    let body = match read_body(gateway, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let Some(target) = pick_version(gateway, &model, version.as_deref()) else {
        return not_found();
    };
    let Some(endpoint) = gateway.endpoint(&model, &target.client.version) else {
        return not_found();
    };
    if handler == Handler::ModelReady {
        return ready(&target);
    }
    let call = Call {
        gateway,
        handler,
        model: &model,
        target,
        headers: &parts.headers,
        body,
    };
    match endpoint {
        EndpointSpec::OipV2(oip) => forward(call, oip).await,
        other => translated(call, other).await,
    }
}

/// `(model, version)` of a `/v2/models/{model}[/versions/{version}]...` path.
fn path_params(parts: &Parts) -> Option<(String, Option<String>)> {
    let rest = parts.uri.path().strip_prefix("/v2/models/")?;
    let mut segments = rest.split('/');
    let model = segments.next()?.to_string();
    let version = match (segments.next(), segments.next()) {
        (Some("versions"), Some(v)) => Some(v.to_string()),
        _ => None,
    };
    Some((model, version))
}

/// Ready while at least one replica of the version is not ejected.
fn ready(target: &Target<'_>) -> Response {
    let now = std::time::Instant::now();
    let ready = target
        .client
        .balancer
        .replicas()
        .iter()
        .any(|r| !r.is_ejected(now));
    if ready {
        axum::Json(json!({ "ready": true })).into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "every replica is ejected")
    }
}

/// A version of another protocol: metadata and `infer` through its translation, or 400 when
/// it has none (chat and embeddings versions answer on the OpenAI-compatible routes).
async fn translated(call: Call<'_>, endpoint: &EndpointSpec) -> Response {
    let Call {
        gateway,
        handler,
        model,
        target: Target { model: m, client },
        headers,
        body,
    } = call;
    let versions = || {
        m.router
            .versions
            .iter()
            .map(|v| v.version.to_string())
            .collect()
    };
    let platform = format!("streamgate/{}", protocol_name(endpoint));
    let translation = gateway
        .translations
        .get(&(model.to_string(), client.version.to_string()));
    match (handler, translation) {
        (Handler::ModelMetadata, Some(t)) => {
            axum::Json(translate::metadata(model, versions(), &platform, t)).into_response()
        }
        (Handler::ModelMetadata, None) => axum::Json(json!({
            "name": model,
            "versions": versions(),
            "platform": platform,
        }))
        .into_response(),
        (_, Some(t)) => {
            translate::infer(&client, m.policy.deadline, model, t, headers, &body).await
        }
        (_, None) => error(
            StatusCode::BAD_REQUEST,
            &format!(
                "version {} of {model} speaks {}: call it through the OpenAI-compatible routes",
                client.version,
                protocol_name(endpoint)
            ),
        ),
    }
}

/// An OIP v2 version: the request goes to the backend's model (and version) as it came.
async fn forward(call: Call<'_>, oip: &OipV2Spec) -> Response {
    let backend_name = oip.model_name.as_deref().unwrap_or(call.model);
    let mut path = format!("v2/models/{backend_name}");
    if let Some(v) = &oip.model_version {
        path.push_str(&format!("/versions/{v}"));
    }
    let headers = backend_headers(oip, call.headers);
    let request = match call.handler {
        Handler::Infer => {
            path.push_str("/infer");
            Forward {
                path: &path,
                body: Some(call.body),
                headers: &headers,
            }
        }
        _ => Forward {
            path: &path,
            body: None,
            headers: &headers,
        },
    };
    let Target { model: m, client } = call.target;
    match proxy::forward(&client, &m.policy, request).await {
        Ok(response)
            if call.handler == Handler::ModelMetadata && response.status().is_success() =>
        {
            renamed_metadata(response, call.model).await
        }
        Ok(response) => passthrough(response),
        Err(e) => proxy_error(e),
    }
}

/// The version's configured headers, and the binary tensor header when the request has one.
fn backend_headers(oip: &OipV2Spec, request_headers: &HeaderMap) -> Vec<(String, Secret)> {
    let mut headers: Vec<(String, Secret)> = oip
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // A binary tensor request goes to the server as it came; the server reads the header.
    if let Some(length) = request_headers
        .get(oip_codec::HEADER_LENGTH)
        .and_then(|v| v.to_str().ok())
    {
        headers.push((
            oip_codec::HEADER_LENGTH.to_string(),
            Secret::new(length.to_string()),
        ));
    }
    headers
}

/// The backend's metadata presenting the gateway's model name, not the backend's.
async fn renamed_metadata(response: reqwest::Response, model: &str) -> Response {
    let meta = response
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    match meta {
        Some(mut meta) => {
            meta["name"] = json!(model);
            axum::Json(meta).into_response()
        }
        None => error(StatusCode::BAD_GATEWAY, "the model's metadata is not JSON"),
    }
}
