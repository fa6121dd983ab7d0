//! OpenAI-compatible routes: `POST /v1/chat/completions` (streamed answers pass through as
//! server-sent events) and `POST /v1/embeddings`, routed by the body's `model`, which is also
//! what the caller's scope is checked against.

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use bytes::Bytes;

use super::{Target, passthrough, pick_version, protocol_name, proxy_error, read_body};
use crate::gateway::Gateway;
use crate::gateway::auth::{Policy, Principal, Refusal};
use crate::gateway::openai_body::OpenAiBody;
use crate::gateway::proxy::{self, Forward};
use crate::gateway::response::{error, not_found, refusal};
use crate::gateway::route_table::Handler;
use crate::spec::{EndpointSpec, Secret};

/// Chat completions or embeddings, to the version the model's weights choose.
pub(crate) async fn handle(
    gateway: &Gateway,
    handler: Handler,
    parts: &Parts,
    body: Body,
) -> Response {
    let principal = parts.extensions.get::<Principal>().cloned();
    let body = match read_body(gateway, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let request = match OpenAiBody::parse(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let Some(model) = request.model() else {
        return error(StatusCode::BAD_REQUEST, "`model` is missing");
    };
    // Authorization by the body's model, before anything is sent upstream.
    if !principal.is_some_and(|p| p.allows(Policy::Infer, Some(&model))) {
        return refusal(Refusal::Forbidden);
    }
    let Some(Target { model: m, client }) = pick_version(gateway, &model, None) else {
        return not_found();
    };
    let (backend_model, api_key, path) = match (gateway.endpoint(&model, &client.version), handler)
    {
        (Some(EndpointSpec::OpenaiChat(c)), Handler::Chat) => {
            (c.model.clone(), c.api_key.clone(), "chat/completions")
        }
        (Some(EndpointSpec::OpenaiEmbeddings(e)), Handler::Embeddings) => {
            (e.model.clone(), e.api_key.clone(), "embeddings")
        }
        (Some(other), _) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "model {model} (version {}) speaks {}, not this API",
                    client.version,
                    protocol_name(other)
                ),
            );
        }
        (None, _) => return not_found(),
    };
    let headers: Vec<(String, Secret)> = api_key
        .map(|k| {
            vec![(
                "authorization".to_string(),
                Secret::new(format!("Bearer {}", k.expose())),
            )]
        })
        .unwrap_or_default();
    let forward = Forward {
        path,
        body: Some(Bytes::from(request.with_model(&backend_model))),
        headers: &headers,
    };
    match proxy::forward(&client, &m.policy, forward).await {
        Ok(response) => passthrough(response),
        Err(e) => proxy_error(e),
    }
}
