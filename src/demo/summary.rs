//! The demo's live summary line, read from the same metric families `/metrics` serves.

use std::time::Instant;

use prometheus::proto::MetricFamily;

use crate::telemetry::Metrics;

/// Computes per-second rates between calls.
pub struct Summary {
    pipeline: String,
    metrics: Metrics,
    last: Option<(Instant, u64)>,
    started: Instant,
}

fn counter_sum(
    families: &[MetricFamily],
    name: &str,
    pipeline: &str,
    label: Option<(&str, &str)>,
) -> u64 {
    families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            let has = |k: &str, v: &str| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v)
            };
            has("pipeline", pipeline) && label.is_none_or(|(k, v)| has(k, v))
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// Quantile estimate from a histogram's cumulative buckets (upper bound of the bucket).
fn histogram_quantile(
    families: &[MetricFamily],
    name: &str,
    pipeline: &str,
    q: f64,
) -> Option<f64> {
    let metric = families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .find(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "pipeline" && l.value() == pipeline)
        })?;
    let h = metric.get_histogram();
    let total = h.get_sample_count();
    if total == 0 {
        return None;
    }
    let target = (q * total as f64).ceil() as u64;
    h.get_bucket()
        .iter()
        .find(|b| b.cumulative_count() >= target)
        .map(|b| b.upper_bound())
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
    pub fn new(pipeline: &str, metrics: &Metrics) -> Self {
        Summary {
            pipeline: pipeline.to_string(),
            metrics: metrics.clone(),
            last: None,
            started: Instant::now(),
        }
    }

    fn counts(&self) -> Counts {
        let f = self.metrics.registry().gather();
        let p = &self.pipeline;
        let out = |name| {
            counter_sum(
                &f,
                "streamgate_records_out_total",
                p,
                Some(("output", name)),
            )
        };
        let latency = |q| histogram_quantile(&f, "streamgate_end_to_end_latency_seconds", p, q);
        Counts {
            records_in: counter_sum(&f, "streamgate_records_in_total", p, None),
            alerts: out("alerts"),
            scored: out("scored"),
            filtered: counter_sum(&f, "streamgate_records_filtered_total", p, None),
            dead_lettered: counter_sum(&f, "streamgate_records_dead_lettered_total", p, None),
            dropped: counter_sum(&f, "streamgate_records_dropped_total", p, None),
            p50: latency(0.5),
            p99: latency(0.99),
        }
    }

    /// Records that reached an outcome. In the demo every SQL row goes to `scored`, so each
    /// record ends in exactly one of: scored, filtered, dead-lettered, dropped.
    pub fn accounted(&self) -> u64 {
        let c = self.counts();
        c.scored + c.filtered + c.dead_lettered + c.dropped
    }

    /// One line: rates, counts per output, dead letters, latency.
    pub fn line(&mut self, produced: u64) -> String {
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
    pub fn final_report(&self, produced: u64) -> String {
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
