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
pub mod allow;
pub mod auth;
mod held_body;
pub mod http;
pub mod jwt;
pub mod oip_codec;
pub(crate) mod openai_body;
pub mod pipelines;
pub mod proxy;
pub mod tls;
pub mod translate;
mod workers;

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
    /// Point a version at other replicas (checked against the allow-list).
    SetReplicas,
    /// Recent admin changes.
    AdminAudit,
    /// Pipelines with state, throughput, lag and errors.
    AdminPipelines,
    /// Pause a pipeline's consumption.
    PausePipeline,
    /// Resume a pipeline's consumption.
    ResumePipeline,
    /// The status page (static HTML and JS; its data comes from the admin routes).
    StatusPage,
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
        method: "PUT",
        path: "/admin/models/{model}/versions/{version}/replicas",
        policy: Policy::AdminWrite,
        handler: Handler::SetReplicas,
    },
    RouteDef {
        method: "GET",
        path: "/admin/audit",
        policy: Policy::AdminRead,
        handler: Handler::AdminAudit,
    },
    RouteDef {
        method: "GET",
        path: "/admin/pipelines",
        policy: Policy::AdminRead,
        handler: Handler::AdminPipelines,
    },
    RouteDef {
        method: "POST",
        path: "/admin/pipelines/{pipeline}/pause",
        policy: Policy::AdminWrite,
        handler: Handler::PausePipeline,
    },
    RouteDef {
        method: "POST",
        path: "/admin/pipelines/{pipeline}/resume",
        policy: Policy::AdminWrite,
        handler: Handler::ResumePipeline,
    },
    // The page shell holds no data and no secret: it asks for an `admin:read` key and reads
    // everything it shows from the admin routes with it. A browser cannot send a bearer
    // header when it opens a URL, so the shell itself must be public.
    RouteDef {
        method: "GET",
        path: "/",
        policy: Policy::Public,
        handler: Handler::StatusPage,
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
    /// Pipelines of this process (`streamgate run --gateway`), if any.
    pipelines: Option<Arc<pipelines::Pipelines>>,
    /// How OIP v2 calls reach versions of other tensor protocols.
    translations: translate::Translations,
    /// Where the admin API may point replicas (also enforced when the model client connects).
    replica_allow_list: Arc<allow::AllowList>,
    /// Threads serving connections.
    workers: std::num::NonZeroUsize,
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
        let translations = translate::build(&spec.models, &prepared);
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
            pipelines: None,
            translations,
            replica_allow_list: allow::AllowList::parse(&spec.replica_allow_list)?
                .enforced_at_connect(),
            workers: spec.workers.unwrap_or_else(|| {
                std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN)
            }),
        })
    }

    /// Serves the admin view of the pipelines of this process: status, pause and resume, and
    /// weight changes that reach their models too.
    pub fn with_pipelines(mut self, status: crate::runtime::StatusBoard) -> Self {
        self.pipelines = Some(Arc::new(pipelines::Pipelines::new(
            status,
            self.metrics.clone(),
        )));
        self
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
        let route = def.path;
        router = router.route(
            def.path,
            method_router.route_layer(middleware::from_fn_with_state(
                gateway.clone(),
                move |state, request, next| authorize(route, policy, state, request, next),
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
/// upstream work, with the [`Principal`] stored here. Every request is counted and logged.
async fn authorize(
    route: &'static str,
    policy: Policy,
    State(gateway): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let (response, who) = admit(policy, &gateway, request, next).await;
    let status = response.status();
    gateway
        .metrics
        .gateway
        .observe(route, status, started.elapsed());
    tracing::info!(
        target: "streamgate::access",
        route,
        status = status.as_u16(),
        who = who.as_deref().unwrap_or("-"),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// Runs the handler when the credential allows it and the limits admit it. Returns the
/// response and the credential's name.
async fn admit(
    policy: Policy,
    gateway: &Shared,
    mut request: Request,
    next: Next,
) -> (Response, Option<Arc<str>>) {
    if policy == Policy::Public {
        return (next.run(request).await, None);
    }
    let principal = match gateway.keys.authenticate(request.headers()) {
        Ok(p) => p,
        Err(r) => return (refusal(r), None),
    };
    let who = Some(principal.name.clone());
    let path_model = model_in_path(request.uri().path());
    let body_routed = path_model.is_none() && policy == Policy::Infer;
    if !body_routed && !principal.allows(policy, path_model.as_deref()) {
        return (refusal(Refusal::Forbidden), who);
    }
    // Limits apply to inference only: admin, health and metrics stay available under load.
    let mut held = Vec::new();
    if policy == Policy::Infer {
        if let Err(wait) = principal.limits.take_token() {
            let response = too_many(
                StatusCode::TOO_MANY_REQUESTS,
                "the API key's rate limit is reached",
                wait,
            );
            return (response, who);
        }
        match principal.limits.slot() {
            Ok(slot) => held.extend(slot),
            Err(auth::AllTaken) => {
                let response = too_many(
                    StatusCode::TOO_MANY_REQUESTS,
                    "the API key's concurrency limit is reached",
                    std::time::Duration::from_secs(1),
                );
                return (response, who);
            }
        }
        match gateway.infer_slots.clone().try_acquire_owned() {
            Ok(slot) => held.push(slot),
            Err(_) => {
                let response = too_many(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the gateway is at capacity",
                    std::time::Duration::from_secs(1),
                );
                return (response, who);
            }
        }
    }
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    if held.is_empty() {
        return (response, who);
    }
    // The slots are held until the body is sent: a streamed answer is still in flight.
    let (parts, body) = response.into_parts();
    let body = Body::new(held_body::HeldBody::new(body, held));
    (Response::from_parts(parts, body), who)
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
    path_segment(path, "/admin/models/")
}

/// The path segment right after `prefix`.
fn path_segment(path: &str, prefix: &str) -> String {
    path.strip_prefix(prefix)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// `PUT /admin/models/{model}/versions/{version}/replicas` with `{"replicas": [...]}`: every
/// URL is checked against the allow-list (and what it resolves to) before anything changes.
async fn set_replicas(gateway: &Gateway, path: &str, who: &str, body: &[u8]) -> Response {
    let model = admin_model(path);
    let version = path_segment(path, &format!("/admin/models/{model}/versions/"));
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Replicas {
        replicas: Vec<String>,
    }
    let replicas = match serde_json::from_slice::<Replicas>(body) {
        Ok(r) if !r.replicas.is_empty() && r.replicas.len() <= 64 => r.replicas,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "give 1 to 64 replicas"),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"replicas\": [\"http://host:port\"]}}: {e}"),
            );
        }
    };
    if gateway.replica_allow_list.is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "replicas cannot be changed through the API: the gateway file has no replica_allow_list",
        );
    }
    for url in &replicas {
        if let Err(e) = gateway.replica_allow_list.check(url).await {
            return error(StatusCode::FORBIDDEN, &e);
        }
    }
    let Some(spec) = gateway.specs.get(&model) else {
        return not_found();
    };
    match gateway.admin.set_replicas(
        &gateway.registry,
        who,
        &model,
        &version,
        &replicas,
        spec.max_in_flight_per_replica,
    ) {
        Ok(replicas) => {
            axum::Json(json!({ "model": model, "version": version, "replicas": replicas }))
                .into_response()
        }
        Err(e) => admin_error(e),
    }
}

/// The answer to a refused admin change.
fn admin_error(e: admin::AdminError) -> Response {
    match e {
        admin::AdminError::NotFound => not_found(),
        admin::AdminError::Invalid(status, message) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            &message,
        ),
        admin::AdminError::Audit(message) => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
    }
}

/// The status page: plain HTML and JS, no build step, nothing fetched from elsewhere.
const STATUS_PAGE: &str = include_str!("status.html");

/// Applies a model's gateway weights to the same model in every pipeline of the process (by
/// version name), so a canary shift or rollback moves stream traffic too.
fn propagate_weights(gateway: &Gateway, model: &str) {
    let (Some(pipelines), Some(m)) = (&gateway.pipelines, gateway.registry.get(model)) else {
        return;
    };
    let weights: BTreeMap<&str, u32> = m
        .router
        .versions
        .iter()
        .map(|v| &*v.version)
        .zip(m.router.weights())
        .collect();
    for (pipeline, registry) in pipelines.status().registries() {
        let Some(theirs) = registry.get(model) else {
            continue;
        };
        let new: Option<Vec<u32>> = theirs
            .router
            .versions
            .iter()
            .map(|v| weights.get(&*v.version).copied())
            .collect();
        match new.map(|w| theirs.router.set_weights(w)) {
            Some(Ok(())) => tracing::info!(%pipeline, %model, "weights applied to the pipeline"),
            _ => {
                tracing::warn!(%pipeline, %model, "the pipeline's versions of the model differ from the gateway's; its weights are unchanged")
            }
        }
    }
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
        Handler::StatusPage => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            STATUS_PAGE,
        )
            .into_response(),
        Handler::AdminPipelines => match &gateway.pipelines {
            Some(p) => axum::Json(p.list()).into_response(),
            None => axum::Json(json!({ "pipelines": [] })).into_response(),
        },
        Handler::SetReplicas => {
            let body = match read_body(&gateway, body).await {
                Ok(b) => b,
                Err(response) => return response,
            };
            let who = principal.map(|p| p.name).unwrap_or_default();
            set_replicas(&gateway, parts.uri.path(), &who, &body).await
        }
        Handler::PausePipeline | Handler::ResumePipeline => {
            let pipeline = path_segment(parts.uri.path(), "/admin/pipelines/");
            let who = principal.map(|p| p.name).unwrap_or_default();
            let Some(p) = &gateway.pipelines else {
                return error(StatusCode::NOT_FOUND, "no such pipeline");
            };
            let paused = handler == Handler::PausePipeline;
            match gateway
                .admin
                .set_paused(p.status(), &who, &pipeline, paused)
            {
                Ok(paused) => {
                    axum::Json(json!({ "pipeline": pipeline, "paused": paused })).into_response()
                }
                Err(admin::AdminError::NotFound) => {
                    error(StatusCode::NOT_FOUND, "no such pipeline")
                }
                Err(admin::AdminError::Invalid(_, message) | admin::AdminError::Audit(message)) => {
                    error(StatusCode::INTERNAL_SERVER_ERROR, &message)
                }
            }
        }
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
                    propagate_weights(&gateway, &model);
                    axum::Json(json!({ "model": model, "weights": weights })).into_response()
                }
                Err(e) => admin_error(e),
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
            oip(
                &gateway,
                handler,
                &model,
                version.as_deref(),
                &parts.headers,
                body,
            )
            .await
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
    request_headers: &HeaderMap,
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
        return match (handler, translation) {
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
                translate::infer(&client, m.policy.deadline, model, t, request_headers, &body).await
            }
            (_, None) => error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "version {} of {model} speaks {}: call it through the OpenAI-compatible routes",
                    client.version,
                    protocol_name(endpoint)
                ),
            ),
        };
    };
    let backend_name = oip.model_name.as_deref().unwrap_or(model);
    let mut path = format!("v2/models/{backend_name}");
    if let Some(v) = &oip.model_version {
        path.push_str(&format!("/versions/{v}"));
    }
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
    let request = match openai_body::OpenAiBody::parse(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
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

/// The model's answer, status and content type kept, body streamed through as it arrives.
fn passthrough(response: reqwest::Response) -> Response {
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
    // Attempts by (model, version, replica): (answered ok, failed).
    let mut calls: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    for (labels, value) in gateway.metrics.values("streamgate_model_calls_total") {
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let entry = calls
            .entry((label("model"), label("version"), label("replica")))
            .or_default();
        if labels.get("outcome").is_some_and(|o| o == "ok") {
            entry.0 += value as u64;
        } else {
            entry.1 += value as u64;
        }
    }
    let count = |m: &str, v: &str, r: &str| {
        calls
            .get(&(m.to_string(), v.to_string(), r.to_string()))
            .copied()
            .unwrap_or_default()
    };
    let models: Vec<Value> = gateway
        .registry
        .models()
        .map(|m| {
            let weights = m.router.weights();
            let versions: Vec<Value> = m
                .router
                .versions
                .iter()
                .zip(weights)
                .map(|(v, w)| {
                    let replicas: Vec<Value> = v
                        .balancer
                        .replicas()
                        .iter()
                        .map(|r| {
                            let (ok, failed) = count(&m.name, &v.version, &r.address);
                            json!({
                                "address": &*r.address,
                                "in_flight": r.in_flight(),
                                "ejected": r.is_ejected(now),
                                "times_ejected": r.times_ejected(),
                                "calls": ok + failed,
                                "errors": failed,
                            })
                        })
                        .collect();
                    let calls: u64 = replicas
                        .iter()
                        .map(|r| r["calls"].as_u64().unwrap_or(0))
                        .sum();
                    let errors: u64 = replicas
                        .iter()
                        .map(|r| r["errors"].as_u64().unwrap_or(0))
                        .sum();
                    json!({
                        "name": &*v.version,
                        "weight": w,
                        "calls": calls,
                        "errors": errors,
                        "replicas": replicas,
                    })
                })
                .collect();
            json!({ "name": &*m.name, "versions": versions })
        })
        .collect();
    axum::Json(json!({ "models": models })).into_response()
}

/// Binds `addr` and serves until `shutdown`, over TLS when the gateway has a certificate,
/// on the gateway's worker threads (see [`workers`]). Returns the bound address and a task
/// that ends when every worker has finished its open connections.
pub async fn serve(
    addr: SocketAddr,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listeners = workers::bind(addr, gateway.workers.get())?;
    let bound = listeners[0].local_addr()?;
    let tls = gateway.tls.clone();
    let timeout = gateway.client_timeout;
    if let Some(pipelines) = gateway.pipelines.clone() {
        // Throughput is the change between samples a second apart.
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => pipelines.sample(),
                }
            }
        });
    }
    let app = router(gateway);
    // Cancelled by `shutdown`, and also when the returned task is dropped with its runtime.
    let stop = shutdown.child_token();
    let finished = workers::start(listeners, stop.clone(), move |listener| {
        let (app, shutdown, tls) = (app.clone(), stop.clone(), tls.clone());
        async move {
            match tls {
                Some(config) => match tls::TlsListener::new(listener, (*config).clone()) {
                    Ok(listener) => http::serve(listener, app, timeout, shutdown).await,
                    Err(e) => tracing::error!(error = %e, "gateway worker cannot start TLS"),
                },
                None => http::serve(listener, app, timeout, shutdown).await,
            }
        }
    })?;
    Ok((bound, tokio::spawn(finished)))
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
