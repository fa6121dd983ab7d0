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

/// The counters throughput is computed from, at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    records_in: u64,
    records_out: u64,
}

/// Pipelines' states and counters, with throughput from the last two samples.
pub(crate) struct Pipelines {
    status: StatusBoard,
    metrics: Metrics,
    /// Per pipeline: the latest sample and the one before it.
    samples: Mutex<HashMap<String, [(Instant, Sample); 2]>>,
    /// Set once sampling runs: the gateway's listener and the admin port share one sampler.
    sampling: AtomicBool,
}

impl Pipelines {
    /// A view over `status` and `metrics`.
    pub(crate) fn new(status: StatusBoard, metrics: Metrics) -> Self {
        Pipelines {
            status,
            metrics,
            samples: Mutex::new(HashMap::new()),
            sampling: AtomicBool::new(false),
        }
    }

    /// Samples every second until `stop` (throughput is the change between samples a second
    /// apart). Only the first call starts a sampler.
    pub(crate) fn start_sampling(self: &Arc<Self>, stop: CancellationToken) {
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
    pub(crate) fn status(&self) -> &StatusBoard {
        &self.status
    }

    /// Takes a sample of every pipeline's counters (called once a second).
    pub(crate) fn sample(&self) {
        let now = Instant::now();
        let names: Vec<String> = self.status.snapshot().into_keys().collect();
        let stats = self.metrics.pipeline_stats();
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        for name in names {
            let totals = stats.get(&name).cloned().unwrap_or_default();
            let sample = Sample {
                records_in: totals.records_in,
                records_out: totals.records_out,
            };
            samples
                .entry(name)
                .and_modify(|pair| *pair = [pair[1], (now, sample)])
                .or_insert([(now, sample); 2]);
        }
    }

    /// Every pipeline as JSON: state, paused, totals, records/s in and out, consumer lag.
    pub(crate) fn list(&self) -> Value {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut stats = self.metrics.pipeline_stats();
        let pipelines: Vec<Value> = self
            .status
            .snapshot()
            .into_iter()
            .map(|(name, state)| {
                let totals = stats.remove(&name).unwrap_or_default();
                let (in_rate, out_rate) = rates(samples.get(&name));
                let (state, reason) = match state {
                    crate::runtime::PipelineState::Failed(reason) => ("failed", Some(reason)),
                    other => (state_name(&other), None),
                };
                json!({
                    "name": name,
                    "state": state,
                    "reason": reason,
                    "paused": self.status.is_paused(&name),
                    "records_in": totals.records_in,
                    "records_out": totals.records_out,
                    "filtered": totals.filtered,
                    "dead_lettered": totals.dead_lettered,
                    "dropped": totals.dropped,
                    "batches_failed": totals.batches_failed,
                    "errors": totals.errors(),
                    "in_per_second": round1(in_rate),
                    "out_per_second": round1(out_rate),
                    "lag": totals.consumer_lag,
                })
            })
            .collect();
        json!({ "pipelines": pipelines })
    }
}

/// Records per second in and out between the last two samples (0 before there are two).
fn rates(samples: Option<&[(Instant, Sample); 2]>) -> (f64, f64) {
    match samples {
        Some([(t0, a), (t1, b)]) if t1 > t0 => {
            let seconds = (*t1 - *t0).as_secs_f64();
            let rate = |before: u64, after: u64| after.saturating_sub(before) as f64 / seconds;
            (
                rate(a.records_in, b.records_in),
                rate(a.records_out, b.records_out),
            )
        }
        _ => (0.0, 0.0),
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
        Held(_) => "held",
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
