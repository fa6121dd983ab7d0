//! One version of a model at run time: its protocol client and replicas, behind the version's
//! layers (budgeted retry → balance → attempt timeout → backend, composed in
//! [`super::layers::stack`]).

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;

use super::balance::{Balancer, Replica};
use super::error::InferError;
use super::layers::metrics::VersionMetrics;
use super::layers::service::{Call, Named, Service};
use super::layers::stack::{self, VersionStack};
use super::protocol::{Backend, Contract};
use super::types::{Answer, CallPolicy};
use crate::telemetry::ModelMetrics;

/// One version: backend, replicas, budget.
pub struct VersionClient {
    /// Model name.
    pub model: Arc<str>,
    /// Version name.
    pub version: Arc<str>,
    /// Protocol client.
    pub backend: Arc<dyn Backend>,
    /// Replicas (shared with the balance layer).
    pub balancer: Arc<Balancer>,
    metrics: VersionMetrics,
    layers: VersionStack,
}

impl VersionClient {
    /// A version client.
    pub fn new(
        model: &str,
        version: &str,
        backend: Arc<dyn Backend>,
        balancer: Balancer,
        policy: Arc<CallPolicy>,
        metrics: ModelMetrics,
    ) -> Self {
        let (model, version) = (Arc::<str>::from(model), Arc::<str>::from(version));
        let metrics = VersionMetrics::new(model.clone(), version.clone(), metrics);
        let balancer = Arc::new(balancer);
        let layers = stack::version(&policy, backend.clone(), balancer.clone(), metrics.clone());
        VersionClient {
            model,
            version,
            backend,
            balancer,
            metrics,
            layers,
        }
    }

    /// Replaces the version's replicas (admin API), each with this version's metric labels.
    pub fn set_replicas(&self, addresses: &[String], max_in_flight: usize) {
        let replicas = addresses
            .iter()
            .map(|address| {
                let (in_flight, ejections) = self.metrics.replica(address);
                Arc::new(Replica::new(address, max_in_flight, in_flight, ejections))
            })
            .collect();
        self.balancer.set_replicas(replicas);
    }

    /// Records one attempt forwarded by the gateway (outcome `ok` or an error kind), in the
    /// same families as pipeline calls.
    pub fn record_forward(&self, replica: &str, outcome: &str, latency: Duration) {
        self.metrics.forwarded(replica, outcome, latency);
    }

    /// Calls the version with retries until `deadline`.
    pub async fn call(
        &self,
        inputs: &RecordBatch,
        contract: &Contract,
        deadline: std::time::Instant,
    ) -> Result<Answer, InferError> {
        let deadline = tokio::time::Instant::from_std(deadline);
        Service::call(
            self,
            Call {
                inputs,
                contract,
                deadline,
            },
        )
        .await
    }
}

impl<'a> Service<Call<'a>> for VersionClient {
    type Response = Answer;
    type Error = InferError;

    async fn call(&self, call: Call<'a>) -> Result<Answer, InferError> {
        self.metrics.batch_rows(call.inputs.num_rows());
        self.layers.call(call).await
    }
}

impl Named for VersionClient {
    fn model(&self) -> &Arc<str> {
        &self.model
    }

    fn version(&self) -> &Arc<str> {
        &self.version
    }
}
