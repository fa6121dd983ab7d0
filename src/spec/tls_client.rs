//! TLS settings of an outbound HTTPS connection (`tls:` of a model endpoint).

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::tls::client::{ClientTlsOptions, ConfiguredFile};

/// How Streamgate connects to an `https://` endpoint. Without it, a server's certificate must
/// chain to the web PKI roots (Mozilla's list, built in) and no client certificate is sent.
/// Paths are relative to the file that declares the endpoint (the pipeline or its
/// `model_registry` file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsClientSpec {
    /// PEM file of CA certificates to trust besides the web PKI roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM certificate chain presented to a server that asks for one (mutual TLS); needs
    /// `client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert` (PKCS#8, PKCS#1 or SEC1), unencrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// Host name the server's certificate must be valid for, when the URL does not use it
    /// (a replica addressed by IP). The TLS server name indication stays the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl TlsClientSpec {
    /// The options for [`crate::tls::client::client_config`], files resolved against
    /// `base_dir`; `origin` prefixes errors (`tls`).
    pub fn options(&self, origin: &str, base_dir: &Path) -> ClientTlsOptions {
        let file = |f: &Option<String>| {
            f.as_ref().map(|f| ConfiguredFile {
                configured: f.clone(),
                path: base_dir.join(f),
            })
        };
        ClientTlsOptions {
            origin: origin.to_string(),
            ca_file: file(&self.ca_file),
            client_cert: file(&self.client_cert),
            client_key: file(&self.client_key),
            server_name: self.server_name.clone(),
        }
    }
}
