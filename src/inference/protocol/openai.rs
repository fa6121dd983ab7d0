//! OpenAI-compatible APIs (OpenAI, vLLM, llama.cpp server, Ollama, ...): chat completions for
//! LLM classification and enrichment (one request per row, a prompt rendered from columns),
//! and embeddings (a batch of texts per request).

use std::borrow::Cow;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::record_batch::RecordBatch;
use serde::Deserialize;
use serde_json::Value;

use super::http_json::JsonProtocol;
use super::json_values::{ValueError, to_array, write_cell, write_str};
use super::{CallOutput, Contract, Selector, SelectorSyntax};
use crate::inference::error::{ErrorKind, InferError};
use crate::spec::{OpenAiChatSpec, OpenAiEmbeddingsSpec, Secret};

/// Why a prompt template cannot be parsed or rendered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TemplateError {
    /// A `{column}` that is not one of the step's inputs.
    #[error(
        "`{{{name}}}` is not one of the step's inputs ({}); add it to `inputs` or write `{{{{` for a literal brace",
        inputs.join(", ")
    )]
    UnknownColumn {
        /// The name between the braces.
        name: String,
        /// The step's inputs.
        inputs: Vec<String>,
    },
    /// A `}` without its `{`.
    #[error("unmatched `}}`: write `}}}}` for a literal brace")]
    UnmatchedBrace,
    /// A value that cannot be written into the prompt.
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// A prompt template: literal text and `{column}` references.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// Index into the contract's inputs.
    Column(usize),
}

impl Template {
    /// Parses `{column}` references against `inputs`; `{{` and `}}` are literal braces.
    pub(crate) fn parse(text: &str, inputs: &[String]) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    let Some(index) = inputs.iter().position(|i| *i == name) else {
                        return Err(TemplateError::UnknownColumn {
                            name,
                            inputs: inputs.to_vec(),
                        });
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Column(index));
                }
                '}' => return Err(TemplateError::UnmatchedBrace),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Renders the template for one row (strings as they are, other values as JSON).
    pub(crate) fn render(&self, inputs: &RecordBatch, row: usize) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Column(i) => {
                    let column = inputs.column(*i);
                    match as_str(column, row) {
                        Some(s) => out.push_str(&s),
                        None => write_cell(&mut out, column.as_ref(), row)?,
                    }
                }
            }
        }
        Ok(out)
    }
}

fn as_str(column: &ArrayRef, row: usize) -> Option<String> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::DataType;
    if column.is_null(row) {
        return None;
    }
    match column.data_type() {
        DataType::Utf8 => Some(column.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Some(column.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Some(column.as_string_view().value(row).to_string()),
        _ => None,
    }
}

/// Chat completions protocol of one model version (sent by an
/// [`HttpJsonBackend`](super::http_json::HttpJsonBackend)).
pub(crate) struct ChatBackend {
    spec: OpenAiChatSpec,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl ChatBackend {
    /// A client for `spec`. The prompt is checked against each step's inputs when the
    /// pipeline is compiled ([`ChatBackend::check_prompt`]).
    pub(crate) fn new(spec: &OpenAiChatSpec) -> Self {
        ChatBackend { spec: spec.clone() }
    }

    /// Checks that the prompt only references `inputs`.
    pub(crate) fn check_prompt(
        spec: &OpenAiChatSpec,
        inputs: &[String],
    ) -> Result<(), TemplateError> {
        Template::parse(&spec.prompt, inputs).map(|_| ())
    }

    fn encode(&self, inputs: &RecordBatch, contract: &Contract) -> Result<String, InferError> {
        // Parsing per request costs well under a microsecond; a chat call costs milliseconds.
        let prompt = Template::parse(&self.spec.prompt, &contract.inputs)
            .and_then(|t| t.render(inputs, 0))
            .map_err(|m| InferError::new(ErrorKind::BadInput, m.to_string()))?;
        let mut out = String::from("{\"model\":");
        write_str(&mut out, &self.spec.model);
        out.push_str(",\"messages\":[");
        if let Some(system) = &self.spec.system {
            out.push_str("{\"role\":\"system\",\"content\":");
            write_str(&mut out, system);
            out.push_str("},");
        }
        out.push_str("{\"role\":\"user\",\"content\":");
        write_str(&mut out, &prompt);
        out.push_str("}]");
        out.push_str(&format!(",\"temperature\":{}", self.spec.temperature));
        if let Some(max) = self.spec.max_tokens {
            out.push_str(&format!(",\"max_tokens\":{max}"));
        }
        if self.spec.json_answer {
            out.push_str(",\"response_format\":{\"type\":\"json_object\"}");
        }
        out.push('}');
        Ok(out)
    }

    fn decode(body: &[u8], contract: &Contract) -> Result<CallOutput, InferError> {
        let response: ChatResponse = serde_json::from_slice(body)
            .map_err(|e| InferError::contract(format!("malformed chat completion: {e}")))?;
        let text = response
            .choices
            .first()
            .and_then(|c| c.message.content.clone())
            .ok_or_else(|| InferError::contract("the chat completion has no message content"))?;
        let mut parsed: Option<Value> = None;
        let mut columns = Vec::with_capacity(contract.outputs.len());
        for binding in &contract.outputs {
            let value = match &binding.selector {
                Selector::Text => Value::String(text.clone()),
                Selector::Pointer(p) => {
                    if parsed.is_none() {
                        parsed = Some(serde_json::from_str(strip_fences(&text)).map_err(|e| {
                            InferError::contract(format!(
                                "the answer is not JSON ({e}): {}",
                                crate::codec::truncate_message(&text, 120)
                            ))
                        })?);
                    }
                    parsed
                        .as_ref()
                        .and_then(|v| v.pointer(p))
                        .cloned()
                        .unwrap_or(Value::Null)
                }
                _ => {
                    return Err(InferError::contract(
                        "chat outputs are `text` or JSON pointers",
                    ));
                }
            };
            columns.push(
                to_array(&[&value], binding.data_type).map_err(|e| {
                    InferError::contract(format!("output `{}`: {e}", binding.column))
                })?,
            );
        }
        let usage = response.usage.unwrap_or_default();
        Ok(CallOutput {
            columns,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        })
    }
}

/// Models often wrap JSON answers in a Markdown code fence.
fn strip_fences(text: &str) -> &str {
    let t = text.trim();
    let Some(inner) = t.strip_prefix("```") else {
        return t;
    };
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    inner.strip_suffix("```").unwrap_or(inner).trim()
}

impl JsonProtocol for ChatBackend {
    fn path(&self) -> Cow<'_, str> {
        Cow::Borrowed("chat/completions")
    }

    fn encode_body(&self, inputs: &RecordBatch, contract: &Contract) -> Result<String, InferError> {
        if inputs.num_rows() != 1 {
            return Err(InferError::new(
                ErrorKind::Runtime,
                "chat completions take one row per request",
            ));
        }
        self.encode(inputs, contract)
    }

    fn decode_answer(
        &self,
        body: &[u8],
        contract: &Contract,
        _rows: usize,
    ) -> Result<CallOutput, InferError> {
        Self::decode(body, contract)
    }

    fn bearer(&self) -> Option<&Secret> {
        self.spec.api_key.as_ref()
    }

    fn max_rows_per_request(&self) -> Option<usize> {
        Some(1)
    }

    fn selector_syntax(&self) -> SelectorSyntax {
        SelectorSyntax::ChatAnswer
    }
}

/// Embeddings protocol of one model version (sent by an
/// [`HttpJsonBackend`](super::http_json::HttpJsonBackend)).
pub(crate) struct EmbeddingsBackend {
    model: String,
    api_key: Option<Secret>,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<Embedding>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Embedding {
    index: usize,
    embedding: Value,
}

impl EmbeddingsBackend {
    /// A client for `spec`.
    pub(crate) fn new(spec: &OpenAiEmbeddingsSpec) -> Self {
        EmbeddingsBackend {
            model: spec.model.clone(),
            api_key: spec.api_key.clone(),
        }
    }

    fn encode(&self, inputs: &RecordBatch) -> Result<String, InferError> {
        let mut out = String::from("{\"model\":");
        write_str(&mut out, &self.model);
        out.push_str(",\"input\":[");
        let column = inputs.column(0);
        for row in 0..inputs.num_rows() {
            if row > 0 {
                out.push(',');
            }
            match as_str(column, row) {
                Some(s) => write_str(&mut out, &s),
                None => {
                    return Err(InferError::new(
                        ErrorKind::BadInput,
                        "embedding input must be a non-null string",
                    ));
                }
            }
        }
        out.push_str("]}");
        Ok(out)
    }

    fn decode(body: &[u8], contract: &Contract, rows: usize) -> Result<CallOutput, InferError> {
        let mut response: EmbeddingsResponse = serde_json::from_slice(body)
            .map_err(|e| InferError::contract(format!("malformed embeddings answer: {e}")))?;
        response.data.sort_by_key(|e| e.index);
        if response.data.len() != rows
            || response.data.iter().enumerate().any(|(i, e)| e.index != i)
        {
            return Err(InferError::contract(format!(
                "the model answered {} embeddings for {rows} inputs",
                response.data.len()
            )));
        }
        let values: Vec<&Value> = response.data.iter().map(|e| &e.embedding).collect();
        let mut columns = Vec::new();
        for binding in &contract.outputs {
            columns.push(
                to_array(&values, binding.data_type)
                    .map_err(|e| InferError::contract(format!("embedding: {e}")))?,
            );
        }
        let usage = response.usage.unwrap_or_default();
        Ok(CallOutput {
            columns,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: 0,
        })
    }
}

impl JsonProtocol for EmbeddingsBackend {
    fn path(&self) -> Cow<'_, str> {
        Cow::Borrowed("embeddings")
    }

    fn encode_body(&self, inputs: &RecordBatch, _: &Contract) -> Result<String, InferError> {
        self.encode(inputs)
    }

    fn decode_answer(
        &self,
        body: &[u8],
        contract: &Contract,
        rows: usize,
    ) -> Result<CallOutput, InferError> {
        Self::decode(body, contract, rows)
    }

    fn bearer(&self) -> Option<&Secret> {
        self.api_key.as_ref()
    }

    fn selector_syntax(&self) -> SelectorSyntax {
        SelectorSyntax::Embedding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::protocol::OutputBinding;
    use crate::spec::OutputType;
    use datafusion::arrow::array::{AsArray, Float64Array, StringArray};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            (
                "merchant",
                Arc::new(StringArray::from(vec!["ACME \"shop\""])) as ArrayRef,
            ),
            (
                "amount",
                Arc::new(Float64Array::from(vec![12.5])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn templates() {
        let inputs = vec!["merchant".to_string(), "amount".to_string()];
        let t = Template::parse("Merchant {merchant} spent {amount} {{json}}", &inputs).unwrap();
        assert_eq!(
            t.render(&batch(), 0).unwrap(),
            "Merchant ACME \"shop\" spent 12.5 {json}"
        );
        let err = Template::parse("{nope}", &inputs).unwrap_err().to_string();
        assert!(
            err.contains("not one of the step's inputs (merchant, amount)"),
            "{err}"
        );
        assert_eq!(
            err,
            "`{nope}` is not one of the step's inputs (merchant, amount); add it to `inputs` or \
             write `{{` for a literal brace"
        );
        assert_eq!(
            Template::parse("a } b", &inputs).unwrap_err().to_string(),
            "unmatched `}`: write `}}` for a literal brace"
        );
    }

    #[test]
    fn chat_request_and_json_answer() {
        let spec = OpenAiChatSpec {
            replicas: vec![],
            model: "gpt".into(),
            prompt: "Classify {merchant}".into(),
            system: Some("Answer JSON".into()),
            json_answer: true,
            max_tokens: Some(20),
            temperature: 0.0,
            api_key: None,
            tls: None,
        };
        let inputs = vec!["merchant".to_string(), "amount".to_string()];
        assert!(ChatBackend::check_prompt(&spec, &inputs[1..]).is_err());
        let b = ChatBackend::new(&spec);
        let c = Contract {
            inputs: inputs.clone(),
            outputs: vec![],
        };
        let body: Value = serde_json::from_str(&b.encode(&batch(), &c).unwrap()).unwrap();
        assert_eq!(body["messages"][1]["content"], "Classify ACME \"shop\"");
        assert_eq!(body["response_format"]["type"], "json_object");
        let contract = Contract {
            inputs,
            outputs: vec![
                OutputBinding {
                    column: "label".into(),
                    selector: Selector::Pointer("/label".into()),
                    data_type: OutputType::String,
                },
                OutputBinding {
                    column: "raw".into(),
                    selector: Selector::Text,
                    data_type: OutputType::String,
                },
            ],
        };
        let answer = br#"{"choices":[{"message":{"role":"assistant","content":"```json\n{\"label\":\"retail\"}\n```"}}],"usage":{"prompt_tokens":11,"completion_tokens":4}}"#;
        let out = ChatBackend::decode(answer, &contract).unwrap();
        assert_eq!(out.columns[0].as_string::<i32>().value(0), "retail");
        assert_eq!((out.prompt_tokens, out.completion_tokens), (11, 4));
        let not_json = br#"{"choices":[{"message":{"content":"retail"}}]}"#;
        assert!(
            ChatBackend::decode(not_json, &contract)
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
    }

    #[test]
    fn embeddings_in_index_order() {
        let contract = Contract {
            inputs: vec!["t".into()],
            outputs: vec![OutputBinding {
                column: "v".into(),
                selector: Selector::Embedding,
                data_type: OutputType::Float32List,
            }],
        };
        let answer = br#"{"data":[{"index":1,"embedding":[3,4]},{"index":0,"embedding":[1,2]}],"usage":{"prompt_tokens":5}}"#;
        let out = EmbeddingsBackend::decode(answer, &contract, 2).unwrap();
        let list = out.columns[0].as_list::<i32>();
        assert_eq!(
            list.value(0)
                .as_primitive::<datafusion::arrow::datatypes::Float32Type>()
                .value(0),
            1.0
        );
        assert!(EmbeddingsBackend::decode(answer, &contract, 3).is_err());
    }
}
