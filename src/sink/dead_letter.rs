//! Dead-letter records: the original bytes, key and headers of a failed record plus context.

use std::sync::Arc;

use serde::Serialize;

use crate::batch::RawRecord;

/// Prefix of the context headers added to dead-letter records.
pub const HEADER_PREFIX: &str = "streamgate.";

/// Longest error message kept in a header; librdkafka and DataFusion messages can be long.
const MAX_MESSAGE_LEN: usize = 1024;

/// A failed record on its way to the dead-letter sink.
#[derive(Debug, Clone)]
pub struct DeadLetterRecord {
    /// The record exactly as read.
    pub record: RawRecord,
    /// Pipeline name.
    pub pipeline: Arc<str>,
    /// Stage that failed: `decode`, `sql`, `route`, `encode`, `publish`.
    pub stage: &'static str,
    /// Bounded error class (`malformed_json`, `missing_field`, `sql_error`, ...).
    pub class: &'static str,
    /// Error message (truncated).
    pub message: String,
    /// The model call that failed, for stage `model`.
    pub model: Option<ModelContext>,
}

/// Which model call failed, and after how many attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelContext {
    /// Model name.
    pub model: Arc<str>,
    /// Version called.
    pub version: Arc<str>,
    /// Attempts made.
    pub attempts: u32,
}

impl DeadLetterRecord {
    /// Context headers, in a stable order.
    pub fn context_headers(&self) -> Vec<(String, String)> {
        let p = &self.record.position;
        let mut message = self.message.clone();
        if message.len() > MAX_MESSAGE_LEN {
            let mut cut = MAX_MESSAGE_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let mut headers = vec![
            (
                format!("{HEADER_PREFIX}pipeline"),
                self.pipeline.to_string(),
            ),
            (format!("{HEADER_PREFIX}stage"), self.stage.to_string()),
            (
                format!("{HEADER_PREFIX}error.class"),
                self.class.to_string(),
            ),
            (format!("{HEADER_PREFIX}error.message"), message),
            (format!("{HEADER_PREFIX}source.topic"), p.topic.to_string()),
            (
                format!("{HEADER_PREFIX}source.partition"),
                p.partition.to_string(),
            ),
            (
                format!("{HEADER_PREFIX}source.offset"),
                p.offset.to_string(),
            ),
        ];
        if let Some(m) = &self.model {
            headers.push((format!("{HEADER_PREFIX}model"), m.model.to_string()));
            headers.push((
                format!("{HEADER_PREFIX}model.version"),
                m.version.to_string(),
            ));
            headers.push((format!("{HEADER_PREFIX}attempts"), m.attempts.to_string()));
        }
        headers
    }

    /// One JSON line for text sinks (stdout, file): context plus the payload, as a string when
    /// it is UTF-8 and base64 otherwise.
    pub fn to_json_line(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Line<'a> {
            pipeline: &'a str,
            stage: &'a str,
            error_class: &'a str,
            error: &'a str,
            topic: &'a str,
            partition: i32,
            offset: i64,
            #[serde(skip_serializing_if = "Option::is_none")]
            model: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            model_version: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            attempts: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            key: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            payload: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            payload_base64: Option<String>,
        }
        let text = std::str::from_utf8(&self.record.payload).ok();
        let line = Line {
            pipeline: &self.pipeline,
            stage: self.stage,
            error_class: self.class,
            error: &self.message,
            topic: &self.record.position.topic,
            partition: self.record.position.partition,
            offset: self.record.position.offset,
            model: self.model.as_ref().map(|m| &*m.model),
            model_version: self.model.as_ref().map(|m| &*m.version),
            attempts: self.model.as_ref().map(|m| m.attempts),
            key: self
                .record
                .key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: text,
            payload_base64: text.is_none().then(|| base64(&self.record.payload)),
        };
        let mut out = serde_json::to_vec(&line).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Position;

    fn record(payload: &[u8]) -> DeadLetterRecord {
        DeadLetterRecord {
            record: RawRecord {
                key: Some(b"k1".to_vec()),
                payload: payload.to_vec(),
                headers: vec![],
                timestamp_ms: None,
                position: Position {
                    topic: "tx".into(),
                    partition: 3,
                    offset: 42,
                },
            },
            pipeline: "p".into(),
            stage: "decode",
            class: "malformed_json",
            message: "x".repeat(5000),
            model: None,
        }
    }

    #[test]
    fn headers_carry_position_and_truncated_message() {
        let h = record(b"{").context_headers();
        assert_eq!(h[4], ("streamgate.source.topic".into(), "tx".into()));
        assert_eq!(h[6], ("streamgate.source.offset".into(), "42".into()));
        assert_eq!(h[3].1.len(), MAX_MESSAGE_LEN);
        let mut r = record(b"{");
        r.model = Some(ModelContext {
            model: "fraud".into(),
            version: "2".into(),
            attempts: 3,
        });
        let h = r.context_headers();
        assert_eq!(h[7], ("streamgate.model".into(), "fraud".into()));
        assert_eq!(h[9], ("streamgate.attempts".into(), "3".into()));
        let line: serde_json::Value = serde_json::from_slice(&r.to_json_line()).unwrap();
        assert_eq!(line["model_version"], "2");
    }

    #[test]
    fn json_line_uses_base64_for_binary_payloads() {
        let line: serde_json::Value =
            serde_json::from_slice(&record(&[0xff, 0x00, 0x41]).to_json_line()).unwrap();
        assert_eq!(line["payload_base64"], "/wBB");
        assert!(line.get("payload").is_none());
        let line: serde_json::Value =
            serde_json::from_slice(&record(b"{bad").to_json_line()).unwrap();
        assert_eq!(line["payload"], "{bad");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
    }
}
