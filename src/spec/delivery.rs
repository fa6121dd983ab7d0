//! Checks of a pipeline's delivery settings: `exactly_once` is Kafka to Kafka through one
//! transactional producer on the source's cluster; `on_systematic_failure` has sane bounds.

use std::time::Duration;

use super::check::Problems;
use super::{Delivery, KafkaSinkSpec, PipelineSpec, SinkSpec, SourceSpec, SystematicFailureSpec};

/// Longest `transaction_interval`: a transaction stays open that long, and every
/// `read_committed` reader waits for it.
pub(crate) const MAX_TRANSACTION_INTERVAL: Duration = Duration::from_secs(60);

/// Producer and consumer settings exactly-once sets itself.
const RESERVED: &[(&str, &str)] = &[
    ("transactional.id", "set `transactional_id` instead"),
    (
        "enable.idempotence",
        "a transactional producer is always idempotent",
    ),
    (
        "isolation.level",
        "the source reads `read_committed`, so it never sees aborted outputs of an upstream \
         transactional pipeline",
    ),
    (
        "enable.auto.commit",
        "offsets are committed inside the transactions",
    ),
];

/// Adds the problems of `on_systematic_failure`.
fn check_systematic_failure(spec: &SystematicFailureSpec, problems: &mut Problems) {
    let path = "on_systematic_failure";
    if !(spec.max_failure_rate > 0.0 && spec.max_failure_rate <= 1.0) {
        problems.error(
            format!("{path}.max_failure_rate"),
            format!(
                "is {}: expected more than 0 and at most 1 (1 turns the guard off)",
                spec.max_failure_rate
            ),
        );
    }
    if spec.min_records == 0 {
        problems.error(format!("{path}.min_records"), "is 0: expected at least 1");
    }
    if spec.window.is_zero() || spec.window > Duration::from_secs(3600) {
        problems.error(
            format!("{path}.window"),
            "expected more than 0 and at most 1h",
        );
    }
    if spec.retry_every < Duration::from_millis(100) || spec.retry_every > Duration::from_secs(600)
    {
        problems.error(format!("{path}.retry_every"), "expected 100ms to 10m");
    }
}

/// Adds the problems of `spec`'s delivery settings.
pub(crate) fn check_delivery(spec: &PipelineSpec, problems: &mut Problems) {
    check_systematic_failure(&spec.on_systematic_failure, problems);
    if spec.delivery == Delivery::AtLeastOnce {
        if spec.transactional_id.is_some() {
            problems.error(
                "transactional_id",
                "is set but `delivery` is `at_least_once`: set `delivery: exactly_once`, or \
                 remove it",
            );
        }
        return;
    }
    if spec.transaction_interval.is_zero() || spec.transaction_interval > MAX_TRANSACTION_INTERVAL {
        problems.error(
            "transaction_interval",
            format!(
                "is {}: expected more than 0 and at most 60s",
                humantime::format_duration(spec.transaction_interval)
            ),
        );
    }
    if let Some(id) = &spec.transactional_id
        && (id.is_empty() || id.len() > 200 || id.chars().any(char::is_control))
    {
        problems.error(
            "transactional_id",
            "expected 1 to 200 characters without control characters",
        );
    }
    let SourceSpec::Kafka(source) = &spec.source else {
        problems.error(
            "delivery",
            "is `exactly_once` but the source is not Kafka: exactly-once commits the input \
             offsets inside a Kafka transaction; use `at_least_once` (JetStream outputs are \
             deduplicated by message id)",
        );
        return;
    };
    for (key, why) in RESERVED {
        if source.properties.contains_key(*key) {
            problems.error(
                format!("source.properties.{key}"),
                format!("is set by `delivery: exactly_once`: {why}"),
            );
        }
    }
    let sinks = spec
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("outputs[{i}].sink"), &o.sink))
        .chain(
            spec.dead_letter
                .iter()
                .map(|s| ("dead_letter".to_string(), s)),
        );
    let mut first: Option<(String, &KafkaSinkSpec)> = None;
    for (path, sink) in sinks {
        let SinkSpec::Kafka(kafka) = sink else {
            problems.error(
                format!("{path}.type"),
                "is not `kafka` but `delivery` is `exactly_once`: every output and the \
                 dead-letter sink must be Kafka topics written in the transaction",
            );
            continue;
        };
        if kafka
            .bootstrap_servers
            .as_ref()
            .is_some_and(|servers| *servers != source.bootstrap_servers)
        {
            problems.error(
                format!("{path}.bootstrap_servers"),
                "differs from the source's, but `delivery` is `exactly_once`: the transaction \
                 commits the source's offsets, so outputs must go to the source's cluster \
                 (omit `bootstrap_servers`)",
            );
        }
        for (key, why) in RESERVED {
            if kafka.properties.contains_key(*key) {
                problems.error(
                    format!("{path}.properties.{key}"),
                    format!("is set by `delivery: exactly_once`: {why}"),
                );
            }
        }
        match &first {
            None => first = Some((path, kafka)),
            Some((first_path, first_sink)) => {
                if !same_producer(first_sink, kafka) {
                    problems.error(
                        path,
                        format!(
                            "uses other producer settings (`security` or `properties`) than \
                             {first_path}, but `delivery` is `exactly_once`: every Kafka sink \
                             writes through one transactional producer"
                        ),
                    );
                }
            }
        }
    }
}

/// Whether two Kafka sinks configure the same producer.
fn same_producer(a: &KafkaSinkSpec, b: &KafkaSinkSpec) -> bool {
    a.bootstrap_servers == b.bootstrap_servers
        && a.properties == b.properties
        && serde_json::to_value(&a.security).ok() == serde_json::to_value(&b.security).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml_tail: &str) -> PipelineSpec {
        let yaml = format!(
            r#"
name: eos
source: {{ type: kafka, bootstrap_servers: "b:9092", topics: [in], group_id: g }}
format: {{ type: json, columns: [{{ name: id, type: string }}] }}
{yaml_tail}
"#
        );
        serde_yaml_ng::from_str(&yaml).unwrap()
    }

    fn problems(spec: &PipelineSpec) -> Vec<String> {
        let mut problems = Problems::new();
        check_delivery(spec, &mut problems);
        problems
            .into_vec()
            .into_iter()
            .map(|(path, message)| format!("{path}: {message}"))
            .collect()
    }

    #[test]
    fn kafka_to_kafka_through_one_producer_is_accepted() {
        let spec = spec(
            "delivery: exactly_once\ntransactional_id: eos-1\n\
             outputs: [{ name: a, sink: { type: kafka, topic: a } }, { name: b, sink: { type: kafka, topic: b } }]\n\
             dead_letter: { type: kafka, topic: dlq }",
        );
        assert_eq!(problems(&spec), Vec::<String>::new());
        assert_eq!(spec.transaction_interval, Duration::from_millis(100));
    }

    #[test]
    fn other_sinks_clusters_and_producers_are_refused_with_the_reason() {
        let spec = spec(
            "delivery: exactly_once\ntransaction_interval: 2m\n\
             outputs: [{ name: a, sink: { type: stdout } }, { name: b, sink: { type: kafka, topic: b, bootstrap_servers: \"other:9092\" } }, { name: c, sink: { type: kafka, topic: c, properties: { linger.ms: \"1\", transactional.id: x } } }]",
        );
        let found = problems(&spec);
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(found[0].starts_with("transaction_interval: is 2m"));
        assert!(found[1].starts_with("outputs[0].sink.type: is not `kafka`"));
        assert!(found[2].starts_with("outputs[1].sink.bootstrap_servers: differs"));
        assert!(found[3].starts_with("outputs[2].sink.properties.transactional.id: is set by"));
        assert!(found[4].starts_with("outputs[2].sink: uses other producer settings"));
    }

    #[test]
    fn systematic_failure_bounds_are_checked() {
        let spec = spec(
            "outputs: []\non_systematic_failure: { max_failure_rate: 0, min_records: 0, window: 2h, retry_every: 1ms }",
        );
        let found = problems(&spec);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].starts_with("on_systematic_failure.max_failure_rate: is 0"));
    }

    #[test]
    fn a_nats_source_and_a_stray_transactional_id_are_refused() {
        let mut nats = spec("delivery: exactly_once\noutputs: []");
        nats.source =
            serde_yaml_ng::from_str("{ type: nats, servers: \"nats://n\", subjects: [a] }")
                .unwrap();
        assert!(
            problems(&nats)[0]
                .starts_with("delivery: is `exactly_once` but the source is not Kafka")
        );
        let stray = spec("transactional_id: x\noutputs: []");
        assert!(problems(&stray)[0].starts_with("transactional_id: is set but"));
    }
}
