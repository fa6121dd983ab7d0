//! Processes one source batch: decode, then SQL → inference → route ([`super::rows`]), then
//! sinks, with per-record isolation of failures and the pipeline's error policy.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::record_batch::RecordBatch;

use super::failure_guard::{FailureGuard, Verdict};
use super::rows::{Processed, Routed, process_rows};
use crate::ack::{Ack, AckStatus};
use crate::batch::{ErrorClass, Failure, Failures, Position, RawRecord, SourceBatch, Stage};
use crate::connect::transaction::KafkaTransaction;
use crate::inference::InferenceStage;
use crate::plan::CompiledPipeline;
use crate::sink::{DeadLetterRecord, RowOrigins, Sink, SinkInput};
use crate::sink::{UndeliverableHook, UndeliverableLetter};
use crate::spec::{OnError, UndeliverableDeadLetter};
use crate::telemetry::PipelineMetrics;

/// One output at run time.
pub(crate) struct OutputRuntime {
    /// Index into the compiled outputs.
    pub index: usize,
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// Output name (part of row identities).
    pub name: Arc<str>,
    /// `streamgate_records_out_total{output}`.
    pub delivered: prometheus::IntCounter,
}

/// Everything a worker needs; shared by all workers of a pipeline.
pub(crate) struct PipelineWorker {
    pub(crate) compiled: Arc<CompiledPipeline>,
    pub(crate) inference: InferenceStage,
    pub(crate) outputs: Vec<OutputRuntime>,
    pub(crate) dead_letter: Option<Arc<dyn Sink>>,
    pub(crate) policy: OnError,
    /// The `on_undeliverable_dead_letter` policy (see [`undeliverable_policy`]).
    pub(crate) undeliverable: UndeliverableHook,
    pub(crate) metrics: PipelineMetrics,
    pub(crate) name: Arc<str>,
    /// Under exactly-once, the transaction every batch's messages and offsets go into.
    pub(crate) transaction: Option<Arc<KafkaTransaction>>,
    /// Holds batches instead of dead-lettering them when most records fail.
    pub(crate) failure_guard: Arc<FailureGuard>,
}

impl PipelineWorker {
    /// Processes one batch to the point where every row is either handed to its sinks (which
    /// hold receipts), dead-lettered, dropped by policy, or marks the batch as failed.
    pub(crate) async fn process(&self, batch: SourceBatch) {
        let SourceBatch {
            records,
            receipt,
            stable_positions,
            ..
        } = batch;
        let ack = receipt.ack().clone();
        let (mut failures, processed, record_of_row) = self.process_records(&records).await;
        if processed.errored {
            ack.record(AckStatus::Errored);
        }
        let rows = RowSources {
            records: &records,
            record_of_row: &record_of_row,
            stable_positions,
        };
        // Under exactly-once, no commit runs while this batch hands its messages over.
        let pass = match &self.transaction {
            Some(transaction) => Some(transaction.send_pass().await),
            None => None,
        };
        self.send_outputs(&rows, processed.routed, &ack, &mut failures)
            .await;
        self.metrics
            .records_filtered
            .inc_by(processed.filtered as u64);

        self.handle_failures(&records, failures, &ack).await;
        if let Some(transaction) = &self.transaction {
            self.close_in_transaction(transaction, &records, &ack);
        }
        drop(pass);
        receipt.delivered();
    }

    /// Puts the batch's offsets into the transaction its messages went into, or, when any of
    /// them failed, poisons the transaction: it is aborted, and the pipeline restarts from the
    /// committed offsets.
    fn close_in_transaction(
        &self,
        transaction: &KafkaTransaction,
        records: &[RawRecord],
        ack: &Ack,
    ) {
        let status = ack.status();
        if status.is_committable() {
            transaction.record(
                records
                    .iter()
                    .map(|r| (&r.position.topic, r.position.partition, r.position.offset)),
            );
        } else if let Some(first) = records.first() {
            let p = &first.position;
            transaction.poison(format!(
                "the batch at {}[{}] offset {} was not delivered ({status:?})",
                p.topic, p.partition, p.offset
            ));
        }
    }

    /// Decodes the records and runs SQL, inference and routing over them. Returns the failures
    /// (by record index, in source order, so are the dead letters), the processed rows and,
    /// per decoded row, its record. While the failure guard holds the batch (most records
    /// fail), it is processed again every `retry_every`, and nothing of it is sent.
    async fn process_records(&self, records: &[RawRecord]) -> (Failures, Processed, Vec<u32>) {
        loop {
            let mut failures = Failures::new();
            let (decoded, record_of_row) = self.decode(records, &mut failures).await;
            let mut processed =
                process_rows(&self.compiled, &self.inference, decoded, &self.metrics).await;
            // Rows of the decoded batch back to the records they came from.
            for (row, f) in std::mem::take(&mut processed.failures) {
                if let Some(&record) = record_of_row.get(row) {
                    failures.record(record as usize, f);
                }
            }
            let verdict = self.failure_guard.observe(records.len(), failures.len());
            if verdict == Verdict::Proceed || self.failure_guard.wait_to_retry().await {
                return (failures, processed, record_of_row);
            }
        }
    }

    /// Decodes the records into the SQL input table; records that fail are recorded (stage
    /// `decode`). Returns the batch and, for each of its rows, its record.
    async fn decode(
        &self,
        records: &[RawRecord],
        failures: &mut Failures,
    ) -> (RecordBatch, Vec<u32>) {
        // Avro: fetch unknown writer schemas first (waits while the registry is down).
        self.compiled.decoder.prepare(records).await;
        let started = Instant::now();
        let decoded = self.compiled.decoder.decode(records);
        self.metrics
            .batch_duration("decode")
            .observe(started.elapsed().as_secs_f64());
        failures.record_all(Stage::Decode, decoded.failures);
        (decoded.batch, decoded.rows)
    }

    /// Hands each output its routed rows.
    async fn send_outputs(
        &self,
        rows: &RowSources<'_>,
        routed: Vec<Option<Routed>>,
        ack: &Ack,
        failures: &mut Failures,
    ) {
        let started = Instant::now();
        let mut positions: Option<Arc<[Position]>> = None;
        for (output, routed) in self.outputs.iter().zip(routed) {
            let Some(routed) = routed else { continue };
            let origins = (rows.stable_positions && output.sink.wants_origins())
                .then(|| rows.origins(output, &routed, &mut positions));
            self.send_output(output, routed, origins, rows, ack, failures)
                .await;
        }
        self.metrics
            .batch_duration("sink")
            .observe(started.elapsed().as_secs_f64());
    }

    /// Sends one output's rows. Rows the sink could not encode: their records are
    /// dead-lettered (a record already published to another output is then published again
    /// when the dead letter is replayed). A sink that rejects the batch fails it.
    async fn send_output(
        &self,
        output: &OutputRuntime,
        routed: Routed,
        origins: Option<RowOrigins>,
        rows: &RowSources<'_>,
        ack: &Ack,
        failures: &mut Failures,
    ) {
        let n = routed.batch.num_rows() as u64;
        let input = SinkInput::Rows {
            batch: routed.batch,
            origins,
        };
        match output.sink.send(input, ack).await {
            Ok(rejected) => {
                output.delivered.inc_by(n - rejected.len() as u64);
                for (row, class, message) in rejected {
                    let record = routed
                        .input_rows
                        .get(row)
                        .and_then(|&input| rows.record_of_row.get(input as usize));
                    if let Some(&record) = record {
                        let message = format!("output {}: {message}", output.name);
                        failures
                            .record(record as usize, Failure::new(Stage::Encode, class, message));
                    }
                }
            }
            Err(e) => {
                let name = &self.compiled.outputs[output.index].name;
                tracing::error!(pipeline = %self.name, output = %name, error = %e, "sink rejected the batch; it will be redelivered");
                ack.record(AckStatus::Errored);
            }
        }
    }

    /// Applies the error policy to the failed records: dead letters, drop (counted), or fail
    /// the batch without committing it.
    async fn handle_failures(&self, records: &[RawRecord], failures: Failures, ack: &Ack) {
        if failures.is_empty() {
            return;
        }
        match (self.policy, &self.dead_letter) {
            (OnError::DeadLetter, Some(sink)) => {
                self.dead_letter(sink, records, failures, ack).await;
            }
            (OnError::Drop, _) => {
                for f in failures.values() {
                    self.metrics
                        .record_failure(false, f.stage.as_str(), f.class.as_str());
                }
            }
            _ => {
                for (index, f) in failures.iter() {
                    if let Some(r) = records.get(index) {
                        tracing::error!(
                            pipeline = %self.name,
                            topic = %r.position.topic,
                            partition = r.position.partition,
                            offset = r.position.offset,
                            stage = f.stage.as_str(),
                            class = f.class.as_str(),
                            error = %f.message,
                            "record failed and on_error is fail: stopping without committing it"
                        );
                    }
                }
                ack.record(AckStatus::Rejected);
            }
        }
    }

    /// Sends the failed records to the dead-letter sink. Letters it refuses for good go through
    /// the undeliverable policy; if the sink fails, the batch is redelivered.
    async fn dead_letter(
        &self,
        sink: &Arc<dyn Sink>,
        records: &[RawRecord],
        failures: Failures,
        ack: &Ack,
    ) {
        let indices: Vec<usize> = failures.indices().collect();
        let letters: Vec<DeadLetterRecord> = failures
            .into_iter()
            .filter_map(|(index, f)| {
                let record = records.get(index)?.clone();
                self.metrics
                    .record_failure(true, f.stage.as_str(), f.class.as_str());
                Some(DeadLetterRecord {
                    record,
                    pipeline: self.name.clone(),
                    failure: f,
                })
            })
            .collect();
        let contexts: Vec<(Position, Stage, ErrorClass)> = letters
            .iter()
            .map(|l| (l.record.position.clone(), l.failure.stage, l.failure.class))
            .collect();
        match sink.send(SinkInput::DeadLetters(letters), ack).await {
            Ok(undeliverable) => {
                let mut status = AckStatus::Delivered;
                for (letter, _, why) in &undeliverable {
                    let Some((position, stage, class)) = contexts.get(*letter) else {
                        continue;
                    };
                    status = status.max((self.undeliverable)(UndeliverableLetter {
                        position,
                        stage: *stage,
                        class: *class,
                        why,
                    }));
                }
                if status == AckStatus::Delivered {
                    ack.note_dead_lettered(indices);
                } else {
                    ack.record(status);
                }
            }
            Err(e) => {
                tracing::error!(pipeline = %self.name, error = %e, "dead-letter sink failed; the batch will be redelivered");
                ack.record(AckStatus::Errored);
            }
        }
    }
}

/// Where a batch's rows came from: its records and, per decoded row, the record's index.
struct RowSources<'a> {
    records: &'a [RawRecord],
    record_of_row: &'a [u32],
    /// Whether the positions identify the records across restarts (row origins are given to
    /// sinks only then).
    stable_positions: bool,
}

impl RowSources<'_> {
    /// The records each routed row came from, for sinks that want them. The positions are
    /// collected once per batch, in `positions`, and shared by all outputs.
    fn origins(
        &self,
        output: &OutputRuntime,
        routed: &Routed,
        positions: &mut Option<Arc<[Position]>>,
    ) -> RowOrigins {
        let records = positions
            .get_or_insert_with(|| self.records.iter().map(|r| r.position.clone()).collect())
            .clone();
        RowOrigins {
            records,
            record_of_row: routed
                .input_rows
                .iter()
                .map(|&row| {
                    self.record_of_row
                        .get(row as usize)
                        .copied()
                        .unwrap_or(u32::MAX)
                })
                .collect(),
            output: output.name.clone(),
        }
    }
}

/// The pipeline's `on_undeliverable_dead_letter` policy for dead letters its sink refused for
/// good, even in bounded form: each is logged with its position and counted in
/// `streamgate_dead_letters_undeliverable_total`; `drop` lets its batch commit, `fail` stops
/// the pipeline without committing. Used for refusals within `send` and for those a broker
/// sends later.
pub(crate) fn undeliverable_policy(
    name: Arc<str>,
    metrics: PipelineMetrics,
    policy: UndeliverableDeadLetter,
) -> UndeliverableHook {
    Arc::new(move |letter: UndeliverableLetter<'_>| {
        metrics.dead_letter_undeliverable(letter.stage.as_str(), letter.class.as_str());
        tracing::error!(
            pipeline = %name,
            topic = %letter.position.topic,
            partition = letter.position.partition,
            offset = letter.position.offset,
            stage = letter.stage.as_str(),
            class = letter.class.as_str(),
            error = %letter.why,
            ?policy,
            "the dead-letter sink refused this record even in bounded form"
        );
        match policy {
            UndeliverableDeadLetter::Drop => AckStatus::Delivered,
            UndeliverableDeadLetter::Fail => AckStatus::Rejected,
        }
    })
}
