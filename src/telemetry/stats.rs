//! Typed reads of the metric families, for the admin API, the status page and the demo's
//! summary. They go through the family handles of [`Metrics`] and [`ModelMetrics`], never
//! by metric name, so renaming a metric cannot silently empty a view: removing a family
//! fails to compile here, and the tests below check every field against the handles that
//! count it. Reading never creates a series (no `with_label_values`).

use std::collections::BTreeMap;

use prometheus::core::Collector;
use prometheus::proto::{Metric, MetricType};

use super::labels;
use super::{Metrics, ModelMetrics};

/// One pipeline's totals across its series (every output, stage, error class, partition).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Records read from the source.
    pub records_in: u64,
    /// Rows delivered, all outputs together.
    pub records_out: u64,
    /// Rows delivered, by output.
    pub records_out_by_output: BTreeMap<String, u64>,
    /// Rows filtered by the SQL or matching no output.
    pub filtered: u64,
    /// Records written to the dead-letter sink.
    pub dead_lettered: u64,
    /// Failed records skipped (`on_error: drop`).
    pub dropped: u64,
    /// Batches whose acknowledgement failed.
    pub batches_failed: u64,
    /// Records the consumer is behind, all partitions together.
    pub consumer_lag: i64,
}

impl PipelineStats {
    /// Records that failed: dead-lettered, dropped, or in a failed batch.
    pub fn errors(&self) -> u64 {
        self.dead_lettered + self.dropped + self.batches_failed
    }
}

/// Attempts sent to one replica of a model version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Answered successfully.
    pub ok: u64,
    /// Failed, whatever the error kind.
    pub failed: u64,
}

/// A model, one of its versions and one of that version's replicas.
pub(crate) type ReplicaKey = (String, String, String);

impl Metrics {
    /// Every pipeline that has a series, with its totals.
    pub fn pipeline_stats(&self) -> BTreeMap<String, PipelineStats> {
        let mut stats: BTreeMap<String, PipelineStats> = BTreeMap::new();
        let mut add = |family: &dyn Collector, field: fn(&mut PipelineStats, &Metric, f64)| {
            for_each_series(family, |series, value| {
                let pipeline = label(series, labels::PIPELINE).to_string();
                field(stats.entry(pipeline).or_default(), series, value);
            });
        };
        add(&self.records_in, |s, _, v| s.records_in += v as u64);
        add(&self.records_out, |s, series, v| {
            s.records_out += v as u64;
            let output = label(series, labels::OUTPUT).to_string();
            *s.records_out_by_output.entry(output).or_default() += v as u64;
        });
        add(&self.records_filtered, |s, _, v| s.filtered += v as u64);
        add(&self.records_dead_lettered, |s, _, v| {
            s.dead_lettered += v as u64
        });
        add(&self.records_dropped, |s, _, v| s.dropped += v as u64);
        add(&self.batches_failed, |s, _, v| s.batches_failed += v as u64);
        add(&self.consumer_lag, |s, _, v| s.consumer_lag += v as i64);
        stats
    }

    /// An upper bound of the `q` quantile (0..=1) of a pipeline's end-to-end latency in
    /// seconds: the upper bound of the histogram bucket it falls in. `None` before the first
    /// acknowledged batch.
    pub fn end_to_end_quantile(&self, pipeline: &str, q: f64) -> Option<f64> {
        let families = self.end_to_end_latency.collect();
        let series = families
            .iter()
            .flat_map(|f| f.get_metric())
            .find(|m| label(m, labels::PIPELINE) == pipeline)?;
        let h = series.get_histogram();
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
}

impl ModelMetrics {
    /// Attempts by (model, version, replica), ok and failed, for replicas that have had any.
    pub fn calls_by_replica(&self) -> BTreeMap<ReplicaKey, CallCounts> {
        let mut calls: BTreeMap<ReplicaKey, CallCounts> = BTreeMap::new();
        for_each_series(&self.calls, |series, value| {
            let key = (
                label(series, labels::MODEL).to_string(),
                label(series, labels::VERSION).to_string(),
                label(series, labels::REPLICA).to_string(),
            );
            let counts = calls.entry(key).or_default();
            if label(series, labels::OUTCOME) == labels::OUTCOME_OK {
                counts.ok += value as u64;
            } else {
                counts.failed += value as u64;
            }
        });
        calls
    }
}

/// Calls `f` with every series of a counter or gauge family and its value.
fn for_each_series(family: &dyn Collector, mut f: impl FnMut(&Metric, f64)) {
    for found in family.collect() {
        let counter = found.get_field_type() == MetricType::COUNTER;
        for series in found.get_metric() {
            let value = if counter {
                series.get_counter().get_value()
            } else {
                series.get_gauge().get_value()
            };
            f(series, value);
        }
    }
}

/// A series' value of `name` ("" when it has no such label).
fn label<'a>(series: &'a Metric, name: &str) -> &'a str {
    series
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn pipeline_stats_read_what_the_handles_count() {
        let metrics = Metrics::new();
        let p = metrics.pipeline("p1");
        p.records_in.inc_by(10);
        p.records_out("alerts").inc_by(2);
        p.records_out("scored").inc_by(7);
        p.records_filtered.inc_by(1);
        p.record_failure(true, "decode", "invalid_input");
        p.record_failure(true, "inference", "timeout");
        p.record_failure(false, "sql", "invalid_input");
        p.batches_failed.inc();
        p.set_consumer_lag("t", 0, 5);
        p.set_consumer_lag("t", 1, 3);
        metrics.pipeline("p2").records_in.inc_by(100);

        let stats = metrics.pipeline_stats();
        let p1 = &stats["p1"];
        assert_eq!(p1.records_in, 10);
        assert_eq!(p1.records_out, 9);
        assert_eq!(p1.records_out_by_output["alerts"], 2);
        assert_eq!(p1.records_out_by_output["scored"], 7);
        assert_eq!(p1.filtered, 1);
        assert_eq!(p1.dead_lettered, 2);
        assert_eq!(p1.dropped, 1);
        assert_eq!(p1.batches_failed, 1);
        assert_eq!(p1.errors(), 4);
        assert_eq!(p1.consumer_lag, 8);
        assert_eq!(stats["p2"].records_in, 100, "pipelines are kept apart");
        assert_eq!(stats["p2"].records_out, 0);
        assert!(!stats.contains_key("p3"));
        // The rendered families say the same (the text Prometheus scrapes).
        let text = metrics.render();
        assert!(text.contains("pipeline=\"p1\"} 10"), "{text}");
    }

    #[test]
    fn end_to_end_quantiles_come_from_the_histogram_buckets() {
        let metrics = Metrics::new();
        let p = metrics.pipeline("p1");
        assert_eq!(metrics.end_to_end_quantile("p1", 0.5), None);
        for _ in 0..98 {
            p.end_to_end_latency
                .observe(Duration::from_millis(20).as_secs_f64());
        }
        p.end_to_end_latency.observe(2.0);
        p.end_to_end_latency.observe(2.0);
        assert_eq!(metrics.end_to_end_quantile("p1", 0.5), Some(0.025));
        assert_eq!(metrics.end_to_end_quantile("p1", 0.99), Some(2.5));
        assert_eq!(metrics.end_to_end_quantile("other", 0.5), None);
    }

    #[test]
    fn model_calls_split_ok_from_failed_per_replica() {
        let metrics = Metrics::new();
        let calls = &metrics.models.calls;
        calls
            .with_label_values(&["m", "v1", "http://a", labels::OUTCOME_OK])
            .inc_by(5);
        calls
            .with_label_values(&["m", "v1", "http://a", "timeout"])
            .inc_by(2);
        calls
            .with_label_values(&["m", "v1", "http://a", "unavailable"])
            .inc();
        calls
            .with_label_values(&["m", "v2", "http://b", labels::OUTCOME_OK])
            .inc();
        let by_replica = metrics.models.calls_by_replica();
        let key = |v: &str, r: &str| ("m".to_string(), v.to_string(), r.to_string());
        assert_eq!(
            by_replica[&key("v1", "http://a")],
            CallCounts { ok: 5, failed: 3 }
        );
        assert_eq!(
            by_replica[&key("v2", "http://b")],
            CallCounts { ok: 1, failed: 0 }
        );
        assert_eq!(by_replica.len(), 2);
    }
}
