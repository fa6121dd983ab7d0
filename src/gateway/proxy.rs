//! Forwarding one gateway request to a replica of a model version: the version's balancer
//! picks the replica, its in-flight limit applies, and connection errors, timeouts and
//! 429/502/503/504 answers are retried on another replica with jittered backoff within the
//! model's attempt count and deadline. Redirects are never followed (the shared client has
//! them off). The answer's body is streamed back as it arrives (server-sent events pass
//! through).

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::inference::balance::Outcome;
use crate::inference::model::{CallPolicy, VersionClient};
use crate::inference::retry::backoff;
use crate::spec::Secret;

/// Why forwarding failed (after retries).
#[derive(Debug)]
pub struct ProxyError {
    /// HTTP status to answer with (502, 503 or 504).
    pub status: u16,
    /// What happened, without URLs or secrets.
    pub message: String,
}

/// One request to forward.
pub struct Forward<'a> {
    /// Path appended to the replica's base URL.
    pub path: &'a str,
    /// `GET` when there is no body.
    pub body: Option<Bytes>,
    /// Extra headers (backend credentials).
    pub headers: &'a [(String, Secret)],
}

/// Sends `request` to a replica of `version`, retrying retryable failures.
pub async fn forward(
    version: &VersionClient,
    policy: &CallPolicy,
    request: Forward<'_>,
) -> Result<reqwest::Response, ProxyError> {
    let deadline = Instant::now() + policy.deadline;
    let client = crate::inference::protocol::transport::client();
    let mut last = None;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let Some(replica) = version.balancer.pick(last.as_ref()) else {
            return Err(ProxyError {
                status: 503,
                message: format!(
                    "model {} version {}: every replica is ejected",
                    version.model, version.version
                ),
            });
        };
        let Some(base) = replica.base_url() else {
            return Err(ProxyError {
                status: 502,
                message: format!(
                    "model {} version {}: a replica's address is not a URL",
                    version.model, version.version
                ),
            });
        };
        let url = crate::inference::protocol::transport::join_url(base, request.path);
        let slot = replica.acquire().await;
        let mut builder = match &request.body {
            Some(body) => client
                .post(url)
                .header("content-type", "application/json")
                .body(body.clone()),
            None => client.get(url),
        };
        for (name, value) in request.headers {
            builder = builder.header(name.as_str(), value.expose());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // The timeout covers the answer's headers only: a streamed body may take longer.
        let result = tokio::time::timeout(policy.timeout.min(left), builder.send()).await;
        let (error, retry_after) = match result {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                if !matches!(status, 429 | 502 | 503 | 504) {
                    let latency = slot.finish(Outcome::Success, &policy.ejection);
                    version.record_forward(&replica.address, outcome_of(status), latency);
                    return Ok(response);
                }
                let outcome = if status == 429 {
                    Outcome::Neutral
                } else {
                    Outcome::Failure
                };
                let latency = slot.finish(outcome, &policy.ejection);
                version.record_forward(&replica.address, outcome_of(status), latency);
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let error = ProxyError {
                    status: if status == 429 { 503 } else { status },
                    message: format!("the model answered {status}"),
                };
                if attempt >= policy.retry.max_attempts {
                    // Pass the model's own answer on (its body explains it).
                    return Ok(response);
                }
                (error, retry_after)
            }
            Ok(Err(e)) => {
                let latency = slot.finish(Outcome::Failure, &policy.ejection);
                version.record_forward(&replica.address, "connect", latency);
                (
                    ProxyError {
                        status: 502,
                        message: format!("model unreachable: {}", e.without_url()),
                    },
                    None,
                )
            }
            Err(_) => {
                let latency = slot.finish(Outcome::Failure, &policy.ejection);
                version.record_forward(&replica.address, "timeout", latency);
                (
                    ProxyError {
                        status: 504,
                        message: "the model did not answer in time".to_string(),
                    },
                    None,
                )
            }
        };
        let wait = retry_after
            .unwrap_or_else(|| backoff(attempt, policy.retry.backoff, policy.retry.max_backoff));
        if attempt >= policy.retry.max_attempts || Instant::now() + wait >= deadline {
            return Err(error);
        }
        last = Some(replica);
        tokio::time::sleep(wait).await;
    }
}

/// The `outcome` label of a model's answer, in the error kinds of pipeline calls.
fn outcome_of(status: u16) -> &'static str {
    match status {
        200..=399 => "ok",
        429 => "throttled",
        502..=504 => "unavailable",
        500..=599 => "server_error",
        _ => "rejected",
    }
}
