//! Retry timing and budget: jittered exponential backoff, and tower's token-bucket retry budget
//! so retries add at most a configured share of load to a failing model.

use std::time::Duration;

use rand::Rng;
use tower::retry::budget::{Budget, TpsBudget};

use crate::spec::RetrySpec;

/// Backoff before attempt `attempt + 1` (`attempt` ≥ 1 attempts made): "full jitter", a
/// uniform draw below `base × 2^(attempt-1)` capped at `max`, so clients that failed together
/// do not retry together.
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(max);
    if cap.is_zero() {
        return cap;
    }
    let nanos = rand::rng().random_range(0..=cap.as_nanos() as u64);
    Duration::from_nanos(nanos)
}

/// Retries allowed as a share of calls, per model version.
pub(crate) struct RetryBudget {
    inner: TpsBudget,
}

impl RetryBudget {
    /// A budget from the model's retry policy (10 s window).
    pub(crate) fn new(spec: &RetrySpec) -> Self {
        RetryBudget {
            inner: TpsBudget::new(
                Duration::from_secs(10),
                spec.min_retries_per_second,
                spec.budget_percent as f32 / 100.0,
            ),
        }
    }

    /// Records a first attempt (earns retry credit).
    pub(crate) fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes credit for one retry; false when the budget is spent.
    pub(crate) fn withdraw(&self) -> bool {
        self.inner.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let base = Duration::from_millis(50);
        let max = Duration::from_secs(1);
        for attempt in 1..30 {
            let b = backoff(attempt, base, max);
            assert!(b <= max);
            assert!(b <= base * 2u32.pow(attempt.min(10) - 1));
        }
        let draws: std::collections::HashSet<_> = (0..20).map(|_| backoff(3, base, max)).collect();
        assert!(draws.len() > 1, "jittered");
    }

    #[test]
    fn budget_limits_retries_to_a_share_of_calls() {
        let budget = RetryBudget::new(&RetrySpec {
            budget_percent: 20,
            min_retries_per_second: 0,
            ..RetrySpec::default()
        });
        for _ in 0..100 {
            budget.deposit();
        }
        let allowed = (0..100).filter(|_| budget.withdraw()).count();
        assert!((15..=25).contains(&allowed), "{allowed}");
    }
}
