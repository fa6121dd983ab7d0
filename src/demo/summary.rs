//! The demo's live summary line, read from the same metric families `/metrics` serves
//! (through their typed reads, [`crate::telemetry::stats`]).

use std::time::Instant;

use crate::telemetry::Metrics;

/// Computes per-second rates between calls.
pub(crate) struct Summary {
    pipeline: String,
    metrics: Metrics,
    last: Option<(Instant, u64)>,
    started: Instant,
}

/// One reading of the demo pipeline's counters.
struct Counts {
    records_in: u64,
    alerts: u64,
    scored: u64,
    filtered: u64,
    dead_lettered: u64,
    dropped: u64,
    p50: Option<f64>,
    p99: Option<f64>,
}

impl Summary {
    /// A summary of `pipeline`.
    pub(crate) fn new(pipeline: &str, metrics: &Metrics) -> Self {
        Summary {
            pipeline: pipeline.to_string(),
            metrics: metrics.clone(),
            last: None,
            started: Instant::now(),
        }
    }

    fn counts(&self) -> Counts {
        let p = &self.pipeline;
        let stats = self.metrics.pipeline_stats().remove(p).unwrap_or_default();
        let out = |name: &str| {
            stats
                .records_out_by_output
                .get(name)
                .copied()
                .unwrap_or_default()
        };
        Counts {
            records_in: stats.records_in,
            alerts: out("alerts"),
            scored: out("scored"),
            filtered: stats.filtered,
            dead_lettered: stats.dead_lettered,
            dropped: stats.dropped,
            p50: self.metrics.end_to_end_quantile(p, 0.5),
            p99: self.metrics.end_to_end_quantile(p, 0.99),
        }
    }

    /// Records that reached an outcome. In the demo every SQL row goes to `scored`, so each
    /// record ends in exactly one of: scored, filtered, dead-lettered, dropped.
    pub(crate) fn accounted(&self) -> u64 {
        let c = self.counts();
        c.scored + c.filtered + c.dead_lettered + c.dropped
    }

    /// One line: rates, counts per output, dead letters, latency.
    pub(crate) fn line(&mut self, produced: u64) -> String {
        let c = self.counts();
        let now = Instant::now();
        let (since, before) = self.last.unwrap_or((self.started, 0));
        let rate =
            (c.records_in - before) as f64 / now.duration_since(since).as_secs_f64().max(1e-3);
        self.last = Some((now, c.records_in));
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{:.0}ms", s * 1000.0));
        format!(
            "[{:>4.0}s] produced {produced} | in {} ({rate:.0}/s) | alerts {} | scored {} | filtered {} | dead-lettered {} | e2e p50 ≤{} p99 ≤{}",
            now.duration_since(self.started).as_secs_f64(),
            c.records_in,
            c.alerts,
            c.scored,
            c.filtered,
            c.dead_lettered,
            ms(c.p50),
            ms(c.p99),
        )
    }

    /// Closing report.
    pub(crate) fn final_report(&self, produced: u64) -> String {
        let c = self.counts();
        format!(
            "done: {produced} transactions produced, {} read, {} alerts, {} scored, {} dead-lettered in {:.1}s",
            c.records_in,
            c.alerts,
            c.scored,
            c.dead_lettered,
            self.started.elapsed().as_secs_f64()
        )
    }
}
