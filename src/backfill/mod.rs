//! Batch backfill: the same pipeline (SQL, inference, routing) over Parquet files instead of a
//! stream. Output goes to one Parquet dataset per output plus a dead-letter dataset, or, with
//! `to_sinks`, to the pipeline's own sinks.
//!
//! Work is cut into units of whole row groups ([`input`]). Each unit is read with only the
//! columns the SQL needs, in batches, through [`crate::runtime::rows::process_rows`] (the code
//! the stream worker runs), and written to files under temporary names that are renamed into
//! place when the unit completes; the unit is then recorded in `_progress.json`. After a crash,
//! `--resume` skips completed units and redoes the others, whose files are replaced, not
//! appended to, so no row is lost or duplicated. Memory is bounded by `files_in_parallel ×
//! (batch_rows + the Parquet writer's row group buffer)`, whatever the file sizes.

pub mod generate;
pub mod input;
pub(crate) mod progress;
pub mod read;
pub mod report;
mod unit_sink;
pub mod write;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::batch::{ErrorClass, Failure, Stage};
use crate::inference::{InferenceStage, ModelRegistry};
use crate::plan::CompiledPipeline;
use crate::runtime::rows::process_rows;
use crate::sink::{self, PayloadColumns, Sink};
use crate::spec::SpecErrors;
use crate::telemetry::{Metrics, PipelineMetrics};
use input::{BadFile, Unit};
use progress::Progress;
use report::{Counters, Summary};
use unit_sink::UnitSink;
use write::DeadRow;

pub use report::ProgressMode;

/// How to run a backfill (`streamgate backfill`'s flags are `cli::BackfillArgs`).
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Parquet files or glob patterns (quote them), repeatable.
    pub inputs: Vec<String>,
    /// Output directory (Parquet datasets and the progress file).
    pub output: PathBuf,
    /// Continue a previous backfill into OUTPUT.
    pub resume: bool,
    /// Send results to the pipeline's own sinks (Kafka, files) instead of Parquet files
    /// (progress still lives in OUTPUT).
    pub to_sinks: bool,
    /// Units (row-group ranges) processed at once.
    pub files_in_parallel: usize,
    /// Requests in flight per model version, so a backfill cannot starve real-time pipelines
    /// sharing the model's endpoints.
    pub model_concurrency: usize,
    /// Rows per batch read from Parquet.
    pub batch_rows: usize,
    /// Most rows per unit (whole row groups): the unit of resumption and of output files.
    pub unit_rows: u64,
    /// Progress display.
    pub progress: ProgressMode,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            inputs: Vec::new(),
            output: PathBuf::from("backfill-out"),
            resume: false,
            to_sinks: false,
            files_in_parallel: 2,
            model_concurrency: 8,
            batch_rows: 8192,
            unit_rows: 1_000_000,
            progress: ProgressMode::Auto,
        }
    }
}

/// Why a backfill could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Bad inputs.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// Planning the input failed (the planning task panicked).
    #[error("{0}")]
    Planning(#[source] tokio::task::JoinError),
    /// The progress file cannot be opened or written.
    #[error(transparent)]
    Progress(#[from] progress::ProgressError),
    /// A served model does not fit the pipeline.
    #[error("{path}: {message}")]
    Model {
        /// The spec path of the step or model.
        path: String,
        /// The mismatch.
        message: String,
    },
    /// A step's model is not in the registry.
    #[error(transparent)]
    UnknownModel(#[from] crate::inference::stage::UnknownModel),
    /// `--to-sinks` without somewhere for failed rows to go.
    #[error(
        "--to-sinks needs the pipeline's `dead_letter` sink (or `on_error: drop`): rows that fail would otherwise make their unit fail on every run"
    )]
    NoDeadLetter,
    /// A sink cannot be built.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// The pipeline spec is invalid.
    #[error("{0}")]
    Spec(#[from] SpecErrors),
}

/// Why one unit failed; it is left for `--resume`.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// Reading the unit failed.
    #[error(transparent)]
    Read(#[from] read::ReadError),
    /// Writing an output file failed.
    #[error(transparent)]
    Write(#[from] write::WriteError),
    /// Recording the unit as complete failed.
    #[error(transparent)]
    Progress(#[from] progress::ProgressError),
    /// Projecting or encoding rows failed.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A sink failed.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// An output's sink could not encode some rows.
    #[error("{rows} rows could not be encoded for output {output}: {why}")]
    Rejected {
        /// Rows refused.
        rows: usize,
        /// The output's index.
        output: usize,
        /// Why the first was refused.
        why: String,
    },
    /// Rows failed and there is nowhere to send them.
    #[error("{0} rows failed and the pipeline has no dead_letter sink")]
    NoDeadLetterSink(usize),
    /// The dead-letter sink refused letters for good (`on_undeliverable_dead_letter: fail`).
    #[error("{letters} dead letters were refused by the dead-letter sink: {why}")]
    LettersRefused {
        /// Letters refused.
        letters: usize,
        /// Why the first was refused.
        why: String,
    },
    /// The sinks settled the unit with another status than delivered.
    #[error("sinks did not confirm the unit ({0:?})")]
    NotConfirmed(crate::ack::AckStatus),
    /// The unit's acknowledgement never came.
    #[error("the unit's acknowledgement was lost")]
    AckLost,
    /// The stage lost rows (an internal error).
    #[error("an internal error lost rows")]
    LostRows,
    /// The backfill was interrupted.
    #[error("interrupted")]
    Interrupted,
    /// The reading task panicked.
    #[error("{0}")]
    Reader(#[source] tokio::task::JoinError),
}

/// Where a unit's results go.
enum Destination {
    Files {
        dir: PathBuf,
    },
    Sinks {
        outputs: Vec<Arc<dyn Sink>>,
        dead_letter: Option<Arc<dyn Sink>>,
        /// `on_error: drop`: failed rows are counted, not sent.
        drop_failures: bool,
        /// `on_undeliverable_dead_letter: fail`: a dead letter the sink refuses for good fails
        /// its unit (retried by `--resume`) instead of being logged and skipped.
        undeliverable_fails: bool,
        /// Pipeline name for dead-letter headers.
        pipeline: Arc<str>,
    },
}

struct Context {
    compiled: Arc<CompiledPipeline>,
    stage: InferenceStage,
    destination: Destination,
    progress: Progress,
    counters: Arc<Counters>,
    metrics: PipelineMetrics,
    wanted: Vec<String>,
    batch_rows: usize,
    shutdown: CancellationToken,
}

/// What one unit did.
#[derive(Default)]
struct UnitResult {
    rows_out: BTreeMap<String, u64>,
    filtered: u64,
    dead: u64,
    failed: Option<BadFile>,
    /// Stopped by Ctrl-C: not a failure of the input; `--resume` redoes it.
    interrupted: bool,
}

/// Runs `compiled` over the Parquet files of `options`: plans the units, starts the models and
/// the destination, runs the units not done yet, and sums up.
pub async fn run(
    compiled: Arc<CompiledPipeline>,
    options: BackfillOptions,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> Result<Summary, BackfillError> {
    let started = Instant::now();
    let name = compiled.pipeline.spec.name.clone();
    let (plan, progress) = plan_units(&compiled, &options).await?;
    let stage = start_models(&compiled, &options, metrics).await?;
    let destination = open_destination(&compiled, &options, metrics).await?;
    let (pending, skipped, counters) = pending_units(&plan, &progress);

    let context = Arc::new(Context {
        wanted: compiled.sql.used_input_columns(),
        compiled: compiled.clone(),
        stage,
        destination,
        progress,
        counters: counters.clone(),
        metrics: metrics.pipeline(&name),
        batch_rows: options.batch_rows.max(1),
        shutdown: shutdown.clone(),
    });
    let stop_display = CancellationToken::new();
    let model_metrics = metrics.models.clone();
    let display = tokio::spawn(report::show(
        options.progress,
        counters.clone(),
        plan.total_rows,
        plan.units.len() as u64,
        move || total_requests(&model_metrics),
        stop_display.clone(),
    ));
    let calls_before = total_requests(&metrics.models);

    let results = run_units(&context, pending, options.files_in_parallel, &shutdown).await;
    stop_display.cancel();
    let _ = display.await;
    flush_sinks(&context.destination).await;

    let mut summary = Summary {
        files: plan.files.len(),
        bad_files: plan.bad_files.clone(),
        units: plan.units.len(),
        units_skipped: skipped,
        rows_in: counters.rows.load(Ordering::Relaxed),
        model_calls: total_requests(&metrics.models) - calls_before,
        interrupted: shutdown.is_cancelled(),
        ..Summary::default()
    };
    add_results(&mut summary, &compiled, &context.progress, results);
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Expands the inputs into units of whole row groups and opens (or resumes) the progress
/// file, where unreadable files are recorded.
async fn plan_units(
    compiled: &CompiledPipeline,
    options: &BackfillOptions,
) -> Result<(input::InputPlan, Progress), BackfillError> {
    let files = input::expand(&options.inputs)?;
    let record = compiled.record_schema.clone();
    let unit_rows = options.unit_rows.max(1);
    let plan = tokio::task::spawn_blocking(move || input::plan(&files, &record, unit_rows))
        .await
        .map_err(BackfillError::Planning)?;
    let spec_hash = spec_hash(compiled);
    let progress = Progress::open(
        &options.output,
        &compiled.pipeline.spec.name,
        &spec_hash,
        unit_rows,
        options.resume,
    )?;
    for bad in &plan.bad_files {
        tracing::warn!(file = %bad.file, reason = %bad.reason, "skipping input file");
        progress.bad_file(bad.clone())?;
    }
    Ok((plan, progress))
}

/// Same models and policies as the stream, but with a per-model concurrency cap. A served
/// model that does not fit stops the backfill; one that cannot be reached yet only warns.
async fn start_models(
    compiled: &CompiledPipeline,
    options: &BackfillOptions,
    metrics: &Metrics,
) -> Result<InferenceStage, BackfillError> {
    let mut models = compiled.pipeline.spec.models.clone();
    for model in models.values_mut() {
        model.batching.max_concurrent_requests = model
            .batching
            .max_concurrent_requests
            .min(options.model_concurrency.max(1));
    }
    for problem in compiled.check_models_online().await {
        if problem.unreachable {
            tracing::warn!(step = %problem.path, "{}", problem.message);
        } else {
            return Err(BackfillError::Model {
                path: problem.path,
                message: problem.message,
            });
        }
    }
    let registry = ModelRegistry::build(&models, &compiled.models, &metrics.models);
    Ok(InferenceStage::start(
        &compiled.steps,
        &registry,
        compiled.output_schema(),
    )?)
}

/// Where results go: Parquet files under the output directory, or (`--to-sinks`) the
/// pipeline's own sinks, which then need a dead-letter sink unless failures are dropped.
async fn open_destination(
    compiled: &CompiledPipeline,
    options: &BackfillOptions,
    metrics: &Metrics,
) -> Result<Destination, BackfillError> {
    let spec = &compiled.pipeline.spec;
    let name = &spec.name;
    let policy = spec.error_policy();
    if options.to_sinks && spec.dead_letter.is_none() && policy != crate::spec::OnError::Drop {
        return Err(BackfillError::NoDeadLetter);
    }
    if !options.to_sinks {
        return Ok(Destination::Files {
            dir: options.output.clone(),
        });
    }
    let columns = compiled.output_schema();
    let build = async |s, output: &str, payload| {
        sink::build(s, &spec.source, name, output, &columns, payload, None)
            .await
            .map_err(BackfillError::Sink)
    };
    let mut outputs = Vec::with_capacity(spec.outputs.len());
    for (output, compiled_output) in spec.outputs.iter().zip(&compiled.outputs) {
        outputs.push(build(&output.sink, &output.name, &compiled_output.payload).await?);
    }
    let dead_letter = match &spec.dead_letter {
        Some(s) => Some(build(s, crate::sink::DEAD_LETTER_OUTPUT, &PayloadColumns::all()).await?),
        None => None,
    };
    if let Some(sink) = &dead_letter {
        // A letter the broker refuses only later settles its unit by the same policy.
        sink.on_late_undeliverable(crate::runtime::worker::undeliverable_policy(
            Arc::from(name.as_str()),
            metrics.pipeline(name),
            spec.on_undeliverable_dead_letter,
        ));
    }
    Ok(Destination::Sinks {
        drop_failures: policy == crate::spec::OnError::Drop,
        undeliverable_fails: spec.on_undeliverable_dead_letter
            == crate::spec::UndeliverableDeadLetter::Fail,
        pipeline: Arc::from(name.as_str()),
        outputs,
        dead_letter,
    })
}

/// The units not completed by an earlier run, how many were, and counters that start with
/// their rows and units.
fn pending_units(
    plan: &input::InputPlan,
    progress: &Progress,
) -> (Vec<Unit>, usize, Arc<Counters>) {
    let pending: Vec<Unit> = plan
        .units
        .iter()
        .filter(|u| !progress.is_done(&u.id))
        .cloned()
        .collect();
    let skipped = plan.units.len() - pending.len();
    let counters = Arc::new(Counters::default());
    let already: u64 = plan
        .units
        .iter()
        .filter(|u| progress.is_done(&u.id))
        .map(|u| u.rows)
        .sum();
    counters.rows.store(already, Ordering::Relaxed);
    counters.units.store(skipped as u64, Ordering::Relaxed);
    (pending, skipped, counters)
}

/// Runs the units, `files_in_parallel` at once. Each unit is its own task, so units really run
/// on all cores; no new unit starts once the backfill is interrupted.
async fn run_units(
    context: &Arc<Context>,
    pending: Vec<Unit>,
    files_in_parallel: usize,
    shutdown: &CancellationToken,
) -> Vec<UnitResult> {
    futures::stream::iter(pending)
        .take_until(shutdown.clone().cancelled_owned())
        .map(|unit| {
            let context = context.clone();
            tokio::spawn(async move { run_unit(&context, unit).await })
        })
        .buffer_unordered(files_in_parallel.max(1))
        .map(|joined| {
            joined.unwrap_or_else(|e| UnitResult {
                failed: Some(BadFile {
                    file: "(unit task)".to_string(),
                    reason: format!("panicked: {e}"),
                }),
                ..UnitResult::default()
            })
        })
        .collect()
        .await
}

/// Flushes the pipeline's sinks when they were the destination.
async fn flush_sinks(destination: &Destination) {
    if let Destination::Sinks {
        outputs,
        dead_letter,
        ..
    } = destination
    {
        for sink in outputs.iter().chain(dead_letter) {
            let _ = sink.flush(std::time::Duration::from_secs(30)).await;
        }
    }
}

/// Adds the units' results to `summary`; failed units' files are recorded in the progress
/// file.
fn add_results(
    summary: &mut Summary,
    compiled: &CompiledPipeline,
    progress: &Progress,
    results: Vec<UnitResult>,
) {
    for output in &compiled.pipeline.spec.outputs {
        summary.rows_out.insert(output.name.clone(), 0);
    }
    for r in results {
        for (k, v) in r.rows_out {
            *summary.rows_out.entry(k).or_default() += v;
        }
        summary.rows_filtered += r.filtered;
        if r.interrupted {
            continue;
        }
        if let Some(bad) = r.failed {
            summary.units_failed += 1;
            if !summary.bad_files.contains(&bad) {
                let _ = progress.bad_file(bad.clone());
                summary.bad_files.push(bad);
            }
        }
    }
    // Completed units of this run and earlier ones: a resumed run reports (and fails on)
    // rows an earlier run dead-lettered too.
    summary.dead_lettered = progress.dead_lettered();
}

fn total_requests(models: &crate::telemetry::ModelMetrics) -> u64 {
    use prometheus::core::Collector;
    models
        .batch_rows
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_histogram().get_sample_count())
        .sum()
}

/// A stable fingerprint of what the pipeline does, so `--resume` refuses a changed pipeline.
fn spec_hash(compiled: &CompiledPipeline) -> String {
    let text = serde_json::to_string(&compiled.pipeline.spec).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Processes one unit; on any error its partial files are removed and the unit is left for
/// `--resume`.
async fn run_unit(context: &Context, unit: Unit) -> UnitResult {
    let file_name = unit.file.display().to_string();
    let fail = |reason: UnitError| UnitResult {
        failed: Some(BadFile {
            file: file_name.clone(),
            reason: format!("row groups {:?}: {reason}", unit.row_groups),
        }),
        ..UnitResult::default()
    };
    let (tx, mut rx) = mpsc::channel::<read::UnitBatch>(2);
    let reader = {
        let unit = unit.clone();
        let record = context.compiled.record_schema.clone();
        let wanted = context.wanted.clone();
        let batch_rows = context.batch_rows;
        tokio::task::spawn_blocking(move || {
            read::read_unit(&unit, &record, &wanted, batch_rows, |b| {
                tx.blocking_send(b).is_ok()
            })
        })
    };
    let mut sink = match UnitSink::open(context, &unit) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut result = UnitResult::default();
    let mut error = None;
    while let Some(batch) = rx.recv().await {
        if context.shutdown.is_cancelled() {
            error = Some(UnitError::Interrupted);
            break;
        }
        let read = (batch.input.num_rows() + batch.bad.len()) as u64;
        if let Err(e) = handle_batch(context, &file_name, batch, &mut sink, &mut result).await {
            error = Some(e);
            break;
        }
        context.counters.rows.fetch_add(read, Ordering::Relaxed);
    }
    drop(rx);
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error = error.or(Some(e.into())),
        Err(e) => error = error.or(Some(UnitError::Reader(e))),
    }
    if let Some(e) = error {
        sink.abort();
        if context.shutdown.is_cancelled() {
            return UnitResult {
                interrupted: true,
                ..UnitResult::default()
            };
        }
        tracing::error!(file = %file_name, unit = %unit.id, error = %e, "unit failed; its rows are redone by --resume");
        return fail(e);
    }
    match sink.finish().await {
        Ok(rows_out) => result.rows_out = rows_out,
        Err(e) => return fail(e),
    }
    if let Err(e) = context.progress.complete(&unit.id, result.dead) {
        return fail(e.into());
    }
    context.counters.units.fetch_add(1, Ordering::Relaxed);
    result
}

async fn handle_batch(
    context: &Context,
    file: &str,
    batch: read::UnitBatch,
    sink: &mut UnitSink,
    result: &mut UnitResult,
) -> Result<(), UnitError> {
    let read::UnitBatch {
        input,
        offsets,
        bad,
    } = batch;
    let mut dead: Vec<DeadRow> = bad
        .into_iter()
        .map(|(row, message, record)| DeadRow {
            row,
            failure: Failure::new(Stage::Decode, ErrorClass::InvalidValue, message),
            record,
        })
        .collect();
    let record_columns: Vec<usize> = (0..context.compiled.record_schema.fields().len()).collect();
    let originals = input.project(&record_columns)?;
    let processed = process_rows(&context.compiled, &context.stage, input, &context.metrics).await;
    if processed.errored {
        return Err(UnitError::LostRows);
    }
    if !processed.failures.is_empty() {
        let encoded = crate::codec::json::encode_rows(&originals)?;
        for (row, f) in processed.failures {
            dead.push(DeadRow {
                row: offsets.get(row).copied().unwrap_or(-1),
                failure: f,
                record: read::original_bytes(&encoded, row),
            });
        }
    }
    result.filtered += processed.filtered as u64;
    for (i, routed) in processed.routed.into_iter().enumerate() {
        if let Some(routed) = routed {
            sink.write(i, routed.batch).await?;
        }
    }
    if !dead.is_empty() {
        result.dead += dead.len() as u64;
        context
            .counters
            .dead_lettered
            .fetch_add(dead.len() as u64, Ordering::Relaxed);
        sink.dead_letters(file, dead).await?;
    }
    Ok(())
}
