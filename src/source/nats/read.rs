//! The NATS source's read loop: messages grouped into micro-batches (`batch.max_rows`,
//! `batch.max_age`), each registered with the settler and handed to a worker.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Incoming;
use super::settle::{Event, Pending, Resolutions};
use crate::ack::{Ack, AckStatus};
use crate::batch::{RawRecord, SourceBatch};
use crate::source::{BatchRouter, PauseSignal};
use crate::telemetry::PipelineMetrics;

/// The read loop's state: the batch being filled and what hands batches on.
pub(super) struct Reader {
    messages: BoxStream<'static, Incoming>,
    pause: PauseSignal,
    max_rows: usize,
    max_age: Duration,
    /// JetStream sequences identify messages across restarts; core NATS counters do not.
    stable_positions: bool,
    metrics: PipelineMetrics,
    /// To the settler.
    events: mpsc::UnboundedSender<Event>,
    /// Where batch acks resolve (forwarded to the settler).
    resolutions: Arc<Resolutions>,
    next_token: u64,
    next_worker: usize,
    records: Vec<RawRecord>,
    pending: Vec<Pending>,
    /// When the batch being filled got its first message (timer clock, wall clock).
    batch_started: Option<(Instant, std::time::Instant)>,
    /// The message stream ended.
    ended: bool,
}

/// What waiting for the next message ended with.
enum Wait {
    /// Stop reading.
    Stop,
    /// A message was added or the pause switch moved: look again.
    Again,
    /// The batch is old enough, or the stream ended: hand on what there is.
    HandOn,
}

impl Reader {
    /// A reader with an empty batch.
    pub(super) fn new(
        messages: BoxStream<'static, Incoming>,
        pause: PauseSignal,
        max_rows: usize,
        max_age: Duration,
        stable_positions: bool,
        metrics: PipelineMetrics,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        Reader {
            messages,
            pause,
            max_rows,
            max_age,
            stable_positions,
            metrics,
            resolutions: Arc::new(Resolutions(events.clone())),
            events,
            next_token: 0,
            next_worker: 0,
            records: Vec::with_capacity(max_rows),
            pending: Vec::with_capacity(max_rows),
            batch_started: None,
            ended: false,
        }
    }

    /// Reads and hands on batches until `stop`, the stream's end, or the workers are gone.
    pub(super) async fn read(&mut self, router: &BatchRouter, stop: &CancellationToken) {
        loop {
            let full = self.records.len() >= self.max_rows;
            let paused = *self.pause.borrow_and_update();
            if !full && !self.ended {
                match self.wait(stop, paused).await {
                    Wait::Stop => return,
                    Wait::Again => continue,
                    Wait::HandOn => {}
                }
            }
            if self.records.is_empty() {
                if self.ended {
                    return;
                }
                continue;
            }
            if !self.hand_on(router, stop).await || self.ended {
                return;
            }
        }
    }

    /// Waits for a message (unless `paused`), the batch's age limit, a move of the pause
    /// switch, or `stop`.
    async fn wait(&mut self, stop: &CancellationToken, paused: bool) -> Wait {
        let due = self.batch_started.map(|(at, _)| at + self.max_age);
        tokio::select! {
            biased;
            _ = stop.cancelled() => Wait::Stop,
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => Wait::HandOn,
            changed = self.pause.changed(), if paused => {
                if changed.is_err() {
                    // The board is gone: nobody can resume; keep reading.
                    self.pause = tokio::sync::watch::channel(false).1;
                }
                Wait::Again
            }
            item = self.messages.next(), if !paused => match item {
                Some(m) => {
                    if self.batch_started.is_none() {
                        self.batch_started = Some((Instant::now(), std::time::Instant::now()));
                    }
                    self.records.push(m.record);
                    self.pending.push(m.pending);
                    Wait::Again
                }
                None => {
                    self.ended = true;
                    Wait::HandOn
                }
            },
        }
    }

    /// Hands the batch (full, old enough, or the stream ended) to a worker, waiting while the
    /// workers are full. Returns `false` when reading must stop: no workers, their queues
    /// closed, or `stop` (the batch is then dropped, which resolves its ack as errored: nak'ed,
    /// redelivered).
    async fn hand_on(&mut self, router: &BatchRouter, stop: &CancellationToken) -> bool {
        let token = self.next_token;
        self.next_token += 1;
        let received_at = self
            .batch_started
            .take()
            .map_or_else(std::time::Instant::now, |(_, s)| s);
        let _ = self
            .events
            .send(Event::Register(token, std::mem::take(&mut self.pending)));
        self.metrics.records_in.inc_by(self.records.len() as u64);
        let ack = Ack::new(token, self.resolutions.clone());
        let batch = SourceBatch {
            records: std::mem::replace(&mut self.records, Vec::with_capacity(self.max_rows)),
            receipt: ack.receipt(),
            received_at,
            stable_positions: self.stable_positions,
        };
        drop(ack);
        if router.is_empty() {
            return false;
        }
        // Any worker will do: NATS has no partitions to keep in order across batches.
        let worker = router.worker(self.next_worker % router.len());
        self.next_worker = self.next_worker.wrapping_add(1);
        tokio::select! {
            permit = worker.reserve() => match permit {
                Ok(permit) => {
                    permit.send(batch);
                    true
                }
                Err(_) => false,
            },
            _ = stop.cancelled() => false,
        }
    }

    /// Stops reading and lets go of the workers and the settler's channel. Records of a partial
    /// batch were never handed on: they are registered and errored, so the server redelivers
    /// them. Returns whether the message stream ended.
    pub(super) fn finish(self, router: BatchRouter) -> bool {
        let Reader {
            messages,
            events,
            resolutions,
            next_token,
            records,
            pending,
            ended,
            ..
        } = self;
        drop(records);
        drop(messages);
        if !pending.is_empty() {
            let _ = events.send(Event::Register(next_token, pending));
            Ack::new(next_token, resolutions.clone()).record(AckStatus::Errored);
        }
        drop(router);
        drop(resolutions);
        drop(events);
        ended
    }
}
