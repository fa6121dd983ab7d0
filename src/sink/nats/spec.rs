//! The NATS sink as configured: core subjects or a JetStream stream, its spec and its
//! validation. Pure configuration (no I/O): part of the spec layer, which `crate::spec`
//! re-exports.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::check::Problems;
use crate::spec::subject::SubjectTemplate;
use crate::spec::validate::{SinkContext, check_sink_format};
use crate::spec::validate_nats;
use crate::spec::{NatsAuth, NatsConnectionSpec, NatsTls, SinkFormatSpec, SourceSpec, is_json};

/// Publish rows to NATS: one JSON message per row (dead letters keep their bytes).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkSpec {
    /// Connection; defaults to the NATS source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<String>,
    /// Credentials (default: the NATS source's, when `servers` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<NatsAuth>,
    /// TLS (default: the NATS source's, when `servers` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<NatsTls>,
    /// Subject, optionally built from columns: `fraud.alerts.{merchant_country}`. Each
    /// `{column}` must be a whole token; its value is made a single safe token (`.`, `*`, `>`,
    /// white space and control characters become `_`, empty or null becomes `_`), so every
    /// subject stays under the literal prefix before the first `{`.
    pub subject: String,
    /// Publish to a JetStream stream: wait for the stream's ack before a row counts as
    /// delivered, and set `Nats-Msg-Id` from the input message's identity so redeliveries are
    /// dropped by the stream's duplicate window.
    #[serde(default)]
    pub jetstream: bool,
    /// Message headers: header name → column whose value (as a string) is the header value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How rows are encoded: `{type: json}` (default) or `{type: avro, ...}`.
    #[serde(default, skip_serializing_if = "is_json")]
    pub format: SinkFormatSpec,
}

impl NatsSinkSpec {
    /// The connection this sink uses: its own, or the source's.
    pub fn connection(&self, source: Option<&NatsConnectionSpec>) -> Option<NatsConnectionSpec> {
        match (&self.servers, source) {
            (Some(servers), _) => Some(NatsConnectionSpec {
                servers: servers.clone(),
                auth: self.auth.clone(),
                tls: self.tls.clone(),
            }),
            (None, Some(source)) => Some(NatsConnectionSpec {
                servers: source.servers.clone(),
                auth: self.auth.clone().or_else(|| source.auth.clone()),
                tls: self.tls.clone().or_else(|| source.tls.clone()),
            }),
            (None, None) => None,
        }
    }
}

impl NatsSinkSpec {
    /// Checks servers (required unless the source is NATS), the subject (a literal one for
    /// dead letters, not one the source consumes), format, headers, credentials and TLS.
    pub fn validate(&self, path: &str, context: &SinkContext<'_>, into: &mut Problems) {
        let spec = self;
        let dead_letter = context.dead_letter;
        let source = match context.source {
            SourceSpec::Nats(n) => Some(n),
            _ => None,
        };
        check_sink_format(into, &format!("{path}.format"), &spec.format, context);
        let mut problems = Vec::new();
        match (&spec.servers, source) {
            (Some(s), _) => validate_nats::servers(&mut problems, &format!("{path}.servers"), s),
            (None, None) => problems.push((
                format!("{path}.servers"),
                "is required because the source is not NATS: give a comma-separated list of \
             `nats://host:port` URLs"
                    .into(),
            )),
            (None, Some(_)) => {}
        }
        let subject_path = format!("{path}.subject");
        match SubjectTemplate::parse(&spec.subject) {
            Err(e) => problems.push((subject_path, e.to_string())),
            Ok(template) if dead_letter && !template.is_literal() => problems.push((
                subject_path,
                "a dead-letter subject cannot use columns (failed records have none): write a \
             literal subject"
                    .into(),
            )),
            Ok(template) => {
                // Publishing to a subject the source consumes would loop forever.
                if spec.servers.is_none()
                    && template.is_literal()
                    && let Some(source) = source
                    && let Some(pattern) = source
                        .subjects
                        .iter()
                        .find(|p| validate_nats::subject_matches(p, &spec.subject))
                {
                    problems.push((
                        subject_path,
                        format!(
                            "subject {:?} is consumed by the source ({pattern:?}) on the same \
                         servers: rows would be read again in an endless loop",
                            spec.subject
                        ),
                    ));
                }
            }
        }
        for (name, column) in &spec.headers {
            let header_path = format!("{path}.headers[{name:?}]");
            if name.parse::<async_nats::header::HeaderName>().is_err() {
                problems.push((
                    header_path.clone(),
                    "invalid header name: expected printable ASCII without `:` or white space"
                        .into(),
                ));
            }
            if column.trim().is_empty() {
                problems.push((header_path, "is empty: expected a column name".into()));
            }
        }
        validate_nats::auth_and_tls(&mut problems, path, spec.auth.as_ref(), spec.tls.as_ref());
        into.extend(problems);
    }
}
