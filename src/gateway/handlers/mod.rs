//! What answers an admitted request: OIP v2 ([`oip`]), OpenAI-compatible ([`openai`]) and
//! admin ([`admin`]) handlers, and the pieces they share: the body reader with its limits,
//! the choice of a model's version, the pass-through of a model's answer, and error bodies.

pub(crate) mod admin;
pub(crate) mod oip;
pub(crate) mod openai;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::proxy::ProxyError;
use super::response::error;
use super::route_table::Handler;
use super::{Gateway, oip_codec};
use crate::inference::model::{Model, VersionClient};
use crate::spec::EndpointSpec;

/// Answers that read nothing from the request: liveness, readiness, metrics, pipeline states.
pub(crate) fn fixed(handler: Handler, gateway: &Gateway) -> Response {
    match handler {
        Handler::Healthz => "ok\n".into_response(),
        Handler::Readyz => {
            if gateway
                .pipelines
                .as_ref()
                .is_some_and(|p| p.status().ready())
            {
                (StatusCode::OK, "ready\n").into_response()
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
            }
        }
        Handler::PipelineStates => match &gateway.pipelines {
            Some(p) => axum::Json(p.status().snapshot()).into_response(),
            None => axum::Json(json!({})).into_response(),
        },
        Handler::Metrics => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            gateway.metrics.render(),
        )
            .into_response(),
        Handler::Ready => axum::Json(json!({ "ready": true })).into_response(),
        Handler::Live => axum::Json(json!({ "live": true })).into_response(),
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// Reads a request body within the size limit (413) and the client timeout (408).
pub(crate) async fn read_body(gateway: &Gateway, body: Body) -> Result<Bytes, Response> {
    let mut reading = std::pin::pin!(axum::body::to_bytes(body, gateway.max_body_bytes));
    // Usually the body came with the headers: then no timer is needed (arming one costs a
    // cross-thread wake-up per request).
    let read = match futures::poll!(reading.as_mut()) {
        std::task::Poll::Ready(read) => Ok(read),
        std::task::Poll::Pending => tokio::time::timeout(gateway.client_timeout, reading).await,
    };
    match read {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )),
    }
}

/// A model and the version a request goes to.
pub(crate) struct Target<'a> {
    pub(crate) model: &'a Arc<Model>,
    pub(crate) client: Arc<VersionClient>,
}

/// The version to call: the named one, or one chosen by the traffic weights. `None` when the
/// model or version does not exist (404).
pub(crate) fn pick_version<'a>(
    gateway: &'a Gateway,
    model: &str,
    version: Option<&str>,
) -> Option<Target<'a>> {
    let m = gateway.registry.get(model)?;
    let index = match version {
        Some(v) => m.router.versions.iter().position(|c| &*c.version == v)?,
        None => m.router.choose(None),
    };
    let client = m.router.versions.get(index)?.clone();
    Some(Target { model: m, client })
}

/// The model's answer, status and content type kept, body streamed through as it arrives.
pub(crate) fn passthrough(response: reqwest::Response) -> Response {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .cloned();
    let binary_length = response.headers().get(oip_codec::HEADER_LENGTH).cloned();
    // The body keeps its length: a sized answer goes out with `Content-Length` in one write
    // with the headers, and only an unsized one (server-sent events) is sent chunked.
    let body = axum::http::Response::<reqwest::Body>::from(response).into_body();
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = status;
    if let Some(ct) = content_type
        && let Ok(value) = header::HeaderValue::from_bytes(ct.as_bytes())
    {
        out.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    if let Some(length) = binary_length
        && let Ok(value) = header::HeaderValue::from_bytes(length.as_bytes())
    {
        out.headers_mut().insert(
            header::HeaderName::from_static(oip_codec::HEADER_LENGTH),
            value,
        );
    }
    out
}

/// The answer when forwarding failed after retries (502, 503 or 504).
pub(crate) fn proxy_error(e: ProxyError) -> Response {
    error(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY),
        &e.message,
    )
}

/// The name of a version's protocol, as the model file spells it.
pub(crate) fn protocol_name(endpoint: &EndpointSpec) -> &'static str {
    match endpoint {
        EndpointSpec::OipV2(_) => "oip_v2",
        EndpointSpec::OpenaiChat(_) => "openai_chat",
        EndpointSpec::OpenaiEmbeddings(_) => "openai_embeddings",
        EndpointSpec::TfServing(_) => "tf_serving",
        EndpointSpec::CustomJson(_) => "custom_json",
        EndpointSpec::Onnx(_) => "onnx",
    }
}
