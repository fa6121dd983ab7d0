//! A model at run time: versions with traffic weights and a fallback; each version a protocol
//! backend behind a balancer, called with an attempt timeout, an overall deadline and
//! budgeted retries (one retry loop, above the balancer, so a retry can reach another
//! replica).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use rand::Rng;

use super::balance::{Balancer, Outcome};
use super::error::{ErrorKind, InferError};
use super::protocol::{Backend, Contract, check_shape};
use super::retry::{RetryBudget, backoff};
use super::types::BatchingPolicy;
pub use super::types::{Answer, CallPolicy};
use crate::telemetry::ModelMetrics;

/// Shortest attempt worth sending; with less time left before the deadline the call gives up.
const MIN_ATTEMPT: Duration = Duration::from_millis(1);

/// Message of the `Deadline` error of an attempt that was never sent for lack of time.
const NO_TIME_LEFT: &str = "no time left for another attempt";

/// One version: backend, replicas, budget.
pub struct VersionClient {
    /// Model name.
    pub model: Arc<str>,
    /// Version name.
    pub version: Arc<str>,
    /// Protocol client.
    pub backend: Arc<dyn Backend>,
    /// Replicas.
    pub balancer: Balancer,
    policy: Arc<CallPolicy>,
    budget: RetryBudget,
    metrics: ModelMetrics,
    /// When a replica last answered (success, or an error only a live model gives), in ns
    /// since `epoch` (0: never).
    last_answer_ns: AtomicU64,
    epoch: Instant,
}

impl VersionClient {
    /// A version client.
    pub fn new(
        model: &str,
        version: &str,
        backend: Arc<dyn Backend>,
        balancer: Balancer,
        policy: Arc<CallPolicy>,
        metrics: ModelMetrics,
    ) -> Self {
        VersionClient {
            model: Arc::from(model),
            version: Arc::from(version),
            backend,
            balancer,
            budget: RetryBudget::new(&policy.retry),
            policy,
            metrics,
            last_answer_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Replaces the version's replicas (admin API), each with this version's metric labels.
    pub fn set_replicas(&self, addresses: &[String], max_in_flight: usize) {
        let replicas = addresses
            .iter()
            .map(|address| {
                let labels = [&*self.model, &*self.version, address.as_str()];
                Arc::new(super::balance::Replica::new(
                    address,
                    max_in_flight,
                    self.metrics.in_flight.with_label_values(&labels),
                    self.metrics.ejections.with_label_values(&labels),
                ))
            })
            .collect();
        self.balancer.set_replicas(replicas);
    }

    /// Records one attempt forwarded by the gateway (outcome `ok` or an error kind), in the
    /// same families as pipeline calls.
    pub fn record_forward(&self, replica: &str, outcome: &str, latency: Duration) {
        let mvr = [&*self.model, &*self.version, replica];
        self.metrics
            .latency
            .with_label_values(&mvr)
            .observe(latency.as_secs_f64());
        self.metrics
            .calls
            .with_label_values(&[&*self.model, &*self.version, replica, outcome])
            .inc();
        if outcome != "ok" {
            self.metrics
                .errors
                .with_label_values(&[&*self.model, &*self.version, outcome])
                .inc();
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Calls the version with retries until `deadline`.
    pub async fn call(
        &self,
        inputs: &RecordBatch,
        contract: &Contract,
        deadline: Instant,
    ) -> Result<Answer, InferError> {
        let labels = [&*self.model, &*self.version];
        self.metrics
            .batch_rows
            .with_label_values(&labels)
            .observe(inputs.num_rows() as f64);
        self.budget.deposit();
        let started_ns = self.now_ns().max(1);
        let mut attempt = 0u32;
        let mut last_replica = None;
        // The failure a retry was sent for: what the caller gets when the retry finds no time
        // left (a 503's message says more than "no time left").
        let mut retried: Option<InferError> = None;
        loop {
            attempt += 1;
            let result = self
                .attempt(inputs, contract, deadline, last_replica.as_ref())
                .await;
            let (error, replica) = match result {
                Ok(answer) => return Ok(answer),
                Err((e, replica)) => (e, replica),
            };
            if error.kind == ErrorKind::Deadline
                && error.message == NO_TIME_LEFT
                && let Some(previous) = retried.take()
            {
                return Err(previous);
            }
            last_replica = replica;
            self.metrics
                .errors
                .with_label_values(&[&*self.model, &*self.version, error.kind.as_str()])
                .inc();
            let wait = error.retry_after.unwrap_or_else(|| {
                backoff(
                    attempt,
                    self.policy.retry.backoff,
                    self.policy.retry.max_backoff,
                )
            });
            let retry = error.kind.is_retryable()
                && attempt < self.policy.retry.max_attempts
                && Instant::now() + wait < deadline;
            // Down: nothing but unavailability or silence, and no call to this version got an
            // answer while this one was trying. A model that answers (even with errors) is up.
            let model_down = matches!(
                error.kind,
                ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Deadline
            ) && self.last_answer_ns.load(Ordering::Relaxed) < started_ns;
            let error = InferError {
                attempts: attempt,
                model_down,
                ..error
            };
            if !retry {
                return Err(error);
            }
            if !self.budget.withdraw() {
                self.metrics
                    .retries_budget_exhausted
                    .with_label_values(&labels)
                    .inc();
                return Err(InferError {
                    message: format!("{} (retry budget spent)", error.message),
                    ..error
                });
            }
            retried = Some(error);
            self.metrics.retries.with_label_values(&labels).inc();
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt on one replica. On failure, returns the replica tried (so a retry avoids it).
    async fn attempt(
        &self,
        inputs: &RecordBatch,
        contract: &Contract,
        deadline: Instant,
        avoid: Option<&Arc<super::balance::Replica>>,
    ) -> Result<Answer, (InferError, Option<Arc<super::balance::Replica>>)> {
        let Some(replica) = self.balancer.pick(avoid) else {
            return Err((
                InferError::new(
                    ErrorKind::NoReplica,
                    format!(
                        "every replica of {}/{} is ejected after failures",
                        self.model, self.version
                    ),
                ),
                None,
            ));
        };
        let deadline_tokio = tokio::time::Instant::from_std(deadline);
        let Ok(slot) = tokio::time::timeout_at(deadline_tokio, replica.acquire()).await else {
            replica.release_probe();
            return Err((
                InferError::new(
                    ErrorKind::Saturated,
                    "deadline passed waiting for a free replica slot",
                ),
                Some(replica),
            ));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left < MIN_ATTEMPT {
            return Err((
                InferError::new(ErrorKind::Deadline, NO_TIME_LEFT),
                Some(replica),
            ));
        }
        // An attempt cut short by the call's deadline says nothing about the replica.
        let cut_short = left < self.policy.timeout;
        let budget = self.policy.timeout.min(left);
        let address = replica.address.clone();
        let outcome =
            tokio::time::timeout(budget, self.backend.call(&address, inputs, contract)).await;
        let result = match outcome {
            Ok(Ok(output)) => check_shape(&output, contract, inputs.num_rows()).map(|()| output),
            Ok(Err(e)) => Err(e),
            Err(_) if cut_short => Err(InferError::new(
                ErrorKind::Deadline,
                format!("no answer within the {budget:?} left of the deadline"),
            )),
            Err(_) => Err(InferError::new(
                ErrorKind::Timeout,
                format!("no answer within {budget:?}"),
            )),
        };
        let health = match &result {
            Ok(_) => Outcome::Success,
            Err(e) if e.kind.counts_for_ejection() => Outcome::Failure,
            Err(e) if e.kind == ErrorKind::Rejected || e.kind == ErrorKind::Contract => {
                Outcome::Success
            }
            Err(_) => Outcome::Neutral,
        };
        let answered = match &result {
            Ok(_) => true,
            Err(e) => matches!(
                e.kind,
                ErrorKind::Rejected | ErrorKind::Contract | ErrorKind::ServerError
            ),
        };
        if answered {
            self.last_answer_ns
                .fetch_max(self.now_ns(), Ordering::Relaxed);
        }
        let latency = slot.finish(health, &self.policy.ejection);
        let mvr = [&*self.model, &*self.version, &*address];
        self.metrics
            .latency
            .with_label_values(&mvr)
            .observe(latency.as_secs_f64());
        let outcome_label = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        self.metrics
            .calls
            .with_label_values(&[&*self.model, &*self.version, &*address, outcome_label])
            .inc();
        match result {
            Ok(output) => {
                self.metrics
                    .rows
                    .with_label_values(&mvr)
                    .inc_by(inputs.num_rows() as u64);
                if output.prompt_tokens > 0 {
                    self.metrics
                        .tokens
                        .with_label_values(&[&*self.model, &*self.version, "prompt"])
                        .inc_by(output.prompt_tokens);
                }
                if output.completion_tokens > 0 {
                    self.metrics
                        .tokens
                        .with_label_values(&[&*self.model, &*self.version, "completion"])
                        .inc_by(output.completion_tokens);
                }
                Ok(Answer {
                    columns: output.columns,
                    model: self.model.clone(),
                    version: self.version.clone(),
                    replica: address,
                    latency,
                })
            }
            Err(e) => Err((e, Some(replica))),
        }
    }
}

/// Versions and their traffic weights.
pub struct Router {
    /// Versions in declaration order.
    pub versions: Vec<Arc<VersionClient>>,
    /// Traffic weights (changeable at run time).
    weights: RwLock<Vec<u32>>,
}

impl Router {
    /// A router over `versions` with `weights`.
    pub fn new(versions: Vec<Arc<VersionClient>>, weights: Vec<u32>) -> Self {
        Router {
            versions,
            weights: RwLock::new(weights),
        }
    }

    /// Current weights.
    pub fn weights(&self) -> Vec<u32> {
        self.weights
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the weights (same length, not all zero).
    pub fn set_weights(&self, weights: Vec<u32>) -> Result<(), String> {
        if weights.len() != self.versions.len() || weights.iter().all(|w| *w == 0) {
            return Err("one weight per version, not all zero".to_string());
        }
        *self.weights.write().unwrap_or_else(|e| e.into_inner()) = weights;
        Ok(())
    }

    /// The version for a row: by `key_hash` when sticky (the same key always lands on the same
    /// version while weights are unchanged), at random by weight otherwise.
    pub fn choose(&self, key_hash: Option<u64>) -> usize {
        let weights = self.weights.read().unwrap_or_else(|e| e.into_inner());
        let total: u64 = weights.iter().map(|w| *w as u64).sum();
        if total == 0 {
            return 0;
        }
        let mut x = match key_hash {
            Some(h) => h % total,
            None => rand::rng().random_range(0..total),
        };
        for (i, w) in weights.iter().enumerate() {
            if x < *w as u64 {
                return i;
            }
            x -= *w as u64;
        }
        weights.len() - 1
    }
}

/// Where a failed call goes next.
pub enum Fallback {
    /// A fixed version.
    Version(Arc<VersionClient>),
    /// Another router (another model's weighted split).
    Router(Arc<Router>),
}

/// A model of the registry.
pub struct Model {
    /// Model name.
    pub name: Arc<str>,
    /// Versions and weights.
    pub router: Arc<Router>,
    /// Fallback, resolved once the registry is built.
    pub fallback: Option<Fallback>,
    /// Call policy.
    pub policy: Arc<CallPolicy>,
    /// Micro-batching of the model's requests.
    pub batching: BatchingPolicy,
    /// Metrics.
    pub metrics: ModelMetrics,
}

impl Model {
    /// Calls version `version` (an index of the router) and, when it fails with a retryable
    /// error or has no replica left, the fallback once, within the same deadline.
    pub async fn call(
        &self,
        version: usize,
        inputs: &RecordBatch,
        contract: &Contract,
    ) -> Result<Answer, InferError> {
        let deadline = Instant::now() + self.policy.deadline;
        let client = &self.router.versions[version];
        let error = match client.call(inputs, contract, deadline).await {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        let fallback_applies = error.kind.is_retryable() || error.kind == ErrorKind::NoReplica;
        let target = match (&self.fallback, fallback_applies) {
            (Some(Fallback::Version(v)), true) if !Arc::ptr_eq(v, client) => v.clone(),
            (Some(Fallback::Router(r)), true) => r.versions[r.choose(None)].clone(),
            _ => return Err(error),
        };
        self.metrics
            .fallbacks
            .with_label_values(&[&*self.name, &*client.version])
            .inc();
        // The fallback gets its own time when the primary used it all up.
        let deadline = deadline.max(Instant::now() + self.policy.timeout);
        match target.call(inputs, contract, deadline).await {
            Ok(answer) => Ok(answer),
            Err(fallback_error) => {
                let message = format!(
                    "{} (fallback {}/{} also failed: {})",
                    error.message, target.model, target.version, fallback_error
                );
                // The primary being down is what matters for the rows: hold them, even when
                // the fallback failed differently.
                let kept = if error.is_outage() && !fallback_error.is_outage() {
                    error
                } else {
                    fallback_error
                };
                Err(InferError { message, ..kept })
            }
        }
    }

    /// Most rows one request to `version` may carry, considering its fallback too (a chat
    /// fallback takes one row per request).
    pub fn max_rows_per_request(&self, version: usize) -> Option<usize> {
        let mut limits = vec![self.router.versions[version].backend.max_rows_per_request()];
        match &self.fallback {
            Some(Fallback::Version(v)) => limits.push(v.backend.max_rows_per_request()),
            Some(Fallback::Router(r)) => {
                limits.extend(r.versions.iter().map(|v| v.backend.max_rows_per_request()))
            }
            None => {}
        }
        limits.into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_and_sticky_choice() {
        let router = Router {
            versions: vec![],
            weights: RwLock::new(vec![90, 10]),
        };
        let n = 20_000;
        let second = (0..n).filter(|_| router.choose(None) == 1).count() as f64 / n as f64;
        assert!((0.08..0.12).contains(&second), "{second}");
        for key in 0..100u64 {
            let v = router.choose(Some(key.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            for _ in 0..5 {
                assert_eq!(
                    router.choose(Some(key.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
                    v
                );
            }
        }
    }
}
