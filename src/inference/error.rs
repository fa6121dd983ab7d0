//! Typed, classified model-call errors: what happened, whether a retry can help, and what it
//! means for the rows (dead letter, or wait for the model to come back).

use std::time::Duration;

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
    /// 4xx other than 429: the model rejected the request (bad rows).
    Rejected,
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
    /// Stable lowercase name for metrics labels and dead-letter headers.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Deadline => "deadline",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Contract => "contract",
            ErrorKind::NoReplica => "no_replica",
            ErrorKind::BadInput => "bad_input",
            ErrorKind::Runtime => "runtime",
        }
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
        )
    }

    /// Whether the rows are at fault, so splitting the batch can isolate them.
    pub fn blames_rows(self) -> bool {
        matches!(self, ErrorKind::Rejected | ErrorKind::BadInput)
    }
}

/// A failed model call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}", kind = kind.as_str())]
pub struct InferError {
    /// Classification.
    pub kind: ErrorKind,
    /// What happened, for logs and dead-letter headers. Never holds a secret: request
    /// headers and bodies are not included, response bodies are truncated.
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

    /// Whether the model is down rather than this call having failed: the pipeline should
    /// back off and retry the rows later instead of dead-lettering them.
    pub fn is_outage(&self) -> bool {
        // A model that answers other calls while this one exhausts its retries is up: these
        // rows are dead-lettered. One that answers nothing is down: hold the rows.
        matches!(self.kind, ErrorKind::NoReplica | ErrorKind::Connect)
            || (self.model_down && (self.kind.is_retryable() || self.kind == ErrorKind::Deadline))
    }

    /// Classifies an HTTP status that is not a success.
    pub fn from_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Self {
        let kind = match status {
            429 => ErrorKind::Throttled,
            502..=504 => ErrorKind::Unavailable,
            500..=599 => ErrorKind::ServerError,
            _ => ErrorKind::Rejected,
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
        assert_eq!(kind(429), ErrorKind::Throttled);
        assert_eq!(kind(500), ErrorKind::ServerError);
        assert_eq!(kind(503), ErrorKind::Unavailable);
        assert!(kind(503).is_retryable() && kind(429).is_retryable());
        assert!(kind(500).is_retryable() && !kind(400).is_retryable());
        assert!(kind(500).counts_for_ejection() && !kind(429).counts_for_ejection());
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
