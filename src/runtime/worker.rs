//! Processes one source batch: decode → SQL → inference → route → sinks, with per-record isolation of
//! failures and the pipeline's error policy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;

use crate::ack::{Ack, AckStatus};
use crate::batch::{RawRecord, SourceBatch};
use crate::codec::RecordFailure;
use crate::inference::InferenceStage;
use crate::plan::CompiledPipeline;
use crate::sink::{DeadLetterRecord, ModelContext, Sink, SinkInput};
use crate::spec::OnError;
use crate::telemetry::PipelineMetrics;

/// One output at run time.
pub struct OutputRuntime {
    /// Index into the compiled outputs.
    pub index: usize,
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// `streamgate_records_out_total{output}`.
    pub delivered: prometheus::IntCounter,
}

/// Everything a worker needs; shared by all workers of a pipeline.
pub struct PipelineWorker {
    pub(crate) compiled: Arc<CompiledPipeline>,
    pub(crate) inference: InferenceStage,
    pub(crate) outputs: Vec<OutputRuntime>,
    pub(crate) dead_letter: Option<Arc<dyn Sink>>,
    pub(crate) policy: OnError,
    pub(crate) metrics: PipelineMetrics,
    pub(crate) name: Arc<str>,
}

/// A record that failed in some stage.
struct Failure {
    stage: &'static str,
    class: &'static str,
    message: String,
    model: Option<ModelContext>,
}

impl PipelineWorker {
    /// Processes one batch to the point where every row is either handed to its sinks (which
    /// hold receipts), dead-lettered, dropped by policy, or marks the batch as failed.
    pub async fn process(&self, batch: SourceBatch) {
        let SourceBatch {
            records, receipt, ..
        } = batch;
        let ack = receipt.ack().clone();
        // Record index → failure; BTreeMap keeps dead letters in source order and deduplicates
        // a row that failed in several output filters.
        let mut failures: BTreeMap<usize, Failure> = BTreeMap::new();
        let add = |failures: &mut BTreeMap<usize, Failure>,
                   index: usize,
                   stage: &'static str,
                   f: RecordFailure| {
            failures.entry(index).or_insert(Failure {
                stage,
                class: f.class,
                message: f.message,
                model: None,
            });
        };

        let started = Instant::now();
        let decoded = self.compiled.decoder.decode(&records);
        self.metrics
            .batch_duration("decode")
            .observe(started.elapsed().as_secs_f64());
        for f in decoded.failures {
            add(&mut failures, f.index, "decode", f);
        }

        let started = Instant::now();
        let sql = self.compiled.sql.apply(decoded.batch).await;
        self.metrics
            .batch_duration("sql")
            .observe(started.elapsed().as_secs_f64());
        for f in sql.failures {
            if let Some(&record) = decoded.rows.get(f.index) {
                add(&mut failures, record as usize, "sql", f);
            }
        }
        let sql_record = |row: usize| -> Option<usize> {
            let input_row = *sql.rows.get(row)? as usize;
            decoded.rows.get(input_row).map(|r| *r as usize)
        };

        // Inference: rows that fail leave the batch; `scored_rows` maps the rows that remain
        // back to SQL output rows.
        let (scored, scored_rows) = if self.inference.is_empty() {
            (sql.batch.clone(), None)
        } else {
            let started = Instant::now();
            let output = self.inference.apply(sql.batch.clone()).await;
            self.metrics
                .batch_duration("model")
                .observe(started.elapsed().as_secs_f64());
            let mut failed_records = std::collections::HashSet::new();
            for f in output.failures {
                if let Some(record) = sql_record(f.row) {
                    failed_records.insert(record);
                    failures.entry(record).or_insert(Failure {
                        stage: "model",
                        class: f.error.kind.as_str(),
                        message: format!("step {}: {}", f.step, f.error.message),
                        model: Some(ModelContext {
                            model: f.model,
                            version: f.version,
                            attempts: f.error.attempts,
                        }),
                    });
                }
            }
            // A record whose SQL produced several rows (UNNEST) is dead-lettered whole: its
            // other rows are not published, or replaying the dead letter would duplicate them.
            let keep: Vec<bool> = output
                .rows
                .iter()
                .map(|r| sql_record(*r as usize).is_none_or(|rec| !failed_records.contains(&rec)))
                .collect();
            if failed_records.is_empty() || keep.iter().all(|k| *k) {
                (output.batch, Some(output.rows))
            } else {
                let mask = BooleanArray::from(keep.clone());
                match filter_record_batch(&output.batch, &mask) {
                    Ok(batch) => {
                        let rows = output
                            .rows
                            .iter()
                            .zip(&keep)
                            .filter_map(|(r, k)| k.then_some(*r))
                            .collect();
                        (batch, Some(rows))
                    }
                    Err(e) => {
                        tracing::error!(pipeline = %self.name, error = %e, "filtering rows failed");
                        ack.record(AckStatus::Errored);
                        (output.batch.slice(0, 0), Some(Vec::new()))
                    }
                }
            }
        };
        let row_record = |row: usize| -> Option<usize> {
            match &scored_rows {
                None => sql_record(row),
                Some(rows) => sql_record(*rows.get(row)? as usize),
            }
        };

        let started = Instant::now();
        let rows = scored.num_rows();
        let mut matched_any = vec![false; rows];
        let mut routed = Vec::with_capacity(self.outputs.len());
        for output in &self.outputs {
            let mask = match &self.compiled.outputs[output.index].filter {
                None => None,
                Some(filter) => {
                    let result = filter.evaluate(&scored);
                    for f in result.failures {
                        // Dead-lettered, so not counted as filtered below.
                        if let Some(m) = matched_any.get_mut(f.index) {
                            *m = true;
                        }
                        if let Some(record) = row_record(f.index) {
                            add(&mut failures, record, "route", f);
                        }
                    }
                    Some(result.mask)
                }
            };
            let selected = match &mask {
                None => {
                    matched_any.iter_mut().for_each(|m| *m = true);
                    scored.clone()
                }
                Some(mask) => {
                    mark_matches(mask, &mut matched_any);
                    match filter_record_batch(&scored, mask) {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::error!(pipeline = %self.name, error = %e, "filtering rows failed");
                            ack.record(AckStatus::Errored);
                            continue;
                        }
                    }
                }
            };
            routed.push((output, selected));
        }
        self.metrics
            .batch_duration("route")
            .observe(started.elapsed().as_secs_f64());

        let started = Instant::now();
        for (output, selected) in routed {
            if selected.num_rows() == 0 {
                continue;
            }
            let n = selected.num_rows() as u64;
            match output.sink.send(SinkInput::Rows(selected), &ack).await {
                Ok(()) => output.delivered.inc_by(n),
                Err(e) => {
                    let name = &self.compiled.outputs[output.index].name;
                    tracing::error!(pipeline = %self.name, output = %name, error = %e, "sink rejected the batch; it will be redelivered");
                    ack.record(AckStatus::Errored);
                }
            }
        }
        self.metrics
            .batch_duration("sink")
            .observe(started.elapsed().as_secs_f64());

        let unmatched = matched_any.iter().filter(|m| !**m).count();
        let decoded_ok = decoded.rows.len();
        let sql_failed = failures.values().filter(|f| f.stage == "sql").count();
        let filtered_by_sql = decoded_ok
            .saturating_sub(sql_failed)
            .saturating_sub(distinct_inputs(&sql.rows));
        self.metrics
            .records_filtered
            .inc_by((unmatched + filtered_by_sql) as u64);

        self.handle_failures(&records, failures, &ack).await;
        receipt.delivered();
    }

    async fn handle_failures(
        &self,
        records: &[RawRecord],
        failures: BTreeMap<usize, Failure>,
        ack: &Ack,
    ) {
        if failures.is_empty() {
            return;
        }
        match (self.policy, &self.dead_letter) {
            (OnError::DeadLetter, Some(sink)) => {
                let letters: Vec<DeadLetterRecord> = failures
                    .into_iter()
                    .filter_map(|(index, f)| {
                        let record = records.get(index)?.clone();
                        self.metrics.record_failure(true, f.stage, f.class);
                        Some(DeadLetterRecord {
                            record,
                            pipeline: self.name.clone(),
                            stage: f.stage,
                            class: f.class,
                            message: f.message,
                            model: f.model,
                        })
                    })
                    .collect();
                if let Err(e) = sink.send(SinkInput::DeadLetters(letters), ack).await {
                    tracing::error!(pipeline = %self.name, error = %e, "dead-letter sink failed; the batch will be redelivered");
                    ack.record(AckStatus::Errored);
                }
            }
            (OnError::Drop, _) => {
                for f in failures.values() {
                    self.metrics.record_failure(false, f.stage, f.class);
                }
            }
            _ => {
                for (index, f) in &failures {
                    if let Some(r) = records.get(*index) {
                        tracing::error!(
                            pipeline = %self.name,
                            topic = %r.position.topic,
                            partition = r.position.partition,
                            offset = r.position.offset,
                            stage = f.stage,
                            class = f.class,
                            error = %f.message,
                            "record failed and on_error is fail: stopping without committing it"
                        );
                    }
                }
                ack.record(AckStatus::Rejected);
            }
        }
    }
}

fn mark_matches(mask: &BooleanArray, matched: &mut [bool]) {
    for (i, m) in matched.iter_mut().enumerate() {
        if mask.is_valid(i) && mask.value(i) {
            *m = true;
        }
    }
}

/// Number of distinct input rows that produced at least one output row (`rows` is sorted for
/// stateless plans; UNNEST can repeat a row).
fn distinct_inputs(rows: &[u32]) -> usize {
    let mut n = 0;
    let mut last = None;
    for r in rows {
        if last != Some(*r) {
            n += 1;
            last = Some(*r);
        }
    }
    n
}
