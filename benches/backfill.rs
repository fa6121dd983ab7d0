//! Backfill benchmark, in one run, on the same synthetic Parquet input (default 10 million
//! transactions in 10 files):
//!
//! 1. `streamgate backfill pipelines/fraud-scoring.yaml` (SQL features → in-process ONNX model →
//!    alerts and scored datasets, zstd Parquet) versus the same job written with pandas, pyarrow
//!    and onnxruntime (benches/backfill/pandas_backfill.py);
//! 2. the same with the model served over OIP v2 by the mock model server (its own process),
//!    for both, showing where the time goes (the model process's CPU versus the client's);
//! 3. the Parquet floor: the same reading and writing by hand-written Rust with no SQL and no
//!    model ([`parquet_floor_child`]), the limit of any backfill with these libraries.
//!
//! Each job is its own process: wall time, CPU seconds and peak resident memory (VmHWM) are
//! read from /proc. Writes benches/RESULTS-backfill.md. `BENCH_BACKFILL_ROWS` (default
//! 10,000,000) and `BENCH_BACKFILL_FILES` (default 10) adjust the input. Run with
//! `cargo bench --bench backfill`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;

mod support;
use support::*;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Peak resident memory (VmHWM) of a process in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Run {
    name: String,
    rows: u64,
    seconds: f64,
    cpu: f64,
    peak_mib: f64,
    model_cpu: Option<f64>,
    ok: bool,
    note: String,
}

/// Waits for `child`, sampling its CPU time and peak RSS until it exits.
fn watch(name: &str, rows: u64, mut child: Child, started: Instant, model: Option<&Child>) -> Run {
    let pid = child.id();
    let model_cpu0 = model.and_then(|m| process_cpu_seconds(&m.id().to_string()));
    let (mut cpu, mut peak) = (0.0, 0u64);
    let status = loop {
        if let Some(c) = process_cpu_seconds(&pid.to_string()) {
            cpu = c;
        }
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            out.push_str(line.trim());
            out.push(' ');
        }
    }
    let model_cpu = match (model, model_cpu0) {
        (Some(m), Some(c0)) => process_cpu_seconds(&m.id().to_string()).map(|c| c - c0),
        _ => None,
    };
    Run {
        name: name.to_string(),
        rows,
        seconds,
        cpu,
        peak_mib: peak as f64 / 1024.0,
        model_cpu,
        ok: status.success(),
        note: out.trim().chars().take(200).collect(),
    }
}

fn streamgate_backfill(pipeline: &Path, input: &str, output: &Path) -> Child {
    let _ = std::fs::remove_dir_all(output);
    Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["--log-level", "warn", "backfill"])
        .arg(pipeline)
        .args(["--input", input, "--output"])
        .arg(output)
        .args(["--progress", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("streamgate backfill")
}

fn pandas_backfill(python: &Path, input: &str, output: &Path, http: Option<&str>) -> Child {
    let _ = std::fs::remove_dir_all(output);
    let mut cmd = Command::new(python);
    cmd.arg(manifest_dir().join("benches/backfill/pandas_backfill.py"))
        .args(["--input", input, "--output"])
        .arg(output);
    match http {
        Some(url) => cmd.args(["--model", "http", "--model-url", url]),
        None => cmd.args(["--model", "onnx"]),
    };
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pandas backfill")
}

/// This benchmark binary again, as the Parquet floor (see [`parquet_floor_child`]).
fn parquet_floor(input: &str, output: &Path) -> Child {
    let _ = std::fs::remove_dir_all(output);
    Command::new(std::env::current_exe().expect("bench binary"))
        .env(FLOOR_CHILD_ENV, format!("{input}\n{}", output.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("parquet floor")
}

fn ensure_pandas() -> Result<PathBuf, String> {
    let python = venv().join("bin/python");
    let has = || {
        Command::new(&python)
            .args(["-c", "import pandas, pyarrow, onnxruntime, requests"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has() {
        return Ok(python);
    }
    if !python.exists() {
        let _ = Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv())
            .status();
    }
    let ok = Command::new(venv().join("bin/pip"))
        .args([
            "install",
            "-q",
            "pandas",
            "pyarrow",
            "onnxruntime",
            "requests",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if ok && has() {
        Ok(python)
    } else {
        Err("pip install pandas pyarrow onnxruntime requests failed".into())
    }
}

/// The fraud-scoring pipeline with its model served over OIP v2 at `url`.
fn served_pipeline(dir: &Path, url: &str) -> PathBuf {
    let text = std::fs::read_to_string(manifest_dir().join("pipelines/fraud-scoring.yaml"))
        .expect("pipeline");
    let start = text.find("models:\n").expect("models block");
    let end = text.find("inference:\n").expect("inference block");
    let models = format!(
        "models:\n  fraud:\n    versions:\n      - name: \"1\"\n        endpoint: {{ protocol: oip_v2, replicas: [\"{url}\"], layout: {{ type: matrix, name: features }} }}\n    batching: {{ max_batch_rows: 1000, max_delay: 0ms }}\n\n"
    );
    let text = format!("{}{models}{}", &text[..start], &text[end..]).replace(
        "../schemas/",
        &format!("{}/schemas/", manifest_dir().display()),
    );
    let path = dir.join("fraud-scoring-served.yaml");
    std::fs::write(&path, text).expect("write pipeline");
    path
}

fn main() {
    if let Ok(spec) = std::env::var(FLOOR_CHILD_ENV) {
        parquet_floor_child(&spec);
        return;
    }
    let rows = env_u64("BENCH_BACKFILL_ROWS", 10_000_000);
    let files = env_u64("BENCH_BACKFILL_FILES", 10).max(1) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    eprintln!("== generating {rows} transactions in {files} Parquet files");
    let t = Instant::now();
    let written =
        streamgate::backfill::generate::generate(&data, files, rows / files as u64, 131_072, 42)
            .expect("generate");
    let bytes: u64 = written
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let rows = rows / files as u64 * files as u64;
    eprintln!(
        "   {:.1}s, {:.0} MiB",
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1048576.0
    );
    let input = data.join("*.parquet").display().to_string();
    let pipeline = manifest_dir().join("pipelines/fraud-scoring.yaml");
    let python = ensure_pandas();

    let mut runs = Vec::new();
    eprintln!("== in-process ONNX");
    let out = dir.path().join("sg-onnx");
    runs.push(watch(
        "streamgate backfill, ONNX in process",
        rows,
        streamgate_backfill(&pipeline, &input, &out),
        Instant::now(),
        None,
    ));
    if let Ok(python) = &python {
        let out = dir.path().join("pd-onnx");
        runs.push(watch(
            "pandas + pyarrow + onnxruntime",
            rows,
            pandas_backfill(python, &input, &out, None),
            Instant::now(),
            None,
        ));
    }

    let out = dir.path().join("floor");
    let floor = watch(
        "Parquet floor: hand-written Rust, no SQL, no model",
        rows,
        parquet_floor(&input, &out),
        Instant::now(),
        None,
    );

    eprintln!("== served model (mock OIP v2 server, its own process)");
    let (mut mock, url) = start_mock_model("fraud_score");
    let served = served_pipeline(dir.path(), &url);
    let out = dir.path().join("sg-http");
    runs.push(watch(
        "streamgate backfill, OIP v2 model",
        rows,
        streamgate_backfill(&served, &input, &out),
        Instant::now(),
        Some(&mock),
    ));
    if let Ok(python) = &python {
        let out = dir.path().join("pd-http");
        runs.push(watch(
            "pandas + requests (4 threads), OIP v2 model",
            rows,
            pandas_backfill(python, &input, &out, Some(&url)),
            Instant::now(),
            Some(&mock),
        ));
    }
    let _ = mock.kill();
    let _ = mock.wait();

    let mut md = String::new();
    let _ = writeln!(md, "# Backfill benchmark results\n");
    let _ = writeln!(
        md,
        "Produced by `cargo bench --bench backfill` (benches/backfill.rs); do not edit by hand.\n"
    );
    let _ = writeln!(
        md,
        "- Input: {rows} synthetic transactions (`streamgate generate-parquet` generator) in {files} zstd Parquet files of {} rows (row groups of 131,072), {:.0} MiB",
        rows / files as u64,
        bytes as f64 / 1048576.0
    );
    let _ = writeln!(
        md,
        "- Machine: {} cores; every job is its own process; CPU and peak RSS (VmHWM) from /proc\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        md,
        "| Job | Wall s | Rows/s | CPU s | Peak RSS MiB | Model process CPU s | OK | Output |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---|---|");
    for r in runs.iter().chain([&floor]) {
        let line = format!(
            "| {} | {:.2} | {:.0} | {:.2} | {:.0} | {} | {} | {} |",
            r.name,
            r.seconds,
            r.rows as f64 / r.seconds,
            r.cpu,
            r.peak_mib,
            r.model_cpu.map_or("-".to_string(), |c| format!("{c:.2}")),
            if r.ok { "yes" } else { "NO" },
            r.note.replace('|', "/"),
        );
        eprintln!("{line}");
        let _ = writeln!(md, "{line}");
    }
    let pair = |a: usize, b: usize| -> Option<String> {
        let (s, p) = (runs.get(a)?, runs.get(b)?);
        Some(format!(
            "**{:.1}×** the rows/s at **{:.2}×** the peak memory ({:.1}× less)",
            p.seconds / s.seconds,
            s.peak_mib / p.peak_mib,
            p.peak_mib / s.peak_mib
        ))
    };
    if let Some(text) = pair(0, 1) {
        let _ = writeln!(
            md,
            "\n- In-process ONNX, Streamgate versus pandas: {text} (target: ≥ 3× the rows/s at ≤ ¼ of the memory)."
        );
    }
    if let (Some(sg), Some(pd)) = (runs.first(), runs.get(1)) {
        let _ = writeln!(
            md,
            "- Parquet floor: **{:.2}×** pandas' rows/s at {:.0} MiB; Streamgate's ONNX backfill runs at **{:.2}×** the floor's rows/s. Reaching 3× pandas would take **{:.2}×** the floor's speed: the Parquet reading and writing alone, done by hand with the same libraries and settings, {} it.",
            pd.seconds / floor.seconds,
            floor.peak_mib,
            floor.seconds / sg.seconds,
            3.0 * floor.seconds / pd.seconds,
            if 3.0 * floor.seconds > pd.seconds {
                "cannot reach"
            } else {
                "can reach"
            },
        );
    }
    if let Some(text) = pair(2, 3) {
        let _ = writeln!(md, "- Served model, Streamgate versus pandas: {text}.");
    }
    if let Some(r) = runs.get(2) {
        let _ = writeln!(
            md,
            "- Served model, where the time goes: the model process used {} CPU-s and Streamgate {:.2} CPU-s over {:.1} s of wall time on {} cores.",
            r.model_cpu.map_or("?".to_string(), |c| format!("{c:.2}")),
            r.cpu,
            r.seconds,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
    if let Err(e) = &python {
        let _ = writeln!(md, "- pandas comparison not measured: {e}");
    }
    let _ = writeln!(
        md,
        "\n## Method\n\n- Streamgate: `streamgate backfill pipelines/fraud-scoring.yaml --input 'data/*.parquet' --output DIR --progress off` (defaults: 2 units in parallel, 8192-row read batches, model concurrency 8); the served variant replaces the model with an `oip_v2` endpoint at the mock (batches of 1000 rows).\n- pandas: benches/backfill/pandas_backfill.py (see benches/backfill/README.md): file by file, `pd.read_parquet` of the needed columns, vectorised numpy features, onnxruntime on 65,536-row slices (or OIP v2 batches of 1000 rows over 4 threads with keep-alive sessions), `to_parquet(zstd)` of scored and alert rows.\n- Both write the scored rows and the alerts (score > 0.5) as zstd Parquet.\n- Parquet floor: this benchmark binary again, as its own process (`BENCH_BACKFILL_FLOOR_CHILD`): two threads take the files in turn, read the same ten columns with parquet-rs in 8192-row batches, keep `amount > 0`, compute the six features in plain loops and a logistic of them as the score (no SQL, no model, no bad-row checks, no progress records), and write the scored rows (pandas' 14 columns; Streamgate also writes 4 lineage columns) and the alerts through Streamgate's own output writer (`backfill::write::UnitFile`: the same zstd level, dictionary choice and row groups). No backfill with these libraries can do the same reading and writing for less."
    );
    let out = manifest_dir().join("benches/RESULTS-backfill.md");
    std::fs::write(&out, md).expect("write results");
    eprintln!("wrote {}", out.display());
}

// The Parquet floor: what any backfill of this job costs with the same Parquet reader and writer.

/// Set (to `<input glob>` and `<output dir>` on two lines) when this benchmark binary runs
/// itself as the Parquet floor.
const FLOOR_CHILD_ENV: &str = "BENCH_BACKFILL_FLOOR_CHILD";

/// The columns the fraud SQL reads (Streamgate's reader reads exactly these, pandas too).
const FLOOR_READ: [&str; 10] = [
    "transaction_id",
    "card_id",
    "merchant_id",
    "merchant_category",
    "amount",
    "country",
    "channel",
    "card_present",
    "event_time",
    "distance_from_home_km",
];

/// Columns of the scored output copied from the input (pandas' scored files hold these, then
/// f0..f5 and fraud_score).
const FLOOR_KEPT: [&str; 7] = [
    "transaction_id",
    "card_id",
    "merchant_id",
    "amount",
    "country",
    "channel",
    "event_time",
];

/// The floor itself: hand-written Rust doing the Parquet part of the job and nothing else.
/// Two threads take files in turn (like the backfill's two units in parallel), read the ten
/// columns with parquet-rs in 8192-row batches, keep `amount > 0`, compute the six features
/// in plain loops and a logistic stand-in for the model's score (no SQL, no model), and write
/// the scored and alert rows through Streamgate's own output writer (`UnitFile`: the same zstd
/// level, dictionary choice and row groups). Prints the rows it read.
fn parquet_floor_child(spec: &str) {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    let (input, output) = spec.split_once('\n').expect("glob and output dir");
    let files = streamgate::backfill::input::expand(&[input.to_string()]).expect("input");
    let output = Path::new(output);
    let next = AtomicUsize::new(0);
    let rows = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    let n = floor_file(file, output, &format!("{i:05}"));
                    rows.fetch_add(n, Ordering::Relaxed);
                }
            });
        }
    });
    println!("{} rows", rows.load(Ordering::Relaxed));
}

/// One file through the floor; returns the rows read.
fn floor_file(path: &Path, output: &Path, unit: &str) -> u64 {
    use datafusion::arrow::compute::filter_record_batch;
    use datafusion::parquet::arrow::ProjectionMask;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use streamgate::backfill::write::UnitFile;

    let file = std::fs::File::open(path).expect("open input");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("footer");
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| FLOOR_READ.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .expect("reader");
    let (mut scored, mut alerts, mut read) = (None, None, 0u64);
    for batch in reader {
        let batch = batch.expect("read batch");
        read += batch.num_rows() as u64;
        let out = floor_scored(&batch);
        let hits = filter_record_batch(&out, &floor_alert_mask(&out)).expect("filter");
        for (file, dir, rows) in [
            (&mut scored, "scored", &out),
            (&mut alerts, "alerts", &hits),
        ] {
            file.get_or_insert_with(|| UnitFile::new(&output.join(dir), unit, rows.schema()))
                .write(rows)
                .expect("write");
        }
    }
    for file in [scored, alerts].into_iter().flatten() {
        file.finish().expect("finish");
    }
    read
}

/// The scored rows of one input batch: `amount > 0`, the kept columns, f0..f5, fraud_score.
fn floor_scored(batch: &RecordBatch) -> RecordBatch {
    use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float32Array};
    use datafusion::arrow::compute::filter_record_batch;
    use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema};
    use std::sync::Arc;

    let column = |b: &RecordBatch, name: &str| b.column_by_name(name).expect(name).clone();
    let amount = column(batch, "amount");
    let positive: BooleanArray = amount
        .as_primitive::<Float64Type>()
        .iter()
        .map(|a| Some(a.is_some_and(|a| a > 0.0)))
        .collect();
    let batch = filter_record_batch(batch, &positive).expect("filter");
    let flag = |hit: &dyn Fn(usize) -> bool| -> Float32Array {
        (0..batch.num_rows())
            .map(|i| if hit(i) { 1.0 } else { 0.0 })
            .collect()
    };
    let strings = |name: &str| column(&batch, name).as_string::<i32>().clone();
    let (channel, category, country) = (
        strings("channel"),
        strings("merchant_category"),
        strings("country"),
    );
    let present = column(&batch, "card_present").as_boolean().clone();
    let features: [Float32Array; 6] = [
        column(&batch, "amount")
            .as_primitive::<Float64Type>()
            .unary(|a| (1.0 + a).ln() as f32),
        column(&batch, "distance_from_home_km")
            .as_primitive::<Float64Type>()
            .iter()
            .map(|d| Some((1.0 + d.unwrap_or(0.0)).ln() as f32))
            .collect(),
        flag(&|i| present.is_valid(i) && present.value(i)),
        flag(&|i| channel.is_valid(i) && channel.value(i) == "online"),
        flag(&|i| {
            category.is_valid(i)
                && matches!(category.value(i), "jewelry" | "electronics" | "gaming")
        }),
        flag(&|i| country.is_valid(i) && matches!(country.value(i), "NG" | "BR")),
    ];
    // A logistic over the features: a float column of the model output's entropy, at no cost.
    let weights = [0.9f32, 0.3, -1.2, 0.8, 1.1, 1.4];
    let score: Float32Array = (0..batch.num_rows())
        .map(|i| {
            let z: f32 = features
                .iter()
                .zip(weights)
                .map(|(f, w)| f.value(i) * w)
                .sum();
            Some(1.0 / (1.0 + (6.0 - z).exp()))
        })
        .collect();
    let mut fields: Vec<Field> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for name in FLOOR_KEPT {
        let c = column(&batch, name);
        fields.push(Field::new(name, c.data_type().clone(), true));
        columns.push(c);
    }
    for (i, f) in features.into_iter().enumerate() {
        fields.push(Field::new(format!("f{i}"), DataType::Float32, false));
        columns.push(Arc::new(f));
    }
    fields.push(Field::new("fraud_score", DataType::Float32, false));
    columns.push(Arc::new(score));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("scored batch")
}

/// Rows whose score is above the alert threshold.
fn floor_alert_mask(scored: &RecordBatch) -> datafusion::arrow::array::BooleanArray {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Float32Type;
    let score = scored.column_by_name("fraud_score").expect("fraud_score");
    score
        .as_primitive::<Float32Type>()
        .iter()
        .map(|s| Some(s.is_some_and(|s| s > 0.5)))
        .collect()
}
