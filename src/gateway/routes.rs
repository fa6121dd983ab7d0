//! The route table and the router built from it: every route's method, path, access
//! [`Policy`] and [`Handler`], and the dispatch from a handler to the code that answers it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::{MethodRouter, get, post, put};

use super::access::{self, AdminAccess};
use super::auth::Policy;
use super::handlers::{self, admin, oip, openai};
use super::{Gateway, Shared};

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

/// The gateway listener's router: every route of [`ROUTES`] it serves, behind its policy,
/// and a body limit (413).
pub fn router(gateway: Arc<Gateway>) -> Router {
    router_for(gateway, Listener::Gateway)
}

/// The admin port's router: the admin routes of [`ROUTES`], behind their policies as
/// `access` and the gateway's keys make them (see [`AdminAccess`]).
pub fn admin_router(gateway: Arc<Gateway>, access: AdminAccess) -> Router {
    router_for(gateway, Listener::AdminPort(access))
}

fn router_for(gateway: Arc<Gateway>, listener: Listener) -> Router {
    let max_body_bytes = gateway.max_body_bytes;
    let mut router = Router::new();
    for def in ROUTES.iter().filter(|def| def.served_on(&listener)) {
        let handler = def.handler;
        let method_router: MethodRouter<Shared> = match def.method {
            "GET" => get(move |state, request| dispatch(handler, state, request)),
            "PUT" => put(move |state, request| dispatch(handler, state, request)),
            _ => post(move |state, request| dispatch(handler, state, request)),
        };
        let access = access::on_listener(def, &listener, gateway.auth_configured);
        let route = def.path;
        router = router.route(
            def.path,
            method_router.route_layer(middleware::from_fn_with_state(
                gateway.clone(),
                move |state, request, next| access::authorize(route, access, state, request, next),
            )),
        );
    }
    router
        .fallback(|| async { handlers::error(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(gateway)
}

/// Runs the code of `handler`, once [`access::authorize`] has admitted the request.
async fn dispatch(handler: Handler, State(gateway): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match handler {
        Handler::Live
        | Handler::Ready
        | Handler::Metrics
        | Handler::Healthz
        | Handler::Readyz
        | Handler::PipelineStates => handlers::fixed(handler, &gateway),
        Handler::AdminModels
        | Handler::AdminPipelines
        | Handler::AdminAudit
        | Handler::StatusPage => admin::read(handler, &gateway),
        Handler::SetWeights
        | Handler::Rollback
        | Handler::SetReplicas
        | Handler::PausePipeline
        | Handler::ResumePipeline => admin::change(handler, &gateway, &parts, body).await,
        Handler::ModelMetadata | Handler::ModelReady | Handler::Infer => {
            oip::handle(&gateway, handler, &parts, body).await
        }
        Handler::Chat | Handler::Embeddings => {
            openai::handle(&gateway, handler, &parts, body).await
        }
    }
}

/// Method of a route definition as an [`axum::http::Method`].
pub fn method(def: &RouteDef) -> Method {
    match def.method {
        "GET" => Method::GET,
        "PUT" => Method::PUT,
        _ => Method::POST,
    }
}
