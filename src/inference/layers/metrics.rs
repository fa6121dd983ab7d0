//! The metrics of one model version, labelled once: what each layer records, under the family
//! and label names of [`crate::telemetry::ModelMetrics`].

use std::sync::Arc;
use std::time::Duration;

use crate::inference::error::{ErrorKind, InferError};
use crate::inference::protocol::CallOutput;
use crate::telemetry::ModelMetrics;

/// Metrics of one version (`model`, `version` labels).
#[derive(Clone)]
pub(crate) struct VersionMetrics {
    model: Arc<str>,
    version: Arc<str>,
    families: ModelMetrics,
}

impl VersionMetrics {
    /// The metrics of `version` of `model`.
    pub(crate) fn new(model: Arc<str>, version: Arc<str>, families: ModelMetrics) -> Self {
        VersionMetrics {
            model,
            version,
            families,
        }
    }

    /// Model name.
    pub(crate) fn model(&self) -> &Arc<str> {
        &self.model
    }

    /// Version name.
    pub(crate) fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// The in-flight gauge and ejection counter of a replica at `address`.
    pub(crate) fn replica(&self, address: &str) -> (prometheus::IntGauge, prometheus::IntCounter) {
        let labels = [&*self.model, &*self.version, address];
        (
            self.families.in_flight.with_label_values(&labels),
            self.families.ejections.with_label_values(&labels),
        )
    }

    /// Rows of one call to the version.
    pub(crate) fn batch_rows(&self, rows: usize) {
        self.families
            .batch_rows
            .with_label_values(&[&*self.model, &*self.version])
            .observe(rows as f64);
    }

    /// A failed attempt, by kind.
    pub(crate) fn failed(&self, kind: ErrorKind) {
        self.families
            .errors
            .with_label_values(&[&*self.model, &*self.version, kind.as_str()])
            .inc();
    }

    /// A retry sent.
    pub(crate) fn retried(&self) {
        self.families
            .retries
            .with_label_values(&[&*self.model, &*self.version])
            .inc();
    }

    /// A retry not sent for lack of budget.
    pub(crate) fn budget_exhausted(&self) {
        self.families
            .retries_budget_exhausted
            .with_label_values(&[&*self.model, &*self.version])
            .inc();
    }

    /// One attempt sent to `replica`: its latency and outcome; for an answer, its rows and
    /// tokens.
    pub(crate) fn attempt(
        &self,
        replica: &str,
        result: &Result<CallOutput, InferError>,
        latency: Duration,
        rows: usize,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        self.sent(replica, outcome, latency);
        let Ok(output) = result else { return };
        let mvr = [&*self.model, &*self.version, replica];
        self.families
            .rows
            .with_label_values(&mvr)
            .inc_by(rows as u64);
        for (kind, tokens) in [
            ("prompt", output.prompt_tokens),
            ("completion", output.completion_tokens),
        ] {
            if tokens > 0 {
                self.families
                    .tokens
                    .with_label_values(&[&*self.model, &*self.version, kind])
                    .inc_by(tokens);
            }
        }
    }

    /// One attempt forwarded by the gateway (outcome `ok` or an error kind).
    pub(crate) fn forwarded(&self, replica: &str, outcome: &str, latency: Duration) {
        self.sent(replica, outcome, latency);
        if outcome != "ok" {
            self.families
                .errors
                .with_label_values(&[&*self.model, &*self.version, outcome])
                .inc();
        }
    }

    /// Latency and outcome of an attempt sent to `replica`.
    fn sent(&self, replica: &str, outcome: &str, latency: Duration) {
        self.families
            .latency
            .with_label_values(&[&*self.model, &*self.version, replica])
            .observe(latency.as_secs_f64());
        self.families
            .calls
            .with_label_values(&[&*self.model, &*self.version, replica, outcome])
            .inc();
    }
}
