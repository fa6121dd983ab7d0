//! Dead-letter records: the original bytes, key and headers of a failed record plus context.

use std::sync::Arc;

use serde::Serialize;

pub use crate::batch::ModelContext;
use crate::batch::{Failure, RawRecord};

/// Prefix of the context headers added to dead-letter records.
pub(crate) const HEADER_PREFIX: &str = "streamgate.";

/// Longest error message kept in a header; librdkafka and DataFusion messages can be long.
const MAX_MESSAGE_LEN: usize = 1024;

/// A failed record on its way to the dead-letter sink.
#[derive(Debug, Clone)]
pub struct DeadLetterRecord {
    /// The record exactly as read.
    pub record: RawRecord,
    /// Pipeline name.
    pub pipeline: Arc<str>,
    /// Why it failed (the message is cut to 1 KiB in headers).
    pub failure: Failure,
}

/// Bytes a message costs beyond its key, payload and header bytes: Kafka's record and batch
/// framing (about 70 bytes for one record in a batch), NATS's `HPUB` line and `NATS/1.0`
/// preamble. Generous, so an estimate that fits really fits.
const MESSAGE_OVERHEAD: usize = 512;

/// Bytes one header costs beyond its name and value: Kafka's two length varints (NATS's
/// `: ` and CRLF).
const HEADER_OVERHEAD: usize = 8;

/// Longest key a bounded dead letter keeps: a key identifies the record; a key bigger than
/// this is the poison itself.
const BOUNDED_KEY_LEN: usize = 1024;

/// Longest original header a bounded dead letter keeps (trace context, content type and the
/// like are far smaller).
const BOUNDED_HEADER_LEN: usize = 4096;

/// A dead letter as it is sent: the original record, or a bounded form of it that fits the
/// sink's message limit.
#[derive(Debug)]
pub struct Letter<'a> {
    /// The key (possibly truncated).
    pub key: Option<&'a [u8]>,
    /// The payload (possibly a prefix).
    pub payload: &'a [u8],
    /// The original headers kept, in order.
    pub original_headers: Vec<&'a (String, Option<Vec<u8>>)>,
    /// Context headers, then, for a bounded form, what was cut.
    pub context: Vec<(String, String)>,
}

impl Letter<'_> {
    /// Whether parts of the original were left out.
    pub fn is_truncated(&self) -> bool {
        self.context
            .iter()
            .any(|(name, _)| name.as_str() == TRUNCATED_HEADER)
    }
}

/// Header naming what a bounded dead letter left out (`payload`, `key`, `headers`).
pub(crate) const TRUNCATED_HEADER: &str = "streamgate.truncated";

impl DeadLetterRecord {
    /// The dead letter as it should be sent to a sink whose messages hold at most
    /// `max_message_bytes` (key, payload, headers and framing). The whole record when it fits;
    /// otherwise a bounded form: the context headers, `streamgate.truncated` naming what was
    /// cut, the original sizes (`streamgate.original.{payload,key,headers}.bytes`), the key
    /// up to 1 KiB, the original headers that are small and fit, and as much of the payload
    /// as fits. With a limit too small for even the context, the context alone.
    pub fn fit(&self, max_message_bytes: usize) -> Letter<'_> {
        let record = &self.record;
        let mut context = self.context_headers();
        let key_len = record.key.as_ref().map_or(0, Vec::len);
        let original_headers_len: usize = record.headers.iter().map(header_size).sum();
        let whole = MESSAGE_OVERHEAD
            + key_len
            + record.payload.len()
            + original_headers_len
            + context.iter().map(context_size).sum::<usize>();
        if whole <= max_message_bytes {
            return Letter {
                key: record.key.as_deref(),
                payload: &record.payload,
                original_headers: record.headers.iter().collect(),
                context,
            };
        }
        context.extend([
            (
                format!("{HEADER_PREFIX}original.payload.bytes"),
                record.payload.len().to_string(),
            ),
            (
                format!("{HEADER_PREFIX}original.key.bytes"),
                key_len.to_string(),
            ),
            (
                format!("{HEADER_PREFIX}original.headers.bytes"),
                original_headers_len.to_string(),
            ),
            // Filled in below, once it is known what was cut (its longest value is reserved).
            (
                TRUNCATED_HEADER.to_string(),
                "payload,key,headers".to_string(),
            ),
        ]);
        let mut room = max_message_bytes
            .saturating_sub(MESSAGE_OVERHEAD + context.iter().map(context_size).sum::<usize>());
        let mut cut = Vec::new();
        let key = record.key.as_deref().map(|key| {
            let keep = key.len().min(BOUNDED_KEY_LEN).min(room);
            room -= keep;
            if keep < key.len() {
                cut.push("key");
            }
            &key[..keep]
        });
        let mut original_headers = Vec::new();
        for header in &record.headers {
            let size = header_size(header);
            if size <= BOUNDED_HEADER_LEN && size <= room {
                room -= size;
                original_headers.push(header);
            }
        }
        if original_headers.len() < record.headers.len() {
            cut.push("headers");
        }
        let keep = record.payload.len().min(room);
        if keep < record.payload.len() {
            cut.push("payload");
        }
        if let Some(last) = context.last_mut() {
            last.1 = cut.join(",");
        }
        Letter {
            key,
            payload: &record.payload[..keep],
            original_headers,
            context,
        }
    }

    /// Context headers, in a stable order.
    pub fn context_headers(&self) -> Vec<(String, String)> {
        let p = &self.record.position;
        let f = &self.failure;
        let mut message = f.message.clone();
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
            (format!("{HEADER_PREFIX}stage"), f.stage.to_string()),
            (format!("{HEADER_PREFIX}error.class"), f.class.to_string()),
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
        if let Some(m) = &f.model {
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
        let f = &self.failure;
        let line = Line {
            pipeline: &self.pipeline,
            stage: f.stage.as_str(),
            error_class: f.class.as_str(),
            error: &f.message,
            topic: &self.record.position.topic,
            partition: self.record.position.partition,
            offset: self.record.position.offset,
            model: f.model.as_ref().map(|m| &*m.model),
            model_version: f.model.as_ref().map(|m| &*m.version),
            attempts: f.model.as_ref().map(|m| m.attempts),
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

/// What an original header costs in a message.
fn header_size((name, value): &(String, Option<Vec<u8>>)) -> usize {
    name.len() + value.as_ref().map_or(0, Vec::len) + HEADER_OVERHEAD
}

/// What a context header costs in a message.
fn context_size((name, value): &(String, String)) -> usize {
    name.len() + value.len() + HEADER_OVERHEAD
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{ErrorClass, Position, Stage};

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
            failure: Failure::new(Stage::Decode, ErrorClass::MalformedJson, "x".repeat(5000)),
        }
    }

    #[test]
    fn headers_carry_position_and_truncated_message() {
        let h = record(b"{").context_headers();
        assert_eq!(h[4], ("streamgate.source.topic".into(), "tx".into()));
        assert_eq!(h[6], ("streamgate.source.offset".into(), "42".into()));
        assert_eq!(h[3].1.len(), MAX_MESSAGE_LEN);
        let mut r = record(b"{");
        r.failure.model = Some(ModelContext {
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

    /// What a letter costs by the same accounting as `fit`.
    fn size(letter: &Letter<'_>) -> usize {
        MESSAGE_OVERHEAD
            + letter.key.map_or(0, <[u8]>::len)
            + letter.payload.len()
            + letter
                .original_headers
                .iter()
                .map(|h| header_size(h))
                .sum::<usize>()
            + letter.context.iter().map(context_size).sum::<usize>()
    }

    fn header<'a>(letter: &'a Letter<'_>, name: &str) -> Option<&'a str> {
        letter
            .context
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_record_that_fits_is_sent_whole() {
        let mut r = record(b"{bad json");
        r.record.headers = vec![("trace".into(), Some(b"abc".to_vec()))];
        let letter = r.fit(1_000_000);
        assert!(!letter.is_truncated());
        assert_eq!(letter.payload, b"{bad json");
        assert_eq!(letter.key, Some(&b"k1"[..]));
        assert_eq!(letter.original_headers.len(), 1);
    }

    #[test]
    fn a_poison_header_is_left_out_and_the_rest_kept() {
        let mut r = record(b"{bad json");
        r.record.headers = vec![
            ("trace".into(), Some(b"abc".to_vec())),
            ("poison".into(), Some(vec![b'x'; 1 << 20])),
        ];
        let letter = r.fit(1_000_000);
        assert!(letter.is_truncated());
        assert!(size(&letter) <= 1_000_000);
        assert_eq!(letter.payload, b"{bad json");
        assert_eq!(letter.key, Some(&b"k1"[..]));
        let kept: Vec<&str> = letter
            .original_headers
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(kept, ["trace"]);
        assert_eq!(header(&letter, TRUNCATED_HEADER), Some("headers"));
        assert_eq!(
            header(&letter, "streamgate.original.headers.bytes"),
            Some(
                ((1 << 20) + 6 + 5 + 3 + 2 * HEADER_OVERHEAD)
                    .to_string()
                    .as_str()
            )
        );
        assert_eq!(header(&letter, "streamgate.source.offset"), Some("42"));
    }

    #[test]
    fn a_huge_key_and_payload_are_cut_to_fit() {
        let mut r = record(&vec![b'p'; 3 << 20]);
        r.record.key = Some(vec![b'k'; 1 << 20]);
        for limit in [1_000_000, 64 * 1024, 2048] {
            let letter = r.fit(limit);
            assert!(size(&letter) <= limit, "{limit}: {}", size(&letter));
            assert!(letter.key.is_some_and(|k| k.len() <= BOUNDED_KEY_LEN));
            assert!(letter.payload.len() < 3 << 20);
            assert_eq!(header(&letter, TRUNCATED_HEADER), Some("key,payload"));
            assert_eq!(
                header(&letter, "streamgate.original.payload.bytes"),
                Some((3usize << 20).to_string().as_str())
            );
            assert_eq!(
                header(&letter, "streamgate.original.key.bytes"),
                Some((1usize << 20).to_string().as_str())
            );
        }
        // As much of the payload as fits: the bigger the limit, the more is kept.
        let roomy = r.fit(1_000_000);
        assert_eq!(roomy.key.map(<[u8]>::len), Some(BOUNDED_KEY_LEN));
        assert!(roomy.payload.len() > 990_000);
    }

    #[test]
    fn a_limit_below_the_context_keeps_the_context_alone() {
        let mut r = record(b"{bad json");
        r.record.key = Some(vec![b'k'; 10]);
        let letter = r.fit(0);
        assert!(letter.payload.is_empty());
        assert_eq!(letter.key, Some(&b""[..]));
        assert!(letter.original_headers.is_empty());
        assert_eq!(header(&letter, "streamgate.stage"), Some("decode"));
        assert_eq!(header(&letter, TRUNCATED_HEADER), Some("key,payload"));
    }
}
