//! Who a caller is once authenticated (a key's or token's name, scopes and limits), what a
//! route requires of them ([`Policy`]), and why a request is refused. Shared by the API-key
//! table (`auth`) and the JWT verifier (`jwt`), which both produce a [`Principal`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) use crate::spec::api_keys::Scope;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Anyone (liveness only).
    Public,
    /// Any valid key.
    Authenticated,
    /// `infer:<model>` or `infer:*`, for the model the request names.
    Infer,
    /// `admin:read` (or `admin:write`).
    AdminRead,
    /// `admin:write`.
    AdminWrite,
}

/// The caller, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Key name (shared: a principal is cloned several times per request).
    pub name: Arc<str>,
    scopes: Arc<[Scope]>,
    /// The key's rate and concurrency limits, shared by all its requests.
    pub limits: Arc<KeyLimits>,
}

/// Per-key limits: a token bucket for the rate, a semaphore for concurrency.
#[derive(Debug)]
pub struct KeyLimits {
    rate: Option<(f64, f64)>,
    bucket: Mutex<(f64, Instant)>,
    slots: Option<Arc<Semaphore>>,
}

impl KeyLimits {
    /// No limits.
    pub fn unlimited() -> Self {
        Self::new(None, None, None)
    }

    pub(crate) fn new(
        rate_per_second: Option<f64>,
        burst: Option<u32>,
        max_concurrent: Option<usize>,
    ) -> Self {
        let rate = rate_per_second
            .filter(|r| *r > 0.0)
            .map(|r| (r, burst.map_or(r.max(1.0), f64::from)));
        KeyLimits {
            bucket: Mutex::new((rate.map_or(0.0, |(_, b)| b), Instant::now())),
            rate,
            slots: max_concurrent.map(|n| Arc::new(Semaphore::new(n.max(1)))),
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn take_token(&self) -> Result<(), Duration> {
        let Some((rate, burst)) = self.rate else {
            return Ok(());
        };
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *bucket;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(burst);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            Ok(())
        } else {
            *bucket = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / rate))
        }
    }

    /// A concurrency slot (`None` when the key has no concurrency limit), or `Err` when all
    /// are taken.
    pub fn slot(&self) -> Result<Option<OwnedSemaphorePermit>, AllTaken> {
        match &self.slots {
            None => Ok(None),
            Some(s) => s
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| AllTaken),
        }
    }
}

/// Every concurrency slot of a key is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllTaken;

impl Principal {
    /// A caller with `scopes` and `limits`.
    pub fn new(name: String, scopes: Vec<Scope>, limits: Arc<KeyLimits>) -> Self {
        Principal {
            name: name.into(),
            scopes: scopes.into(),
            limits,
        }
    }

    /// Whether the caller may do what `policy` requires (`model` for [`Policy::Infer`]).
    pub fn allows(&self, policy: Policy, model: Option<&str>) -> bool {
        match policy {
            Policy::Public | Policy::Authenticated => true,
            Policy::Infer => self.scopes.iter().any(|s| match s {
                Scope::InferAll => true,
                Scope::Infer(m) => Some(m.as_str()) == model,
                _ => false,
            }),
            Policy::AdminRead => self
                .scopes
                .iter()
                .any(|s| matches!(s, Scope::AdminRead | Scope::AdminWrite)),
            Policy::AdminWrite => self.scopes.contains(&Scope::AdminWrite),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, malformed ones, or an unknown key: 401.
    Unauthenticated,
    /// A valid key without the scope: 403.
    Forbidden,
}
