//! The inference gateway (`streamgate serve`): one standard API in front of the model
//! registry, sharing its routing (weights), balancing, retries and ejection with pipelines.
//!
//! - Open Inference Protocol v2 REST: health, model metadata and readiness, and `infer`,
//!   forwarded to OIP v2 backends (Triton, KServe, MLServer).
//! - OpenAI-compatible `POST /v1/chat/completions` (streamed answers pass through as
//!   server-sent events) and `POST /v1/embeddings`, routed by the body's `model`.
//!
//! - The admin port of `streamgate run` and `demo` ([`serve_admin`]): the same admin routes,
//!   policies and keys, with the port's own probes (`/healthz`, `/readyz`, `/pipelines`).
//!
//! Every route comes from [`ROUTES`] with its access [`Policy`](auth::Policy) and the
//! listeners that serve it. On the gateway's listener only liveness and the status page's
//! shell are public; the admin port may open health and metrics ([`AdminAccess`]), and
//! without keys it serves loopback only, reading but never changing.
//!
//! # Which file does what
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the [`Gateway`] state, built from a gateway file |
//! | `route_table.rs` | [`ROUTES`] (method, path, policy, listeners, handler): data only |
//! | `routes.rs` | the routers built from the table, and dispatch to the handlers |
//! | `access.rs` | authentication, authorization, the admin port's openness, limits |
//! | `response.rs` | error answers: JSON error bodies, 404, the 401/403 of a refusal |
//! | `handlers/oip.rs` | OIP v2 metadata, readiness and `infer` |
//! | `handlers/openai.rs` | OpenAI-compatible chat completions and embeddings |
//! | `handlers/admin.rs` | admin routes: models, weights, replicas, pipelines, audit, status page |
//! | `handlers/mod.rs` | probes and metrics, and what handlers share: body, version, proxy errors |
//! | `server.rs` | [`serve`] (TLS, worker threads) and [`serve_admin`]; pipeline sampling |
//! | `admin.rs` | audited admin changes and the weight history |
//! | `auth.rs`, `jwt.rs` | API keys, scopes and JWT verification |
//! | `allow.rs` | the replica allow-list |
//! | `proxy.rs` | forwarding to a replica, with retries |
//! | `translate.rs` | OIP v2 in front of other tensor protocols |
//! | `oip_codec.rs` (errors in `oip_errors.rs`), `openai_body.rs` | request and response bodies |
//! | `pipelines.rs` | pipelines of the process: state, totals, throughput, lag |
//! | `http.rs`, `workers.rs`, `tls.rs`, `held_body.rs` | connections, threads, TLS, slots held by a body |

mod access;
pub mod admin;
pub(crate) mod allow;
pub mod auth;
mod handlers;
mod held_body;
pub mod http;
pub mod jwt;
pub mod oip_codec;
pub mod oip_errors;
pub(crate) mod openai_body;
pub(crate) mod pipelines;
pub(crate) mod principal;
pub(crate) mod proxy;
mod response;
mod route_table;
mod routes;
mod server;
pub(crate) mod tls;
pub(crate) mod translate;
mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, header};

use crate::inference::ModelRegistry;
use crate::spec::{EndpointSpec, GatewayAuthSpec, GatewaySpec, ModelSpec};
use crate::telemetry::Metrics;
use auth::ApiKeys;

pub use route_table::{AdminAccess, Handler, Listener, On, ROUTES, RouteDef, method};
pub use routes::{admin_router, router};
pub use server::{serve, serve_admin, unprotected_admin_port};

/// Shared state of the gateway.
pub struct Gateway {
    keys: ApiKeys,
    /// Whether any API key or a JWT verifier is configured (an admin port without either is
    /// for local use only).
    auth_configured: bool,
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

/// Why a gateway cannot be built from its spec.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// An API key entry is invalid.
    #[error(transparent)]
    ApiKeys(#[from] crate::spec::api_keys::ApiKeyError),
    /// The JWT settings are invalid.
    #[error(transparent)]
    Jwt(#[from] jwt::JwtError),
    /// Models whose backends cannot be created: (spec path, why) each.
    #[error("{}", models_problems(.0))]
    Models(Vec<(String, String)>),
    /// The audit log cannot be opened.
    #[error(transparent)]
    AuditLog(#[from] admin::AuditLogError),
    /// The TLS settings are invalid.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The replica allow-list is invalid.
    #[error(transparent)]
    AllowList(#[from] allow::AllowListError),
}

/// `path: why` of each model problem, joined by `; `.
fn models_problems(problems: &[(String, String)]) -> String {
    problems
        .iter()
        .map(|(p, m)| format!("{p}: {m}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Time an admin port's client has to send its request headers, then its body: the gateway
/// file's default.
const ADMIN_CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest request body of an admin port without a gateway: its changes are small JSON
/// objects (pause and resume have no body at all).
const ADMIN_MAX_BODY_BYTES: usize = 64 << 10;

impl Gateway {
    /// Builds the gateway over an already loaded spec (models merged, paths resolved).
    pub fn new(
        spec: &GatewaySpec,
        base_dir: &std::path::Path,
        metrics: Metrics,
    ) -> Result<Gateway, GatewayError> {
        let mut keys = ApiKeys::new(&spec.auth.api_keys)?;
        if let Some(jwt) = &spec.auth.jwt {
            keys = keys.with_jwt(jwt::JwtVerifier::new(jwt, base_dir)?);
        }
        let prepared = crate::inference::registry::prepare(&spec.models, base_dir)
            .map_err(GatewayError::Models)?;
        let registry = ModelRegistry::build(&spec.models, &prepared, &metrics.models);
        let translations = translate::build(&spec.models, &prepared);
        Ok(Gateway {
            keys,
            auth_configured: !spec.auth.api_keys.is_empty() || spec.auth.jwt.is_some(),
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

    /// The state behind an admin port without a gateway (`streamgate run` without `--gateway`,
    /// `demo`): no models, the keys of `auth`, and audited changes (in memory, and in
    /// `audit_log`, relative to `base_dir`, when given).
    pub fn admin_port(
        auth: &GatewayAuthSpec,
        audit_log: Option<&str>,
        base_dir: &std::path::Path,
        metrics: Metrics,
    ) -> Result<Gateway, GatewayError> {
        let spec = GatewaySpec {
            // Not listened on: the admin port's address comes from the command line.
            listen: "127.0.0.1:0".to_string(),
            model_registry: None,
            models: BTreeMap::new(),
            auth: auth.clone(),
            audit_log: audit_log.map(str::to_string),
            tls: None,
            client_timeout: ADMIN_CLIENT_TIMEOUT,
            max_body_bytes: ADMIN_MAX_BODY_BYTES,
            replica_allow_list: Vec::new(),
            // No inference route is served there.
            max_concurrent_infer: 1,
            workers: Some(std::num::NonZeroUsize::MIN),
        };
        Gateway::new(&spec, base_dir, metrics)
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

/// Headers with an API key, for tests and clients.
pub fn bearer(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = format!("Bearer {key}").parse() {
        h.insert(header::AUTHORIZATION, v);
    }
    h
}
