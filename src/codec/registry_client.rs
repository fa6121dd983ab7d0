//! Registering writer schemas with a Confluent-compatible Schema Registry
//! (`POST /subjects/{subject}/versions`), and the subject naming strategies.

use std::time::Duration;

use crate::spec::{SchemaRegistrySpec, SubjectStrategy};

/// Largest registry answer read.
const MAX_ANSWER: usize = 1 << 20;

/// Why a schema could not be registered. Never holds the password: request errors are kept
/// without their URL, and the registry's answer is redacted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryError {
    /// The request could not be sent.
    #[error("cannot reach the schema registry: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The answer could not be read.
    #[error("reading the registry answer: {0}")]
    Read(#[source] reqwest::Error),
    /// The answer is larger than [`MAX_ANSWER`].
    #[error("registry answer larger than 1 MiB")]
    TooLarge,
    /// The registry answered with an error.
    #[error("the registry refused the schema for subject {subject:?} ({status}): {answer}")]
    Refused {
        /// The subject.
        subject: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The registry's answer, without the configured credentials, bounded.
        answer: String,
    },
    /// The answer is not the expected JSON.
    #[error("malformed registry answer: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// The subject a schema is registered under: `topic_name` → `<topic>-value`, `record_name` →
/// `<namespace>.<name>`, `topic_record_name` → `<topic>-<namespace>.<name>`.
pub(crate) fn subject(strategy: SubjectStrategy, topic: &str, full_name: &str) -> String {
    match strategy {
        SubjectStrategy::TopicName => format!("{topic}-value"),
        SubjectStrategy::RecordName => full_name.to_string(),
        SubjectStrategy::TopicRecordName => format!("{topic}-{full_name}"),
    }
}

/// Registers `schema` (Avro JSON) under `subject` and returns its id (the registry returns the
/// existing id when the schema is already registered). Errors never contain the password.
pub(crate) async fn register(
    registry: &SchemaRegistrySpec,
    subject: &str,
    schema: &serde_json::Value,
) -> Result<u32, RegistryError> {
    let client = crate::http_client::client();
    let url = format!(
        "{}/subjects/{}/versions",
        registry.url.trim_end_matches('/'),
        percent_encode(subject)
    );
    let body = serde_json::json!({ "schema": schema.to_string() });
    let mut request = client
        .post(url)
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(body.to_string())
        .timeout(Duration::from_secs(10));
    if let (Some(user), Some(password)) = (&registry.username, &registry.password) {
        request = request.basic_auth(user, Some(password.expose()));
    }
    let response = request
        .send()
        .await
        .map_err(|e| RegistryError::Unreachable(e.without_url()))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| RegistryError::Read(e.without_url()))?;
    if bytes.len() > MAX_ANSWER {
        return Err(RegistryError::TooLarge);
    }
    if !status.is_success() {
        let text = without_credentials(&String::from_utf8_lossy(&bytes), registry);
        return Err(RegistryError::Refused {
            subject: subject.to_string(),
            status,
            answer: crate::codec::truncate_message(&text, 300),
        });
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        id: u32,
    }
    serde_json::from_slice::<Answer>(&bytes)
        .map(|a| a.id)
        .map_err(RegistryError::Malformed)
}

/// `text` (a registry's error answer, which ends up in logs and `validate` output) with the
/// configured password removed, plain and in the Basic credential it was sent as: a registry
/// or a proxy in front of it may echo either. Values under 4 bytes are left alone (they would
/// redact unrelated text and are guessable anyway).
fn without_credentials(text: &str, registry: &SchemaRegistrySpec) -> String {
    use base64::Engine;
    let (Some(user), Some(password)) = (&registry.username, &registry.password) else {
        return text.to_string();
    };
    let password = password.expose();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut out = text.to_string();
    for secret in [basic.as_str(), password] {
        if secret.len() >= 4 {
            out = out.replace(secret, "[REDACTED]");
        }
    }
    out
}

/// Escapes a subject for a URL path segment.
fn percent_encode(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for b in subject.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_strategies() {
        let full = "io.streamgate.Alert";
        assert_eq!(
            subject(SubjectStrategy::TopicName, "alerts", full),
            "alerts-value"
        );
        assert_eq!(subject(SubjectStrategy::RecordName, "alerts", full), full);
        assert_eq!(
            subject(SubjectStrategy::TopicRecordName, "alerts", full),
            "alerts-io.streamgate.Alert"
        );
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn a_registry_echoing_the_credential_does_not_leak_it() {
        let registry: SchemaRegistrySpec = serde_json::from_value(serde_json::json!({
            "url": "http://registry:8081",
            "username": "svc",
            "password": "hunter2-secret",
        }))
        .unwrap();
        // "svc:hunter2-secret" in Basic form.
        let echoed =
            "401: bad password hunter2-secret (Authorization: Basic c3ZjOmh1bnRlcjItc2VjcmV0)";
        let text = without_credentials(echoed, &registry);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("c3ZjOmh1bnRlcjItc2VjcmV0"), "{text}");
        assert_eq!(text.matches("[REDACTED]").count(), 2, "{text}");
    }
}
