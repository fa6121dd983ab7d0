//! The call path, composed in one place, outermost first:
//!
//! ```text
//! Deadline            the call's deadline                      deadline.rs
//!  └ TryFallback      the routed version, then the fallback    fallback.rs
//!     └ (each version: VersionStack, behind a VersionClient)
//!        Retry        budgeted retries, backoff, Retry-After   retry.rs
//!         └ Balance   replica, in-flight slot, ejection        balance.rs
//!            └ AttemptTimeout   one attempt's time             attempt_timeout.rs
//!               └ Protocol      HTTP or in process, shape      backend.rs
//! ```
//!
//! The order is enforced by the types: each layer is generic over the next and bound by the
//! request type it sends down ([`super::service`]), and only one layer serves each request
//! type, so these aliases are the only stacks that compile.

use std::sync::Arc;

use super::attempt_timeout::AttemptTimeout;
use super::backend::Protocol;
use super::balance::Balance;
use super::deadline::Deadline;
use super::fallback::{Fallback, TryFallback};
use super::liveness::Liveness;
use super::metrics::VersionMetrics;
use super::retry::Retry;
use crate::inference::balance::Balancer;
use crate::inference::protocol::Backend;
use crate::inference::types::CallPolicy;
use crate::telemetry::ModelMetrics;

/// One version's layers: retry → balance → attempt timeout → backend.
pub(crate) type VersionStack = Retry<Balance<AttemptTimeout<Protocol>>>;

/// A model's layers over its versions `V`: deadline → fallback.
pub(crate) type ModelStack<'m, V> = Deadline<TryFallback<'m, V>>;

/// The layers of one version: calls to `backend` on `balancer`'s replicas under `policy`.
pub(crate) fn version(
    policy: &CallPolicy,
    backend: Arc<dyn Backend>,
    balancer: Arc<Balancer>,
    metrics: VersionMetrics,
) -> VersionStack {
    let liveness = Arc::new(Liveness::default());
    Retry::new(
        &policy.retry,
        liveness.clone(),
        metrics.clone(),
        Balance::new(
            balancer,
            policy.ejection.clone(),
            liveness,
            metrics,
            AttemptTimeout::new(policy.timeout, Protocol::new(backend)),
        ),
    )
}

/// The layers of a call to model `name` under `policy`: to one of `versions`, then
/// `fallback`. Built per call: it only borrows the model.
pub(crate) fn model<'m, V>(
    name: &'m str,
    policy: &CallPolicy,
    versions: &'m [Arc<V>],
    fallback: Option<&'m Fallback<V>>,
    metrics: &'m ModelMetrics,
) -> ModelStack<'m, V> {
    Deadline::new(
        policy.deadline,
        TryFallback::new(name, versions, fallback, policy.timeout, metrics),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::error::{ErrorKind, InferError};
    use crate::inference::layers::service::{Call, Service};
    use crate::inference::layers::testing::{
        FakeBackend, contract, metrics_in, model_metrics, replica, rows,
    };
    use crate::spec::{BalanceStrategy, EjectionSpec, RetrySpec};
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_version_retries_a_failed_attempt_on_another_replica() {
        let policy = CallPolicy {
            timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(5),
            retry: RetrySpec {
                backoff: Duration::from_millis(10),
                ..RetrySpec::default()
            },
            ejection: EjectionSpec::default(),
        };
        let backend = FakeBackend::answering(|replica, n| match replica {
            "a" => Err(InferError::new(ErrorKind::Unavailable, "503")),
            _ => Ok(vec![7; n]),
        });
        let replicas = vec![replica("a", 4), replica("b", 4)];
        // Round-robin starts at `a`.
        let balancer = Arc::new(Balancer::new(replicas, BalanceStrategy::RoundRobin));
        let families = model_metrics();
        let layers = version(&policy, backend.clone(), balancer, metrics_in(&families));
        let (inputs, contract) = (rows(2), contract());
        let call = Call {
            inputs: &inputs,
            contract: &contract,
            deadline: Instant::now() + policy.deadline,
        };
        let answer = layers.call(call).await.unwrap();
        assert_eq!(&*answer.replica, "b");
        assert_eq!(backend.replicas(), ["a", "b"]);
        let calls = |replica, outcome| {
            let labels = ["m", "v", replica, outcome];
            families.calls.with_label_values(&labels).get()
        };
        assert_eq!((calls("a", "unavailable"), calls("b", "ok")), (1, 1));
        assert_eq!(families.rows.with_label_values(&["m", "v", "b"]).get(), 2);
        assert_eq!(families.retries.with_label_values(&["m", "v"]).get(), 1);
    }
}
