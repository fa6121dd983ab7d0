//! The gateway's worker threads, in the manner of nginx's worker processes. Each worker runs
//! a single-threaded tokio runtime, accepts connections from a listening socket of its own
//! (all bound to one address with `SO_REUSEPORT`, so the kernel spreads connections across
//! them) and forwards requests over a connection pool of its own. A request is read, routed,
//! forwarded and answered on one thread: no cross-thread wake-ups or work stealing per
//! request, which on a loaded two-core machine cut the gateway's CPU per proxied request by
//! about a fifth (benches/RESULTS-gateway.md). Work that blocks (in-process ONNX models) runs
//! on the runtime's blocking pool, as before.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

/// Pending connections the kernel queues per socket.
const BACKLOG: i32 = 1024;

/// `count` listening sockets on `addr` (an ephemeral port is chosen once, for all). With one
/// worker the socket is exclusive, so a port in use is an error rather than shared.
pub(super) fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = listen(addr, count > 1)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(listen(bound, true)?);
    }
    Ok(listeners)
}

fn listen(addr: SocketAddr, shared: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As tokio's own listeners: a restarted gateway can bind while old connections linger.
    socket.set_reuse_address(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Starts one worker thread per listener, each running `serve(listener)` to completion on a
/// runtime of its own. The returned future ends when every worker has ended. `stop` is
/// cancelled when that future is dropped unfinished (its runtime shut down), so workers never
/// outlive whoever started them.
pub(super) fn start<F, Fut>(
    listeners: Vec<std::net::TcpListener>,
    stop: CancellationToken,
    serve: F,
) -> io::Result<impl Future<Output = ()> + Send + 'static>
where
    F: Fn(tokio::net::TcpListener) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut done = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        // Built here so that a runtime that cannot start is an error of `serve`, not a log line.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (finished, wait) = tokio::sync::oneshot::channel::<()>();
        let serve = serve.clone();
        std::thread::Builder::new()
            .name(format!("gateway-worker-{index}"))
            .spawn(move || {
                crate::inference::protocol::transport::use_own_client_on_this_thread();
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener).await,
                        Err(e) => tracing::error!(error = %e, "gateway worker cannot listen"),
                    }
                });
                let _ = finished.send(());
            })?;
        done.push(wait);
    }
    let guard = stop.drop_guard();
    Ok(async move {
        for (index, wait) in done.into_iter().enumerate() {
            if wait.await.is_err() {
                tracing::error!(worker = index, "gateway worker thread panicked");
            }
        }
        drop(guard);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_socket_shares_the_first_ones_port() {
        let listeners = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for l in &listeners {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
    }

    #[test]
    fn a_single_worker_does_not_share_its_port() {
        let first = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let taken = first[0].local_addr().unwrap();
        let err = bind(taken, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // Nor can a group of workers join a port held exclusively.
        assert!(bind(taken, 2).is_err());
    }

    #[tokio::test]
    async fn workers_stop_when_their_starter_is_dropped() {
        let stop = CancellationToken::new();
        let seen = stop.clone();
        let listeners = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        let finished = start(listeners, stop.clone(), move |_listener| {
            let (seen, ended_tx) = (seen.clone(), ended_tx.clone());
            async move {
                seen.cancelled().await;
                let _ = ended_tx.send(());
            }
        })
        .unwrap();
        drop(finished);
        for _ in 0..2 {
            ended.recv().await.expect("a worker ended");
        }
    }
}
