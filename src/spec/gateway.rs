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
    /// Largest request body accepted (default 4 MiB); larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Inference requests in flight across all keys (default 1024). Past it requests are shed
    /// at once with 503 and `Retry-After`, so admin, health and metrics routes (not counted)
    /// stay responsive under overload.
    #[serde(default = "default_max_concurrent_infer")]
    pub max_concurrent_infer: usize,
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

/// API keys. Only `GET /v2/health/live` is public; every other route needs a key whose
/// scopes allow it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayAuthSpec {
    /// Accepted keys, stored hashed.
    #[serde(default)]
    pub api_keys: Vec<ApiKeySpec>,
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
