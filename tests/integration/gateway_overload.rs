//! Overload: `streamgate serve` (its own process, so its memory can be read) in front of a
//! model taking 20 ms per call, with room for 32 inference requests in flight, driven by 64
//! clients in closed loops (twice what it admits). Excess requests are refused at once with
//! 503 and `Retry-After`, admitted ones keep the latency they have without load, admin routes
//! answer, and the gateway's peak memory stays close to its idle memory.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamgate::gateway::auth::key_hash_hex;

use crate::common::streamgate_bin;

const KEY: &str = "k-overload-canary";
const SLOTS: usize = 32;
const CLIENTS: usize = 64;

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `streamgate <args>` and returns it with the `url=` it prints once listening.
fn start(args: &[&str]) -> (Process, String) {
    let mut child = Command::new(streamgate_bin())
        .args(args)
        .args(["--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = Process(child);
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("exited before listening").unwrap();
        if let Some(url) = line.strip_prefix("url=") {
            break url.to_string();
        }
    };
    (process, url)
}

/// Peak and current resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Latencies of admitted (200) and refused (503) requests from `clients` closed loops.
async fn drive(url: &str, clients: usize, for_: Duration) -> (Vec<Duration>, Vec<Duration>) {
    let client = crate::common::http();
    let body =
        r#"{"inputs": [{"name": "amount", "datatype": "FP64", "shape": [1], "data": [1.5]}]}"#;
    let until = Instant::now() + for_;
    let loops = (0..clients).map(|_| {
        let (client, url) = (client.clone(), format!("{url}/v2/models/scorer/infer"));
        tokio::spawn(async move {
            let (mut ok, mut shed) = (Vec::new(), Vec::new());
            while Instant::now() < until {
                let started = Instant::now();
                let response = client.post(&url).bearer_auth(KEY).body(body).send().await;
                let elapsed = started.elapsed();
                match response
                    .map(|r| (r.status().as_u16(), r.headers().contains_key("retry-after")))
                {
                    Ok((200, _)) => ok.push(elapsed),
                    Ok((503, true)) => {
                        shed.push(elapsed);
                        // A client honouring Retry-After would wait; these retry at once to
                        // keep the pressure on, but yield so the loop does not starve others.
                        tokio::task::yield_now().await;
                    }
                    other => panic!("unexpected answer under overload: {other:?}"),
                }
            }
            (ok, shed)
        })
    });
    let mut ok = Vec::new();
    let mut shed = Vec::new();
    for result in futures::future::join_all(loops).await {
        let (o, s) = result.unwrap();
        ok.extend(o);
        shed.extend(s);
    }
    (ok, shed)
}

fn percentile(mut values: Vec<Duration>, p: f64) -> Duration {
    values.sort();
    values[((values.len() - 1) as f64 * p) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_twice_capacity_excess_is_shed_fast_and_memory_stays_bounded() {
    let (_model, model_url) =
        start(&["mock-model", "--listen", "127.0.0.1:0", "--latency", "20ms"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
listen: 127.0.0.1:0
max_concurrent_infer: {SLOTS}
models:
  scorer:
    versions:
      - name: v1
        endpoint: {{ protocol: oip_v2, replicas: ["{model_url}"] }}
    max_in_flight_per_replica: 256
auth:
  api_keys:
    - {{ name: load, sha256: {key}, scopes: ["infer:*", "admin:read"] }}
"#,
            key = key_hash_hex(KEY),
        ),
    )
    .unwrap();
    let (gateway, url) = start(&["serve", "--config", config.to_str().unwrap()]);
    let pid = gateway.0.id();

    // Within capacity: the latency admitted requests should keep.
    let (calm, calm_shed) = drive(&url, SLOTS / 2, Duration::from_secs(2)).await;
    assert!(calm_shed.is_empty(), "shed below capacity");
    let calm_p99 = percentile(calm.clone(), 0.99);
    let (_, idle_rss) = memory_kib(pid);

    // Twice what it admits, while an operator reads the admin API.
    let admin = {
        let url = url.clone();
        tokio::spawn(async move {
            let client = crate::common::http();
            let mut slowest = Duration::ZERO;
            for _ in 0..20 {
                let started = Instant::now();
                let status = client
                    .get(format!("{url}/admin/models"))
                    .bearer_auth(KEY)
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 200);
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            slowest
        })
    };
    let (ok, shed) = drive(&url, CLIENTS, Duration::from_secs(4)).await;
    let admin_slowest = admin.await.unwrap();
    let (peak_rss, _) = memory_kib(pid);

    assert!(!shed.is_empty(), "nothing was shed at twice the capacity");
    let ok_p50 = percentile(ok.clone(), 0.5);
    let ok_p99 = percentile(ok.clone(), 0.99);
    let shed_p99 = percentile(shed.clone(), 0.99);
    eprintln!(
        "calm p99 {calm_p99:?}; overload: {} admitted (p50 {ok_p50:?}, p99 {ok_p99:?}), {} shed (p99 {shed_p99:?}); admin slowest {admin_slowest:?}; RSS idle {idle_rss} KiB, peak {peak_rss} KiB",
        ok.len(),
        shed.len()
    );
    // The model's 20 ms bounds admitted throughput at SLOTS / 20 ms; the gateway must not
    // fall far below it while refusing the rest.
    let capacity = SLOTS as f64 / 0.020 * 4.0;
    assert!(
        ok.len() as f64 > capacity * 0.5,
        "only {} admitted of a capacity of {capacity:.0}",
        ok.len()
    );
    // Refusals come at once: faster than any admitted call (which waits 20 ms at the model).
    assert!(
        shed_p99 < ok_p50,
        "shed p99 {shed_p99:?} vs admitted p50 {ok_p50:?}"
    );
    // Admitted calls keep their latency: no queue builds up in front of the model. (Generous
    // bounds: two cores are shared with the load generator and the model.)
    assert!(
        ok_p99 < calm_p99 * 3 + Duration::from_millis(50),
        "admitted p99 {ok_p99:?} under overload vs {calm_p99:?} without"
    );
    assert!(
        admin_slowest < Duration::from_millis(500),
        "admin took {admin_slowest:?}"
    );
    // Bounded memory: refused requests hold nothing; at most the admitted ones and buffers.
    assert!(
        peak_rss < idle_rss + 64 * 1024,
        "peak RSS {peak_rss} KiB vs {idle_rss} KiB idle"
    );
}
