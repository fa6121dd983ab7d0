//! Kafka connection settings shared by the Kafka source and sink: security (TLS, SASL), topic
//! names and librdkafka properties, with their validation. The source's and sink's own specs
//! live with them (`source/kafka/spec.rs`, `sink/kafka/spec.rs`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::check::Problems;
use super::secret::Secret;

/// Kafka connection security.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: SecurityProtocol,
    /// TLS settings (for `ssl` and `sasl_ssl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// SASL credentials (for `sasl_plaintext` and `sasl_ssl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslSpec>,
}

/// Kafka `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    Plaintext,
    /// TLS, optionally with a client certificate.
    Ssl,
    /// SASL authentication without TLS (credentials in clear: avoid outside a lab).
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

/// TLS files.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// PEM file of CA certificates to trust (default: the system store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM client certificate, for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM private key of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Passphrase of `key_file`, if it is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_password: Option<Secret>,
    /// Check that the broker certificate matches its host name (default true).
    #[serde(default = "default_true")]
    pub verify_hostname: bool,
}

fn default_true() -> bool {
    true
}

/// SASL credentials.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaslSpec {
    /// `plain`, `scram_sha_256` or `scram_sha_512`.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password; write `${ENV_VAR}`.
    pub password: Secret,
}

/// SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaslMechanism {
    /// SASL/PLAIN.
    Plain,
    /// SCRAM-SHA-256.
    #[serde(rename = "scram_sha_256")]
    ScramSha256,
    /// SCRAM-SHA-512.
    #[serde(rename = "scram_sha_512")]
    ScramSha512,
}

impl KafkaSecurity {
    /// Checks that SASL and TLS settings match the protocol and are complete.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        let (protocol, uses_sasl, uses_tls) = match self.protocol {
            SecurityProtocol::Plaintext => ("plaintext", false, false),
            SecurityProtocol::Ssl => ("ssl", false, true),
            SecurityProtocol::SaslPlaintext => ("sasl_plaintext", true, false),
            SecurityProtocol::SaslSsl => ("sasl_ssl", true, true),
        };
        match (&self.sasl, uses_sasl) {
            (None, true) => problems.error(
                format!("{path}.sasl"),
                format!("is required with protocol `{protocol}`: add `mechanism`, `username` and `password`"),
            ),
            (Some(_), false) => problems.error(
                format!("{path}.sasl"),
                format!(
                    "is not used with protocol `{protocol}`: use protocol `sasl_ssl` (or \
                     `sasl_plaintext`), or remove `sasl`"
                ),
            ),
            (Some(sasl), true) => {
                problems.not_empty(&format!("{path}.sasl.username"), &sasl.username, "a user name");
                if sasl.password.expose().is_empty() {
                    problems.error(
                        format!("{path}.sasl.password"),
                        "is empty: expected a password, written as `${ENV_VAR}`",
                    );
                }
            }
            (None, false) => {}
        }
        if let Some(tls) = &self.tls {
            if !uses_tls {
                problems.error(
                    format!("{path}.tls"),
                    format!(
                        "is not used with protocol `{protocol}`: use protocol `ssl` or \
                         `sasl_ssl`, or remove `tls`"
                    ),
                );
            }
            tls.validate(&format!("{path}.tls"), problems);
        }
    }
}

impl TlsSpec {
    fn validate(&self, path: &str, problems: &mut Problems) {
        for (field, value) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(value) = value {
                problems.not_empty(&format!("{path}.{field}"), value, "a PEM file path");
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => problems.error(
                format!("{path}.key_file"),
                "is required when `cert_file` is set: give the client certificate's key",
            ),
            (None, Some(_)) => problems.error(
                format!("{path}.cert_file"),
                "is required when `key_file` is set: give the client certificate",
            ),
            _ => {}
        }
        if self.key_password.is_some() && self.key_file.is_none() {
            problems.error(
                format!("{path}.key_password"),
                "is set without `key_file`: give the encrypted key file, or remove \
                 `key_password`",
            );
        }
    }
}

/// Whether `topic` is a legal Kafka topic name: 1 to 249 characters from ASCII letters,
/// digits, `.`, `_` and `-`, and not `.` or `..`.
pub fn is_legal_topic(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Records a problem if `topic` is not a legal topic name.
pub fn check_topic(problems: &mut Problems, path: &str, topic: &str) {
    if !is_legal_topic(topic) {
        problems.error(
            path,
            format!(
                "invalid topic name {topic:?}: expected 1 to 249 characters from letters, \
                 digits, `.`, `_` and `-`"
            ),
        );
    }
}

/// Records a problem for every property streamgate sets itself (`reserved`: name and what to
/// write instead) and every empty name.
pub fn check_properties(
    problems: &mut Problems,
    path: &str,
    properties: &BTreeMap<String, String>,
    reserved: &[(&str, &str)],
) {
    for key in properties.keys() {
        let normalized = key.trim().to_ascii_lowercase();
        if let Some((_, instead)) = reserved.iter().find(|(name, _)| *name == normalized) {
            problems.error(
                format!("{path}[{key:?}]"),
                format!("cannot be set: {instead}"),
            );
        } else if normalized.is_empty() {
            problems.error(
                format!("{path}[{key:?}]"),
                "empty property name: expected a librdkafka property like `linger.ms`",
            );
        }
    }
}
