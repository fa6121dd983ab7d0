//! The route table and the router built from it: every route's method, path, access
//! [`Policy`] and [`Handler`], and the dispatch from a handler to the code that answers it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::{MethodRouter, get, post, put};

use super::auth::Policy;
use super::handlers::{self, admin, oip, openai};
use super::{Gateway, Shared, access};

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
                move |state, request, next| access::authorize(route, policy, state, request, next),
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
        Handler::Live | Handler::Ready | Handler::Metrics => handlers::fixed(handler, &gateway),
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
