//! NATS and JetStream parts of the pipeline file: connection, source and sink.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret::Secret;
use super::types::{BatchSpec, SinkFormatSpec};

/// How to reach a NATS server or cluster (resolved from a source or sink spec).
#[derive(Debug, Clone)]
pub struct NatsConnectionSpec {
    /// Comma-separated server URLs.
    pub servers: String,
    /// Credentials.
    pub auth: Option<NatsAuth>,
    /// TLS settings.
    pub tls: Option<NatsTls>,
}

/// NATS credentials. Secrets come from the environment (`${VAR}`) or files, never inline.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NatsAuth {
    /// A server token.
    Token {
        /// The token; write `${ENV_VAR}`.
        token: Secret,
    },
    /// User name and password.
    UserPassword {
        /// User name.
        username: String,
        /// Password; write `${ENV_VAR}`.
        password: Secret,
    },
    /// An NKey seed (`SU...`): the server knows the public key; the seed signs its challenge.
    Nkey {
        /// The seed; write `${ENV_VAR}`.
        seed: Secret,
    },
    /// A `.creds` file (user JWT and NKey seed) as issued by `nsc` for decentralised auth.
    Credentials {
        /// Path of the `.creds` file.
        file: String,
    },
}

/// TLS to a NATS server.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsTls {
    /// PEM file of CA certificates to trust (default: the system store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM client certificate, for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

/// What a NATS source promises about delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NatsDelivery {
    /// Every message is processed at least once: needs `jetstream` (messages are acked only
    /// once delivered end to end and redelivered otherwise).
    AtLeastOnce,
    /// Messages in flight when the process stops, or that arrive while it is overloaded, are
    /// lost: what core NATS offers.
    AtMostOnce,
}

/// Consume NATS: core subjects (at most once), or a JetStream durable pull consumer (at least
/// once) when `jetstream` is set.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceSpec {
    /// Comma-separated server URLs (`nats://host:4222`, or `tls://host:4222` to insist on
    /// TLS).
    pub servers: String,
    /// Credentials; at most one kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<NatsAuth>,
    /// TLS settings. With `tls`, the connection is TLS or nothing: there is no fallback to
    /// plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<NatsTls>,
    /// Subjects to consume (wildcards allowed). For JetStream, the consumer's filter subjects
    /// (default: every subject of the stream).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Core NATS queue group: instances with the same group share the messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_group: Option<String>,
    /// Consume a JetStream stream through a durable pull consumer instead of core subjects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStreamSourceSpec>,
    /// The guarantee asked for: default `at_least_once` with `jetstream`, `at_most_once`
    /// without. Asking for `at_least_once` on core NATS is a validation error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<NatsDelivery>,
    /// Micro-batching of messages.
    #[serde(default)]
    pub batch: BatchSpec,
}

impl NatsSourceSpec {
    /// The connection settings.
    pub fn connection(&self) -> NatsConnectionSpec {
        NatsConnectionSpec {
            servers: self.servers.clone(),
            auth: self.auth.clone(),
            tls: self.tls.clone(),
        }
    }

    /// The effective delivery guarantee.
    pub fn delivery(&self) -> NatsDelivery {
        self.delivery.unwrap_or(if self.jetstream.is_some() {
            NatsDelivery::AtLeastOnce
        } else {
            NatsDelivery::AtMostOnce
        })
    }
}

/// A JetStream durable pull consumer.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JetStreamSourceSpec {
    /// Stream to consume (it must exist).
    pub stream: String,
    /// Durable consumer name: instances with the same name share the stream. Created with the
    /// settings below when missing.
    pub durable: String,
    /// How long the server waits for an ack before redelivering (default `"30s"`). Batches
    /// that take longer send progress acks, so slow models do not cause redeliveries.
    #[serde(
        default = "default_ack_wait",
        with = "super::duration",
        skip_serializing_if = "is_default_ack_wait"
    )]
    #[schemars(with = "String")]
    pub ack_wait: Duration,
    /// Deliveries per message before the server gives up on it (default: no limit). A message
    /// whose last delivery fails transiently is counted in
    /// `streamgate_nats_deliveries_exhausted_total` and logged: it is not redelivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<u32>,
    /// First redelivery delay after a transient failure (default `"1s"`); doubled on every
    /// further delivery, up to one minute.
    #[serde(
        default = "default_nak_delay",
        with = "super::duration",
        skip_serializing_if = "is_default_nak_delay"
    )]
    #[schemars(with = "String")]
    pub nak_delay: Duration,
    /// Unacknowledged messages the server allows this consumer (default 10000): bounds the
    /// work in flight across all instances.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: u32,
}

fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}

fn is_default_ack_wait(d: &Duration) -> bool {
    *d == default_ack_wait()
}

fn default_nak_delay() -> Duration {
    Duration::from_secs(1)
}

fn is_default_nak_delay(d: &Duration) -> bool {
    *d == default_nak_delay()
}

fn default_max_ack_pending() -> u32 {
    10_000
}

/// Publish rows to NATS: one JSON message per row (dead letters keep their bytes).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkSpec {
    /// Connection; defaults to the NATS source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<String>,
    /// Credentials (default: the NATS source's, when `servers` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<NatsAuth>,
    /// TLS (default: the NATS source's, when `servers` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<NatsTls>,
    /// Subject, optionally built from columns: `fraud.alerts.{merchant_country}`. Each
    /// `{column}` must be a whole token; its value is made a single safe token (`.`, `*`, `>`,
    /// white space and control characters become `_`, empty or null becomes `_`), so every
    /// subject stays under the literal prefix before the first `{`.
    pub subject: String,
    /// Publish to a JetStream stream: wait for the stream's ack before a row counts as
    /// delivered, and set `Nats-Msg-Id` from the input message's identity so redeliveries are
    /// dropped by the stream's duplicate window.
    #[serde(default)]
    pub jetstream: bool,
    /// Message headers: header name → column whose value (as a string) is the header value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How rows are encoded: `{type: json}` (default) or `{type: avro, ...}`.
    #[serde(default, skip_serializing_if = "super::types::is_json")]
    pub format: SinkFormatSpec,
}

impl NatsSinkSpec {
    /// The connection this sink uses: its own, or the source's.
    pub fn connection(&self, source: Option<&NatsConnectionSpec>) -> Option<NatsConnectionSpec> {
        match (&self.servers, source) {
            (Some(servers), _) => Some(NatsConnectionSpec {
                servers: servers.clone(),
                auth: self.auth.clone(),
                tls: self.tls.clone(),
            }),
            (None, Some(source)) => Some(NatsConnectionSpec {
                servers: source.servers.clone(),
                auth: self.auth.clone().or_else(|| source.auth.clone()),
                tls: self.tls.clone().or_else(|| source.tls.clone()),
            }),
            (None, None) => None,
        }
    }
}
