//! Resumable progress: the set of completed units, saved atomically (temporary file, fsync,
//! rename) after each unit's output files are in place, in `<output>/_progress.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::input::BadFile;

/// File name of the progress record in the output directory.
pub(crate) const PROGRESS_FILE: &str = "_progress.json";

/// Why the progress file cannot be opened or saved.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// The output folder or the progress file cannot be created or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a progress file.
    #[error("{} is not a progress file: {source}", path.display())]
    NotProgress {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// Resuming with another `--unit-rows`.
    #[error(
        "{} was started with --unit-rows {unit_rows}; resume with the same value (units, and so output files, depend on it)",
        path.display()
    )]
    UnitRows {
        /// The file.
        path: PathBuf,
        /// The value the backfill was started with.
        unit_rows: u64,
    },
    /// Resuming with another pipeline or pipeline version.
    #[error(
        "{} belongs to a backfill of a different pipeline or pipeline version ({pipeline}); resume with the same pipeline file or use a new output directory",
        path.display()
    )]
    OtherPipeline {
        /// The file.
        path: PathBuf,
        /// The pipeline it belongs to.
        pipeline: String,
    },
    /// A previous backfill without `--resume`.
    #[error(
        "{} holds a previous backfill: pass --resume to continue it, or choose an empty output directory",
        .0.display()
    )]
    NotEmpty(PathBuf),
    /// The state cannot be serialized.
    #[error(transparent)]
    Serialize(#[from] serde_json::Error),
    /// The state cannot be saved.
    #[error("saving {}: {source}", path.display())]
    Save {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    pipeline: String,
    /// Hash of the pipeline spec: resuming with a changed pipeline would mix results.
    spec_hash: String,
    /// `--unit-rows` of the run that started it: unit ids depend on it.
    #[serde(default)]
    unit_rows: u64,
    completed: BTreeSet<String>,
    bad_files: Vec<BadFile>,
    /// Rows dead-lettered by completed units, over every run.
    #[serde(default)]
    dead_lettered: u64,
}

/// The progress of one backfill.
pub(crate) struct Progress {
    path: PathBuf,
    state: Mutex<State>,
}

impl Progress {
    /// Opens the progress of a backfill into `dir`. Without `resume`, `dir` must not hold a
    /// previous backfill; with it, the previous one must be of the same pipeline.
    pub(crate) fn open(
        dir: &Path,
        pipeline: &str,
        spec_hash: &str,
        unit_rows: u64,
        resume: bool,
    ) -> Result<Self, ProgressError> {
        std::fs::create_dir_all(dir).map_err(|source| ProgressError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(PROGRESS_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) if resume => {
                let state: State = serde_json::from_slice(&bytes).map_err(|source| {
                    ProgressError::NotProgress {
                        path: path.clone(),
                        source,
                    }
                })?;
                if state.unit_rows != unit_rows {
                    return Err(ProgressError::UnitRows {
                        path,
                        unit_rows: state.unit_rows,
                    });
                }
                if state.pipeline != pipeline || state.spec_hash != spec_hash {
                    return Err(ProgressError::OtherPipeline {
                        path,
                        pipeline: state.pipeline,
                    });
                }
                state
            }
            Ok(_) => {
                return Err(ProgressError::NotEmpty(dir.to_path_buf()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                version: 1,
                pipeline: pipeline.to_string(),
                spec_hash: spec_hash.to_string(),
                unit_rows,
                ..State::default()
            },
            Err(source) => return Err(ProgressError::Io { path, source }),
        };
        let progress = Progress {
            path,
            state: Mutex::new(state),
        };
        progress.save()?;
        Ok(progress)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a previous run completed `unit`.
    pub(crate) fn is_done(&self, unit: &str) -> bool {
        self.lock().completed.contains(unit)
    }

    /// Records `unit` as complete (its output files are already in place), with the rows it
    /// dead-lettered.
    pub(crate) fn complete(&self, unit: &str, dead_lettered: u64) -> Result<(), ProgressError> {
        {
            let mut state = self.lock();
            if state.completed.insert(unit.to_string()) {
                state.dead_lettered += dead_lettered;
            }
        }
        self.save()
    }

    /// Rows dead-lettered by completed units, this run and earlier ones.
    pub(crate) fn dead_lettered(&self) -> u64 {
        self.lock().dead_lettered
    }

    /// Records a skipped file.
    pub(crate) fn bad_file(&self, bad: BadFile) -> Result<(), ProgressError> {
        {
            let mut state = self.lock();
            if !state.bad_files.contains(&bad) {
                state.bad_files.push(bad);
            }
        }
        self.save()
    }

    fn save(&self) -> Result<(), ProgressError> {
        // Held through the rename: units finishing at once must not interleave their writes.
        let state = self.lock();
        let bytes = serde_json::to_vec_pretty(&*state)?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        let result = write().map_err(|source| ProgressError::Save {
            path: self.path.clone(),
            source,
        });
        drop(state);
        result
    }
}
