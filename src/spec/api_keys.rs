//! API keys as configured: the SHA-256 of the key and its scopes. Pure parsing, shared by
//! validation (`validate`, gateway loading) and the gateway's key table.

use super::ApiKeySpec;

/// A scope that is none of the known forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}: expected `infer:<model>`, `infer:*`, `admin:read` or `admin:write`")]
pub struct UnknownScope(pub String);

/// Why a configured key cannot be used. Names the key entry, never a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// `sha256` is not 64 lowercase hex digits.
    #[error("api key {0:?}: `sha256` must be 64 lowercase hex digits")]
    BadHash(String),
    /// A scope does not parse.
    #[error("api key {name:?}: {source}")]
    Scope {
        /// The key entry's name.
        name: String,
        /// The scope.
        #[source]
        source: UnknownScope,
    },
    /// The same key (hash) is configured under two entries.
    #[error("api key {0:?}: the same key is listed twice")]
    Duplicate(String),
}

/// One granted permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Infer on one model.
    Infer(String),
    /// Infer on every model.
    InferAll,
    /// Read the admin API.
    AdminRead,
    /// Change things through the admin API.
    AdminWrite,
}

impl Scope {
    /// Parses `infer:<model>`, `infer:*`, `admin:read`, `admin:write`.
    pub fn parse(text: &str) -> Result<Scope, UnknownScope> {
        match text {
            "infer:*" => Ok(Scope::InferAll),
            "admin:read" => Ok(Scope::AdminRead),
            "admin:write" => Ok(Scope::AdminWrite),
            _ => match text.strip_prefix("infer:") {
                Some(model) if !model.is_empty() => Ok(Scope::Infer(model.to_string())),
                _ => Err(UnknownScope(text.to_string())),
            },
        }
    }
}

/// One configured key, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedApiKey {
    /// SHA-256 of the key (the key itself is never configured).
    pub sha256: [u8; 32],
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// Parses one configured key; errors name the key entry, never a key.
pub(crate) fn parse_api_key(spec: &ApiKeySpec) -> Result<ParsedApiKey, ApiKeyError> {
    let sha256 =
        parse_hex32(&spec.sha256).ok_or_else(|| ApiKeyError::BadHash(spec.name.clone()))?;
    let scopes = spec
        .scopes
        .iter()
        .map(|s| Scope::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ApiKeyError::Scope {
            name: spec.name.clone(),
            source,
        })?;
    Ok(ParsedApiKey { sha256, scopes })
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sha256: &str, scopes: &[&str]) -> ApiKeySpec {
        serde_json::from_value(serde_json::json!({
            "name": "k",
            "sha256": sha256,
            "scopes": scopes,
        }))
        .unwrap()
    }

    #[test]
    fn parses_hash_and_scopes_and_names_the_entry_in_errors() {
        let hash = "ab".repeat(32);
        let parsed = parse_api_key(&key(&hash, &["infer:m", "infer:*", "admin:write"])).unwrap();
        assert_eq!(parsed.sha256, [0xab; 32]);
        assert_eq!(
            parsed.scopes,
            [Scope::Infer("m".into()), Scope::InferAll, Scope::AdminWrite]
        );
        let short = parse_api_key(&key("abc", &[])).unwrap_err().to_string();
        assert!(
            short.contains("\"k\"") && short.contains("64 lowercase hex"),
            "{short}"
        );
        let upper = parse_api_key(&key(&"AB".repeat(32), &[]))
            .unwrap_err()
            .to_string();
        assert!(upper.contains("64 lowercase hex"), "{upper}");
        let scope = parse_api_key(&key(&hash, &["infer:"]))
            .unwrap_err()
            .to_string();
        assert!(scope.contains("unknown scope"), "{scope}");
    }
}
