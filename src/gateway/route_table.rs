//! The route table: every route's method, path, access [`Policy`], listeners and
//! [`Handler`]. Pure data: the router (`routes.rs`), access (`access.rs`) and the handlers read
//! it; it reads none of them.

use axum::http::Method;

use super::principal::Policy;

/// Which routes of the admin port answer callers without a key, once it has keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminAccess {
    /// `/healthz` and `/readyz`: probes (a kubelet, a load balancer) rarely send credentials,
    /// and the answers tell nothing but "up" and "every pipeline running".
    pub public_health: bool,
    /// `/metrics`: its labels name pipelines, topics, models and replica addresses, so it is
    /// open by default only where nobody but local processes can reach it.
    pub public_metrics: bool,
}

impl AdminAccess {
    /// The default for an admin port on `addr`: health public; metrics public on a loopback
    /// address only (elsewhere a scraper sends an `admin:read` key, as Prometheus can with
    /// `authorization.credentials_file`).
    pub fn default_for(addr: std::net::SocketAddr) -> Self {
        AdminAccess {
            public_health: true,
            public_metrics: addr.ip().is_loopback(),
        }
    }
}

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
    /// `GET /healthz` on the admin port: the process is alive.
    Healthz,
    /// `GET /readyz` on the admin port: every pipeline of the process is running.
    Readyz,
    /// `GET /pipelines` on the admin port: each pipeline's state.
    PipelineStates,
}

/// Which listeners serve a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// The gateway's listener (`streamgate serve`, `run --gateway`) only: inference and the
    /// gateway's health.
    Gateway,
    /// The admin port (`streamgate run`, `demo`) only: the probes and pipeline states that
    /// port has always served, kept at their paths for probes and scripts that use them.
    AdminPort,
    /// Both: metrics, the admin API and the status page.
    Both,
}

/// A listener and what it makes of the route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The gateway's listener: every route's policy as the table gives it.
    Gateway,
    /// The admin port, with the routes it opens to callers without a key.
    AdminPort(AdminAccess),
}

impl RouteDef {
    /// Whether `listener` serves this route.
    pub fn served_on(&self, listener: &Listener) -> bool {
        matches!(
            (self.on, listener),
            (On::Both, _)
                | (On::Gateway, Listener::Gateway)
                | (On::AdminPort, Listener::AdminPort(_))
        )
    }
}

/// One route: method, path, access policy, handler.
#[derive(Debug, Clone, Copy)]
pub struct RouteDef {
    /// HTTP method.
    pub method: &'static str,
    /// Path pattern (axum syntax).
    pub path: &'static str,
    /// Who may call it (on the admin port, [`AdminAccess`] may open health and metrics).
    pub policy: Policy,
    /// Which listeners serve it.
    pub on: On,
    /// What it does.
    pub handler: Handler,
}

/// Every route of the gateway. The router is built from this table only.
pub const ROUTES: &[RouteDef] = &[
    RouteDef {
        method: "GET",
        path: "/v2/health/live",
        policy: Policy::Public,
        on: On::Gateway,
        handler: Handler::Live,
    },
    RouteDef {
        method: "GET",
        path: "/v2/health/ready",
        policy: Policy::Authenticated,
        on: On::Gateway,
        handler: Handler::Ready,
    },
    RouteDef {
        method: "GET",
        path: "/v2/models/{model}",
        policy: Policy::Infer,
        on: On::Gateway,
        handler: Handler::ModelMetadata,
    },
    RouteDef {
        method: "GET",
        path: "/v2/models/{model}/ready",
        policy: Policy::Infer,
        on: On::Gateway,
        handler: Handler::ModelReady,
    },
    RouteDef {
        method: "GET",
        path: "/v2/models/{model}/versions/{version}",
        policy: Policy::Infer,
        on: On::Gateway,
        handler: Handler::ModelMetadata,
    },
    RouteDef {
        method: "GET",
        path: "/v2/models/{model}/versions/{version}/ready",
        policy: Policy::Infer,
        on: On::Gateway,
        handler: Handler::ModelReady,
    },
    RouteDef {
        method: "POST",
        path: "/v2/models/{model}/infer",
        policy: Policy::Infer,
        on: On::Gateway,
        handler: Handler::Infer,
    },
    RouteDef {
        method: "POST",
        path: "/v2/models/{model}/versions/{version}/infer",
        policy: Policy::Infer,
        on: On::Gateway,
        handler: Handler::Infer,
    },
    RouteDef {
        method: "POST",
        path: "/v1/chat/completions",
        policy: Policy::Infer,
        on: On::Gateway,
        handler: Handler::Chat,
    },
    RouteDef {
        method: "POST",
        path: "/v1/embeddings",
        policy: Policy::Infer,
        on: On::Gateway,
        handler: Handler::Embeddings,
    },
    RouteDef {
        method: "GET",
        path: "/metrics",
        policy: Policy::AdminRead,
        on: On::Both,
        handler: Handler::Metrics,
    },
    RouteDef {
        method: "GET",
        path: "/admin/models",
        policy: Policy::AdminRead,
        on: On::Both,
        handler: Handler::AdminModels,
    },
    RouteDef {
        method: "PUT",
        path: "/admin/models/{model}/weights",
        policy: Policy::AdminWrite,
        on: On::Both,
        handler: Handler::SetWeights,
    },
    RouteDef {
        method: "POST",
        path: "/admin/models/{model}/rollback",
        policy: Policy::AdminWrite,
        on: On::Both,
        handler: Handler::Rollback,
    },
    RouteDef {
        method: "PUT",
        path: "/admin/models/{model}/versions/{version}/replicas",
        policy: Policy::AdminWrite,
        on: On::Both,
        handler: Handler::SetReplicas,
    },
    RouteDef {
        method: "GET",
        path: "/admin/audit",
        policy: Policy::AdminRead,
        on: On::Both,
        handler: Handler::AdminAudit,
    },
    RouteDef {
        method: "GET",
        path: "/admin/pipelines",
        policy: Policy::AdminRead,
        on: On::Both,
        handler: Handler::AdminPipelines,
    },
    RouteDef {
        method: "POST",
        path: "/admin/pipelines/{pipeline}/pause",
        policy: Policy::AdminWrite,
        on: On::Both,
        handler: Handler::PausePipeline,
    },
    RouteDef {
        method: "POST",
        path: "/admin/pipelines/{pipeline}/resume",
        policy: Policy::AdminWrite,
        on: On::Both,
        handler: Handler::ResumePipeline,
    },
    // The admin port's own probes and states. Their policies apply once the admin port has
    // keys; `AdminAccess` opens health (and metrics) to probes and scrapers that send none.
    RouteDef {
        method: "GET",
        path: "/healthz",
        policy: Policy::Authenticated,
        on: On::AdminPort,
        handler: Handler::Healthz,
    },
    RouteDef {
        method: "GET",
        path: "/readyz",
        policy: Policy::Authenticated,
        on: On::AdminPort,
        handler: Handler::Readyz,
    },
    RouteDef {
        method: "GET",
        path: "/pipelines",
        policy: Policy::AdminRead,
        on: On::AdminPort,
        handler: Handler::PipelineStates,
    },
    // The page shell holds no data and no secret: it asks for an `admin:read` key and reads
    // everything it shows from the admin routes with it. A browser cannot send a bearer
    // header when it opens a URL, so the shell itself must be public.
    RouteDef {
        method: "GET",
        path: "/",
        policy: Policy::Public,
        on: On::Both,
        handler: Handler::StatusPage,
    },
];

/// Method of a route definition as an [`axum::http::Method`].
pub fn method(def: &RouteDef) -> Method {
    match def.method {
        "GET" => Method::GET,
        "PUT" => Method::PUT,
        _ => Method::POST,
    }
}
