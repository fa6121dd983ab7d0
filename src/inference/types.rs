//! Vocabulary shared by the files of the call path: what a model call returns, how a model's
//! calls are bounded, and how its rows are batched. Kept apart so the files that produce and
//! consume these (stage, batcher, model, the layers, the registry) import it rather than each
//! other.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::ArrayRef;

use crate::spec::{EjectionSpec, ModelBatchingSpec, RetrySpec};

/// A successful answer with its lineage.
#[derive(Debug, Clone)]
pub struct Answer {
    /// One column per contract output.
    pub columns: Vec<ArrayRef>,
    /// Model that answered (differs from the one called after a fallback to another model).
    pub model: Arc<str>,
    /// Version that answered.
    pub version: Arc<str>,
    /// Replica that answered.
    pub replica: Arc<str>,
    /// Latency of the successful attempt.
    pub latency: Duration,
}

/// Call policy of a model, shared by its versions.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Overall deadline of a call.
    pub deadline: Duration,
    /// Retry policy.
    pub retry: RetrySpec,
    /// Ejection policy.
    pub ejection: EjectionSpec,
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct BatchingPolicy {
    /// Most rows per request.
    pub max_rows: usize,
    /// Longest wait for more rows.
    pub max_delay: Duration,
    /// Requests in flight at once.
    pub max_concurrent: usize,
}

impl BatchingPolicy {
    /// Policy of a model's batchers from its spec.
    pub fn from_spec(spec: &ModelBatchingSpec) -> Self {
        BatchingPolicy {
            max_rows: spec.max_batch_rows.max(1),
            max_delay: spec.max_delay,
            max_concurrent: spec.max_concurrent_requests.max(1),
        }
    }
}
