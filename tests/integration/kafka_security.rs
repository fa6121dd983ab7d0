//! Kafka connection security on the embedded broker, fast and without Java. librdkafka's mock
//! cluster speaks neither TLS nor SASL, so TLS and mutual TLS are tested through a
//! TLS-terminating proxy that the mock cluster advertises as its address; SASL is checked from
//! the client side only: a TLS client never falls back to plaintext, unreadable certificate
//! files are clear errors, and secrets are never echoed. `real_kafka_security` exercises SASL
//! and TLS listeners of Apache Kafka's own broker.

use std::sync::Arc;
use std::time::Duration;

use streamgate::spec::{
    KafkaSecurity, KafkaSourceSpec, SaslMechanism, SaslSpec, Secret, SecurityProtocol, TlsSpec,
};
use streamgate::testing::EmbeddedBroker;

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
    streamgate::connect::kafka::check_topics(&plain, Duration::from_secs(10))
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
    let err = streamgate::connect::kafka::check_topics(&secured, Duration::from_secs(5))
        .await
        .unwrap_err()
        .to_string();
    eprintln!("TLS against plaintext: {err}");
    assert!(err.contains("cannot reach brokers"), "{err}");
    // The verdict says why, not only "broker transport failure": depending on timing
    // librdkafka reports the failed handshake or the reset connection during it.
    assert!(
        err.contains("SSL handshake failed") || err.contains("in state SSL_HANDSHAKE"),
        "{err}"
    );
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
        None,
    )
    .err()
    .map(|e| e.to_string())
    .expect("refused");
    assert!(
        err.contains("ca.pem") || err.contains("ssl.ca.location"),
        "{err}"
    );
}

/// A TLS-terminating proxy in front of a plaintext mock broker: the mock cluster advertises
/// the proxy's address, so every connection librdkafka makes goes through TLS. With
/// `client_ca`, the proxy requires a client certificate signed by it (mutual TLS).
struct TlsFrontedBroker {
    /// Owns the mock cluster.
    _producer: rdkafka::producer::BaseProducer,
    bootstrap: String,
}

fn tls_fronted_broker(
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
    client_ca: Option<&rcgen::Certificate>,
) -> TlsFrontedBroker {
    use rdkafka::producer::Producer;
    use tokio_rustls::rustls;
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .create()
        .unwrap();
    let cluster = unsafe {
        rdkafka_sys::rd_kafka_handle_mock_cluster(rdkafka::client::Client::native_ptr(
            producer.client(),
        ))
    };
    assert!(!cluster.is_null());
    let plain = unsafe {
        std::ffi::CStr::from_ptr(rdkafka_sys::rd_kafka_mock_cluster_bootstraps(cluster))
            .to_string_lossy()
            .into_owned()
    };
    let topic = std::ffi::CString::new("sec-in").unwrap();
    let err = unsafe { rdkafka_sys::rd_kafka_mock_topic_create(cluster, topic.as_ptr(), 1, 1) };
    assert_eq!(
        err,
        rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = std::ffi::CString::new("localhost").unwrap();
    unsafe {
        rdkafka_sys::rd_kafka_mock_broker_set_host_port(cluster, 1, host.as_ptr(), port as i32)
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der().clone()).unwrap();
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, plain) = (acceptor.clone(), plain.clone());
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(socket).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        eprintln!("TLS proxy: handshake refused: {e}");
                        return;
                    }
                };
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(&plain).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                }
            });
        }
    });
    TlsFrontedBroker {
        _producer: producer,
        bootstrap: format!("localhost:{port}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls_and_mutual_tls_reaches_the_broker() {
    let pki = crate::common::pki::pki();
    // TLS: the broker's certificate is verified against the CA, host name included.
    let broker = tls_fronted_broker(&pki.server, &pki.server_key, None);
    let with_ca = |cert: bool| KafkaSecurity {
        protocol: SecurityProtocol::Ssl,
        tls: Some(TlsSpec {
            ca_file: Some(pki.file("ca.pem")),
            cert_file: cert.then(|| pki.file("client.pem")),
            key_file: cert.then(|| pki.file("client-key.pem")),
            key_password: None,
            verify_hostname: true,
        }),
        sasl: None,
    };
    // Metadata (with the topic) arrives only once the broker was reached through TLS.
    streamgate::connect::kafka::check_topics(
        &spec(&broker.bootstrap, with_ca(false)),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    // Without the CA the broker's certificate is not trusted.
    assert!(
        streamgate::connect::kafka::check_topics(
            &spec(&broker.bootstrap, {
                let mut s = with_ca(false);
                s.tls.as_mut().unwrap().ca_file = None;
                s
            }),
            Duration::from_secs(5)
        )
        .await
        .is_err()
    );

    // Mutual TLS: the broker requires a client certificate.
    let mtls = tls_fronted_broker(&pki.server, &pki.server_key, Some(pki.ca.as_ref()));
    streamgate::connect::kafka::check_topics(
        &spec(&mtls.bootstrap, with_ca(true)),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(
        streamgate::connect::kafka::check_topics(
            &spec(&mtls.bootstrap, with_ca(false)),
            Duration::from_secs(5)
        )
        .await
        .is_err(),
        "no client certificate, no connection"
    );
}
