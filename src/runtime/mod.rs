//! Wires a compiled pipeline to its source, workers and sinks, runs it, and stops it in order:
//! source stops reading → queued batches are processed → sinks confirm → acks resolve →
//! source commits → sinks flush.

pub mod rows;
pub mod status;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::SourceBatch;
use crate::inference::{InferenceStage, ModelRegistry};
use crate::plan::CompiledPipeline;
use crate::sink::{self, SinkError};
use crate::source::kafka::{KafkaSource, KafkaSourceError};
use crate::source::nats::NatsSource;
use crate::source::{BatchRouter, SourceError, SourceReport};
use crate::spec::{KafkaSourceSpec, SourceSpec};
use crate::telemetry::Metrics;
pub use status::{PipelineState, StatusBoard};
use worker::{OutputRuntime, PipelineWorker};

/// Why a pipeline stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A sink could not be created.
    #[error("pipeline {pipeline}: {source}")]
    Sink {
        /// Pipeline name.
        pipeline: String,
        /// The sink error.
        source: SinkError,
    },
    /// A model does not fit what the pipeline sends or reads.
    #[error("pipeline {pipeline}: {message}")]
    Model {
        /// Pipeline name.
        pipeline: String,
        /// The mismatch, naming both sides.
        message: String,
    },
    /// The source failed or a batch could not be delivered.
    #[error("pipeline {pipeline}: {source}")]
    Source {
        /// Pipeline name.
        pipeline: String,
        /// The source error.
        source: SourceError,
    },
}

/// How long the consumer gets to close after its offsets are committed.
const CONSUMER_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Extra time workers get after the source's drain deadline before they are aborted (their
/// unfinished batches were not committed and will be redelivered).
const WORKER_GRACE: Duration = Duration::from_secs(2);

/// Runs one pipeline until `shutdown` is cancelled or it fails.
pub async fn run_pipeline(
    compiled: Arc<CompiledPipeline>,
    metrics: &Metrics,
    shutdown: CancellationToken,
    status: StatusBoard,
) -> Result<SourceReport, RuntimeError> {
    let spec = &compiled.pipeline.spec;
    let name: Arc<str> = Arc::from(spec.name.as_str());
    let pipeline_metrics = metrics.pipeline(&name);
    status.set(&name, PipelineState::Starting);
    let sink_err = |source| RuntimeError::Sink {
        pipeline: name.to_string(),
        source,
    };
    let mut outputs = Vec::new();
    for (index, (output, compiled_output)) in spec.outputs.iter().zip(&compiled.outputs).enumerate()
    {
        outputs.push(OutputRuntime {
            index,
            sink: sink::build(
                &output.sink,
                &spec.source,
                &name,
                &output.name,
                &compiled.output_schema(),
                &compiled_output.payload,
            )
            .await
            .map_err(sink_err)?,
            name: Arc::from(output.name.as_str()),
            delivered: pipeline_metrics.records_out(&output.name),
        });
    }
    let dead_letter = match &spec.dead_letter {
        Some(s) => Some(
            sink::build(
                s,
                &spec.source,
                &name,
                sink::DEAD_LETTER_OUTPUT,
                &compiled.output_schema(),
                &sink::PayloadColumns::all(),
            )
            .await
            .map_err(sink_err)?,
        ),
        None => None,
    };
    let all_sinks: Vec<_> = outputs
        .iter()
        .map(|o| o.sink.clone())
        .chain(dead_letter.clone())
        .collect();
    // Served models: a contract mismatch stops the start; a model that cannot be reached
    // yet only warns (calls back off until it is up).
    let mut mismatches = Vec::new();
    for problem in compiled.check_models_online().await {
        if problem.unreachable {
            tracing::warn!(pipeline = %name, step = %problem.path, "{}", problem.message);
        } else {
            mismatches.push(format!("{}: {}", problem.path, problem.message));
        }
    }
    if !mismatches.is_empty() {
        status.set(&name, PipelineState::Failed(mismatches.join("; ")));
        return Err(RuntimeError::Model {
            pipeline: name.to_string(),
            message: mismatches.join("; "),
        });
    }
    let registry = ModelRegistry::build(&spec.models, &compiled.models, &metrics.models);
    status.attach_registry(&name, registry.clone());
    let pause = status.pause_signal(&name);
    let inference = InferenceStage::start(&compiled.steps, &registry, compiled.output_schema())
        .map_err(|message| RuntimeError::Model {
            pipeline: name.to_string(),
            message,
        })?;
    let undeliverable = worker::undeliverable_policy(
        name.clone(),
        pipeline_metrics.clone(),
        spec.on_undeliverable_dead_letter,
    );
    if let Some(sink) = &dead_letter {
        sink.on_late_undeliverable(undeliverable.clone());
    }
    let worker = Arc::new(PipelineWorker {
        inference,
        compiled: compiled.clone(),
        outputs,
        dead_letter,
        policy: spec.error_policy(),
        undeliverable,
        metrics: pipeline_metrics.clone(),
        name: name.clone(),
    });

    let mut workers = JoinSet::new();
    let mut queues = Vec::new();
    for _ in 0..spec.processing.workers.max(1) {
        let (tx, mut rx) = mpsc::channel::<SourceBatch>(spec.processing.queued_batches.max(1));
        queues.push(tx);
        let worker = worker.clone();
        workers.spawn(async move {
            while let Some(batch) = rx.recv().await {
                worker.process(batch).await;
            }
        });
    }

    let router = BatchRouter::new(queues);
    let source_err = |source: SourceError| RuntimeError::Source {
        pipeline: name.to_string(),
        source,
    };
    let result = match &spec.source {
        SourceSpec::Kafka(kafka) => {
            let running = start_kafka(
                kafka,
                &pipeline_metrics,
                spec.processing.drain_timeout,
                router,
                &shutdown,
                pause,
            )
            .map_err(|e| source_err(e.into()))?;
            status.set(&name, PipelineState::Running);
            tracing::info!(pipeline = %name, "pipeline running");
            running.finish(&name).await.map_err(SourceError::from)
        }
        SourceSpec::Nats(nats) => {
            let source = NatsSource::connect(
                nats,
                pipeline_metrics.clone(),
                spec.processing.drain_timeout,
            )
            .await
            .map_err(|e| source_err(e.into()))?;
            let task = source.spawn(router, shutdown.clone(), pause);
            status.set(&name, PipelineState::Running);
            tracing::info!(pipeline = %name, "pipeline running");
            match task.await {
                Ok(result) => result.map_err(SourceError::from),
                Err(_) => Err(SourceError::Nats(
                    crate::source::nats::NatsSourceError::BatchFailed(
                        "source task panicked".to_string(),
                    ),
                )),
            }
        }
    };
    status.set(&name, PipelineState::Stopping);

    // The source closed the queues; workers finish what they hold.
    let grace = tokio::time::timeout(WORKER_GRACE, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if grace.is_err() {
        tracing::warn!(pipeline = %name, "workers still busy after the drain deadline; aborting them (their batches are redelivered)");
        workers.abort_all();
    }
    for sink in all_sinks {
        if let Err(e) = sink.flush(spec.processing.drain_timeout).await {
            tracing::warn!(pipeline = %name, error = %e, "sink flush failed");
        }
    }

    match result {
        Ok(report) => {
            status.set(&name, PipelineState::Stopped);
            tracing::info!(pipeline = %name, committed_partitions = report.committed.len(), "pipeline stopped");
            Ok(report)
        }
        Err(source) => {
            status.set(&name, PipelineState::Failed(source.to_string()));
            Err(RuntimeError::Source {
                pipeline: name.to_string(),
                source,
            })
        }
    }
}

/// A Kafka source running on its thread.
struct RunningKafka {
    report: std::sync::mpsc::Receiver<Result<SourceReport, KafkaSourceError>>,
    thread: std::thread::JoinHandle<()>,
}

fn start_kafka(
    spec: &KafkaSourceSpec,
    metrics: &crate::telemetry::PipelineMetrics,
    drain_timeout: Duration,
    router: BatchRouter,
    shutdown: &CancellationToken,
    pause: tokio::sync::watch::Receiver<bool>,
) -> Result<RunningKafka, KafkaSourceError> {
    let source = KafkaSource::new(spec, metrics.clone(), drain_timeout)?.with_pause(pause);
    let (report, thread) =
        source.spawn(router, shutdown.clone(), tokio::runtime::Handle::current());
    Ok(RunningKafka { report, thread })
}

impl RunningKafka {
    /// Waits for the source's report, then (briefly) for the consumer to close.
    async fn finish(self, pipeline: &str) -> Result<SourceReport, KafkaSourceError> {
        let RunningKafka { report, thread } = self;
        let result = tokio::task::spawn_blocking(move || report.recv())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| {
                Err(KafkaSourceError::BatchFailed(
                    "source thread panicked".to_string(),
                ))
            });
        // Offsets are committed; closing the consumer should take a moment. librdkafka can
        // hang there while a cooperative rebalance is in flight: do not let that hang the
        // shutdown. The thread is polled rather than joined on a blocking task, which would
        // keep the runtime from shutting down if it never ends.
        let close_deadline = tokio::time::Instant::now() + CONSUMER_CLOSE_GRACE;
        while !thread.is_finished() && tokio::time::Instant::now() < close_deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!(pipeline = %pipeline, "the Kafka consumer did not close in time; leaving it behind (offsets are committed)");
        }
        result
    }
}
