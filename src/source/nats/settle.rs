//! Settling NATS messages once their batch's ack resolves.
//!
//! JetStream messages are acknowledged one by one on their reply subjects: `+ACK` when the
//! batch was delivered end to end, `+TERM` for records that were dead-lettered, `-NAK` with a
//! growing delay when the batch failed transiently, and `+WPI` (progress) every third of
//! `ack_wait` while a batch is still in flight, so slow models do not cause redeliveries.
//! Core NATS messages have no reply to settle: the settler only tracks them so that a
//! graceful stop waits for them and a failure stops the source.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::AckKind;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ack::{AckReceiver, AckStatus};
use crate::telemetry::PipelineMetrics;

/// Longest redelivery delay after repeated transient failures.
const MAX_NAK_DELAY: Duration = Duration::from_secs(60);

/// One message to settle.
#[derive(Debug)]
pub(super) struct Pending {
    /// JetStream ack subject (`None` for core NATS).
    pub reply: Option<Subject>,
    /// Deliveries so far, this one included.
    pub delivered: u64,
}

/// What the settler is told, in order.
pub(super) enum Event {
    /// A batch is about to be handed to a worker.
    Register(u64, Vec<Pending>),
    /// A batch's ack resolved.
    Resolved(u64, AckStatus, Vec<u32>),
}

/// The [`AckReceiver`] of NATS batches: forwards resolutions to the settler task.
pub(super) struct Resolutions(pub mpsc::UnboundedSender<Event>);

impl AckReceiver for Resolutions {
    fn resolved(&self, token: u64, status: AckStatus) {
        let _ = self.0.send(Event::Resolved(token, status, Vec::new()));
    }

    fn resolved_with_dead_letters(&self, token: u64, status: AckStatus, dead_lettered: Vec<u32>) {
        let _ = self.0.send(Event::Resolved(token, status, dead_lettered));
    }
}

/// Settling policy.
#[derive(Debug, Clone)]
pub(super) struct SettlePolicy {
    /// The consumer's ack wait (progress acks go out every third of it).
    pub ack_wait: Duration,
    /// First redelivery delay.
    pub nak_delay: Duration,
    /// The consumer's delivery limit, if any.
    pub max_deliver: Option<u32>,
}

impl SettlePolicy {
    /// Redelivery delay of a message delivered `delivered` times: doubles each time.
    pub(super) fn nak_delay(&self, delivered: u64) -> Duration {
        let doublings = delivered.saturating_sub(1).min(16) as u32;
        self.nak_delay
            .saturating_mul(1u32 << doublings)
            .min(MAX_NAK_DELAY)
    }
}

struct InFlight {
    messages: Vec<Pending>,
    last_progress: Instant,
}

/// Shared outcome of the settler: the first failure, if any.
#[derive(Default, Clone)]
pub(super) struct Failure(Arc<Mutex<Option<String>>>);

impl Failure {
    fn set(&self, reason: String) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(reason);
    }

    /// The first failure recorded.
    pub(super) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The settler task's state.
pub(super) struct Settler {
    client: async_nats::Client,
    policy: SettlePolicy,
    metrics: PipelineMetrics,
    in_flight: HashMap<u64, InFlight>,
    failure: Failure,
    /// Cancelled on a batch failure, so the reader stops.
    stop: CancellationToken,
}

impl Settler {
    /// A settler publishing acks on `client`.
    pub(super) fn new(
        client: async_nats::Client,
        policy: SettlePolicy,
        metrics: PipelineMetrics,
        failure: Failure,
        stop: CancellationToken,
    ) -> Self {
        Settler {
            client,
            policy,
            metrics,
            in_flight: HashMap::new(),
            failure,
            stop,
        }
    }

    /// Settles until `events` closes (the reader stopped and every ack resolved or was
    /// abandoned) or `deadline` passes after `closing` is cancelled; unsettled batches are
    /// then nak'ed so they are redelivered at once. Returns the number of batches abandoned.
    pub(super) async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        closing: CancellationToken,
        drain_timeout: Duration,
    ) -> usize {
        let progress_every = (self.policy.ack_wait / 3).max(Duration::from_millis(100));
        let mut ticker = tokio::time::interval(progress_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let deadline = drain_deadline;
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Register(token, messages)) => {
                        self.in_flight.insert(token, InFlight { messages, last_progress: Instant::now() });
                    }
                    Some(Event::Resolved(token, status, dead)) => self.settle(token, status, &dead).await,
                    None => break,
                },
                _ = ticker.tick() => self.progress(progress_every).await,
                _ = closing.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(Instant::now() + drain_timeout);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
            }
            if drain_deadline.is_some() && self.in_flight.is_empty() {
                break;
            }
        }
        let abandoned = self.in_flight.len();
        let tokens: Vec<u64> = self.in_flight.keys().copied().collect();
        for token in tokens {
            if let Some(batch) = self.in_flight.remove(&token) {
                for m in &batch.messages {
                    self.send(m, AckKind::Nak(None), "nak").await;
                }
            }
        }
        // Acks are fire-and-forget publishes: a flush makes sure the server has them before
        // the connection closes, so a graceful stop does not cause redeliveries.
        if let Err(e) = self.client.flush().await {
            tracing::warn!(pipeline = %self.metrics.name(), error = %e, "flushing acks failed; their messages will be redelivered");
        }
        abandoned
    }

    async fn settle(&mut self, token: u64, status: AckStatus, dead_lettered: &[u32]) {
        let Some(batch) = self.in_flight.remove(&token) else {
            return;
        };
        match status {
            AckStatus::Delivered => {
                for (i, m) in batch.messages.iter().enumerate() {
                    if dead_lettered.contains(&(i as u32)) {
                        self.send(m, AckKind::Term, "term").await;
                    } else {
                        self.send(m, AckKind::Ack, "ack").await;
                    }
                }
            }
            AckStatus::Errored => {
                for m in &batch.messages {
                    if let Some(max) = self.policy.max_deliver
                        && m.delivered >= u64::from(max)
                        && m.reply.is_some()
                    {
                        self.metrics.nats_ack("exhausted").inc();
                        tracing::error!(pipeline = %self.metrics.name(), deliveries = m.delivered, "message failed on its last allowed delivery (max_deliver): the server will not redeliver it");
                    }
                    let delay = self.policy.nak_delay(m.delivered);
                    self.send(m, AckKind::Nak(Some(delay)), "nak").await;
                }
            }
            AckStatus::Rejected => {
                for m in &batch.messages {
                    self.send(m, AckKind::Nak(None), "nak").await;
                }
                self.metrics.batches_failed.inc();
                self.failure.set(
                    "a record failed and on_error is `fail`: stopped without acknowledging it"
                        .to_string(),
                );
                self.stop.cancel();
            }
        }
    }

    async fn progress(&mut self, every: Duration) {
        let now = Instant::now();
        let mut due = Vec::new();
        for batch in self.in_flight.values_mut() {
            if now.duration_since(batch.last_progress) >= every {
                batch.last_progress = now;
                due.extend(batch.messages.iter().filter_map(|m| m.reply.clone()));
            }
        }
        for reply in due {
            self.publish(reply, AckKind::Progress, "progress").await;
        }
    }

    async fn send(&self, message: &Pending, kind: AckKind, label: &'static str) {
        if let Some(reply) = &message.reply {
            self.publish(reply.clone(), kind, label).await;
        }
    }

    async fn publish(&self, reply: Subject, kind: AckKind, label: &'static str) {
        let payload: Bytes = kind.into();
        match self.client.publish(reply, payload).await {
            Ok(()) => self.metrics.nats_ack(label).inc(),
            // The connection is gone: the server redelivers after ack_wait; nothing is lost.
            Err(e) => {
                tracing::warn!(pipeline = %self.metrics.name(), error = %e, "could not send a JetStream ack")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nak_delay_doubles_up_to_a_minute() {
        let p = SettlePolicy {
            ack_wait: Duration::from_secs(30),
            nak_delay: Duration::from_secs(1),
            max_deliver: None,
        };
        assert_eq!(p.nak_delay(1), Duration::from_secs(1));
        assert_eq!(p.nak_delay(2), Duration::from_secs(2));
        assert_eq!(p.nak_delay(4), Duration::from_secs(8));
        assert_eq!(p.nak_delay(40), MAX_NAK_DELAY);
        assert_eq!(p.nak_delay(0), Duration::from_secs(1));
    }
}
