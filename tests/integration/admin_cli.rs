//! The admin port of `streamgate run` (the gateway's admin routes, policies and keys), as a
//! user sees it, and the CLI's validate command.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use streamgate::gateway::auth::{Policy, key_hash_hex};
use streamgate::gateway::{AdminAccess, Gateway, Listener, ROUTES, serve_admin};
use streamgate::runtime::{PipelineState, StatusBoard};
use streamgate::spec::{ApiKeySpec, GatewayAuthSpec};
use streamgate::telemetry::Metrics;
use tokio_util::sync::CancellationToken;

use crate::common::{streamgate_bin, wait_until};

const READER: &str = "k-admin-reader-canary";
const OPS: &str = "k-admin-ops-canary";

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

/// `method path` on `base` (`http://host:port`) with `key` as bearer: status and body.
async fn call(base: &str, method: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let client = crate::common::http();
    let url = format!("{base}{path}");
    let mut request = match method {
        "GET" => client.get(url),
        "PUT" => client.put(url).body("{}"),
        _ => client.post(url),
    };
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn key(name: &str, key: &str, scopes: &[&str]) -> ApiKeySpec {
    ApiKeySpec {
        name: name.into(),
        sha256: key_hash_hex(key),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        rate_per_second: None,
        burst: None,
        max_concurrent: None,
    }
}

/// A reader (`admin:read`) and an operator (`admin:read`, `admin:write`).
fn admin_keys() -> GatewayAuthSpec {
    GatewayAuthSpec {
        api_keys: vec![
            key("reader", READER, &["admin:read"]),
            key("ops", OPS, &["admin:read", "admin:write"]),
        ],
        jwt: None,
    }
}

/// An admin port on `addr` over `status`, with `auth`: its URL and the server task.
async fn admin_port(
    addr: &str,
    auth: &GatewayAuthSpec,
    access: Option<AdminAccess>,
    metrics: Metrics,
    status: StatusBoard,
    shutdown: CancellationToken,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = addr.parse().unwrap();
    let gateway = Gateway::admin_port(auth, None, std::path::Path::new("."), metrics)
        .unwrap()
        .with_pipelines(status);
    let access = access.unwrap_or(AdminAccess::default_for(addr));
    serve_admin(addr, Arc::new(gateway), access, shutdown).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_report_health_readiness_and_metrics() {
    let metrics = Metrics::new();
    let status = StatusBoard::default();
    let shutdown = CancellationToken::new();
    let (addr, server) = admin_port(
        "127.0.0.1:0",
        &GatewayAuthSpec::default(),
        None,
        metrics.clone(),
        status.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    metrics.pipeline("p1").records_in.inc_by(3);

    let board = status.clone();
    let checks = tokio::task::spawn_blocking(move || {
        let health = get(addr, "/healthz");
        let not_ready = get(addr, "/readyz");
        board.set("p1", PipelineState::Running);
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
    // Without keys (loopback only) the admin API reads, but changes nothing.
    let base = format!("http://{addr}");
    let (code, body) = call(&base, "GET", "/admin/pipelines", None).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""name":"p1""#), "{body}");
    let (code, body) = call(&base, "POST", "/admin/pipelines/p1/pause", None).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("--admin-auth"),
        "the refusal names the option: {body}"
    );
    assert!(
        !status.is_paused("p1"),
        "an admin port without keys paused a pipeline"
    );
    shutdown.cancel();
    server.await.unwrap();
}

/// With keys, the admin port applies the route table's policies: nothing but health (and, on
/// loopback, metrics) answers without a key, and only an `admin:write` key pauses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_with_keys_refuses_an_unauthenticated_pause() {
    let status = StatusBoard::default();
    status.set("p1", PipelineState::Running);
    let shutdown = CancellationToken::new();
    let (addr, _server) = admin_port(
        "127.0.0.1:0",
        &admin_keys(),
        None,
        Metrics::new(),
        status.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let base = format!("http://{addr}");
    let listener = Listener::AdminPort(AdminAccess::default_for(addr));
    let opened = ["/healthz", "/readyz", "/metrics"];
    let mut served = 0;
    for def in ROUTES.iter().filter(|r| r.served_on(&listener)) {
        served += 1;
        let path = def
            .path
            .replace("{pipeline}", "p1")
            .replace("{model}", "m")
            .replace("{version}", "v1");
        if def.policy == Policy::Public || opened.contains(&def.path) {
            let (code, _) = call(&base, def.method, &path, None).await;
            assert_eq!(code, 200, "{} {}", def.method, def.path);
            continue;
        }
        for key in [None, Some("not-a-key")] {
            let (code, _) = call(&base, def.method, &path, key).await;
            assert_eq!(code, 401, "{} {} with {key:?}", def.method, def.path);
        }
        let (code, _) = call(&base, def.method, &path, Some(READER)).await;
        let expected = if def.policy == Policy::AdminWrite {
            403
        } else {
            200
        };
        assert_eq!(code, expected, "{} {} as a reader", def.method, def.path);
    }
    assert!(served >= 10, "the admin port serves the admin routes");
    assert!(
        !status.is_paused("p1"),
        "a pause without admin:write went through"
    );

    let (code, body) = call(&base, "POST", "/admin/pipelines/p1/pause", Some(OPS)).await;
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"paused":true,"pipeline":"p1"}"#)
    );
    assert!(status.is_paused("p1"));
    let (_, audit) = call(&base, "GET", "/admin/audit", Some(READER)).await;
    assert!(audit.contains(r#""who":"ops""#), "{audit}");
    shutdown.cancel();
}

/// `--admin-public none`: even health and metrics need a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_health_and_metrics_can_need_a_key() {
    let shutdown = CancellationToken::new();
    let closed = AdminAccess {
        public_health: false,
        public_metrics: false,
    };
    let (addr, _server) = admin_port(
        "127.0.0.1:0",
        &admin_keys(),
        Some(closed),
        Metrics::new(),
        StatusBoard::default(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let base = format!("http://{addr}");
    for path in ["/healthz", "/metrics", "/pipelines"] {
        assert_eq!(call(&base, "GET", path, None).await.0, 401, "{path}");
        assert_eq!(
            call(&base, "GET", path, Some(READER)).await.0,
            200,
            "{path}"
        );
    }
    // Off loopback, metrics need a key by default; health does not.
    let open_addr = "0.0.0.0:9898".parse().unwrap();
    assert_eq!(
        AdminAccess::default_for(open_addr),
        AdminAccess {
            public_health: true,
            public_metrics: false
        }
    );
    shutdown.cancel();
}

/// An admin port without keys listens on loopback only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_without_keys_stays_on_loopback() {
    let shutdown = CancellationToken::new();
    let refused = admin_port(
        "0.0.0.0:0",
        &GatewayAuthSpec::default(),
        None,
        Metrics::new(),
        StatusBoard::default(),
        shutdown.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(refused.to_string().contains("--admin-auth"), "{refused}");
    let with_keys = admin_port(
        "0.0.0.0:0",
        &admin_keys(),
        None,
        Metrics::new(),
        StatusBoard::default(),
        shutdown.clone(),
    )
    .await;
    assert!(with_keys.is_ok(), "{:?}", with_keys.err());
    shutdown.cancel();

    // The binary refuses before it starts anything.
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(streamgate_bin())
        .args(["run", &format!("{root}/pipelines/fraud-rules.yaml")])
        .args(["--admin-addr", "0.0.0.0:0"])
        .env_remove("STREAMGATE_ADMIN_AUTH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--admin-auth"),
        "{stderr}"
    );
}

/// `streamgate run --admin-auth`: the running binary's admin port pauses a pipeline only for
/// an `admin:write` key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_admin_port_pauses_only_with_an_admin_write_key() {
    let broker = streamgate::testing::EmbeddedBroker::start(&[("admin-in", 1)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("paused.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
name: paused
source:
  type: kafka
  bootstrap_servers: {}
  topics: [admin-in]
  group_id: admin-group
format: {{ type: json, schema: {}/schemas/transaction.avsc }}
outputs:
  - name: out
    sink: {{ type: stdout }}
"#,
            broker.bootstrap_servers(),
            env!("CARGO_MANIFEST_DIR"),
        ),
    )
    .unwrap();
    let auth = dir.path().join("admin-auth.yaml");
    std::fs::write(
        &auth,
        format!(
            "auth:\n  api_keys:\n    - {{ name: reader, sha256: {}, scopes: [\"admin:read\"] }}\n    - {{ name: ops, sha256: {}, scopes: [\"admin:write\"] }}\n",
            key_hash_hex(READER),
            key_hash_hex(OPS)
        ),
    )
    .unwrap();
    let log = dir.path().join("run.log");
    let mut child = Command::new(streamgate_bin())
        .arg("run")
        .arg(&pipeline)
        .args(["--admin-addr", "127.0.0.1:0", "--admin-auth"])
        .arg(&auth)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut addr = String::new();
    wait_until(
        "admin address in the log",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(a) = text
                .lines()
                .find(|l| l.contains("admin server listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
            {
                addr = a.to_string();
            }
            !addr.is_empty()
        },
    );
    let base = format!("http://{addr}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !call(&base, "GET", "/pipelines", Some(READER))
        .await
        .1
        .contains("paused")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pipeline never showed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pause = "/admin/pipelines/paused/pause";
    assert_eq!(call(&base, "GET", "/healthz", None).await.0, 200);
    assert_eq!(call(&base, "POST", pause, None).await.0, 401);
    assert_eq!(call(&base, "POST", pause, Some(READER)).await.0, 403);
    let (_, states) = call(&base, "GET", "/admin/pipelines", Some(READER)).await;
    assert!(states.contains(r#""paused":false"#), "{states}");
    let (code, body) = call(&base, "POST", pause, Some(OPS)).await;
    assert_eq!(code, 200, "{body}");
    let (_, states) = call(&base, "GET", "/admin/pipelines", Some(READER)).await;
    assert!(states.contains(r#""paused":true"#), "{states}");
    let _ = child.kill();
    let _ = child.wait();
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
