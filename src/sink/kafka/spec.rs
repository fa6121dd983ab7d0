//! The Kafka sink as configured: its spec and its validation. Pure configuration (no I/O):
//! part of the spec layer, which `crate::spec` re-exports.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::check::Problems;
use crate::spec::kafka::{KafkaSecurity, check_properties, check_topic};
use crate::spec::validate::{SinkContext, check_sink_format};
use crate::spec::{SinkFormatSpec, SourceSpec, is_json};

/// Kafka sink: each row becomes one JSON message.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSpec {
    /// Bootstrap brokers; defaults to the Kafka source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// Target topic.
    pub topic: String,
    /// Column whose value (as a string) becomes the message key. Without it messages have no
    /// key and are spread over partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Message headers: header name → column whose value (as a string) is the header value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// TLS and SASL settings; default to the Kafka source's when `bootstrap_servers` is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<KafkaSecurity>,
    /// How rows are encoded: `{type: json}` (default) or `{type: avro, ...}`.
    #[serde(default, skip_serializing_if = "is_json")]
    pub format: SinkFormatSpec,
    /// Extra librdkafka producer properties (`linger.ms: "5"`). `enable.idempotence` cannot be
    /// turned off.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// Producer properties streamgate sets itself, with what to write instead.
const RESERVED_PRODUCER_PROPERTIES: &[(&str, &str)] = &[
    (
        "enable.idempotence",
        "the producer is always idempotent so retries cannot duplicate or reorder records",
    ),
    (
        "acks",
        "the idempotent producer always waits for all in-sync replicas",
    ),
    ("bootstrap.servers", "set `bootstrap_servers` instead"),
    ("security.protocol", "set `security.protocol` instead"),
    ("sasl.mechanism", "set `security.sasl.mechanism` instead"),
    ("sasl.mechanisms", "set `security.sasl.mechanism` instead"),
    ("sasl.username", "set `security.sasl.username` instead"),
    ("sasl.password", "set `security.sasl.password` instead"),
];

impl KafkaSinkSpec {
    /// Checks brokers (required unless the source is Kafka), the topic (legal, not a source
    /// topic of the same cluster), format, key, headers, security and properties.
    pub fn validate(&self, path: &str, context: &SinkContext<'_>, problems: &mut Problems) {
        let source_topics: &[String] = match context.source {
            SourceSpec::Kafka(k) => &k.topics,
            _ => &[],
        };
        match &self.bootstrap_servers {
            Some(servers) => problems.not_empty(
                &format!("{path}.bootstrap_servers"),
                servers,
                "a comma-separated `host:port` list of brokers",
            ),
            None if !matches!(context.source, SourceSpec::Kafka(_)) => problems.error(
                format!("{path}.bootstrap_servers"),
                "is required because the source is not Kafka: give a comma-separated \
                 `host:port` list of brokers",
            ),
            None => {}
        }
        check_topic(problems, &format!("{path}.topic"), &self.topic);
        if self.bootstrap_servers.is_none() && source_topics.contains(&self.topic) {
            problems.error(
                format!("{path}.topic"),
                format!(
                    "topic {:?} is also a source topic on the same cluster: rows would be \
                     consumed again in an endless loop; write to another topic",
                    self.topic
                ),
            );
        }
        check_sink_format(problems, &format!("{path}.format"), &self.format, context);
        if let Some(key) = &self.key {
            problems.not_empty(&format!("{path}.key"), key, "a column name");
        }
        for (name, column) in &self.headers {
            let header_path = format!("{path}.headers[{name:?}]");
            if name.trim().is_empty() {
                problems.error(&header_path, "empty header name: expected a header name");
            }
            problems.not_empty(&header_path, column, "a column name");
        }
        if let Some(security) = &self.security {
            security.validate(&format!("{path}.security"), problems);
        }
        check_properties(
            problems,
            &format!("{path}.properties"),
            &self.properties,
            RESERVED_PRODUCER_PROPERTIES,
        );
    }
}
