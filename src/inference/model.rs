//! A model at run time: versions with traffic weights and a fallback, each version a
//! [`VersionClient`]. A call goes through the model's layers (deadline → fallback) and then
//! the version's (budgeted retry → balance → attempt timeout → backend), composed in
//! [`super::layers::stack`].

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;

use super::error::InferError;
use super::layers::service::{ModelCall, Service};
use super::layers::stack;
use super::protocol::Contract;
use super::types::BatchingPolicy;
pub use super::types::{Answer, CallPolicy};
pub use super::version::VersionClient;
use crate::telemetry::ModelMetrics;

/// A model's versions and their traffic weights.
pub type Router = super::router::Router<VersionClient>;

/// Where a failed call to one of a model's versions goes next.
pub type Fallback = super::layers::fallback::Fallback<VersionClient>;

/// A model of the registry.
pub struct Model {
    /// Model name.
    pub name: Arc<str>,
    /// Versions and weights.
    pub router: Arc<Router>,
    /// Fallback, resolved once the registry is built.
    pub fallback: Option<Fallback>,
    /// Call policy.
    pub policy: Arc<CallPolicy>,
    /// Micro-batching of the model's requests.
    pub batching: BatchingPolicy,
    /// Metrics.
    pub metrics: ModelMetrics,
}

impl Model {
    /// Calls version `version` (an index of the router) and, when it fails with a retryable
    /// error or has no replica left, the fallback once, within the same deadline.
    pub async fn call(
        &self,
        version: usize,
        inputs: &RecordBatch,
        contract: &Contract,
    ) -> Result<Answer, InferError> {
        let layers = stack::model(
            &self.name,
            &self.policy,
            &self.router.versions,
            self.fallback.as_ref(),
            &self.metrics,
        );
        let call = ModelCall {
            version,
            inputs,
            contract,
        };
        layers.call(call).await
    }

    /// Most rows one request to `version` may carry, considering its fallback too (a chat
    /// fallback takes one row per request).
    pub fn max_rows_per_request(&self, version: usize) -> Option<usize> {
        let mut limits = vec![self.router.versions[version].backend.max_rows_per_request()];
        match &self.fallback {
            Some(Fallback::Version(v)) => limits.push(v.backend.max_rows_per_request()),
            Some(Fallback::Router(r)) => {
                limits.extend(r.versions.iter().map(|v| v.backend.max_rows_per_request()))
            }
            None => {}
        }
        limits.into_iter().flatten().min()
    }
}
