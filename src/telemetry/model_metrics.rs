//! Metric families of model calls. Labels are bounded by configuration: model, version and
//! replica come from the registry, `kind` from [`crate::inference::ErrorKind`].

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::labels::{MODEL, OUTCOME, REPLICA, VERSION};

/// Request sizes in rows, from single rows to large batches.
const BATCH_ROWS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Model call latency buckets, 100 µs to 30 s.
const CALL_LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Families for model calls, registered in the process registry.
#[derive(Clone)]
pub struct ModelMetrics {
    /// Attempts sent to a replica, by outcome (`ok` or an error kind).
    pub calls: IntCounterVec,
    /// Rows sent in successful attempts.
    pub rows: IntCounterVec,
    /// Latency of one attempt.
    pub latency: HistogramVec,
    /// Failed attempts by error kind.
    pub errors: IntCounterVec,
    /// Retries sent (attempts after the first).
    pub retries: IntCounterVec,
    /// Retries refused because the retry budget was spent.
    pub retries_budget_exhausted: IntCounterVec,
    /// Times a replica was ejected.
    pub ejections: IntCounterVec,
    /// Requests in flight per replica.
    pub in_flight: IntGaugeVec,
    /// Rows per request.
    pub batch_rows: HistogramVec,
    /// Tokens reported by OpenAI-compatible backends, by `kind` (`prompt`, `completion`).
    pub tokens: IntCounterVec,
    /// Calls sent to the fallback after the chosen version failed.
    pub fallbacks: IntCounterVec,
    /// Times a pipeline waited for a model that is down (no replica available).
    pub outage_waits: IntCounterVec,
}

impl ModelMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "streamgate_model_in_flight",
                "Requests in flight to a model replica.",
            ),
            &[MODEL, VERSION, REPLICA],
        )
        .expect("valid metric");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("unique metric");
        let mvr = &[MODEL, VERSION, REPLICA];
        ModelMetrics {
            calls: counter(
                "streamgate_model_calls_total",
                "Attempts sent to a model replica, by outcome (ok or error kind).",
                &[MODEL, VERSION, REPLICA, OUTCOME],
            ),
            rows: counter(
                "streamgate_model_rows_total",
                "Rows answered by a model replica.",
                mvr,
            ),
            latency: histogram(
                "streamgate_model_call_duration_seconds",
                "Duration of one attempt to a model replica.",
                mvr,
                CALL_LATENCY_BUCKETS,
            ),
            errors: counter(
                "streamgate_model_errors_total",
                "Failed attempts by error kind.",
                &[MODEL, VERSION, "kind"],
            ),
            retries: counter(
                "streamgate_model_retries_total",
                "Retried attempts.",
                &[MODEL, VERSION],
            ),
            retries_budget_exhausted: counter(
                "streamgate_model_retry_budget_exhausted_total",
                "Retries not sent because the retry budget was spent.",
                &[MODEL, VERSION],
            ),
            ejections: counter(
                "streamgate_model_ejections_total",
                "Times a replica was ejected after consecutive failures.",
                mvr,
            ),
            in_flight,
            batch_rows: histogram(
                "streamgate_model_batch_rows",
                "Rows per model request.",
                &[MODEL, VERSION],
                BATCH_ROWS_BUCKETS,
            ),
            tokens: counter(
                "streamgate_model_tokens_total",
                "Tokens reported by OpenAI-compatible backends.",
                &[MODEL, VERSION, "kind"],
            ),
            fallbacks: counter(
                "streamgate_model_fallbacks_total",
                "Calls sent to the fallback after the chosen version failed.",
                &[MODEL, VERSION],
            ),
            outage_waits: counter(
                "streamgate_model_outage_waits_total",
                "Times a pipeline backed off because no replica of a model was available.",
                &[MODEL],
            ),
        }
    }
}
