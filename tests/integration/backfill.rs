//! Backfill over Parquet: the same scored rows as the stream, resumption after kill -9 without
//! loss or duplicates, bad files reported while the rest completes, and bounded memory on a
//! large file.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Float32Type;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use streamgate::backfill::{self, BackfillOptions, ProgressMode};
use streamgate::telemetry::Metrics;
use streamgate::testing::EmbeddedBroker;

use crate::common::{
    produce, read_all, rss_kib, spawn_pipeline, streamgate_bin, transactions, wait_committed,
    wait_until,
};

fn scoring_pipeline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/fraud-scoring.yaml")
}

/// Every row of every Parquet file in `dir`.
fn read_dataset(dir: &Path) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return batches;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    for file in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        batches.extend(reader.map(|b| b.unwrap()));
    }
    batches
}

/// transaction_id → fraud_score of a dataset.
fn scores(dir: &Path) -> Vec<(String, f32)> {
    let mut out = Vec::new();
    for b in read_dataset(dir) {
        let ids = b
            .column(b.schema().index_of("transaction_id").unwrap())
            .as_string::<i32>()
            .clone();
        let s = b
            .column(b.schema().index_of("fraud_score").unwrap())
            .clone();
        let s = s.as_primitive::<Float32Type>();
        for r in 0..b.num_rows() {
            out.push((ids.value(r).to_string(), s.value(r)));
        }
    }
    out
}

fn options(inputs: &[&Path], output: &Path) -> BackfillOptions {
    BackfillOptions {
        inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
        output: output.to_path_buf(),
        progress: ProgressMode::Off,
        ..BackfillOptions::default()
    }
}

/// Backfills with the shipped fraud-scoring pipeline.
async fn run_scoring(
    options: BackfillOptions,
) -> Result<streamgate::backfill::report::Summary, streamgate::backfill::BackfillError> {
    backfill::run(
        compiled_scoring().await,
        options,
        &Metrics::new(),
        Default::default(),
    )
    .await
}

async fn compiled_scoring() -> std::sync::Arc<streamgate::plan::CompiledPipeline> {
    let text = std::fs::read_to_string(scoring_pipeline()).unwrap();
    let loaded = streamgate::spec::load_str(&text, &scoring_pipeline(), &|_| None).unwrap();
    streamgate::plan::compile(loaded).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_scores_rows_exactly_like_the_stream() {
    const N: u64 = 6_000;
    // The stream: the shipped fraud-scoring pipeline on the embedded broker.
    let broker = EmbeddedBroker::start(&[
        ("transactions", 4),
        ("fraud-alerts", 4),
        ("transactions-scored", 4),
        ("transactions-dlq", 1),
    ])
    .unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let (records, _) = transactions(N, 0.0);
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || produce(&b, "transactions", 4, &records))
        .await
        .unwrap();
    let text = std::fs::read_to_string(scoring_pipeline()).unwrap();
    let env_bootstrap = bootstrap.clone();
    let loaded = streamgate::spec::load_str(&text, &scoring_pipeline(), &move |name| {
        (name == "KAFKA_BOOTSTRAP_SERVERS").then(|| env_bootstrap.clone())
    })
    .unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let metrics = Metrics::new();
    let (stop, task) = spawn_pipeline(compiled, &metrics);
    wait_committed(&bootstrap, "streamgate-fraud-scoring", "transactions", 4).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let b = bootstrap.clone();
    let (scored, alerts) = tokio::task::spawn_blocking(move || {
        (
            read_all(&b, "transactions-scored", 4),
            read_all(&b, "fraud-alerts", 4),
        )
    })
    .await
    .unwrap();
    let stream: HashMap<String, f32> = scored
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            (
                v["transaction_id"].as_str().unwrap().to_string(),
                v["fraud_score"].as_f64().unwrap() as f32,
            )
        })
        .collect();

    // The backfill: the same transactions (same generator, same seed) as Parquet.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    streamgate::backfill::generate::generate(&data, 3, N / 3, 700, 42).unwrap();
    let pattern = data.join("*.parquet");
    let summary = run_scoring(options(&[&pattern], &out)).await.unwrap();
    assert!(summary.succeeded(), "{summary}");
    assert_eq!(summary.rows_in, N);

    let batch: HashMap<String, f32> = scores(&out.join("scored")).into_iter().collect();
    assert_eq!(batch.len() as u64, N);
    assert_eq!(stream.len() as u64, N);
    for (id, score) in &stream {
        assert_eq!(
            batch.get(id),
            Some(score),
            "transaction {id} scored differently"
        );
    }
    let alert_ids: HashSet<String> = scores(&out.join("alerts"))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let stream_alerts: HashSet<String> = alerts
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            v["transaction_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(alert_ids, stream_alerts);
    assert!(!alert_ids.is_empty());
    eprintln!("{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_reported_and_the_rest_completes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = streamgate::backfill::generate::generate(&data, 2, 1_000, 300, 1).unwrap();
    // Corrupt: random bytes. Truncated: a good file cut in half. Empty: a valid file with no
    // rows. Mismatched: valid Parquet without the pipeline's columns.
    std::fs::write(
        data.join("corrupt.parquet"),
        b"PAR1 this is not parquet at all",
    )
    .unwrap();
    let bytes = std::fs::read(&good[0]).unwrap();
    std::fs::write(data.join("truncated.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let other =
        datafusion::arrow::datatypes::Schema::new(vec![datafusion::arrow::datatypes::Field::new(
            "name",
            datafusion::arrow::datatypes::DataType::Utf8,
            false,
        )]);
    let batch = RecordBatch::try_new(
        std::sync::Arc::new(other.clone()),
        vec![std::sync::Arc::new(
            datafusion::arrow::array::StringArray::from(vec!["x"]),
        )],
    )
    .unwrap();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(
        File::create(data.join("mismatched.parquet")).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let transactions =
        streamgate::backfill::generate::generate(&dir.path().join("e"), 1, 0, 10, 1).unwrap();
    std::fs::rename(&transactions[0], data.join("empty.parquet")).unwrap();

    let out = dir.path().join("out");
    let summary = run_scoring(options(&[&data.join("*.parquet")], &out))
        .await
        .unwrap();
    eprintln!("{summary}");
    assert!(!summary.succeeded());
    let reasons: HashMap<String, String> = summary
        .bad_files
        .iter()
        .map(|b| {
            (
                Path::new(&b.file)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                b.reason.clone(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons["corrupt.parquet"].contains("not a readable Parquet file"));
    assert!(reasons["truncated.parquet"].contains("not a readable Parquet file"));
    assert!(reasons["empty.parquet"].contains("empty"));
    assert!(
        reasons["mismatched.parquet"]
            .contains("schema mismatch: column `transaction_id` is missing")
    );
    assert_eq!(summary.rows_in, 2_000);
    assert_eq!(scores(&out.join("scored")).len(), 2_000);
    let text = summary.to_string();
    assert!(
        text.contains("skipped") && text.contains("corrupt.parquet"),
        "{text}"
    );
}

fn start_backfill(input: &str, output: &Path, resume: bool) -> Child {
    let mut cmd = Command::new(streamgate_bin());
    cmd.args(["--log-level", "warn", "backfill"])
        .arg(scoring_pipeline())
        .args(["--input", input, "--output"])
        .arg(output)
        .args([
            "--unit-rows",
            "4000",
            "--batch-rows",
            "1000",
            "--progress",
            "off",
        ]);
    if resume {
        cmd.arg("--resume");
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn completed_units(output: &Path) -> usize {
    std::fs::read(output.join("_progress.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["completed"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[test]
fn kill_nine_then_resume_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 10 files × 12,000 rows in row groups of 2,000: 30 units of 4,000 rows.
    streamgate::backfill::generate::generate(&data, 10, 12_000, 2_000, 7).unwrap();
    let input = data.join("*.parquet").display().to_string();
    let output = dir.path().join("out");
    let mut child = start_backfill(&input, &output, false);
    wait_until(
        "some units to complete",
        Duration::from_secs(120),
        Duration::from_millis(5),
        || completed_units(&output) >= 6,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before = completed_units(&output);
    assert!(
        done_before < 30,
        "the backfill finished before it was killed"
    );

    let resumed = start_backfill(&input, &output, true);
    let out = resumed.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{summary}");
    assert!(
        summary.contains(&format!("({done_before} done earlier")),
        "{summary}"
    );
    assert_eq!(completed_units(&output), 30);

    let rows = scores(&output.join("scored"));
    let ids: HashSet<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        rows.len(),
        120_000,
        "every row once: none lost, none repeated"
    );
    assert_eq!(ids.len(), 120_000);
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(output.join("scored"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    eprintln!("killed after {done_before} of 30 units; resumed to completion");
}

#[test]
fn a_large_file_is_backfilled_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let files = streamgate::backfill::generate::generate(&data, 1, 1_000_000, 131_072, 9).unwrap();
    let size = std::fs::metadata(&files[0]).unwrap().len();
    let output = dir.path().join("out");
    let mut child = Command::new(streamgate_bin())
        .args(["--log-level", "warn", "backfill"])
        .arg(scoring_pipeline())
        .args(["--input", &files[0].display().to_string(), "--output"])
        .arg(&output)
        .args(["--progress", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0u64;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(rss_kib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait().unwrap().success());
    let rows = scores(&output.join("scored")).len();
    assert_eq!(rows, 1_000_000);
    eprintln!(
        "1,000,000 rows ({:.1} MiB of zstd Parquet, ~300 MiB as JSON): peak RSS {:.1} MiB",
        size as f64 / 1048576.0,
        peak as f64 / 1024.0
    );
    // Reading the whole file into memory would take several hundred MiB.
    assert!(peak < 400 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_sinks_publishes_to_the_pipelines_own_topics() {
    let broker = EmbeddedBroker::start(&[
        ("transactions", 1),
        ("fraud-alerts", 2),
        ("transactions-scored", 2),
        ("transactions-dlq", 1),
    ])
    .unwrap();
    let bootstrap = broker.bootstrap_servers().to_string();
    let text = std::fs::read_to_string(scoring_pipeline()).unwrap();
    let env_bootstrap = bootstrap.clone();
    let loaded = streamgate::spec::load_str(&text, &scoring_pipeline(), &move |name| {
        (name == "KAFKA_BOOTSTRAP_SERVERS").then(|| env_bootstrap.clone())
    })
    .unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    streamgate::backfill::generate::generate(&data, 2, 1_500, 500, 3).unwrap();
    let mut opts = options(&[&data.join("*.parquet")], &dir.path().join("progress"));
    opts.to_sinks = true;
    let summary = backfill::run(compiled, opts, &Metrics::new(), Default::default())
        .await
        .unwrap();
    assert!(summary.succeeded(), "{summary}");
    let b = bootstrap.clone();
    let (scored, alerts) = tokio::task::spawn_blocking(move || {
        (
            read_all(&b, "transactions-scored", 2),
            read_all(&b, "fraud-alerts", 2),
        )
    })
    .await
    .unwrap();
    assert_eq!(scored.len(), 3_000);
    assert_eq!(alerts.len() as u64, summary.rows_out["alerts"]);
    assert!(
        !dir.path().join("progress/scored").exists(),
        "no Parquet output with --to-sinks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_other_units_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    streamgate::backfill::generate::generate(&data, 1, 2_000, 500, 2).unwrap();
    let out = dir.path().join("out");
    let pattern = data.join("*.parquet");
    let first = run_scoring(options(&[&pattern], &out)).await.unwrap();
    assert!(first.succeeded());
    // Regression: other unit sizes give other unit ids and output files, so resuming with
    // them would write every row again.
    let mut other = options(&[&pattern], &out);
    other.resume = true;
    other.unit_rows = 1_000;
    let err = run_scoring(other).await.unwrap_err();
    assert!(err.to_string().contains("--unit-rows"), "{err}");
    let mut again = options(&[&pattern], &out);
    again.resume = true;
    let resumed = run_scoring(again).await.unwrap();
    assert_eq!(
        resumed.units_skipped, resumed.units,
        "everything was done already"
    );
    assert_eq!(scores(&out.join("scored")).len(), 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_with_missing_values_are_dead_lettered_and_a_resume_still_reports_them() {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let good = streamgate::backfill::generate::generate(&src, 1, 100, 100, 4).unwrap();
    // The same rows with `card_id` (non-nullable in the pipeline) missing in rows 7 and 42.
    let batch = read_dataset(good[0].parent().unwrap()).remove(0);
    let idx = batch.schema().index_of("card_id").unwrap();
    let ids = batch.column(idx).as_string::<i32>();
    let holed: StringArray = (0..batch.num_rows())
        .map(|r| (r != 7 && r != 42).then(|| ids.value(r).to_string()))
        .collect();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[idx] = Field::new(
        "card_id",
        datafusion::arrow::datatypes::DataType::Utf8,
        true,
    );
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns[idx] = Arc::new(holed);
    let holed = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(
        File::create(data.join("holed.parquet")).unwrap(),
        holed.schema(),
        None,
    )
    .unwrap();
    w.write(&holed).unwrap();
    w.close().unwrap();

    let out = dir.path().join("out");
    let pattern = data.join("*.parquet");
    let summary = run_scoring(options(&[&pattern], &out)).await.unwrap();
    assert_eq!(summary.dead_lettered, 2, "{summary}");
    assert!(!summary.succeeded());
    assert_eq!(scores(&out.join("scored")).len(), 98);
    let dead = read_dataset(&out.join("_dead_letter"));
    let rows: Vec<i64> = dead
        .iter()
        .flat_map(|b| {
            let r = b
                .column(b.schema().index_of("source_row").unwrap())
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .clone();
            (0..b.num_rows())
                .map(move |i| r.value(i))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(rows, vec![7, 42]);
    // Regression: a resume that has nothing left to do still reports the earlier dead letters.
    let mut again = options(&[&pattern], &out);
    again.resume = true;
    let resumed = run_scoring(again).await.unwrap();
    assert_eq!(resumed.dead_lettered, 2);
    assert!(!resumed.succeeded());
}

/// An output's `exclude_columns` shapes its Parquet files too; other outputs keep every column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_files_hold_only_the_payload_columns() {
    let text = std::fs::read_to_string(scoring_pipeline())
        .unwrap()
        .replace(
            "  - name: scored\n",
            "  - name: scored\n    exclude_columns: [f0, f1, f2, f3, f4, f5]\n",
        );
    let loaded = streamgate::spec::load_str(&text, &scoring_pipeline(), &|_| None).unwrap();
    let compiled = streamgate::plan::compile(loaded).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (dir.path().join("data"), dir.path().join("out"));
    streamgate::backfill::generate::generate(&data, 1, 2_000, 700, 42).unwrap();
    let pattern = data.join("*.parquet");
    let summary = backfill::run(
        compiled,
        options(&[&pattern], &out),
        &Metrics::new(),
        Default::default(),
    )
    .await
    .unwrap();
    assert!(summary.succeeded(), "{summary}");
    let columns = |output: &str| -> Vec<String> {
        let batches = read_dataset(&out.join(output));
        let schema = batches.first().expect("rows").schema();
        schema.fields().iter().map(|f| f.name().clone()).collect()
    };
    let scored = columns("scored");
    assert!(scored.contains(&"fraud_score".to_string()), "{scored:?}");
    assert!(
        !scored.iter().any(|c| c.starts_with('f') && c.len() == 2),
        "{scored:?}"
    );
    assert!(columns("alerts").contains(&"f0".to_string()));
    assert_eq!(scores(&out.join("scored")).len(), 2_000);
}
