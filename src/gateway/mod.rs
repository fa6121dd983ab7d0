//! The inference gateway (`streamgate serve`): one standard API in front of the model
//! registry, sharing its routing (weights), balancing, retries and ejection with pipelines.
//!
//! - Open Inference Protocol v2 REST: health, model metadata and readiness, and `infer`,
//!   forwarded to OIP v2 backends (Triton, KServe, MLServer).
//! - OpenAI-compatible `POST /v1/chat/completions` (streamed answers pass through as
//!   server-sent events) and `POST /v1/embeddings`, routed by the body's `model`.
//!
//! Every route comes from [`ROUTES`] with its access [`Policy`](auth::Policy); only liveness
//! is public.
//!
//! # Which file does what
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the [`Gateway`] state, built from a gateway file |
//! | `routes.rs` | [`ROUTES`] (method, path, policy, handler), [`router`], dispatch |
//! | `access.rs` | authentication, authorization, per-key limits, load shedding, refusals |
//! | `handlers/oip.rs` | OIP v2 metadata, readiness and `infer` |
//! | `handlers/openai.rs` | OpenAI-compatible chat completions and embeddings |
//! | `handlers/admin.rs` | admin routes: models, weights, replicas, pipelines, audit, status page |
//! | `handlers/mod.rs` | what handlers share: body reading, version choice, pass-through, errors |
//! | `server.rs` | [`serve`]: listener, TLS, worker threads, pipeline sampling |
//! | `admin.rs` | audited admin changes and the weight history |
//! | `auth.rs`, `jwt.rs` | API keys, scopes and JWT verification |
//! | `allow.rs` | the replica allow-list |
//! | `proxy.rs` | forwarding to a replica, with retries |
//! | `translate.rs` | OIP v2 in front of other tensor protocols |
//! | `oip_codec.rs`, `openai_body.rs` | request and response bodies |
//! | `pipelines.rs` | pipelines of the process: state, totals, throughput, lag |
//! | `http.rs`, `workers.rs`, `tls.rs`, `held_body.rs` | connections, threads, TLS, slots held by a body |

mod access;
pub mod admin;
pub mod allow;
pub mod auth;
mod handlers;
mod held_body;
pub mod http;
pub mod jwt;
pub mod oip_codec;
pub(crate) mod openai_body;
pub mod pipelines;
pub mod proxy;
mod routes;
mod server;
pub mod tls;
pub mod translate;
mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, header};

use crate::inference::ModelRegistry;
use crate::spec::{EndpointSpec, GatewaySpec, ModelSpec};
use crate::telemetry::Metrics;
use auth::ApiKeys;

pub use routes::{Handler, ROUTES, RouteDef, method, router};
pub use server::serve;

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

/// Headers with an API key, for tests and clients.
pub fn bearer(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = format!("Bearer {key}").parse() {
        h.insert(header::AUTHORIZATION, v);
    }
    h
}
