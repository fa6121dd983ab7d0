//! Admin HTTP server: `/metrics` (Prometheus), `/healthz` (process alive), `/readyz` (every
//! pipeline running), `/pipelines` (states as JSON).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::runtime::StatusBoard;
use crate::telemetry::Metrics;

/// Shared state of the admin routes.
#[derive(Clone)]
pub struct AdminState {
    /// Metric families to render.
    pub metrics: Metrics,
    /// Pipeline states.
    pub status: StatusBoard,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/pipelines", get(pipelines))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn ready(State(state): State<AdminState>) -> Response {
    if state.status.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn pipelines(State(state): State<AdminState>) -> Response {
    Json(state.status.snapshot()).into_response()
}

/// Binds `addr` and serves until `shutdown`. Returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let handle = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    Ok((bound, handle))
}
