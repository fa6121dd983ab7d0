//! An OpenAI-compatible request body (`/v1/chat/completions`, `/v1/embeddings`) as the
//! gateway needs it: the `model` it names, and the same body with `model` replaced by the
//! backend's name. The other fields are kept as raw JSON text and copied, not parsed into
//! values and printed again, since the gateway never looks inside them.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

use super::oip_codec::{MAX_JSON_DEPTH, TooDeep, check_json_depth};

/// Why a body is not an OpenAI request the gateway can forward (the caller's fault, 400).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The body nests too deep.
    #[error(transparent)]
    TooDeep(#[from] TooDeep),
    /// The body is not a JSON object.
    #[error("the body is not a JSON object: {0}")]
    NotAnObject(#[source] serde_json::Error),
}

/// A parsed request body.
pub(crate) struct OpenAiBody<'a> {
    fields: Fields<'a>,
}

enum Fields<'a> {
    /// The usual case: keys without escapes, values as raw JSON text.
    Raw(BTreeMap<&'a str, &'a RawValue>),
    /// Keys with escape sequences cannot be borrowed from the body: owned keys, values still
    /// raw JSON text (a value parsed and printed again could change: a long number's digits).
    Owned(BTreeMap<String, Box<RawValue>>),
}

impl<'a> OpenAiBody<'a> {
    /// Parses `body`; the error (the caller's, 400) says why it is not a JSON object, or that
    /// it nests deeper than [`MAX_JSON_DEPTH`]: the fields are copied as raw JSON text, which
    /// serde_json skips without a depth limit, so the limit is checked here before a backend
    /// is sent a body nested a million levels deep.
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, BodyError> {
        check_json_depth(body, MAX_JSON_DEPTH)?;
        let fields = match serde_json::from_slice::<BTreeMap<&str, &RawValue>>(body) {
            Ok(map) => Fields::Raw(map),
            Err(_) => Fields::Owned(serde_json::from_slice(body).map_err(BodyError::NotAnObject)?),
        };
        Ok(OpenAiBody { fields })
    }

    /// The `model` field, when it is a string.
    pub(crate) fn model(&self) -> Option<String> {
        match &self.fields {
            Fields::Raw(map) => serde_json::from_str(map.get("model")?.get()).ok(),
            Fields::Owned(map) => serde_json::from_str(map.get("model")?.get()).ok(),
        }
    }

    /// The body as JSON with `model` set to `model`.
    pub(crate) fn with_model(&self, model: &str) -> String {
        let model_json = Value::from(model).to_string();
        match &self.fields {
            // A borrowed key had no escape sequence, so it is valid between quotes as it is.
            Fields::Raw(map) => {
                write_object(map.iter().map(|(k, v)| (*k, v.get())), false, &model_json)
            }
            Fields::Owned(map) => write_object(
                map.iter().map(|(k, v)| (k.as_str(), v.get())),
                true,
                &model_json,
            ),
        }
    }
}

/// A JSON object of `fields` (key, raw JSON value) with `model`'s value replaced by (or, when
/// absent, added as) `model_json`. `escape_keys`: keys are written as JSON strings; otherwise
/// they are known to need no escaping and are written between quotes as they are.
fn write_object<'b>(
    fields: impl Iterator<Item = (&'b str, &'b str)> + Clone,
    escape_keys: bool,
    model_json: &str,
) -> String {
    let size: usize = fields.clone().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = String::with_capacity(size + model_json.len() + 16);
    out.push('{');
    let mut wrote_model = false;
    for (key, value) in fields {
        if out.len() > 1 {
            out.push(',');
        }
        if escape_keys {
            out.push_str(&Value::from(key).to_string());
        } else {
            out.push('"');
            out.push_str(key);
            out.push('"');
        }
        out.push(':');
        if key == "model" {
            out.push_str(model_json);
            wrote_model = true;
        } else {
            out.push_str(value);
        }
    }
    if !wrote_model {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str("\"model\":");
        out.push_str(model_json);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rewritten(body: &str, model: &str) -> Value {
        let parsed = OpenAiBody::parse(body.as_bytes()).expect("an object");
        serde_json::from_str(&parsed.with_model(model)).expect("valid JSON out")
    }

    /// What a full parse would give: the reference the raw copy must agree with.
    fn reference(body: &str, model: &str) -> Value {
        let mut value: Value = serde_json::from_str(body).unwrap();
        value["model"] = Value::from(model);
        value
    }

    #[test]
    fn model_is_read_and_replaced_and_the_rest_kept() {
        let cases = [
            r#"{"model":"chat","messages":[{"role":"user","content":"hi \"there\" \u00e9"}]}"#,
            r#"{ "messages" : [ ] , "model" : "chat" , "stream" : true, "n": 1.5e3 }"#,
            r#"{"model":"a\"b","temperature":0}"#,
            r#"{"input":["x","y"],"model":"emb","extra":{"nested":{"model":"not me"}}}"#,
            r#"{"we\u0069rd":1,"model":"chat"}"#,
        ];
        for body in cases {
            let parsed = OpenAiBody::parse(body.as_bytes()).unwrap();
            let expected: Value = serde_json::from_str(body).unwrap();
            assert_eq!(
                parsed.model().as_deref(),
                expected["model"].as_str(),
                "{body}"
            );
            assert_eq!(
                rewritten(body, "back\"end"),
                reference(body, "back\"end"),
                "{body}"
            );
        }
    }

    /// Found by the `openai_body` fuzz target: with an escaped key the body was parsed into
    /// values and printed again, and a long number came out with other digits.
    #[test]
    fn numbers_keep_their_exact_text_when_a_key_has_escapes() {
        let long = "12222000010001111111111111111111111111111111111111111111111111111190";
        for body in [
            format!(
                r#"{{"e\u0069rd":{long},"model":"chat","t":0.1000000000000000055511151231257827}}"#
            ),
            format!(r#"{{"eird":{long},"model":"chat","t":0.1000000000000000055511151231257827}}"#),
        ] {
            let out = OpenAiBody::parse(body.as_bytes()).unwrap().with_model("m");
            assert!(out.contains(long), "{out}");
            assert!(
                out.contains("0.1000000000000000055511151231257827"),
                "{out}"
            );
            assert_eq!(rewritten(&body, "m")["model"], "m");
        }
    }

    #[test]
    fn a_missing_or_non_string_model_is_none() {
        assert_eq!(OpenAiBody::parse(b"{}").unwrap().model(), None);
        assert_eq!(OpenAiBody::parse(br#"{"model":3}"#).unwrap().model(), None);
        assert_eq!(rewritten("{}", "m"), serde_json::json!({"model": "m"}));
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for body in ["", "[]", "\"model\"", "{", r#"{"model":"x",}"#, "nul"] {
            let err = OpenAiBody::parse(body.as_bytes())
                .err()
                .expect(body)
                .to_string();
            assert!(err.starts_with("the body is not a JSON object"), "{err}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_even_where_serde_json_would_skip_it() {
        let deep = |levels: usize| {
            format!(
                r#"{{"model": "chat", "messages": {}{}}}"#,
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        // serde_json copies a raw value of any depth (it skips it iteratively).
        let text = deep(100_000);
        let unbounded: BTreeMap<&str, &RawValue> =
            serde_json::from_str(&text).expect("serde_json skips raw values");
        assert_eq!(unbounded.len(), 2);
        assert!(OpenAiBody::parse(deep(MAX_JSON_DEPTH - 1).as_bytes()).is_ok());
        for levels in [MAX_JSON_DEPTH, 100_000] {
            let err = OpenAiBody::parse(deep(levels).as_bytes())
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains("deeper than 64 levels"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_a_full_parse(
            fields in proptest::collection::btree_map("[a-z\\\\\"é]{0,6}", "[ -~é]{0,8}", 0..6),
            model in "[ -~é]{0,8}",
        ) {
            let body = Value::Object(fields.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
                .to_string();
            prop_assert_eq!(rewritten(&body, &model), reference(&body, &model));
        }
    }
}
