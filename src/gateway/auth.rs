//! Authentication (API keys, stored as SHA-256 hashes) and authorization (scopes per route).
//!
//! Every route declares a [`Policy`]; the router is built from the route table, so a route
//! without a policy cannot exist. Rejections happen before the handler runs.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderMap;

pub use super::principal::{AllTaken, KeyLimits, Policy, Principal, Refusal};
use crate::spec::ApiKeySpec;
pub use crate::spec::api_keys::Scope;
use crate::spec::api_keys::{ApiKeyError, parse_api_key};

/// The accepted keys by hash, and the JWT verifier when tokens are accepted.
#[derive(Default)]
pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], Principal>,
    jwt: Option<super::jwt::JwtVerifier>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.by_hash.len())
            .field("jwt", &self.jwt.is_some())
            .finish()
    }
}

impl ApiKeys {
    /// Builds the key table; errors name the key entry, never a key.
    pub fn new(specs: &[ApiKeySpec]) -> Result<ApiKeys, ApiKeyError> {
        let mut by_hash = HashMap::new();
        for spec in specs {
            let parsed = parse_api_key(spec)?;
            let (hash, scopes) = (parsed.sha256, parsed.scopes);
            let principal = Principal::new(
                spec.name.clone(),
                scopes,
                Arc::new(KeyLimits::new(
                    spec.rate_per_second,
                    spec.burst,
                    spec.max_concurrent,
                )),
            );
            if by_hash.insert(hash, principal).is_some() {
                return Err(ApiKeyError::Duplicate(spec.name.clone()));
            }
        }
        Ok(ApiKeys { by_hash, jwt: None })
    }

    /// Also accepts JWT bearer tokens verified by `jwt`.
    pub fn with_jwt(mut self, jwt: super::jwt::JwtVerifier) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// The caller of a request: `Authorization: Bearer <key>` or `x-api-key: <key>`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Refusal> {
        let key = match (headers.get("authorization"), headers.get("x-api-key")) {
            (Some(value), _) => value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim),
            (None, Some(value)) => value.to_str().ok().map(str::trim),
            (None, None) => None,
        }
        .filter(|k| !k.is_empty())
        .ok_or(Refusal::Unauthenticated)?;
        // Three dot-separated parts: a JWT (API keys are opaque strings without dots).
        if key.split('.').count() == 3 {
            return match &self.jwt {
                Some(jwt) => jwt.verify(key),
                None => Err(Refusal::Unauthenticated),
            };
        }
        let hash = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let hash: [u8; 32] = hash
            .as_ref()
            .try_into()
            .map_err(|_| Refusal::Unauthenticated)?;
        // A hash-map lookup on the key's SHA-256 leaks nothing useful about stored keys.
        self.by_hash
            .get(&hash)
            .cloned()
            .ok_or(Refusal::Unauthenticated)
    }

    /// Checks a request against a policy.
    pub fn check(
        &self,
        headers: &HeaderMap,
        policy: Policy,
        model: Option<&str>,
    ) -> Result<Option<Principal>, Refusal> {
        if policy == Policy::Public {
            return Ok(None);
        }
        let principal = self.authenticate(headers)?;
        if principal.allows(policy, model) {
            Ok(Some(principal))
        } else {
            Err(Refusal::Forbidden)
        }
    }
}

/// Hex SHA-256 of a key, as the config stores it.
pub fn key_hash_hex(key: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn keys() -> ApiKeys {
        ApiKeys::new(&[
            ApiKeySpec {
                name: "fraud".into(),
                sha256: key_hash_hex("k-fraud"),
                scopes: vec!["infer:fraud".into()],
                rate_per_second: None,
                burst: None,
                max_concurrent: None,
            },
            ApiKeySpec {
                name: "ops".into(),
                sha256: key_hash_hex("k-ops"),
                scopes: vec!["admin:write".into(), "infer:*".into()],
                rate_per_second: None,
                burst: None,
                max_concurrent: None,
            },
        ])
        .unwrap()
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {key}").parse().unwrap());
        h
    }

    #[test]
    fn scopes_decide() {
        let keys = keys();
        let fraud = keys.authenticate(&bearer("k-fraud")).unwrap();
        assert!(fraud.allows(Policy::Infer, Some("fraud")));
        assert!(!fraud.allows(Policy::Infer, Some("llm")));
        assert!(!fraud.allows(Policy::AdminRead, None));
        let ops = keys.authenticate(&bearer("k-ops")).unwrap();
        assert!(ops.allows(Policy::Infer, Some("llm")));
        assert!(ops.allows(Policy::AdminRead, None));
        assert_eq!(
            keys.check(&bearer("nope"), Policy::Authenticated, None)
                .unwrap_err(),
            Refusal::Unauthenticated
        );
        assert_eq!(
            keys.check(&bearer("k-fraud"), Policy::AdminRead, None)
                .unwrap_err(),
            Refusal::Forbidden
        );
        let mut malformed = HeaderMap::new();
        malformed.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(
            keys.check(&malformed, Policy::Authenticated, None)
                .unwrap_err(),
            Refusal::Unauthenticated
        );
        assert!(keys.check(&HeaderMap::new(), Policy::Public, None).is_ok());
    }

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let limits = KeyLimits::new(Some(10.0), Some(3), None);
        for _ in 0..3 {
            assert!(limits.take_token().is_ok());
        }
        let wait = limits.take_token().unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        let unlimited = KeyLimits::new(None, None, Some(1));
        assert!(unlimited.take_token().is_ok());
        let held = unlimited.slot().unwrap();
        assert!(held.is_some());
        assert!(unlimited.slot().is_err());
        drop(held);
        assert!(unlimited.slot().is_ok());
    }

    #[test]
    fn bad_config_names_the_entry_not_the_key() {
        let err = ApiKeys::new(&[ApiKeySpec {
            name: "x".into(),
            sha256: "not-hex".into(),
            scopes: vec![],
            rate_per_second: None,
            burst: None,
            max_concurrent: None,
        }])
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"x\""), "{err}");
        assert!(Scope::parse("infer:").is_err());
        assert!(Scope::parse("root").is_err());
    }
}
