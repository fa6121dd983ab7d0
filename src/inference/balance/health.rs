//! The health of one replica: its peak-EWMA latency, and passive outlier ejection with an
//! ejection time that grows with each ejection and is forgiven after a healthy spell.

use std::time::{Duration, Instant};

use crate::spec::EjectionSpec;

/// Decay time of the peak-EWMA latency estimate (as in Finagle and linkerd).
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Latency assumed for a replica that has not answered yet: optimistic, so new replicas get
/// traffic and a measurement quickly.
const INITIAL_LATENCY: Duration = Duration::from_millis(1);

/// What an attempt's outcome means for a replica's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (even with a 4xx: the replica is healthy, the request was bad).
    Success,
    /// Failed in a way that says the replica is unhealthy.
    Failure,
    /// Neither (throttled, or the attempt was cancelled).
    Neutral,
}

/// Latency estimate and ejection state of a replica.
pub(super) struct Health {
    /// Peak-EWMA latency estimate in nanoseconds.
    pub(super) ewma_ns: f64,
    pub(super) last_update: Instant,
    pub(super) consecutive_failures: u32,
    pub(super) times_ejected: u32,
    pub(super) ejected_until: Option<Instant>,
    /// Back from an ejection and answering since then.
    pub(super) healthy_since: Option<Instant>,
}

impl Health {
    /// A replica not heard from yet.
    pub(super) fn new() -> Self {
        Health {
            ewma_ns: INITIAL_LATENCY.as_nanos() as f64,
            last_update: Instant::now(),
            consecutive_failures: 0,
            times_ejected: 0,
            ejected_until: None,
            healthy_since: None,
        }
    }

    /// The latency estimate at `now`, in nanoseconds (decayed since the last sample).
    pub(super) fn latency_ns(&self, now: Instant) -> f64 {
        let elapsed = now
            .saturating_duration_since(self.last_update)
            .as_secs_f64();
        self.ewma_ns * (-elapsed / EWMA_DECAY.as_secs_f64()).exp()
    }

    /// Takes in the latency of an attempt that ended at `now`.
    pub(super) fn sample(&mut self, latency: Duration, now: Instant) {
        let rtt = latency.as_nanos() as f64;
        // Peak EWMA: jump up to a slower sample at once, decay towards faster ones.
        if rtt > self.ewma_ns {
            self.ewma_ns = rtt;
        } else {
            let elapsed = now
                .saturating_duration_since(self.last_update)
                .as_secs_f64();
            let w = (-elapsed / EWMA_DECAY.as_secs_f64()).exp();
            self.ewma_ns = self.ewma_ns * w + rtt * (1.0 - w);
        }
        self.last_update = now;
    }

    /// Takes in the outcome of an attempt that ended at `now`; returns how long the replica
    /// is ejected for when this outcome ejects it.
    pub(super) fn judge(
        &mut self,
        outcome: Outcome,
        ejection: &EjectionSpec,
        now: Instant,
    ) -> Option<Duration> {
        match outcome {
            Outcome::Success => {
                self.consecutive_failures = 0;
                // A replica back from ejection that answers is in rotation again; after
                // `max_time` of health its ejection history is forgiven.
                if let Some(until) = self.ejected_until
                    && now >= until
                {
                    self.ejected_until = None;
                    self.healthy_since = Some(now);
                }
                if self
                    .healthy_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= ejection.max_time)
                {
                    self.times_ejected = 0;
                    self.healthy_since = None;
                }
                None
            }
            Outcome::Failure => {
                self.consecutive_failures += 1;
                let probing = self.ejected_until.is_some_and(|until| now >= until);
                if self.consecutive_failures < ejection.consecutive_failures.max(1) && !probing {
                    return None;
                }
                self.times_ejected += 1;
                let time = ejection
                    .base_time
                    .saturating_mul(self.times_ejected)
                    .min(ejection.max_time);
                self.ejected_until = Some(now + time);
                self.healthy_since = None;
                self.consecutive_failures = 0;
                Some(time)
            }
            Outcome::Neutral => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn spec() -> EjectionSpec {
        EjectionSpec {
            consecutive_failures: 2,
            base_time: 10 * S,
            max_time: 25 * S,
        }
    }

    #[test]
    fn failures_in_a_row_eject_for_growing_capped_times_and_health_forgives() {
        let (mut h, spec, t0) = (Health::new(), spec(), Instant::now());
        assert_eq!(h.judge(Outcome::Failure, &spec, t0), None);
        assert_eq!(h.judge(Outcome::Success, &spec, t0), None, "reset");
        assert_eq!(h.judge(Outcome::Failure, &spec, t0), None);
        assert_eq!(h.judge(Outcome::Neutral, &spec, t0), None, "no reset");
        assert_eq!(h.judge(Outcome::Failure, &spec, t0), Some(10 * S));
        // The probe after the ejection fails: ejected again at once, for longer, up to the cap.
        let t1 = t0 + 10 * S;
        assert_eq!(h.judge(Outcome::Failure, &spec, t1), Some(20 * S));
        let t2 = t1 + 20 * S;
        assert_eq!(h.judge(Outcome::Failure, &spec, t2), Some(25 * S));
        // A probe that answers puts it back; `max_time` of health forgives the history.
        let t3 = t2 + 25 * S;
        assert_eq!(h.judge(Outcome::Success, &spec, t3), None);
        assert_eq!((h.ejected_until, h.times_ejected), (None, 3));
        h.judge(Outcome::Success, &spec, t3 + 25 * S);
        assert_eq!(h.times_ejected, 0);
    }

    #[test]
    fn peak_ewma_jumps_up_at_once_and_decays_towards_faster_samples() {
        let (mut h, t0) = (Health::new(), Instant::now());
        h.sample(Duration::from_millis(100), t0);
        assert_eq!(h.latency_ns(t0), 100e6);
        h.sample(Duration::from_millis(10), t0 + 10 * S);
        let w = (-1.0f64).exp();
        let expected = 100e6 * w + 10e6 * (1.0 - w);
        assert!((h.latency_ns(t0 + 10 * S) - expected).abs() < 1.0);
        assert!(h.latency_ns(t0 + 20 * S) < expected, "decays while idle");
    }
}
