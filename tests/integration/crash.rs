//! Crash safety: the broker runs in its own process; the gateway is killed with SIGKILL at
//! random moments while records stream in, restarted, and killed again. Afterwards every input
//! record must be in the output or dead-letter topic at least once. A graceful SIGTERM must
//! produce no duplicates at all.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::common::{fully_committed, produce, read_all, topic_len, transactions, wait_until};
use crate::process::{BrokerProcess, start_gateway, terminate, transaction_schema, write_pipeline};

const PARTITIONS: i32 = 8;

fn pipeline(bootstrap: &str, name: &str) -> String {
    format!(
        r#"
name: {name}
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [{name}-in]
  group_id: {name}-group
  batch: {{ max_rows: 100, max_age: 5ms }}
  properties:
    # A killed consumer's membership lasts a session; keep it short so restarts rebalance fast.
    session.timeout.ms: "6000"
    heartbeat.interval.ms: "500"
format:
  type: json
  schema: {schema}
sql: SELECT transaction_id, card_id, amount FROM input
outputs:
  - name: out
    sink: {{ type: kafka, topic: {name}-out, key: card_id }}
dead_letter: {{ type: kafka, topic: {name}-dlq }}
"#,
        schema = transaction_schema()
    )
}

/// How many times each input id appears in output ∪ dead letters.
fn deliveries(bootstrap: &str, name: &str) -> HashMap<u64, usize> {
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

/// Runs the gateway until the whole input is committed, then stops it with SIGTERM.
fn run_to_end_and_terminate(file: &Path, log: &Path, bootstrap: &str, name: &str) {
    let mut gateway = start_gateway(file, log, Stdio::null());
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

fn topics(name: &str) -> Vec<(String, i32)> {
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
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), name, &pipeline(&broker.bootstrap, name));
    let log = dir.path().join("gateway.log");
    let seed: u64 = rand::rng().random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);

    const ROUNDS: u64 = 5;
    const PER_ROUND: u64 = 8_000;
    let (all, _bad) = transactions(ROUNDS * PER_ROUND, 0.01);
    let input = format!("{name}-in");
    for round in 0..ROUNDS {
        let chunk = &all[(round * PER_ROUND) as usize..((round + 1) * PER_ROUND) as usize];
        produce(&broker.bootstrap, &input, PARTITIONS, chunk);
        let before = topic_len(&broker.bootstrap, &format!("{name}-out"), PARTITIONS);
        let mut gateway = start_gateway(&file, &log, Stdio::null());
        // Kill once the output grew by a random amount: sometimes mid-batch, sometimes late.
        let target = before + rng.random_range(1..7_000);
        wait_until(
            "output progress",
            Duration::from_secs(120),
            Duration::from_millis(5),
            || topic_len(&broker.bootstrap, &format!("{name}-out"), PARTITIONS) >= target,
        );
        gateway.kill().unwrap();
        gateway.wait().unwrap();
    }

    // A last run finishes the stream and stops gracefully.
    run_to_end_and_terminate(&file, &log, &broker.bootstrap, name);

    let counts = deliveries(&broker.bootstrap, name);
    let missing: Vec<u64> = (0..ROUNDS * PER_ROUND)
        .filter(|id| !counts.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "crash test: {} records, {ROUNDS} kill -9 rounds, {duplicates} duplicates ({:.2}%)",
        ROUNDS * PER_ROUND,
        duplicates as f64 * 100.0 / (ROUNDS * PER_ROUND) as f64
    );
}

#[test]
fn graceful_sigterm_mid_stream_has_no_duplicates() {
    let name = "graceful";
    let broker = start_broker(name);
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), name, &pipeline(&broker.bootstrap, name));
    let log = dir.path().join("gateway.log");
    const N: u64 = 30_000;
    let (all, _) = transactions(N, 0.01);
    let input = format!("{name}-in");
    produce(&broker.bootstrap, &input, PARTITIONS, &all);

    let gateway = start_gateway(&file, &log, Stdio::null());
    wait_until(
        "output progress",
        Duration::from_secs(120),
        Duration::from_millis(5),
        || topic_len(&broker.bootstrap, &format!("{name}-out"), PARTITIONS) >= 1_000,
    );
    terminate(&gateway);
    let mut gateway = gateway;
    assert!(gateway.wait().unwrap().success(), "SIGTERM exits 0");

    run_to_end_and_terminate(&file, &log, &broker.bootstrap, name);

    let counts = deliveries(&broker.bootstrap, name);
    assert_eq!(counts.len() as u64, N, "every record delivered");
    let duplicates: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        duplicates.is_empty(),
        "graceful stop duplicated {} records",
        duplicates.len()
    );
}
