//! The cost of TLS to a model endpoint: the same single-row OIP v2 infer requests to the mock
//! model server over http and over https (a private CA in the endpoint's `tls.ca_file`),
//! through Streamgate's upstream client with keep-alive connections, in alternating rounds.
//!
//! Client and server run in this process (the mock serves TLS with rustls too), so the CPU
//! per request counts TLS at both ends: an upper bound of what the client pays.
//!
//! Prints a table and writes benches/RESULTS-https.md. `BENCH_REQUESTS` (default 20,000 per
//! round), `BENCH_RUNS` (rounds, default 3) and `BENCH_CONCURRENCY` (requests in flight,
//! default 8) override the sizes. Run with `cargo bench --bench https_upstream`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use streamgate::inference::protocol::transport::Upstream;
use streamgate::testing::mock_model::{MockModel, MockModelConfig};
use streamgate::tls::client::{ClientTlsOptions, ConfiguredFile};
use tokio_rustls::rustls;

mod support;
use support::*;

const BODY: &str = r#"{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1.5]}],"outputs":[{"name":"score"}]}"#;

/// A CA, and a server configuration for `127.0.0.1` signed by it; the CA's PEM file is written
/// to `dir`.
fn server_tls(dir: &Path) -> rustls::ServerConfig {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap()
}

struct Round {
    seconds: f64,
    cpu_seconds: f64,
    requests: u64,
}

impl Round {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn cpu_us_per_request(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.requests as f64
    }
}

/// `requests` infer calls to `base`, `concurrency` at a time.
async fn round(upstream: &Upstream, base: &str, requests: u64, concurrency: usize) -> Round {
    let url = format!("{base}/v2/models/m/infer");
    let cpu = cpu_seconds();
    let start = Instant::now();
    futures::stream::iter(0..requests)
        .map(|_| upstream.post_json(&url, BODY.to_string(), &[], None))
        .buffer_unordered(concurrency)
        .for_each(|answer| async move {
            answer.expect("an answer from the mock model");
        })
        .await;
    Round {
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds() - cpu,
        requests,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let requests = env_u64("BENCH_REQUESTS", 20_000);
    let rounds = env_u64("BENCH_RUNS", 3).max(1);
    let concurrency = env_u64("BENCH_CONCURRENCY", 8) as usize;
    let load_before = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().unwrap();
    let (plain_rounds, tls_rounds) = runtime.block_on(async {
        let plain = MockModel::start(MockModelConfig::default()).await.unwrap();
        let tls = MockModel::start_tls(MockModelConfig::default(), server_tls(dir.path()))
            .await
            .unwrap();
        let http = Upstream::shared();
        let https = Upstream::with_tls(&ClientTlsOptions {
            origin: "bench".into(),
            ca_file: Some(ConfiguredFile {
                configured: "ca.pem".into(),
                path: dir.path().join("ca.pem"),
            }),
            ..Default::default()
        })
        .expect("TLS client");
        // Warm-up: connections open, handshakes done (keep-alive from then on).
        round(&http, &plain.url(), 500, concurrency).await;
        round(&https, &tls.url(), 500, concurrency).await;
        let (mut p, mut t) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            eprintln!("round {}/{rounds}", r + 1);
            p.push(round(&http, &plain.url(), requests, concurrency).await);
            t.push(round(&https, &tls.url(), requests, concurrency).await);
        }
        (p, t)
    });
    let load_after = load_average();

    let cpu = |rs: &[Round]| median(rs.iter().map(Round::cpu_us_per_request).collect());
    let rate = |rs: &[Round]| median(rs.iter().map(Round::per_second).collect());
    let mut table = String::new();
    writeln!(
        table,
        "| Upstream | Requests/s (median) | CPU-µs per request (median) | Rounds, CPU-µs per request |"
    )
    .unwrap();
    writeln!(table, "|---|---:|---:|---|").unwrap();
    for (name, rs) in [
        ("http", &plain_rounds),
        ("https (TLS 1.3, keep-alive)", &tls_rounds),
    ] {
        writeln!(
            table,
            "| {name} | {:.0} | {:.1} | {} |",
            rate(rs),
            cpu(rs),
            rs.iter()
                .map(|r| format!("{:.1}", r.cpu_us_per_request()))
                .collect::<Vec<_>>()
                .join(", ")
        )
        .unwrap();
    }
    writeln!(table).unwrap();
    writeln!(
        table,
        "- https / http CPU per request: **{:.2}×** (target ≤ 1.2), client and server TLS both counted; requests/s {:.2}×",
        cpu(&tls_rounds) / cpu(&plain_rounds),
        rate(&tls_rounds) / rate(&plain_rounds)
    )
    .unwrap();
    println!("\n{table}");
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let results = format!(
        "# TLS to a model endpoint\n\n\
         Produced by `cargo bench --bench https_upstream` (benches/https_upstream.rs); do not \
         edit by hand.\n\n\
         - Date: {date}\n\
         - Machine: {cores} cores (`nproc`), {cpu}; load average before {load_before}, after \
         {load_after}\n\
         - {requests} single-row OIP v2 infer requests per round, {concurrency} in flight, \
         {rounds} rounds alternating http and https, after 500 warm-up requests each\n\n\
         {table}\n\
         ## Method\n\n\
         - Both endpoints are the in-tree mock model server in this process, one serving HTTP, \
         one HTTPS with a certificate from a CA made for the run; Streamgate's upstream client \
         (`Upstream::shared()` and `Upstream::with_tls` with `ca_file`) sends the requests with \
         keep-alive connections, as a pipeline's model calls do.\n\
         - CPU: user+system ticks of the whole process (client and server) from /proc over each \
         round, so TLS is counted at both ends.\n",
        date = date(),
        cpu = cpu_model(),
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/RESULTS-https.md");
    std::fs::write(&path, results).expect("write RESULTS-https.md");
    eprintln!("wrote {}", path.display());
}
