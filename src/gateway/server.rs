//! Serving the router: binding the listener, TLS, the worker threads, and the once-a-second
//! sampling of pipeline counters that throughput is computed from.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::routes::router;
use super::{Gateway, http, tls, workers};

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
