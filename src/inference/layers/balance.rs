//! The balance layer: picks a replica ([`Balancer`]: p2c peak-EWMA, round-robin or least
//! outstanding, skipping ejected replicas and the one that just failed), waits for one of its
//! in-flight slots until the deadline, sends the attempt down, and records the outcome: the
//! replica's health (latency, outlier ejection), whether the version is live, and the
//! attempt's metrics.

use std::sync::Arc;

use super::liveness::Liveness;
use super::metrics::VersionMetrics;
use super::service::{Attempt, AttemptError, Failed, OnReplica, Service};
use crate::inference::balance::{Balancer, Outcome};
use crate::inference::error::{ErrorKind, InferError};
use crate::inference::protocol::CallOutput;
use crate::inference::types::Answer;
use crate::spec::EjectionSpec;

/// Spreads attempts over a version's replicas.
pub(crate) struct Balance<S> {
    balancer: Arc<Balancer>,
    ejection: EjectionSpec,
    liveness: Arc<Liveness>,
    metrics: VersionMetrics,
    inner: S,
}

impl<S> Balance<S> {
    /// Attempts over `balancer`'s replicas through `inner`.
    pub(crate) fn new(
        balancer: Arc<Balancer>,
        ejection: EjectionSpec,
        liveness: Arc<Liveness>,
        metrics: VersionMetrics,
        inner: S,
    ) -> Self {
        Balance {
            balancer,
            ejection,
            liveness,
            metrics,
            inner,
        }
    }
}

/// What an attempt's outcome says about the replica's health.
fn health(result: &Result<CallOutput, InferError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(e) if e.kind.counts_for_ejection() => Outcome::Failure,
        // A rejected or malformed request was answered by a healthy replica.
        Err(e) if e.kind == ErrorKind::Rejected || e.kind == ErrorKind::Contract => {
            Outcome::Success
        }
        Err(_) => Outcome::Neutral,
    }
}

impl<'a, S> Service<Attempt<'a>> for Balance<S>
where
    S: Service<OnReplica<'a>, Response = CallOutput, Error = AttemptError>,
{
    type Response = Answer;
    type Error = Failed;

    async fn call(&self, attempt: Attempt<'a>) -> Result<Answer, Failed> {
        let Attempt { call, avoid } = attempt;
        let Some(replica) = self.balancer.pick(avoid.as_ref()) else {
            let (model, version) = (self.metrics.model(), self.metrics.version());
            let message = format!("every replica of {model}/{version} is ejected after failures");
            return Err(Failed {
                error: InferError::new(ErrorKind::NoReplica, message),
                replica: None,
            });
        };
        let Ok(slot) = tokio::time::timeout_at(call.deadline, replica.acquire()).await else {
            replica.release_probe();
            return Err(Failed {
                error: InferError::new(
                    ErrorKind::Saturated,
                    "deadline passed waiting for a free replica slot",
                ),
                replica: Some(replica),
            });
        };
        let address = replica.address.clone();
        let sent = OnReplica {
            replica: address.clone(),
            call,
        };
        let result = match self.inner.call(sent).await {
            Ok(output) => Ok(output),
            Err(AttemptError::Failed(error)) => Err(error),
            // Never sent: the slot is given back without an outcome.
            Err(AttemptError::NotSent(error)) => {
                return Err(Failed {
                    error,
                    replica: Some(replica),
                });
            }
        };
        self.liveness.observe(&result);
        let latency = slot.finish(health(&result), &self.ejection);
        let rows = call.inputs.num_rows();
        self.metrics.attempt(&address, &result, latency, rows);
        match result {
            Ok(output) => Ok(Answer {
                columns: output.columns,
                model: self.metrics.model().clone(),
                version: self.metrics.version().clone(),
                replica: address,
                latency,
            }),
            Err(error) => Err(Failed {
                error,
                replica: Some(replica),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::balance::Replica;
    use crate::inference::layers::attempt_timeout::AttemptTimeout;
    use crate::inference::layers::backend::Protocol;
    use crate::inference::layers::service::Call;
    use crate::inference::layers::testing::{
        FakeBackend, contract, ejection, metrics_in, model_metrics, replica, rows,
    };
    use crate::spec::BalanceStrategy;
    use crate::telemetry::ModelMetrics;
    use std::time::Duration;
    use tokio::time::Instant;

    type Layer = Balance<AttemptTimeout<Protocol>>;

    fn layer(backend: Arc<FakeBackend>, replicas: &[Arc<Replica>]) -> (Layer, Arc<Liveness>) {
        layer_counted(backend, replicas, &model_metrics())
    }

    fn layer_counted(
        backend: Arc<FakeBackend>,
        replicas: &[Arc<Replica>],
        families: &ModelMetrics,
    ) -> (Layer, Arc<Liveness>) {
        let liveness = Arc::new(Liveness::default());
        let strategy = BalanceStrategy::RoundRobin;
        let balancer = Arc::new(Balancer::new(replicas.to_vec(), strategy));
        let inner = AttemptTimeout::new(Duration::from_secs(1), Protocol::new(backend));
        let metrics = metrics_in(families);
        let layer = Balance::new(balancer, ejection(), liveness.clone(), metrics, inner);
        (layer, liveness)
    }

    async fn attempt(
        layer: &Layer,
        left: Duration,
        avoid: Option<Arc<Replica>>,
    ) -> Result<Answer, Failed> {
        let (inputs, contract) = (rows(2), contract());
        let call = Call {
            inputs: &inputs,
            contract: &contract,
            deadline: Instant::now() + left,
        };
        layer.call(Attempt { call, avoid }).await
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_names_its_replica_and_counts_as_live() {
        let (a, b) = (replica("a", 4), replica("b", 4));
        let (layer, liveness) = layer(
            FakeBackend::answering(|_, n| Ok(vec![1; n])),
            &[a.clone(), b],
        );
        let mark = liveness.mark();
        let answer = attempt(&layer, Duration::from_secs(1), Some(a))
            .await
            .unwrap();
        assert_eq!(&*answer.replica, "b", "the replica to avoid is avoided");
        assert_eq!((&*answer.model, &*answer.version), ("m", "v"));
        assert!(liveness.answered_since(mark));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_eject_the_replica_and_then_there_is_none() {
        let a = replica("a", 4);
        let backend =
            FakeBackend::answering(|_, _| Err(InferError::new(ErrorKind::ServerError, "500")));
        let (layer, _) = layer(backend, std::slice::from_ref(&a));
        for _ in 0..ejection().consecutive_failures {
            let failed = attempt(&layer, Duration::from_secs(1), None)
                .await
                .unwrap_err();
            assert_eq!(failed.error.kind, ErrorKind::ServerError);
            assert!(Arc::ptr_eq(failed.replica.as_ref().unwrap(), &a));
        }
        let failed = attempt(&layer, Duration::from_secs(1), None)
            .await
            .unwrap_err();
        assert_eq!(failed.error.kind, ErrorKind::NoReplica, "{}", failed.error);
        assert_eq!(
            failed.error.message,
            "every replica of m/v is ejected after failures"
        );
        assert!(failed.replica.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_replica_until_the_deadline_is_saturation() {
        let a = replica("a", 1);
        let backend = FakeBackend::answering(|_, n| Ok(vec![1; n]));
        let (layer, _) = layer(backend.clone(), std::slice::from_ref(&a));
        let _held = a.acquire().await;
        let failed = attempt(&layer, Duration::from_millis(50), None)
            .await
            .unwrap_err();
        assert_eq!(failed.error.kind, ErrorKind::Saturated, "{}", failed.error);
        assert!(backend.replicas().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_not_sent_gives_its_slot_back_and_is_not_counted() {
        let a = replica("a", 1);
        let backend = FakeBackend::answering(|_, n| Ok(vec![1; n]));
        let families = model_metrics();
        let (layer, _) = layer_counted(backend.clone(), std::slice::from_ref(&a), &families);
        let failed = attempt(&layer, Duration::ZERO, None).await.unwrap_err();
        assert!(failed.error.is_no_time_left(), "{}", failed.error);
        assert!(failed.replica.is_some());
        assert_eq!(a.in_flight(), 0, "slot given back");
        assert!(backend.replicas().is_empty());
        let calls = |outcome| families.calls.with_label_values(&["m", "v", "a", outcome]);
        assert_eq!(calls("deadline").get(), 0, "not counted as an attempt");
        // A later attempt is sent normally, and counted.
        assert!(attempt(&layer, Duration::from_secs(1), None).await.is_ok());
        assert_eq!(calls("ok").get(), 1);
    }

    #[test]
    fn health_of_outcomes() {
        let err = |kind| Err(InferError::new(kind, "x"));
        assert_eq!(health(&Ok(CallOutput::columns(vec![]))), Outcome::Success);
        assert_eq!(health(&err(ErrorKind::Rejected)), Outcome::Success);
        assert_eq!(health(&err(ErrorKind::Contract)), Outcome::Success);
        assert_eq!(health(&err(ErrorKind::Timeout)), Outcome::Failure);
        assert_eq!(health(&err(ErrorKind::Unavailable)), Outcome::Failure);
        assert_eq!(health(&err(ErrorKind::Throttled)), Outcome::Neutral);
        assert_eq!(health(&err(ErrorKind::Deadline)), Outcome::Neutral);
    }
}
