//! Runs compiled pipelines. [`run_pipeline`] reads as a pipeline's life, one named step each:
//! build the sinks, check the served models, start the inference stage and the workers
//! ([`worker`]), build and spawn the source, wait for its report, then drain the workers and
//! flush the sinks. Stopping is ordered: the source stops reading → queued batches are
//! processed → sinks confirm → acks resolve → the source commits → sinks flush.
//!
//! The runtime does not know the source kinds: it gets a `Box<dyn Source>` from
//! [`crate::source::build`] and drives it through [`crate::source::Source`] (spawn with the
//! router, the stop token and the pause switch; await the handle for the report).
//!
//! Per batch, a worker decodes, runs the columnar half shared with the Parquet backfill
//! ([`rows::process_rows`]: SQL step → inference step → route step, the last in `route.rs`),
//! sends each output its rows, and applies the error policy to what failed. [`status`] keeps
//! each pipeline's state and pause switch for the admin API.

pub(crate) mod failure_guard;
mod route;
pub mod rows;
pub(crate) mod status;
pub(crate) mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::SourceBatch;
use crate::connect::transaction::KafkaTransaction;
use crate::inference::{InferenceStage, ModelRegistry};
use crate::plan::CompiledPipeline;
use crate::sink::kafka::TransactionalSettings;
use crate::sink::{self, Sink, SinkError};
use crate::source::{self, BatchRouter, SourceError, SourceReport};
use crate::spec::{Delivery, ProcessingSpec};
use crate::telemetry::{Metrics, PipelineMetrics};
use failure_guard::FailureGuard;
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

impl RuntimeError {
    /// Whether the pipeline stopped because its exactly-once transaction was aborted: nothing
    /// of that transaction is visible, so running the pipeline again continues exactly once
    /// from the committed offsets (a commit refused during a consumer-group rebalance ends
    /// this way).
    pub fn is_transaction_abort(&self) -> bool {
        matches!(
            self,
            RuntimeError::Source {
                source: SourceError::Kafka(
                    crate::source::kafka::KafkaSourceError::TransactionAborted(_)
                ),
                ..
            }
        )
    }
}

/// Extra time workers get after the source's drain deadline before they are aborted (their
/// unfinished batches were not committed and will be redelivered).
const WORKER_GRACE: Duration = Duration::from_secs(2);

/// Runs one pipeline until `shutdown` is cancelled or it fails: builds its sinks, checks its
/// models, starts its workers and its source, waits for the source to stop, then lets the
/// workers finish and flushes the sinks.
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
    let transaction = exactly_once(spec);
    let (outputs, dead_letter) =
        build_sinks(&compiled, &name, &pipeline_metrics, transaction.as_deref()).await?;
    let all_sinks: Vec<_> = outputs
        .iter()
        .map(|o| o.sink.clone())
        .chain(dead_letter.clone())
        .collect();
    check_models(&compiled, &name, &status).await?;
    let registry = ModelRegistry::build(&spec.models, &compiled.models, &metrics.models);
    status.attach_registry(&name, registry.clone());
    let pause = status.pause_signal(&name);
    let worker = build_worker(
        &compiled,
        &registry,
        (outputs, dead_letter),
        &name,
        &pipeline_metrics,
        transaction.clone(),
        Arc::new(FailureGuard::new(
            spec.on_systematic_failure.clone(),
            name.clone(),
            status.clone(),
            pipeline_metrics.clone(),
        )),
    )?;
    let (workers, router) = spawn_workers(worker, &spec.processing);

    let drain_timeout = spec.processing.drain_timeout;
    let source = source::build(&spec.source, &pipeline_metrics, drain_timeout, transaction)
        .await
        .map_err(|source| RuntimeError::Source {
            pipeline: name.to_string(),
            source,
        })?;
    let running = source.spawn(router, shutdown.clone(), pause);
    status.set(&name, PipelineState::Running);
    tracing::info!(pipeline = %name, "pipeline running");
    let result = running.await;
    status.set(&name, PipelineState::Stopping);

    drain(workers, all_sinks, &name, drain_timeout).await;
    settle_state(result, &status, &name)
}

/// Builds the sink of every output, in order, and the dead-letter sink if there is one.
async fn build_sinks(
    compiled: &CompiledPipeline,
    name: &Arc<str>,
    metrics: &PipelineMetrics,
    transaction: Option<&KafkaTransaction>,
) -> Result<(Vec<OutputRuntime>, Option<Arc<dyn Sink>>), RuntimeError> {
    let spec = &compiled.pipeline.spec;
    let sink_err = |source| RuntimeError::Sink {
        pipeline: name.to_string(),
        source,
    };
    let transactional = transaction.map(|transaction| sink::Transactional {
        transaction,
        settings: TransactionalSettings {
            id: spec
                .transactional_id
                .clone()
                .unwrap_or_else(|| format!("streamgate-{name}-{:016x}", rand::random::<u64>())),
            interval: spec.transaction_interval,
        },
    });
    let mut outputs = Vec::new();
    for (index, (output, compiled_output)) in spec.outputs.iter().zip(&compiled.outputs).enumerate()
    {
        outputs.push(OutputRuntime {
            index,
            sink: sink::build(
                &output.sink,
                &spec.source,
                name,
                &output.name,
                &compiled.output_schema(),
                &compiled_output.payload,
                transactional.as_ref(),
            )
            .await
            .map_err(sink_err)?,
            name: Arc::from(output.name.as_str()),
            delivered: metrics.records_out(&output.name),
        });
    }
    let dead_letter = match &spec.dead_letter {
        Some(s) => Some(
            sink::build(
                s,
                &spec.source,
                name,
                sink::DEAD_LETTER_OUTPUT,
                &compiled.output_schema(),
                &sink::PayloadColumns::all(),
                transactional.as_ref(),
            )
            .await
            .map_err(sink_err)?,
        ),
        None => None,
    };
    Ok((outputs, dead_letter))
}

/// Checks the served models: a contract mismatch stops the start (and marks the pipeline
/// failed); a model that cannot be reached yet only warns (calls back off until it is up).
async fn check_models(
    compiled: &CompiledPipeline,
    name: &str,
    status: &StatusBoard,
) -> Result<(), RuntimeError> {
    let mut mismatches = Vec::new();
    for problem in compiled.check_models_online().await {
        if problem.unreachable {
            tracing::warn!(pipeline = %name, step = %problem.path, "{}", problem.message);
        } else {
            mismatches.push(format!("{}: {}", problem.path, problem.message));
        }
    }
    if mismatches.is_empty() {
        return Ok(());
    }
    status.set(name, PipelineState::Failed(mismatches.join("; ")));
    Err(RuntimeError::Model {
        pipeline: name.to_string(),
        message: mismatches.join("; "),
    })
}

/// Starts the inference stage and assembles what every worker shares, with the pipeline's
/// error and undeliverable-dead-letter policies.
fn build_worker(
    compiled: &Arc<CompiledPipeline>,
    registry: &ModelRegistry,
    (outputs, dead_letter): (Vec<OutputRuntime>, Option<Arc<dyn Sink>>),
    name: &Arc<str>,
    metrics: &PipelineMetrics,
    transaction: Option<Arc<KafkaTransaction>>,
    failure_guard: Arc<FailureGuard>,
) -> Result<Arc<PipelineWorker>, RuntimeError> {
    let spec = &compiled.pipeline.spec;
    let inference = InferenceStage::start(&compiled.steps, registry, compiled.output_schema())
        .map_err(|e| RuntimeError::Model {
            pipeline: name.to_string(),
            message: e.to_string(),
        })?;
    let undeliverable = worker::undeliverable_policy(
        name.clone(),
        metrics.clone(),
        spec.on_undeliverable_dead_letter,
    );
    if let Some(sink) = &dead_letter {
        sink.on_late_undeliverable(undeliverable.clone());
    }
    Ok(Arc::new(PipelineWorker {
        inference,
        compiled: compiled.clone(),
        outputs,
        dead_letter,
        policy: spec.error_policy(),
        undeliverable,
        metrics: metrics.clone(),
        name: name.clone(),
        transaction,
        failure_guard,
    }))
}

/// Longest one call to librdkafka's transaction API may take (a commit delivers everything
/// produced since the last one first).
const TRANSACTION_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The transaction of a `delivery: exactly_once` pipeline (validation made sure its source and
/// sinks are Kafka; the sinks attach their producer as they are built).
fn exactly_once(spec: &crate::spec::PipelineSpec) -> Option<Arc<KafkaTransaction>> {
    (spec.delivery == Delivery::ExactlyOnce).then(|| {
        Arc::new(KafkaTransaction::new(
            spec.transaction_interval,
            TRANSACTION_CALL_TIMEOUT,
        ))
    })
}

/// Starts `processing.workers` workers, each behind a queue of `processing.queued_batches`,
/// and returns them with the router over their queues.
fn spawn_workers(
    worker: Arc<PipelineWorker>,
    processing: &ProcessingSpec,
) -> (JoinSet<()>, BatchRouter) {
    let mut workers = JoinSet::new();
    let mut queues = Vec::new();
    for _ in 0..processing.workers.max(1) {
        let (tx, mut rx) = mpsc::channel::<SourceBatch>(processing.queued_batches.max(1));
        queues.push(tx);
        let worker = worker.clone();
        workers.spawn(async move {
            while let Some(batch) = rx.recv().await {
                worker.process(batch).await;
            }
        });
    }
    (workers, BatchRouter::new(queues))
}

/// After the source stopped (and so closed the queues): lets the workers finish what they
/// hold, for at most [`WORKER_GRACE`], then flushes every sink.
async fn drain(
    mut workers: JoinSet<()>,
    sinks: Vec<Arc<dyn Sink>>,
    name: &str,
    drain_timeout: Duration,
) {
    let grace = tokio::time::timeout(WORKER_GRACE, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if grace.is_err() {
        tracing::warn!(pipeline = %name, "workers still busy after the drain deadline; aborting them (their batches are redelivered)");
        workers.abort_all();
    }
    for sink in sinks {
        if let Err(e) = sink.flush(drain_timeout).await {
            tracing::warn!(pipeline = %name, error = %e, "sink flush failed");
        }
    }
}

/// The pipeline's final state from the source's result: stopped, or failed with its reason.
fn settle_state(
    result: Result<SourceReport, SourceError>,
    status: &StatusBoard,
    name: &str,
) -> Result<SourceReport, RuntimeError> {
    match result {
        Ok(report) => {
            status.set(name, PipelineState::Stopped);
            tracing::info!(pipeline = %name, committed_partitions = report.committed.len(), "pipeline stopped");
            Ok(report)
        }
        Err(source) => {
            status.set(name, PipelineState::Failed(source.to_string()));
            Err(RuntimeError::Source {
                pipeline: name.to_string(),
                source,
            })
        }
    }
}
