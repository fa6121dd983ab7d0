//! NATS and JetStream parts of the pipeline file: connection, source and sink.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// How to reach a NATS server or cluster (resolved from a source or sink spec).
#[derive(Debug, Clone)]
pub struct NatsConnectionSpec {
    /// Comma-separated server URLs.
    pub servers: String,
    /// Credentials.
    pub auth: Option<NatsAuth>,
    /// TLS settings.
    pub tls: Option<NatsTls>,
}

/// NATS credentials. Secrets come from the environment (`${VAR}`) or files, never inline.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NatsAuth {
    /// A server token.
    Token {
        /// The token; write `${ENV_VAR}`.
        token: Secret,
    },
    /// User name and password.
    UserPassword {
        /// User name.
        username: String,
        /// Password; write `${ENV_VAR}`.
        password: Secret,
    },
    /// An NKey seed (`SU...`): the server knows the public key; the seed signs its challenge.
    Nkey {
        /// The seed; write `${ENV_VAR}`.
        seed: Secret,
    },
    /// A `.creds` file (user JWT and NKey seed) as issued by `nsc` for decentralised auth.
    Credentials {
        /// Path of the `.creds` file.
        file: String,
    },
}

/// TLS to a NATS server.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsTls {
    /// PEM file of CA certificates to trust (default: the system store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM client certificate, for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}
