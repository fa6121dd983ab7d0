//! The pipeline file format, version 1: what a user writes in YAML.
//!
//! Every struct denies unknown fields, every component kind is a closed `type`-tagged enum, and
//! every field is documented here: these docs become the generated JSON Schema in
//! `schemas/pipeline.schema.json` and the field reference in `docs/pipeline-reference.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::check::Problems;
use super::models::{InferenceStepSpec, ModelSpec};
use super::secret::Secret;
use crate::sink::file::spec::FileSinkSpec;
use crate::sink::kafka::spec::KafkaSinkSpec;
use crate::sink::nats::spec::NatsSinkSpec;
use crate::sink::stdout::spec::StdoutSinkSpec;
use crate::source::kafka::spec::KafkaSourceSpec;
use crate::source::nats::spec::NatsSourceSpec;

/// One pipeline: a source, a record format, optional SQL preprocessing, routed outputs and a
/// dead-letter sink.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Format version of this file. Only `1` exists.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Pipeline name: lowercase letters, digits, `-` and `_`. Used in metrics labels, logs and
    /// dead-letter headers, so keep it stable.
    pub name: String,
    /// Where records come from.
    pub source: SourceSpec,
    /// How record payloads are decoded into columns.
    pub format: FormatSpec,
    /// DataFusion SQL run over every micro-batch. The table is called `input` and holds the
    /// decoded columns plus the source metadata columns `_key`, `_topic`, `_partition`,
    /// `_offset`, `_timestamp` and `_headers`. Only stateless queries make sense (projection,
    /// filters, scalar functions, `CASE`); omit it to pass decoded columns through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Model calls run after SQL and before routing, in order of declaration but concurrently
    /// per batch; each adds its output columns to the rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inference: Vec<InferenceStepSpec>,
    /// Models declared in this file (merged with `model_registry`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelSpec>,
    /// Path, relative to this file, of a shared model registry file (`models: {...}`), so
    /// several pipelines and the gateway API declare their models once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_registry: Option<String>,
    /// Where results go. A row is sent to every output whose `where` matches; rows that match
    /// none are counted as filtered.
    pub outputs: Vec<OutputSpec>,
    /// Sink for records that fail decoding, SQL or encoding. Each dead-letter record keeps the
    /// original bytes, key and headers and adds `streamgate.*` context headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<SinkSpec>,
    /// What to do with a record that fails: `dead_letter` (default when `dead_letter` is set),
    /// `fail` (stop the pipeline without committing it; default otherwise) or `drop` (skip and
    /// count it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,
    /// What to do with a dead letter the dead-letter sink refuses for good even in its bounded
    /// form and then as its context alone (a sink whose message limit cannot hold the context
    /// headers; a Kafka broker refusing it later is answered with the context alone first): `drop`
    /// (default: log it with its source position, count it in
    /// `streamgate_dead_letters_undeliverable_total` and carry on, so the partition never
    /// stalls) or `fail` (stop without committing it). A dead letter larger than the sink's
    /// limit is first cut to fit (see the dead-letter docs); transient failures are retried,
    /// never dropped.
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_undeliverable_dead_letter: UndeliverableDeadLetter,
    /// Concurrency and buffering.
    #[serde(default)]
    pub processing: ProcessingSpec,
    /// When most records fail (a model that breaks its contract on every answer, a schema
    /// change upstream), dead-lettering them all would empty the stream into the dead-letter
    /// topic. Past `max_failure_rate` the pipeline instead holds the failing batch, pauses
    /// consumption (backpressure), reports it (logs, `streamgate_systematic_failure`,
    /// `/readyz`, `/admin/pipelines`) and dead-letters nothing more until a retry succeeds or
    /// an operator resumes the pipeline (`POST /admin/pipelines/<name>/resume`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_systematic_failure: SystematicFailureSpec,
    /// The delivery guarantee: `at_least_once` (default: every record's outputs are published
    /// at least once; a crash replays up to ~250 ms of delivered work) or `exactly_once`
    /// (Kafka to Kafka only: outputs, dead letters and input offsets are committed in one
    /// Kafka transaction, so `read_committed` readers see each record's outputs exactly once).
    #[serde(default, skip_serializing_if = "is_default")]
    pub delivery: Delivery,
    /// With `delivery: exactly_once`, how often the open transaction is committed (default
    /// `"100ms"`). Outputs become visible to `read_committed` readers at commits, so this
    /// bounds their added latency; longer intervals cost less per record.
    #[serde(default = "default_transaction_interval", with = "super::duration")]
    #[schemars(with = "String")]
    pub transaction_interval: Duration,
    /// With `delivery: exactly_once`, the producer's `transactional.id`. Give each instance
    /// of the pipeline its own stable id (`fraud-${HOSTNAME}`): a restarted instance then
    /// fences its predecessor and aborts its open transaction at once. Default:
    /// `streamgate-<pipeline>-<random>`, unique per process, so a crashed instance's open
    /// transaction is aborted only after `transaction.timeout.ms` (10 s by default here),
    /// and until then `read_committed` readers and the partitions' next owner wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
}

fn default_transaction_interval() -> Duration {
    Duration::from_millis(100)
}

/// When failures count as systematic (see `on_systematic_failure`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystematicFailureSpec {
    /// Share of records (0 to 1) failing within `window` above which failures count as
    /// systematic (default 0.5). `1` turns the guard off.
    #[serde(default = "default_max_failure_rate")]
    pub max_failure_rate: f64,
    /// Least records the window must hold before its rate counts (default 500), so a few bad
    /// records at start-up do not trip it.
    #[serde(default = "default_min_records")]
    pub min_records: usize,
    /// How far back the rate looks (default `"60s"`).
    #[serde(default = "default_failure_window", with = "super::duration")]
    #[schemars(with = "String")]
    pub window: Duration,
    /// How often a held batch is processed again to see whether the cause is gone (default
    /// `"10s"`).
    #[serde(default = "default_retry_every", with = "super::duration")]
    #[schemars(with = "String")]
    pub retry_every: Duration,
}

impl Default for SystematicFailureSpec {
    fn default() -> Self {
        SystematicFailureSpec {
            max_failure_rate: default_max_failure_rate(),
            min_records: default_min_records(),
            window: default_failure_window(),
            retry_every: default_retry_every(),
        }
    }
}

fn default_max_failure_rate() -> f64 {
    0.5
}

fn default_min_records() -> usize {
    500
}

fn default_failure_window() -> Duration {
    Duration::from_secs(60)
}

fn default_retry_every() -> Duration {
    Duration::from_secs(10)
}

/// The delivery guarantee of a pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Outputs are published at least once; a crash or rebalance may publish some again.
    #[default]
    AtLeastOnce,
    /// Outputs and input offsets are committed together in Kafka transactions.
    ExactlyOnce,
}

fn default_version() -> u32 {
    1
}

/// Policy for records that fail in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Write the record to the `dead_letter` sink and carry on.
    DeadLetter,
    /// Stop the pipeline; the failed record and everything after it is redelivered on restart.
    Fail,
    /// Skip the record; it is counted in `streamgate_records_dropped_total`.
    Drop,
}

/// Policy for a dead letter the dead-letter sink refuses for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UndeliverableDeadLetter {
    /// Log it, count it in `streamgate_dead_letters_undeliverable_total`, and carry on.
    #[default]
    Drop,
    /// Stop the pipeline without committing it (it is redelivered on restart).
    Fail,
}

pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// A record source.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceSpec {
    /// Kafka consumer-group source.
    Kafka(KafkaSourceSpec),
    /// NATS core subjects or a JetStream durable consumer.
    Nats(NatsSourceSpec),
}

/// Micro-batch bounds: a batch is handed on when it reaches `max_rows` or its first record is
/// `max_age` old, whichever comes first.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Most records per batch (default 4096). Small batches of several partitions that are
    /// due together are merged up to this size. Larger batches spread each batch's fixed costs
    /// (SQL execution, routing, one produce burst per partition) over more records; `max_age`,
    /// not this, bounds latency when traffic is light.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Longest a record waits for its batch to fill (default `"20ms"`): the latency you trade
    /// for throughput.
    #[serde(default = "default_max_age", with = "super::duration")]
    #[schemars(with = "String")]
    pub max_age: Duration,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            max_rows: default_max_rows(),
            max_age: default_max_age(),
        }
    }
}

impl BatchSpec {
    /// Checks the bounds: 1 to 100,000 rows, 1 ms to 60 s.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if !(1..=MAX_BATCH_ROWS).contains(&self.max_rows) {
            problems.error(
                format!("{path}.max_rows"),
                format!("is {}: expected 1 to {MAX_BATCH_ROWS}", self.max_rows),
            );
        }
        if !(MIN_BATCH_AGE..=MAX_BATCH_AGE).contains(&self.max_age) {
            problems.error(
                format!("{path}.max_age"),
                format!(
                    "is {}: expected between 1ms and 60s",
                    humantime::format_duration(self.max_age)
                ),
            );
        }
    }
}

const MAX_BATCH_ROWS: usize = 100_000;
const MIN_BATCH_AGE: Duration = Duration::from_millis(1);
const MAX_BATCH_AGE: Duration = Duration::from_secs(60);

fn default_max_rows() -> usize {
    4096
}

fn default_max_age() -> Duration {
    Duration::from_millis(20)
}

/// How payloads are decoded.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FormatSpec {
    /// One JSON object per message.
    Json(JsonFormatSpec),
    /// One Avro datum per message: plain (written with `schema`) or in the Confluent wire
    /// format (magic byte, schema id, datum) resolved against a Schema Registry.
    Avro(AvroFormatSpec),
}

/// Avro records.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AvroFormatSpec {
    /// Path, relative to the pipeline file, of the reader schema (`.avsc`): the columns the
    /// pipeline sees. Writer schemas are resolved to it by the Avro rules (added fields take
    /// their defaults, removed fields are dropped).
    pub schema: String,
    /// `plain` (default: the bare datum, written with `schema`) or `confluent` (magic byte 0,
    /// 4-byte big-endian schema id, datum; the writer schema comes from `registry`).
    #[serde(default)]
    pub wire: AvroWire,
    /// Schema Registry for `wire: confluent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<SchemaRegistrySpec>,
}

/// How Avro datums are framed in a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AvroWire {
    /// The bare datum, written with the reader schema.
    #[default]
    Plain,
    /// Confluent wire format: `0x00`, schema id (4 bytes, big-endian), datum.
    Confluent,
}

/// A Confluent-compatible Schema Registry.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistrySpec {
    /// Base URL (`http://schema-registry:8081`).
    pub url: String,
    /// Basic-auth user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic-auth password; write `${ENV_VAR}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

/// How a Kafka or NATS sink encodes rows.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkFormatSpec {
    /// One JSON object per row (default).
    #[default]
    Json,
    /// One Avro datum per row, with a writer schema derived from the output columns.
    Avro(AvroSinkFormatSpec),
}

/// Avro output.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AvroSinkFormatSpec {
    /// Path, relative to the pipeline file, of the writer schema (`.avsc`). Each record field
    /// takes the column of the same name (fields with a default may have no column; strings
    /// become enum symbols; values are wrapped in unions). Without it the writer schema is
    /// derived from the output columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Record name of a derived writer schema (default: the output's name, `-` replaced by
    /// `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of a derived writer schema's record (default `streamgate`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// `plain` (bare datums; readers need the schema out of band) or `confluent` (magic byte,
    /// schema id, datum; the schema is registered in `registry` at start).
    #[serde(default)]
    pub wire: AvroWire,
    /// Schema Registry for `wire: confluent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<SchemaRegistrySpec>,
    /// Subject the schema is registered under: `topic_name` (default, `<topic>-value`),
    /// `record_name` (`<namespace>.<name>`) or `topic_record_name`
    /// (`<topic>-<namespace>.<name>`). For NATS sinks the topic is the subject's literal
    /// prefix.
    #[serde(default)]
    pub subject_strategy: SubjectStrategy,
}

fn default_namespace() -> String {
    "streamgate".to_string()
}

/// Schema Registry subject naming strategy (as in Confluent's serializers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubjectStrategy {
    /// `<topic>-value`.
    #[default]
    TopicName,
    /// `<namespace>.<name>`.
    RecordName,
    /// `<topic>-<namespace>.<name>`.
    TopicRecordName,
}

/// JSON records with an explicit schema: give exactly one of `schema` or `columns`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonFormatSpec {
    /// Path, relative to the pipeline file, of an Avro schema (`.avsc`) or JSON Schema
    /// (`.json`) describing the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Columns declared inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<ColumnSpec>>,
}

/// One declared column.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Field name in the JSON object and column name in SQL.
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// Whether the field may be missing or `null` (default false: a record without it is bad
    /// input and goes to the dead-letter sink).
    #[serde(default)]
    pub nullable: bool,
}

/// Column types of declared columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// `true` / `false`.
    Boolean,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// 32-bit float.
    Float32,
    /// 64-bit float.
    Float64,
    /// UTF-8 string.
    String,
    /// Timestamp with millisecond precision in UTC: an RFC 3339 string or epoch milliseconds.
    Timestamp,
    /// Calendar date (`"2026-11-26"`).
    Date,
}

/// One output: an optional filter and a sink.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Output name: used in metrics labels and logs.
    pub name: String,
    /// SQL boolean expression over the SQL result columns (`risk = 'high'`); rows for which it
    /// is not true are not sent to this output. Omit to send every row.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The columns each message's payload carries, in this order (for example
    /// `[transaction_id, fraud_score]`). Omit to send every column. The sink's key, headers and
    /// subject may still use columns left out. Not together with `exclude_columns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Columns left out of each message's payload, for example the model's feature columns;
    /// every other column is sent, in SQL order. The sink's key, headers and subject may still
    /// use them. Not together with `columns`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_columns: Vec<String>,
    /// Where matching rows go.
    pub sink: SinkSpec,
}

/// A sink.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkSpec {
    /// Produce to a Kafka topic with an idempotent producer.
    Kafka(Box<KafkaSinkSpec>),
    /// Write JSON lines to standard output.
    Stdout(StdoutSinkSpec),
    /// Append JSON lines to a file.
    File(FileSinkSpec),
    /// Publish to NATS subjects or a JetStream stream.
    Nats(Box<NatsSinkSpec>),
}

/// Concurrency and buffering of the pipeline.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessingSpec {
    /// Batches processed concurrently (default 2). Batches of one partition always go to the
    /// same worker, so per-partition order is kept.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Batches queued per worker before the source pauses consumption (default 4). Bounds
    /// memory: at most `workers × queued_batches × batch.max_rows` records wait.
    #[serde(default = "default_queued_batches")]
    pub queued_batches: usize,
    /// On shutdown or partition revocation, how long to wait for in-flight batches to be
    /// delivered before committing what is done (default `"30s"`).
    #[serde(default = "default_drain_timeout", with = "super::duration")]
    #[schemars(with = "String")]
    pub drain_timeout: Duration,
}

impl Default for ProcessingSpec {
    fn default() -> Self {
        ProcessingSpec {
            workers: default_workers(),
            queued_batches: default_queued_batches(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

fn default_workers() -> usize {
    2
}

fn default_queued_batches() -> usize {
    4
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

impl PipelineSpec {
    /// The effective error policy.
    pub fn error_policy(&self) -> OnError {
        self.on_error.unwrap_or(if self.dead_letter.is_some() {
            OnError::DeadLetter
        } else {
            OnError::Fail
        })
    }
}

/// Whether a sink format is the default (JSON), to keep it out of serialized specs.
pub(crate) fn is_json(format: &SinkFormatSpec) -> bool {
    matches!(format, SinkFormatSpec::Json)
}
