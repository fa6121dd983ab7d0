//! Kafka connection security on Apache Kafka's own broker (see `common::real_kafka`): a SASL_SSL
//! listener with SCRAM-SHA-512 and PLAIN users and a mutual-TLS listener, certificates
//! generated per test. Pipelines are configured exactly as the README's `security` block shows
//! (the password from `${KAFKA_PASSWORD}`), run as `streamgate run` and checked with
//! `streamgate validate`. The right secret moves records end to end; a wrong one, a missing CA
//! or a missing client certificate is refused with a clear error, and the canary secrets never
//! appear in any output, log or metric.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::pki::{Pki, pki};
use crate::common::real_kafka::{RealKafka, Security};
use crate::common::{produce, streamgate_bin, topic_len, transactions, wait_until};
use crate::crash::{
    Extra, PARTITIONS, assert_none_lost, deliveries, pipeline_with,
    run_to_end_and_terminate_with_env, topics,
};
use crate::process::{admin_addr, http_get, start_gateway_with_env, write_pipeline};

/// SCRAM-SHA-512 password of user `svc`.
const SCRAM_PASSWORD: &str = "canary-scram-8Hq2Vx";
/// SASL/PLAIN password of user `app`.
const PLAIN_PASSWORD: &str = "canary-plain-3Kw9Rt";
/// What a misconfigured client sends instead.
const WRONG_PASSWORD: &str = "canary-wrong-5Zp1Lm";

fn assert_no_secret(what: &str, text: &str) {
    for secret in [SCRAM_PASSWORD, PLAIN_PASSWORD, WRONG_PASSWORD] {
        assert!(!text.contains(secret), "{what} shows a secret: {text}");
    }
}

fn secured_kafka(pki: &Pki) -> RealKafka {
    RealKafka::secured(&Security {
        pki,
        scram_users: vec![("svc".into(), SCRAM_PASSWORD.into())],
        plain_users: vec![("app".into(), PLAIN_PASSWORD.into())],
    })
}

/// `streamgate validate <file>` (which connects to the source's brokers): whether it passed,
/// and the verdict it printed (standard output; its logs on standard error are checked for
/// secrets too).
fn validate(file: &Path, password: &str) -> (bool, String) {
    let out = Command::new(streamgate_bin())
        .arg("validate")
        .arg(file)
        .env("KAFKA_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_no_secret("`streamgate validate`", &format!("{stdout}{stderr}"));
    (out.status.success(), stdout)
}

/// A pipeline file `name` in `dir` whose source (and so its sinks) use `security`.
fn secured_pipeline(dir: &Path, bootstrap: &str, name: &str, security: &str) -> PathBuf {
    write_pipeline(
        dir,
        name,
        &pipeline_with(
            bootstrap,
            name,
            &Extra {
                security,
                ..Extra::default()
            },
        ),
    )
}

/// Streams 2,000 records through `file` with `streamgate run` (KAFKA_PASSWORD=`password`) and
/// checks every one arrived; the harness reads and writes through the plaintext listener.
fn run_end_to_end(kafka: &RealKafka, file: &Path, name: &str, password: &str) {
    const N: u64 = 2_000;
    let plain = kafka.bootstrap();
    let (records, _) = transactions(N, 0.01);
    produce(plain, &format!("{name}-in"), PARTITIONS, &records);
    let log = file.with_extension("log");
    run_to_end_and_terminate_with_env(file, &log, plain, name, &[("KAFKA_PASSWORD", password)]);
    let duplicates = assert_none_lost(&deliveries(plain, name), N);
    assert_eq!(duplicates, 0);
    assert_no_secret("the gateway's log", &std::fs::read_to_string(&log).unwrap());
}

/// `streamgate run` with settings the broker refuses: it says why in its log (one of
/// `expected`), delivers nothing, and shows no secret in its log, metrics or readiness.
fn refused_run(kafka: &RealKafka, file: &Path, name: &str, password: &str, expected: &[&str]) {
    let plain = kafka.bootstrap();
    let output = format!("{name}-out");
    let before = topic_len(plain, &output, PARTITIONS);
    let (records, _) = transactions(100, 0.0);
    produce(plain, &format!("{name}-in"), PARTITIONS, &records);
    let log = file.with_extension("refused.log");
    let mut gateway =
        start_gateway_with_env(file, &log, Stdio::null(), &[("KAFKA_PASSWORD", password)]);
    let admin = admin_addr(&log);
    wait_until(
        &format!("the refusal ({expected:?}) in the log"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            expected.iter().any(|e| text.contains(e))
        },
    );
    for path in ["/metrics", "/readyz", "/pipelines"] {
        assert_no_secret(path, &http_get(&admin, path));
    }
    assert!(
        gateway.try_wait().unwrap().is_none(),
        "a refused connection is retried, not fatal"
    );
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    assert_eq!(
        topic_len(plain, &output, PARTITIONS),
        before,
        "nothing delivered"
    );
    assert_no_secret("the gateway's log", &std::fs::read_to_string(&log).unwrap());
}

/// `protocol: sasl_ssl` with the README's `tls` and `sasl` lines.
fn sasl_ssl(ca: Option<&str>, mechanism: &str, user: &str) -> String {
    let ca = ca.map(|ca| format!("ca_file: {ca}, ")).unwrap_or_default();
    format!(
        "  security:
    protocol: sasl_ssl
    tls: {{ {ca}verify_hostname: true }}
    sasl: {{ mechanism: {mechanism}, username: {user}, password: \"${{KAFKA_PASSWORD}}\" }}"
    )
}

#[test]
fn sasl_scram_and_plain_over_tls_need_the_right_secret() {
    let pki = pki();
    let kafka = secured_kafka(&pki);
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.file("ca.pem");
    for (mechanism, user, password, refusal) in [
        (
            "scram_sha_512",
            "svc",
            SCRAM_PASSWORD,
            "Authentication failed during authentication due to invalid credentials with SASL \
             mechanism SCRAM-SHA-512",
        ),
        (
            "plain",
            "app",
            PLAIN_PASSWORD,
            "Authentication failed: Invalid username or password",
        ),
    ] {
        let name = format!("sasl-{mechanism}").replace('_', "-");
        kafka.create_topics(&topics(&name));
        let security = sasl_ssl(Some(&ca), mechanism, user);
        let file = secured_pipeline(dir.path(), &kafka.sasl_ssl_bootstrap(), &name, &security);

        let (ok, text) = validate(&file, password);
        assert!(ok, "{mechanism} with the right password: {text}");
        run_end_to_end(&kafka, &file, &name, password);

        // The wrong password: `validate` fails and its verdict says why.
        let (ok, text) = validate(&file, WRONG_PASSWORD);
        assert!(!ok, "{mechanism} with a wrong password passed: {text}");
        assert!(
            text.contains("cannot reach brokers")
                && text.contains("SASL authentication error")
                && text.contains(refusal),
            "{mechanism}, wrong password: no clear reason in {text}"
        );
        refused_run(&kafka, &file, &name, WRONG_PASSWORD, &[refusal]);
    }
}

#[test]
fn tls_needs_the_ca_and_mutual_tls_needs_a_client_certificate() {
    let pki = pki();
    let kafka = secured_kafka(&pki);
    let dir = tempfile::tempdir().unwrap();
    let untrusted = "certificate verify failed";

    // Without `ca_file` the system store is used, which does not know the test CA: the
    // broker's certificate is refused before any password is sent.
    let name = "tls-no-ca";
    kafka.create_topics(&topics(name));
    let file = secured_pipeline(
        dir.path(),
        &kafka.sasl_ssl_bootstrap(),
        name,
        &sasl_ssl(None, "scram_sha_512", "svc"),
    );
    let (ok, text) = validate(&file, SCRAM_PASSWORD);
    assert!(!ok, "an untrusted broker certificate passed: {text}");
    assert!(text.contains(untrusted), "no clear reason in {text}");
    refused_run(&kafka, &file, name, SCRAM_PASSWORD, &[untrusted]);

    // Mutual TLS: the listener requires a client certificate signed by the CA.
    let mtls = |client_certificate: bool| {
        let cert = if client_certificate {
            format!(
                "cert_file: {}, key_file: {}, ",
                pki.file("client.pem"),
                pki.file("client-key.pem")
            )
        } else {
            String::new()
        };
        format!(
            "  security:
    protocol: ssl
    tls: {{ ca_file: {}, {cert}verify_hostname: true }}",
            pki.file("ca.pem")
        )
    };
    let name = "mtls";
    kafka.create_topics(&topics(name));
    let file = secured_pipeline(dir.path(), &kafka.mtls_bootstrap(), name, &mtls(true));
    let (ok, text) = validate(&file, "");
    assert!(ok, "mutual TLS with a client certificate: {text}");
    run_end_to_end(&kafka, &file, name, "");

    let name = "mtls-no-cert";
    kafka.create_topics(&topics(name));
    let file = secured_pipeline(dir.path(), &kafka.mtls_bootstrap(), name, &mtls(false));
    // The broker ends the handshake with a TLS alert (bad_certificate from Java's TLS 1.3).
    let no_certificate = ["alert bad certificate", "alert certificate required"];
    let (ok, text) = validate(&file, "");
    assert!(
        !ok,
        "mutual TLS without a client certificate passed: {text}"
    );
    assert!(
        no_certificate.iter().any(|e| text.contains(e)),
        "no clear reason in {text}"
    );
    refused_run(&kafka, &file, name, "", &no_certificate);
}
