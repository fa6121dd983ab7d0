//! Semantic checks of NATS sources and sinks. Each problem comes back as `(path, message)`.

use std::time::Duration;

use super::nats::{NatsAuth, NatsDelivery, NatsSinkSpec, NatsSourceSpec, NatsTls};
use super::subject::{SubjectTemplate, check_subject};

type Problems = Vec<(String, String)>;

/// Checks a NATS source.
pub fn source(path: &str, spec: &NatsSourceSpec) -> Problems {
    let mut problems = Vec::new();
    servers(&mut problems, &format!("{path}.servers"), &spec.servers);
    match &spec.jetstream {
        None if spec.subjects.is_empty() => problems.push((
            format!("{path}.subjects"),
            "is empty: expected at least one subject to subscribe to".into(),
        )),
        _ => {}
    }
    for (i, subject) in spec.subjects.iter().enumerate() {
        if let Err(e) = check_subject(subject, true) {
            problems.push((format!("{path}.subjects[{i}]"), e));
        }
    }
    if let Some(group) = &spec.queue_group {
        if spec.jetstream.is_some() {
            problems.push((
                format!("{path}.queue_group"),
                "applies to core NATS only: JetStream instances share a stream through the \
                 same `jetstream.durable` consumer"
                    .into(),
            ));
        } else if group.is_empty() || group.contains(|c: char| c.is_whitespace()) {
            problems.push((
                format!("{path}.queue_group"),
                format!("invalid queue group {group:?}: expected a name without white space"),
            ));
        }
    }
    match (spec.delivery(), &spec.jetstream) {
        (NatsDelivery::AtLeastOnce, None) => problems.push((
            format!("{path}.delivery"),
            "core NATS cannot deliver at least once: messages in flight when Streamgate stops, \
             or published while it is down or overloaded, are lost. Consume a JetStream stream \
             (`jetstream: {stream, durable}`) for at-least-once, or set \
             `delivery: at_most_once` to accept the loss"
                .into(),
        )),
        (NatsDelivery::AtMostOnce, Some(_)) => problems.push((
            format!("{path}.delivery"),
            "a JetStream consumer is always at least once here (messages are acked after \
             delivery): remove `delivery` or set it to `at_least_once`"
                .into(),
        )),
        _ => {}
    }
    if let Some(js) = &spec.jetstream {
        let js_path = format!("{path}.jetstream");
        for (field, value) in [("stream", &js.stream), ("durable", &js.durable)] {
            if value.is_empty()
                || value
                    .chars()
                    .any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace())
            {
                problems.push((
                    format!("{js_path}.{field}"),
                    format!(
                        "invalid name {value:?}: expected letters, digits, `-` or `_` (no `.`, \
                         `*`, `>`, `/` or white space)"
                    ),
                ));
            }
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(12 * 3600)).contains(&js.ack_wait) {
            problems.push((
                format!("{js_path}.ack_wait"),
                format!(
                    "is {}: expected between 1s and 12h",
                    humantime::format_duration(js.ack_wait)
                ),
            ));
        }
        if js.nak_delay > Duration::from_secs(3600) {
            problems.push((
                format!("{js_path}.nak_delay"),
                format!(
                    "is {}: expected at most 1h",
                    humantime::format_duration(js.nak_delay)
                ),
            ));
        }
        if js.max_deliver == Some(0) {
            problems.push((
                format!("{js_path}.max_deliver"),
                "is 0: expected at least 1, or remove it for no limit".into(),
            ));
        }
        if js.max_ack_pending == 0 {
            problems.push((
                format!("{js_path}.max_ack_pending"),
                "is 0: expected at least 1".into(),
            ));
        }
    }
    auth_and_tls(&mut problems, path, spec.auth.as_ref(), spec.tls.as_ref());
    problems
}

/// Checks a NATS sink (`dead_letter` sinks publish to one literal subject).
pub fn sink(
    path: &str,
    spec: &NatsSinkSpec,
    source: Option<&NatsSourceSpec>,
    dead_letter: bool,
) -> Problems {
    let mut problems = Vec::new();
    match (&spec.servers, source) {
        (Some(s), _) => servers(&mut problems, &format!("{path}.servers"), s),
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
        Err(e) => problems.push((subject_path, e)),
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
                    .find(|p| subject_matches(p, &spec.subject))
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
                "invalid header name: expected printable ASCII without `:` or white space".into(),
            ));
        }
        if column.trim().is_empty() {
            problems.push((header_path, "is empty: expected a column name".into()));
        }
    }
    auth_and_tls(&mut problems, path, spec.auth.as_ref(), spec.tls.as_ref());
    problems
}

/// Whether subject pattern `pattern` (with `*` and `>`) matches literal `subject`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn servers(problems: &mut Problems, path: &str, servers: &str) {
    let list: Vec<&str> = servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        problems.push((
            path.to_string(),
            "is empty: expected a comma-separated list of `nats://host:port` URLs".into(),
        ));
    }
    for server in list {
        if let Err(e) = server.parse::<async_nats::ServerAddr>() {
            problems.push((
                path.to_string(),
                format!("invalid server {server:?}: {e} (expected `nats://host:port`)"),
            ));
        } else if server.contains('@') {
            problems.push((
                path.to_string(),
                "credentials in a server URL would be logged: use `auth` with `${ENV_VAR}` \
                 values instead"
                    .into(),
            ));
        }
    }
}

fn auth_and_tls(
    problems: &mut Problems,
    path: &str,
    auth: Option<&NatsAuth>,
    tls: Option<&NatsTls>,
) {
    let empty = |problems: &mut Problems, field: &str, value: &str, expected: &str| {
        if value.trim().is_empty() {
            problems.push((
                format!("{path}.auth.{field}"),
                format!("is empty: expected {expected}"),
            ));
        }
    };
    match auth {
        None => {}
        Some(NatsAuth::Token { token }) => empty(problems, "token", token.expose(), "a token"),
        Some(NatsAuth::UserPassword { username, password }) => {
            empty(problems, "username", username, "a user name");
            empty(problems, "password", password.expose(), "a password");
        }
        Some(NatsAuth::Nkey { seed }) if !seed.expose().starts_with("SU") => problems.push((
            format!("{path}.auth.seed"),
            "is not a user NKey seed (it should start with `SU`)".into(),
        )),
        Some(NatsAuth::Nkey { .. }) => {}
        Some(NatsAuth::Credentials { file }) => {
            empty(problems, "file", file, "the path of a `.creds` file")
        }
    }
    if let Some(tls) = tls
        && tls.cert_file.is_some() != tls.key_file.is_some()
    {
        problems.push((
            format!("{path}.tls"),
            "`cert_file` and `key_file` go together (mutual TLS needs both)".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_patterns() {
        assert!(subject_matches("a.*", "a.b"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.b", "a.c"));
    }
}
