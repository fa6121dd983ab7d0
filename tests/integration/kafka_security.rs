//! Kafka connection security as far as it can be exercised here: librdkafka's mock cluster
//! (the only Kafka broker available on this machine) speaks neither TLS nor SASL, so these
//! tests check what the client does with the settings: a TLS client never falls back to
//! plaintext, unreadable certificate files are clear errors, and secrets are never echoed.

use std::time::Duration;

use streamgate::demo::EmbeddedBroker;
use streamgate::spec::{
    KafkaSecurity, KafkaSourceSpec, SaslMechanism, SaslSpec, Secret, SecurityProtocol, TlsSpec,
};

fn spec(bootstrap: &str, security: KafkaSecurity) -> KafkaSourceSpec {
    let yaml = format!(
        "bootstrap_servers: {bootstrap}\ntopics: [sec-in]\ngroup_id: sec\nproperties: {{ socket.connection.setup.timeout.ms: \"2000\" }}\n"
    );
    let mut spec: KafkaSourceSpec = serde_yaml_ng::from_str(&yaml).unwrap();
    spec.security = Some(security);
    spec
}

fn tls(ca_file: Option<String>) -> TlsSpec {
    TlsSpec {
        ca_file,
        cert_file: None,
        key_file: None,
        key_password: None,
        verify_hostname: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_never_talks_plaintext_to_a_plaintext_broker() {
    let broker = EmbeddedBroker::start(&[("sec-in", 1)]).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    // Sanity: the same check succeeds without TLS.
    let plain = spec(
        &bootstrap,
        KafkaSecurity {
            protocol: SecurityProtocol::Plaintext,
            tls: None,
            sasl: None,
        },
    );
    streamgate::kafka::check_topics(&plain, Duration::from_secs(10))
        .await
        .unwrap();

    let certs = tempfile::tempdir().unwrap();
    let ca = certs.path().join("ca.pem");
    let issuer = rcgen::CertifiedIssuer::self_signed(
        {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p
        },
        rcgen::KeyPair::generate().unwrap(),
    )
    .unwrap();
    std::fs::write(&ca, issuer.pem()).unwrap();
    let secured = spec(
        &bootstrap,
        KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            tls: Some(tls(Some(ca.display().to_string()))),
            sasl: Some(SaslSpec {
                mechanism: SaslMechanism::ScramSha512,
                username: "svc".into(),
                password: Secret::new("canary-kafka-pw"),
            }),
        },
    );
    let err = streamgate::kafka::check_topics(&secured, Duration::from_secs(5))
        .await
        .unwrap_err();
    eprintln!("TLS against plaintext: {err}");
    assert!(err.contains("cannot reach brokers"), "{err}");
    assert!(!err.contains("canary"), "secret echoed: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ca_file_is_a_clear_error() {
    let secured = spec(
        "127.0.0.1:9",
        KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            tls: Some(tls(Some("/nonexistent/ca.pem".into()))),
            sasl: None,
        },
    );
    let metrics = streamgate::telemetry::Metrics::new();
    let err = streamgate::source::kafka::KafkaSource::new(
        &secured,
        metrics.pipeline("sec"),
        Duration::from_secs(1),
    )
    .err()
    .map(|e| e.to_string())
    .expect("refused");
    assert!(
        err.contains("ca.pem") || err.contains("ssl.ca.location"),
        "{err}"
    );
}
