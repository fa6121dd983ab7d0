//! Semantic validation: everything the types cannot express.
//!
//! Pure (no I/O, no environment) and exhaustive: every problem is collected with its path, so a
//! user fixes a file in one round. SQL column names are checked later by [`crate::plan`].
//!
//! Size: the code is under ~550 lines; the file passes the ~600-line mark only because of its
//! inline tests, which stay beside the code they pin down.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::check::Problems;
pub(crate) use super::check::is_valid_name;
use super::{
    AvroWire, ColumnSpec, FormatSpec, OnError, PipelineSpec, ProcessingSpec, SinkSpec, SourceSpec,
    SpecError,
};

/// Metadata columns the source adds to every record; declared columns may not start with `_`.
pub(crate) const METADATA_COLUMNS: [&str; 6] = [
    "_key",
    "_topic",
    "_partition",
    "_offset",
    "_timestamp",
    "_headers",
];

const MAX_WORKERS: usize = 64;
const MAX_QUEUED_BATCHES: usize = 1024;
const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Every semantic problem in `spec`, each with its path.
pub(crate) fn validate(spec: &PipelineSpec, file: &Path) -> Vec<SpecError> {
    let mut checker = Checker {
        source: &spec.source,
        problems: Problems::new(),
    };
    checker.pipeline(spec);
    checker
        .problems
        .into_vec()
        .into_iter()
        .map(|(path, message)| SpecError::at(file, path, message))
        .collect()
}

/// What a sink's validation needs to know about the rest of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct SinkContext<'a> {
    /// The pipeline's source (a sink may default to its connection, and must not write to
    /// the topics it reads).
    pub source: &'a SourceSpec,
    /// Whether this is the dead-letter sink (which writes the original bytes).
    pub dead_letter: bool,
}

struct Checker<'a> {
    /// The pipeline's source (sinks default to its connection).
    source: &'a SourceSpec,
    problems: Problems,
}

impl Checker<'_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.error(path, message);
    }

    fn pipeline(&mut self, spec: &PipelineSpec) {
        if spec.version != 1 {
            self.error(
                "version",
                format!(
                    "unsupported version {}: only version 1 exists",
                    spec.version
                ),
            );
        }
        self.name("name", &spec.name);

        match &spec.source {
            SourceSpec::Kafka(kafka) => kafka.validate("source", &mut self.problems),
            SourceSpec::Nats(nats) => nats.validate("source", &mut self.problems),
        }

        self.format(&spec.format);

        if let Some(sql) = &spec.sql
            && sql.trim().is_empty()
        {
            self.error(
                "sql",
                "is empty: write a query over the `input` table, or remove `sql` to pass \
                 decoded columns through",
            );
        }

        self.outputs(spec);

        if let Some(sink) = &spec.dead_letter {
            self.sink("dead_letter", sink, true);
        }
        if spec.on_error == Some(OnError::DeadLetter) && spec.dead_letter.is_none() {
            self.error(
                "on_error",
                "is `dead_letter` but no `dead_letter` sink is configured: add a `dead_letter` \
                 sink, or use `fail` or `drop`",
            );
        }

        self.processing("processing", &spec.processing);
        super::delivery::check_delivery(spec, &mut self.problems);

        for (path, message) in
            super::validate_models::validate_models(&spec.models, &spec.inference)
        {
            self.error(path, message);
        }
    }

    fn name(&mut self, path: &str, name: &str) {
        if !is_valid_name(name) {
            self.error(
                path,
                format!(
                    "invalid name {name:?}: expected 1 to 63 lowercase letters, digits, `-` or \
                     `_`, starting with a letter or digit"
                ),
            );
        }
    }

    fn not_empty(&mut self, path: &str, value: &str, expected: &str) {
        self.problems.not_empty(path, value, expected);
    }

    fn format(&mut self, format: &FormatSpec) {
        match format {
            FormatSpec::Json(json) => match (&json.schema, &json.columns) {
                (Some(_), Some(_)) => self.error(
                    "format",
                    "has both `schema` and `columns`: expected exactly one of them",
                ),
                (None, None) => self.error(
                    "format",
                    "has neither `schema` nor `columns`: expected exactly one of them",
                ),
                (Some(schema), None) => self.not_empty(
                    "format.schema",
                    schema,
                    "the path of an Avro (`.avsc`) or JSON Schema (`.json`) file",
                ),
                (None, Some(columns)) => self.columns("format.columns", columns),
            },
            FormatSpec::Avro(avro) => {
                self.not_empty(
                    "format.schema",
                    &avro.schema,
                    "the path of an Avro `.avsc` file",
                );
                check_registry(
                    &mut self.problems,
                    "format.registry",
                    avro.wire,
                    avro.registry.as_ref(),
                    "reads writer schemas from a Schema Registry",
                    "plain Avro is written with `schema`",
                );
            }
        }
    }

    fn columns(&mut self, path: &str, columns: &[ColumnSpec]) {
        if columns.is_empty() {
            self.error(path, "is empty: expected at least one column");
        }
        let mut seen = HashMap::new();
        for (i, column) in columns.iter().enumerate() {
            let name_path = format!("{path}[{i}].name");
            let name = column.name.as_str();
            if name.trim().is_empty() {
                self.error(name_path, "is empty: expected a column name");
                continue;
            }
            if name.starts_with('_') {
                self.error(
                    &name_path,
                    format!(
                        "column name {name:?} starts with `_`, which is reserved for the \
                         metadata columns ({}): rename it",
                        METADATA_COLUMNS
                            .iter()
                            .map(|c| format!("`{c}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            if let Some(first) = seen.insert(name, i) {
                self.error(
                    name_path,
                    format!("duplicate column name {name:?} (also at {path}[{first}].name)"),
                );
            }
        }
    }

    fn outputs(&mut self, spec: &PipelineSpec) {
        if spec.outputs.is_empty() {
            self.error("outputs", "is empty: expected at least one output");
        }
        let mut seen = HashMap::new();
        for (i, output) in spec.outputs.iter().enumerate() {
            let path = format!("outputs[{i}]");
            self.name(&format!("{path}.name"), &output.name);
            if let Some(first) = seen.insert(output.name.as_str(), i) {
                self.error(
                    format!("{path}.name"),
                    format!(
                        "duplicate output name {:?} (also at outputs[{first}].name): output \
                         names must be unique",
                        output.name
                    ),
                );
            }
            if let Some(filter) = &output.filter
                && filter.trim().is_empty()
            {
                self.error(
                    format!("{path}.where"),
                    "is empty: expected a SQL boolean expression, or remove `where` to send \
                     every row",
                );
            }
            self.payload_columns(&path, output);
            self.sink(&format!("{path}.sink"), &output.sink, false);
        }
    }

    /// `columns` and `exclude_columns`: one or the other, with distinct non-empty names.
    /// Whether the names exist is checked against the output rows when the pipeline compiles.
    fn payload_columns(&mut self, path: &str, output: &super::OutputSpec) {
        if let Some(columns) = &output.columns {
            if !output.exclude_columns.is_empty() {
                self.error(
                    format!("{path}.exclude_columns"),
                    "is set together with `columns`: list the columns to send, or the ones \
                     to leave out, not both",
                );
            }
            if columns.is_empty() {
                self.error(
                    format!("{path}.columns"),
                    "is empty: list at least one column, or remove `columns` to send every \
                     column",
                );
            }
        }
        for (field, list) in [
            ("columns", output.columns.as_deref().unwrap_or_default()),
            ("exclude_columns", output.exclude_columns.as_slice()),
        ] {
            let mut seen = HashMap::new();
            for (i, column) in list.iter().enumerate() {
                let at = format!("{path}.{field}[{i}]");
                self.not_empty(&at, column, "a column name");
                if let Some(first) = seen.insert(column.as_str(), i) {
                    self.error(
                        at,
                        format!("duplicate column {column:?} (also at {field}[{first}])"),
                    );
                }
            }
        }
    }

    fn sink(&mut self, path: &str, sink: &SinkSpec, dead_letter: bool) {
        let context = SinkContext {
            source: self.source,
            dead_letter,
        };
        let problems = &mut self.problems;
        match sink {
            SinkSpec::Kafka(kafka) => kafka.validate(path, &context, problems),
            SinkSpec::Stdout(_) => {}
            SinkSpec::Nats(nats) => nats.validate(path, &context, problems),
            SinkSpec::File(file) => file.validate(path, problems),
        }
    }

    fn processing(&mut self, path: &str, spec: &ProcessingSpec) {
        if !(1..=MAX_WORKERS).contains(&spec.workers) {
            self.error(
                format!("{path}.workers"),
                format!("is {}: expected 1 to {MAX_WORKERS}", spec.workers),
            );
        }
        if !(1..=MAX_QUEUED_BATCHES).contains(&spec.queued_batches) {
            self.error(
                format!("{path}.queued_batches"),
                format!(
                    "is {}: expected 1 to {MAX_QUEUED_BATCHES}",
                    spec.queued_batches
                ),
            );
        }
        if spec.drain_timeout > MAX_DRAIN_TIMEOUT {
            self.error(
                format!("{path}.drain_timeout"),
                format!(
                    "is {}: expected at most 10m",
                    humantime::format_duration(spec.drain_timeout)
                ),
            );
        }
    }
}

/// Checks a Schema Registry setting against the Avro wire format: required with `confluent`,
/// refused with `plain`; its URL must be valid and credentials complete.
pub(crate) fn check_registry(
    problems: &mut Problems,
    path: &str,
    wire: AvroWire,
    registry: Option<&super::SchemaRegistrySpec>,
    why: &str,
    plain: &str,
) {
    match (wire, registry) {
        (AvroWire::Confluent, None) => problems.error(
            path,
            format!("is missing: `wire: confluent` {why}; give its `url`"),
        ),
        (AvroWire::Plain, Some(_)) => problems.error(
            path,
            format!("is only used with `wire: confluent` ({plain})"),
        ),
        (_, Some(r)) => {
            if let Err(m) = super::validate_models::check_url(&r.url) {
                problems.error(format!("{path}.url"), m.to_string());
            }
            if r.password.is_some() != r.username.is_some() {
                problems.error(path, "give both `username` and `password`, or neither");
            }
        }
        _ => {}
    }
}

/// Checks a sink's `format`: none for a dead-letter sink; Avro names, namespace and registry.
pub(crate) fn check_sink_format(
    problems: &mut Problems,
    path: &str,
    format: &super::SinkFormatSpec,
    context: &SinkContext<'_>,
) {
    let super::SinkFormatSpec::Avro(avro) = format else {
        return;
    };
    if context.dead_letter {
        problems.error(
            path,
            "dead letters keep the original bytes of the failed record: remove `format`",
        );
        return;
    }
    let avro_name = |s: &str| {
        s.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    if let Some(name) = &avro.name
        && (name.contains('.') || !avro_name(name))
    {
        problems.error(
            format!("{path}.name"),
            format!(
                "{name:?} is not an Avro name: letters, digits and `_`, not starting with a digit"
            ),
        );
    }
    if !avro.namespace.is_empty() && !avro_name(&avro.namespace) {
        problems.error(
            format!("{path}.namespace"),
            format!(
                "{:?} is not an Avro namespace: dot-separated Avro names",
                avro.namespace
            ),
        );
    }
    check_registry(
        problems,
        &format!("{path}.registry"),
        avro.wire,
        avro.registry.as_ref(),
        "registers the writer schema in a Schema Registry",
        "plain datums carry no schema id",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::kafka::is_legal_topic;
    use crate::spec::{
        ColumnSpec, ColumnType, FileSinkSpec, KafkaSecurity, KafkaSinkSpec, KafkaSourceSpec,
        SaslMechanism, SaslSpec, Secret, SecurityProtocol, TlsSpec, parse,
    };

    const VALID: &str = r#"
name: orders-enrich
source:
  type: kafka
  bootstrap_servers: localhost:9092
  topics: [orders]
  group_id: streamgate-orders
format:
  type: json
  columns:
    - { name: id, type: string }
    - { name: amount, type: float64 }
sql: SELECT id, amount FROM input
outputs:
  - name: high
    where: amount > 100
    sink: { type: kafka, topic: orders.high }
  - name: all
    sink: { type: stdout }
"#;

    fn spec() -> PipelineSpec {
        parse(VALID, Path::new("p.yaml")).unwrap()
    }

    fn errors(spec: &PipelineSpec) -> Vec<String> {
        validate(spec, Path::new("p.yaml"))
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    }

    fn kafka_source(spec: &mut PipelineSpec) -> &mut KafkaSourceSpec {
        let SourceSpec::Kafka(kafka) = &mut spec.source else {
            panic!("kafka source expected")
        };
        kafka
    }

    fn kafka_sink(spec: &mut PipelineSpec, output: usize) -> &mut KafkaSinkSpec {
        match &mut spec.outputs[output].sink {
            SinkSpec::Kafka(kafka) => kafka,
            _ => panic!("kafka sink expected"),
        }
    }

    /// The single error of `spec`, as `path: message`.
    fn single(spec: &PipelineSpec) -> String {
        let mut errors = errors(spec);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.remove(0)
    }

    #[test]
    fn valid_spec_has_no_errors() {
        assert_eq!(errors(&spec()), Vec::<String>::new());
    }

    #[test]
    fn names() {
        for good in ["a", "orders-v2", "0_x", &"a".repeat(63)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "Orders", "-x", "_x", "a b", "é", &"a".repeat(64)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        let mut spec = spec();
        spec.name = "Orders".into();
        assert!(single(&spec).starts_with("name: invalid name \"Orders\": expected"));
    }

    #[test]
    fn topics() {
        for good in ["orders", "a.b_c-D9", &"t".repeat(249)] {
            assert!(is_legal_topic(good), "{good}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "ö", &"t".repeat(250)] {
            assert!(!is_legal_topic(bad), "{bad}");
        }
        let mut spec = spec();
        kafka_source(&mut spec).topics = vec![];
        assert_eq!(
            single(&spec),
            "source.topics: is empty: expected at least one topic"
        );
        kafka_source(&mut spec).topics = vec!["a".into(), "b c".into(), "a".into()];
        assert_eq!(
            errors(&spec),
            [
                "source.topics[1]: invalid topic name \"b c\": expected 1 to 249 characters \
                 from letters, digits, `.`, `_` and `-`",
                "source.topics[2]: topic \"a\" is listed twice (also at source.topics[0])",
            ]
        );
    }

    #[test]
    fn version() {
        let mut spec = spec();
        spec.version = 2;
        assert_eq!(
            single(&spec),
            "version: unsupported version 2: only version 1 exists"
        );
    }

    #[test]
    fn source_fields_and_batch_bounds() {
        let mut spec = spec();
        let source = kafka_source(&mut spec);
        source.bootstrap_servers = " ".into();
        source.group_id = String::new();
        source.batch.max_rows = 0;
        source.batch.max_age = Duration::from_secs(61);
        assert_eq!(
            errors(&spec),
            [
                "source.bootstrap_servers: is empty: expected a comma-separated `host:port` \
                 list of brokers",
                "source.group_id: is empty: expected a consumer group name",
                "source.batch.max_rows: is 0: expected 1 to 100000",
                "source.batch.max_age: is 1m 1s: expected between 1ms and 60s",
            ]
        );
        let source = kafka_source(&mut spec);
        source.bootstrap_servers = "b:9092".into();
        source.group_id = "g".into();
        source.batch.max_rows = 100_001;
        source.batch.max_age = Duration::ZERO;
        assert_eq!(errors(&spec).len(), 2);
        let source = kafka_source(&mut spec);
        source.batch.max_rows = 100_000;
        source.batch.max_age = Duration::from_secs(60);
        assert_eq!(errors(&spec), Vec::<String>::new());
    }

    #[test]
    fn reserved_properties() {
        let mut spec = spec();
        let source = kafka_source(&mut spec);
        for key in [
            "enable.auto.commit",
            "enable.auto.offset.store",
            "group.id",
            "bootstrap.servers",
            "fetch.min.bytes",
        ] {
            source.properties.insert(key.into(), "x".into());
        }
        let sink = kafka_sink(&mut spec, 0);
        sink.properties
            .insert("enable.idempotence".into(), "false".into());
        sink.properties.insert("linger.ms".into(), "5".into());
        assert_eq!(
            errors(&spec),
            [
                "source.properties[\"bootstrap.servers\"]: cannot be set: set \
                 `bootstrap_servers` instead",
                "source.properties[\"enable.auto.commit\"]: cannot be set: streamgate commits \
                 offsets itself, only after records are delivered",
                "source.properties[\"enable.auto.offset.store\"]: cannot be set: streamgate \
                 stores offsets itself, only after records are delivered",
                "source.properties[\"group.id\"]: cannot be set: set `group_id` instead",
                "outputs[0].sink.properties[\"enable.idempotence\"]: cannot be set: the \
                 producer is always idempotent so retries cannot duplicate or reorder records",
            ]
        );
    }

    #[test]
    fn security_combinations() {
        let sasl = || SaslSpec {
            mechanism: SaslMechanism::ScramSha512,
            username: "u".into(),
            password: Secret::new("p"),
        };
        let tls = || TlsSpec {
            ca_file: Some("ca.pem".into()),
            cert_file: None,
            key_file: None,
            key_password: None,
            verify_hostname: true,
        };
        let case = |protocol, tls: Option<TlsSpec>, sasl| {
            let mut spec = spec();
            kafka_source(&mut spec).security = Some(KafkaSecurity {
                protocol,
                tls,
                sasl,
            });
            errors(&spec)
        };
        assert!(case(SecurityProtocol::SaslSsl, Some(tls()), Some(sasl())).is_empty());
        assert!(case(SecurityProtocol::SaslPlaintext, None, Some(sasl())).is_empty());
        assert!(case(SecurityProtocol::Ssl, Some(tls()), None).is_empty());
        assert!(case(SecurityProtocol::Plaintext, None, None).is_empty());
        assert_eq!(
            case(SecurityProtocol::SaslSsl, None, None),
            [
                "source.security.sasl: is required with protocol `sasl_ssl`: add `mechanism`, \
              `username` and `password`"
            ]
        );
        assert_eq!(
            case(SecurityProtocol::Ssl, None, Some(sasl())),
            [
                "source.security.sasl: is not used with protocol `ssl`: use protocol `sasl_ssl` \
              (or `sasl_plaintext`), or remove `sasl`"
            ]
        );
        assert_eq!(
            case(SecurityProtocol::SaslPlaintext, Some(tls()), Some(sasl())),
            [
                "source.security.tls: is not used with protocol `sasl_plaintext`: use protocol \
              `ssl` or `sasl_ssl`, or remove `tls`"
            ]
        );
        let mut half_mtls = tls();
        half_mtls.cert_file = Some("client.pem".into());
        half_mtls.key_password = Some(Secret::new("k"));
        let mut empty_password = sasl();
        empty_password.password = Secret::new("");
        assert_eq!(
            case(
                SecurityProtocol::SaslSsl,
                Some(half_mtls),
                Some(empty_password)
            ),
            [
                "source.security.sasl.password: is empty: expected a password, written as \
                 `${ENV_VAR}`",
                "source.security.tls.key_file: is required when `cert_file` is set: give the \
                 client certificate's key",
                "source.security.tls.key_password: is set without `key_file`: give the \
                 encrypted key file, or remove `key_password`",
            ]
        );
    }

    #[test]
    fn format_columns() {
        let mut spec = spec();
        let FormatSpec::Json(json) = &mut spec.format else {
            panic!("json format expected");
        };
        json.schema = Some("record.avsc".into());
        assert_eq!(
            single(&spec),
            "format: has both `schema` and `columns`: expected exactly one of them"
        );
        let FormatSpec::Json(json) = &mut spec.format else {
            panic!("json format expected");
        };
        json.schema = None;
        json.columns = None;
        assert_eq!(
            single(&spec),
            "format: has neither `schema` nor `columns`: expected exactly one of them"
        );
        let FormatSpec::Json(json) = &mut spec.format else {
            panic!("json format expected");
        };
        json.columns = Some(vec![]);
        assert_eq!(
            single(&spec),
            "format.columns: is empty: expected at least one column"
        );

        let column = |name: &str| ColumnSpec {
            name: name.into(),
            data_type: ColumnType::String,
            nullable: false,
        };
        let FormatSpec::Json(json) = &mut spec.format else {
            panic!("json format expected");
        };
        json.columns = Some(vec![column("id"), column(""), column("_key"), column("id")]);
        let found = errors(&spec);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(
            found[0],
            "format.columns[1].name: is empty: expected a column name"
        );
        assert!(found[1].starts_with(
            "format.columns[2].name: column name \"_key\" starts with `_`, which is reserved \
             for the metadata columns (`_key`, `_topic`, "
        ));
        assert_eq!(
            found[2],
            "format.columns[3].name: duplicate column name \"id\" (also at \
             format.columns[0].name)"
        );
        spec.sql = Some("  ".into());
        assert!(errors(&spec).iter().any(|e| e.starts_with("sql: is empty")));
    }

    #[test]
    fn outputs() {
        let mut spec = spec();
        spec.outputs[1].name = "high".into();
        assert_eq!(
            single(&spec),
            "outputs[1].name: duplicate output name \"high\" (also at outputs[0].name): output \
             names must be unique"
        );
        spec.outputs.clear();
        assert_eq!(
            single(&spec),
            "outputs: is empty: expected at least one output"
        );
    }

    #[test]
    fn payload_columns() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut spec = spec();
        spec.outputs[0].columns = Some(names(&["id", "amount"]));
        assert!(errors(&spec).is_empty());
        spec.outputs[0].exclude_columns = names(&["amount"]);
        assert_eq!(
            single(&spec),
            "outputs[0].exclude_columns: is set together with `columns`: list the columns to \
             send, or the ones to leave out, not both"
        );
        let mut spec = self::spec();
        spec.outputs[0].columns = Some(Vec::new());
        assert_eq!(
            single(&spec),
            "outputs[0].columns: is empty: list at least one column, or remove `columns` to \
             send every column"
        );
        let mut spec = self::spec();
        spec.outputs[1].exclude_columns = names(&["amount", " ", "amount"]);
        assert_eq!(
            errors(&spec),
            [
                "outputs[1].exclude_columns[1]: is empty: expected a column name",
                "outputs[1].exclude_columns[2]: duplicate column \"amount\" (also at \
                 exclude_columns[0])"
            ]
        );
    }

    #[test]
    fn kafka_sinks() {
        let mut spec = spec();
        let sink = kafka_sink(&mut spec, 0);
        sink.topic = "orders".into();
        assert!(single(&spec).starts_with(
            "outputs[0].sink.topic: topic \"orders\" is also a source topic on the same cluster"
        ));
        // On another cluster the same topic name is fine.
        kafka_sink(&mut spec, 0).bootstrap_servers = Some("other:9092".into());
        assert!(errors(&spec).is_empty());
        let sink = kafka_sink(&mut spec, 0);
        sink.topic = "bad topic".into();
        sink.bootstrap_servers = Some(String::new());
        sink.key = Some(String::new());
        assert_eq!(
            errors(&spec),
            [
                "outputs[0].sink.bootstrap_servers: is empty: expected a comma-separated \
                 `host:port` list of brokers",
                "outputs[0].sink.topic: invalid topic name \"bad topic\": expected 1 to 249 \
                 characters from letters, digits, `.`, `_` and `-`",
                "outputs[0].sink.key: is empty: expected a column name",
            ]
        );
    }

    #[test]
    fn dead_letter_and_processing() {
        let mut spec = spec();
        spec.on_error = Some(OnError::DeadLetter);
        spec.processing.workers = 0;
        spec.processing.queued_batches = 1025;
        spec.processing.drain_timeout = Duration::from_secs(601);
        assert_eq!(
            errors(&spec),
            [
                "on_error: is `dead_letter` but no `dead_letter` sink is configured: add a \
                 `dead_letter` sink, or use `fail` or `drop`",
                "processing.workers: is 0: expected 1 to 64",
                "processing.queued_batches: is 1025: expected 1 to 1024",
                "processing.drain_timeout: is 10m 1s: expected at most 10m",
            ]
        );
        spec.dead_letter = Some(SinkSpec::File(FileSinkSpec {
            path: String::new(),
            fsync: false,
        }));
        spec.processing = ProcessingSpec::default();
        assert_eq!(
            single(&spec),
            "dead_letter.path: is empty: expected a file path"
        );
    }
}
