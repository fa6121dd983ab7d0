//! One replica of a model version: its in-flight slots (a hard limit per replica), the probe
//! that tests it again when an ejection expires, and its [`Health`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::health::{Health, Outcome};
use crate::spec::EjectionSpec;

/// One replica of a model version.
pub struct Replica {
    /// Base URL (or `in-process`).
    pub address: Arc<str>,
    /// `address` parsed once (`None` for `in-process`), so a forwarded request does not parse
    /// the host again.
    base_url: Option<reqwest::Url>,
    ejectable: bool,
    /// A probe of a replica whose ejection expired is in flight: others wait for its outcome.
    probing: AtomicBool,
    in_flight: AtomicUsize,
    slots: Arc<Semaphore>,
    health: Mutex<Health>,
    in_flight_gauge: prometheus::IntGauge,
    ejections: prometheus::IntCounter,
}

/// Proof that a request holds an in-flight slot of a replica; frees it when dropped.
pub struct InFlight {
    replica: Arc<Replica>,
    _permit: OwnedSemaphorePermit,
    started: Instant,
}

impl InFlight {
    /// The replica.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Records the outcome of the attempt (latency feeds the EWMA; failures may eject).
    pub fn finish(self, outcome: Outcome, ejection: &EjectionSpec) -> Duration {
        let latency = self.started.elapsed();
        self.replica.record(latency, outcome, ejection);
        latency
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // An attempt abandoned without an outcome must not leave a probe claimed forever.
        self.replica.release_probe();
        self.replica.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.replica.in_flight_gauge.dec();
    }
}

impl Replica {
    /// A replica with at most `max_in_flight` concurrent requests.
    pub fn new(
        address: &str,
        max_in_flight: usize,
        in_flight_gauge: prometheus::IntGauge,
        ejections: prometheus::IntCounter,
    ) -> Self {
        Replica {
            address: Arc::from(address),
            base_url: reqwest::Url::parse(address).ok(),
            ejectable: true,
            probing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
            health: Mutex::new(Health::new()),
            in_flight_gauge,
            ejections,
        }
    }

    /// The replica's base URL, when its address is one.
    pub fn base_url(&self) -> Option<&reqwest::Url> {
        self.base_url.as_ref()
    }

    /// This replica is never ejected (the only copy of an in-process model).
    pub fn never_ejected(mut self) -> Self {
        self.ejectable = false;
        self
    }

    /// Whether the balancer may send to this replica at `now`: not ejected, or its ejection
    /// expired and no probe is in flight yet.
    pub(super) fn available(&self, now: Instant) -> bool {
        match self.health().ejected_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) => !self.probing.load(Ordering::Acquire),
        }
    }

    /// Marks the probe of an expired ejection as in flight (false if another caller won).
    pub(super) fn claim_probe(&self, now: Instant) -> bool {
        let expired = self
            .health()
            .ejected_until
            .is_some_and(|until| now >= until);
        !expired
            || self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Gives up a claimed probe (the attempt never reached the replica).
    pub fn release_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the replica is ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.health().ejected_until.is_some_and(|until| now < until)
    }

    /// Times this replica was ejected so far.
    pub fn times_ejected(&self) -> u32 {
        self.health().times_ejected
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // A panic while holding this lock cannot leave the numbers inconsistent in a way that
        // matters; keep balancing with them.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Load estimate for p2c: peak-EWMA latency × (in-flight + 1).
    pub(super) fn load(&self, now: Instant) -> f64 {
        let decayed = self.health().latency_ns(now);
        decayed.max(1.0) * (self.in_flight() as f64 + 1.0)
    }

    /// Waits for an in-flight slot.
    pub async fn acquire(self: &Arc<Self>) -> InFlight {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("replica semaphore is never closed");
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.in_flight_gauge.inc();
        InFlight {
            replica: self.clone(),
            _permit: permit,
            started: Instant::now(),
        }
    }

    /// Records an attempt's latency and outcome; ejects the replica when it should be.
    pub(super) fn record(&self, latency: Duration, outcome: Outcome, ejection: &EjectionSpec) {
        let now = Instant::now();
        let mut h = self.health();
        h.sample(latency, now);
        self.probing.store(false, Ordering::Release);
        if !self.ejectable {
            return;
        }
        if let Some(time) = h.judge(outcome, ejection, now) {
            self.ejections.inc();
            tracing::warn!(replica = %self.address, ejected_for = ?time, "model replica ejected after consecutive failures");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::balance::Balancer;
    use crate::spec::BalanceStrategy;

    use crate::inference::balance::tests::{ejection, replica};

    #[tokio::test]
    async fn consecutive_failures_eject_and_successes_reset() {
        let r = replica("a");
        let balancer = Balancer::new(vec![r.clone()], BalanceStrategy::RoundRobin);
        for _ in 0..2 {
            r.acquire().await.finish(Outcome::Failure, &ejection());
        }
        r.acquire().await.finish(Outcome::Success, &ejection());
        for _ in 0..2 {
            r.acquire().await.finish(Outcome::Failure, &ejection());
        }
        assert!(balancer.pick(None).is_some(), "two failures do not eject");
        r.acquire().await.finish(Outcome::Failure, &ejection());
        assert!(balancer.pick(None).is_none(), "three in a row eject");
        assert_eq!(r.times_ejected(), 1);
    }

    /// How long the replica stays ejected from now.
    fn ejected_for(r: &Replica) -> Duration {
        let until = r.health().ejected_until.expect("ejected");
        until.saturating_duration_since(Instant::now())
    }

    /// Moves the end of the current ejection to now, as if its time had passed.
    fn expire_ejection(r: &Replica) {
        r.health().ejected_until = Some(Instant::now());
    }

    #[tokio::test]
    async fn ejection_time_grows_with_each_ejection_up_to_the_cap_and_health_forgives_it() {
        let spec = EjectionSpec {
            consecutive_failures: 3,
            base_time: Duration::from_secs(60),
            max_time: Duration::from_secs(150),
        };
        let r = replica("a");
        let balancer = Balancer::new(vec![r.clone()], BalanceStrategy::RoundRobin);
        for _ in 0..3 {
            r.acquire().await.finish(Outcome::Failure, &spec);
        }
        let first = ejected_for(&r);
        assert!(first > Duration::from_secs(59) && first <= Duration::from_secs(60));
        // When the time is up one probe goes out; its failure ejects again at once, for longer.
        expire_ejection(&r);
        assert!(Arc::ptr_eq(&balancer.pick(None).unwrap(), &r), "probe");
        r.acquire().await.finish(Outcome::Failure, &spec);
        assert_eq!(r.times_ejected(), 2);
        let second = ejected_for(&r);
        assert!(second > Duration::from_secs(119) && second <= Duration::from_secs(120));
        expire_ejection(&r);
        r.acquire().await.finish(Outcome::Failure, &spec);
        assert_eq!(r.times_ejected(), 3);
        let third = ejected_for(&r);
        assert!(
            third > Duration::from_secs(149) && third <= Duration::from_secs(150),
            "capped at max_time: {third:?}"
        );
        // A probe that answers puts the replica back in rotation; after `max_time` of health
        // its history is forgiven and the next ejection is short again.
        expire_ejection(&r);
        r.acquire().await.finish(Outcome::Success, &spec);
        assert!(!r.is_ejected(Instant::now()));
        assert_eq!(
            r.times_ejected(),
            3,
            "history kept until healthy for max_time"
        );
        r.health().healthy_since = Some(Instant::now() - spec.max_time);
        r.acquire().await.finish(Outcome::Success, &spec);
        assert_eq!(r.times_ejected(), 0);
        for _ in 0..3 {
            r.acquire().await.finish(Outcome::Failure, &spec);
        }
        assert!(ejected_for(&r) <= Duration::from_secs(60));
    }
}
