//! Golden tests of the pipeline format: the generated JSON Schema and the exact error output of
//! invalid pipelines (`tests/data/invalid/NAME.yaml` → `NAME.expected`).
//!
//! After an intended change, regenerate with `UPDATE_GOLDEN=1 cargo test spec_golden` and
//! review the diff.

use std::fs;
use std::path::{Path, PathBuf};

use streamgate::spec::{self, SinkSpec, SourceSpec};

/// The secret value the fake environment holds; it must never be shown anywhere.
const CANARY: &str = "s3cret-canary";

/// The only environment the tests see.
fn fake_env(name: &str) -> Option<String> {
    match name {
        "KAFKA_PASSWORD" => Some(CANARY.to_string()),
        "MULTILINE_PASSWORD" => Some(format!("{CANARY}\nsecond line")),
        _ => None,
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// Compares `actual` to the golden file at `path` (relative to the crate), or rewrites it under
/// `UPDATE_GOLDEN=1`. Returns a description of the mismatch.
fn check_golden(path: &str, actual: &str) -> Option<String> {
    let file = manifest_dir().join(path);
    let expected = fs::read_to_string(&file).ok();
    if expected.as_deref() == Some(actual) {
        return None;
    }
    if updating() {
        fs::write(&file, actual).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        return None;
    }
    Some(match expected {
        None => format!("{path} is missing; actual:\n{actual}"),
        Some(expected) => {
            format!("{path} differs.\n--- expected\n{expected}\n--- actual\n{actual}")
        }
    })
}

#[test]
fn pipeline_schema_is_up_to_date() {
    let schema = streamgate::spec::json_schema::pipeline_json_schema();
    if let Some(mismatch) = check_golden("schemas/pipeline.schema.json", &schema) {
        panic!(
            "schemas/pipeline.schema.json is stale: the pipeline types changed. Run \
             `UPDATE_GOLDEN=1 cargo test pipeline_schema_is_up_to_date` and commit the result.\n\
             {mismatch}"
        );
    }
}

/// The names of the invalid pipelines, sorted.
fn invalid_cases() -> Vec<String> {
    let dir = manifest_dir().join("tests/data/invalid");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The error output of loading `tests/data/invalid/NAME.yaml`, one error per line.
fn load_error(name: &str) -> spec::SpecErrors {
    let relative = format!("tests/data/invalid/{name}.yaml");
    let text = fs::read_to_string(manifest_dir().join(&relative)).unwrap();
    match spec::load_str(&text, Path::new(&relative), &fake_env) {
        Ok(_) => panic!("{relative} loaded without errors but is meant to be invalid"),
        Err(errors) => errors,
    }
}

#[test]
fn invalid_pipelines_report_golden_errors() {
    let cases = invalid_cases();
    assert!(cases.len() >= 15, "only {} invalid cases", cases.len());
    let mut mismatches = Vec::new();
    for name in &cases {
        let errors = load_error(name);
        let output = errors.to_string() + "\n";
        if let Some(mismatch) =
            check_golden(&format!("tests/data/invalid/{name}.expected"), &output)
        {
            mismatches.push(mismatch);
        }
    }
    // Every golden file belongs to a case.
    for entry in fs::read_dir(manifest_dir().join("tests/data/invalid")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "expected") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if !cases.contains(&stem) {
                mismatches.push(format!("{} has no matching .yaml", path.display()));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} golden error file(s) differ; if the change is intended, run \
         `UPDATE_GOLDEN=1 cargo test invalid_pipelines_report_golden_errors` and review the \
         diff.\n\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
}

#[test]
fn every_semantic_error_is_reported_at_once() {
    let errors = load_error("many_errors");
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "version",
        "name",
        "source.bootstrap_servers",
        "source.topics[1]",
        "source.group_id",
        "source.batch.max_rows",
        "source.batch.max_age",
        "source.properties[\"bootstrap.servers\"]",
        "format.columns",
        "sql",
        "outputs[0].where",
        "outputs[0].sink.key",
        "outputs[1].name",
        "outputs[1].sink.path",
        "on_error",
        "processing.workers",
        "processing.queued_batches",
        "processing.drain_timeout",
    ] {
        assert!(
            paths.contains(&expected),
            "no error at {expected}: {errors}"
        );
    }
}

/// Errors inside `type`-tagged components (like `bad_duration`, under `source`) have no
/// reliable position (serde buffers tagged content) and are reported by path only.
#[test]
fn parse_errors_have_line_and_column() {
    for name in ["yaml_syntax", "unknown_field_in_sink", "wrong_type"] {
        let errors = load_error(name);
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert!(errors.0[0].line_column.is_some(), "{name}: {errors}");
    }
}

const VALID_WITH_SECRETS: &str = r#"
name: orders
source:
  type: kafka
  bootstrap_servers: broker:9093
  topics: [orders]
  group_id: streamgate
  security:
    protocol: sasl_ssl
    tls:
      ca_file: ca.pem
      cert_file: client.pem
      key_file: client.key
      key_password: ${KAFKA_PASSWORD}
    sasl:
      mechanism: scram_sha_256
      username: streamgate
      password: ${KAFKA_PASSWORD}
format:
  type: json
  columns:
    - { name: id, type: string }
outputs:
  - name: out
    sink:
      type: kafka
      bootstrap_servers: other:9093
      topic: orders.out
      security:
        protocol: sasl_plaintext
        sasl: { mechanism: plain, username: u, password: "${KAFKA_PASSWORD}" }
"#;

#[test]
fn secrets_never_appear_in_errors_or_debug_output() {
    let file = Path::new("pipeline.yaml");
    let loaded = spec::load_str(VALID_WITH_SECRETS, file, &fake_env).unwrap();

    // The value is there for the client library...
    let SourceSpec::Kafka(source) = &loaded.spec.source else {
        panic!("kafka source expected")
    };
    let security = source.security.as_ref().unwrap();
    assert_eq!(security.sasl.as_ref().unwrap().password.expose(), CANARY);
    let tls = security.tls.as_ref().unwrap();
    assert_eq!(tls.key_password.as_ref().unwrap().expose(), CANARY);
    let SinkSpec::Kafka(sink) = &loaded.spec.outputs[0].sink else {
        panic!("kafka sink expected")
    };
    let sink_sasl = sink.security.as_ref().unwrap().sasl.as_ref().unwrap();
    assert_eq!(sink_sasl.password.expose(), CANARY);

    // ...and nowhere else.
    for shown in [
        format!("{loaded:?}"),
        format!("{:#?}", loaded.spec),
        serde_json::to_string(&loaded.spec).unwrap(),
    ] {
        assert!(!shown.contains(CANARY), "secret leaked: {shown}");
        assert!(!shown.contains("s3cret"), "secret leaked: {shown}");
    }

    // Errors about a secret name the variable, never its value, even when other problems
    // are reported next to it.
    let broken = VALID_WITH_SECRETS.replace("sasl_ssl", "ssl").replace(
        "password: ${KAFKA_PASSWORD}\nformat",
        "password: ${MULTILINE_PASSWORD}\nformat",
    );
    let errors = spec::load_str(&broken, file, &fake_env).unwrap_err();
    assert!(errors.0.len() >= 2, "{errors}");
    assert!(
        errors.to_string().contains("MULTILINE_PASSWORD"),
        "{errors}"
    );
    for shown in [errors.to_string(), format!("{errors:?}")] {
        assert!(!shown.contains("s3cret"), "secret leaked: {shown}");
    }

    // Nor in any golden error.
    for name in invalid_cases() {
        let errors = load_error(&name);
        for shown in [errors.to_string(), format!("{errors:?}")] {
            assert!(!shown.contains("s3cret"), "{name}: secret leaked: {shown}");
        }
    }
}
