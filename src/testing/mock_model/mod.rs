//! A programmable mock model server for tests, benchmarks and trying pipelines out: speaks Open
//! Inference Protocol v2, OpenAI chat completions and embeddings, TF Serving predict and a
//! custom JSON API on one port, with fault knobs (status mixes, latency, hangs, malformed
//! bodies, wrong row counts, 429 with Retry-After, rejection of bad rows), and counts every
//! call. One server is one replica; start several for balancing tests.
//!
//! Answers are deterministic so tests can check them: a row's score is the sum of its numeric
//! input values (output `j` of an `[N, k]` output adds `j`).

pub(crate) mod faults;
mod routes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use faults::{Decision, Faults, Latency};

/// What the mock model declares and answers.
#[derive(Debug, Clone)]
pub struct MockModelConfig {
    /// Name of the output tensor (OIP) / key (TF Serving named outputs).
    pub output_name: String,
    /// Values per row of the output (`[N, k]`).
    pub output_width: usize,
    /// Declared inputs for OIP metadata: name, datatype, shape.
    pub declared_inputs: Vec<(String, String, Vec<i64>)>,
}

impl Default for MockModelConfig {
    fn default() -> Self {
        MockModelConfig {
            output_name: "score".to_string(),
            output_width: 1,
            declared_inputs: Vec::new(),
        }
    }
}

/// Shared state of a running mock replica.
pub struct MockState {
    pub(crate) config: MockModelConfig,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) rng: Mutex<SmallRng>,
    calls: AtomicU64,
    rows: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

impl MockState {
    /// Counts a request as in flight until the returned guard drops (answered, failed or
    /// abandoned by the client), keeping the peak.
    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }

    pub(crate) fn count(&self, rows: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_error(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// One request in flight at a mock replica; see [`MockState::enter`].
pub(crate) struct InFlightGuard(Arc<MockState>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running mock replica.
pub struct MockModel {
    addr: SocketAddr,
    /// Serves HTTPS with this configuration instead of HTTP.
    tls: Option<tokio_rustls::rustls::ServerConfig>,
    state: Arc<MockState>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl MockModel {
    /// Starts a replica on a free loopback port.
    pub async fn start(config: MockModelConfig) -> std::io::Result<MockModel> {
        Self::start_on("127.0.0.1:0".parse().expect("valid address"), config).await
    }

    /// Starts a replica that serves HTTPS (`tls`: its certificate and, for mutual TLS, the
    /// client CAs it requires) on a free loopback port.
    pub async fn start_tls(
        config: MockModelConfig,
        tls: tokio_rustls::rustls::ServerConfig,
    ) -> std::io::Result<MockModel> {
        Self::start_with(
            "127.0.0.1:0".parse().expect("valid address"),
            config,
            Some(tls),
        )
        .await
    }

    /// Starts a replica on `addr`.
    pub async fn start_on(addr: SocketAddr, config: MockModelConfig) -> std::io::Result<MockModel> {
        Self::start_with(addr, config, None).await
    }

    async fn start_with(
        addr: SocketAddr,
        config: MockModelConfig,
        tls: Option<tokio_rustls::rustls::ServerConfig>,
    ) -> std::io::Result<MockModel> {
        let state = Arc::new(MockState {
            config,
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(SmallRng::seed_from_u64(addr.port() as u64)),
            calls: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
        });
        let mut model = MockModel {
            addr,
            tls,
            state,
            stop: CancellationToken::new(),
            task: None,
        };
        model.listen(addr).await?;
        Ok(model)
    }

    async fn listen(&mut self, addr: SocketAddr) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        self.addr = listener.local_addr()?;
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        let app = routes::router(self.state.clone());
        let tls = self.tls.clone();
        self.task = Some(tokio::spawn(async move {
            let stopped = async move { stop.cancelled().await };
            let _ = match tls {
                None => {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await
                }
                Some(tls) => match crate::tls::TlsListener::new(listener, tls) {
                    Ok(listener) => {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(stopped)
                            .await
                    }
                    Err(e) => Err(e),
                },
            };
        }));
        Ok(())
    }

    /// Base URL (`http://127.0.0.1:port`, or `https://` when serving TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the fault knobs.
    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Requests answered or failed so far (including injected errors).
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::Relaxed)
    }

    /// Rows answered successfully so far.
    pub fn rows(&self) -> u64 {
        self.state.rows.load(Ordering::Relaxed)
    }

    /// Requests answered with an injected error status.
    pub fn errors(&self) -> u64 {
        self.state.errors.load(Ordering::Relaxed)
    }

    /// Most requests this replica has had in flight at once (to check client-side limits).
    pub fn peak_in_flight(&self) -> u64 {
        self.state.peak_in_flight.load(Ordering::Relaxed)
    }

    /// Stops listening: connections are refused until [`MockModel::resume`] (the model is
    /// down).
    pub async fn pause(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.listen(self.addr).await
    }
}

impl Drop for MockModel {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
