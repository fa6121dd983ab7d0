//! The route step: every output's `where` ([`crate::transform::route::RowFilter`], which only
//! evaluates one expression) combined here into the rows each output gets, with the rows whose
//! filter failed taken out of every output.

use std::time::Instant;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::record_batch::RecordBatch;

use crate::batch::{Failure, Failures, Stage};
use crate::plan::CompiledOutput;
use crate::telemetry::PipelineMetrics;

/// Rows routed to one output.
#[derive(Debug)]
pub struct Routed {
    /// The rows.
    pub batch: RecordBatch,
    /// For each row, the input row it came from (several rows may share one with `UNNEST`).
    pub input_rows: Vec<u32>,
}

/// What the route step did with one scored batch.
pub(super) struct Routing {
    /// Per output, in order: the rows routed to it (`None` when none).
    pub routed: Vec<Option<Routed>>,
    /// Per scored row: whether it reached an output or failed routing (so it is not counted as
    /// filtered).
    pub matched: Vec<bool>,
    /// A batch could not be filtered: rows were lost.
    pub errored: bool,
}

/// Routes the rows of `scored` to `outputs`. `input_row` maps a scored row to its input row,
/// where failures are recorded (stage `route`).
pub(super) fn route(
    outputs: &[CompiledOutput],
    scored: &RecordBatch,
    input_row: &impl Fn(usize) -> Option<usize>,
    failures: &mut Failures,
    metrics: &PipelineMetrics,
) -> Routing {
    let started = Instant::now();
    let rows = scored.num_rows();
    let (masks, route_failed) = evaluate_filters(outputs, scored, input_row, failures);
    let mut matched = route_failed.clone();
    let any_failed = route_failed.iter().any(|f| *f);
    let mut errored = false;
    let mut routed = Vec::with_capacity(outputs.len());
    for (output, mask) in outputs.iter().zip(masks) {
        let Some(mask) = combine(mask, &route_failed, any_failed) else {
            // No filter and no failed row: the output gets every row.
            matched.iter_mut().for_each(|m| *m = true);
            let input_rows = (0..rows)
                .map(|r| input_row(r).unwrap_or(0) as u32)
                .collect();
            routed.push(non_empty(scored.clone(), input_rows));
            continue;
        };
        mark_matches(&mask, &mut matched);
        match filter_record_batch(scored, &mask) {
            Ok(batch) => {
                let input_rows = (0..rows)
                    .filter(|&r| mask.is_valid(r) && mask.value(r))
                    .map(|r| input_row(r).unwrap_or(0) as u32)
                    .collect();
                routed.push(non_empty(batch, input_rows))
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
    Routing {
        routed,
        matched,
        errored,
    }
}

/// Evaluates every output's filter first: a row whose filter fails for one output is
/// dead-lettered and must not be published to any other (replaying the dead letter would
/// duplicate it). Returns each output's mask (`None`: no filter) and which rows failed.
fn evaluate_filters(
    outputs: &[CompiledOutput],
    scored: &RecordBatch,
    input_row: &impl Fn(usize) -> Option<usize>,
    failures: &mut Failures,
) -> (Vec<Option<BooleanArray>>, Vec<bool>) {
    let mut masks: Vec<Option<BooleanArray>> = Vec::with_capacity(outputs.len());
    let mut route_failed = vec![false; scored.num_rows()];
    for output in outputs {
        masks.push(output.filter.as_ref().map(|filter| {
            let result = filter.evaluate(scored);
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
    (masks, route_failed)
}

/// An output's mask with the failed rows taken out; `None` when the output takes every row
/// (no filter, no failed row).
fn combine(
    mask: Option<BooleanArray>,
    route_failed: &[bool],
    any_failed: bool,
) -> Option<BooleanArray> {
    match (mask, any_failed) {
        (None, false) => None,
        (None, true) => Some(BooleanArray::from(
            route_failed.iter().map(|f| !f).collect::<Vec<_>>(),
        )),
        (Some(mask), false) => Some(mask),
        (Some(mask), true) => Some(BooleanArray::from(
            (0..route_failed.len())
                .map(|i| !route_failed[i] && mask.is_valid(i) && mask.value(i))
                .collect::<Vec<_>>(),
        )),
    }
}

fn non_empty(batch: RecordBatch, input_rows: Vec<u32>) -> Option<Routed> {
    Some(Routed { batch, input_rows }).filter(|r| r.batch.num_rows() > 0)
}

fn mark_matches(mask: &BooleanArray, matched: &mut [bool]) {
    for (i, m) in matched.iter_mut().enumerate() {
        if mask.is_valid(i) && mask.value(i) {
            *m = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::sink::PayloadColumns;
    use crate::transform::route::RowFilter;

    fn scored() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("code", DataType::Utf8, true)]));
        let codes = StringArray::from(vec![Some("2"), Some("x"), Some("0")]);
        RecordBatch::try_new(schema, vec![Arc::new(codes)]).unwrap()
    }

    fn output(name: &str, filter: Option<&str>, batch: &RecordBatch) -> CompiledOutput {
        CompiledOutput {
            name: name.to_string(),
            filter: filter.map(|sql| RowFilter::new(sql, batch.schema()).unwrap()),
            payload: PayloadColumns::all(),
        }
    }

    fn rows_of(routed: &Option<Routed>) -> Vec<u32> {
        routed
            .as_ref()
            .map(|r| r.input_rows.clone())
            .unwrap_or_default()
    }

    #[test]
    fn a_row_whose_filter_fails_reaches_no_output() {
        let batch = scored();
        let outputs = [
            output("big", Some("CAST(code AS INT) > 1"), &batch),
            output("all", None, &batch),
        ];
        let metrics = crate::telemetry::Metrics::new().pipeline("p");
        let mut failures = Failures::new();
        let input_row = |row: usize| Some(row + 10);
        let routing = route(&outputs, &batch, &input_row, &mut failures, &metrics);
        assert!(!routing.errored);
        assert_eq!(rows_of(&routing.routed[0]), vec![10]);
        assert_eq!(rows_of(&routing.routed[1]), vec![10, 12]);
        assert_eq!(routing.matched, vec![true, true, true]);
        let failed: Vec<_> = failures.iter().map(|(i, f)| (i, f.stage)).collect();
        assert_eq!(failed, vec![(11, Stage::Route)]);
    }

    #[test]
    fn without_filters_every_output_gets_every_row() {
        let batch = scored();
        let outputs = [
            output("a", None, &batch),
            output("none", Some("false"), &batch),
        ];
        let metrics = crate::telemetry::Metrics::new().pipeline("p");
        let mut failures = Failures::new();
        let routing = route(&outputs, &batch, &|row| Some(row), &mut failures, &metrics);
        assert_eq!(rows_of(&routing.routed[0]), vec![0, 1, 2]);
        assert_eq!(routing.routed[0].as_ref().unwrap().batch.num_rows(), 3);
        assert!(
            routing.routed[1].is_none(),
            "an output matching nothing gets None"
        );
        assert_eq!(routing.matched, vec![true, true, true]);
        assert!(failures.is_empty());
    }
}
