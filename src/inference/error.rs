//! Typed, classified model-call errors: what happened, whether a retry can help, and what it
//! means for the rows (dead letter, or wait for the model to come back).

use std::time::Duration;

use crate::batch::ErrorClass;

/// What went wrong in a model call. Bounded: used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Could not connect or the connection broke before an answer.
    Connect,
    /// An attempt took longer than the model's `timeout`.
    Timeout,
    /// The call as a whole ran past the model's `deadline`.
    Deadline,
    /// 429: the model sheds load (retried after `Retry-After`).
    Throttled,
    /// 502, 503 or 504: the model or a proxy in front of it is unavailable right now.
    Unavailable,
    /// Another 5xx: the model failed on this request.
    ServerError,
    /// 400, 413 or 422: the model rejected the request's content (bad rows).
    Rejected,
    /// The request cannot work as configured: 401, 403, 404, 405, 407, a redirect, or a
    /// request that cannot be built (bad header). Not the rows' fault; held until fixed.
    Misconfigured,
    /// The deadline passed waiting for a free replica slot: this process is sending more
    /// than the replicas' in-flight limits allow.
    Saturated,
    /// The answer does not fit the contract (row count, output names, types, malformed body).
    Contract,
    /// Every replica is ejected or the version has none: the model is down.
    NoReplica,
    /// A row cannot be sent (null or non-finite input, prompt that cannot be rendered).
    BadInput,
    /// The in-process runtime failed.
    Runtime,
}

impl ErrorKind {
    /// Stable lowercase name for metrics labels and dead-letter headers: the name of its
    /// [`ErrorClass`].
    pub fn as_str(self) -> &'static str {
        ErrorClass::from(self).as_str()
    }

    /// Whether another attempt (possibly on another replica) may succeed. A plain 500 is
    /// retried too (on another replica when there is one): inference is idempotent, and a
    /// broken replica should not turn into dead-lettered rows before it is ejected.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Connect
                | ErrorKind::Timeout
                | ErrorKind::Throttled
                | ErrorKind::Unavailable
                | ErrorKind::ServerError
                | ErrorKind::Misconfigured
        )
    }

    /// Whether the failure counts against the replica for outlier ejection (the replica is
    /// unhealthy), as opposed to the request being at fault or the replica shedding load.
    pub fn counts_for_ejection(self) -> bool {
        matches!(
            self,
            ErrorKind::Connect
                | ErrorKind::Timeout
                | ErrorKind::Unavailable
                | ErrorKind::ServerError
                | ErrorKind::Misconfigured
        )
    }

    /// Whether the rows are at fault, so splitting the batch can isolate them.
    pub fn blames_rows(self) -> bool {
        matches!(self, ErrorKind::Rejected | ErrorKind::BadInput)
    }
}

impl From<ErrorKind> for ErrorClass {
    /// The failure class of rows a model call of this kind failed for.
    fn from(kind: ErrorKind) -> ErrorClass {
        match kind {
            ErrorKind::Connect => ErrorClass::ModelConnect,
            ErrorKind::Timeout => ErrorClass::ModelTimeout,
            ErrorKind::Deadline => ErrorClass::ModelDeadline,
            ErrorKind::Throttled => ErrorClass::ModelThrottled,
            ErrorKind::Unavailable => ErrorClass::ModelUnavailable,
            ErrorKind::ServerError => ErrorClass::ModelServerError,
            ErrorKind::Rejected => ErrorClass::ModelRejected,
            ErrorKind::Misconfigured => ErrorClass::ModelMisconfigured,
            ErrorKind::Saturated => ErrorClass::ModelSaturated,
            ErrorKind::Contract => ErrorClass::ModelContract,
            ErrorKind::NoReplica => ErrorClass::ModelNoReplica,
            ErrorKind::BadInput => ErrorClass::ModelBadInput,
            ErrorKind::Runtime => ErrorClass::ModelRuntime,
        }
    }
}

/// Message of the `Deadline` error of an attempt that was never sent for lack of time.
const NO_TIME_LEFT: &str = "no time left for another attempt";

/// A failed model call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}", kind = kind.as_str())]
pub struct InferError {
    /// Classification.
    pub kind: ErrorKind,
    /// What happened, for logs and dead-letter headers. Never holds a secret: request
    /// headers and bodies are not included, response bodies are truncated, and a backend's
    /// echo of a secret it was sent is replaced by `[REDACTED]` before the error leaves its
    /// client ([`crate::inference::protocol::scrubbed::ScrubbedBackend`]).
    pub message: String,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
    /// Attempts made before giving up.
    pub attempts: u32,
    /// The version answered no call at all while this one was retrying: it looks down, not
    /// just failing this call.
    pub model_down: bool,
}

impl InferError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        InferError {
            kind,
            message: message.into(),
            retry_after: None,
            attempts: 1,
            model_down: false,
        }
    }

    /// A contract violation.
    pub fn contract(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Contract, message)
    }

    /// The `Deadline` error of an attempt that was never sent for lack of time.
    pub fn no_time_left() -> Self {
        Self::new(ErrorKind::Deadline, NO_TIME_LEFT)
    }

    /// Whether this is [`InferError::no_time_left`]: a retry that finds no time left reports
    /// the failure it was retrying instead.
    pub fn is_no_time_left(&self) -> bool {
        self.kind == ErrorKind::Deadline && self.message == NO_TIME_LEFT
    }

    /// Whether the rows are not at fault and should be held (back-pressure) and sent again
    /// later rather than dead-lettered: the model is down or unreachable, sheds load (429),
    /// this process saturates it, or the endpoint is misconfigured.
    pub fn is_outage(&self) -> bool {
        // A model that answers other calls while this one exhausts its retries on 503s or
        // timeouts is up: these rows are dead-lettered. One that answers nothing is down.
        matches!(
            self.kind,
            ErrorKind::NoReplica
                | ErrorKind::Connect
                | ErrorKind::Throttled
                | ErrorKind::Saturated
                | ErrorKind::Misconfigured
        ) || self.model_down
    }

    /// Whether splitting the request may isolate rows that cause this failure: a rejection,
    /// rows that cannot be encoded, or a server error, timeout or broken answer from a model
    /// that is answering other calls (one poison row must not fail its neighbours).
    pub fn may_isolate_rows(&self) -> bool {
        self.kind.blames_rows()
            || (!self.model_down
                && matches!(
                    self.kind,
                    ErrorKind::ServerError | ErrorKind::Contract | ErrorKind::Timeout
                ))
    }

    /// Classifies an HTTP status that is not a success.
    pub fn from_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Self {
        let kind = match status {
            429 => ErrorKind::Throttled,
            408 => ErrorKind::Timeout,
            400 | 413 | 422 => ErrorKind::Rejected,
            502..=504 => ErrorKind::Unavailable,
            500..=599 => ErrorKind::ServerError,
            _ => ErrorKind::Misconfigured,
        };
        let snippet = crate::codec::truncate_message(String::from_utf8_lossy(body).trim(), 300);
        InferError {
            kind,
            message: format!("HTTP {status}: {snippet}"),
            retry_after,
            attempts: 1,
            model_down: false,
        }
    }
}

/// Parses a `Retry-After` header given in seconds (the HTTP-date form is not used by model
/// servers; it is ignored and the backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(300.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let kind = |s| InferError::from_status(s, None, b"x").kind;
        assert_eq!(kind(400), ErrorKind::Rejected);
        assert_eq!(kind(422), ErrorKind::Rejected);
        // Regression: an expired key, an unloaded model or a redirect is not the rows' fault;
        // bisecting and dead-lettering every row would flood the dead-letter topic.
        for status in [301, 401, 403, 404, 405, 407] {
            let e = InferError::from_status(status, None, b"x");
            assert_eq!(e.kind, ErrorKind::Misconfigured, "{status}");
            assert!(e.is_outage() && !e.may_isolate_rows(), "{status}");
        }
        assert_eq!(kind(408), ErrorKind::Timeout);
        assert_eq!(kind(429), ErrorKind::Throttled);
        assert_eq!(kind(500), ErrorKind::ServerError);
        assert_eq!(kind(503), ErrorKind::Unavailable);
        assert!(kind(503).is_retryable() && kind(429).is_retryable());
        assert!(kind(500).is_retryable() && !kind(400).is_retryable());
        assert!(kind(500).counts_for_ejection() && !kind(429).counts_for_ejection());
    }

    #[test]
    fn kinds_keep_their_names_as_classes() {
        let kinds = [
            (ErrorKind::Connect, "connect"),
            (ErrorKind::Timeout, "timeout"),
            (ErrorKind::Deadline, "deadline"),
            (ErrorKind::Throttled, "throttled"),
            (ErrorKind::Unavailable, "unavailable"),
            (ErrorKind::ServerError, "server_error"),
            (ErrorKind::Rejected, "rejected"),
            (ErrorKind::Misconfigured, "misconfigured"),
            (ErrorKind::Saturated, "saturated"),
            (ErrorKind::Contract, "contract"),
            (ErrorKind::NoReplica, "no_replica"),
            (ErrorKind::BadInput, "bad_input"),
            (ErrorKind::Runtime, "runtime"),
        ];
        for (kind, name) in kinds {
            assert_eq!(kind.as_str(), name);
            assert_eq!(ErrorClass::from(kind).as_str(), name);
        }
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("1e9"), Some(Duration::from_secs(300)));
    }
}
