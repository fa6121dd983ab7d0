//! The retry layer: sends attempts until one answers, the error is not retryable, the
//! attempts run out, the next one would start past the deadline, or the version's retry
//! budget is spent. Waits `Retry-After` when the model gave one, a jittered backoff otherwise
//! ([`crate::inference::retry`]). It sits above the balance layer, so a retry can reach
//! another replica.

use std::sync::Arc;

use tokio::time::Instant;

use super::liveness::Liveness;
use super::metrics::VersionMetrics;
use super::service::{Attempt, Call, Failed, Service};
use crate::inference::error::InferError;
use crate::inference::retry::{RetryBudget, backoff};
use crate::inference::types::Answer;
use crate::spec::RetrySpec;

/// Retries a version's failed attempts within its budget.
pub(crate) struct Retry<S> {
    policy: RetrySpec,
    budget: RetryBudget,
    liveness: Arc<Liveness>,
    metrics: VersionMetrics,
    inner: S,
}

impl<S> Retry<S> {
    /// Retries by `policy` (which also sizes the budget) around `inner`.
    pub(crate) fn new(
        policy: &RetrySpec,
        liveness: Arc<Liveness>,
        metrics: VersionMetrics,
        inner: S,
    ) -> Self {
        Retry {
            budget: RetryBudget::new(policy),
            policy: policy.clone(),
            liveness,
            metrics,
            inner,
        }
    }

    /// Classifies the failure of attempt number `attempt` of a call started at `mark`; `Ok`
    /// with the time to wait when it is worth retrying, `Err` with the call's error otherwise.
    fn judge(
        &self,
        error: InferError,
        attempt: u32,
        deadline: Instant,
        mark: u64,
    ) -> Result<(std::time::Duration, InferError), InferError> {
        self.metrics.failed(error.kind);
        let policy = &self.policy;
        let wait = error
            .retry_after
            .unwrap_or_else(|| backoff(attempt, policy.backoff, policy.max_backoff));
        let retry = error.kind.is_retryable()
            && attempt < policy.max_attempts
            && Instant::now() + wait < deadline;
        let error = InferError {
            attempts: attempt,
            model_down: self.liveness.looks_down(&error, mark),
            ..error
        };
        if !retry {
            return Err(error);
        }
        if !self.budget.withdraw() {
            self.metrics.budget_exhausted();
            return Err(InferError {
                message: format!("{} (retry budget spent)", error.message),
                ..error
            });
        }
        Ok((wait, error))
    }
}

impl<'a, S> Service<Call<'a>> for Retry<S>
where
    S: Service<Attempt<'a>, Response = Answer, Error = Failed>,
{
    type Response = Answer;
    type Error = InferError;

    async fn call(&self, call: Call<'a>) -> Result<Answer, InferError> {
        self.budget.deposit();
        let mark = self.liveness.mark();
        let mut attempt = 0u32;
        let mut avoid = None;
        // The failure a retry was sent for: what the caller gets when the retry finds no time
        // left (a 503's message says more than "no time left").
        let mut retried: Option<InferError> = None;
        loop {
            attempt += 1;
            let Failed { error, replica } = match self.inner.call(Attempt { call, avoid }).await {
                Ok(answer) => return Ok(answer),
                Err(failed) => failed,
            };
            if error.is_no_time_left()
                && let Some(previous) = retried.take()
            {
                return Err(previous);
            }
            avoid = replica;
            let (wait, error) = self.judge(error, attempt, call.deadline, mark)?;
            retried = Some(error);
            self.metrics.retried();
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::balance::Replica;
    use crate::inference::error::ErrorKind;
    use crate::inference::layers::testing::{
        answer, contract, metrics_in, model_metrics, replica, rows,
    };
    use crate::telemetry::ModelMetrics;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    type Step = Box<dyn FnOnce() -> Result<Answer, Failed> + Send>;

    /// Answers attempts from a script, recording which replica each one avoided.
    #[derive(Default)]
    struct Script {
        steps: Mutex<VecDeque<Step>>,
        avoided: Mutex<Vec<Option<String>>>,
    }

    impl Script {
        fn new(steps: Vec<Step>) -> Self {
            Script {
                steps: Mutex::new(steps.into()),
                avoided: Mutex::default(),
            }
        }
        fn avoided(&self) -> Vec<Option<String>> {
            self.avoided.lock().unwrap().clone()
        }
    }

    impl<'a> Service<Attempt<'a>> for Script {
        type Response = Answer;
        type Error = Failed;
        async fn call(&self, attempt: Attempt<'a>) -> Result<Answer, Failed> {
            let avoided = attempt.avoid.map(|r| r.address.to_string());
            self.avoided.lock().unwrap().push(avoided);
            let step = self.steps.lock().unwrap().pop_front().expect("scripted");
            step()
        }
    }

    fn fail(kind: ErrorKind, on: Option<&Arc<Replica>>) -> Step {
        let replica = on.cloned();
        Box::new(move || {
            Err(Failed {
                error: InferError::new(kind, kind.as_str()),
                replica,
            })
        })
    }

    fn throttled(retry_after: Duration) -> Step {
        Box::new(move || {
            Err(Failed {
                error: InferError {
                    retry_after: Some(retry_after),
                    ..InferError::new(ErrorKind::Throttled, "429")
                },
                replica: None,
            })
        })
    }

    fn ok() -> Step {
        Box::new(|| Ok(answer("b")))
    }

    fn policy(max_attempts: u32) -> RetrySpec {
        RetrySpec {
            max_attempts,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
            min_retries_per_second: 1000,
            ..RetrySpec::default()
        }
    }

    fn retry(policy: &RetrySpec, steps: Vec<Step>) -> (Retry<Script>, Arc<Liveness>) {
        retry_counted(policy, steps, &model_metrics())
    }

    fn retry_counted(
        policy: &RetrySpec,
        steps: Vec<Step>,
        families: &ModelMetrics,
    ) -> (Retry<Script>, Arc<Liveness>) {
        let liveness = Arc::new(Liveness::default());
        let metrics = metrics_in(families);
        let layer = Retry::new(policy, liveness.clone(), metrics, Script::new(steps));
        (layer, liveness)
    }

    async fn call(layer: &Retry<Script>, left: Duration) -> Result<Answer, InferError> {
        let (inputs, contract) = (rows(1), contract());
        let deadline = Instant::now() + left;
        layer
            .call(Call {
                inputs: &inputs,
                contract: &contract,
                deadline,
            })
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_avoiding_the_replica_that_failed() {
        let (a, b) = (replica("a", 1), replica("b", 1));
        let steps = vec![
            fail(ErrorKind::Unavailable, Some(&a)),
            fail(ErrorKind::ServerError, Some(&b)),
            ok(),
        ];
        let families = model_metrics();
        let (layer, _) = retry_counted(&policy(5), steps, &families);
        let answer = call(&layer, Duration::from_secs(5)).await.unwrap();
        assert_eq!(&*answer.replica, "b");
        let avoided = layer.inner.avoided();
        assert_eq!(avoided, [None, Some("a".into()), Some("b".into())]);
        assert_eq!(families.retries.with_label_values(&["m", "v"]).get(), 2);
        let errors = |kind: &str| families.errors.with_label_values(&["m", "v", kind]).get();
        assert_eq!((errors("unavailable"), errors("server_error")), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_is_not_retried() {
        let (layer, _) = retry(&policy(5), vec![fail(ErrorKind::Rejected, None)]);
        let e = call(&layer, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(
            (e.kind, e.attempts, e.model_down),
            (ErrorKind::Rejected, 1, false)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_run_out_and_a_silent_version_looks_down() {
        let steps = (0..3).map(|_| fail(ErrorKind::Timeout, None)).collect();
        let (layer, _) = retry(&policy(3), steps);
        let e = call(&layer, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!((e.kind, e.attempts), (ErrorKind::Timeout, 3));
        assert!(e.model_down, "no call got an answer while this one tried");
    }

    #[tokio::test(start_paused = true)]
    async fn a_version_that_answers_other_calls_is_not_down() {
        let (layer, liveness) = retry(&policy(1), vec![]);
        let live = liveness.clone();
        layer
            .inner
            .steps
            .lock()
            .unwrap()
            .push_back(Box::new(move || {
                live.observe(&Ok(crate::inference::protocol::CallOutput::columns(vec![])));
                Err(Failed {
                    error: InferError::new(ErrorKind::Unavailable, "503"),
                    replica: None,
                })
            }));
        let e = call(&layer, Duration::from_secs(5)).await.unwrap_err();
        assert!(!e.model_down, "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_waited_out() {
        let started = Instant::now();
        let (layer, _) = retry(&policy(5), vec![throttled(Duration::from_secs(2)), ok()]);
        assert!(call(&layer, Duration::from_secs(5)).await.is_ok());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_is_sent_that_would_start_past_the_deadline() {
        let started = Instant::now();
        let (layer, _) = retry(&policy(5), vec![throttled(Duration::from_secs(2)), ok()]);
        let e = call(&layer, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!((e.kind, e.attempts), (ErrorKind::Throttled, 1));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_that_finds_no_time_left_reports_what_it_retried() {
        let no_time: Step = Box::new(|| {
            Err(Failed {
                error: InferError::no_time_left(),
                replica: None,
            })
        });
        let (layer, _) = retry(
            &policy(5),
            vec![fail(ErrorKind::Unavailable, None), no_time],
        );
        let e = call(&layer, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!((e.kind, e.attempts), (ErrorKind::Unavailable, 1), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_stops_retries() {
        let spent = RetrySpec {
            budget_percent: 0,
            min_retries_per_second: 0,
            ..policy(5)
        };
        let families = model_metrics();
        let steps = vec![fail(ErrorKind::Unavailable, None)];
        let (layer, _) = retry_counted(&spent, steps, &families);
        let e = call(&layer, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.message, "unavailable (retry budget spent)");
        assert_eq!(e.attempts, 1);
        let exhausted = &families.retries_budget_exhausted;
        assert_eq!(exhausted.with_label_values(&["m", "v"]).get(), 1);
        assert_eq!(families.retries.with_label_values(&["m", "v"]).get(), 0);
    }
}
