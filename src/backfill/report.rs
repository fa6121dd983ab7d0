//! Progress while a backfill runs (a bar on a terminal, a log line every few seconds
//! otherwise) and the final summary.

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::input::BadFile;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar on a terminal, log lines otherwise.
    #[default]
    Auto,
    /// Always the bar (on standard error).
    Bar,
    /// Always log lines.
    Log,
    /// Nothing until the summary.
    Off,
}

/// Counters shared by the units in flight.
#[derive(Debug, Default)]
pub struct Counters {
    /// Rows read (including set aside).
    pub rows: AtomicU64,
    /// Units finished.
    pub units: AtomicU64,
    /// Rows dead-lettered.
    pub dead_lettered: AtomicU64,
}

/// Runs the progress display until `stop`; returns when stopped.
pub async fn show(
    mode: ProgressMode,
    counters: Arc<Counters>,
    total_rows: u64,
    total_units: u64,
    model_calls: impl Fn() -> u64,
    stop: CancellationToken,
) {
    let bar_mode = match mode {
        ProgressMode::Off => return,
        ProgressMode::Bar => true,
        ProgressMode::Log => false,
        ProgressMode::Auto => std::io::stderr().is_terminal(),
    };
    let started = Instant::now();
    let bar = bar_mode.then(|| {
        let bar = ProgressBar::with_draw_target(Some(total_rows), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} rows {per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let every = if bar_mode {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let rows = counters.rows.load(Ordering::Relaxed);
        let units = counters.units.load(Ordering::Relaxed);
        let errors = counters.dead_lettered.load(Ordering::Relaxed);
        let calls = model_calls();
        match &bar {
            Some(bar) => {
                bar.set_position(rows);
                bar.set_message(format!(
                    "| units {units}/{total_units} | model calls {calls} | errors {errors}"
                ));
            }
            None => {
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                let rate = rows as f64 / secs;
                let eta = if rate > 0.0 {
                    format!("{:.0}s", total_rows.saturating_sub(rows) as f64 / rate)
                } else {
                    "?".to_string()
                };
                tracing::info!(
                    rows,
                    total_rows,
                    units,
                    total_units,
                    rows_per_second = rate as u64,
                    eta = %eta,
                    model_calls = calls,
                    errors,
                    "backfill progress"
                );
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// What a backfill did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Input files that were read.
    pub files: usize,
    /// Files skipped, with reasons.
    pub bad_files: Vec<BadFile>,
    /// Units in the plan.
    pub units: usize,
    /// Units done by an earlier run (resumed).
    pub units_skipped: usize,
    /// Units that failed (their rows will be redone by `--resume`).
    pub units_failed: usize,
    /// Rows read.
    pub rows_in: u64,
    /// Rows written per output.
    pub rows_out: BTreeMap<String, u64>,
    /// Rows filtered.
    pub rows_filtered: u64,
    /// Rows dead-lettered by completed units, this run and earlier ones (`--resume`).
    pub dead_lettered: u64,
    /// Model requests made.
    pub model_calls: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Stopped early by a signal.
    pub interrupted: bool,
}

impl Summary {
    /// Whether everything was processed without a failed row, file or unit.
    pub fn succeeded(&self) -> bool {
        self.bad_files.is_empty()
            && self.dead_lettered == 0
            && self.units_failed == 0
            && !self.interrupted
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "backfill {}: {} rows in {:.1}s ({:.0} rows/s), {} files, {} units ({} done earlier, {} failed), {} model calls",
            if self.succeeded() {
                "complete"
            } else if self.interrupted {
                "interrupted"
            } else {
                "finished with problems"
            },
            self.rows_in,
            secs,
            self.rows_in as f64 / secs.max(1e-9),
            self.files,
            self.units,
            self.units_skipped,
            self.units_failed,
            self.model_calls,
        )?;
        for (output, rows) in &self.rows_out {
            writeln!(f, "  output {output}: {rows} rows")?;
        }
        writeln!(f, "  filtered: {} rows", self.rows_filtered)?;
        writeln!(f, "  dead-lettered: {} rows", self.dead_lettered)?;
        for bad in &self.bad_files {
            writeln!(f, "  skipped {}: {}", bad.file, bad.reason)?;
        }
        if self.units_failed > 0 || self.interrupted {
            writeln!(f, "  run again with --resume to finish")?;
        }
        Ok(())
    }
}
