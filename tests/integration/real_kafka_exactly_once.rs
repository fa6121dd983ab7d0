//! `delivery: exactly_once` on Apache Kafka's own broker: the gateway process is killed with
//! SIGKILL at random moments while it works through 200,000 transactions (1% malformed) and
//! restarted each time; a `read_committed` reader then finds every good record's output exactly
//! once and every malformed record exactly once in the dead-letter topic, counted by id. And
//! failover across three instances, under both guarantees.
//!
//! Unlike librdkafka's mock cluster, Kafka stores the offsets committed inside transactions
//! and hides aborted transactions from `read_committed` readers, so this is where the
//! guarantee is proven (see `exactly_once` for what the mock can show).

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;

use crate::common::real_kafka::RealKafka;
use crate::common::{produce, topic_len, transactions, wait_until};
use crate::crash::{PARTITIONS, pipeline, run_to_end_and_terminate, topics};
use crate::exactly_once::read_committed;
use crate::process::{
    admin_addr, metric, start_gateway, start_gateway_with_env, terminate, write_pipeline,
};

const RECORDS: u64 = 200_000;

/// A gateway process, killed when dropped (so a failing test leaves none running).
struct Running(std::process::Child);

impl Running {
    fn kill_9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
/// Prints the end of each instance's log when the test fails.
struct LogsOnFailure(Vec<std::path::PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for log in &self.0 {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- {} (tail) ---\n{}",
                log.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}

const KILLS: usize = 20;

/// The crash scenarios' pipeline, exactly once, with a stable transactional id: a restarted
/// gateway fences the killed one and aborts its open transaction at once.
fn exactly_once_pipeline(bootstrap: &str, name: &str) -> String {
    format!(
        "{}delivery: exactly_once\ntransaction_interval: 100ms\ntransactional_id: {name}-instance-1\n",
        pipeline(bootstrap, name)
    )
}

/// How many times each input id appears in `{name}-out` and in `{name}-dlq`, as a
/// `read_committed` reader sees them.
fn counts_by_id(
    bootstrap: &str,
    name: &str,
    partitions: i32,
) -> (HashMap<u64, usize>, HashMap<u64, usize>) {
    let mut outputs = HashMap::new();
    for (_, payload) in read_committed(bootstrap, &format!("{name}-out"), partitions) {
        let row: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let id = row["transaction_id"].as_str().unwrap()[3..]
            .parse()
            .unwrap();
        *outputs.entry(id).or_insert(0) += 1;
    }
    let mut letters = HashMap::new();
    for (key, _) in read_committed(bootstrap, &format!("{name}-dlq"), 1) {
        // Dead letters keep the original key: the record's id.
        let id = String::from_utf8_lossy(&key.expect("a dead letter keeps its key"))
            .parse()
            .unwrap();
        *letters.entry(id).or_insert(0) += 1;
    }
    (outputs, letters)
}

/// One broker with `name`'s topics, and the exactly-once pipeline written to a temporary
/// folder: (broker, bootstrap servers, folder, pipeline file, log file).
fn one_broker_and_pipeline(
    name: &str,
) -> (
    RealKafka,
    String,
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let kafka = RealKafka::single();
    kafka.create_topics(&topics(name));
    let bootstrap = kafka.bootstrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), name, &exactly_once_pipeline(&bootstrap, name));
    let log = dir.path().join("gateway.log");
    (kafka, bootstrap, dir, file, log)
}

#[test]
fn real_kafka_exactly_once_through_twenty_kill_9s_loses_and_duplicates_nothing() {
    let name = "rk-eos";
    let (_kafka, bootstrap, _dir, file, log) = one_broker_and_pipeline(name);
    let _show_logs = LogsOnFailure(vec![log.clone()]);
    let seed: u64 = rand::rng().random();
    eprintln!("exactly-once crash test seed {seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);

    let (all, bad) = transactions(RECORDS, 0.01);
    let input = format!("{name}-in");
    let output = format!("{name}-out");
    // The input arrives in as many chunks as there are runs, so every run has work.
    let chunk = all.len().div_ceil(KILLS + 1);
    let mut chunks = all.chunks(chunk);
    for _ in 0..KILLS {
        produce(&bootstrap, &input, PARTITIONS, chunks.next().unwrap());
        let before = topic_len(&bootstrap, &output, PARTITIONS);
        let mut gateway = Running(start_gateway(&file, &log, Stdio::null()));
        // Kill once the output log grew by a random amount (aborted writes count too): mid
        // transaction, between commits, sometimes right after start.
        let target = before + rng.random_range(1..chunk as i64);
        wait_until(
            "output progress",
            Duration::from_secs(120),
            Duration::from_millis(5),
            || topic_len(&bootstrap, &output, PARTITIONS) >= target,
        );
        gateway.kill_9();
    }
    for rest in chunks {
        produce(&bootstrap, &input, PARTITIONS, rest);
    }
    run_to_end_and_terminate(&file, &log, &bootstrap, name);

    let (outputs, letters) = counts_by_id(&bootstrap, name, PARTITIONS);
    assert_exactly_once(&outputs, &letters, RECORDS, &bad);
}

/// Another producer takes the pipeline's transactional id, as a second instance configured
/// with the same id would: the pipeline's producer is fenced and its open transaction aborted.
/// `streamgate run` starts the pipeline again from the committed offsets (its new producer
/// fences the intruder in turn) instead of exiting, and every record still comes out exactly
/// once.
#[test]
fn real_kafka_an_aborted_transaction_restarts_the_pipeline_exactly_once() {
    use rdkafka::producer::{BaseProducer, Producer};
    let name = "rk-fenced";
    let records = 20_000u64;
    let (_kafka, bootstrap, _dir, file, log) = one_broker_and_pipeline(name);
    let _show_logs = LogsOnFailure(vec![log.clone()]);
    let (all, bad) = transactions(records, 0.01);
    let (first, rest) = all.split_at(all.len() / 2);
    let (input, output) = (format!("{name}-in"), format!("{name}-out"));
    produce(&bootstrap, &input, PARTITIONS, first);
    let gateway = Running(start_gateway(&file, &log, Stdio::null()));
    wait_until(
        "output progress",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || topic_len(&bootstrap, &output, PARTITIONS) >= 1_000,
    );

    let intruder: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("transactional.id", format!("{name}-instance-1"))
        .create()
        .unwrap();
    intruder.init_transactions(Duration::from_secs(30)).unwrap();
    // The fenced producer finds out at its next send or commit.
    produce(&bootstrap, &input, PARTITIONS, rest);
    wait_until(
        "the restart in the log",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            // The fence shows at a send (the batch fails) or at the commit, whichever comes
            // first; either way the transaction is aborted and the pipeline restarts.
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("restarting the pipeline from its committed offsets")
        },
    );
    wait_until(
        "everything committed after the restart",
        Duration::from_secs(120),
        Duration::from_millis(100),
        || crate::common::fully_committed(&bootstrap, &format!("{name}-group"), &input, PARTITIONS),
    );
    let mut gateway = gateway;
    assert!(
        gateway.0.try_wait().unwrap().is_none(),
        "the process kept running"
    );
    terminate(&gateway.0);
    assert!(gateway.0.wait().unwrap().success(), "graceful stop exits 0");
    drop(intruder);

    let (outputs, letters) = counts_by_id(&bootstrap, name, PARTITIONS);
    assert_exactly_once(&outputs, &letters, records, &bad);
}

/// Every id of `0..records` is in `outputs` exactly once, or, when malformed (`bad`), in
/// `letters` exactly once.
fn assert_exactly_once(
    outputs: &HashMap<u64, usize>,
    letters: &HashMap<u64, usize>,
    records: u64,
    bad: &[usize],
) {
    let bad: std::collections::HashSet<u64> = bad.iter().map(|&i| i as u64).collect();
    assert_none_lost(outputs, letters, records);
    let duplicated: Vec<(&u64, &usize)> = outputs
        .iter()
        .chain(letters.iter())
        .filter(|(_, n)| **n > 1)
        .collect();
    assert!(
        duplicated.is_empty(),
        "{} duplicated, e.g. {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)]
    );
    assert_eq!(outputs.len() as u64, records - bad.len() as u64);
    assert!(
        letters.keys().all(|id| bad.contains(id)),
        "only malformed records are dead letters"
    );
    assert_eq!(letters.len(), bad.len());
}

/// Every id of `0..records` is among the outputs or the dead letters.
fn assert_none_lost(outputs: &HashMap<u64, usize>, letters: &HashMap<u64, usize>, records: u64) {
    let lost: Vec<u64> = (0..records)
        .filter(|id| !outputs.contains_key(id) && !letters.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

#[test]
fn real_kafka_failover_across_three_instances_loses_and_duplicates_nothing() {
    let (outputs, letters, records, bad) = failover("rk-failover", true);
    assert_exactly_once(&outputs, &letters, records, &bad);
}

#[test]
fn real_kafka_failover_at_least_once_loses_nothing() {
    let (outputs, letters, records, _) = failover("rk-failover-alo", false);
    assert_none_lost(&outputs, &letters, records);
    let duplicates: usize = outputs
        .values()
        .chain(letters.values())
        .map(|n| n - 1)
        .sum();
    eprintln!("at-least-once failover: {records} records, {duplicates} duplicates");
}

/// Three instances share a 24-partition topic while records arrive at a steady rate; one is
/// killed with SIGKILL mid-stream, later a second. The survivor ends up holding every
/// partition. Returns what a `read_committed` reader then finds (outputs and dead letters by
/// id), the number of records and the malformed ones.
fn failover(
    name: &str,
    exactly_once: bool,
) -> (HashMap<u64, usize>, HashMap<u64, usize>, u64, Vec<usize>) {
    const FAILOVER_PARTITIONS: i32 = 24;
    const RATE_CHUNK: usize = 1_000;
    const CHUNKS: usize = 40;
    let kafka = RealKafka::single();
    kafka.create_topics(&[
        (format!("{name}-in"), FAILOVER_PARTITIONS),
        (format!("{name}-out"), FAILOVER_PARTITIONS),
        (format!("{name}-dlq"), 1),
    ]);
    let bootstrap = kafka.bootstrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    // Under exactly-once, one transactional id per instance, from its environment.
    let yaml = if exactly_once {
        exactly_once_pipeline(&bootstrap, name).replace(
            &format!("{name}-instance-1"),
            &format!("{name}-${{INSTANCE}}"),
        )
    } else {
        pipeline(&bootstrap, name)
    };
    let file = write_pipeline(dir.path(), name, &yaml);
    let logs: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("gateway-{i}.log")))
        .collect();
    let _show_logs = LogsOnFailure(logs.clone());
    let mut gateways: Vec<_> = (0..3)
        .map(|i| {
            let instance = i.to_string();
            Running(start_gateway_with_env(
                &file,
                &logs[i],
                Stdio::null(),
                &[("INSTANCE", &instance)],
            ))
        })
        .collect();

    let records = (RATE_CHUNK * CHUNKS) as u64;
    let (all, bad) = transactions(records, 0.01);
    let producer = {
        let (bootstrap, input) = (bootstrap.clone(), format!("{name}-in"));
        std::thread::spawn(move || {
            // About 2,000 records a second.
            for chunk in all.chunks(RATE_CHUNK) {
                produce(&bootstrap, &input, FAILOVER_PARTITIONS, chunk);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let output = format!("{name}-out");
    let grown_to = |share: f64| {
        let target = (records as f64 * share) as i64;
        wait_until(
            "output progress",
            Duration::from_secs(180),
            Duration::from_millis(20),
            || topic_len(&bootstrap, &output, FAILOVER_PARTITIONS) >= target,
        );
    };
    grown_to(0.15);
    gateways[0].kill_9();
    grown_to(0.45);
    gateways[1].kill_9();
    producer.join().unwrap();

    let (group, input) = (format!("{name}-group"), format!("{name}-in"));
    wait_until(
        "the survivor committed everything",
        Duration::from_secs(300),
        Duration::from_millis(100),
        || crate::common::fully_committed(&bootstrap, &group, &input, FAILOVER_PARTITIONS),
    );
    let survivor = admin_addr(&logs[2]);
    assert_eq!(
        metric(&survivor, "streamgate_assigned_partitions"),
        FAILOVER_PARTITIONS as u64,
        "the last instance holds every partition"
    );
    terminate(&gateways[2].0);
    assert!(gateways[2].0.wait().unwrap().success());

    let (outputs, letters) = counts_by_id(&bootstrap, name, FAILOVER_PARTITIONS);
    (outputs, letters, records, bad)
}
