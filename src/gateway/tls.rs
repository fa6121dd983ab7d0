//! TLS on the gateway's listener (rustls): the server configuration from `tls:`. The listener
//! itself is [`crate::tls::TlsListener`].

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;

use crate::spec::GatewayTlsSpec;

/// Why the TLS configuration cannot be built. Names the file, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain cannot be read.
    #[error("tls.cert_file {file}: {source}")]
    CertFile {
        /// The file, as configured.
        file: String,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The private key cannot be read.
    #[error("tls.key_file {file}: {source}")]
    KeyFile {
        /// The file, as configured.
        file: String,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The client CA file cannot be read.
    #[error("tls.client_ca_file {file}: {source}")]
    ClientCaFile {
        /// The file, as configured.
        file: String,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A client CA certificate is not usable.
    #[error("tls.client_ca_file {file}: {source}")]
    ClientCa {
        /// The file, as configured.
        file: String,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The client certificate verifier cannot be built from the CAs.
    #[error("tls.client_ca_file {file}: {source}")]
    ClientVerifier {
        /// The file, as configured.
        file: String,
        /// Why.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The certificate and the key do not go together.
    #[error("tls: the certificate and key do not fit: {0}")]
    Mismatch(#[source] rustls::Error),
    /// rustls refused the protocol versions.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// Builds the rustls server configuration; errors name the file, never key material.
pub(crate) fn server_config(
    spec: &GatewayTlsSpec,
    base_dir: &Path,
) -> Result<rustls::ServerConfig, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let path = |f: &str| base_dir.join(f);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path(&spec.cert_file))
        .and_then(|i| i.collect())
        .map_err(|source| TlsError::CertFile {
            file: spec.cert_file.clone(),
            source,
        })?;
    let key =
        PrivateKeyDer::from_pem_file(path(&spec.key_file)).map_err(|source| TlsError::KeyFile {
            file: spec.key_file.clone(),
            source,
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &spec.client_ca_file {
        Some(file) => {
            let ca_file = |source| TlsError::ClientCaFile {
                file: file.clone(),
                source,
            };
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(path(file)).map_err(ca_file)? {
                roots
                    .add(ca.map_err(ca_file)?)
                    .map_err(|source| TlsError::ClientCa {
                        file: file.clone(),
                        source,
                    })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|source| TlsError::ClientVerifier {
                file: file.clone(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(TlsError::Mismatch)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
