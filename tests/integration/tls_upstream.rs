//! Model endpoints over HTTPS: the mock model server behind TLS with certificates generated in
//! the test (a private CA, the server's certificate for `localhost` and `127.0.0.1`, a client
//! certificate), called through the compiled pipeline's real inference stage. Exact scores
//! with `tls.ca_file`, mutual TLS, `tls.server_name`, and one clear error for each certificate
//! problem: unknown CA, wrong host, expired, client certificate missing.

use std::collections::HashSet;
use std::sync::Arc;

use rcgen::{CertificateParams, DnType, KeyPair};
use streamgate::inference::StageOutput;
use streamgate::telemetry::Metrics;
use streamgate::testing::mock_model::{MockModel, MockModelConfig};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::common::pki::{Pki, pki};
use crate::inference::{pipeline, rows, stage};

/// A server certificate signed by the test CA: `names`, valid until `not_after`.
fn server_certificate(
    pki: &Pki,
    names: &[&str],
    not_after: Option<time::OffsetDateTime>,
) -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].to_string());
    if let Some(end) = not_after {
        params.not_before = end - time::Duration::days(30);
        params.not_after = end;
    }
    let cert = params.signed_by(&key, &pki.ca).unwrap();
    (cert.der().clone(), key)
}

/// A rustls server configuration presenting `cert`; requiring a client certificate signed by
/// the test CA when `mutual`.
fn server_config(
    pki: &Pki,
    cert: CertificateDer<'static>,
    key: &KeyPair,
    mutual: bool,
) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if mutual {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    builder.with_single_cert(vec![cert], key).unwrap()
}

/// An HTTPS mock replica presenting a certificate for `names`.
async fn https_mock(pki: &Pki, names: &[&str], mutual: bool) -> MockModel {
    let (cert, key) = server_certificate(pki, names, None);
    MockModel::start_tls(
        MockModelConfig::default(),
        server_config(pki, cert, &key, mutual),
    )
    .await
    .unwrap()
}

/// `models:` YAML of model `m`: one OIP v2 version over `url` with `tls` settings (a YAML
/// flow mapping, or empty for none).
fn models(url: &str, tls: &str) -> String {
    let tls = if tls.is_empty() {
        String::new()
    } else {
        format!(", tls: {tls}")
    };
    format!(
        "  m:\n    versions:\n      - name: v1\n        endpoint: {{ protocol: oip_v2, replicas: [\"{url}\"]{tls} }}\n    retry: {{ max_attempts: 1 }}\n"
    )
}

/// Scores 10 rows through model `m` (`x = id`, so the mock's score is the id).
async fn score(models: &str) -> StageOutput {
    let metrics = Metrics::new();
    let (compiled, stage) = stage(&pipeline(models, ""), &metrics).await;
    stage
        .apply(rows(&compiled, 0, 10, 10, &HashSet::new()).await)
        .await
}

fn assert_scored(out: &StageOutput) {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Float64Type;
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let batch = &out.batch;
    let scores = batch
        .column(batch.schema().index_of("s").unwrap())
        .as_primitive::<Float64Type>();
    for row in 0..10 {
        assert_eq!(scores.value(row), row as f64, "row {row}");
    }
}

/// The error of one call of model `m`'s only version (a pipeline holds its batch on such an
/// error, as for a model that is down, and logs this message).
async fn failure(models: &str) -> String {
    use datafusion::arrow::array::{ArrayRef, Float64Array};
    use streamgate::inference::protocol::{Contract, OutputBinding, Selector};
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/test.yaml");
    let loaded = streamgate::spec::load_str(&pipeline(models, ""), &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let version = &compiled.models["m"]["v1"];
    let inputs = datafusion::arrow::array::RecordBatch::try_from_iter([(
        "x",
        Arc::new(Float64Array::from(vec![1.0, 2.0])) as ArrayRef,
    )])
    .unwrap();
    let contract = Contract {
        inputs: vec!["x".into()],
        outputs: vec![OutputBinding {
            column: "s".into(),
            selector: Selector::Tensor {
                name: "score".into(),
                index: None,
            },
            data_type: streamgate::spec::OutputType::Float64,
        }],
    };
    let e = match version
        .backend
        .call(&version.replicas[0], &inputs, &contract)
        .await
    {
        Ok(_) => panic!("the call succeeded"),
        Err(e) => e,
    };
    assert_eq!(
        e.kind,
        streamgate::inference::ErrorKind::Misconfigured,
        "{e}"
    );
    assert!(
        e.is_outage(),
        "the pipeline holds the batch instead of dead-lettering it"
    );
    e.message.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_model_with_a_private_ca_scores_exactly() {
    let pki = pki();
    let mock = https_mock(&pki, &["localhost", "127.0.0.1"], false).await;
    assert!(mock.url().starts_with("https://"));
    let tls = format!("{{ ca_file: \"{}\" }}", pki.file("ca.pem"));
    assert_scored(&score(&models(&mock.url(), &tls)).await);
    assert_eq!(mock.rows(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate_and_says_when_one_is_missing() {
    let pki = pki();
    let mock = https_mock(&pki, &["localhost", "127.0.0.1"], true).await;
    let with_cert = format!(
        "{{ ca_file: \"{}\", client_cert: \"{}\", client_key: \"{}\" }}",
        pki.file("ca.pem"),
        pki.file("client.pem"),
        pki.file("client-key.pem")
    );
    assert_scored(&score(&models(&mock.url(), &with_cert)).await);

    let without = format!("{{ ca_file: \"{}\" }}", pki.file("ca.pem"));
    let message = failure(&models(&mock.url(), &without)).await;
    assert!(
        message.contains("requires a client certificate") && message.contains("tls.client_cert"),
        "{message}"
    );
    let port = mock.addr().port();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")),
        "names the endpoint: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_certificate_problem_has_its_own_clear_error() {
    let pki = pki();
    let ca = format!("ca_file: \"{}\"", pki.file("ca.pem"));

    // Unknown CA: the web PKI roots alone do not trust the test CA.
    let mock = https_mock(&pki, &["localhost", "127.0.0.1"], false).await;
    let message = failure(&models(&mock.url(), "")).await;
    assert!(
        message.contains("not signed by a trusted CA") && message.contains("tls.ca_file"),
        "{message}"
    );

    // Wrong host: the certificate names another host than the URL's.
    let elsewhere = https_mock(&pki, &["models.example"], false).await;
    let message = failure(&models(&elsewhere.url(), &format!("{{ {ca} }}"))).await;
    assert!(
        message.contains("not valid for this host name") && message.contains("tls.server_name"),
        "{message}"
    );
    // ... which `server_name` fixes for a replica addressed by IP.
    let named = format!("{{ {ca}, server_name: models.example }}");
    assert_scored(&score(&models(&elsewhere.url(), &named)).await);

    // Expired.
    let (cert, key) = server_certificate(
        &pki,
        &["localhost", "127.0.0.1"],
        Some(time::OffsetDateTime::now_utc() - time::Duration::days(1)),
    );
    let expired = MockModel::start_tls(
        MockModelConfig::default(),
        server_config(&pki, cert, &key, false),
    )
    .await
    .unwrap();
    let message = failure(&models(&expired.url(), &format!("{{ {ca} }}"))).await;
    assert!(message.contains("certificate has expired"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_tls_file_is_refused_at_compile_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let yaml = pipeline(
        &models(
            "https://127.0.0.1:1",
            &format!("{{ ca_file: \"{}\" }}", missing.display()),
        ),
        "",
    );
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/test.yaml");
    let loaded = streamgate::spec::load_str(&yaml, &file, &|_| None).unwrap();
    let err = match streamgate::plan::compile(loaded).await {
        Ok(_) => panic!("compiled with a missing CA file"),
        Err(e) => format!("{e}"),
    };
    assert!(
        err.contains("models.m.versions[0].endpoint") && err.contains("tls.ca_file"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_in_a_model_registry_file_are_relative_to_that_file() {
    let pki = pki();
    let mock = https_mock(&pki, &["localhost", "127.0.0.1"], false).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("shared")).unwrap();
    std::fs::copy(pki.file("ca.pem"), dir.path().join("shared/ca.pem")).unwrap();
    std::fs::write(
        dir.path().join("shared/models.yaml"),
        format!("models:\n{}", models(&mock.url(), "{ ca_file: ca.pem }")),
    )
    .unwrap();
    let yaml = pipeline("", "").replace(
        "models:\n\ninference:",
        "model_registry: shared/models.yaml\ninference:",
    );
    assert!(yaml.contains("model_registry"), "{yaml}");
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let loaded = streamgate::spec::load_file(&file).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let metrics = Metrics::new();
    let registry = streamgate::inference::ModelRegistry::build(
        &compiled.pipeline.spec.models,
        &compiled.models,
        &metrics.models,
    );
    let stage = streamgate::inference::InferenceStage::start(
        &compiled.steps,
        &registry,
        compiled.output_schema(),
    )
    .unwrap();
    assert_scored(
        &stage
            .apply(rows(&compiled, 0, 10, 10, &HashSet::new()).await)
            .await,
    );
}
