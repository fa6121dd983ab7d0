//! Replica selection: power of two choices over peak-EWMA latency (default), round-robin or
//! least-outstanding; per-replica in-flight limit; passive outlier ejection with growing
//! ejection time.
//!
//! Hand-written rather than `tower::balance`: the balancer must skip ejected replicas, avoid
//! the replica that just failed when retrying, and report per-replica metrics, and each replica
//! is shared by concurrent calls (`&self`), which tower's `&mut self` services would need a
//! lock or a buffer task for on every call.

mod health;
pub(crate) mod replica;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rand::Rng;

use crate::spec::BalanceStrategy;
pub(crate) use health::Outcome;
pub(crate) use replica::Replica;

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
pub(super) mod tests {
    use super::*;
    use crate::spec::EjectionSpec;
    use std::time::Duration;

    /// A replica with four in-flight slots and throwaway metrics (also used by `replica`'s tests).
    pub(crate) fn replica(name: &str) -> Arc<Replica> {
        let gauge = prometheus::IntGauge::new("g", "g").unwrap();
        let counter = prometheus::IntCounter::new("c", "c").unwrap();
        Arc::new(Replica::new(name, 4, gauge, counter))
    }

    /// Ejection after three failures, for 1 to 10 minutes.
    pub(crate) fn ejection() -> EjectionSpec {
        EjectionSpec {
            consecutive_failures: 3,
            base_time: Duration::from_secs(60),
            max_time: Duration::from_secs(600),
        }
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
