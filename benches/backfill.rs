//! Backfill benchmark, in one run, on the same synthetic Parquet input (default 10 million
//! transactions in 10 files):
//!
//! 1. `streamgate backfill pipelines/fraud-scoring.yaml` (SQL features → in-process ONNX model →
//!    alerts and scored datasets, zstd Parquet) versus the same job written with pandas, pyarrow
//!    and onnxruntime (benches/backfill/pandas_backfill.py);
//! 2. the same with the model served over OIP v2 by the mock model server (its own process),
//!    for both, showing where the time goes (the model process's CPU versus the client's).
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
    for r in &runs {
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
        "\n## Method\n\n- Streamgate: `streamgate backfill pipelines/fraud-scoring.yaml --input 'data/*.parquet' --output DIR --progress off` (defaults: 2 units in parallel, 8192-row read batches, model concurrency 8); the served variant replaces the model with an `oip_v2` endpoint at the mock (batches of 1000 rows).\n- pandas: benches/backfill/pandas_backfill.py (see benches/backfill/README.md): file by file, `pd.read_parquet` of the needed columns, vectorised numpy features, onnxruntime on 65,536-row slices (or OIP v2 batches of 1000 rows over 4 threads with keep-alive sessions), `to_parquet(zstd)` of scored and alert rows.\n- Both write the scored rows and the alerts (score > 0.5) as zstd Parquet."
    );
    let out = manifest_dir().join("benches/RESULTS-backfill.md");
    std::fs::write(&out, md).expect("write results");
    eprintln!("wrote {}", out.display());
}
