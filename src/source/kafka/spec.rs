//! The Kafka source as configured: its spec and its validation. Pure configuration (no I/O):
//! part of the spec layer, which `crate::spec` re-exports.

use std::collections::{BTreeMap, HashMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::BatchSpec;
use crate::spec::check::Problems;
use crate::spec::kafka::{KafkaSecurity, check_properties, check_topic};

/// Consume Kafka topics as a consumer group, at least once.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceSpec {
    /// Comma-separated `host:port` list of bootstrap brokers.
    pub bootstrap_servers: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Consumer group; committed offsets are stored under it.
    pub group_id: String,
    /// Where a group with no committed offset starts: `earliest` (default) or `latest`.
    #[serde(default)]
    pub start_from: StartFrom,
    /// Micro-batching of records per partition.
    #[serde(default)]
    pub batch: BatchSpec,
    /// TLS and SASL settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<KafkaSecurity>,
    /// Extra librdkafka consumer properties (`fetch.min.bytes: "1"`). Properties that would
    /// break the delivery guarantee (`enable.auto.offset.store`, `enable.auto.commit`) are
    /// rejected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// Initial position of a consumer group without committed offsets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest retained record.
    #[default]
    Earliest,
    /// Only records produced after the group first joins.
    Latest,
}

/// Consumer properties streamgate sets itself, with what to write instead.
const RESERVED_CONSUMER_PROPERTIES: &[(&str, &str)] = &[
    (
        "enable.auto.commit",
        "streamgate commits offsets itself, only after records are delivered",
    ),
    (
        "enable.auto.offset.store",
        "streamgate stores offsets itself, only after records are delivered",
    ),
    ("group.id", "set `group_id` instead"),
    ("bootstrap.servers", "set `bootstrap_servers` instead"),
    ("auto.offset.reset", "set `start_from` instead"),
    ("security.protocol", "set `security.protocol` instead"),
    ("sasl.mechanism", "set `security.sasl.mechanism` instead"),
    ("sasl.mechanisms", "set `security.sasl.mechanism` instead"),
    ("sasl.username", "set `security.sasl.username` instead"),
    ("sasl.password", "set `security.sasl.password` instead"),
];

impl KafkaSourceSpec {
    /// Checks brokers, topics (legal, distinct), group, batching, security and properties.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        problems.not_empty(
            &format!("{path}.bootstrap_servers"),
            &self.bootstrap_servers,
            "a comma-separated `host:port` list of brokers",
        );
        if self.topics.is_empty() {
            problems.error(
                format!("{path}.topics"),
                "is empty: expected at least one topic",
            );
        }
        let mut seen = HashMap::new();
        for (i, topic) in self.topics.iter().enumerate() {
            let topic_path = format!("{path}.topics[{i}]");
            check_topic(problems, &topic_path, topic);
            if let Some(first) = seen.insert(topic.as_str(), i) {
                problems.error(
                    topic_path,
                    format!("topic {topic:?} is listed twice (also at {path}.topics[{first}])"),
                );
            }
        }
        problems.not_empty(
            &format!("{path}.group_id"),
            &self.group_id,
            "a consumer group name",
        );
        self.batch.validate(&format!("{path}.batch"), problems);
        if let Some(security) = &self.security {
            security.validate(&format!("{path}.security"), problems);
        }
        check_properties(
            problems,
            &format!("{path}.properties"),
            &self.properties,
            RESERVED_CONSUMER_PROPERTIES,
        );
    }
}
