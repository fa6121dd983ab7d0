//! Data-driven golden tests of decode → SQL → encode.
//!
//! Each `tests/data/sql/CASE.yaml` gives a record schema (`columns:` as in a pipeline file, or
//! `schema:` naming an `.avsc` / `.json` file relative to that folder), an optional `sql:` and
//! `input:` payloads (strings, or objects with `payload`, `key`, `headers`). Records get
//! deterministic metadata: topic `transactions`, partition `i % 3`, offset `100 + i`,
//! timestamp `2026-01-01T00:00:00Z + i s`, key `k{i}` and header `trace: t{i}` unless given.
//!
//! `CASE.expected` holds the output columns and types, the input record of each output row, one JSON line per output row, and one
//! `# failed row N: class` line per input record that failed (decode or SQL). Regenerate with
//! `UPDATE_GOLDEN=1 cargo test --test integration sql_golden`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use streamgate::batch::{Position, RawRecord};
use streamgate::codec::RecordFailure;
use streamgate::codec::json::{JsonDecoder, encode_rows};
use streamgate::codec::metadata::input_table_schema;
use streamgate::codec::schema::load_record_schema;
use streamgate::spec::{ColumnSpec, JsonFormatSpec};
use streamgate::transform::sql::SqlTransform;

/// One golden case file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// What the case shows (for readers).
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    /// Inline record columns.
    #[serde(default)]
    columns: Option<Vec<ColumnSpec>>,
    /// Or a schema file relative to the cases folder.
    #[serde(default)]
    schema: Option<String>,
    /// The query; none passes record columns through.
    #[serde(default)]
    sql: Option<String>,
    /// The records.
    input: Vec<Input>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Payload(String),
    Record(RecordInput),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordInput {
    payload: String,
    /// Message key; `null` for none. Defaults to `k{i}`.
    #[serde(default, deserialize_with = "present")]
    key: Option<Option<String>>,
    /// Headers (replace the default `trace` header).
    #[serde(default)]
    headers: Option<BTreeMap<String, Option<String>>>,
}

/// Distinguishes `key: null` (no key) from a missing `key` (the default key).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sql")
}

fn record(i: usize, input: &Input) -> RawRecord {
    let (payload, key, headers) = match input {
        Input::Payload(p) => (p.clone(), None, None),
        Input::Record(r) => (r.payload.clone(), r.key.clone(), r.headers.clone()),
    };
    let key = match key {
        None => Some(format!("k{i}").into_bytes()),
        Some(k) => k.map(String::into_bytes),
    };
    let headers = match headers {
        None => vec![("trace".to_string(), Some(format!("t{i}").into_bytes()))],
        Some(h) => h
            .into_iter()
            .map(|(k, v)| (k, v.map(String::into_bytes)))
            .collect(),
    };
    RawRecord {
        key,
        payload: payload.into_bytes(),
        headers,
        // 2026-01-01T00:00:00Z plus i seconds.
        timestamp_ms: Some(1_767_225_600_000 + i as i64 * 1000),
        position: Position {
            topic: "transactions".into(),
            partition: (i % 3) as i32,
            offset: 100 + i as i64,
        },
    }
}

/// Runs one case and renders its expected-file text.
async fn run_case(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read: {e}"))?;
    let case: Case = serde_yaml_ng::from_str(&text).map_err(|e| format!("parse: {e}"))?;
    let format = JsonFormatSpec {
        schema: case.schema.clone(),
        columns: case.columns.clone(),
    };
    let record_schema = load_record_schema(&format, &cases_dir()).map_err(|e| e.to_string())?;
    let decoder = JsonDecoder::try_new(record_schema.clone()).map_err(|e| e.to_string())?;
    let sql = SqlTransform::new(case.sql.as_deref(), input_table_schema(&record_schema))
        .await
        .map_err(|e| e.to_string())?;

    let records: Vec<RawRecord> = case
        .input
        .iter()
        .enumerate()
        .map(|(i, input)| record(i, input))
        .collect();
    let decoded = decoder.decode(&records);
    let out = sql.apply(decoded.batch.clone()).await;
    let encoded = encode_rows(&out.batch).map_err(|e| e.to_string())?;

    let mut failures: Vec<RecordFailure> = decoded.failures.clone();
    for f in &out.failures {
        let Some(&record_index) = decoded.rows.get(f.index) else {
            return Err(format!("SQL failure for unknown row {}", f.index));
        };
        failures.push(RecordFailure {
            index: record_index as usize,
            ..f.clone()
        });
    }
    failures.sort_by_key(|f| f.index);

    let mut rendered = String::new();
    let columns: Vec<String> = sql
        .output_schema()
        .fields()
        .iter()
        .map(|f| {
            let null = if f.is_nullable() { "" } else { " not null" };
            format!("{}: {}{null}", f.name(), f.data_type())
        })
        .collect();
    let _ = writeln!(rendered, "# columns: {}", columns.join(", "));
    let sources: Vec<String> = out
        .rows
        .iter()
        .map(|&r| match decoded.rows.get(r as usize) {
            Some(record_index) => record_index.to_string(),
            None => "?".into(),
        })
        .collect();
    let _ = writeln!(rendered, "# rows from input: {}", sources.join(" "));
    for i in 0..encoded.len() {
        match encoded.row(i) {
            Ok(json) => {
                let _ = writeln!(rendered, "{}", String::from_utf8_lossy(json));
            }
            Err(why) => {
                let _ = writeln!(rendered, "# row {i} not encodable: {why}");
            }
        }
    }
    for f in failures {
        let _ = writeln!(rendered, "# failed row {}: {}", f.index, f.class);
    }
    Ok(rendered)
}

#[tokio::test]
async fn sql_golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/data/sql exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "expected at least 8 golden cases");

    let mut problems = Vec::new();
    for case in &cases {
        let name = case
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expected_path = case.with_extension("expected");
        let actual = match run_case(case).await {
            Ok(actual) => actual,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        if update {
            std::fs::write(&expected_path, &actual).expect("write expected file");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            problems.push(format!(
                "{name}: output differs from {} (UPDATE_GOLDEN=1 to regenerate)\n--- \
                 expected\n{expected}--- actual\n{actual}",
                expected_path.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
