//! Replica selection: power of two choices over peak-EWMA latency (default), round-robin or
//! least-outstanding; per-replica in-flight limit; passive outlier ejection with growing
//! ejection time.
//!
//! Hand-written rather than `tower::balance`: the balancer must skip ejected replicas, avoid
//! the replica that just failed when retrying, and report per-replica metrics, and each replica
//! is shared by concurrent calls (`&self`), which tower's `&mut self` services would need a
//! lock or a buffer task for on every call.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::spec::{BalanceStrategy, EjectionSpec};

/// Decay time of the peak-EWMA latency estimate (as in Finagle and linkerd).
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Latency assumed for a replica that has not answered yet: optimistic, so new replicas get
/// traffic and a measurement quickly.
const INITIAL_LATENCY: Duration = Duration::from_millis(1);

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

struct Health {
    /// Peak-EWMA latency estimate in nanoseconds.
    ewma_ns: f64,
    last_update: Instant,
    consecutive_failures: u32,
    times_ejected: u32,
    ejected_until: Option<Instant>,
    /// Back from an ejection and answering since then.
    healthy_since: Option<Instant>,
}

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
            health: Mutex::new(Health {
                ewma_ns: INITIAL_LATENCY.as_nanos() as f64,
                last_update: Instant::now(),
                consecutive_failures: 0,
                times_ejected: 0,
                ejected_until: None,
                healthy_since: None,
            }),
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
    fn available(&self, now: Instant) -> bool {
        match self.health().ejected_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) => !self.probing.load(Ordering::Acquire),
        }
    }

    /// Marks the probe of an expired ejection as in flight (false if another caller won).
    fn claim_probe(&self, now: Instant) -> bool {
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
    fn load(&self, now: Instant) -> f64 {
        let h = self.health();
        let elapsed = now.saturating_duration_since(h.last_update).as_secs_f64();
        let decayed = h.ewma_ns * (-elapsed / EWMA_DECAY.as_secs_f64()).exp();
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

    fn record(&self, latency: Duration, outcome: Outcome, ejection: &EjectionSpec) {
        let now = Instant::now();
        let mut h = self.health();
        let rtt = latency.as_nanos() as f64;
        // Peak EWMA: jump up to a slower sample at once, decay towards faster ones.
        if rtt > h.ewma_ns {
            h.ewma_ns = rtt;
        } else {
            let elapsed = now.saturating_duration_since(h.last_update).as_secs_f64();
            let w = (-elapsed / EWMA_DECAY.as_secs_f64()).exp();
            h.ewma_ns = h.ewma_ns * w + rtt * (1.0 - w);
        }
        h.last_update = now;
        self.probing.store(false, Ordering::Release);
        if !self.ejectable {
            return;
        }
        match outcome {
            Outcome::Success => {
                h.consecutive_failures = 0;
                // A replica back from ejection that answers is in rotation again; after
                // `max_time` of health its ejection history is forgiven.
                if let Some(until) = h.ejected_until
                    && now >= until
                {
                    h.ejected_until = None;
                    h.healthy_since = Some(now);
                }
                if h.healthy_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= ejection.max_time)
                {
                    h.times_ejected = 0;
                    h.healthy_since = None;
                }
            }
            Outcome::Failure => {
                h.consecutive_failures += 1;
                let probing = h.ejected_until.is_some_and(|until| now >= until);
                if h.consecutive_failures >= ejection.consecutive_failures.max(1) || probing {
                    h.times_ejected += 1;
                    let time = ejection
                        .base_time
                        .saturating_mul(h.times_ejected)
                        .min(ejection.max_time);
                    h.ejected_until = Some(now + time);
                    h.healthy_since = None;
                    h.consecutive_failures = 0;
                    self.ejections.inc();
                    tracing::warn!(replica = %self.address, ejected_for = ?time, "model replica ejected after consecutive failures");
                }
            }
            Outcome::Neutral => {}
        }
    }
}

/// The replicas of one version and how to choose among them.
pub struct Balancer {
    /// Replaced as a whole (admin API); readers take a snapshot.
    replicas: std::sync::RwLock<Arc<Vec<Arc<Replica>>>>,
    strategy: BalanceStrategy,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer over `replicas`.
    pub fn new(replicas: Vec<Arc<Replica>>, strategy: BalanceStrategy) -> Self {
        Balancer {
            replicas: std::sync::RwLock::new(Arc::new(replicas)),
            strategy,
            next: AtomicUsize::new(0),
        }
    }

    /// All replicas (a snapshot).
    pub fn replicas(&self) -> Arc<Vec<Arc<Replica>>> {
        self.replicas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the replicas. Calls in flight finish on the replicas they picked.
    pub fn set_replicas(&self, replicas: Vec<Arc<Replica>>) {
        *self.replicas.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(replicas);
    }

    /// Chooses a replica that is not ejected, avoiding `avoid` (the one that just failed)
    /// when another is available. `None` when every replica is ejected.
    pub fn pick(&self, avoid: Option<&Arc<Replica>>) -> Option<Arc<Replica>> {
        let now = Instant::now();
        let replicas = self.replicas();
        let mut candidates: Vec<&Arc<Replica>> =
            replicas.iter().filter(|r| r.available(now)).collect();
        if candidates.len() > 1
            && let Some(avoid) = avoid
        {
            candidates.retain(|r| !Arc::ptr_eq(r, avoid));
        }
        let chosen = match candidates.len() {
            0 => return None,
            1 => candidates[0],
            n => match self.strategy {
                BalanceStrategy::RoundRobin => {
                    candidates[self.next.fetch_add(1, Ordering::Relaxed) % n]
                }
                BalanceStrategy::LeastOutstanding => {
                    // Ties broken by rotation so idle replicas share the load.
                    let start = self.next.fetch_add(1, Ordering::Relaxed);
                    (0..n)
                        .map(|i| candidates[(start + i) % n])
                        .min_by_key(|r| r.in_flight())
                        .expect("n > 1")
                }
                BalanceStrategy::P2cEwma => {
                    let mut rng = rand::rng();
                    let a = rng.random_range(0..n);
                    let mut b = rng.random_range(0..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (ra, rb) = (candidates[a], candidates[b]);
                    if ra.load(now) <= rb.load(now) { ra } else { rb }
                }
            },
        };
        // Two callers may both see an expired ejection; only one gets to probe.
        if !chosen.claim_probe(now) {
            return None;
        }
        Some(chosen.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(name: &str) -> Arc<Replica> {
        let gauge = prometheus::IntGauge::new("g", "g").unwrap();
        let counter = prometheus::IntCounter::new("c", "c").unwrap();
        Arc::new(Replica::new(name, 4, gauge, counter))
    }

    fn ejection() -> EjectionSpec {
        EjectionSpec {
            consecutive_failures: 3,
            base_time: Duration::from_secs(60),
            max_time: Duration::from_secs(600),
        }
    }

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

    #[tokio::test]
    async fn p2c_prefers_the_faster_replica() {
        let fast = replica("fast");
        let slow = replica("slow");
        let spec = ejection();
        for _ in 0..5 {
            let f = fast.acquire().await;
            f.finish(Outcome::Success, &spec);
        }
        slow.record(Duration::from_millis(50), Outcome::Success, &spec);
        let balancer = Balancer::new(vec![fast.clone(), slow], BalanceStrategy::P2cEwma);
        for _ in 0..100 {
            assert!(Arc::ptr_eq(&balancer.pick(None).unwrap(), &fast));
        }
    }

    #[tokio::test]
    async fn avoid_and_least_outstanding() {
        let a = replica("a");
        let b = replica("b");
        let balancer = Balancer::new(
            vec![a.clone(), b.clone()],
            BalanceStrategy::LeastOutstanding,
        );
        let _held = a.acquire().await;
        for _ in 0..10 {
            assert!(Arc::ptr_eq(&balancer.pick(None).unwrap(), &b));
            assert!(Arc::ptr_eq(&balancer.pick(Some(&b)).unwrap(), &a));
        }
        let single = Balancer::new(vec![a.clone()], BalanceStrategy::RoundRobin);
        assert!(
            Arc::ptr_eq(&single.pick(Some(&a)).unwrap(), &a),
            "the only replica is still used"
        );
    }
}
