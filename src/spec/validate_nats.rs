//! Semantic checks shared by the NATS source and sink (servers, credentials, TLS, subject
//! patterns); each kind's own checks live with its spec. Each problem is `(path, message)`.

use super::nats::{NatsAuth, NatsTls};

/// Problems as (path, message).
pub(crate) type Problems = Vec<(String, String)>;

/// Whether subject pattern `pattern` (with `*` and `>`) matches literal `subject`.
pub(crate) fn subject_matches(pattern: &str, subject: &str) -> bool {
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

pub(crate) fn servers(problems: &mut Problems, path: &str, servers: &str) {
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

pub(crate) fn auth_and_tls(
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
