//! Forwarding one gateway request to a replica of a model version: the version's balancer
//! picks the replica, its in-flight limit applies, and connection errors, timeouts and
//! 429/502/503/504 answers are retried on another replica with jittered backoff within the
//! model's attempt count and deadline. Redirects are never followed (the shared client has
//! them off). The answer's body is streamed back as it arrives (server-sent events pass
//! through). An error answer's body is relayed with every secret the version sends scrubbed
//! from it (a backend may echo its API key in it); success bodies stream through untouched
//! (see [`crate::inference::scrub`] for why).

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::inference::balance::Outcome;
use crate::inference::model::{CallPolicy, VersionClient};
use crate::inference::retry::backoff;
use crate::inference::scrub::SecretScrubber;
use crate::spec::Secret;

/// Largest error body relayed (1 MiB). Error bodies are diagnostics of a few KB; one this big
/// is cut (its cut end scrubbed of any partial secret) rather than held in memory whole.
const MAX_ERROR_BODY: usize = 1 << 20;

/// Why forwarding failed (after retries).
#[derive(Debug)]
pub(crate) struct ProxyError {
    /// HTTP status to answer with (502, 503 or 504).
    pub status: u16,
    /// What happened, without URLs or secrets.
    pub message: String,
}

/// One request to forward.
pub(crate) struct Forward<'a> {
    /// Path appended to the replica's base URL.
    pub path: &'a str,
    /// `GET` when there is no body.
    pub body: Option<Bytes>,
    /// Extra headers (backend credentials).
    pub headers: &'a [(String, Secret)],
}

/// Sends `request` to a replica of `version`, retrying retryable failures.
pub(crate) async fn forward(
    version: &VersionClient,
    policy: &CallPolicy,
    request: Forward<'_>,
) -> Result<reqwest::Response, ProxyError> {
    let deadline = Instant::now() + policy.deadline;
    let client = version.backend.http_client();
    let scrubber = version.backend.secret_scrubber();
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
                    return Ok(scrub_answer(response, scrubber, policy.timeout).await);
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
                    return Ok(scrub_answer(response, scrubber, policy.timeout).await);
                }
                (error, retry_after)
            }
            Ok(Err(e)) => {
                let latency = slot.finish(Outcome::Failure, &policy.ejection);
                version.record_forward(&replica.address, "connect", latency);
                (
                    ProxyError {
                        status: 502,
                        message: scrub(scrubber, format!("model unreachable: {}", e.without_url())),
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

/// `message` scrubbed of the version's secrets.
fn scrub(scrubber: Option<&SecretScrubber>, message: String) -> String {
    match scrubber {
        Some(s) => s.scrub_str(&message).into_owned(),
        None => message,
    }
}

/// The answer to relay: a success as it is (streamed), an error with its body read (up to
/// [`MAX_ERROR_BODY`], for at most `read_timeout`) and scrubbed of the version's secrets.
async fn scrub_answer(
    response: reqwest::Response,
    scrubber: Option<&SecretScrubber>,
    read_timeout: Duration,
) -> reqwest::Response {
    let Some(scrubber) = scrubber.filter(|_| !response.status().is_success()) else {
        return response;
    };
    let status = response.status();
    let mut headers = response.headers().clone();
    let mut response = response;
    let mut body = Vec::new();
    let mut cut = false;
    let read = async {
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_ERROR_BODY - body.len();
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        cut = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => {
                    cut = true;
                    break;
                }
            }
        }
    };
    if tokio::time::timeout(read_timeout, read).await.is_err() {
        cut = true;
    }
    // A binary OIP answer is a JSON header of the given length, then raw tensors: each part
    // is scrubbed on its own and the header's new length is announced.
    let json_length = headers
        .get(super::oip_codec::HEADER_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n <= body.len());
    let scrub_part = |part: &[u8], at_end: bool| {
        if cut && at_end {
            scrubber.scrub_cut_bytes(part)
        } else {
            scrubber.scrub_bytes(part).into_owned()
        }
    };
    let scrubbed = match json_length {
        Some(n) => {
            let mut json = scrub_part(&body[..n], false);
            let length = json.len();
            json.extend_from_slice(&scrub_part(&body[n..], true));
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&length.to_string()) {
                headers.insert(super::oip_codec::HEADER_LENGTH, value);
            }
            json
        }
        None => scrub_part(&body, true),
    };
    headers.remove(reqwest::header::CONTENT_LENGTH);
    headers.remove(reqwest::header::TRANSFER_ENCODING);
    let mut out = axum::http::Response::new(Bytes::from(scrubbed));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    reqwest::Response::from(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-proxy-test-0123456789";

    fn answer(status: u16, headers: &[(&'static str, String)], body: String) -> reqwest::Response {
        let mut out = axum::http::Response::new(Bytes::from(body));
        *out.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            out.headers_mut().insert(
                *name,
                reqwest::header::HeaderValue::from_str(value).unwrap(),
            );
        }
        reqwest::Response::from(out)
    }

    #[tokio::test]
    async fn error_answers_are_scrubbed_and_successes_pass_untouched() {
        let scrubber = SecretScrubber::new([KEY]);
        let wait = Duration::from_secs(1);
        let echo = format!("{{\"error\":\"bad key {KEY}\"}}");
        let ok = scrub_answer(answer(200, &[], echo.clone()), Some(&scrubber), wait).await;
        assert_eq!(ok.text().await.unwrap(), echo);
        let err = scrub_answer(answer(401, &[], echo.clone()), Some(&scrubber), wait).await;
        assert_eq!(err.status().as_u16(), 401);
        assert_eq!(
            err.text().await.unwrap(),
            "{\"error\":\"bad key [REDACTED]\"}"
        );
        // Without secrets the answer is not even read.
        let plain = scrub_answer(answer(500, &[], echo.clone()), None, wait).await;
        assert_eq!(plain.text().await.unwrap(), echo);
    }

    #[tokio::test]
    async fn a_binary_error_answer_announces_its_new_header_length() {
        let scrubber = SecretScrubber::new([KEY]);
        let json = format!("{{\"error\":\"{KEY}\"}}");
        let body = format!("{json}\u{1}\u{2}{KEY}");
        let length = (
            super::super::oip_codec::HEADER_LENGTH,
            json.len().to_string(),
        );
        let out = scrub_answer(
            answer(400, &[length], body),
            Some(&scrubber),
            Duration::from_secs(1),
        )
        .await;
        let announced: usize = out.headers()[super::super::oip_codec::HEADER_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let text = out.text().await.unwrap();
        assert_eq!(&text[..announced], "{\"error\":\"[REDACTED]\"}");
        assert_eq!(&text[announced..], "\u{1}\u{2}[REDACTED]");
    }
}
