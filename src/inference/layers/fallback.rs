//! The fallback layer: calls the version the rows were routed to and, when it fails with a
//! retryable error or has no replica left, the model's fallback once (a fixed version, or a
//! version of another model chosen by its weights), within the same deadline, or within the
//! attempt timeout when the first call used the deadline up.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::service::{Call, Named, Service, VersionCall};
use crate::inference::error::{ErrorKind, InferError};
use crate::inference::router::Router;
use crate::inference::types::Answer;
use crate::telemetry::ModelMetrics;

/// Where a failed call goes next.
pub enum Fallback<V> {
    /// A fixed version.
    Version(Arc<V>),
    /// Another router (another model's weighted split).
    Router(Arc<Router<V>>),
}

/// Tries a model's fallback when the routed version fails.
pub(crate) struct TryFallback<'m, V> {
    model: &'m str,
    versions: &'m [Arc<V>],
    fallback: Option<&'m Fallback<V>>,
    timeout: Duration,
    metrics: &'m ModelMetrics,
}

impl<'m, V> TryFallback<'m, V> {
    /// Calls to `versions` of `model`, falling back to `fallback`; a fallback that finds the
    /// deadline passed gets `timeout`.
    pub(crate) fn new(
        model: &'m str,
        versions: &'m [Arc<V>],
        fallback: Option<&'m Fallback<V>>,
        timeout: Duration,
        metrics: &'m ModelMetrics,
    ) -> Self {
        TryFallback {
            model,
            versions,
            fallback,
            timeout,
            metrics,
        }
    }

    /// The version to try after `primary` failed with `error`, if any.
    fn target(&self, primary: &Arc<V>, error: &InferError) -> Option<Arc<V>> {
        let applies = error.kind.is_retryable() || error.kind == ErrorKind::NoReplica;
        match (self.fallback?, applies) {
            (Fallback::Version(v), true) if !Arc::ptr_eq(v, primary) => Some(v.clone()),
            (Fallback::Router(r), true) => Some(r.versions[r.choose(None)].clone()),
            _ => None,
        }
    }
}

/// The error of a call whose fallback failed too: both messages; the primary's error when it
/// is an outage and the fallback's is not (the rows are held while the primary is down).
fn both_failed(primary: InferError, target: &impl Named, fallback: InferError) -> InferError {
    let message = format!(
        "{} (fallback {}/{} also failed: {})",
        primary.message,
        target.model(),
        target.version(),
        fallback
    );
    let kept = if primary.is_outage() && !fallback.is_outage() {
        primary
    } else {
        fallback
    };
    InferError { message, ..kept }
}

impl<'a, V> Service<VersionCall<'a>> for TryFallback<'_, V>
where
    V: Service<Call<'a>, Response = Answer, Error = InferError> + Named,
{
    type Response = Answer;
    type Error = InferError;

    async fn call(&self, request: VersionCall<'a>) -> Result<Answer, InferError> {
        let VersionCall { version, call } = request;
        let primary = &self.versions[version];
        let error = match primary.call(call).await {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        let Some(target) = self.target(primary, &error) else {
            return Err(error);
        };
        self.metrics
            .fallbacks
            .with_label_values(&[self.model, primary.version()])
            .inc();
        // The fallback gets its own time when the primary used it all up.
        let deadline = call.deadline.max(Instant::now() + self.timeout);
        match target.call(Call { deadline, ..call }).await {
            Ok(answer) => Ok(answer),
            Err(fallback_error) => Err(both_failed(error, &*target, fallback_error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::layers::testing::{answer, contract, model_metrics, rows};
    use std::sync::Mutex;

    /// A version that fails with `error` (or answers), after `delay`, recording deadlines.
    struct FakeVersion {
        version: Arc<str>,
        model: Arc<str>,
        error: Option<ErrorKind>,
        delay: Duration,
        deadlines: Mutex<Vec<Instant>>,
    }

    fn version(name: &str, error: Option<ErrorKind>) -> Arc<FakeVersion> {
        Arc::new(FakeVersion {
            version: name.into(),
            model: "m".into(),
            error,
            delay: Duration::ZERO,
            deadlines: Mutex::default(),
        })
    }

    impl Named for FakeVersion {
        fn model(&self) -> &Arc<str> {
            &self.model
        }
        fn version(&self) -> &Arc<str> {
            &self.version
        }
    }

    impl<'a> Service<Call<'a>> for FakeVersion {
        type Response = Answer;
        type Error = InferError;
        async fn call(&self, call: Call<'a>) -> Result<Answer, InferError> {
            self.deadlines.lock().unwrap().push(call.deadline);
            tokio::time::sleep(self.delay).await;
            match self.error {
                None => Ok(Answer {
                    version: self.version.clone(),
                    ..answer("r")
                }),
                Some(kind) => Err(InferError::new(kind, format!("{} failed", self.version))),
            }
        }
    }

    fn calls(v: &FakeVersion) -> usize {
        v.deadlines.lock().unwrap().len()
    }

    async fn call_first(
        versions: &[Arc<FakeVersion>],
        fallback: Option<&Fallback<FakeVersion>>,
        metrics: &ModelMetrics,
    ) -> Result<Answer, InferError> {
        let layer = TryFallback::new("m", versions, fallback, Duration::from_secs(1), metrics);
        let (inputs, contract) = (rows(1), contract());
        let call = Call {
            inputs: &inputs,
            contract: &contract,
            deadline: Instant::now() + Duration::from_secs(5),
        };
        layer.call(VersionCall { version: 0, call }).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_failure_or_no_replica_goes_to_the_fallback_once() {
        for kind in [
            ErrorKind::Unavailable,
            ErrorKind::NoReplica,
            ErrorKind::Connect,
        ] {
            let metrics = model_metrics();
            let (v1, v2) = (version("v1", Some(kind)), version("v2", None));
            let fallback = Fallback::Version(v2.clone());
            let answer = call_first(std::slice::from_ref(&v1), Some(&fallback), &metrics)
                .await
                .unwrap();
            assert_eq!(&*answer.version, "v2", "{kind:?}");
            assert_eq!((calls(&v1), calls(&v2)), (1, 1));
            assert_eq!(metrics.fallbacks.with_label_values(&["m", "v1"]).get(), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_or_a_fallback_to_itself_is_not_retried_elsewhere() {
        let metrics = model_metrics();
        let (v1, v2) = (
            version("v1", Some(ErrorKind::Rejected)),
            version("v2", None),
        );
        let e = call_first(
            std::slice::from_ref(&v1),
            Some(&Fallback::Version(v2.clone())),
            &metrics,
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected);
        assert_eq!(calls(&v2), 0);
        let down = version("v1", Some(ErrorKind::Unavailable));
        let itself = Fallback::Version(down.clone());
        assert!(
            call_first(std::slice::from_ref(&down), Some(&itself), &metrics)
                .await
                .is_err()
        );
        assert_eq!(calls(&down), 1);
        assert!(call_first(&[down], None, &metrics).await.is_err());
        assert_eq!(metrics.fallbacks.with_label_values(&["m", "v1"]).get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_router_fallback_takes_a_version_of_the_other_model_by_weight() {
        let other = Arc::new(Router::new(
            vec![version("a", None), version("b", None)],
            vec![0, 1],
        ));
        let fallback = Fallback::Router(other);
        let v1 = version("v1", Some(ErrorKind::Timeout));
        let answer = call_first(&[v1], Some(&fallback), &model_metrics())
            .await
            .unwrap();
        assert_eq!(&*answer.version, "b");
    }

    #[tokio::test(start_paused = true)]
    async fn when_both_fail_the_primary_outage_is_kept_and_both_are_told() {
        let (v1, v2) = (
            version("v1", Some(ErrorKind::Connect)),
            version("v2", Some(ErrorKind::ServerError)),
        );
        let e = call_first(&[v1], Some(&Fallback::Version(v2)), &model_metrics())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Connect, "the rows wait for the primary");
        assert_eq!(
            e.message,
            "v1 failed (fallback m/v2 also failed: server_error: v2 failed)"
        );
        let (v1, v2) = (
            version("v1", Some(ErrorKind::ServerError)),
            version("v2", Some(ErrorKind::Unavailable)),
        );
        let e = call_first(&[v1], Some(&Fallback::Version(v2)), &model_metrics())
            .await
            .unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Unavailable,
            "otherwise the fallback's error"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fallback_after_the_deadline_gets_the_attempt_timeout() {
        let v1 = Arc::new(FakeVersion {
            delay: Duration::from_secs(7),
            ..Arc::into_inner(version("v1", Some(ErrorKind::Timeout))).unwrap()
        });
        let v2 = version("v2", None);
        let started = Instant::now();
        call_first(
            std::slice::from_ref(&v1),
            Some(&Fallback::Version(v2.clone())),
            &model_metrics(),
        )
        .await
        .unwrap();
        assert_eq!(
            v1.deadlines.lock().unwrap()[0],
            started + Duration::from_secs(5)
        );
        assert_eq!(
            v2.deadlines.lock().unwrap()[0],
            started + Duration::from_secs(8),
            "7 s in, plus the 1 s timeout"
        );
    }
}
