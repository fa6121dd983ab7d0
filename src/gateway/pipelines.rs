//! The pipelines running in the gateway's process (`streamgate run --gateway`): state,
//! totals, throughput and lag for the admin API and the status page.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::runtime::StatusBoard;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::MetricsSnapshot;

/// Counters of one pipeline at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    records_in: f64,
    records_out: f64,
    filtered: f64,
    dead_lettered: f64,
    dropped: f64,
    batches_failed: f64,
}

impl Totals {
    fn read(metrics: &MetricsSnapshot, pipeline: &str) -> Totals {
        let sum = |family| metrics.sum_where(family, "pipeline", pipeline);
        Totals {
            records_in: sum("streamgate_records_in_total"),
            records_out: sum("streamgate_records_out_total"),
            filtered: sum("streamgate_records_filtered_total"),
            dead_lettered: sum("streamgate_records_dead_lettered_total"),
            dropped: sum("streamgate_records_dropped_total"),
            batches_failed: sum("streamgate_batches_failed_total"),
        }
    }
}

/// Pipelines' states and counters, with throughput from the last two samples.
pub struct Pipelines {
    status: StatusBoard,
    metrics: Metrics,
    /// Per pipeline: the latest sample and the one before it.
    samples: Mutex<HashMap<String, [(Instant, Totals); 2]>>,
    /// Set once sampling runs: the gateway's listener and the admin port share one sampler.
    sampling: AtomicBool,
}

impl Pipelines {
    /// A view over `status` and `metrics`.
    pub fn new(status: StatusBoard, metrics: Metrics) -> Self {
        Pipelines {
            status,
            metrics,
            samples: Mutex::new(HashMap::new()),
            sampling: AtomicBool::new(false),
        }
    }

    /// Samples every second until `stop` (throughput is the change between samples a second
    /// apart). Only the first call starts a sampler.
    pub fn start_sampling(self: &Arc<Self>, stop: CancellationToken) {
        if self.sampling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pipelines = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => pipelines.sample(),
                }
            }
        });
    }

    /// The board (pause switches, registries).
    pub fn status(&self) -> &StatusBoard {
        &self.status
    }

    /// Takes a sample of every pipeline's counters (called once a second).
    pub fn sample(&self) {
        let now = Instant::now();
        let names: Vec<String> = self.status.snapshot().into_keys().collect();
        let metrics = self.metrics.snapshot();
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        for name in names {
            let totals = Totals::read(&metrics, &name);
            samples
                .entry(name)
                .and_modify(|pair| *pair = [pair[1], (now, totals)])
                .or_insert([(now, totals); 2]);
        }
    }

    /// Every pipeline as JSON: state, paused, totals, records/s in and out, consumer lag.
    pub fn list(&self) -> Value {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let metrics = self.metrics.snapshot();
        let pipelines: Vec<Value> = self
            .status
            .snapshot()
            .into_iter()
            .map(|(name, state)| {
                let totals = Totals::read(&metrics, &name);
                let (in_rate, out_rate) = match samples.get(&name) {
                    Some([(t0, a), (t1, b)]) if t1 > t0 => {
                        let seconds = (*t1 - *t0).as_secs_f64();
                        (
                            (b.records_in - a.records_in) / seconds,
                            (b.records_out - a.records_out) / seconds,
                        )
                    }
                    _ => (0.0, 0.0),
                };
                let lag = metrics.sum_where("streamgate_consumer_lag", "pipeline", &name);
                let (state, reason) = match state {
                    crate::runtime::PipelineState::Failed(reason) => ("failed", Some(reason)),
                    other => (state_name(&other), None),
                };
                json!({
                    "name": name,
                    "state": state,
                    "reason": reason,
                    "paused": self.status.is_paused(&name),
                    "records_in": totals.records_in as u64,
                    "records_out": totals.records_out as u64,
                    "filtered": totals.filtered as u64,
                    "dead_lettered": totals.dead_lettered as u64,
                    "dropped": totals.dropped as u64,
                    "batches_failed": totals.batches_failed as u64,
                    "errors": (totals.dead_lettered + totals.dropped + totals.batches_failed) as u64,
                    "in_per_second": round1(in_rate),
                    "out_per_second": round1(out_rate),
                    "lag": lag as i64,
                })
            })
            .collect();
        json!({ "pipelines": pipelines })
    }
}

fn state_name(state: &crate::runtime::PipelineState) -> &'static str {
    use crate::runtime::PipelineState::*;
    match state {
        Starting => "starting",
        Running => "running",
        Stopping => "stopping",
        Stopped => "stopped",
        Failed(_) => "failed",
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
