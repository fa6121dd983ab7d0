//! Logging setup and metric families.

pub mod logging;
pub mod metrics;

pub use metrics::{Metrics, PipelineMetrics};
