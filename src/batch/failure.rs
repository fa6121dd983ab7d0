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

/// The bounded class of a failure: the `class` label of the failure metrics and the
/// `streamgate.error.class` dead-letter header. Each stage reports its own classes; a model
/// failure's class is its model-error kind (the inference layer maps its kinds into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// Decode: the payload is not valid JSON (syntax error, truncated, empty, bad UTF-8).
    MalformedJson,
    /// Decode: the payload is valid JSON but not exactly one object.
    NotAnObject,
    /// Decode: a non-nullable field is absent or `null`.
    MissingField,
    /// Decode: a field has the wrong JSON type (a string where a number is declared).
    TypeMismatch,
    /// Decode: the record nests arrays and objects deeper than the JSON depth limit (arrow-json
    /// formats a mistyped value recursively for its error message: a record nested 100,000
    /// deep would overflow the stack).
    TooDeep,
    /// Decode: a field has the right JSON type but an unusable value (`"abc"` as a number, an
    /// unparseable timestamp, an out-of-range integer).
    InvalidValue,
    /// Decode: a Confluent-framed Avro message shorter than its 5-byte header.
    AvroShortHeader,
    /// Decode: the first byte is not the Confluent magic byte 0.
    AvroBadMagic,
    /// Decode: the registry does not know the schema id.
    AvroUnknownSchema,
    /// Decode: the Avro datum ends early.
    AvroTruncated,
    /// Decode: the writer schema cannot be resolved to the reader schema.
    AvroIncompatibleSchema,
    /// Decode: anything else wrong with the Avro datum (bad varint, bytes left over, ...).
    AvroInvalid,
    /// Decode: the Avro datum nests records, arrays and maps deeper than the Avro depth limit.
    AvroTooDeep,
    /// SQL: the row's evaluation failed.
    SqlError,
    /// Route: an output's filter failed for the row.
    RouteError,
    /// Encode: the row holds a value its output format cannot represent (a timestamp past
    /// what a date can spell, a value outside an Avro schema).
    UnrepresentableValue,
    /// Encode: the row or dead letter is larger than the sink's message limit.
    MessageTooLarge,
    /// Model: could not connect, or the connection broke before an answer.
    ModelConnect,
    /// Model: an attempt took longer than the model's `timeout`.
    ModelTimeout,
    /// Model: the call as a whole ran past the model's `deadline`.
    ModelDeadline,
    /// Model: 429, the model sheds load.
    ModelThrottled,
    /// Model: 502, 503 or 504, the model or a proxy in front of it is unavailable.
    ModelUnavailable,
    /// Model: another 5xx, the model failed on the request.
    ModelServerError,
    /// Model: 400, 413 or 422, the model rejected the request's content.
    ModelRejected,
    /// Model: the request cannot work as configured (401, 403, 404, a redirect, ...).
    ModelMisconfigured,
    /// Model: the deadline passed waiting for a free replica slot.
    ModelSaturated,
    /// Model: the answer does not fit the contract.
    ModelContract,
    /// Model: every replica is ejected or the version has none.
    ModelNoReplica,
    /// Model: a row cannot be sent (null or non-finite input, prompt that cannot be rendered).
    ModelBadInput,
    /// Model: the in-process runtime failed.
    ModelRuntime,
}

impl ErrorClass {
    /// Every class, decode classes first, then SQL, route, encode and model.
    pub const ALL: [ErrorClass; 30] = [
        ErrorClass::MalformedJson,
        ErrorClass::NotAnObject,
        ErrorClass::MissingField,
        ErrorClass::TypeMismatch,
        ErrorClass::TooDeep,
        ErrorClass::InvalidValue,
        ErrorClass::AvroShortHeader,
        ErrorClass::AvroBadMagic,
        ErrorClass::AvroUnknownSchema,
        ErrorClass::AvroTruncated,
        ErrorClass::AvroIncompatibleSchema,
        ErrorClass::AvroInvalid,
        ErrorClass::AvroTooDeep,
        ErrorClass::SqlError,
        ErrorClass::RouteError,
        ErrorClass::UnrepresentableValue,
        ErrorClass::MessageTooLarge,
        ErrorClass::ModelConnect,
        ErrorClass::ModelTimeout,
        ErrorClass::ModelDeadline,
        ErrorClass::ModelThrottled,
        ErrorClass::ModelUnavailable,
        ErrorClass::ModelServerError,
        ErrorClass::ModelRejected,
        ErrorClass::ModelMisconfigured,
        ErrorClass::ModelSaturated,
        ErrorClass::ModelContract,
        ErrorClass::ModelNoReplica,
        ErrorClass::ModelBadInput,
        ErrorClass::ModelRuntime,
    ];

    /// The class's name: the metric label value and dead-letter header (`malformed_json`,
    /// `avro_truncated`, `sql_error`, `message_too_large`, `timeout`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorClass::MalformedJson => "malformed_json",
            ErrorClass::NotAnObject => "not_an_object",
            ErrorClass::MissingField => "missing_field",
            ErrorClass::TypeMismatch => "type_mismatch",
            ErrorClass::TooDeep => "too_deep",
            ErrorClass::InvalidValue => "invalid_value",
            ErrorClass::AvroShortHeader => "avro_short_header",
            ErrorClass::AvroBadMagic => "avro_bad_magic",
            ErrorClass::AvroUnknownSchema => "avro_unknown_schema",
            ErrorClass::AvroTruncated => "avro_truncated",
            ErrorClass::AvroIncompatibleSchema => "avro_incompatible_schema",
            ErrorClass::AvroInvalid => "avro_invalid",
            ErrorClass::AvroTooDeep => "avro_too_deep",
            ErrorClass::SqlError => "sql_error",
            ErrorClass::RouteError => "route_error",
            ErrorClass::UnrepresentableValue => "unrepresentable_value",
            ErrorClass::MessageTooLarge => "message_too_large",
            ErrorClass::ModelConnect => "connect",
            ErrorClass::ModelTimeout => "timeout",
            ErrorClass::ModelDeadline => "deadline",
            ErrorClass::ModelThrottled => "throttled",
            ErrorClass::ModelUnavailable => "unavailable",
            ErrorClass::ModelServerError => "server_error",
            ErrorClass::ModelRejected => "rejected",
            ErrorClass::ModelMisconfigured => "misconfigured",
            ErrorClass::ModelSaturated => "saturated",
            ErrorClass::ModelContract => "contract",
            ErrorClass::ModelNoReplica => "no_replica",
            ErrorClass::ModelBadInput => "bad_input",
            ErrorClass::ModelRuntime => "runtime",
        }
    }

    /// The class named `name` (the inverse of [`ErrorClass::as_str`]).
    pub fn from_name(name: &str) -> Option<ErrorClass> {
        ErrorClass::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl std::fmt::Display for ErrorClass {
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
    pub class: ErrorClass,
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
    pub class: ErrorClass,
    /// What happened.
    pub message: String,
    /// The model call, for [`Stage::Model`].
    pub model: Option<ModelContext>,
}

impl Failure {
    /// A failure at `stage` without a model call.
    pub fn new(stage: Stage, class: ErrorClass, message: impl Into<String>) -> Self {
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
                class: ErrorClass::MalformedJson,
                message: "bad".into(),
            }],
        );
        failures.record(1, Failure::new(Stage::Sql, ErrorClass::SqlError, "x"));
        failures.record(
            4,
            Failure::new(Stage::Route, ErrorClass::RouteError, "later"),
        );
        let seen: Vec<(usize, Stage, &str)> = failures
            .iter()
            .map(|(i, f)| (i, f.stage, f.class.as_str()))
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

    /// The documented class names, in [`ErrorClass::ALL`] order: metric label values and
    /// dead-letter headers, which dashboards and consumers match on.
    const NAMES: [&str; 30] = [
        "malformed_json",
        "not_an_object",
        "missing_field",
        "type_mismatch",
        "too_deep",
        "invalid_value",
        "avro_short_header",
        "avro_bad_magic",
        "avro_unknown_schema",
        "avro_truncated",
        "avro_incompatible_schema",
        "avro_invalid",
        "avro_too_deep",
        "sql_error",
        "route_error",
        "unrepresentable_value",
        "message_too_large",
        "connect",
        "timeout",
        "deadline",
        "throttled",
        "unavailable",
        "server_error",
        "rejected",
        "misconfigured",
        "saturated",
        "contract",
        "no_replica",
        "bad_input",
        "runtime",
    ];

    #[test]
    fn error_class_names_are_the_documented_ones_and_round_trip() {
        let names: Vec<&str> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, NAMES);
        for class in ErrorClass::ALL {
            assert_eq!(ErrorClass::from_name(class.as_str()), Some(class));
            assert_eq!(class.to_string(), class.as_str());
        }
        let distinct: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(distinct.len(), ErrorClass::ALL.len(), "names are distinct");
        assert_eq!(ErrorClass::from_name("nope"), None);
    }
}
