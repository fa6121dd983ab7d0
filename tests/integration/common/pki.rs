//! Certificates generated per test: a CA, a server certificate for `localhost` and
//! `127.0.0.1`, and a client certificate, written as PEM files into a temporary directory.

#![allow(dead_code)]

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA with one server and one client certificate; the files live as long as this.
pub(crate) struct Pki {
    pub ca: CertifiedIssuer<'static, KeyPair>,
    pub server: rcgen::Certificate,
    pub server_key: KeyPair,
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// Path of one of the files: `ca.pem`, `server.pem` (the server's certificate followed by
    /// its PKCS#8 key, as Kafka's PEM key store reads it), `client.pem`, `client-key.pem`.
    pub(crate) fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// Generates the CA and both certificates and writes their files.
pub(crate) fn pki() -> Pki {
    // Distinct subject names: OpenSSL takes a certificate whose subject equals its issuer
    // for a self-signed one.
    let params = |names: Vec<String>, common_name: &str| {
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, common_name);
        p
    };
    let mut ca_params = params(Vec::new(), "Streamgate test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    // An IP string becomes an IP address subject name, so clients verifying `127.0.0.1`
    // (the address real brokers advertise) accept it as well as `localhost`.
    let server = params(
        vec!["localhost".to_string(), "127.0.0.1".to_string()],
        "localhost",
    )
    .signed_by(&server_key, &ca)
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(
        dir.path().join("server.pem"),
        format!("{}{}", server_key.serialize_pem(), server.pem()),
    )
    .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = params(vec!["streamgate".to_string()], "streamgate")
        .signed_by(&client_key, &ca)
        .unwrap();
    std::fs::write(dir.path().join("client.pem"), client.pem()).unwrap();
    std::fs::write(
        dir.path().join("client-key.pem"),
        client_key.serialize_pem(),
    )
    .unwrap();
    Pki {
        ca,
        server,
        server_key,
        dir,
    }
}
