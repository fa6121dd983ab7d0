//! Backpressure: when a sink stops accepting (a stdout pipe nobody reads), the gateway stops
//! reading from Kafka instead of buffering: records read plateau far below what is available and
//! resident memory stays bounded. Measured, and printed.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use streamgate::testing::EmbeddedBroker;

use crate::common::{produce, rss_kib, transactions, wait_until};
use crate::process::{admin_addr, metric, start_gateway, transaction_schema, write_pipeline};

const PARTITIONS: i32 = 16;
const RECORDS: u64 = 200_000;

#[test]
fn stalled_sink_pauses_consumption_with_bounded_memory() {
    let broker = EmbeddedBroker::start(&[("bp-in", PARTITIONS)]).unwrap();
    let (records, _) = transactions(RECORDS, 0.0);
    produce(broker.bootstrap_servers(), "bp-in", PARTITIONS, &records);
    let input_bytes: usize = records.iter().map(|(_, p)| p.len()).sum();

    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
name: backpressure
source:
  type: kafka
  bootstrap_servers: {}
  topics: [bp-in]
  group_id: bp-group
format: {{ type: json, schema: {} }}
outputs:
  - name: blocked
    sink: {{ type: stdout }}
"#,
        broker.bootstrap_servers(),
        transaction_schema()
    );
    let file = write_pipeline(dir.path(), "bp", &yaml);
    let log = dir.path().join("gateway.log");
    // stdout is a pipe we never read: once its 64 KiB buffer is full, the sink blocks.
    let mut gateway = start_gateway(&file, &log, Stdio::piped());
    let admin = admin_addr(&log);

    // Wait until reading stops: the pause counter moved and records_in is unchanged across a
    // window of polls.
    let mut last = u64::MAX;
    let mut stable = 0;
    wait_until(
        "consumption to plateau",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            let now = metric(&admin, "streamgate_records_in_total");
            stable = if now == last { stable + 1 } else { 0 };
            last = now;
            stable >= 10 && metric(&admin, "streamgate_backpressure_pauses_total") > 0
        },
    );
    let rss_mib = rss_kib(gateway.id()).unwrap() as f64 / 1024.0;
    let read = metric(&admin, "streamgate_records_in_total");
    eprintln!(
        "backpressure: {read} of {RECORDS} records read while the sink is blocked; RSS {rss_mib:.1} MiB (input {:.1} MiB)",
        input_bytes as f64 / 1048576.0
    );
    assert!(
        read < RECORDS / 4,
        "kept reading while the sink was blocked: {read}"
    );
    assert!(
        rss_mib < 200.0,
        "resident memory {rss_mib:.1} MiB is not bounded"
    );

    // Draining stdout lets it continue: the pause was backpressure, not a stall.
    let stdout = gateway.stdout.take().unwrap();
    let reader = std::thread::spawn(move || BufReader::new(stdout).lines().count());
    wait_until(
        "all records read after unblocking",
        Duration::from_secs(120),
        Duration::from_millis(100),
        || metric(&admin, "streamgate_records_in_total") == RECORDS,
    );
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    assert!(reader.join().unwrap() as u64 >= RECORDS / 2);
}
