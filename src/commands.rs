//! What each subcommand does (the binary's edge: `anyhow` here only).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use std::sync::Arc;

use streamgate::cli::{AdminPortArgs, Command};
use streamgate::gateway::Gateway;
use streamgate::runtime::{self, StatusBoard};
use streamgate::spec::{self, SourceSpec};
use streamgate::telemetry::Metrics;
use tokio_util::sync::CancellationToken;

/// Runs one subcommand: one function each, below.
pub(crate) async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            pipelines,
            admin,
            gateway,
            gateway_listen,
        } => run(pipelines, admin, gateway, gateway_listen).await,
        Command::Validate { pipelines, offline } => validate(pipelines, offline).await,
        Command::Serve { config, listen } => serve(config, listen).await,
        Command::HashKey => hash_key(),
        Command::Demo {
            rate,
            records,
            duration,
            malformed,
            partitions,
            admin,
        } => {
            let options = streamgate::demo::DemoOptions {
                rate,
                records,
                duration,
                malformed: malformed.clamp(0.0, 1.0),
                partitions: partitions.clamp(1, 256),
            };
            demo(options, admin).await
        }
        Command::Broker { topics } => broker(topics).await,
        Command::Generate {
            bootstrap_servers,
            topic,
            rate,
            records,
            malformed,
        } => generate(bootstrap_servers, topic, rate, records, malformed).await,
        Command::Backfill { pipeline, options } => backfill(&pipeline, options.into()).await,
        Command::GenerateParquet {
            output,
            files,
            rows,
            row_group_rows,
            seed,
        } => generate_parquet(output, files, rows, row_group_rows, seed).await,
        Command::Schema => {
            print!("{}", spec::json_schema::pipeline_json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::MockModel {
            listen,
            output_name,
            latency,
            error_rate,
        } => mock_model(listen, output_name, latency, error_rate).await,
    }
}

/// `hash-key`: the SHA-256 of the key on standard input, as a gateway file stores it.
fn hash_key() -> anyhow::Result<ExitCode> {
    let mut key = String::new();
    std::io::stdin()
        .read_line(&mut key)
        .context("reading the key from standard input")?;
    println!(
        "{}",
        streamgate::gateway::auth::key_hash_hex(key.trim_end_matches(['\r', '\n']))
    );
    Ok(ExitCode::SUCCESS)
}

/// `demo`: the embedded broker, generator and fraud pipeline, with the admin port.
async fn demo(
    options: streamgate::demo::DemoOptions,
    admin: streamgate::cli::AdminPortArgs,
) -> anyhow::Result<ExitCode> {
    let metrics = Metrics::new();
    let status = StatusBoard::default();
    let shutdown = shutdown_on_signal();
    let Some(gateway) = admin_port_gateway(&admin, metrics.clone(), status.clone())? else {
        return Ok(ExitCode::FAILURE);
    };
    let (addr, _server) = serve_admin_port(&admin, gateway, shutdown.clone()).await?;
    eprintln!("metrics on http://{addr}/metrics");
    streamgate::demo::run(options, metrics, status, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// `broker`: an embedded Kafka broker until a signal.
async fn broker(topics: Vec<(String, i32)>) -> anyhow::Result<ExitCode> {
    let refs: Vec<(&str, i32)> = topics.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    let broker = streamgate::testing::EmbeddedBroker::start(&refs)?;
    println!("bootstrap.servers={}", broker.bootstrap_servers());
    shutdown_on_signal().cancelled().await;
    drop(broker);
    Ok(ExitCode::SUCCESS)
}

/// `generate`: synthetic transactions to a topic.
async fn generate(
    bootstrap_servers: String,
    topic: String,
    rate: u64,
    records: Option<u64>,
    malformed: f64,
) -> anyhow::Result<ExitCode> {
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    streamgate::demo::generate(
        &bootstrap_servers,
        &topic,
        rate,
        records,
        malformed.clamp(0.0, 1.0),
        produced.clone(),
        shutdown_on_signal(),
    )
    .await?;
    eprintln!(
        "produced {} transactions to {topic}",
        produced.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(ExitCode::SUCCESS)
}

/// `generate-parquet`: synthetic transactions as Parquet files.
async fn generate_parquet(
    output: std::path::PathBuf,
    files: usize,
    rows: u64,
    row_group_rows: usize,
    seed: u64,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let written = tokio::task::spawn_blocking(move || {
        streamgate::backfill::generate::generate(&output, files, rows, row_group_rows, seed)
    })
    .await?
    .map_err(anyhow::Error::msg)?;
    for file in &written {
        println!("{}", file.display());
    }
    eprintln!(
        "wrote {} files of {rows} transactions in {:.1}s",
        written.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

async fn backfill(
    file: &std::path::Path,
    options: streamgate::backfill::BackfillOptions,
) -> anyhow::Result<ExitCode> {
    let compiled = match compile(file).await {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "interrupted: finishing the units in flight is abandoned; run again with --resume"
            );
            signal.cancel();
        }
    });
    let summary = streamgate::backfill::run(compiled, options, &metrics, shutdown)
        .await
        .map_err(anyhow::Error::msg)?;
    print!("{summary}");
    Ok(if summary.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn mock_model(
    listen: SocketAddr,
    output_name: String,
    latency: Option<Duration>,
    error_rate: f64,
) -> anyhow::Result<ExitCode> {
    use streamgate::testing::mock_model::{Faults, Latency, MockModel, MockModelConfig};
    anyhow::ensure!(
        (0.0..=1.0).contains(&error_rate),
        "--error-rate must be between 0 and 1"
    );
    let config = MockModelConfig {
        output_name,
        ..MockModelConfig::default()
    };
    let model = MockModel::start_on(listen, config)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    model.set_faults(Faults {
        latency: latency.map_or(Latency::None, Latency::Fixed),
        status_mix: if error_rate > 0.0 {
            vec![(503, error_rate)]
        } else {
            vec![]
        },
        ..Faults::default()
    });
    println!("url={}", model.url());
    tokio::signal::ctrl_c().await?;
    eprintln!(
        "mock model answered {} calls, {} rows",
        model.calls(),
        model.rows()
    );
    Ok(ExitCode::SUCCESS)
}

/// Cancelled on the first SIGINT/SIGTERM; a second one exits at once.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_signal().await;
        tracing::info!("shutting down: draining in-flight records (signal again to exit at once)");
        t.cancel();
        wait_signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    token
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(
    files: Vec<std::path::PathBuf>,
    admin: AdminPortArgs,
    gateway: Option<std::path::PathBuf>,
    gateway_listen: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let mut compiled = Vec::new();
    let mut failed = false;
    for file in &files {
        match compile(file).await {
            Ok(c) => compiled.push(c),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    let metrics = Metrics::new();
    let status = StatusBoard::default();
    // The gateway, when there is one, also answers on the admin port: one state, one set of
    // keys, one audit log for both listeners.
    let built = match &gateway {
        Some(config) => {
            anyhow::ensure!(
                admin.admin_auth.is_none(),
                "give --admin-auth or --gateway, not both: with --gateway the admin port takes \
                 the keys of the gateway file's `auth`"
            );
            match build_gateway(
                config,
                gateway_listen,
                metrics.clone(),
                Some(status.clone()),
            )? {
                Some(built) => Some(built),
                None => return Ok(ExitCode::FAILURE),
            }
        }
        None => None,
    };
    let admin_gateway = match &built {
        Some(built) => built.gateway.clone(),
        None => match admin_port_gateway(&admin, metrics.clone(), status.clone())? {
            Some(gateway) => gateway,
            None => return Ok(ExitCode::FAILURE),
        },
    };
    let shutdown = shutdown_on_signal();
    let (addr, server) = serve_admin_port(&admin, admin_gateway, shutdown.clone()).await?;
    tracing::info!(%addr, "admin server listening");
    let gateway_server = match built {
        Some(built) => Some(serve_gateway(built, shutdown.clone()).await?),
        None => None,
    };

    let mut tasks = tokio::task::JoinSet::new();
    let spawn = |tasks: &mut tokio::task::JoinSet<_>, index: usize, delay: Duration| {
        let c = compiled[index].clone();
        let (metrics, status, shutdown) = (metrics.clone(), status.clone(), shutdown.clone());
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            (
                index,
                runtime::run_pipeline(c, &metrics, shutdown, status).await,
            )
        });
    };
    for index in 0..compiled.len() {
        spawn(&mut tasks, index, Duration::ZERO);
    }
    let mut restarts = vec![TransactionRestarts::default(); compiled.len()];
    let mut code = ExitCode::SUCCESS;
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok((_, Ok(_))) => {}
            // An aborted exactly-once transaction left nothing visible: running the pipeline
            // again (a new consumer and producer, which fences the old one) continues exactly
            // once from the committed offsets. A supervisor would do the same, slower; one
            // that keeps aborting stops the process as before.
            Ok((index, Err(e)))
                if e.is_transaction_abort()
                    && !shutdown.is_cancelled()
                    && let Some(delay) = restarts[index].next_delay() =>
            {
                tracing::warn!(error = %e, ?delay, "restarting the pipeline from its committed offsets");
                spawn(&mut tasks, index, delay);
            }
            Ok((_, Err(e))) => {
                tracing::error!(error = %e, "pipeline failed");
                code = ExitCode::FAILURE;
                // One failed pipeline stops the process: a supervisor restarts it and the
                // uncommitted records are redelivered.
                shutdown.cancel();
            }
            Err(e) => {
                tracing::error!(error = %e, "pipeline task panicked");
                code = ExitCode::FAILURE;
                shutdown.cancel();
            }
        }
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    if let Some(gateway_server) = gateway_server {
        let _ = tokio::time::timeout(Duration::from_secs(2), gateway_server).await;
    }
    Ok(code)
}

/// In-process restarts of a pipeline after aborted exactly-once transactions: at most
/// [`TransactionRestarts::MAX`] within [`TransactionRestarts::WINDOW`], after a backoff that
/// doubles from 500 ms.
#[derive(Clone, Default)]
struct TransactionRestarts {
    recent: std::collections::VecDeque<std::time::Instant>,
}

impl TransactionRestarts {
    const MAX: usize = 5;
    const WINDOW: Duration = Duration::from_secs(300);

    /// The wait before the next restart, or `None` when the budget is spent.
    fn next_delay(&mut self) -> Option<Duration> {
        let now = std::time::Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Self::WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= Self::MAX {
            return None;
        }
        self.recent.push_back(now);
        Some(Duration::from_millis(500) * (1 << (self.recent.len() - 1)))
    }
}

async fn compile(
    file: &std::path::Path,
) -> Result<std::sync::Arc<streamgate::plan::CompiledPipeline>, spec::SpecErrors> {
    let loaded = spec::load_file(file)?;
    streamgate::plan::compile(loaded).await
}

async fn validate(files: Vec<std::path::PathBuf>, offline: bool) -> anyhow::Result<ExitCode> {
    let mut problems = 0usize;
    for file in &files {
        match compile(file).await {
            Err(errors) => {
                problems += errors.0.len();
                println!("{errors}");
            }
            Ok(compiled) => {
                if !offline {
                    if let Err(e) = check_source(&compiled.pipeline.spec.source).await {
                        problems += 1;
                        println!("{}: source: {e}", file.display());
                        continue;
                    }
                    let model_problems = compiled.check_models_online().await;
                    for p in &model_problems {
                        println!("{}: {}: {}", file.display(), p.path, p.message);
                    }
                    if !model_problems.is_empty() {
                        problems += model_problems.len();
                        continue;
                    }
                }
                println!("{}: ok", file.display());
            }
        }
    }
    if problems > 0 {
        println!("{problems} problem(s) found");
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// Checks that the source's brokers answer and its topics or stream exist.
async fn check_source(source: &SourceSpec) -> anyhow::Result<()> {
    match source {
        SourceSpec::Kafka(k) => {
            streamgate::connect::kafka::check_topics(k, Duration::from_secs(10))
                .await
                .map_err(anyhow::Error::msg)
        }
        SourceSpec::Nats(n) => {
            let client = streamgate::connect::nats::connect(&n.connection(), "streamgate-validate")
                .await
                .map_err(anyhow::Error::msg)?;
            if let Some(js) = &n.jetstream {
                async_nats::jetstream::new(client)
                    .get_stream(&js.stream)
                    .await
                    .map_err(|e| anyhow::anyhow!("JetStream stream {:?}: {e}", js.stream))?;
            }
            Ok(())
        }
    }
}

async fn serve(config: std::path::PathBuf, listen: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let Some(built) = build_gateway(&config, listen, Metrics::new(), None)? else {
        return Ok(ExitCode::FAILURE);
    };
    let server = serve_gateway(built, shutdown_on_signal()).await?;
    server.await.ok();
    Ok(ExitCode::SUCCESS)
}

/// A gateway built from its file, and where to serve it.
struct BuiltGateway {
    gateway: Arc<Gateway>,
    addr: SocketAddr,
    tls: bool,
}

/// Loads a gateway file and builds the gateway (with the admin view of `pipelines`, when
/// given). `None` when the file has problems (printed).
fn build_gateway(
    config: &std::path::Path,
    listen: Option<SocketAddr>,
    metrics: Metrics,
    pipelines: Option<StatusBoard>,
) -> anyhow::Result<Option<BuiltGateway>> {
    let loaded = match spec::load_gateway(config) {
        Ok(l) => l,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(None);
        }
    };
    let addr = match listen {
        Some(a) => a,
        None => loaded
            .spec
            .listen
            .parse()
            .context("the gateway file's `listen` is not an address")?,
    };
    let mut gateway =
        Gateway::new(&loaded.spec, loaded.base_dir(), metrics).map_err(anyhow::Error::msg)?;
    if let Some(board) = pipelines {
        gateway = gateway.with_pipelines(board);
    }
    Ok(Some(BuiltGateway {
        gateway: Arc::new(gateway),
        addr,
        tls: loaded.spec.tls.is_some(),
    }))
}

/// Serves a built gateway. Prints `url=...` once listening.
async fn serve_gateway(
    built: BuiltGateway,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let addr = built.addr;
    let (bound, server) = streamgate::gateway::serve(addr, built.gateway, shutdown)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let scheme = if built.tls { "https" } else { "http" };
    println!("url={scheme}://{bound}");
    tracing::info!(%bound, "gateway listening");
    Ok(server)
}

/// The state behind an admin port without a gateway, over `status`: the keys of
/// `--admin-auth` (none without it). `None` when that file has problems (printed).
fn admin_port_gateway(
    admin: &AdminPortArgs,
    metrics: Metrics,
    status: StatusBoard,
) -> anyhow::Result<Option<Arc<Gateway>>> {
    let gateway = match &admin.admin_auth {
        Some(file) => {
            let loaded = match spec::load_gateway(file) {
                Ok(l) => l,
                Err(errors) => {
                    eprintln!("{errors}");
                    return Ok(None);
                }
            };
            Gateway::admin_port(
                &loaded.spec.auth,
                loaded.spec.audit_log.as_deref(),
                loaded.base_dir(),
                metrics,
            )
        }
        None => Gateway::admin_port(
            &spec::GatewayAuthSpec::default(),
            None,
            std::path::Path::new("."),
            metrics,
        ),
    }
    .map_err(|e| anyhow::anyhow!("--admin-auth: {e}"))?;
    Ok(Some(Arc::new(gateway.with_pipelines(status))))
}

/// Serves the admin port of `admin` over `gateway`, after checking that it is not open to
/// other machines without keys.
async fn serve_admin_port(
    admin: &AdminPortArgs,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = admin.admin_addr;
    if let Some(reason) = streamgate::gateway::unprotected_admin_port(addr, &gateway) {
        anyhow::bail!("{reason}");
    }
    let access = admin.access().map_err(anyhow::Error::msg)?;
    streamgate::gateway::serve_admin(addr, gateway, access, shutdown)
        .await
        .with_context(|| format!("cannot listen on {addr} (choose another with --admin-addr)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_restarts_back_off_and_stop_after_their_budget() {
        let mut restarts = TransactionRestarts::default();
        let delays: Vec<_> = std::iter::from_fn(|| restarts.next_delay()).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000].map(Duration::from_millis),
            "five restarts with a doubling backoff, then none"
        );
        assert_eq!(restarts.next_delay(), None);
    }
}
