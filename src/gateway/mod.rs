//! The inference gateway (`streamgate serve`): one standard API in front of the model
//! registry, sharing its routing (weights), balancing, retries and ejection with pipelines.
//!
//! - Open Inference Protocol v2 REST: health, model metadata and readiness, and `infer`,
//!   forwarded to OIP v2 backends (Triton, KServe, MLServer).
//! - OpenAI-compatible `POST /v1/chat/completions` (streamed answers pass through as
//!   server-sent events) and `POST /v1/embeddings`, routed by the body's `model`.
//!
//! Every route comes from [`ROUTES`] with its access [`Policy`]; only liveness is public.

pub mod admin;
pub mod auth;
pub mod http;
pub mod jwt;
pub mod proxy;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::inference::ModelRegistry;
use crate::inference::model::VersionClient;
use crate::spec::{EndpointSpec, GatewaySpec, ModelSpec, Secret};
use crate::telemetry::Metrics;
use auth::{ApiKeys, Policy, Principal, Refusal};
use proxy::{Forward, ProxyError};

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `GET /v2/health/live`.
    Live,
    /// `GET /v2/health/ready`.
    Ready,
    /// Model (version) metadata.
    ModelMetadata,
    /// Model (version) readiness.
    ModelReady,
    /// OIP v2 inference.
    Infer,
    /// OpenAI chat completions.
    Chat,
    /// OpenAI embeddings.
    Embeddings,
    /// Prometheus metrics.
    Metrics,
    /// Models, versions, weights and replica health.
    AdminModels,
    /// Change a model's traffic weights.
    SetWeights,
    /// Restore a model's previous weights.
    Rollback,
    /// Recent admin changes.
    AdminAudit,
}

/// One route: method, path, access policy, handler.
#[derive(Debug, Clone, Copy)]
pub struct RouteDef {
    /// HTTP method.
    pub method: &'static str,
    /// Path pattern (axum syntax).
    pub path: &'static str,
    /// Who may call it.
    pub policy: Policy,
    /// What it does.
    pub handler: Handler,
}

/// Every route of the gateway. The router is built from this table only.
pub const ROUTES: &[RouteDef] = &[
    RouteDef {
        method: "GET",
        path: "/v2/health/live",
        policy: Policy::Public,
        handler: Handler::Live,
    },
    RouteDef {
        method: "GET",
        path: "/v2/health/ready",
        policy: Policy::Authenticated,
        handler: Handler::Ready,
    },
    RouteDef {
        method: "GET",
        path: "/v2/models/{model}",
        policy: Policy::Infer,
        handler: Handler::ModelMetadata,
    },
    RouteDef {
        method: "GET",
        path: "/v2/models/{model}/ready",
        policy: Policy::Infer,
        handler: Handler::ModelReady,
    },
    RouteDef {
        method: "GET",
        path: "/v2/models/{model}/versions/{version}",
        policy: Policy::Infer,
        handler: Handler::ModelMetadata,
    },
    RouteDef {
        method: "GET",
        path: "/v2/models/{model}/versions/{version}/ready",
        policy: Policy::Infer,
        handler: Handler::ModelReady,
    },
    RouteDef {
        method: "POST",
        path: "/v2/models/{model}/infer",
        policy: Policy::Infer,
        handler: Handler::Infer,
    },
    RouteDef {
        method: "POST",
        path: "/v2/models/{model}/versions/{version}/infer",
        policy: Policy::Infer,
        handler: Handler::Infer,
    },
    RouteDef {
        method: "POST",
        path: "/v1/chat/completions",
        policy: Policy::Infer,
        handler: Handler::Chat,
    },
    RouteDef {
        method: "POST",
        path: "/v1/embeddings",
        policy: Policy::Infer,
        handler: Handler::Embeddings,
    },
    RouteDef {
        method: "GET",
        path: "/metrics",
        policy: Policy::AdminRead,
        handler: Handler::Metrics,
    },
    RouteDef {
        method: "GET",
        path: "/admin/models",
        policy: Policy::AdminRead,
        handler: Handler::AdminModels,
    },
    RouteDef {
        method: "PUT",
        path: "/admin/models/{model}/weights",
        policy: Policy::AdminWrite,
        handler: Handler::SetWeights,
    },
    RouteDef {
        method: "POST",
        path: "/admin/models/{model}/rollback",
        policy: Policy::AdminWrite,
        handler: Handler::Rollback,
    },
    RouteDef {
        method: "GET",
        path: "/admin/audit",
        policy: Policy::AdminRead,
        handler: Handler::AdminAudit,
    },
];

/// Shared state of the gateway.
pub struct Gateway {
    keys: ApiKeys,
    registry: Arc<ModelRegistry>,
    specs: BTreeMap<String, ModelSpec>,
    metrics: Metrics,
    max_body_bytes: usize,
    admin: admin::Admin,
    /// Inference requests in flight across all keys (load shedding).
    infer_slots: Arc<tokio::sync::Semaphore>,
    /// TLS configuration of the listener.
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Time allowed for a request's headers, and for its body.
    client_timeout: std::time::Duration,
}

type Shared = Arc<Gateway>;

impl Gateway {
    /// Builds the gateway over an already loaded spec (models merged, paths resolved).
    pub fn new(
        spec: &GatewaySpec,
        base_dir: &std::path::Path,
        metrics: Metrics,
    ) -> Result<Gateway, String> {
        let mut keys = ApiKeys::new(&spec.auth.api_keys)?;
        if let Some(jwt) = &spec.auth.jwt {
            keys = keys.with_jwt(jwt::JwtVerifier::new(jwt, base_dir)?);
        }
        let prepared =
            crate::inference::registry::prepare(&spec.models, base_dir).map_err(|problems| {
                problems
                    .into_iter()
                    .map(|(p, m)| format!("{p}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
        let registry = ModelRegistry::build(&spec.models, &prepared, &metrics.models);
        Ok(Gateway {
            keys,
            registry,
            specs: spec.models.clone(),
            metrics,
            max_body_bytes: spec.max_body_bytes,
            admin: admin::Admin::new(spec.audit_log.as_ref().map(|p| base_dir.join(p)))?,
            infer_slots: Arc::new(tokio::sync::Semaphore::new(
                spec.max_concurrent_infer.max(1),
            )),
            tls: match &spec.tls {
                Some(t) => Some(Arc::new(tls::server_config(t, base_dir)?)),
                None => None,
            },
            client_timeout: spec.client_timeout,
        })
    }
}

impl Gateway {
    /// The endpoint spec of a model's version, by name.
    fn endpoint(&self, model: &str, version: &str) -> Option<&EndpointSpec> {
        self.specs
            .get(model)?
            .versions
            .iter()
            .find(|v| v.name == version)
            .map(|v| &v.endpoint)
    }
}

/// The router: every route of [`ROUTES`] behind its policy, and a body limit (413).
pub fn router(gateway: Arc<Gateway>) -> Router {
    let max_body_bytes = gateway.max_body_bytes;
    let mut router = Router::new();
    for def in ROUTES {
        let handler = def.handler;
        let method_router: MethodRouter<Shared> = match def.method {
            "GET" => get(move |state, request| dispatch(handler, state, request)),
            "PUT" => put(move |state, request| dispatch(handler, state, request)),
            _ => post(move |state, request| dispatch(handler, state, request)),
        };
        let policy = def.policy;
        router = router.route(
            def.path,
            method_router.route_layer(middleware::from_fn_with_state(
                gateway.clone(),
                move |state, request, next| authorize(policy, state, request, next),
            )),
        );
    }
    router
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(gateway)
}

/// Authentication for every protected route, and authorization where the model is in the
/// path. Routes that name the model in the body check the scope in the handler, before any
/// upstream work, with the [`Principal`] stored here.
async fn authorize(
    policy: Policy,
    State(gateway): State<Shared>,
    mut request: Request,
    next: Next,
) -> Response {
    if policy == Policy::Public {
        return next.run(request).await;
    }
    let principal = match gateway.keys.authenticate(request.headers()) {
        Ok(p) => p,
        Err(r) => return refusal(r),
    };
    let path_model = model_in_path(request.uri().path());
    let body_routed = path_model.is_none() && policy == Policy::Infer;
    if !body_routed && !principal.allows(policy, path_model.as_deref()) {
        return refusal(Refusal::Forbidden);
    }
    // Limits apply to inference only: admin, health and metrics stay available under load.
    let mut held = Vec::new();
    if policy == Policy::Infer {
        if let Err(wait) = principal.limits.take_token() {
            return too_many(
                StatusCode::TOO_MANY_REQUESTS,
                "the API key's rate limit is reached",
                wait,
            );
        }
        match principal.limits.slot() {
            Ok(slot) => held.extend(slot),
            Err(auth::AllTaken) => {
                return too_many(
                    StatusCode::TOO_MANY_REQUESTS,
                    "the API key's concurrency limit is reached",
                    std::time::Duration::from_secs(1),
                );
            }
        }
        match gateway.infer_slots.clone().try_acquire_owned() {
            Ok(slot) => held.push(slot),
            Err(_) => {
                return too_many(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the gateway is at capacity",
                    std::time::Duration::from_secs(1),
                );
            }
        }
    }
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    drop(held);
    response
}

/// A fast refusal under load, with `Retry-After` in whole seconds (at least 1).
fn too_many(status: StatusCode, message: &str, wait: std::time::Duration) -> Response {
    let mut response = error(status, message);
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(value) = seconds.to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The `{model}` of `/admin/models/{model}/...`.
fn admin_model(path: &str) -> String {
    path.strip_prefix("/admin/models/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string()
}

fn model_in_path(path: &str) -> Option<String> {
    path.strip_prefix("/v2/models/")
        .and_then(|rest| rest.split('/').next())
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::Unauthenticated => {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or invalid API key");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
            response
        }
        Refusal::Forbidden => error(StatusCode::FORBIDDEN, "the API key lacks the scope"),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn dispatch(handler: Handler, State(gateway): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let params = path_params(&parts);
    let principal = parts.extensions.get::<Principal>().cloned();
    match handler {
        Handler::Live => axum::Json(json!({ "live": true })).into_response(),
        Handler::Ready => axum::Json(json!({ "ready": true })).into_response(),
        Handler::Metrics => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            gateway.metrics.render(),
        )
            .into_response(),
        Handler::AdminModels => admin_models(&gateway),
        Handler::AdminAudit => {
            axum::Json(json!({ "entries": gateway.admin.entries() })).into_response()
        }
        Handler::SetWeights | Handler::Rollback => {
            let model = admin_model(parts.uri.path());
            let who = principal.map(|p| p.name).unwrap_or_default();
            let result = if handler == Handler::Rollback {
                gateway.admin.rollback(&gateway.registry, &who, &model)
            } else {
                let body = match read_body(&gateway, body).await {
                    Ok(b) => b,
                    Err(response) => return response,
                };
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Weights {
                    weights: BTreeMap<String, u32>,
                }
                match serde_json::from_slice::<Weights>(&body) {
                    Ok(w) => gateway
                        .admin
                        .set_weights(&gateway.registry, &who, &model, &w.weights),
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            &format!("expected {{\"weights\": {{\"<version>\": <weight>}}}}: {e}"),
                        );
                    }
                }
            };
            match result {
                Ok(weights) => {
                    axum::Json(json!({ "model": model, "weights": weights })).into_response()
                }
                Err(admin::AdminError::NotFound) => not_found(),
                Err(admin::AdminError::Invalid(status, message)) => error(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                    &message,
                ),
                Err(admin::AdminError::Audit(message)) => {
                    error(StatusCode::INTERNAL_SERVER_ERROR, &message)
                }
            }
        }
        Handler::ModelMetadata | Handler::ModelReady | Handler::Infer => {
            let Some((model, version)) = params else {
                return error(StatusCode::NOT_FOUND, "no such model");
            };
            let body = match read_body(&gateway, body).await {
                Ok(b) => b,
                Err(response) => return response,
            };
            oip(&gateway, handler, &model, version.as_deref(), body).await
        }
        Handler::Chat | Handler::Embeddings => {
            let body = match read_body(&gateway, body).await {
                Ok(b) => b,
                Err(response) => return response,
            };
            openai(&gateway, handler, principal, body).await
        }
    }
}

/// Reads a request body within the size limit (413) and the client timeout (408).
async fn read_body(gateway: &Gateway, body: Body) -> Result<Bytes, Response> {
    match tokio::time::timeout(
        gateway.client_timeout,
        axum::body::to_bytes(body, gateway.max_body_bytes),
    )
    .await
    {
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

/// `(model, version)` of a `/v2/models/{model}[/versions/{version}]...` path.
fn path_params(parts: &axum::http::request::Parts) -> Option<(String, Option<String>)> {
    let rest = parts.uri.path().strip_prefix("/v2/models/")?;
    let mut segments = rest.split('/');
    let model = segments.next()?.to_string();
    let version = match (segments.next(), segments.next()) {
        (Some("versions"), Some(v)) => Some(v.to_string()),
        _ => None,
    };
    Some((model, version))
}

/// A model and the version a request goes to.
struct Target<'a> {
    model: &'a Arc<crate::inference::model::Model>,
    client: Arc<VersionClient>,
}

/// The version to call: the named one, or one chosen by the traffic weights. `None` when the
/// model or version does not exist (404).
fn pick_version<'a>(
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

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such model or version")
}

async fn oip(
    gateway: &Gateway,
    handler: Handler,
    model: &str,
    version: Option<&str>,
    body: Bytes,
) -> Response {
    let Some(Target { model: m, client }) = pick_version(gateway, model, version) else {
        return not_found();
    };
    let Some(endpoint) = gateway.endpoint(model, &client.version) else {
        return not_found();
    };
    if handler == Handler::ModelReady {
        let now = std::time::Instant::now();
        let ready = client
            .balancer
            .replicas()
            .iter()
            .any(|r| !r.is_ejected(now));
        return if ready {
            axum::Json(json!({ "ready": true })).into_response()
        } else {
            error(StatusCode::SERVICE_UNAVAILABLE, "every replica is ejected")
        };
    }
    let EndpointSpec::OipV2(oip) = endpoint else {
        if handler == Handler::ModelMetadata {
            return axum::Json(json!({
                "name": model,
                "versions": m.router.versions.iter().map(|v| v.version.to_string()).collect::<Vec<_>>(),
                "platform": format!("streamgate/{}", protocol_name(endpoint)),
            }))
            .into_response();
        }
        return error(
            StatusCode::NOT_IMPLEMENTED,
            &format!(
                "OIP v2 inference is forwarded to OIP v2 backends; version {} speaks {}",
                client.version,
                protocol_name(endpoint)
            ),
        );
    };
    let backend_name = oip.model_name.as_deref().unwrap_or(model);
    let mut path = format!("v2/models/{backend_name}");
    if let Some(v) = &oip.model_version {
        path.push_str(&format!("/versions/{v}"));
    }
    let headers: Vec<(String, Secret)> = oip
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let request = match handler {
        Handler::Infer => {
            path.push_str("/infer");
            Forward {
                path: &path,
                body: Some(body),
                headers: &headers,
            }
        }
        _ => Forward {
            path: &path,
            body: None,
            headers: &headers,
        },
    };
    match proxy::forward(&client, &m.policy, request).await {
        Ok(response) if handler == Handler::ModelMetadata && response.status().is_success() => {
            // Present the gateway's model name, not the backend's.
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
        Ok(response) => passthrough(response),
        Err(e) => proxy_error(e),
    }
}

async fn openai(
    gateway: &Gateway,
    handler: Handler,
    principal: Option<Principal>,
    body: Bytes,
) -> Response {
    let Ok(mut request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not a JSON object");
    };
    let Some(model) = request["model"].as_str().map(str::to_string) else {
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
    request["model"] = json!(backend_model);
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
        body: Some(Bytes::from(request.to_string())),
        headers: &headers,
    };
    match proxy::forward(&client, &m.policy, forward).await {
        Ok(response) => passthrough(response),
        Err(e) => proxy_error(e),
    }
}

/// The model's answer, status and content type kept, body streamed through.
fn passthrough(response: reqwest::Response) -> Response {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .cloned();
    let mut out = Response::new(Body::from_stream(response.bytes_stream()));
    *out.status_mut() = status;
    if let Some(ct) = content_type
        && let Ok(value) = header::HeaderValue::from_bytes(ct.as_bytes())
    {
        out.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    out
}

fn proxy_error(e: ProxyError) -> Response {
    error(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY),
        &e.message,
    )
}

fn protocol_name(endpoint: &EndpointSpec) -> &'static str {
    match endpoint {
        EndpointSpec::OipV2(_) => "oip_v2",
        EndpointSpec::OpenaiChat(_) => "openai_chat",
        EndpointSpec::OpenaiEmbeddings(_) => "openai_embeddings",
        EndpointSpec::TfServing(_) => "tf_serving",
        EndpointSpec::CustomJson(_) => "custom_json",
        EndpointSpec::Onnx(_) => "onnx",
    }
}

fn admin_models(gateway: &Gateway) -> Response {
    let now = std::time::Instant::now();
    let models: Vec<Value> = gateway
        .registry
        .models()
        .map(|m| {
            let weights = m.router.weights();
            json!({
                "name": &*m.name,
                "versions": m.router.versions.iter().zip(weights).map(|(v, w)| json!({
                    "name": &*v.version,
                    "weight": w,
                    "replicas": v.balancer.replicas().iter().map(|r| json!({
                        "address": &*r.address,
                        "in_flight": r.in_flight(),
                        "ejected": r.is_ejected(now),
                        "times_ejected": r.times_ejected(),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(json!({ "models": models })).into_response()
}

/// Binds `addr` and serves until `shutdown`, over TLS when the gateway has a certificate.
/// Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let tls = gateway.tls.clone();
    let timeout = gateway.client_timeout;
    let app = router(gateway);
    let handle = match tls {
        Some(config) => {
            let listener = tls::TlsListener::new(listener, (*config).clone())?;
            tokio::spawn(http::serve(listener, app, timeout, shutdown))
        }
        None => tokio::spawn(http::serve(listener, app, timeout, shutdown)),
    };
    Ok((bound, handle))
}

/// Method of a route definition as an [`axum::http::Method`].
pub fn method(def: &RouteDef) -> Method {
    match def.method {
        "GET" => Method::GET,
        "PUT" => Method::PUT,
        _ => Method::POST,
    }
}

/// Headers with an API key, for tests and clients.
pub fn bearer(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = format!("Bearer {key}").parse() {
        h.insert(header::AUTHORIZATION, v);
    }
    h
}
