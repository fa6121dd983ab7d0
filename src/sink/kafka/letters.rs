//! Dead letters to Kafka, deliverable whatever the limits.
//!
//! A dead letter is first sent bounded to the producer's `message.max.bytes` (see
//! [`DeadLetterRecord::fit`]). Two refusals remain, and neither may stall the partition:
//!
//! - librdkafka refuses it at once (its size estimate differs from ours): it is sent again as
//!   its context alone, and one refused even then is returned to the caller as undeliverable;
//! - the broker refuses it later, in the delivery report, because the topic's
//!   `max.message.bytes` is below the producer's limit: a task watching that letter's
//!   delivery sends its context alone, and applies the pipeline's
//!   `on_undeliverable_dead_letter` policy if even that is refused.
//!
//! The letter's batch stays unresolved until its letter is settled either way, so nothing is
//! committed past a record whose dead letter is still in doubt.

use std::sync::{Arc, Mutex};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::oneshot;

use super::Destination;
use super::produce::NativeHeaders;
use crate::ack::{Ack, AckReceiver, AckStatus, PendingReceipt};
use crate::batch::ErrorClass;
use crate::sink::dead_letter::Letter;
use crate::sink::{DeadLetterRecord, Rejected, SinkError, UndeliverableHook, UndeliverableLetter};

/// Produces `records` as dead letters to `destination` (see the module docs). Returns the
/// letters refused at once even as their context alone.
pub(super) async fn send(
    destination: &Arc<Destination>,
    max_message_bytes: usize,
    late_undeliverable: Option<&UndeliverableHook>,
    records: Vec<DeadLetterRecord>,
    ack: &Ack,
) -> Result<Rejected, SinkError> {
    let mut undeliverable = Vec::new();
    for (i, record) in records.into_iter().enumerate() {
        let (watch, outcome) = LetterWatch::start();
        match produce_letter(destination, &record.fit(max_message_bytes), watch.receipt()).await {
            Ok(()) => {
                drop(watch);
                tokio::spawn(settle_when_delivered(
                    destination.clone(),
                    outcome,
                    ack.receipt(),
                    record,
                    late_undeliverable.cloned(),
                ));
                continue;
            }
            // librdkafka's estimate of the size differs from ours: the context alone.
            Err((RDKafkaErrorCode::MessageSizeTooLarge, _watched)) => {}
            Err((code, _watched)) => return Err(production_error(code)),
        }
        match produce_letter(destination, &record.fit(0), ack.receipt()).await {
            Ok(()) => {}
            Err((code @ RDKafkaErrorCode::MessageSizeTooLarge, receipt)) => {
                // Nothing is in flight for it: the pipeline's policy decides what it means.
                receipt.delivered();
                undeliverable.push((
                    i,
                    ErrorClass::MessageTooLarge,
                    KafkaError::MessageProduction(code).to_string(),
                ));
            }
            Err((code, _resolves_as_errored)) => return Err(production_error(code)),
        }
    }
    Ok(undeliverable)
}

fn production_error(code: RDKafkaErrorCode) -> SinkError {
    SinkError::Kafka(KafkaError::MessageProduction(code).to_string())
}

/// Resolves `receipt` (the letter's share of its batch) once the broker answered for the
/// letter: delivered, or, refused as too large, after its context alone is delivered or the
/// policy has decided.
async fn settle_when_delivered(
    destination: Arc<Destination>,
    outcome: oneshot::Receiver<Outcome>,
    receipt: PendingReceipt,
    record: DeadLetterRecord,
    policy: Option<UndeliverableHook>,
) {
    match outcome.await {
        Ok(Outcome::Delivered) => return receipt.delivered(),
        Ok(Outcome::RefusedTooLarge) => {}
        // Any other failure is for the batch to retry, as for any message.
        Ok(Outcome::Failed) | Err(_) => return receipt.resolve(AckStatus::Errored),
    }
    tracing::warn!(
        pipeline = %record.pipeline,
        topic = %record.record.position.topic,
        partition = record.record.position.partition,
        offset = record.record.position.offset,
        "the broker refused a dead letter as too large (the topic's max.message.bytes is below \
         the producer's message.max.bytes); sending its context alone"
    );
    let (watch, outcome) = LetterWatch::start();
    let refusal = match produce_letter(&destination, &record.fit(0), watch.receipt()).await {
        Ok(()) => {
            drop(watch);
            match outcome.await {
                Ok(Outcome::Delivered) => return receipt.delivered(),
                Ok(Outcome::RefusedTooLarge) => RDKafkaErrorCode::MessageSizeTooLarge,
                Ok(Outcome::Failed) | Err(_) => return receipt.resolve(AckStatus::Errored),
            }
        }
        Err((code @ RDKafkaErrorCode::MessageSizeTooLarge, _watched)) => code,
        Err((_, _watched)) => return receipt.resolve(AckStatus::Errored),
    };
    let why = KafkaError::MessageProduction(refusal).to_string();
    let status = match policy {
        Some(policy) => policy(UndeliverableLetter {
            position: &record.record.position,
            stage: record.failure.stage,
            class: record.failure.class,
            why: &why,
        }),
        // No pipeline policy to apply (a sink used on its own): retried like any failure.
        None => AckStatus::Errored,
    };
    receipt.resolve(status);
}

/// Produces one letter: its original headers, then its context headers.
async fn produce_letter(
    destination: &Destination,
    letter: &Letter<'_>,
    receipt: PendingReceipt,
) -> Result<(), (RDKafkaErrorCode, PendingReceipt)> {
    let mut headers =
        NativeHeaders::with_capacity(letter.original_headers.len() + letter.context.len());
    for (k, v) in &letter.original_headers {
        headers.add(k, v.as_deref());
    }
    for (k, v) in &letter.context {
        headers.add(k, Some(v.as_bytes()));
    }
    destination
        .try_produce(letter.key, letter.payload, Some(headers), receipt)
        .await
}

/// How the broker answered for one letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    RefusedTooLarge,
    Failed,
}

/// Receives one letter's delivery report: the letter travels with a receipt of an ack of its
/// own, which reports here when librdkafka settles it.
struct LetterWatch(Mutex<Option<oneshot::Sender<Outcome>>>);

impl LetterWatch {
    /// A fresh ack for one letter, and where its outcome arrives.
    fn start() -> (Ack, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        (Ack::new(0, Arc::new(LetterWatch(Mutex::new(Some(tx))))), rx)
    }

    fn report(&self, outcome: Outcome) {
        let sender = match self.0.lock() {
            Ok(mut s) => s.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(sender) = sender {
            // The task may be gone (runtime shutting down): its receipt then resolves as
            // errored on its own.
            let _ = sender.send(outcome);
        }
    }
}

impl AckReceiver for LetterWatch {
    fn resolved(&self, _token: u64, status: AckStatus) {
        self.report(match status {
            AckStatus::Delivered => Outcome::Delivered,
            _ => Outcome::Failed,
        });
    }

    fn resolved_in_full(
        &self,
        _token: u64,
        status: AckStatus,
        _dead_lettered: Vec<u32>,
        refused_too_large: bool,
    ) {
        self.report(match (status, refused_too_large) {
            (AckStatus::Delivered, _) => Outcome::Delivered,
            (_, true) => Outcome::RefusedTooLarge,
            _ => Outcome::Failed,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_tells_a_size_refusal_from_other_failures() {
        for (resolve, expected) in [
            (0, Outcome::Delivered),
            (1, Outcome::RefusedTooLarge),
            (2, Outcome::Failed),
            (3, Outcome::Failed),
        ] {
            let (ack, mut outcome) = LetterWatch::start();
            let receipt = ack.receipt();
            drop(ack);
            assert!(
                outcome.try_recv().is_err(),
                "reported before the receipt settled"
            );
            match resolve {
                0 => receipt.delivered(),
                1 => receipt.refused_too_large(),
                2 => receipt.resolve(AckStatus::Errored),
                _ => drop(receipt),
            }
            assert_eq!(outcome.try_recv().unwrap(), expected);
        }
    }
}
