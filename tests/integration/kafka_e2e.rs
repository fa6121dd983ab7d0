//! End to end against the embedded broker: 100,000 JSON transactions, 1% malformed. The output
//! topic must hold exactly the transformed good records, the dead-letter topic exactly the
//! malformed ones with their context headers, and committed offsets must equal end offsets.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use streamgate::telemetry::Metrics;
use streamgate::testing::EmbeddedBroker;

use crate::common::{produce, read_all, spawn_pipeline, transactions, wait_committed};

const PARTITIONS: i32 = 16;
const RECORDS: u64 = 100_000;

fn pipeline_yaml(bootstrap: &str) -> String {
    format!(
        r#"
name: e2e
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [tx-in]
  group_id: e2e-group
  batch: {{ max_rows: 500, max_age: 10ms }}
format:
  type: json
  schema: ../schemas/transaction.avsc
sql: |
  SELECT transaction_id, card_id, amount, upper(country) AS country,
         amount > 1000 AS large, _partition AS src_partition, _offset AS src_offset
  FROM input
outputs:
  - name: out
    sink: {{ type: kafka, topic: tx-out, key: card_id }}
dead_letter: {{ type: kafka, topic: tx-dlq }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_with_one_percent_malformed() {
    let broker =
        EmbeddedBroker::start(&[("tx-in", PARTITIONS), ("tx-out", PARTITIONS), ("tx-dlq", 4)])
            .unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let (records, bad) = transactions(RECORDS, 0.01);
    assert_eq!(bad.len(), 1000);
    let positions = {
        let (b, r) = (bootstrap.clone(), records.clone());
        tokio::task::spawn_blocking(move || produce(&b, "tx-in", PARTITIONS, &r))
            .await
            .unwrap()
    };

    // As if the file were in pipelines/, so the schema path resolves like the examples'.
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/e2e.yaml");
    let loaded = streamgate::spec::load_str(&pipeline_yaml(&bootstrap), &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let metrics = Metrics::new();
    let (stop, task) = spawn_pipeline(compiled, &metrics);
    wait_committed(&bootstrap, "e2e-group", "tx-in", PARTITIONS).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let (b, out, dlq) = (bootstrap.clone(), "tx-out", "tx-dlq");
    let (outputs, dead) =
        tokio::task::spawn_blocking(move || (read_all(&b, out, PARTITIONS), read_all(&b, dlq, 4)))
            .await
            .unwrap();

    // Output: exactly the good records, transformed, each once.
    let bad_set: HashSet<usize> = bad.iter().copied().collect();
    assert_eq!(outputs.len(), records.len() - bad.len(), "output count");
    let mut seen = HashSet::new();
    for m in &outputs {
        let row: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let id: usize = row["transaction_id"].as_str().unwrap()[3..]
            .parse()
            .unwrap();
        assert!(
            !bad_set.contains(&id),
            "malformed record {id} reached the output"
        );
        assert!(seen.insert(id), "record {id} delivered twice");
        let input: serde_json::Value = serde_json::from_slice(&records[id].1).unwrap();
        assert_eq!(row["card_id"], input["card_id"]);
        assert_eq!(
            m.key.as_deref(),
            input["card_id"].as_str().map(str::as_bytes)
        );
        assert_eq!(row["amount"].as_f64(), input["amount"].as_f64());
        assert_eq!(
            row["country"].as_str().unwrap(),
            input["country"].as_str().unwrap().to_uppercase()
        );
        assert_eq!(
            row["large"].as_bool().unwrap(),
            input["amount"].as_f64().unwrap() > 1000.0
        );
        assert_eq!(
            row["src_partition"].as_i64().unwrap() as i32,
            positions[id].0
        );
        assert_eq!(row["src_offset"].as_i64().unwrap(), positions[id].1);
    }

    // Dead letters: exactly the malformed records, original bytes, with context headers.
    assert_eq!(dead.len(), bad.len(), "dead-letter count");
    let by_key: HashMap<usize, _> = dead
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(m.key.as_deref().unwrap())
                    .parse()
                    .unwrap(),
                m,
            )
        })
        .collect();
    for &id in &bad {
        let m = by_key
            .get(&id)
            .unwrap_or_else(|| panic!("malformed record {id} not dead-lettered"));
        assert_eq!(
            m.payload, records[id].1,
            "dead letter keeps the original bytes"
        );
        let h = &m.headers;
        assert_eq!(h["streamgate.pipeline"], "e2e");
        assert_eq!(h["streamgate.stage"], "decode");
        assert_eq!(h["streamgate.source.topic"], "tx-in");
        assert_eq!(
            h["streamgate.source.partition"],
            positions[id].0.to_string()
        );
        assert_eq!(h["streamgate.source.offset"], positions[id].1.to_string());
        assert!(!h["streamgate.error.class"].is_empty());
        assert!(!h["streamgate.error.message"].is_empty());
    }

    // Metrics agree with what landed.
    let rendered = metrics.render();
    assert!(
        rendered.contains("streamgate_records_in_total{pipeline=\"e2e\"} 100000"),
        "{rendered}"
    );
    assert!(
        rendered.contains("streamgate_records_out_total{output=\"out\",pipeline=\"e2e\"} 99000")
    );
}

/// Regression: the final offset commit waited for the broker without limit, so stopping a
/// pipeline whose broker had gone hung for good. A stop now ends within the commit timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_even_when_the_broker_is_gone() {
    let broker = EmbeddedBroker::start(&[("tx-in", 2), ("tx-out", 2), ("tx-dlq", 1)]).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let (records, _) = transactions(200, 0.0);
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || produce(&b, "tx-in", 2, &records))
        .await
        .unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/e2e.yaml");
    let loaded = streamgate::spec::load_str(&pipeline_yaml(&bootstrap), &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let metrics = Metrics::new();
    let (stop, task) = spawn_pipeline(compiled, &metrics);
    wait_committed(&bootstrap, "e2e-group", "tx-in", 2).await;
    drop(broker);
    stop.cancel();
    // Drain, commit (at most 10 s each, against nothing) and close; far less than a minute.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(90), task).await;
    assert!(
        ended.is_ok(),
        "the pipeline did not stop without its broker"
    );
}

/// `exclude_columns` and `columns` shape each output's payload while the key and headers still
/// read columns left out of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_send_only_their_payload_columns() {
    let broker = EmbeddedBroker::start(&[("tx-in", 2), ("slim-out", 2)]).unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let (records, _) = transactions(300, 0.0);
    let b = bootstrap.clone();
    let produced = records.clone();
    tokio::task::spawn_blocking(move || produce(&b, "tx-in", 2, &produced))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.jsonl");
    let yaml = format!(
        r#"
name: payloads
source:
  type: kafka
  bootstrap_servers: {bootstrap}
  topics: [tx-in]
  group_id: payloads-group
format:
  type: json
  schema: ../schemas/transaction.avsc
sql: SELECT transaction_id, card_id, amount, country FROM input
outputs:
  - name: slim
    exclude_columns: [card_id, country]
    sink: {{ type: kafka, topic: slim-out, key: card_id, headers: {{ country: country }} }}
  - name: ids
    columns: [amount, transaction_id]
    sink: {{ type: file, path: "{ids}" }}
"#,
        ids = ids.display()
    );
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/payloads.yaml");
    let loaded = streamgate::spec::load_str(&yaml, &file, &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let metrics = Metrics::new();
    let (stop, task) = spawn_pipeline(compiled, &metrics);
    wait_committed(&bootstrap, "payloads-group", "tx-in", 2).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let inputs: HashMap<String, serde_json::Value> = records
        .iter()
        .map(|(_, payload)| {
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            (v["transaction_id"].as_str().unwrap().to_string(), v)
        })
        .collect();
    let b = bootstrap.clone();
    let slim = tokio::task::spawn_blocking(move || read_all(&b, "slim-out", 2))
        .await
        .unwrap();
    assert_eq!(slim.len(), records.len());
    for m in &slim {
        let row: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&m.payload).unwrap();
        let keys: Vec<&str> = row.keys().map(String::as_str).collect();
        assert_eq!(keys, ["amount", "transaction_id"], "payload columns");
        let input = &inputs[row["transaction_id"].as_str().unwrap()];
        assert_eq!(row["amount"].as_f64(), input["amount"].as_f64());
        assert_eq!(
            m.key.as_deref(),
            input["card_id"].as_str().map(str::as_bytes)
        );
        assert_eq!(m.headers["country"], input["country"].as_str().unwrap());
    }

    // The file output: exactly `columns`, in the listed order.
    let text = std::fs::read_to_string(&ids).unwrap();
    assert_eq!(text.lines().count(), records.len());
    for line in text.lines() {
        assert!(line.starts_with("{\"amount\":"), "{line}");
        let row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        assert_eq!(row.len(), 2, "{line}");
        assert!(inputs.contains_key(row["transaction_id"].as_str().unwrap()));
    }
}
