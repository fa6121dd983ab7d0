//! The gateway file (`streamgate serve --config gateway.yaml`): listener, models, API keys.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::models::ModelSpec;

/// The inference gateway.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    /// Address to listen on (default `127.0.0.1:8080`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Path, relative to this file, of a model registry file (`models: {...}`), shared with
    /// pipelines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_registry: Option<String>,
    /// Models declared in this file (merged with `model_registry`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelSpec>,
    /// Who may call what.
    #[serde(default)]
    pub auth: GatewayAuthSpec,
    /// Append-only audit log of admin changes (JSON lines: who, what, before, after, when),
    /// relative to this file. Without it changes are audited in memory only
    /// (`GET /admin/audit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<String>,
    /// TLS on the listener (default: plain HTTP, for loopback or behind a TLS proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTlsSpec>,
    /// Longest a client may take to send a request's headers (the connection is closed) and,
    /// separately, its body (408), against slow clients holding connections (default
    /// `"10s"`).
    #[serde(
        default = "default_client_timeout",
        with = "super::duration",
        skip_serializing_if = "is_default_client_timeout"
    )]
    #[schemars(with = "String")]
    pub client_timeout: std::time::Duration,
    /// Largest request body accepted (default 4 MiB); larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Where the admin API may point a version's replicas
    /// (`PUT /admin/models/{m}/versions/{v}/replicas`): networks (`10.0.0.0/8`), addresses,
    /// host names and `*.suffix` patterns. Every address a new replica resolves to must be
    /// allowed; link-local and cloud metadata addresses only by an entry inside those ranges.
    /// Empty (the default): replicas change only through this file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_allow_list: Vec<String>,
    /// Inference requests in flight across all keys (default 1024). Past it requests are shed
    /// at once with 503 and `Retry-After`, so admin, health and metrics routes (not counted)
    /// stay responsive under overload.
    #[serde(default = "default_max_concurrent_infer")]
    pub max_concurrent_infer: usize,
    /// Threads serving the gateway's connections (default: one per CPU core). Each thread
    /// accepts its own share of the connections (`SO_REUSEPORT`) and forwards their requests
    /// over its own connection pool, so a request never changes threads on its way from the
    /// client to the model and back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<std::num::NonZeroUsize>,
}

fn default_client_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

fn is_default_client_timeout(d: &std::time::Duration) -> bool {
    *d == default_client_timeout()
}

fn default_max_concurrent_infer() -> usize {
    1024
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}

fn default_max_body_bytes() -> usize {
    4 << 20
}

/// API keys and JWT bearer tokens. Only `GET /v2/health/live` is public; every other route
/// needs a credential whose scopes allow it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayAuthSpec {
    /// Accepted keys, stored hashed.
    #[serde(default)]
    pub api_keys: Vec<ApiKeySpec>,
    /// Accept JWT bearer tokens (`Authorization: Bearer <header.payload.signature>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
}

/// JWT validation: signature by an allowed algorithm and key, `iss`, `aud`, `exp` and `nbf`.
/// `alg: none` and algorithms not listed are refused.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    /// Accepted algorithms: `HS256`, `RS256`, `ES256`.
    pub algorithms: Vec<JwtAlgorithm>,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of the token's audiences).
    pub audience: String,
    /// Shared secret for `HS256`; write `${ENV_VAR}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<super::Secret>,
    /// PEM public key (RSA for `RS256`, P-256 for `ES256`), relative to the gateway file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<String>,
    /// JWKS file (`{"keys": [...]}`), relative to the gateway file; the token's `kid`
    /// selects the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// Claim holding the scopes: a space-separated string or a list (default `scope`).
    #[serde(default = "default_scopes_claim")]
    pub scopes_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 30).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

fn default_scopes_claim() -> String {
    "scope".to_string()
}

fn default_leeway() -> u64 {
    30
}

/// JWT signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 (shared secret).
    #[serde(rename = "HS256")]
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256.
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
}

/// One API key. Clients send it as `Authorization: Bearer <key>` or `x-api-key: <key>`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    /// Who holds the key (shown in logs and metrics, never the key).
    pub name: String,
    /// Lowercase hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`); the key itself is
    /// never stored.
    pub sha256: String,
    /// What the key may do: `infer:<model>`, `infer:*`, `admin:read`, `admin:write`.
    pub scopes: Vec<String>,
    /// Inference requests per second this key may make (default: no limit); past it 429 with
    /// `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<f64>,
    /// Requests the key may make at once above its rate (default: one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Inference requests this key may have in flight (default: no limit); past it 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
}

/// The gateway's TLS certificate, and optionally client-certificate authentication.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayTlsSpec {
    /// PEM certificate chain, relative to the gateway file.
    pub cert_file: String,
    /// PEM private key of the certificate.
    pub key_file: String,
    /// PEM CA certificates: when set, clients must present a certificate signed by one of
    /// them (mutual TLS), in addition to their API key or token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
}
