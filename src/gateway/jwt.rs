//! JWT bearer tokens: the signature (by an allowed algorithm and a configured key), `iss`,
//! `aud`, `exp` and `nbf` are checked; scopes come from a claim. `alg: none` cannot be
//! expressed in the library's algorithm set, so such tokens never verify.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::principal::{KeyLimits, Principal, Refusal, Scope};
use crate::spec::{JwtAlgorithm, JwtSpec};

/// Longest token looked at. Identity providers issue tokens of one to a few KiB, and proxies
/// commonly refuse headers over 8 KiB; anything longer is refused before its header and
/// claims are decoded, so a caller cannot make every request parse a large JSON document.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// Why the JWT settings cannot be used. Names the file or setting, never key material.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// No algorithm is allowed.
    #[error("auth.jwt.algorithms is empty")]
    NoAlgorithms,
    /// HS256 is allowed without a secret.
    #[error("auth.jwt: HS256 needs `hs256_secret`")]
    NoSecret,
    /// RS256 or ES256 is allowed without a public key or JWKS.
    #[error("auth.jwt: RS256/ES256 need `public_key_file` or `jwks_file`")]
    NoPublicKey,
    /// The public key file cannot be read.
    #[error("auth.jwt.public_key_file {}: {source}", path.display())]
    PublicKeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The JWKS file cannot be read.
    #[error("auth.jwt.jwks_file {}: {source}", path.display())]
    JwksFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The JWKS file is not a JWKS.
    #[error("auth.jwt.jwks_file {} is not a JWKS: {source}", path.display())]
    NotJwks {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Verifies tokens against the configured keys.
pub struct JwtVerifier {
    algorithms: Vec<Algorithm>,
    secret: Option<DecodingKey>,
    public_key: Option<(Vec<u8>, String)>,
    jwks: Option<JwkSet>,
    validation: Validation,
    scopes_claim: String,
    limits: Arc<KeyLimits>,
}

impl JwtVerifier {
    /// Loads the keys; errors name the file or setting, never key material.
    pub fn new(spec: &JwtSpec, base_dir: &Path) -> Result<JwtVerifier, JwtError> {
        let algorithms: Vec<Algorithm> = spec
            .algorithms
            .iter()
            .map(|a| match a {
                JwtAlgorithm::Hs256 => Algorithm::HS256,
                JwtAlgorithm::Rs256 => Algorithm::RS256,
                JwtAlgorithm::Es256 => Algorithm::ES256,
            })
            .collect();
        if algorithms.is_empty() {
            return Err(JwtError::NoAlgorithms);
        }
        let secret = spec
            .hs256_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose().as_bytes()));
        if algorithms.contains(&Algorithm::HS256) && secret.is_none() {
            return Err(JwtError::NoSecret);
        }
        let public_key = match &spec.public_key_file {
            Some(file) => {
                let path = base_dir.join(file);
                let pem = std::fs::read(&path).map_err(|source| JwtError::PublicKeyFile {
                    path: path.clone(),
                    source,
                })?;
                Some((pem, path.display().to_string()))
            }
            None => None,
        };
        let jwks = match &spec.jwks_file {
            Some(file) => {
                let path = base_dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|source| JwtError::JwksFile {
                    path: path.clone(),
                    source,
                })?;
                Some(
                    serde_json::from_str::<JwkSet>(&text)
                        .map_err(|source| JwtError::NotJwks { path, source })?,
                )
            }
            None => None,
        };
        let asymmetric = algorithms
            .iter()
            .any(|a| matches!(a, Algorithm::RS256 | Algorithm::ES256));
        if asymmetric && public_key.is_none() && jwks.is_none() {
            return Err(JwtError::NoPublicKey);
        }
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.clone();
        validation.set_issuer(&[&spec.issuer]);
        validation.set_audience(&[&spec.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = spec.leeway_seconds;
        Ok(JwtVerifier {
            algorithms,
            secret,
            public_key,
            jwks,
            validation,
            scopes_claim: spec.scopes_claim.clone(),
            limits: Arc::new(KeyLimits::unlimited()),
        })
    }

    /// The caller of a verified token.
    pub fn verify(&self, token: &str) -> Result<Principal, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            tracing::debug!(
                bytes = token.len(),
                "bearer token longer than {MAX_TOKEN_BYTES} bytes refused"
            );
            return Err(Refusal::Unauthenticated);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Unauthenticated)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(Refusal::Unauthenticated);
        }
        let key = self.key(header.alg, header.kid.as_deref())?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|_| Refusal::Unauthenticated)?;
        let claims = data.claims;
        let scopes = match &claims[&self.scopes_claim] {
            Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        // Identity providers put other scopes in the same claim: keep ours, skip the rest.
        let scopes = scopes
            .iter()
            .filter_map(|s: &String| Scope::parse(s).ok())
            .collect();
        let name = claims["sub"].as_str().unwrap_or("jwt").to_string();
        Ok(Principal::new(name, scopes, self.limits.clone()))
    }

    fn key(&self, alg: Algorithm, kid: Option<&str>) -> Result<DecodingKey, Refusal> {
        let refused = |_| Refusal::Unauthenticated;
        match alg {
            Algorithm::HS256 => self.secret.clone().ok_or(Refusal::Unauthenticated),
            Algorithm::RS256 | Algorithm::ES256 => {
                if let Some(jwks) = &self.jwks {
                    let jwk = match kid {
                        Some(kid) => jwks.find(kid),
                        None if jwks.keys.len() == 1 => jwks.keys.first(),
                        None => None,
                    }
                    .ok_or(Refusal::Unauthenticated)?;
                    return DecodingKey::from_jwk(jwk).map_err(refused);
                }
                let (pem, _) = self.public_key.as_ref().ok_or(Refusal::Unauthenticated)?;
                if alg == Algorithm::RS256 {
                    DecodingKey::from_rsa_pem(pem).map_err(refused)
                } else {
                    DecodingKey::from_ec_pem(pem).map_err(refused)
                }
            }
            _ => Err(Refusal::Unauthenticated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &str = "hs-secret-for-tests";

    fn verifier() -> JwtVerifier {
        let spec = JwtSpec {
            algorithms: vec![JwtAlgorithm::Hs256],
            issuer: "https://idp.example".into(),
            audience: "streamgate".into(),
            hs256_secret: Some(crate::spec::Secret::new(SECRET.to_string())),
            public_key_file: None,
            jwks_file: None,
            scopes_claim: "scope".into(),
            leeway_seconds: 0,
        };
        JwtVerifier::new(&spec, Path::new(".")).expect("verifier")
    }

    fn token(padding: usize) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let claims = serde_json::json!({
            "sub": "svc", "iss": "https://idp.example", "aud": "streamgate",
            "exp": now + 600, "scope": "infer:*", "padding": "x".repeat(padding),
        });
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("signs")
    }

    #[test]
    fn a_validly_signed_token_over_the_size_limit_is_refused() {
        let v = verifier();
        let small = token(1000);
        assert!(v.verify(&small).is_ok());
        let large = token(MAX_TOKEN_BYTES);
        assert!(large.len() > MAX_TOKEN_BYTES);
        assert!(matches!(v.verify(&large), Err(Refusal::Unauthenticated)));
    }

    #[test]
    fn deeply_nested_claims_are_refused_without_overflowing_the_stack() {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let v = verifier();
        // Within the size limit: serde_json's depth limit (128) refuses the nesting.
        let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
        let header = b64(format!(r#"{{"alg":"HS256","typ":"JWT","x":{deep}}}"#).as_bytes());
        let claims = b64(format!(r#"{{"sub":"svc","x":{deep}}}"#).as_bytes());
        let signing_input = format!("{header}.{claims}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let signature = b64(ring::hmac::sign(&key, signing_input.as_bytes()).as_ref());
        let token = format!("{signing_input}.{signature}");
        assert!(token.len() <= MAX_TOKEN_BYTES);
        assert!(matches!(v.verify(&token), Err(Refusal::Unauthenticated)));
    }
}
