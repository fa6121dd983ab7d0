//! TLS for outbound connections (model endpoints, the Schema Registry, JWKS): rustls with the
//! ring provider, the Mozilla web PKI roots compiled in (`webpki-roots`, so a container
//! without a CA store still verifies public endpoints), plus an optional CA bundle, an optional
//! client certificate (mutual TLS) and an optional name to verify the server's certificate
//! against. Also turns handshake failures into messages that say what to fix.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// A file named in the configuration: the text as written (for messages) and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfiguredFile {
    /// The path as the configuration spells it.
    pub configured: String,
    /// The path resolved against the configuration's folder.
    pub path: PathBuf,
}

/// What an outbound TLS connection trusts and presents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientTlsOptions {
    /// Where the options are configured (`models.fraud.versions[0].endpoint.tls`), for errors.
    pub origin: String,
    /// PEM CA certificates trusted besides the web PKI roots.
    pub ca_file: Option<ConfiguredFile>,
    /// PEM certificate chain presented to servers that ask for one (mutual TLS).
    pub client_cert: Option<ConfiguredFile>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<ConfiguredFile>,
    /// Name the server's certificate must be valid for, instead of the URL's host.
    pub server_name: Option<String>,
}

/// Why a client TLS configuration cannot be built. Names the setting and file, never key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("{origin}.{setting} {file}: {source}")]
    File {
        /// Where the options are configured.
        origin: String,
        /// `ca_file`, `client_cert` or `client_key`.
        setting: &'static str,
        /// The file, as configured.
        file: String,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A file holds no certificate.
    #[error("{origin}.{setting} {file}: no PEM certificate in the file")]
    NoCertificate {
        /// Where the options are configured.
        origin: String,
        /// `ca_file` or `client_cert`.
        setting: &'static str,
        /// The file, as configured.
        file: String,
    },
    /// A CA certificate is not usable as a trust anchor.
    #[error("{origin}.ca_file {file}: {source}")]
    Ca {
        /// Where the options are configured.
        origin: String,
        /// The file, as configured.
        file: String,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// Only one of `client_cert` and `client_key` is set.
    #[error("{origin}: client_cert and client_key go together; set both or neither")]
    HalfIdentity {
        /// Where the options are configured.
        origin: String,
    },
    /// The client certificate and key do not fit together.
    #[error("{origin}: client_cert and client_key do not fit together: {source}")]
    Identity {
        /// Where the options are configured.
        origin: String,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// `server_name` is not a DNS name or IP address.
    #[error("{origin}.server_name {name:?} is not a host name or IP address")]
    ServerName {
        /// Where the options are configured.
        origin: String,
        /// The name, as configured.
        name: String,
    },
    /// rustls refused the settings.
    #[error("{origin}: {source}")]
    Rustls {
        /// Where the options are configured.
        origin: String,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The configuration of a client that trusts the web PKI roots only and presents no
/// certificate: what every outbound connection uses unless its endpoint says otherwise.
pub fn default_client_config() -> rustls::ClientConfig {
    client_config(&ClientTlsOptions::default()).expect("the default TLS settings are valid")
}

/// Builds the rustls configuration `options` describe.
pub fn client_config(options: &ClientTlsOptions) -> Result<rustls::ClientConfig, ClientTlsError> {
    let origin = || options.origin.clone();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(file) = &options.ca_file {
        for ca in certificates(options, "ca_file", file)? {
            roots.add(ca).map_err(|source| ClientTlsError::Ca {
                origin: origin(),
                file: file.configured.clone(),
                source,
            })?;
        }
    }
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| ClientTlsError::Rustls {
            origin: origin(),
            source,
        })?;
    let builder = match &options.server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let name =
                ServerName::try_from(name.clone()).map_err(|_| ClientTlsError::ServerName {
                    origin: origin(),
                    name: name.clone(),
                })?;
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| ClientTlsError::Rustls {
                origin: origin(),
                source: rustls::Error::General(e.to_string()),
            })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(VerifyAs { inner, name }))
        }
    };
    let config = match (&options.client_cert, &options.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certificates(options, "client_cert", cert)?;
            let key =
                PrivateKeyDer::from_pem_file(&key.path).map_err(|source| ClientTlsError::File {
                    origin: origin(),
                    setting: "client_key",
                    file: key.configured.clone(),
                    source,
                })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| ClientTlsError::Identity {
                    origin: origin(),
                    source,
                })?
        }
        _ => return Err(ClientTlsError::HalfIdentity { origin: origin() }),
    };
    Ok(config)
}

/// Every certificate of a PEM file; at least one.
fn certificates(
    options: &ClientTlsOptions,
    setting: &'static str,
    file: &ConfiguredFile,
) -> Result<Vec<CertificateDer<'static>>, ClientTlsError> {
    let failed = |source| ClientTlsError::File {
        origin: options.origin.clone(),
        setting,
        file: file.configured.clone(),
        source,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&file.path)
        .map_err(failed)?
        .collect::<Result<_, _>>()
        .map_err(failed)?;
    if certs.is_empty() {
        return Err(ClientTlsError::NoCertificate {
            origin: options.origin.clone(),
            setting,
            file: file.configured.clone(),
        });
    }
    Ok(certs)
}

/// Verifies the server's certificate with the web PKI rules, for a configured name instead of
/// the URL's host (a server reached by IP address whose certificate names a host).
#[derive(Debug)]
struct VerifyAs {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for VerifyAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _url_host: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What went wrong in a TLS handshake, said so that the reader knows what to fix, when `error`
/// (or anything in its source chain) is a rustls error; `None` otherwise.
pub fn describe_handshake_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(tls) = rustls_error(e) {
            return Some(describe(tls));
        }
        current = e.source();
    }
    None
}

/// `e` itself as a rustls error, looking through the `io::Error`s the HTTP stack wraps one in
/// (nested, and an `io::Error`'s `source` skips what it wraps).
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>()
        && let Some(inner) = io.get_ref()
    {
        return rustls_error(inner);
    }
    None
}

fn describe(error: &rustls::Error) -> String {
    use rustls::AlertDescription as Alert;
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => "the server's certificate is not signed by a \
                 trusted CA: add its CA certificate to `tls.ca_file`"
                .to_string(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate is not valid for this host name: use a host the \
                 certificate names in the URL, or set `tls.server_name` to one"
                    .to_string()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_string()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check the clocks)".to_string()
            }
            CertificateError::Revoked => "the server's certificate is revoked".to_string(),
            other => format!("the server's certificate is refused: {other:?}"),
        },
        rustls::Error::AlertReceived(Alert::CertificateRequired) => {
            "the server requires a client certificate: set `tls.client_cert` and \
             `tls.client_key`"
                .to_string()
        }
        rustls::Error::AlertReceived(
            Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::AccessDenied,
        ) => "the server refused the client certificate (`tls.client_cert`): it is missing, \
              expired or not signed by a CA the server trusts"
            .to_string(),
        rustls::Error::AlertReceived(alert) => {
            format!("the server ended the TLS handshake ({alert:?})")
        }
        other => format!("TLS failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> ConfiguredFile {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        ConfiguredFile {
            configured: name.to_string(),
            path,
        }
    }

    #[test]
    fn the_default_trusts_the_web_pki_roots() {
        let config = default_client_config();
        assert!(!config.client_auth_cert_resolver.has_certs());
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
    }

    #[test]
    fn errors_name_the_setting_and_file_and_never_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let options = ClientTlsOptions {
            origin: "models.m.versions[0].endpoint.tls".into(),
            ca_file: Some(write(dir.path(), "empty.pem", "")),
            ..Default::default()
        };
        let err = client_config(&options).unwrap_err().to_string();
        assert_eq!(
            err,
            "models.m.versions[0].endpoint.tls.ca_file empty.pem: no PEM certificate in the file"
        );

        let options = ClientTlsOptions {
            origin: "o".into(),
            client_cert: Some(write(dir.path(), "cert.pem", &ca.cert.pem())),
            ..Default::default()
        };
        let err = client_config(&options).unwrap_err().to_string();
        assert!(err.contains("set both or neither"), "{err}");

        // A key that does not belong to the certificate: named, not echoed.
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        let key_pem = other.signing_key.serialize_pem();
        let options = ClientTlsOptions {
            origin: "o".into(),
            client_cert: Some(write(dir.path(), "cert.pem", &ca.cert.pem())),
            client_key: Some(write(dir.path(), "key.pem", &key_pem)),
            ..Default::default()
        };
        let text = client_config(&options).unwrap_err().to_string();
        assert!(text.contains("do not fit together"), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(!text.contains(key_pem.lines().nth(1).unwrap()), "{text}");

        let options = ClientTlsOptions {
            origin: "o".into(),
            server_name: Some("not a name".into()),
            ..Default::default()
        };
        let err = client_config(&options).unwrap_err().to_string();
        assert_eq!(
            err,
            "o.server_name \"not a name\" is not a host name or IP address"
        );
    }

    #[test]
    fn handshake_failures_say_what_to_fix() {
        // Nested as tokio-rustls and hyper-rustls nest it.
        let wrapped = std::io::Error::other(std::io::Error::other(
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        ));
        let text = describe_handshake_failure(&wrapped).unwrap();
        assert!(text.contains("tls.ca_file"), "{text}");
        let required = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let text = describe_handshake_failure(&required).unwrap();
        assert!(text.contains("tls.client_cert"), "{text}");
        assert!(describe_handshake_failure(&std::io::Error::other("refused")).is_none());
    }
}
