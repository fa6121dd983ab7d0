//! Pipeline states, pause switches and model registries, shared with the admin API (`/readyz`)
//! and the gateway's admin routes (status, pause, resume, weights across pipelines).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use crate::inference::ModelRegistry;

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
    /// Holding a batch and paused because most records fail (`on_systematic_failure`):
    /// nothing is dead-lettered until a retry succeeds or an operator resumes.
    Held(String),
}

/// What the board knows of one pipeline.
struct Entry {
    state: PipelineState,
    /// Operator pause: sources stop reading while it holds `true`.
    pause: watch::Sender<bool>,
    /// The pipeline's models, so admin weight changes reach its traffic too.
    registry: Option<Arc<ModelRegistry>>,
}

impl Entry {
    fn new(state: PipelineState) -> Self {
        Entry {
            state,
            pause: watch::Sender::new(false),
            registry: None,
        }
    }
}

/// The state of every pipeline in the process.
#[derive(Clone, Default)]
pub struct StatusBoard(Arc<Mutex<BTreeMap<String, Entry>>>);

impl std::fmt::Debug for StatusBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.snapshot()).finish()
    }
}

impl StatusBoard {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Entry>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sets a pipeline's state.
    pub fn set(&self, pipeline: &str, state: PipelineState) {
        self.with(|m| match m.get_mut(pipeline) {
            Some(entry) => entry.state = state,
            None => {
                m.insert(pipeline.to_string(), Entry::new(state));
            }
        })
    }

    /// A copy of all states.
    pub fn snapshot(&self) -> BTreeMap<String, PipelineState> {
        self.with(|m| {
            m.iter()
                .map(|(k, e)| (k.clone(), e.state.clone()))
                .collect()
        })
    }

    /// Ready when there is at least one pipeline and all are running (paused or not: a pause
    /// is an operator's decision, not a fault).
    pub fn ready(&self) -> bool {
        let states = self.snapshot();
        !states.is_empty() && states.values().all(|s| *s == PipelineState::Running)
    }

    /// The pause switch a pipeline's source watches (`true`: stop reading).
    pub fn pause_signal(&self, pipeline: &str) -> watch::Receiver<bool> {
        self.with(|m| {
            m.entry(pipeline.to_string())
                .or_insert_with(|| Entry::new(PipelineState::Starting))
                .pause
                .subscribe()
        })
    }

    /// Pauses or resumes a pipeline. Returns whether it was paused before, or `None` when
    /// there is no such pipeline.
    pub fn set_paused(&self, pipeline: &str, paused: bool) -> Option<bool> {
        self.with(|m| {
            let entry = m.get(pipeline)?;
            Some(entry.pause.send_replace(paused))
        })
    }

    /// Whether an operator paused the pipeline.
    pub fn is_paused(&self, pipeline: &str) -> bool {
        self.with(|m| m.get(pipeline).is_some_and(|e| *e.pause.borrow()))
    }

    /// Records the model registry a pipeline calls.
    pub fn attach_registry(&self, pipeline: &str, registry: Arc<ModelRegistry>) {
        self.with(|m| {
            m.entry(pipeline.to_string())
                .or_insert_with(|| Entry::new(PipelineState::Starting))
                .registry = Some(registry)
        })
    }

    /// Every pipeline's model registry.
    pub fn registries(&self) -> Vec<(String, Arc<ModelRegistry>)> {
        self.with(|m| {
            m.iter()
                .filter_map(|(k, e)| Some((k.clone(), e.registry.clone()?)))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_switch_reaches_the_source_and_reports_the_previous_state() {
        let board = StatusBoard::default();
        assert_eq!(board.set_paused("p", true), None, "unknown pipeline");
        let signal = board.pause_signal("p");
        assert!(!*signal.borrow());
        assert_eq!(board.set_paused("p", true), Some(false));
        assert!(*signal.borrow());
        assert!(board.is_paused("p"));
        assert_eq!(board.set_paused("p", false), Some(true));
        assert!(!*signal.borrow());
        board.set("p", PipelineState::Running);
        assert!(board.ready());
    }
}
