//! TensorFlow Serving REST predict, row format: `POST /v1/models/{name}:predict` with
//! `{"instances": [...]}`, answered by `{"predictions": [...]}` with one element per row.

use std::borrow::Cow;

use datafusion::arrow::record_batch::RecordBatch;
use serde::Deserialize;
use serde_json::Value;

use super::http_json::JsonProtocol;
use super::json_values::{ValueError, to_array, write_cell, write_str};
use super::{CallOutput, Contract, Selector, SelectorSyntax};
use crate::inference::error::{ErrorKind, InferError};
use crate::spec::TfServingSpec;

/// TF Serving protocol of one model version (sent by an
/// [`HttpJsonBackend`](super::http_json::HttpJsonBackend)).
pub(crate) struct TfServingBackend {
    path: String,
    signature_name: Option<String>,
    named_inputs: bool,
}

#[derive(Deserialize)]
struct PredictResponse {
    predictions: Vec<Value>,
}

impl TfServingBackend {
    /// A client for `spec`; the server's model is `model_name` (default `registry_name`).
    pub(crate) fn new(spec: &TfServingSpec, registry_name: &str) -> Self {
        let name = spec.model_name.as_deref().unwrap_or(registry_name);
        TfServingBackend {
            path: format!("v1/models/{name}:predict"),
            signature_name: spec.signature_name.clone(),
            named_inputs: spec.named_inputs,
        }
    }

    fn encode(&self, inputs: &RecordBatch, contract: &Contract) -> Result<String, InferError> {
        let bad = |m: ValueError| InferError::new(ErrorKind::BadInput, m.to_string());
        let mut out = String::from("{");
        if let Some(sig) = &self.signature_name {
            out.push_str("\"signature_name\":");
            write_str(&mut out, sig);
            out.push(',');
        }
        out.push_str("\"instances\":[");
        let single = inputs.num_columns() == 1;
        for row in 0..inputs.num_rows() {
            if row > 0 {
                out.push(',');
            }
            if self.named_inputs {
                out.push('{');
                for (i, (col, name)) in inputs.columns().iter().zip(&contract.inputs).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(&mut out, name);
                    out.push(':');
                    write_cell(&mut out, col.as_ref(), row).map_err(bad)?;
                }
                out.push('}');
            } else if single {
                write_cell(&mut out, inputs.column(0).as_ref(), row).map_err(bad)?;
            } else {
                out.push('[');
                for (i, col) in inputs.columns().iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_cell(&mut out, col.as_ref(), row).map_err(bad)?;
                }
                out.push(']');
            }
        }
        out.push_str("]}");
        Ok(out)
    }

    fn decode(body: &[u8], contract: &Contract, rows: usize) -> Result<CallOutput, InferError> {
        let response: PredictResponse = serde_json::from_slice(body)
            .map_err(|e| InferError::contract(format!("malformed TF Serving answer: {e}")))?;
        if response.predictions.len() != rows {
            return Err(InferError::contract(format!(
                "the model answered {} predictions for {rows} rows",
                response.predictions.len()
            )));
        }
        let mut columns = Vec::with_capacity(contract.outputs.len());
        for binding in &contract.outputs {
            let Selector::Tensor { name, index } = &binding.selector else {
                return Err(InferError::contract(
                    "TF Serving outputs use tensor selectors",
                ));
            };
            let values: Vec<&Value> = response
                .predictions
                .iter()
                .enumerate()
                .map(|(row, p)| select(p, name, *index, row))
                .collect::<Result<_, _>>()?;
            columns.push(
                to_array(&values, binding.data_type)
                    .map_err(|e| InferError::contract(format!("output `{name}`: {e}")))?,
            );
        }
        Ok(CallOutput::columns(columns))
    }
}

/// `predictions` is the whole per-row prediction; another name is a key of a per-row object.
fn select<'v>(
    prediction: &'v Value,
    name: &str,
    index: Option<usize>,
    row: usize,
) -> Result<&'v Value, InferError> {
    let value = if name == "predictions" {
        prediction
    } else {
        prediction.get(name).ok_or_else(|| {
            InferError::contract(format!("row {row}: the prediction has no output `{name}`"))
        })?
    };
    match (index, value) {
        (None, Value::Array(items)) if items.len() == 1 => Ok(&items[0]),
        (None, Value::Array(items)) => Err(InferError::contract(format!(
            "row {row}: output `{name}` has {} values; select one with `{name}[i]`",
            items.len()
        ))),
        (None, v) => Ok(v),
        (Some(i), Value::Array(items)) => items.get(i).ok_or_else(|| {
            InferError::contract(format!("row {row}: `{name}[{i}]` is out of range"))
        }),
        (Some(_), _) => Err(InferError::contract(format!(
            "row {row}: output `{name}` is not a list"
        ))),
    }
}

impl JsonProtocol for TfServingBackend {
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
        Self::decode(body, contract, rows)
    }

    fn selector_syntax(&self) -> SelectorSyntax {
        SelectorSyntax::Tensor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::protocol::OutputBinding;
    use crate::spec::OutputType;
    use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array};
    use datafusion::arrow::datatypes::Float64Type;
    use std::sync::Arc;

    fn contract(from: &str) -> Contract {
        Contract {
            inputs: vec!["x".into()],
            outputs: vec![OutputBinding {
                column: "s".into(),
                selector: Selector::parse(from, SelectorSyntax::Tensor).unwrap(),
                data_type: OutputType::Float64,
            }],
        }
    }

    #[test]
    fn round_trip() {
        let spec = TfServingSpec {
            replicas: vec![],
            model_name: None,
            signature_name: Some("serving_default".into()),
            named_inputs: true,
            tls: None,
        };
        let b = TfServingBackend::new(&spec, "m");
        assert_eq!(b.path, "v1/models/m:predict");
        let batch = RecordBatch::try_from_iter(vec![(
            "x",
            Arc::new(Float64Array::from(vec![1.0, 2.5])) as ArrayRef,
        )])
        .unwrap();
        assert_eq!(
            b.encode(&batch, &contract("predictions")).unwrap(),
            r#"{"signature_name":"serving_default","instances":[{"x":1},{"x":2.5}]}"#
        );
        let out = TfServingBackend::decode(
            br#"{"predictions":[[0.1,0.9],[0.7,0.3]]}"#,
            &contract("predictions[1]"),
            2,
        )
        .unwrap();
        assert_eq!(out.columns[0].as_primitive::<Float64Type>().value(1), 0.3);
        let out = TfServingBackend::decode(
            br#"{"predictions":[{"p":[0.4]},{"p":[0.6]}]}"#,
            &contract("p"),
            2,
        )
        .unwrap();
        assert_eq!(out.columns[0].as_primitive::<Float64Type>().value(0), 0.4);
        let err = TfServingBackend::decode(br#"{"predictions":[1]}"#, &contract("predictions"), 2)
            .unwrap_err();
        assert!(err.to_string().contains("1 predictions for 2 rows"));
    }
}
