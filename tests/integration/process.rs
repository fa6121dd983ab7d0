//! Helpers for tests that run `streamgate` as a separate process: the embedded broker in its
//! own process (so the gateway can be killed without killing the broker) and gateway runs.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{streamgate_bin, wait_until};

/// `streamgate broker` in a child process; killed on drop.
pub(crate) struct BrokerProcess {
    child: Child,
    pub bootstrap: String,
}

impl BrokerProcess {
    /// Starts a broker with `topics` (name, partitions) and waits for its address.
    pub(crate) fn start(topics: &[(&str, i32)]) -> Self {
        let mut cmd = Command::new(streamgate_bin());
        cmd.arg("broker")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, partitions) in topics {
            cmd.arg("--topic").arg(format!("{name}:{partitions}"));
        }
        let mut child = cmd.spawn().expect("spawn broker");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("broker address");
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap.servers=")
            .unwrap_or_else(|| panic!("unexpected broker output {line:?}"))
            .to_string();
        BrokerProcess { child, bootstrap }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a pipeline file into `dir` and returns its path.
pub(crate) fn write_pipeline(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Absolute path of the example transaction schema.
pub(crate) fn transaction_schema() -> String {
    format!("{}/schemas/transaction.avsc", env!("CARGO_MANIFEST_DIR"))
}

/// Starts `streamgate run <pipeline>` with an ephemeral admin port; logs go to `log`.
pub(crate) fn start_gateway(pipeline: &Path, log: &Path, stdout: Stdio) -> Child {
    start_gateway_with_env(pipeline, log, stdout, &[])
}

/// [`start_gateway`] with more environment variables (secrets the pipeline file names).
pub(crate) fn start_gateway_with_env(
    pipeline: &Path,
    log: &Path,
    stdout: Stdio,
    env: &[(&str, &str)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(streamgate_bin())
        .arg("run")
        .arg(pipeline)
        .args(["--admin-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(stdout)
        .stderr(log)
        .spawn()
        .expect("spawn gateway")
}

/// Sends SIGTERM.
pub(crate) fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The admin address a gateway started by [`start_gateway`] logged to `log`.
pub(crate) fn admin_addr(log: &Path) -> String {
    let mut addr = None;
    wait_until(
        "admin address in the log",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            addr = text
                .lines()
                .find(|l| l.contains("admin server listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .map(|a| a.split_whitespace().next().unwrap_or("").to_string());
            addr.is_some()
        },
    );
    addr.unwrap()
}

/// `GET path` on the admin address: the whole HTTP/1.0 answer, headers included.
pub(crate) fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// Sum of every series of metric `name` on the admin address.
pub(crate) fn metric(addr: &str, name: &str) -> u64 {
    let body = http_get(addr, "/metrics");
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
