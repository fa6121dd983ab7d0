//! Scrubbing of configured secrets from text that leaves the process.
//!
//! A backend can repeat a credential Streamgate sent it (its API key, a configured header) in
//! an error body: "invalid key sk-…". That text becomes an [`InferError`] message, which is
//! logged, written to dead-letter headers, printed by `validate` and answered to gateway
//! clients. One [`SecretScrubber`] per model version holds every value the version sends
//! (and the forms a backend may echo them in) and replaces each occurrence with
//! [`REDACTED`]. It is applied at two choke points only:
//!
//! - [`ScrubbedBackend`](super::protocol::scrubbed::ScrubbedBackend) wraps the protocol client
//!   of every version that sends secrets, so every error of a call or a contract check is
//!   scrubbed before anything else sees it;
//! - the gateway's pass-through (`gateway::proxy`) scrubs the body of an error answer it
//!   relays verbatim.
//!
//! Success answers are not scrubbed: they are the model's answer to the caller's own input,
//! configured header values are not always secret (a tenant id a model may legitimately
//! return), and rewriting answers would corrupt data; scanning them would also put per-byte
//! work on the hot path. Only error text is rewritten, and only when an error happens.

use std::borrow::Cow;

use memchr::memmem;

use super::error::InferError;
use crate::spec::{EndpointSpec, Secret};

/// What a secret is replaced with.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// Shortest value scrubbed. A 1-3 byte value would rewrite unrelated text (digits of a status
/// code, common words) until the message says nothing, and is guessable anyway, so hiding it
/// protects nothing. Longer values are scrubbed even if that over-redacts: only error text is
/// rewritten, never data.
pub(crate) const MIN_SECRET_LEN: usize = 4;

/// How `crate::codec::truncate_message` marks a cut. A message cut in the middle of a secret
/// keeps only a prefix of it, which no full match finds; the prefix right before this mark is
/// redacted too.
const CUT_MARK: &[u8] = "…".as_bytes();

/// HTTP authentication schemes whose credential (the part after the scheme) is a secret on
/// its own: a backend may echo the token without the scheme.
const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "token", "apikey", "api-key", "key"];

/// The secret values of one model version and the forms a backend may echo them in.
#[derive(Clone, Default)]
pub struct SecretScrubber {
    /// Longest first, so the longest form of a secret wins where several match.
    patterns: Vec<memmem::Finder<'static>>,
}

impl std::fmt::Debug for SecretScrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretScrubber({} patterns)", self.patterns.len())
    }
}

impl SecretScrubber {
    /// A scrubber of `values` (secret values as sent) and their echo forms: the credential of
    /// an `Authorization`-style value without its scheme (`Bearer <token>` → `<token>`), the
    /// decoded `user:pass` and `pass` of `Basic <base64>`, and the JSON-escaped and
    /// percent-encoded spellings of each. Values shorter than [`MIN_SECRET_LEN`] are skipped.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut forms: Vec<String> = Vec::new();
        for value in values {
            forms.push(value.to_string());
            if let Some((scheme, credential)) = value.trim().split_once(char::is_whitespace) {
                let credential = credential.trim();
                if AUTH_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                    forms.push(credential.to_string());
                    if scheme.eq_ignore_ascii_case("basic") {
                        forms.extend(basic_credentials(credential));
                    }
                }
            }
        }
        let mut encoded = Vec::new();
        for form in &forms {
            if let Ok(json) = serde_json::to_string(form) {
                let escaped = &json[1..json.len() - 1];
                encoded.push(escaped.to_string());
                encoded.push(escaped.replace('/', "\\/"));
            }
            encoded.push(percent_encode(form));
        }
        forms.extend(encoded);
        forms.retain(|f| f.len() >= MIN_SECRET_LEN);
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        SecretScrubber {
            patterns: forms
                .iter()
                .map(|f| memmem::Finder::new(f.as_bytes()).into_owned())
                .collect(),
        }
    }

    /// The secrets a version of `endpoint` sends: its API key or its configured headers.
    pub fn for_endpoint(endpoint: &EndpointSpec) -> Self {
        let secrets: Vec<&Secret> = match endpoint {
            EndpointSpec::OipV2(s) => s.headers.values().collect(),
            EndpointSpec::CustomJson(s) => s.headers.values().collect(),
            EndpointSpec::OpenaiChat(s) => s.api_key.iter().collect(),
            EndpointSpec::OpenaiEmbeddings(s) => s.api_key.iter().collect(),
            EndpointSpec::TfServing(_) | EndpointSpec::Onnx(_) => Vec::new(),
        };
        Self::new(secrets.into_iter().map(Secret::expose))
    }

    /// Whether there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `bytes` with every secret replaced by [`REDACTED`], and the prefix of a secret cut off
    /// right before a truncation mark (`…`) too. Borrowed when nothing matched.
    pub fn scrub_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if self.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let replaced = self.replace_all(bytes);
        let cuts: Vec<(usize, usize)> = memmem::find_iter(&replaced, CUT_MARK)
            .filter_map(|cut| Some((cut, self.prefix_before(&replaced, cut)?)))
            .collect();
        if cuts.is_empty() {
            return replaced;
        }
        let mut out = replaced.into_owned();
        // Back to front: a redaction moves what follows it.
        for (cut, k) in cuts.into_iter().rev() {
            redact(&mut out, cut - k, cut);
        }
        Cow::Owned(out)
    }

    /// [`Self::scrub_bytes`] of a body that was cut at its end (read up to a limit, or broken
    /// off): a secret prefix at the very end is redacted as well.
    pub fn scrub_cut_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = self.scrub_bytes(bytes).into_owned();
        let end = out.len();
        if let Some(k) = self.prefix_before(&out, end) {
            redact(&mut out, end - k, end);
        }
        out
    }

    /// `text` scrubbed like [`Self::scrub_bytes`].
    pub fn scrub_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.scrub_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Patterns are whole UTF-8 strings, so replacing them keeps the text UTF-8; a
            // prefix cut before `…` ends on a character boundary (the truncation keeps whole
            // characters), so this is lossless in practice and never panics.
            Cow::Owned(bytes) => Cow::Owned(match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
        }
    }

    /// `error` with its message scrubbed.
    pub fn scrub_error(&self, mut error: InferError) -> InferError {
        if let Cow::Owned(message) = self.scrub_str(&error.message) {
            error.message = message;
        }
        error
    }

    /// Leftmost-longest replacement of every pattern.
    fn replace_all<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        // Next occurrence of each pattern at or after `pos` (None: no more).
        let mut next: Vec<Option<usize>> = self.patterns.iter().map(|p| p.find(bytes)).collect();
        if next.iter().all(Option::is_none) {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut pos = 0;
        loop {
            // Patterns are sorted longest first: on a tie the first (longest) wins.
            let mut best: Option<(usize, usize)> = None;
            for (i, p) in self.patterns.iter().enumerate() {
                if let Some(at) = next[i]
                    && at < pos
                {
                    next[i] = p.find(&bytes[pos..]).map(|j| pos + j);
                }
                if let Some(at) = next[i]
                    && best.is_none_or(|(b, _)| at < b)
                {
                    best = Some((at, i));
                }
            }
            let Some((at, i)) = best else { break };
            out.extend_from_slice(&bytes[pos..at]);
            out.extend_from_slice(REDACTED.as_bytes());
            pos = at + self.patterns[i].needle().len();
        }
        out.extend_from_slice(&bytes[pos..]);
        Cow::Owned(out)
    }

    /// Replaces the longest proper prefix of a pattern that ends at `end`.
    /// Length of the longest proper prefix of a pattern that ends at `end` of `bytes`.
    fn prefix_before(&self, bytes: &[u8], end: usize) -> Option<usize> {
        self.patterns
            .iter()
            .filter_map(|p| {
                let needle = p.needle();
                let max = (needle.len() - 1).min(end);
                // The first byte rules most lengths out before comparing.
                (1..=max)
                    .rev()
                    .find(|k| bytes[end - k] == needle[0] && bytes[end - k..end] == needle[..*k])
            })
            .max()
    }
}

/// Replaces `out[start..end]` with [`REDACTED`].
fn redact(out: &mut Vec<u8>, start: usize, end: usize) {
    let tail = out.split_off(end);
    out.truncate(start);
    out.extend_from_slice(REDACTED.as_bytes());
    out.extend_from_slice(&tail);
}

/// `user:pass` and `pass` of a Basic credential, when it decodes to UTF-8.
fn basic_credentials(credential: &str) -> Vec<String> {
    let Some(text) = base64_decode(credential).and_then(|d| String::from_utf8(d).ok()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some((_, password)) = text.split_once(':') {
        out.push(password.to_string());
    }
    out.push(text);
    out
}

/// Standard base64 (padding optional); `None` when `text` is not base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in digits {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::error::ErrorKind;

    const KEY: &str = "sk-live-0123456789abcdef";

    #[test]
    fn replaces_every_form_of_a_secret() {
        let s = SecretScrubber::new([format!("Bearer {KEY}").as_str(), "p/ss\"word+1"]);
        let text = format!(
            "bad header `Bearer {KEY}`; token {KEY}; json \"p/ss\\\"word+1\"; \
             php p\\/ss\\\"word+1; url p%2Fss%22word%2B1"
        );
        let out = s.scrub_str(&text);
        assert!(!out.contains(KEY) && !out.contains("ss"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 5, "{out}");
        assert!(out.starts_with("bad header `[REDACTED]`"), "{out}");
    }

    #[test]
    fn basic_auth_is_scrubbed_decoded_too() {
        // base64("alice:correct-horse")
        let s = SecretScrubber::new(["Basic YWxpY2U6Y29ycmVjdC1ob3JzZQ=="]);
        let out = s.scrub_str("user alice:correct-horse / password correct-horse");
        assert_eq!(out, "user [REDACTED] / password [REDACTED]");
    }

    #[test]
    fn a_secret_cut_by_truncation_leaves_no_prefix() {
        let s = SecretScrubber::new([KEY]);
        let message = crate::codec::truncate_message(&format!("HTTP 401: bad key {KEY}"), 25);
        assert!(message.ends_with("sk-live…"), "{message}");
        let out = s.scrub_str(&message);
        assert_eq!(out, "HTTP 401: bad key [REDACTED]…");
        assert!(!out.contains("sk-"));
        // A body broken off at its end.
        let cut = s.scrub_cut_bytes(format!("key {}", &KEY[..9]).as_bytes());
        assert_eq!(cut, b"key [REDACTED]");
    }

    #[test]
    fn short_values_and_clean_text_are_left_alone() {
        let s = SecretScrubber::new(["abc", ""]);
        assert!(s.is_empty());
        let s = SecretScrubber::new([KEY]);
        assert!(matches!(s.scrub_str("nothing here…"), Cow::Borrowed(_)));
        assert!(matches!(s.scrub_bytes(b"plain"), Cow::Borrowed(_)));
        assert!(!format!("{s:?}").contains(KEY));
    }

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("YWxpY2U6cHc=").unwrap(), b"alice:pw");
        assert_eq!(base64_decode("YWxpY2U6cHc").unwrap(), b"alice:pw");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("not base64!").is_none());
    }

    #[test]
    fn overlapping_secrets_take_the_longest() {
        let s = SecretScrubber::new(["secret-one", "secret-one-and-more"]);
        assert_eq!(
            s.scrub_str("x secret-one-and-more y secret-one z"),
            "x [REDACTED] y [REDACTED] z"
        );
    }

    #[test]
    fn errors_keep_their_kind() {
        let s = SecretScrubber::new([KEY]);
        let e = InferError::from_status(500, None, format!("{{\"e\":\"{KEY}\"}}").as_bytes());
        let e = s.scrub_error(e);
        assert_eq!(e.kind, ErrorKind::ServerError);
        assert_eq!(e.message, "HTTP 500: {\"e\":\"[REDACTED]\"}");
    }
}
