//! The columnar half of a pipeline, shared by the stream worker and the Parquet backfill:
//! SQL → inference → routing over one batch of the SQL `input` table, with every input row
//! ending up routed, filtered, or failed with its stage and reason.

use std::collections::HashSet;
use std::time::Instant;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::record_batch::RecordBatch;

use crate::batch::{Failure, Failures, ModelContext, Stage};
use crate::inference::InferenceStage;
use crate::plan::CompiledPipeline;
use crate::telemetry::PipelineMetrics;

/// Rows routed to one output.
#[derive(Debug)]
pub struct Routed {
    /// The rows.
    pub batch: RecordBatch,
    /// For each row, the input row it came from (several rows may share one with `UNNEST`).
    pub input_rows: Vec<u32>,
}

/// What became of one input batch.
#[derive(Debug)]
pub struct Processed {
    /// Per compiled output, in order: the rows routed to it (`None` when none).
    pub routed: Vec<Option<Routed>>,
    /// Failed input rows, by input row index (stages `sql`, `model`, `route`).
    pub failures: Failures,
    /// Input rows that were neither routed anywhere nor failed (filtered by the SQL or by every
    /// output's `where`).
    pub filtered: usize,
    /// An internal error lost rows: the batch must not be committed.
    pub errored: bool,
}

/// Runs SQL, inference and routing over `input` (a batch of the SQL `input` table schema).
pub async fn process_rows(
    compiled: &CompiledPipeline,
    inference: &InferenceStage,
    input: RecordBatch,
    metrics: &PipelineMetrics,
) -> Processed {
    let n = input.num_rows();
    let mut failures = Failures::new();
    let mut errored = false;

    let started = Instant::now();
    let sql = compiled.sql.apply(input).await;
    metrics
        .batch_duration("sql")
        .observe(started.elapsed().as_secs_f64());
    failures.record_all(Stage::Sql, sql.failures);
    let sql_input = |row: usize| sql.rows.get(row).map(|r| *r as usize);

    // Inference: rows that fail leave the batch; `scored_rows` maps the rest to SQL rows.
    let (scored, scored_rows): (RecordBatch, Vec<u32>) = if inference.is_empty() {
        let rows = (0..sql.batch.num_rows() as u32).collect();
        (sql.batch.clone(), rows)
    } else {
        let started = Instant::now();
        let output = inference.apply(sql.batch.clone()).await;
        metrics
            .batch_duration("model")
            .observe(started.elapsed().as_secs_f64());
        let mut failed_inputs = HashSet::new();
        for f in output.failures {
            if let Some(input_row) = sql_input(f.row) {
                failed_inputs.insert(input_row);
                failures.record(
                    input_row,
                    Failure {
                        stage: Stage::Model,
                        class: f.error.kind.as_str(),
                        message: format!("step {}: {}", f.step, f.error.message),
                        model: Some(ModelContext {
                            model: f.model,
                            version: f.version,
                            attempts: f.error.attempts,
                        }),
                    },
                );
            }
        }
        // An input row whose SQL produced several rows (UNNEST) fails whole: its other rows
        // are not published, or replaying the dead letter would duplicate them.
        let keep: Vec<bool> = output
            .rows
            .iter()
            .map(|r| sql_input(*r as usize).is_none_or(|i| !failed_inputs.contains(&i)))
            .collect();
        if keep.iter().all(|k| *k) {
            (output.batch, output.rows)
        } else {
            match filter_record_batch(&output.batch, &BooleanArray::from(keep.clone())) {
                Ok(batch) => {
                    let rows = output
                        .rows
                        .iter()
                        .zip(&keep)
                        .filter_map(|(r, k)| k.then_some(*r))
                        .collect();
                    (batch, rows)
                }
                Err(e) => {
                    tracing::error!(pipeline = %metrics.name(), error = %e, "filtering rows failed");
                    errored = true;
                    (output.batch.slice(0, 0), Vec::new())
                }
            }
        }
    };
    let input_row = |row: usize| -> Option<usize> { sql_input(*scored_rows.get(row)? as usize) };

    let started = Instant::now();
    let rows = scored.num_rows();
    // Evaluate every filter first: a row whose filter fails for one output is dead-lettered
    // and must not be published to any other (replaying the dead letter would duplicate it).
    let mut masks: Vec<Option<BooleanArray>> = Vec::with_capacity(compiled.outputs.len());
    let mut route_failed = vec![false; rows];
    for output in &compiled.outputs {
        masks.push(output.filter.as_ref().map(|filter| {
            let result = filter.evaluate(&scored);
            for f in result.failures {
                if let Some(failed) = route_failed.get_mut(f.index) {
                    *failed = true;
                }
                if let Some(row) = input_row(f.index) {
                    failures.record(row, Failure::new(Stage::Route, f.class, f.message));
                }
            }
            result.mask
        }));
    }
    let mut matched_any = route_failed.clone();
    let any_failed = route_failed.iter().any(|f| *f);
    let mut routed = Vec::with_capacity(compiled.outputs.len());
    for (output, mask) in compiled.outputs.iter().zip(masks) {
        let mask = match (mask, any_failed) {
            (None, false) => {
                matched_any.iter_mut().for_each(|m| *m = true);
                let input_rows = (0..rows)
                    .map(|r| input_row(r).unwrap_or(0) as u32)
                    .collect();
                routed.push(
                    Some(Routed {
                        batch: scored.clone(),
                        input_rows,
                    })
                    .filter(|r| r.batch.num_rows() > 0),
                );
                continue;
            }
            (None, true) => BooleanArray::from(route_failed.iter().map(|f| !f).collect::<Vec<_>>()),
            (Some(mask), false) => mask,
            (Some(mask), true) => BooleanArray::from(
                (0..rows)
                    .map(|i| !route_failed[i] && mask.is_valid(i) && mask.value(i))
                    .collect::<Vec<_>>(),
            ),
        };
        mark_matches(&mask, &mut matched_any);
        match filter_record_batch(&scored, &mask) {
            Ok(batch) => {
                let input_rows = (0..rows)
                    .filter(|&r| mask.is_valid(r) && mask.value(r))
                    .map(|r| input_row(r).unwrap_or(0) as u32)
                    .collect();
                routed.push(Some(Routed { batch, input_rows }).filter(|r| r.batch.num_rows() > 0))
            }
            Err(e) => {
                tracing::error!(pipeline = %metrics.name(), output = %output.name, error = %e, "filtering rows failed");
                errored = true;
                routed.push(None);
            }
        }
    }
    metrics
        .batch_duration("route")
        .observe(started.elapsed().as_secs_f64());

    // Indexed by input row: a hash set here cost 5% of a backfill's CPU.
    let mut reached = vec![false; n];
    for row in (0..rows).filter(|r| matched_any[*r]).filter_map(input_row) {
        if let Some(reached) = reached.get_mut(row) {
            *reached = true;
        }
    }
    let filtered = reached
        .iter()
        .enumerate()
        .filter(|(i, reached)| !**reached && !failures.contains(*i))
        .count();
    Processed {
        routed,
        failures,
        filtered,
        errored,
    }
}

fn mark_matches(mask: &BooleanArray, matched: &mut [bool]) {
    for (i, m) in matched.iter_mut().enumerate() {
        if mask.is_valid(i) && mask.value(i) {
            *m = true;
        }
    }
}
