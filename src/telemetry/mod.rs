//! Logging setup, metric families, and typed reads of them ([`stats`]).

pub(crate) mod gateway_metrics;
pub(crate) mod labels;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod model_metrics;
pub(crate) mod stats;

pub use gateway_metrics::GatewayMetrics;
pub use metrics::{Metrics, PipelineMetrics};
pub use model_metrics::ModelMetrics;
pub use stats::{CallCounts, PipelineStats};
