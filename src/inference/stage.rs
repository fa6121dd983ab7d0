//! The inference stage of a pipeline at run time: for each batch, every step runs
//! concurrently; each sends its valid rows to the model versions they are routed to (through
//! the micro-batchers), waits out model outages (backing off, never dead-lettering), and joins
//! the answers back by row. Rows that fail in any step leave the batch with their reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, StringArray, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{filter_record_batch, interleave, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::future::join_all;

use super::batcher::{Batcher, Segment};
use super::error::{ErrorKind, InferError};
use super::model::Model;
use super::registry::ModelRegistry;
use super::retry::backoff;
use super::step::CompiledStep;
use super::types::Answer;

/// A row that failed in a model step.
#[derive(Debug, Clone)]
pub struct ModelFailure {
    /// Row of the stage's input batch.
    pub row: usize,
    /// Step name.
    pub step: Arc<str>,
    /// Model called.
    pub model: Arc<str>,
    /// Version the row was routed to.
    pub version: Arc<str>,
    /// Why.
    pub error: InferError,
}

/// Result of the stage on one batch.
pub struct StageOutput {
    /// Rows that passed every step, with the steps' columns appended.
    pub batch: RecordBatch,
    /// For each output row, its row in the input batch.
    pub rows: Vec<u32>,
    /// Rows that failed, by input row.
    pub failures: Vec<ModelFailure>,
}

struct StepRuntime {
    step: CompiledStep,
    model: Arc<Model>,
    /// One batcher per version of the model, in router order.
    batchers: Vec<Batcher>,
}

/// Running inference steps of one pipeline.
pub struct InferenceStage {
    steps: Vec<StepRuntime>,
    schema: SchemaRef,
}

/// A step's model that the registry does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model `{0}` is not in the registry")]
pub struct UnknownModel(pub String);

/// Shortest pause between probes of a model that is down.
const MIN_OUTAGE_PAUSE: Duration = Duration::from_millis(20);

impl InferenceStage {
    /// Starts the batchers of `steps`; `schema` is the schema of rows after the stage.
    /// Call inside a tokio runtime.
    pub fn start(
        steps: &[CompiledStep],
        registry: &ModelRegistry,
        schema: SchemaRef,
    ) -> Result<Self, UnknownModel> {
        let mut runtimes = Vec::new();
        for step in steps {
            let model = registry
                .get(&step.model)
                .ok_or_else(|| UnknownModel(step.model.clone()))?
                .clone();
            let batchers = (0..model.router.versions.len())
                .map(|v| Batcher::spawn(model.clone(), v, step.contract.clone(), model.batching))
                .collect();
            runtimes.push(StepRuntime {
                step: step.clone(),
                model,
                batchers,
            });
        }
        Ok(InferenceStage {
            steps: runtimes,
            schema,
        })
    }

    /// Whether the pipeline has no inference step.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs every step on `batch` concurrently and joins the results.
    pub async fn apply(&self, batch: RecordBatch) -> StageOutput {
        let n = batch.num_rows();
        let results = join_all(self.steps.iter().map(|s| run_step(s, &batch))).await;
        let mut failed: BTreeMap<usize, ModelFailure> = BTreeMap::new();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for (step_columns, failures) in results {
            columns.extend(step_columns);
            for f in failures {
                failed.entry(f.row).or_insert(f);
            }
        }
        let joined = match RecordBatch::try_new(self.schema.clone(), columns) {
            Ok(b) => b,
            Err(e) => return self.fail_all(n, format!("joining model outputs: {e}")),
        };
        if failed.is_empty() {
            return StageOutput {
                batch: joined,
                rows: (0..n as u32).collect(),
                failures: Vec::new(),
            };
        }
        let keep: BooleanArray = (0..n).map(|r| Some(!failed.contains_key(&r))).collect();
        let rows = (0..n as u32)
            .filter(|r| !failed.contains_key(&(*r as usize)))
            .collect();
        match filter_record_batch(&joined, &keep) {
            Ok(batch) => StageOutput {
                batch,
                rows,
                failures: failed.into_values().collect(),
            },
            Err(e) => self.fail_all(n, format!("removing failed rows: {e}")),
        }
    }

    /// Fails every row (a bug, not bad input): better than publishing half-joined rows or
    /// committing rows that went nowhere.
    fn fail_all(&self, n: usize, message: String) -> StageOutput {
        tracing::error!(error = %message, "inference stage failed a whole batch");
        let error = InferError::new(ErrorKind::Runtime, message);
        StageOutput {
            batch: RecordBatch::new_empty(self.schema.clone()),
            rows: Vec::new(),
            failures: (0..n)
                .map(|row| ModelFailure {
                    row,
                    step: Arc::from("inference"),
                    model: Arc::from(""),
                    version: Arc::from(""),
                    error: error.clone(),
                })
                .collect(),
        }
    }
}

/// Runs one step: returns its columns (one value per input row; failed rows hold nulls) and
/// the failed rows.
async fn run_step(s: &StepRuntime, batch: &RecordBatch) -> (Vec<ArrayRef>, Vec<ModelFailure>) {
    let n = batch.num_rows();
    let inputs = match batch.project(&s.step.input_indices) {
        Ok(b) => b,
        Err(e) => return s.fail_every_row(n, e.to_string()),
    };
    let mut outcomes = Outcomes::new(n);
    let mut pending = route(s, batch, &inputs, &mut outcomes.failures);
    let mut waits = 0u32;
    loop {
        let results = submit(s, &inputs, &pending).await;
        let (held, outage) = outcomes.sort(s, &pending, results);
        let Some(error) = outage else { break };
        waits += 1;
        wait_out_outage(s, waits, &error).await;
        pending = held;
    }
    match assemble(s, &outcomes.answers, &outcomes.located) {
        Ok(columns) => (columns, outcomes.failures),
        Err(e) => s.fail_every_row(n, format!("joining answers: {e}")),
    }
}

impl StepRuntime {
    /// A failure of `row`, routed to `version`.
    fn failure(&self, row: usize, version: usize, error: InferError) -> ModelFailure {
        ModelFailure {
            row,
            step: self.step.name.clone(),
            model: self.model.name.clone(),
            version: self.model.router.versions[version].version.clone(),
            error,
        }
    }

    /// Fails all `n` rows with a runtime error (the step could not run or join).
    fn fail_every_row(&self, n: usize, message: String) -> (Vec<ArrayRef>, Vec<ModelFailure>) {
        let error = InferError::new(ErrorKind::Runtime, message);
        let failures = (0..n).map(|r| self.failure(r, 0, error.clone())).collect();
        (null_columns(self, n), failures)
    }
}

/// Routes the rows to versions (sticky or by weight): returns the rows pending for each
/// version. Rows that cannot be sent fail here, without a call.
fn route(
    s: &StepRuntime,
    batch: &RecordBatch,
    inputs: &RecordBatch,
    failures: &mut Vec<ModelFailure>,
) -> Vec<Vec<u32>> {
    let router = &s.model.router;
    let keys = s.step.sticky_index.map(|i| sticky_hashes(batch.column(i)));
    let mut pending: Vec<Vec<u32>> = vec![Vec::new(); router.versions.len()];
    let invalid = invalid_inputs(inputs, &s.step.contract.inputs);
    let single = router.versions.len() == 1;
    for row in 0..batch.num_rows() {
        let version = if single {
            0
        } else {
            router.choose(keys.as_ref().map(|k| k[row]))
        };
        match invalid.get(&row) {
            Some(message) => {
                let error = InferError::new(ErrorKind::BadInput, message.clone());
                failures.push(s.failure(row, version, error));
            }
            None => pending[version].push(row as u32),
        }
    }
    pending
}

/// Submits each version's pending rows to its batcher, all at once; returns the segments
/// of each version that had rows.
async fn submit(
    s: &StepRuntime,
    inputs: &RecordBatch,
    pending: &[Vec<u32>],
) -> Vec<(usize, Vec<Segment>)> {
    let calls = pending
        .iter()
        .enumerate()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(version, rows)| {
            let indices = UInt32Array::from(rows.clone());
            let batcher = &s.batchers[version];
            async move {
                let segments = match take_record_batch(inputs, &indices) {
                    Ok(sub) => batcher.submit(sub).await,
                    Err(e) => vec![Segment {
                        start: 0,
                        len: indices.len(),
                        result: Err(InferError::new(ErrorKind::Runtime, e.to_string())),
                    }],
                };
                (version, segments)
            }
        });
    join_all(calls).await
}

/// What one step has for its rows so far.
struct Outcomes {
    /// Answers, each for some of the rows.
    answers: Vec<Answer>,
    /// For each row, its answer and its place in it, once answered.
    located: Vec<Option<(usize, usize)>>,
    /// Rows that failed for good.
    failures: Vec<ModelFailure>,
}

impl Outcomes {
    fn new(rows: usize) -> Self {
        Outcomes {
            answers: Vec::new(),
            located: vec![None; rows],
            failures: Vec::new(),
        }
    }

    /// Takes in the segments of one round of calls for the `pending` rows: answers are
    /// located, failures recorded, rows of a model outage held. Returns the held rows of each
    /// version and the outage, if any.
    fn sort(
        &mut self,
        s: &StepRuntime,
        pending: &[Vec<u32>],
        results: Vec<(usize, Vec<Segment>)>,
    ) -> (Vec<Vec<u32>>, Option<InferError>) {
        let mut held: Vec<Vec<u32>> = vec![Vec::new(); pending.len()];
        let mut outage = None;
        for (version, segments) in results {
            let rows = &pending[version];
            for segment in segments {
                let segment_rows = &rows[segment.start..segment.start + segment.len];
                match segment.result {
                    Ok(answer) => {
                        let part = self.answers.len();
                        self.answers.push(answer);
                        for (k, row) in segment_rows.iter().enumerate() {
                            self.located[*row as usize] = Some((part, k));
                        }
                    }
                    Err(e) if e.is_outage() => {
                        held[version].extend_from_slice(segment_rows);
                        outage = Some(e);
                    }
                    Err(e) => {
                        for row in segment_rows {
                            let failure = s.failure(*row as usize, version, e.clone());
                            self.failures.push(failure);
                        }
                    }
                }
            }
        }
        (held, outage)
    }
}

/// The model is down: hold the rows (the source pauses once the queue is full) and probe
/// again after a backoff. Dead-lettering them would flood the dead-letter topic.
async fn wait_out_outage(s: &StepRuntime, waits: u32, error: &InferError) {
    s.model
        .metrics
        .outage_waits
        .with_label_values(&[&*s.model.name])
        .inc();
    let retry_policy = &s.model.policy.retry;
    let pause =
        backoff(waits, retry_policy.backoff, retry_policy.max_backoff).max(MIN_OUTAGE_PAUSE);
    if waits == 1 || waits.is_power_of_two() {
        tracing::warn!(model = %s.model.name, step = %s.step.name, waits, error = %error, "model unavailable; holding the batch and retrying");
    }
    tokio::time::sleep(pause).await;
}

fn null_columns(s: &StepRuntime, n: usize) -> Vec<ArrayRef> {
    s.step
        .fields()
        .iter()
        .map(|f| new_null_array(f.data_type(), n))
        .collect()
}

/// Builds the step's columns (one value per entry of `located`) from the answers' parts.
fn assemble(
    s: &StepRuntime,
    answers: &[Answer],
    located: &[Option<(usize, usize)>],
) -> Result<Vec<ArrayRef>, datafusion::arrow::error::ArrowError> {
    let fields = s.step.fields();
    let mut columns = Vec::with_capacity(fields.len());
    let missing = answers.len();
    let indices: Vec<(usize, usize)> = located.iter().map(|l| l.unwrap_or((missing, 0))).collect();
    for (j, field) in fields
        .iter()
        .enumerate()
        .take(s.step.contract.outputs.len())
    {
        let null = new_null_array(field.data_type(), 1);
        let mut parts: Vec<&dyn Array> = answers.iter().map(|a| a.columns[j].as_ref()).collect();
        parts.push(null.as_ref());
        columns.push(interleave(&parts, &indices)?);
    }
    if s.step.lineage {
        let pick = |f: &dyn Fn(&Answer) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(
                located
                    .iter()
                    .map(|l| l.map_or("", |(p, _)| f(&answers[p]))),
            ))
        };
        columns.push(pick(&|a| &a.model));
        columns.push(pick(&|a| &a.version));
        columns.push(pick(&|a| &a.replica));
        columns.push(Arc::new(Float64Array::from_iter_values(
            located
                .iter()
                .map(|l| l.map_or(0.0, |(p, _)| answers[p].latency.as_secs_f64() * 1000.0)),
        )));
    }
    Ok(columns)
}

/// Rows that cannot be sent, with the reason: a null or non-finite input. Column by column,
/// so clean columns (the usual case) cost one look at their null count.
fn invalid_inputs(inputs: &RecordBatch, names: &[String]) -> BTreeMap<usize, String> {
    use datafusion::arrow::datatypes::{Float32Type, Float64Type};
    let mut invalid = BTreeMap::new();
    for (column, name) in inputs.columns().iter().zip(names) {
        if column.null_count() > 0 {
            for row in (0..column.len()).filter(|r| column.is_null(*r)) {
                invalid
                    .entry(row)
                    .or_insert_with(|| format!("input `{name}` is null"));
            }
        }
        let not_finite: Vec<usize> = match column.data_type() {
            DataType::Float64 => column
                .as_primitive::<Float64Type>()
                .values()
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_finite())
                .map(|(r, _)| r)
                .collect(),
            DataType::Float32 => column
                .as_primitive::<Float32Type>()
                .values()
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_finite())
                .map(|(r, _)| r)
                .collect(),
            _ => Vec::new(),
        };
        for row in not_finite {
            // A null slot holds an arbitrary value: it was reported as null above.
            invalid
                .entry(row)
                .or_insert_with(|| format!("input `{name}` is not a finite number"));
        }
    }
    invalid
}

/// Stable 64-bit hashes of a key column's values (FNV-1a of the display string), so a key maps
/// to the same version across restarts and instances.
fn sticky_hashes(column: &ArrayRef) -> Vec<u64> {
    let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()).ok();
    (0..column.len())
        .map(|row| {
            let text = match &formatter {
                Some(f) if column.is_valid(row) => f.value(row).to_string(),
                _ => String::new(),
            };
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in text.bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            // FNV's low bits are weak for short keys; mix before the modulo.
            h ^= h >> 33;
            h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
            h ^ (h >> 33)
        })
        .collect()
}
