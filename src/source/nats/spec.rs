//! The NATS source as configured: core subjects or a JetStream durable consumer, its spec and
//! its validation. Pure configuration (no I/O): part of the spec layer, which `crate::spec`
//! re-exports.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::check::Problems;
use crate::spec::subject::check_subject;
use crate::spec::validate_nats;
use crate::spec::{BatchSpec, NatsAuth, NatsConnectionSpec, NatsTls};

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
        with = "crate::spec::duration",
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
        with = "crate::spec::duration",
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

impl NatsSourceSpec {
    /// Checks servers, subjects or the JetStream consumer, the queue group, the delivery
    /// guarantee against what the source can keep, batching, credentials and TLS.
    pub fn validate(&self, path: &str, into: &mut Problems) {
        self.batch.validate(&format!("{path}.batch"), into);
        let spec = self;
        let mut problems = Vec::new();
        validate_nats::servers(&mut problems, &format!("{path}.servers"), &spec.servers);
        match &spec.jetstream {
            None if spec.subjects.is_empty() => problems.push((
                format!("{path}.subjects"),
                "is empty: expected at least one subject to subscribe to".into(),
            )),
            _ => {}
        }
        for (i, subject) in spec.subjects.iter().enumerate() {
            if let Err(e) = check_subject(subject, true) {
                problems.push((format!("{path}.subjects[{i}]"), e.to_string()));
            }
        }
        if let Some(group) = &spec.queue_group {
            if spec.jetstream.is_some() {
                problems.push((
                    format!("{path}.queue_group"),
                    "applies to core NATS only: JetStream instances share a stream through the \
                 same `jetstream.durable` consumer"
                        .into(),
                ));
            } else if group.is_empty() || group.contains(|c: char| c.is_whitespace()) {
                problems.push((
                    format!("{path}.queue_group"),
                    format!("invalid queue group {group:?}: expected a name without white space"),
                ));
            }
        }
        match (spec.delivery(), &spec.jetstream) {
        (NatsDelivery::AtLeastOnce, None) => problems.push((
            format!("{path}.delivery"),
            "core NATS cannot deliver at least once: messages in flight when Streamgate stops, \
             or published while it is down or overloaded, are lost. Consume a JetStream stream \
             (`jetstream: {stream, durable}`) for at-least-once, or set \
             `delivery: at_most_once` to accept the loss"
                .into(),
        )),
        (NatsDelivery::AtMostOnce, Some(_)) => problems.push((
            format!("{path}.delivery"),
            "a JetStream consumer is always at least once here (messages are acked after \
             delivery): remove `delivery` or set it to `at_least_once`"
                .into(),
        )),
        _ => {}
    }
        if let Some(js) = &spec.jetstream {
            let js_path = format!("{path}.jetstream");
            for (field, value) in [("stream", &js.stream), ("durable", &js.durable)] {
                if value.is_empty()
                    || value
                        .chars()
                        .any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace())
                {
                    problems.push((
                        format!("{js_path}.{field}"),
                        format!(
                            "invalid name {value:?}: expected letters, digits, `-` or `_` (no `.`, \
                         `*`, `>`, `/` or white space)"
                        ),
                    ));
                }
            }
            if !(Duration::from_secs(1)..=Duration::from_secs(12 * 3600)).contains(&js.ack_wait) {
                problems.push((
                    format!("{js_path}.ack_wait"),
                    format!(
                        "is {}: expected between 1s and 12h",
                        humantime::format_duration(js.ack_wait)
                    ),
                ));
            }
            if js.nak_delay > Duration::from_secs(3600) {
                problems.push((
                    format!("{js_path}.nak_delay"),
                    format!(
                        "is {}: expected at most 1h",
                        humantime::format_duration(js.nak_delay)
                    ),
                ));
            }
            if js.max_deliver == Some(0) {
                problems.push((
                    format!("{js_path}.max_deliver"),
                    "is 0: expected at least 1, or remove it for no limit".into(),
                ));
            }
            if js.max_ack_pending == 0 {
                problems.push((
                    format!("{js_path}.max_ack_pending"),
                    "is 0: expected at least 1".into(),
                ));
            }
        }
        validate_nats::auth_and_tls(&mut problems, path, spec.auth.as_ref(), spec.tls.as_ref());
        into.extend(problems);
    }
}
