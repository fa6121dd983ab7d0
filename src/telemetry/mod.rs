//! Logging setup, metric families, and typed reads of them ([`stats`]).

pub mod gateway_metrics;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod model_metrics;
pub mod stats;

pub use gateway_metrics::GatewayMetrics;
pub use metrics::{Metrics, PipelineMetrics};
pub use model_metrics::ModelMetrics;
pub use stats::{CallCounts, PipelineStats};
