//! Pipeline states, shared with the admin API (`/readyz`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Lifecycle state of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum PipelineState {
    /// Building sinks and the consumer.
    Starting,
    /// Consuming.
    Running,
    /// Draining after a stop request.
    Stopping,
    /// Stopped cleanly.
    Stopped,
    /// Stopped because of an error.
    Failed(String),
}

/// The state of every pipeline in the process.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<BTreeMap<String, PipelineState>>>);

impl StatusBoard {
    /// Sets a pipeline's state.
    pub fn set(&self, pipeline: &str, state: PipelineState) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pipeline.to_string(), state);
    }

    /// A copy of all states.
    pub fn snapshot(&self) -> BTreeMap<String, PipelineState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Ready when there is at least one pipeline and all are running.
    pub fn ready(&self) -> bool {
        let states = self.snapshot();
        !states.is_empty() && states.values().all(|s| *s == PipelineState::Running)
    }
}
