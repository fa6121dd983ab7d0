//! The attempt timeout: one attempt gets the model's `timeout`, or what is left of the call's
//! deadline when that is less. An attempt with less than [`MIN_ATTEMPT`] left is not sent.

use std::time::Duration;

use tokio::time::Instant;

use super::service::{AttemptError, OnReplica, Sent, Service};
use crate::inference::error::{ErrorKind, InferError};
use crate::inference::protocol::CallOutput;

/// Shortest attempt worth sending; with less time left before the deadline the call gives up.
pub(crate) const MIN_ATTEMPT: Duration = Duration::from_millis(1);

/// Bounds each attempt in time.
pub(crate) struct AttemptTimeout<S> {
    timeout: Duration,
    inner: S,
}

impl<S> AttemptTimeout<S> {
    /// Attempts of at most `timeout` through `inner`.
    pub(crate) fn new(timeout: Duration, inner: S) -> Self {
        AttemptTimeout { timeout, inner }
    }
}

impl<'a, S> Service<OnReplica<'a>> for AttemptTimeout<S>
where
    S: Service<Sent<'a>, Response = CallOutput, Error = InferError>,
{
    type Response = CallOutput;
    type Error = AttemptError;

    async fn call(&self, attempt: OnReplica<'a>) -> Result<CallOutput, AttemptError> {
        let OnReplica { replica, call } = attempt;
        let left = call.deadline.saturating_duration_since(Instant::now());
        if left < MIN_ATTEMPT {
            return Err(AttemptError::NotSent(InferError::no_time_left()));
        }
        // An attempt cut short by the call's deadline says nothing about the replica.
        let cut_short = left < self.timeout;
        let budget = self.timeout.min(left);
        let sent = Sent {
            replica,
            inputs: call.inputs,
            contract: call.contract,
        };
        match tokio::time::timeout(budget, self.inner.call(sent)).await {
            Ok(result) => result.map_err(AttemptError::Failed),
            Err(_) if cut_short => Err(AttemptError::Failed(InferError::new(
                ErrorKind::Deadline,
                format!("no answer within the {budget:?} left of the deadline"),
            ))),
            Err(_) => Err(AttemptError::Failed(InferError::new(
                ErrorKind::Timeout,
                format!("no answer within {budget:?}"),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::layers::backend::Protocol;
    use crate::inference::layers::service::Call;
    use crate::inference::layers::testing::{FakeBackend, contract, rows};
    use std::sync::Arc;

    async fn attempt(
        backend: Arc<FakeBackend>,
        timeout: Duration,
        left: Duration,
    ) -> Result<CallOutput, AttemptError> {
        let layer = AttemptTimeout::new(timeout, Protocol::new(backend));
        let (inputs, contract) = (rows(1), contract());
        let call = Call {
            inputs: &inputs,
            contract: &contract,
            deadline: Instant::now() + left,
        };
        layer
            .call(OnReplica {
                replica: Arc::from("r"),
                call,
            })
            .await
    }

    fn failed(result: Result<CallOutput, AttemptError>) -> InferError {
        match result {
            Err(AttemptError::Failed(e)) => e,
            other => panic!("expected a failed attempt, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_replica_times_out_after_the_attempt_timeout() {
        let started = Instant::now();
        let e = failed(
            attempt(
                FakeBackend::hanging(),
                Duration::from_millis(200),
                Duration::from_secs(5),
            )
            .await,
        );
        assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
        assert_eq!(e.message, "no answer within 200ms");
        assert_eq!(started.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_cut_short_by_the_deadline_is_a_deadline_error() {
        let started = Instant::now();
        let e = failed(
            attempt(
                FakeBackend::hanging(),
                Duration::from_secs(1),
                Duration::from_millis(300),
            )
            .await,
        );
        assert_eq!(e.kind, ErrorKind::Deadline, "{e}");
        assert_eq!(e.message, "no answer within the 300ms left of the deadline");
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_time_left_nothing_is_sent() {
        let backend = FakeBackend::hanging();
        let result = attempt(
            backend.clone(),
            Duration::from_secs(1),
            Duration::from_micros(999),
        )
        .await;
        match result {
            Err(AttemptError::NotSent(e)) => assert!(e.is_no_time_left(), "{e}"),
            other => panic!("expected no attempt, got {other:?}"),
        }
        assert!(backend.replicas().is_empty(), "the backend was not called");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_and_a_backend_error_pass_through() {
        let ok = attempt(
            FakeBackend::answering(|_, n| Ok(vec![0; n])),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .await;
        assert!(ok.is_ok());
        let e = failed(
            attempt(
                FakeBackend::answering(|_, _| Err(InferError::new(ErrorKind::Rejected, "bad"))),
                Duration::from_secs(1),
                Duration::from_secs(1),
            )
            .await,
        );
        assert_eq!(e.kind, ErrorKind::Rejected);
    }
}
