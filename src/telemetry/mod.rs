//! Logging setup and metric families.

pub mod logging;
pub mod metrics;
pub mod model_metrics;

pub use metrics::{Metrics, PipelineMetrics};
pub use model_metrics::ModelMetrics;
