//! The pipeline file format, version 1: what a user writes in YAML.
//!
//! Every struct denies unknown fields, every component kind is a closed `type`-tagged enum, and
//! every field is documented here: these docs become the generated JSON Schema in
//! `schemas/pipeline.schema.json` and the field reference in `docs/pipeline-reference.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::models::{InferenceStepSpec, ModelSpec};
use super::nats::{NatsSinkSpec, NatsSourceSpec};
use super::secret::Secret;

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

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
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

/// Consume Kafka topics as a consumer group, at least once.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceSpec {
    /// Comma-separated `host:port` list of bootstrap brokers.
    pub bootstrap_servers: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Consumer group; committed offsets are stored under it.
    pub group_id: String,
    /// Where a group with no committed offset starts: `earliest` (default) or `latest`.
    #[serde(default)]
    pub start_from: StartFrom,
    /// Micro-batching of records per partition.
    #[serde(default)]
    pub batch: BatchSpec,
    /// TLS and SASL settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<KafkaSecurity>,
    /// Extra librdkafka consumer properties (`fetch.min.bytes: "1"`). Properties that would
    /// break the delivery guarantee (`enable.auto.offset.store`, `enable.auto.commit`) are
    /// rejected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// Initial position of a consumer group without committed offsets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest retained record.
    #[default]
    Earliest,
    /// Only records produced after the group first joins.
    Latest,
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

fn default_max_rows() -> usize {
    4096
}

fn default_max_age() -> Duration {
    Duration::from_millis(20)
}

/// Kafka connection security.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: SecurityProtocol,
    /// TLS settings (for `ssl` and `sasl_ssl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// SASL credentials (for `sasl_plaintext` and `sasl_ssl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslSpec>,
}

/// Kafka `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    Plaintext,
    /// TLS, optionally with a client certificate.
    Ssl,
    /// SASL authentication without TLS (credentials in clear: avoid outside a lab).
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

/// TLS files.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// PEM file of CA certificates to trust (default: the system store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM client certificate, for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM private key of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Passphrase of `key_file`, if it is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_password: Option<Secret>,
    /// Check that the broker certificate matches its host name (default true).
    #[serde(default = "default_true")]
    pub verify_hostname: bool,
}

fn default_true() -> bool {
    true
}

/// SASL credentials.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaslSpec {
    /// `plain`, `scram_sha_256` or `scram_sha_512`.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password; write `${ENV_VAR}`.
    pub password: Secret,
}

/// SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaslMechanism {
    /// SASL/PLAIN.
    Plain,
    /// SCRAM-SHA-256.
    #[serde(rename = "scram_sha_256")]
    ScramSha256,
    /// SCRAM-SHA-512.
    #[serde(rename = "scram_sha_512")]
    ScramSha512,
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

/// Kafka sink: each row becomes one JSON message.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSpec {
    /// Bootstrap brokers; defaults to the Kafka source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// Target topic.
    pub topic: String,
    /// Column whose value (as a string) becomes the message key. Without it messages have no
    /// key and are spread over partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Message headers: header name → column whose value (as a string) is the header value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// TLS and SASL settings; default to the Kafka source's when `bootstrap_servers` is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<KafkaSecurity>,
    /// How rows are encoded: `{type: json}` (default) or `{type: avro, ...}`.
    #[serde(default, skip_serializing_if = "is_json")]
    pub format: SinkFormatSpec,
    /// Extra librdkafka producer properties (`linger.ms: "5"`). `enable.idempotence` cannot be
    /// turned off.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// Standard output sink (JSON lines). Delivered once written and flushed.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkSpec {}

/// JSON-lines file sink. Delivered once written and flushed (and synced, with `fsync`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkSpec {
    /// File path, relative to the working directory; created if missing, appended to otherwise.
    pub path: String,
    /// `fsync` after every batch so delivered rows survive power loss, not just a crash
    /// (default false).
    #[serde(default)]
    pub fsync: bool,
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
