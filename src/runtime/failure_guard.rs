//! The guard against a systematic failure (`on_systematic_failure`): when most records of the
//! recent window fail, dead-lettering them one by one would drain the stream into the
//! dead-letter topic. The guard trips instead: the worker holds its failing batch and
//! retries it every `retry_every` (the queues fill, so consumption pauses), the source is
//! paused, the pipeline reports `held`, and nothing is dead-lettered. It clears when a retried
//! batch fails no more than the allowed rate, or when an operator resumes the pipeline (then
//! the held batch's failures are dead-lettered as usual).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use super::status::{PipelineState, StatusBoard};
use crate::spec::SystematicFailureSpec;
use crate::telemetry::PipelineMetrics;

/// What to do with a processed batch's failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Handle them by the pipeline's policy (dead letters, drop, fail).
    Proceed,
    /// Hold the batch: process it again after `retry_every`.
    Hold,
}

/// Shared by the workers of one pipeline.
pub(crate) struct FailureGuard {
    spec: SystematicFailureSpec,
    pipeline: Arc<str>,
    status: StatusBoard,
    metrics: PipelineMetrics,
    state: Mutex<GuardState>,
}

#[derive(Default)]
struct GuardState {
    /// (when, records, failed) of recent batches.
    window: VecDeque<(Instant, usize, usize)>,
    records: usize,
    failed: usize,
    tripped: bool,
}

impl FailureGuard {
    /// A guard for `pipeline`.
    pub(crate) fn new(
        spec: SystematicFailureSpec,
        pipeline: Arc<str>,
        status: StatusBoard,
        metrics: PipelineMetrics,
    ) -> Self {
        FailureGuard {
            spec,
            pipeline,
            status,
            metrics,
            state: Mutex::new(GuardState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GuardState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a processed batch of `records` of which `failed` failed, and says what to do
    /// with its failures.
    pub(crate) fn observe(&self, records: usize, failed: usize) -> Verdict {
        if self.spec.max_failure_rate >= 1.0 || records == 0 {
            return Verdict::Proceed;
        }
        let rate = failed as f64 / records as f64;
        let mut state = self.lock();
        if state.tripped {
            if rate <= self.spec.max_failure_rate {
                self.clear(&mut state, "a retried batch no longer fails");
                return Verdict::Proceed;
            }
            return Verdict::Hold;
        }
        let now = Instant::now();
        state.window.push_back((now, records, failed));
        state.records += records;
        state.failed += failed;
        while let Some(&(at, r, f)) = state.window.front() {
            if now.duration_since(at) <= self.spec.window {
                break;
            }
            state.window.pop_front();
            state.records -= r;
            state.failed -= f;
        }
        let window_rate = state.failed as f64 / state.records as f64;
        if failed > 0
            && state.records >= self.spec.min_records
            && window_rate > self.spec.max_failure_rate
        {
            state.tripped = true;
            let reason = format!(
                "{:.0}% of the last {} records failed (on_systematic_failure.max_failure_rate \
                 is {:.0}%): holding the failing batch and dead-lettering nothing until a retry \
                 succeeds or an operator resumes",
                window_rate * 100.0,
                state.records,
                self.spec.max_failure_rate * 100.0
            );
            tracing::error!(pipeline = %self.pipeline, %reason, "systematic failure");
            self.metrics.systematic_failure.set(1);
            self.status.set(&self.pipeline, PipelineState::Held(reason));
            self.status.set_paused(&self.pipeline, true);
            return Verdict::Hold;
        }
        Verdict::Proceed
    }

    fn clear(&self, state: &mut GuardState, why: &str) {
        *state = GuardState::default();
        tracing::warn!(pipeline = %self.pipeline, why, "systematic failure cleared; resuming");
        self.metrics.systematic_failure.set(0);
        self.status.set(&self.pipeline, PipelineState::Running);
        self.status.set_paused(&self.pipeline, false);
    }

    /// Waits until the held batch should be tried again: after `retry_every`, or at once when
    /// an operator resumes the pipeline, which clears the guard (returns `true`: handle the
    /// batch's failures by the policy even if it still fails).
    pub(crate) async fn wait_to_retry(&self) -> bool {
        let mut pause: watch::Receiver<bool> = self.status.pause_signal(&self.pipeline);
        let resumed = async {
            // The guard paused the pipeline; a resume flips the switch back.
            let _ = pause.wait_for(|paused| !*paused).await;
        };
        tokio::select! {
            () = tokio::time::sleep(self.spec.retry_every) => false,
            () = resumed => {
                let mut state = self.lock();
                if state.tripped {
                    self.clear(&mut state, "an operator resumed the pipeline");
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    fn guard(max_failure_rate: f64, min_records: usize) -> (FailureGuard, StatusBoard) {
        let status = StatusBoard::default();
        status.set("p", PipelineState::Running);
        let spec = SystematicFailureSpec {
            max_failure_rate,
            min_records,
            ..SystematicFailureSpec::default()
        };
        let metrics = Metrics::new().pipeline("p");
        (
            FailureGuard::new(spec, Arc::from("p"), status.clone(), metrics),
            status,
        )
    }

    #[test]
    fn a_few_failures_proceed_and_most_failing_past_min_records_trips() {
        let (guard, status) = guard(0.5, 300);
        assert_eq!(
            guard.observe(100, 100),
            Verdict::Proceed,
            "under min_records"
        );
        assert_eq!(
            guard.observe(100, 10),
            Verdict::Proceed,
            "55% of 200 < min_records"
        );
        assert_eq!(guard.observe(100, 0), Verdict::Proceed, "no failures");
        assert_eq!(
            guard.observe(100, 90),
            Verdict::Proceed,
            "200 of 400 failed: 50% is not over"
        );
        assert_eq!(
            guard.observe(100, 100),
            Verdict::Hold,
            "300 of 500 failed: 60%"
        );
        assert!(matches!(status.snapshot()["p"], PipelineState::Held(_)));
        assert!(status.is_paused("p"));
        assert!(!status.ready());
    }

    #[test]
    fn a_tripped_guard_holds_failing_batches_and_clears_on_a_good_one() {
        let (guard, status) = guard(0.5, 10);
        assert_eq!(guard.observe(10, 10), Verdict::Hold);
        assert_eq!(guard.observe(10, 9), Verdict::Hold, "still failing");
        assert_eq!(guard.observe(10, 1), Verdict::Proceed, "the cause is gone");
        assert_eq!(status.snapshot()["p"], PipelineState::Running);
        assert!(!status.is_paused("p"));
    }

    #[test]
    fn a_rate_of_one_turns_the_guard_off() {
        let (guard, _) = guard(1.0, 1);
        assert_eq!(guard.observe(10, 10), Verdict::Proceed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_operator_resume_clears_the_guard_and_lets_dead_letters_flow() {
        let (guard, status) = guard(0.5, 10);
        assert_eq!(guard.observe(10, 10), Verdict::Hold);
        let guard = Arc::new(guard);
        let waiting = tokio::spawn({
            let guard = guard.clone();
            async move { guard.wait_to_retry().await }
        });
        tokio::task::yield_now().await;
        status.set_paused("p", false);
        assert!(waiting.await.unwrap(), "resumed by the operator");
        assert_eq!(status.snapshot()["p"], PipelineState::Running);
        // Without a resume, the wait ends after retry_every.
        assert_eq!(guard.observe(10, 10), Verdict::Hold);
        assert!(!guard.wait_to_retry().await, "timed retry");
    }
}
