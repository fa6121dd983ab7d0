//! Any JSON API: `POST <replica><path>` with a body template in which `"{{rows}}"` becomes
//! `[{input columns}, ...]`; the array at `results_pointer` in the answer has one element per row and
//! each output is a JSON pointer into an element.

use std::borrow::Cow;

use datafusion::arrow::record_batch::RecordBatch;
use serde_json::Value;

use super::http_json::JsonProtocol;
use super::json_values::{to_array, write_cell, write_str};
use super::{CallOutput, Contract, Selector, SelectorSyntax};
use crate::inference::error::{ErrorKind, InferError};
use crate::spec::{CustomJsonSpec, Secret};

/// Custom JSON protocol of one model version (sent by an
/// [`HttpJsonBackend`](super::http_json::HttpJsonBackend)).
pub(crate) struct CustomJsonBackend {
    path: String,
    /// The body template rendered once, split where the rows go.
    before_rows: String,
    after_rows: String,
    results_pointer: String,
    headers: Vec<(String, Secret)>,
}

impl CustomJsonBackend {
    /// A client for `spec`.
    pub(crate) fn new(spec: &CustomJsonSpec) -> Self {
        // Validation guarantees the marker is there once; without it the rows go at the end
        // of nothing, which the server will reject loudly.
        let template = serde_json::to_string(&spec.body).unwrap_or_default();
        let marker = serde_json::to_string(crate::spec::ROWS_MARKER).unwrap_or_default();
        let (before, after) = template.split_once(&marker).unwrap_or((&template, ""));
        CustomJsonBackend {
            path: spec.path.clone(),
            before_rows: before.to_string(),
            after_rows: after.to_string(),
            results_pointer: spec.results_pointer.clone(),
            headers: spec
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn encode(&self, inputs: &RecordBatch, contract: &Contract) -> Result<String, InferError> {
        let mut out = self.before_rows.clone();
        out.push('[');
        for row in 0..inputs.num_rows() {
            if row > 0 {
                out.push(',');
            }
            out.push('{');
            for (i, (col, name)) in inputs.columns().iter().zip(&contract.inputs).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(&mut out, name);
                out.push(':');
                write_cell(&mut out, col.as_ref(), row)
                    .map_err(|m| InferError::new(ErrorKind::BadInput, m.to_string()))?;
            }
            out.push('}');
        }
        out.push(']');
        out.push_str(&self.after_rows);
        Ok(out)
    }

    fn decode(
        &self,
        body: &[u8],
        contract: &Contract,
        rows: usize,
    ) -> Result<CallOutput, InferError> {
        let answer: Value = serde_json::from_slice(body)
            .map_err(|e| InferError::contract(format!("malformed JSON answer: {e}")))?;
        let results = answer
            .pointer(&self.results_pointer)
            .and_then(Value::as_array)
            .ok_or_else(|| {
                InferError::contract(format!(
                    "the answer has no array at `{}`",
                    self.results_pointer
                ))
            })?;
        if results.len() != rows {
            return Err(InferError::contract(format!(
                "the model answered {} results for {rows} rows",
                results.len()
            )));
        }
        let mut columns = Vec::with_capacity(contract.outputs.len());
        for binding in &contract.outputs {
            let Selector::Pointer(pointer) = &binding.selector else {
                return Err(InferError::contract(
                    "custom JSON outputs are JSON pointers",
                ));
            };
            let values: Vec<&Value> = results
                .iter()
                .map(|r| r.pointer(pointer).unwrap_or(&Value::Null))
                .collect();
            columns.push(
                to_array(&values, binding.data_type)
                    .map_err(|e| InferError::contract(format!("output `{pointer}`: {e}")))?,
            );
        }
        Ok(CallOutput::columns(columns))
    }
}

impl JsonProtocol for CustomJsonBackend {
    fn path(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.path)
    }

    fn encode_body(&self, inputs: &RecordBatch, contract: &Contract) -> Result<String, InferError> {
        self.encode(inputs, contract)
    }

    fn decode_answer(
        &self,
        body: &[u8],
        contract: &Contract,
        rows: usize,
    ) -> Result<CallOutput, InferError> {
        self.decode(body, contract, rows)
    }

    fn headers(&self) -> &[(String, Secret)] {
        &self.headers
    }

    fn selector_syntax(&self) -> SelectorSyntax {
        SelectorSyntax::Pointer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::protocol::OutputBinding;
    use crate::spec::OutputType;
    use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
    use std::sync::Arc;

    #[test]
    fn round_trip() {
        let spec = CustomJsonSpec {
            replicas: vec![],
            path: "/score".into(),
            body: serde_json::json!({"data": {"items": "{{rows}}"}, "mode": "fast"}),
            results_pointer: "/data/results".into(),
            headers: Default::default(),
            tls: None,
        };
        let b = CustomJsonBackend::new(&spec);
        let contract = Contract {
            inputs: vec!["text".into()],
            outputs: vec![OutputBinding {
                column: "label".into(),
                selector: Selector::Pointer("/label".into()),
                data_type: OutputType::String,
            }],
        };
        let batch = RecordBatch::try_from_iter(vec![(
            "text",
            Arc::new(StringArray::from(vec!["hi", "yo"])) as ArrayRef,
        )])
        .unwrap();
        assert_eq!(
            b.encode(&batch, &contract).unwrap(),
            r#"{"data":{"items":[{"text":"hi"},{"text":"yo"}]},"mode":"fast"}"#
        );
        let out = b
            .decode(br#"{"data":{"results":[{"label":"a"},{}]}}"#, &contract, 2)
            .unwrap();
        let labels = out.columns[0].as_string::<i32>();
        assert_eq!(labels.value(0), "a");
        assert!(labels.is_null(1), "a missing field is null");
        assert!(b.decode(br#"{"data":{}}"#, &contract, 2).is_err());
    }
}
