//! Metric families of the gateway's HTTP routes. Labels are bounded: `route` is a path
//! pattern of the route table, `status` an HTTP status code.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Request duration buckets, 50 µs to 30 s (the gateway's own answers take microseconds).
const REQUEST_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];

/// Families for gateway requests.
#[derive(Clone)]
pub struct GatewayMetrics {
    /// Requests answered, by route pattern and status.
    pub requests: IntCounterVec,
    /// Time to the response's headers, by route pattern.
    pub duration: HistogramVec,
}

impl GatewayMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "streamgate_gateway_requests_total",
                "Gateway requests answered, by route pattern and HTTP status.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "streamgate_gateway_request_duration_seconds",
                "Time from a gateway request's arrival to its response headers.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("unique metric");
        GatewayMetrics { requests, duration }
    }

    /// Counts one answered request.
    pub fn observe(&self, route: &str, status: axum::http::StatusCode, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, status.as_str()])
            .inc();
        self.duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }
}
