//! The admin server's routes and the CLI's validate command, as a user sees them.

use std::io::{Read, Write};
use std::process::Command;

use streamgate::api::{AdminState, serve};
use streamgate::runtime::{PipelineState, StatusBoard};
use streamgate::telemetry::Metrics;
use tokio_util::sync::CancellationToken;

use crate::common::streamgate_bin;

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_report_health_readiness_and_metrics() {
    let metrics = Metrics::new();
    let status = StatusBoard::default();
    let shutdown = CancellationToken::new();
    let state = AdminState {
        metrics: metrics.clone(),
        status: status.clone(),
    };
    let (addr, server) = serve("127.0.0.1:0".parse().unwrap(), state, shutdown.clone())
        .await
        .unwrap();
    metrics.pipeline("p1").records_in.inc_by(3);

    let checks = tokio::task::spawn_blocking(move || {
        let health = get(addr, "/healthz");
        let not_ready = get(addr, "/readyz");
        status.set("p1", PipelineState::Running);
        let ready = get(addr, "/readyz");
        let states = get(addr, "/pipelines");
        let metrics = get(addr, "/metrics");
        (health, not_ready, ready, states, metrics)
    })
    .await
    .unwrap();
    assert_eq!(checks.0.0, 200);
    assert_eq!(checks.1.0, 503, "no running pipeline yet");
    assert_eq!(checks.2.0, 200);
    assert_eq!(checks.3.1, r#"{"p1":{"state":"running"}}"#);
    assert!(
        checks
            .4
            .1
            .contains("streamgate_records_in_total{pipeline=\"p1\"} 3")
    );
    shutdown.cancel();
    server.await.unwrap();
}

#[test]
fn validate_reports_every_problem_and_exits_nonzero() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(streamgate_bin())
        .args(["validate", "--offline"])
        .arg(format!("{root}/tests/data/invalid/many_errors.yaml"))
        .arg(format!("{root}/pipelines/fraud-rules.yaml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("many_errors.yaml: processing.workers: is 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("many_errors.yaml: source.group_id: is empty"),
        "{stdout}"
    );
    assert!(stdout.contains("fraud-rules.yaml: ok"), "{stdout}");

    let ok = Command::new(streamgate_bin())
        .args([
            "validate",
            "--offline",
            &format!("{root}/pipelines/fraud-rules.yaml"),
        ])
        .output()
        .unwrap();
    assert!(ok.status.success());
}

/// `streamgate validate --offline` of a pipeline file holding `yaml`: exit code and stdout.
fn validate_offline(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(streamgate_bin())
        .args(["validate", "--offline"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn validate_names_unknown_sql_columns() {
    let (code, stdout) = validate_offline(
        r#"
name: p
source: { type: kafka, bootstrap_servers: "b:9092", topics: [t], group_id: g }
format: { type: json, columns: [{ name: amount, type: float64 }] }
sql: SELECT amount, amout * 2 AS double FROM input
outputs: [{ name: o, sink: { type: stdout } }]
"#,
    );
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains("sql:") && stdout.contains("amout"),
        "{stdout}"
    );
}

#[test]
fn validate_names_unknown_payload_columns() {
    let (code, stdout) = validate_offline(
        r#"
name: p
source: { type: kafka, bootstrap_servers: "b:9092", topics: [t], group_id: g }
format: { type: json, columns: [{ name: amount, type: float64 }, { name: id, type: string }] }
sql: SELECT id, amount, amount * 2 AS double FROM input
outputs:
  - { name: o, exclude_columns: [double, amout], sink: { type: stdout } }
  - { name: k, columns: [amount, idd], sink: { type: stdout } }
"#,
    );
    assert_eq!(code, Some(1), "{stdout}");
    for expected in [
        "outputs[0].exclude_columns[1]: column `amout` is not in the output rows (columns: id, \
         amount, double)",
        "outputs[1].columns[1]: column `idd` is not in the output rows (columns: id, amount, \
         double)",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn help_teaches_with_examples() {
    let out = Command::new(streamgate_bin())
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Examples:",
        "streamgate demo",
        "streamgate validate",
        "/metrics",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}");
    }
}

/// The promise in docs/dependencies.md that `MALLOC_CONF` overrides the compiled-in jemalloc
/// options: jemalloc reads that variable only when it replaces `malloc` (Linux); a prefixed
/// build reads `_RJEM_MALLOC_CONF` and silently ignored it.
#[cfg(target_os = "linux")]
#[test]
fn malloc_conf_in_the_environment_overrides_the_compiled_in_options() {
    let run = |conf: &str| {
        let out = Command::new(streamgate_bin())
            .arg("--version")
            .env("MALLOC_CONF", conf)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let compiled_in = run("stats_print:true");
    assert!(
        compiled_in.contains("opt.oversize_threshold: 0\n"),
        "{compiled_in}"
    );
    let overridden = run("stats_print:true,oversize_threshold:1048576");
    assert!(
        overridden.contains("opt.oversize_threshold: 1048576\n"),
        "{overridden}"
    );
}
