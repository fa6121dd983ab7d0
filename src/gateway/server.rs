//! Serving the routers: the gateway's listener (TLS, worker threads) and the admin port of
//! `streamgate run` (which refuses to listen beyond loopback without keys), each starting the
//! once-a-second sampling of pipeline counters that throughput is computed from.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::route_table::AdminAccess;
use super::routes::{admin_router, router};
use super::{Gateway, http, workers};

/// Binds `addr` and serves until `shutdown`, over TLS when the gateway has a certificate,
/// on the gateway's worker threads (see `workers.rs`). Returns the bound address and a task
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
    if let Some(pipelines) = &gateway.pipelines {
        pipelines.start_sampling(shutdown.clone());
    }
    let app = router(gateway);
    // Cancelled by `shutdown`, and also when the returned task is dropped with its runtime.
    let stop = shutdown.child_token();
    let finished = workers::start(listeners, stop.clone(), move |listener| {
        let (app, shutdown, tls) = (app.clone(), stop.clone(), tls.clone());
        async move {
            match tls {
                Some(config) => match crate::tls::TlsListener::new(listener, (*config).clone()) {
                    Ok(listener) => http::serve(listener, app, timeout, shutdown).await,
                    Err(e) => tracing::error!(error = %e, "gateway worker cannot start TLS"),
                },
                None => http::serve(listener, app, timeout, shutdown).await,
            }
        }
    })?;
    Ok((bound, tokio::spawn(finished)))
}

/// Why an admin port may not listen on `addr`: it has no keys and `addr` is reachable from
/// other machines, where anyone could read its metrics and pipelines (`None`: it may).
pub fn unprotected_admin_port(addr: SocketAddr, gateway: &Gateway) -> Option<String> {
    if gateway.auth_configured || addr.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "the admin port {addr} is not a loopback address and has no authentication: give \
         --admin-auth FILE (the `auth` section of a gateway file: API keys or JWT), or keys \
         in the --gateway file's `auth`, or listen on a loopback address (--admin-addr \
         127.0.0.1:9898)"
    ))
}

/// Binds the admin port on `addr` and serves the admin routes (see [`admin_router`]) until
/// `shutdown`, on the current runtime: its traffic is a scraper and an operator. Refuses
/// (`PermissionDenied`) what [`unprotected_admin_port`] refuses. Returns the bound address
/// and the serving task.
pub async fn serve_admin(
    addr: SocketAddr,
    gateway: Arc<Gateway>,
    access: AdminAccess,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    if let Some(reason) = unprotected_admin_port(addr, &gateway) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            reason,
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if let Some(pipelines) = &gateway.pipelines {
        pipelines.start_sampling(shutdown.clone());
    }
    let timeout = gateway.client_timeout;
    let app = admin_router(gateway, access);
    let serving = tokio::spawn(http::serve(listener, app, timeout, shutdown));
    Ok((bound, serving))
}
