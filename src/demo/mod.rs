//! `streamgate demo`: the fraud pipeline end to end on an embedded broker, with nothing to
//! install. Starts the embedded broker, a generator of synthetic card transactions (with a share
//! of malformed ones), the `fraud-scoring` pipeline (features in SQL, the shipped ONNX fraud model
//! in process) and the admin server, and prints a live
//! summary every second.

pub(crate) mod summary;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

use crate::runtime::StatusBoard;
use crate::telemetry::Metrics;
use crate::testing::{EmbeddedBroker, broker, generator};

/// The demo pipeline, embedded so the demo runs from any directory.
pub const DEMO_PIPELINE: &str = include_str!("../../pipelines/fraud-scoring.yaml");

/// The fraud model the demo pipeline scores with (ONNX, run in process).
pub const DEMO_MODEL: &[u8] = include_bytes!("../../models/fraud/1/model.onnx");
/// The record schema the demo pipeline references.
pub const DEMO_SCHEMA: &str = include_str!("../../schemas/transaction.avsc");

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Transactions per second to generate (0: as fast as possible).
    pub rate: u64,
    /// Stop after this many transactions (None: run until interrupted or `duration`).
    pub records: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Share of malformed transactions.
    pub malformed: f64,
    /// Partitions of the input topic.
    pub partitions: i32,
}

/// Why the demo or the generator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// Producing transactions failed.
    #[error("producing transactions: {0}")]
    Produce(#[from] rdkafka::error::KafkaError),
    /// Laying out the demo's files failed.
    #[error("writing the demo's files: {0}")]
    Files(#[from] std::io::Error),
    /// The demo pipeline did not load or compile.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecErrors),
    /// The pipeline stopped with an error.
    #[error(transparent)]
    Pipeline(#[from] crate::runtime::RuntimeError),
    /// The pipeline's task ended abnormally.
    #[error("the pipeline task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Produces synthetic transactions to `topic` at `rate` per second until `stop` or `limit`.
pub async fn generate(
    bootstrap: &str,
    topic: &str,
    rate: u64,
    limit: Option<u64>,
    malformed_rate: f64,
    produced: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Result<(), DemoError> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let mut rng = SmallRng::seed_from_u64(7);
    let started = Instant::now();
    let mut id = 0u64;
    // Bounded in-flight produce futures: backpressure from the broker.
    let mut inflight = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    while !stop.is_cancelled() && limit.is_none_or(|l| id < l) {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(id as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => break,
                }
            }
        }
        let payload = if generator::is_malformed(id, malformed_rate) {
            generator::malformed(&mut rng, id)
        } else {
            generator::transaction(&mut rng, id)
        };
        let key = id.to_string();
        // Enqueue synchronously so `produced` is current; delivery futures are drained as we
        // go, and a full local queue waits for deliveries instead of growing.
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&key).payload(&payload)) {
                Ok(delivery) => {
                    produced.fetch_add(1, Ordering::Relaxed);
                    inflight.push(delivery);
                    break;
                }
                Err((e, _)) if inflight.is_empty() => return Err(e.into()),
                Err(_) => {
                    inflight.next().await;
                }
            }
        }
        id += 1;
        while inflight.len() >= 10_000 {
            inflight.next().await;
        }
        while let Some(Some(_)) = futures::FutureExt::now_or_never(inflight.next()) {}
    }
    while inflight.next().await.is_some() {}
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}

/// Runs the demo until interrupted (`shutdown`), `duration` or `records` are reached.
pub async fn run(
    options: DemoOptions,
    metrics: Metrics,
    status: StatusBoard,
    shutdown: CancellationToken,
) -> Result<(), DemoError> {
    let broker = EmbeddedBroker::start(&[
        ("transactions", options.partitions),
        ("fraud-alerts", options.partitions),
        ("transactions-scored", options.partitions),
        ("transactions-dlq", 1),
    ])?;
    let bootstrap = broker.bootstrap_servers().to_string();
    eprintln!("embedded Kafka broker listening on {bootstrap} (any Kafka client can connect)");

    // The pipeline file references ../schemas/transaction.avsc and ../models: lay them out in
    // a temp dir.
    let dir = std::env::temp_dir().join(format!("streamgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("pipelines"))?;
    std::fs::create_dir_all(dir.join("schemas"))?;
    std::fs::create_dir_all(dir.join("models/fraud/1"))?;
    std::fs::write(dir.join("schemas/transaction.avsc"), DEMO_SCHEMA)?;
    std::fs::write(dir.join("models/fraud/1/model.onnx"), DEMO_MODEL)?;
    let file = dir.join("pipelines/fraud-scoring.yaml");
    std::fs::write(&file, DEMO_PIPELINE)?;
    let env_bootstrap = bootstrap.clone();
    let mut loaded = crate::spec::load_str(DEMO_PIPELINE, Path::new(&file), &move |name| {
        (name == "KAFKA_BOOTSTRAP_SERVERS").then(|| env_bootstrap.clone())
    })?;
    // The embedded broker answers a fetch only when fetch.wait.max.ms (librdkafka default
    // 500 ms) expires, even if data arrived meanwhile; real brokers answer as soon as data is
    // there. A short wait keeps the demo's latency representative.
    if let crate::spec::SourceSpec::Kafka(source) = &mut loaded.spec.source {
        source
            .properties
            .entry("fetch.wait.max.ms".to_string())
            .or_insert_with(|| "10".to_string());
    }
    let compiled = crate::plan::compile(loaded).await?;

    let stop = shutdown.child_token();
    let produced = Arc::new(AtomicU64::new(0));
    let generator = tokio::spawn(generate_logged(
        bootstrap.clone(),
        options.clone(),
        produced.clone(),
        stop.clone(),
    ));
    let pipeline_stop = CancellationToken::new();
    let pipeline = {
        let metrics = metrics.clone();
        let status = status.clone();
        let pipeline_stop = pipeline_stop.clone();
        tokio::spawn(async move {
            crate::runtime::run_pipeline(compiled, &metrics, pipeline_stop, status).await
        })
    };

    let started = Instant::now();
    let mut summary = summary::Summary::new("fraud-scoring", &metrics);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => break,
        }
        eprintln!("{}", summary.line(produced.load(Ordering::Relaxed)));
        if options.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if let Some(limit) = options.records {
            let done = summary.accounted();
            if generator.is_finished() && done >= limit {
                break;
            }
        }
    }
    stop.cancel();
    let _ = generator.await;
    pipeline_stop.cancel();
    let result = pipeline.await?;
    eprintln!("{}", summary.line(produced.load(Ordering::Relaxed)));
    eprintln!("{}", summary.final_report(produced.load(Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    drop(broker);
    result?;
    Ok(())
}

async fn generate_logged(
    bootstrap: String,
    options: DemoOptions,
    produced: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    if let Err(e) = generate(
        &bootstrap,
        "transactions",
        options.rate,
        options.records,
        options.malformed,
        produced,
        stop,
    )
    .await
    {
        tracing::error!(error = %e, "transaction generator failed");
    }
}
