//! Bytes ↔ Arrow.
//!
//! - [`schema`]: the record schema from declared columns, an Avro `.avsc` or a JSON Schema file;
//! - [`metadata`]: the source metadata columns (`_key`, `_topic`, …) appended to every batch;
//! - [`json`]: JSON decode (with per-record isolation of bad input) and encode;
//! - [`avro`]: Avro decode, plain or in the Confluent wire format with a Schema Registry.

pub mod avro;
pub mod avro_encode;
pub(crate) mod avro_scan;
pub mod json;
mod json_check;
mod json_flat;
mod json_timestamp;
pub mod metadata;
pub mod nesting;
pub(crate) mod registry_client;
pub mod schema;

pub use crate::batch::{RecordFailure, truncate_message};

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
