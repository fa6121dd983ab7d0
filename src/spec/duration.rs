//! Durations written as human strings (`"250ms"`, `"30s"`, `"2m"`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// `#[serde(with = "crate::spec::duration")]` for `Duration` fields.
pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Parses `"250ms"`, `"1s 500ms"`, `"2m"`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?}: {e} (write it like \"250ms\", \"5s\" or \"2m\")"
        ))
    })
}
