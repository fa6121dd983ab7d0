//! Crash safety: the broker runs in its own process; the gateway is killed with SIGKILL at
//! random moments while records stream in, restarted, and killed again. Afterwards every input
//! record must be in the output or dead-letter topic at least once. A graceful SIGTERM must
//! produce no duplicates at all.
//!
//! The scenarios take the broker's address: the tests here run them on the embedded broker
//! (`streamgate broker` in its own process), `real_kafka_delivery` on Apache Kafka's own.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::common::{fully_committed, produce, read_all, topic_len, transactions, wait_until};
use crate::process::{
    BrokerProcess, start_gateway, start_gateway_with_env, terminate, transaction_schema,
    write_pipeline,
};

/// Partitions of the input and output topics (the dead-letter topic has one).
pub(crate) const PARTITIONS: i32 = 8;

/// The scenarios' pipeline: `{name}-in` → SQL → `{name}-out`, dead letters to `{name}-dlq`,
/// with a short consumer session so restarts rebalance fast.
pub(crate) fn pipeline(bootstrap: &str, name: &str) -> String {
    pipeline_with(bootstrap, name, &Extra::default())
}

/// What [`pipeline_with`] adds to [`pipeline`].
#[derive(Default)]
pub(crate) struct Extra<'a> {
    /// More entries of the source's `properties` flow mapping, each as `, key: "value"`.
    pub source_properties: &'a str,
    /// Entries of the output sink's `properties` flow mapping (`key: "value", ...`).
    pub sink_properties: &'a str,
    /// A `security:` block of the source (indented two spaces); the sinks inherit it.
    pub security: &'a str,
}

/// [`pipeline`] with more librdkafka properties or a security block.
pub(crate) fn pipeline_with(bootstrap: &str, name: &str, extra: &Extra<'_>) -> String {
    format!(
        r#"
name: {name}
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [{name}-in]
  group_id: {name}-group
  batch: {{ max_rows: 100, max_age: 5ms }}
  # A killed consumer's membership lasts a session; keep it short so restarts rebalance fast.
  properties: {{ session.timeout.ms: "6000", heartbeat.interval.ms: "500"{source_properties} }}
{security}
format:
  type: json
  schema: {schema}
sql: SELECT transaction_id, card_id, amount FROM input
outputs:
  - name: out
    sink: {{ type: kafka, topic: {name}-out, key: card_id, properties: {{ {sink_properties} }} }}
dead_letter: {{ type: kafka, topic: {name}-dlq }}
"#,
        schema = transaction_schema(),
        source_properties = extra.source_properties,
        sink_properties = extra.sink_properties,
        security = extra.security,
    )
}

/// How many times each input id appears in `{name}-out` ∪ `{name}-dlq`.
pub(crate) fn deliveries(bootstrap: &str, name: &str) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for m in read_all(bootstrap, &format!("{name}-out"), PARTITIONS) {
        let row: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let id = row["transaction_id"].as_str().unwrap()[3..]
            .parse()
            .unwrap();
        *counts.entry(id).or_insert(0) += 1;
    }
    for m in read_all(bootstrap, &format!("{name}-dlq"), 1) {
        let id = String::from_utf8_lossy(&m.key.unwrap()).parse().unwrap();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Fails unless every id in `0..n` was delivered; returns the number of duplicates.
pub(crate) fn assert_none_lost(counts: &HashMap<u64, usize>, n: u64) -> usize {
    let missing: Vec<u64> = (0..n).filter(|id| !counts.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    counts.values().map(|c| c - 1).sum()
}

/// Runs the gateway until the whole input is committed, then stops it with SIGTERM.
pub(crate) fn run_to_end_and_terminate(file: &Path, log: &Path, bootstrap: &str, name: &str) {
    run_to_end_and_terminate_with_env(file, log, bootstrap, name, &[]);
}

/// [`run_to_end_and_terminate`] with more environment variables for the gateway.
pub(crate) fn run_to_end_and_terminate_with_env(
    file: &Path,
    log: &Path,
    bootstrap: &str,
    name: &str,
    env: &[(&str, &str)],
) {
    let mut gateway = start_gateway_with_env(file, log, Stdio::null(), env);
    let (group, input) = (format!("{name}-group"), format!("{name}-in"));
    wait_until(
        "everything committed",
        Duration::from_secs(180),
        Duration::from_millis(100),
        || fully_committed(bootstrap, &group, &input, PARTITIONS),
    );
    terminate(&gateway);
    assert!(gateway.wait().unwrap().success(), "graceful stop exits 0");
}

/// Topics of the scenario `name`: (topic, partitions).
pub(crate) fn topics(name: &str) -> Vec<(String, i32)> {
    vec![
        (format!("{name}-in"), PARTITIONS),
        (format!("{name}-out"), PARTITIONS),
        (format!("{name}-dlq"), 1),
    ]
}

fn start_broker(name: &str) -> BrokerProcess {
    let t = topics(name);
    let refs: Vec<(&str, i32)> = t.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    BrokerProcess::start(&refs)
}

#[test]
fn kill_9_at_random_moments_loses_nothing() {
    let name = "crash";
    let broker = start_broker(name);
    kill_9_at_random_moments(&broker.bootstrap, name);
}

#[test]
fn graceful_sigterm_mid_stream_has_no_duplicates() {
    let name = "graceful";
    let broker = start_broker(name);
    graceful_sigterm_mid_stream(&broker.bootstrap, name);
}

/// Streams 40,000 records (1% malformed) in five rounds, `kill -9`ing a fresh gateway in each
/// once the output grew by a random amount, then finishes with a graceful run: nothing lost.
/// The topics of [`topics`] must exist.
pub(crate) fn kill_9_at_random_moments(bootstrap: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), name, &pipeline(bootstrap, name));
    let log = dir.path().join("gateway.log");
    let seed: u64 = rand::rng().random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);

    const ROUNDS: u64 = 5;
    const PER_ROUND: u64 = 8_000;
    let (all, _bad) = transactions(ROUNDS * PER_ROUND, 0.01);
    let (input, output) = (format!("{name}-in"), format!("{name}-out"));
    for round in 0..ROUNDS {
        let chunk = &all[(round * PER_ROUND) as usize..((round + 1) * PER_ROUND) as usize];
        produce(bootstrap, &input, PARTITIONS, chunk);
        let before = topic_len(bootstrap, &output, PARTITIONS);
        let mut gateway = start_gateway(&file, &log, Stdio::null());
        // Kill once the output grew by a random amount: sometimes mid-batch, sometimes late.
        let target = before + rng.random_range(1..7_000);
        wait_until(
            "output progress",
            Duration::from_secs(120),
            Duration::from_millis(5),
            || topic_len(bootstrap, &output, PARTITIONS) >= target,
        );
        gateway.kill().unwrap();
        gateway.wait().unwrap();
    }

    // A last run finishes the stream and stops gracefully.
    run_to_end_and_terminate(&file, &log, bootstrap, name);

    let duplicates = assert_none_lost(&deliveries(bootstrap, name), ROUNDS * PER_ROUND);
    eprintln!(
        "crash test: {} records, {ROUNDS} kill -9 rounds, {duplicates} duplicates ({:.2}%)",
        ROUNDS * PER_ROUND,
        duplicates as f64 * 100.0 / (ROUNDS * PER_ROUND) as f64
    );
}

/// Stops the gateway with SIGTERM mid-stream and finishes with a second run: every one of
/// 30,000 records delivered exactly once. The topics of [`topics`] must exist.
pub(crate) fn graceful_sigterm_mid_stream(bootstrap: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), name, &pipeline(bootstrap, name));
    let log = dir.path().join("gateway.log");
    const N: u64 = 30_000;
    let (all, _) = transactions(N, 0.01);
    produce(bootstrap, &format!("{name}-in"), PARTITIONS, &all);

    let mut gateway = start_gateway(&file, &log, Stdio::null());
    let output = format!("{name}-out");
    wait_until(
        "output progress",
        Duration::from_secs(120),
        Duration::from_millis(5),
        || topic_len(bootstrap, &output, PARTITIONS) >= 1_000,
    );
    terminate(&gateway);
    assert!(gateway.wait().unwrap().success(), "SIGTERM exits 0");

    run_to_end_and_terminate(&file, &log, bootstrap, name);

    let counts = deliveries(bootstrap, name);
    assert_eq!(counts.len() as u64, N, "every record delivered");
    let duplicates: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        duplicates.is_empty(),
        "graceful stop duplicated {} records",
        duplicates.len()
    );
}
