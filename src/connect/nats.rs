//! NATS connections shared by the NATS source and sink: servers, credentials and TLS.
//!
//! With TLS configured the client requires TLS from the server: a server that offers
//! plaintext only is refused, never silently used.

use std::path::PathBuf;
use std::time::Duration;

pub use crate::spec::subject::{SubjectTemplate, SubjectToken, check_subject};
use crate::spec::{NatsAuth, NatsConnectionSpec};

/// Why a NATS connection could not be made. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    /// A credentials file could not be read or parsed.
    #[error("cannot read NATS credentials file {path}: {message}")]
    Credentials {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The server could not be reached, refused the credentials or the TLS handshake failed.
    #[error("cannot connect to NATS at {servers}: {message}")]
    Connect {
        /// The servers tried.
        servers: String,
        /// What went wrong.
        message: String,
    },
}

/// How long one connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to NATS with the spec's credentials and TLS. `name` is shown by the server
/// (`streamgate-<pipeline>`). After the first connection the client reconnects by itself.
pub async fn connect(
    spec: &NatsConnectionSpec,
    name: &str,
) -> Result<async_nats::Client, NatsConnectError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT);
    match &spec.auth {
        None => {}
        Some(NatsAuth::Token { token }) => options = options.token(token.expose().to_string()),
        Some(NatsAuth::UserPassword { username, password }) => {
            options = options.user_and_password(username.clone(), password.expose().to_string())
        }
        Some(NatsAuth::Nkey { seed }) => options = options.nkey(seed.expose().to_string()),
        Some(NatsAuth::Credentials { file }) => {
            options = options.credentials_file(file).await.map_err(|e| {
                NatsConnectError::Credentials {
                    path: file.clone(),
                    // io errors of the file read or parse name the problem, not the content.
                    message: e.kind().to_string(),
                }
            })?
        }
    }
    if let Some(tls) = &spec.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(PathBuf::from(ca));
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(PathBuf::from(cert), PathBuf::from(key));
        }
    }
    let servers: Vec<async_nats::ServerAddr> = spec
        .servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|e: std::io::Error| NatsConnectError::Connect {
                    servers: spec.servers.clone(),
                    message: format!("invalid server address {s:?}: {e}"),
                })
        })
        .collect::<Result<_, _>>()?;
    options
        .connect(servers)
        .await
        .map_err(|e| NatsConnectError::Connect {
            servers: spec.servers.clone(),
            message: e.to_string(),
        })
}
