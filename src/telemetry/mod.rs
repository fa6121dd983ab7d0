//! Logging setup and metric families.

pub mod gateway_metrics;
pub mod logging;
pub mod metrics;
pub mod model_metrics;

pub use gateway_metrics::GatewayMetrics;
pub use metrics::{Metrics, PipelineMetrics};
pub use model_metrics::ModelMetrics;
