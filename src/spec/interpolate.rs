//! Environment interpolation into string values.
//!
//! Runs after parsing, on the typed spec, so a variable can only ever become (part of) one
//! string value: it can never add keys, list items or change the document's structure.
//!
//! Syntax, in every string value (including secrets, list elements and map values, but not map
//! keys):
//! - `${VAR}`: the value of `VAR`; an error if it is not set;
//! - `${VAR:-default}`: the value of `VAR`, or `default` if it is unset or empty;
//! - `$${`: a literal `${`; any other `$` is kept as it is.
//!
//! Substituted values must not contain control characters (newlines, tabs, ...): they could
//! smuggle extra lines into librdkafka properties or SQL. Errors name the variable and the
//! path but never show a value, since variables usually hold secrets.
//!
//! Size: the code is under ~550 lines; the file passes the ~600-line mark only because of its
//! inline tests, which stay beside the code they pin down.

use std::path::Path;

use super::{
    AvroFormatSpec, ColumnSpec, FileSinkSpec, FormatSpec, JsonFormatSpec, KafkaSecurity,
    KafkaSinkSpec, KafkaSourceSpec, NatsAuth, NatsSinkSpec, NatsSourceSpec, NatsTls, OutputSpec,
    PipelineSpec, SaslSpec, SchemaRegistrySpec, Secret, SinkFormatSpec, SinkSpec, SourceSpec,
    SpecError, StdoutSinkSpec, TlsSpec,
};

/// Interpolates one secret setting outside a pipeline (the gateway's JWT secret) by the same
/// rules.
pub(crate) fn interpolate_secret(
    secret: &mut Secret,
    path: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<SpecError> {
    let mut walker = Walker {
        file,
        env,
        errors: Vec::new(),
    };
    walker.secret(path, secret);
    walker.errors
}

/// Interpolates a model registry file the same way as a pipeline.
pub(crate) fn interpolate_registry(
    registry: &mut super::ModelRegistrySpec,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<SpecError> {
    let mut walker = Walker {
        file,
        env,
        errors: Vec::new(),
    };
    walker.models("models", &mut registry.models);
    walker.errors
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string value of `spec`, looking variables
/// up with `env`. Returns every problem found, each with its path; a string with a problem is
/// left unchanged.
pub(crate) fn interpolate(
    spec: &mut PipelineSpec,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<SpecError> {
    let mut walker = Walker {
        file,
        env,
        errors: Vec::new(),
    };
    walker.pipeline(spec);
    walker.errors
}

/// Walks the typed spec. Every visitor destructures its struct completely, so a new field
/// cannot be added to the format without deciding here whether it is interpolated.
pub(super) struct Walker<'a> {
    file: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<SpecError>,
}

impl Walker<'_> {
    fn pipeline(&mut self, spec: &mut PipelineSpec) {
        let PipelineSpec {
            version: _,
            name,
            source,
            format,
            sql,
            inference,
            models,
            model_registry,
            outputs,
            dead_letter,
            on_error: _,
            on_undeliverable_dead_letter: _,
            processing: _,
            on_systematic_failure: _,
            delivery: _,
            transaction_interval: _,
            transactional_id,
        } = spec;
        self.string("name", name);
        self.opt_string("transactional_id", transactional_id);
        self.source("source", source);
        self.format("format", format);
        self.opt_string("sql", sql);
        for (i, step) in inference.iter_mut().enumerate() {
            self.inference_step(&format!("inference[{i}]"), step);
        }
        self.models("models", models);
        self.opt_string("model_registry", model_registry);
        for (i, output) in outputs.iter_mut().enumerate() {
            self.output(&format!("outputs[{i}]"), output);
        }
        if let Some(sink) = dead_letter {
            self.sink("dead_letter", sink);
        }
    }

    fn source(&mut self, path: &str, source: &mut SourceSpec) {
        match source {
            SourceSpec::Kafka(kafka) => self.kafka_source(path, kafka),
            SourceSpec::Nats(nats) => {
                let NatsSourceSpec {
                    servers,
                    auth,
                    tls,
                    subjects,
                    queue_group,
                    jetstream,
                    delivery: _,
                    batch: _,
                } = nats;
                self.string(&format!("{path}.servers"), servers);
                self.nats_auth_tls(path, auth, tls);
                for (i, subject) in subjects.iter_mut().enumerate() {
                    self.string(&format!("{path}.subjects[{i}]"), subject);
                }
                self.opt_string(&format!("{path}.queue_group"), queue_group);
                if let Some(js) = jetstream {
                    self.string(&format!("{path}.jetstream.stream"), &mut js.stream);
                    self.string(&format!("{path}.jetstream.durable"), &mut js.durable);
                }
            }
        }
    }

    fn kafka_source(&mut self, path: &str, spec: &mut KafkaSourceSpec) {
        let KafkaSourceSpec {
            bootstrap_servers,
            topics,
            group_id,
            start_from: _,
            batch: _,
            security,
            properties,
        } = spec;
        self.string(&format!("{path}.bootstrap_servers"), bootstrap_servers);
        for (i, topic) in topics.iter_mut().enumerate() {
            self.string(&format!("{path}.topics[{i}]"), topic);
        }
        self.string(&format!("{path}.group_id"), group_id);
        if let Some(security) = security {
            self.security(&format!("{path}.security"), security);
        }
        for (key, value) in properties.iter_mut() {
            self.string(&format!("{path}.properties[{key:?}]"), value);
        }
    }

    fn nats_auth_tls(
        &mut self,
        path: &str,
        auth: &mut Option<NatsAuth>,
        tls: &mut Option<NatsTls>,
    ) {
        match auth {
            None => {}
            Some(NatsAuth::Token { token }) => self.secret(&format!("{path}.auth.token"), token),
            Some(NatsAuth::UserPassword { username, password }) => {
                self.string(&format!("{path}.auth.username"), username);
                self.secret(&format!("{path}.auth.password"), password);
            }
            Some(NatsAuth::Nkey { seed }) => self.secret(&format!("{path}.auth.seed"), seed),
            Some(NatsAuth::Credentials { file }) => self.string(&format!("{path}.auth.file"), file),
        }
        if let Some(NatsTls {
            ca_file,
            cert_file,
            key_file,
        }) = tls
        {
            self.opt_string(&format!("{path}.tls.ca_file"), ca_file);
            self.opt_string(&format!("{path}.tls.cert_file"), cert_file);
            self.opt_string(&format!("{path}.tls.key_file"), key_file);
        }
    }

    fn security(&mut self, path: &str, spec: &mut KafkaSecurity) {
        let KafkaSecurity {
            protocol: _,
            tls,
            sasl,
        } = spec;
        if let Some(tls) = tls {
            self.tls(&format!("{path}.tls"), tls);
        }
        if let Some(sasl) = sasl {
            self.sasl(&format!("{path}.sasl"), sasl);
        }
    }

    fn tls(&mut self, path: &str, spec: &mut TlsSpec) {
        let TlsSpec {
            ca_file,
            cert_file,
            key_file,
            key_password,
            verify_hostname: _,
        } = spec;
        self.opt_string(&format!("{path}.ca_file"), ca_file);
        self.opt_string(&format!("{path}.cert_file"), cert_file);
        self.opt_string(&format!("{path}.key_file"), key_file);
        if let Some(secret) = key_password {
            self.secret(&format!("{path}.key_password"), secret);
        }
    }

    fn sasl(&mut self, path: &str, spec: &mut SaslSpec) {
        let SaslSpec {
            mechanism: _,
            username,
            password,
        } = spec;
        self.string(&format!("{path}.username"), username);
        self.secret(&format!("{path}.password"), password);
    }

    fn format(&mut self, path: &str, format: &mut FormatSpec) {
        match format {
            FormatSpec::Json(json) => {
                let JsonFormatSpec { schema, columns } = json;
                self.opt_string(&format!("{path}.schema"), schema);
                for (i, column) in columns.iter_mut().flatten().enumerate() {
                    let ColumnSpec {
                        name,
                        data_type: _,
                        nullable: _,
                    } = column;
                    self.string(&format!("{path}.columns[{i}].name"), name);
                }
            }
            FormatSpec::Avro(avro) => {
                let AvroFormatSpec {
                    schema,
                    wire: _,
                    registry,
                } = avro;
                self.string(&format!("{path}.schema"), schema);
                if let Some(r) = registry {
                    self.registry(&format!("{path}.registry"), r);
                }
            }
        }
    }

    fn registry(&mut self, path: &str, spec: &mut SchemaRegistrySpec) {
        let SchemaRegistrySpec {
            url,
            username,
            password,
        } = spec;
        self.string(&format!("{path}.url"), url);
        self.opt_string(&format!("{path}.username"), username);
        if let Some(p) = password {
            self.secret(&format!("{path}.password"), p);
        }
    }

    fn sink_format(&mut self, path: &str, format: &mut SinkFormatSpec) {
        if let SinkFormatSpec::Avro(avro) = format {
            self.opt_string(&format!("{path}.schema"), &mut avro.schema);
            self.opt_string(&format!("{path}.name"), &mut avro.name);
            self.string(&format!("{path}.namespace"), &mut avro.namespace);
            if let Some(r) = &mut avro.registry {
                self.registry(&format!("{path}.registry"), r);
            }
        }
    }

    fn output(&mut self, path: &str, spec: &mut OutputSpec) {
        let OutputSpec {
            name,
            filter,
            columns,
            exclude_columns,
            sink,
        } = spec;
        self.string(&format!("{path}.name"), name);
        self.opt_string(&format!("{path}.where"), filter);
        for (i, column) in columns.iter_mut().flatten().enumerate() {
            self.string(&format!("{path}.columns[{i}]"), column);
        }
        for (i, column) in exclude_columns.iter_mut().enumerate() {
            self.string(&format!("{path}.exclude_columns[{i}]"), column);
        }
        self.sink(&format!("{path}.sink"), sink);
    }

    fn sink(&mut self, path: &str, sink: &mut SinkSpec) {
        match sink {
            SinkSpec::Kafka(kafka) => self.kafka_sink(path, kafka),
            SinkSpec::Nats(nats) => {
                let NatsSinkSpec {
                    servers,
                    auth,
                    tls,
                    subject,
                    jetstream: _,
                    headers,
                    format,
                } = &mut **nats;
                self.sink_format(&format!("{path}.format"), format);
                self.opt_string(&format!("{path}.servers"), servers);
                self.nats_auth_tls(path, auth, tls);
                self.string(&format!("{path}.subject"), subject);
                for (name, column) in headers.iter_mut() {
                    self.string(&format!("{path}.headers[{name:?}]"), column);
                }
            }
            SinkSpec::Stdout(StdoutSinkSpec {}) => {}
            SinkSpec::File(FileSinkSpec {
                path: file_path,
                fsync: _,
            }) => self.string(&format!("{path}.path"), file_path),
        }
    }

    fn kafka_sink(&mut self, path: &str, spec: &mut KafkaSinkSpec) {
        let KafkaSinkSpec {
            bootstrap_servers,
            topic,
            key,
            headers,
            security,
            format,
            properties,
        } = spec;
        self.sink_format(&format!("{path}.format"), format);
        self.opt_string(&format!("{path}.bootstrap_servers"), bootstrap_servers);
        self.string(&format!("{path}.topic"), topic);
        self.opt_string(&format!("{path}.key"), key);
        for (name, column) in headers.iter_mut() {
            self.string(&format!("{path}.headers[{name:?}]"), column);
        }
        if let Some(security) = security {
            self.security(&format!("{path}.security"), security);
        }
        for (key, value) in properties.iter_mut() {
            self.string(&format!("{path}.properties[{key:?}]"), value);
        }
    }

    pub(super) fn opt_string(&mut self, path: &str, value: &mut Option<String>) {
        if let Some(value) = value {
            self.string(path, value);
        }
    }

    /// Interpolates a secret. Secrets come from the environment only: a value written in the
    /// file (no `${...}`) is refused, so secrets are never committed with pipeline files.
    pub(super) fn secret(&mut self, path: &str, value: &mut Secret) {
        if !value.expose().contains("${") {
            self.errors.push(SpecError::at(
                self.file,
                path,
                "is written in the file: secrets come from the environment only; write \
                 `${ENV_VAR}` and set the variable (the value is not shown)",
            ));
            return;
        }
        self.string(path, value.expose_mut());
    }

    /// Interpolates one string value in place; on any problem, records it and leaves the value
    /// unchanged.
    pub(super) fn string(&mut self, path: &str, value: &mut String) {
        if !value.contains('$') {
            return;
        }
        match expand(value, self.env) {
            Ok(expanded) => *value = expanded,
            Err(problems) => self.errors.extend(
                problems
                    .into_iter()
                    .map(|problem| SpecError::at(self.file, path, problem.message())),
            ),
        }
    }
}

/// Why a `${...}` could not be expanded. Never holds a variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    /// `${VAR}` without default and `VAR` is not set.
    Unset(String),
    /// The value of `VAR` contains control characters.
    ControlInValue(String),
    /// The default of `${VAR:-...}` contains control characters.
    ControlInDefault(String),
    /// `${...}` whose name is not a valid variable name (the text between the braces).
    BadName(String),
    /// `${` without a closing `}`.
    Unterminated,
}

impl Problem {
    fn message(&self) -> String {
        match self {
            Problem::Unset(name) => format!(
                "environment variable {name} is not set (set it, or give a default with \
                 `${{{name}:-default}}`)"
            ),
            Problem::ControlInValue(name) => format!(
                "environment variable {name} contains control characters (newline, tab, ...), \
                 which are not allowed in substituted values; its value is not shown"
            ),
            Problem::ControlInDefault(name) => format!(
                "the default value for environment variable {name} contains control characters \
                 (newline, tab, ...), which are not allowed in substituted values"
            ),
            Problem::BadName(name) => format!(
                "invalid environment variable reference `${{{name}}}`: expected `${{NAME}}` or \
                 `${{NAME:-default}}` where NAME has letters, digits and `_` and does not start \
                 with a digit (write `$${{` for a literal `${{`)"
            ),
            Problem::Unterminated => "unterminated `${`: close it with `}`, or write `$${` for \
                                      a literal `${`"
                .to_string(),
        }
    }
}

/// Expands every `${...}` in `input`; returns every problem if there is any.
fn expand(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(input.len());
    let mut problems = Vec::new();
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(close) = tail.find('}') else {
                problems.push(Problem::Unterminated);
                break;
            };
            let reference = &tail[..close];
            rest = &tail[close + 1..];
            match substitute(reference, env) {
                Ok(value) => out.push_str(&value),
                Err(problem) => problems.push(problem),
            }
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The replacement for the text between `${` and `}`.
fn substitute(reference: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Problem> {
    let (name, default) = match reference.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (reference, None),
    };
    if !is_variable_name(name) {
        return Err(Problem::BadName(reference.to_string()));
    }
    let value = env(name).filter(|v| default.is_none() || !v.is_empty());
    match (value, default) {
        (Some(value), _) if has_control(&value) => Err(Problem::ControlInValue(name.to_string())),
        (Some(value), _) => Ok(value),
        (None, Some(default)) if has_control(default) => {
            Err(Problem::ControlInDefault(name.to_string()))
        }
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(Problem::Unset(name.to_string())),
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("broker:9092".into()),
            "TOPIC" => Some("orders".into()),
            "EMPTY" => Some(String::new()),
            "PASSWORD" => Some("s3cret-canary".into()),
            "NEWLINE" => Some("s3cret\ncanary".into()),
            "TAB" => Some("a\tb".into()),
            "DEL" => Some("a\u{7f}b".into()),
            _ => None,
        }
    }

    fn ok(input: &str) -> String {
        expand(input, &env).unwrap()
    }

    fn err(input: &str) -> Vec<Problem> {
        expand(input, &env).unwrap_err()
    }

    #[test]
    fn plain_strings_are_unchanged() {
        assert_eq!(ok("no variables"), "no variables");
        assert_eq!(ok("cost $5 and $ alone$"), "cost $5 and $ alone$");
        assert_eq!(ok("$HOST is not braced"), "$HOST is not braced");
        assert_eq!(ok(""), "");
    }

    #[test]
    fn substitutes_variables() {
        assert_eq!(ok("${HOST}"), "broker:9092");
        assert_eq!(ok("in-${TOPIC}-${TOPIC}.v1"), "in-orders-orders.v1");
        assert_eq!(ok("${EMPTY}"), "");
        assert_eq!(ok("${PASSWORD}"), "s3cret-canary");
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(ok("${MISSING:-localhost:9092}"), "localhost:9092");
        assert_eq!(ok("${EMPTY:-fallback}"), "fallback");
        assert_eq!(ok("${HOST:-fallback}"), "broker:9092");
        assert_eq!(ok("${MISSING:-}"), "");
        assert_eq!(ok("${MISSING:-a:-b}"), "a:-b");
    }

    #[test]
    fn double_dollar_escapes() {
        assert_eq!(ok("$${HOST}"), "${HOST}");
        // Scanning is left to right: `$` then the escape `$${`.
        assert_eq!(ok("$$${HOST}"), "$${HOST}");
        assert_eq!(ok("a $$ b"), "a $$ b");
        // An escaped `${` needs no closing brace.
        assert_eq!(ok("$${"), "${");
    }

    #[test]
    fn substituted_values_are_not_rescanned() {
        let env = |name: &str| (name == "X").then(|| "${Y}".to_string());
        assert_eq!(expand("${X}", &env).unwrap(), "${Y}");
    }

    #[test]
    fn reports_every_missing_variable() {
        assert_eq!(
            err("${A}-${HOST}-${B}"),
            vec![Problem::Unset("A".into()), Problem::Unset("B".into())]
        );
    }

    #[test]
    fn rejects_control_characters_without_showing_them() {
        for name in ["NEWLINE", "TAB", "DEL"] {
            let problems = err(&format!("x${{{name}}}"));
            assert_eq!(problems, vec![Problem::ControlInValue(name.into())]);
            let message = problems[0].message();
            assert!(message.contains(name), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        assert_eq!(
            err("${MISSING:-a\nb}"),
            vec![Problem::ControlInDefault("MISSING".into())]
        );
    }

    #[test]
    fn rejects_malformed_references() {
        assert_eq!(err("${HOST"), vec![Problem::Unterminated]);
        assert_eq!(
            err("${A}${"),
            vec![Problem::Unset("A".into()), Problem::Unterminated]
        );
        assert_eq!(err("${}"), vec![Problem::BadName(String::new())]);
        assert_eq!(err("${1X}"), vec![Problem::BadName("1X".into())]);
        assert_eq!(err("${A-b}"), vec![Problem::BadName("A-b".into())]);
        assert_eq!(err("${ HOST }"), vec![Problem::BadName(" HOST ".into())]);
    }

    const SPEC: &str = r#"
name: orders
source:
  type: kafka
  bootstrap_servers: ${HOST}
  topics: ["${TOPIC}", "literal-$${x}"]
  group_id: ${GROUP:-streamgate}
  security:
    protocol: sasl_ssl
    tls:
      key_password: ${PASSWORD}
    sasl:
      mechanism: plain
      username: ${USER:-admin}
      password: ${PASSWORD}
  properties:
    client.id: ${MISSING_ID}
format:
  type: json
  columns:
    - { name: "${COLUMN:-id}", type: string }
outputs:
  - name: out
    where: "amount > ${LIMIT:-10}"
    sink:
      type: kafka
      topic: ${TOPIC}-out
      key: ${KEY}
      headers:
        x-id: ${HEADER:-id}
  - name: file
    sink: { type: file, path: "${DIR}/out.jsonl" }
dead_letter:
  type: file
  path: ${DLQ:-dlq.jsonl}
"#;

    #[test]
    fn walks_every_string_of_the_spec() {
        let file = Path::new("p.yaml");
        let mut spec = parse(SPEC, file).unwrap();
        let errors = interpolate(&mut spec, file, &env);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "p.yaml: source.properties[\"client.id\"]: environment variable MISSING_ID is \
                 not set (set it, or give a default with `${MISSING_ID:-default}`)",
                "p.yaml: outputs[0].sink.key: environment variable KEY is not set (set it, or \
                 give a default with `${KEY:-default}`)",
                "p.yaml: outputs[1].sink.path: environment variable DIR is not set (set it, or \
                 give a default with `${DIR:-default}`)",
            ]
        );

        let SourceSpec::Kafka(source) = &spec.source else {
            panic!("kafka source expected")
        };
        assert_eq!(source.bootstrap_servers, "broker:9092");
        assert_eq!(source.topics, ["orders", "literal-${x}"]);
        assert_eq!(source.group_id, "streamgate");
        let security = source.security.as_ref().unwrap();
        let sasl = security.sasl.as_ref().unwrap();
        assert_eq!(sasl.username, "admin");
        assert_eq!(sasl.password.expose(), "s3cret-canary");
        let tls = security.tls.as_ref().unwrap();
        assert_eq!(tls.key_password.as_ref().unwrap().expose(), "s3cret-canary");
        // Failed values are left as written.
        assert_eq!(source.properties["client.id"], "${MISSING_ID}");

        let FormatSpec::Json(json) = &spec.format else {
            panic!("json format expected");
        };
        assert_eq!(json.columns.as_ref().unwrap()[0].name, "id");
        assert_eq!(spec.outputs[0].filter.as_deref(), Some("amount > 10"));
        let SinkSpec::Kafka(sink) = &spec.outputs[0].sink else {
            panic!("kafka sink expected")
        };
        assert_eq!(sink.topic, "orders-out");
        assert_eq!(sink.headers["x-id"], "id");
        let Some(SinkSpec::File(dlq)) = &spec.dead_letter else {
            panic!("file dead-letter sink expected")
        };
        assert_eq!(dlq.path, "dlq.jsonl");
    }

    #[test]
    fn a_secret_written_in_the_file_is_refused_without_showing_it() {
        let file = Path::new("p.yaml");
        let mut spec = parse(
            &SPEC.replace(
                "      password: ${PASSWORD}",
                "      password: hunter2-canary",
            ),
            file,
        )
        .unwrap();
        let errors: Vec<String> = interpolate(&mut spec, file, &|name| {
            env(name).or_else(|| Some("x".to_string()))
        })
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("p.yaml: source.security.sasl.password: is written in the file"),
            "{errors:?}"
        );
        assert!(!errors[0].contains("canary"));
    }

    #[test]
    fn control_characters_in_a_secret_never_show() {
        let file = Path::new("p.yaml");
        let mut spec = parse(
            &SPEC.replace("      password: ${PASSWORD}", "      password: ${NEWLINE}"),
            file,
        )
        .unwrap();
        let errors = interpolate(&mut spec, file, &|name| {
            env(name).or_else(|| Some("x".to_string()))
        });
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "source.security.sasl.password");
        assert!(errors[0].message.contains("NEWLINE"));
        assert!(!errors[0].to_string().contains("canary"));
        assert!(!format!("{errors:?}").contains("canary"));
    }
}
