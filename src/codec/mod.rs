//! Bytes ↔ Arrow.
//!
//! - [`schema`]: the record schema from declared columns, an Avro `.avsc` or a JSON Schema file;
//! - [`metadata`]: the source metadata columns (`_key`, `_topic`, …) appended to every batch;
//! - [`json`]: JSON decode (with per-record isolation of bad input) and encode;
//! - [`avro`]: Avro decode, plain or in the Confluent wire format with a Schema Registry.

pub mod avro;
pub mod avro_encode;
pub mod avro_scan;
pub mod json;
mod json_check;
mod json_flat;
mod json_timestamp;
pub mod metadata;
pub mod nesting;
pub mod registry_client;
pub mod schema;

/// The decoder of a pipeline's record format.
pub enum Decoder {
    /// JSON objects.
    Json(json::JsonDecoder),
    /// Avro datums.
    Avro(Box<avro::AvroDecoder>),
}

impl Decoder {
    /// Gets what decoding `records` needs from outside (Avro writer schemas from the
    /// registry), waiting while it is unavailable.
    pub async fn prepare(&self, records: &[crate::batch::RawRecord]) {
        if let Decoder::Avro(avro) = self {
            avro.prepare(records).await;
        }
    }

    /// Decodes `records` into the SQL input table; bad records are reported, not fatal.
    pub fn decode(&self, records: &[crate::batch::RawRecord]) -> json::Decoded {
        match self {
            Decoder::Json(d) => d.decode(records),
            Decoder::Avro(d) => d.decode(records),
        }
    }
}

/// One record that could not be decoded (or processed by a later stage), by its index in the
/// batch it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    /// Index of the record in the source batch (or of the row in the stage's input).
    pub index: usize,
    /// Bounded error class for metrics and dead-letter headers (`malformed_json`,
    /// `type_mismatch`, `missing_field`, `sql_error`, ...).
    pub class: &'static str,
    /// Human-readable message.
    pub message: String,
}

/// `message` cut to at most `max` bytes (on a character boundary), with `…` when cut. Library
/// messages (DataFusion, arrow, Avro) can quote whole schemas or plans; dead-letter headers and
/// logs need them bounded.
pub fn truncate_message(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncates_on_a_char_boundary() {
        assert_eq!(super::truncate_message("short", 10), "short");
        assert_eq!(super::truncate_message("ééé", 3), "é…");
    }
}
