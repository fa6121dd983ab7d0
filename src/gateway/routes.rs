//! The routers built from [`ROUTES`](super::route_table::ROUTES), one per listener, and the
//! dispatch from a route's [`Handler`] to the code that answers it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::{MethodRouter, get, post, put};

use super::access;
use super::handlers::{self, admin, oip, openai};
use super::response::error;
use super::route_table::{AdminAccess, Handler, Listener, ROUTES};
use super::{Gateway, Shared};

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
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
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
