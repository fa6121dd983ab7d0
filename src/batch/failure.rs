//! One failure vocabulary for every stage: where a record failed ([`Stage`]), its bounded
//! error class (for metrics and dead-letter headers), what happened, and the model call when a
//! model failed. Decoding, SQL, routing, encoding, the stream worker, backfill and the
//! dead-letter sinks all speak it, so a failure is described once and carried unchanged to
//! its dead letter, its metric and its log line.

use std::collections::BTreeMap;
use std::sync::Arc;

/// The stage a record failed at. Its name is the `stage` label of the failure metrics and the
/// `streamgate.stage` dead-letter header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Bytes to Arrow: malformed JSON, wrong types, missing fields, unknown Avro schemas.
    Decode,
    /// The pipeline's SQL failed for the row.
    Sql,
    /// A model call failed for the row (after retries and fallback).
    Model,
    /// An output's `where` filter failed for the row.
    Route,
    /// The row could not be encoded for an output (too large, unrepresentable value).
    Encode,
}

impl Stage {
    /// The stage's name: `decode`, `sql`, `model`, `route`, `encode`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Sql => "sql",
            Stage::Model => "model",
            Stage::Route => "route",
            Stage::Encode => "encode",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record (or row) a stage could not process, by its index in the stage's input. The
/// stage is implied by who reports it; [`Failures::record_all`] adds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    /// Index of the record in the source batch (or of the row in the stage's input).
    pub index: usize,
    /// Bounded error class for metrics and dead-letter headers (`malformed_json`,
    /// `type_mismatch`, `missing_field`, `sql_error`, ...).
    pub class: &'static str,
    /// Human-readable message.
    pub message: String,
}

/// Which model call failed, and after how many attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelContext {
    /// Model name.
    pub model: Arc<str>,
    /// Version called.
    pub version: Arc<str>,
    /// Attempts made.
    pub attempts: u32,
}

/// Why a record failed: stage, bounded class, message, and the model call for [`Stage::Model`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Where it failed.
    pub stage: Stage,
    /// Bounded error class.
    pub class: &'static str,
    /// What happened.
    pub message: String,
    /// The model call, for [`Stage::Model`].
    pub model: Option<ModelContext>,
}

impl Failure {
    /// A failure at `stage` without a model call.
    pub fn new(stage: Stage, class: &'static str, message: impl Into<String>) -> Self {
        Failure {
            stage,
            class,
            message: message.into(),
            model: None,
        }
    }
}

/// The failed records of one batch, by index, in index order (so dead letters keep source
/// order). A record keeps its first failure: one that failed at decode is not failed again by
/// a later stage.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Failures(BTreeMap<usize, Failure>);

impl Failures {
    /// No failures.
    pub fn new() -> Self {
        Failures::default()
    }

    /// Records that `index` failed, unless it already had.
    pub fn record(&mut self, index: usize, failure: Failure) {
        self.0.entry(index).or_insert(failure);
    }

    /// Records each of a stage's failures (indices already in this batch's numbering).
    pub fn record_all(&mut self, stage: Stage, failures: impl IntoIterator<Item = RecordFailure>) {
        for f in failures {
            self.record(f.index, Failure::new(stage, f.class, f.message));
        }
    }

    /// Whether `index` failed.
    pub fn contains(&self, index: usize) -> bool {
        self.0.contains_key(&index)
    }

    /// How many records failed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no record failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The failures in index order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Failure)> {
        self.0.iter().map(|(i, f)| (*i, f))
    }

    /// The failures, without their indices, in index order.
    pub fn values(&self) -> impl Iterator<Item = &Failure> {
        self.0.values()
    }

    /// The failed indices, in order.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.keys().copied()
    }
}

impl IntoIterator for Failures {
    type Item = (usize, Failure);
    type IntoIter = std::collections::btree_map::IntoIter<usize, Failure>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// `message` cut to at most `max` bytes (on a character boundary), with `…` when cut. Library
/// messages (DataFusion, arrow, Avro) can quote whole schemas or plans; dead-letter headers and
/// logs need them bounded.
pub fn truncate_message(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_a_char_boundary() {
        assert_eq!(truncate_message("short", 10), "short");
        assert_eq!(truncate_message("ééé", 3), "é…");
    }

    #[test]
    fn a_record_keeps_its_first_failure_and_order_is_by_index() {
        let mut failures = Failures::new();
        failures.record_all(
            Stage::Decode,
            [RecordFailure {
                index: 4,
                class: "malformed_json",
                message: "bad".into(),
            }],
        );
        failures.record(1, Failure::new(Stage::Sql, "sql_error", "x"));
        failures.record(4, Failure::new(Stage::Route, "route_error", "later"));
        let seen: Vec<(usize, Stage, &str)> = failures
            .iter()
            .map(|(i, f)| (i, f.stage, f.class))
            .collect();
        assert_eq!(
            seen,
            [
                (1, Stage::Sql, "sql_error"),
                (4, Stage::Decode, "malformed_json")
            ]
        );
        assert!(failures.contains(4) && !failures.contains(2));
        assert_eq!(Stage::Model.to_string(), "model");
    }
}
