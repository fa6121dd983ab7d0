//! Open Inference Protocol v2 inference requests and responses as the gateway reads and
//! writes them when it translates to another protocol: JSON tensors, and the binary tensor
//! data extension (`Inference-Header-Content-Length`: a JSON header followed by raw
//! little-endian tensor bytes) that `tritonclient` uses by default.
//!
//! Its error types are in `oip_errors.rs`. Size: the code is about 520 lines; the file passes
//! the ~600-line mark only because of its inline tests, which stay beside the code they pin
//! down.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray, UInt32Array,
    UInt64Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The header that marks a binary request or response: the length of its JSON part.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Most elements a request may declare across its tensors (its body limit bounds it anyway;
/// this keeps a small body from declaring a huge shape).
const MAX_ELEMENTS: usize = 1 << 24;

/// Deepest nesting of arrays and objects a JSON request body may have (an OIP v2 request
/// nests about three levels plus its tensors' rank). serde_json alone would stop at 128 levels
/// with a less clear message, and the raw-JSON paths (OpenAI bodies) do not stop at all.
pub use crate::codec::nesting::MAX_JSON_DEPTH;

pub use super::oip_errors::{RequestError, ResponseError, TensorError, TooDeep};

/// Refuses a request body nesting arrays and objects deeper than `max`, naming the byte where
/// it goes too deep (linear in the body, see [`crate::codec::nesting`]).
pub fn check_json_depth(body: &[u8], max: usize) -> Result<(), TooDeep> {
    crate::codec::nesting::check_json_depth(body, max).map_err(|at| TooDeep { max, at })
}

/// A decoded inference request: its inputs as the columns of one batch.
#[derive(Debug)]
pub struct InferRequest {
    /// Request id, echoed in the answer.
    pub id: Option<String>,
    /// One column per input value per row: a `[N]` or `[N, 1]` tensor is column `name`, an
    /// `[N, F]` tensor columns `name[0]` .. `name[F-1]`.
    pub batch: RecordBatch,
    /// Outputs asked for by name (empty: all), and whether each wants binary data.
    pub outputs: Vec<(String, bool)>,
    /// Binary outputs unless an output says otherwise (`binary_data_output`).
    pub binary_by_default: bool,
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<RawInput>,
    #[serde(default)]
    outputs: Vec<RawOutput>,
}

#[derive(Deserialize)]
struct RawInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RawOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// Decodes a request body; `header_length` is the `Inference-Header-Content-Length` value of
/// a binary request. Every error is the client's (400).
pub fn decode_request(
    body: &[u8],
    header_length: Option<usize>,
) -> Result<InferRequest, RequestError> {
    let (json_part, mut binary) = match header_length {
        Some(n) if n <= body.len() => (&body[..n], &body[n..]),
        Some(n) => {
            return Err(RequestError::HeaderLength {
                declared: n,
                body: body.len(),
            });
        }
        None => (body, &[][..]),
    };
    check_json_depth(json_part, MAX_JSON_DEPTH)?;
    let raw: RawRequest = serde_json::from_slice(json_part).map_err(RequestError::NotARequest)?;
    if raw.inputs.is_empty() {
        return Err(RequestError::NoInputs);
    }
    let mut rows: Option<usize> = None;
    let mut total = 0usize;
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for input in &raw.inputs {
        let in_input = |source: TensorError| RequestError::Input {
            input: input.name.clone(),
            source,
        };
        let (n, width) = dimensions(&input.shape).map_err(in_input)?;
        total = total.saturating_add(n.saturating_mul(width));
        if total > MAX_ELEMENTS {
            return Err(RequestError::TooManyValues { max: MAX_ELEMENTS });
        }
        match rows {
            None => rows = Some(n),
            Some(r) if r != n => {
                return Err(RequestError::RowsDiffer {
                    input: input.name.clone(),
                    rows: n,
                    earlier: r,
                });
            }
            Some(_) => {}
        }
        let values = input_values(input, n * width, &mut binary)?;
        if values.len() != n * width {
            return Err(in_input(TensorError::ValueCount {
                values: values.len(),
                shape: input.shape.clone(),
            }));
        }
        for (name, column) in split_columns(&input.name, values, width)? {
            fields.push(datafusion::arrow::datatypes::Field::new(
                name,
                column.data_type().clone(),
                false,
            ));
            columns.push(column);
        }
    }
    if !binary.is_empty() {
        return Err(RequestError::UnclaimedBinary(binary.len()));
    }
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    let batch = RecordBatch::try_new(schema, columns)?;
    let binary_by_default = raw
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let outputs = raw
        .outputs
        .into_iter()
        .map(|o| {
            let binary = o
                .parameters
                .get("binary_data")
                .and_then(Value::as_bool)
                .unwrap_or(binary_by_default);
            (o.name, binary)
        })
        .collect();
    Ok(InferRequest {
        id: raw.id,
        batch,
        outputs,
        binary_by_default,
    })
}

/// The values of one input: from its share of the binary part (`binary_data_size`, taken
/// off the front of `binary`) or from its JSON `data`, which must hold `expected` values.
fn input_values(
    input: &RawInput,
    expected: usize,
    binary: &mut &[u8],
) -> Result<ArrayRef, RequestError> {
    let in_input = |source: TensorError| RequestError::Input {
        input: input.name.clone(),
        source,
    };
    match input.parameters.get("binary_data_size") {
        Some(size) => {
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| in_input(TensorError::BinarySizeNotASize))?;
            if size > binary.len() {
                return Err(in_input(TensorError::BinarySizePastEnd(size)));
            }
            let (mine, rest) = binary.split_at(size);
            *binary = rest;
            from_bytes(&input.datatype, mine, expected).map_err(in_input)
        }
        None => {
            let data = input
                .data
                .as_ref()
                .ok_or_else(|| RequestError::NoData(input.name.clone()))?;
            let mut flat = Vec::with_capacity(expected);
            flatten(data, &mut flat);
            if flat.len() != expected {
                return Err(RequestError::DataLength {
                    input: input.name.clone(),
                    shape: input.shape.clone(),
                    declared: expected,
                    found: flat.len(),
                });
            }
            from_json(&input.datatype, &flat).map_err(in_input)
        }
    }
}

/// Rows and values per row of a shape (`[N]`, `[N, F]`, `[N, a, b]`...).
fn dimensions(shape: &[i64]) -> Result<(usize, usize), TensorError> {
    let mut dims = shape.iter().map(|d| usize::try_from(*d).ok());
    let rows = dims
        .next()
        .flatten()
        .ok_or_else(|| TensorError::NoRows(shape.to_vec()))?;
    let width = dims.try_fold(1usize, |acc, d| acc.checked_mul(d?));
    match width {
        Some(w) if w > 0 => Ok((rows, w)),
        _ => Err(TensorError::BadDimension(shape.to_vec())),
    }
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// A flat array of `datatype` from JSON values.
fn from_json(datatype: &str, values: &[&Value]) -> Result<ArrayRef, TensorError> {
    let bad = |index: usize| TensorError::InvalidValue {
        index,
        datatype: datatype.to_string(),
    };
    let array: ArrayRef = match datatype {
        "BOOL" => Arc::new(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_bool().map(Some).ok_or_else(|| bad(i)))
                .collect::<Result<BooleanArray, _>>()?,
        ),
        "FP32" | "FP64" => Arc::new(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_f64().map(Some).ok_or_else(|| bad(i)))
                .collect::<Result<Float64Array, _>>()?,
        ),
        "INT8" | "INT16" | "INT32" | "INT64" => Arc::new(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_i64().map(Some).ok_or_else(|| bad(i)))
                .collect::<Result<Int64Array, _>>()?,
        ),
        "UINT8" | "UINT16" | "UINT32" | "UINT64" => Arc::new(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_u64().map(Some).ok_or_else(|| bad(i)))
                .collect::<Result<UInt64Array, _>>()?,
        ),
        "BYTES" => Arc::new(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_str().map(Some).ok_or_else(|| bad(i)))
                .collect::<Result<StringArray, _>>()?,
        ),
        other => return Err(unsupported(other)),
    };
    // Narrow to the declared type; a value out of its range is an error, not a wrap.
    let target = arrow_type(datatype)?;
    if array.data_type() == &target {
        return Ok(array);
    }
    let narrowed = cast(&array, &target)?;
    if narrowed.null_count() > 0 {
        return Err(TensorError::OutOfRange(datatype.to_string()));
    }
    Ok(narrowed)
}

fn unsupported(datatype: &str) -> TensorError {
    TensorError::Unsupported(datatype.to_string())
}

fn arrow_type(datatype: &str) -> Result<DataType, TensorError> {
    Ok(match datatype {
        "BOOL" => DataType::Boolean,
        "INT8" => DataType::Int8,
        "INT16" => DataType::Int16,
        "INT32" => DataType::Int32,
        "INT64" => DataType::Int64,
        "UINT8" => DataType::UInt8,
        "UINT16" => DataType::UInt16,
        "UINT32" => DataType::UInt32,
        "UINT64" => DataType::UInt64,
        "FP32" => DataType::Float32,
        "FP64" => DataType::Float64,
        "BYTES" => DataType::Utf8,
        other => return Err(unsupported(other)),
    })
}

/// A flat array of `count` elements of `datatype` from raw little-endian bytes.
fn from_bytes(datatype: &str, bytes: &[u8], count: usize) -> Result<ArrayRef, TensorError> {
    let wrong_length = || TensorError::BinaryLength {
        bytes: bytes.len(),
        count,
        datatype: datatype.to_string(),
    };
    macro_rules! primitive {
        ($t:ty, $arrow:ty) => {{
            const SIZE: usize = std::mem::size_of::<$t>();
            if bytes.len() != count * SIZE {
                return Err(wrong_length());
            }
            let values: Vec<$t> = bytes
                .chunks_exact(SIZE)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk")))
                .collect();
            Arc::new(datafusion::arrow::array::PrimitiveArray::<$arrow>::from(
                values,
            )) as ArrayRef
        }};
    }
    Ok(match datatype {
        "BOOL" => {
            if bytes.len() != count {
                return Err(wrong_length());
            }
            Arc::new(BooleanArray::from(
                bytes.iter().map(|b| *b != 0).collect::<Vec<_>>(),
            ))
        }
        "INT8" => primitive!(i8, Int8Type),
        "INT16" => primitive!(i16, Int16Type),
        "INT32" => primitive!(i32, Int32Type),
        "INT64" => primitive!(i64, Int64Type),
        "UINT8" => primitive!(u8, UInt8Type),
        "UINT16" => primitive!(u16, UInt16Type),
        "UINT32" => primitive!(u32, UInt32Type),
        "UINT64" => primitive!(u64, UInt64Type),
        "FP32" => primitive!(f32, Float32Type),
        "FP64" => primitive!(f64, Float64Type),
        "BYTES" => {
            // Each element: a 4-byte little-endian length, then that many bytes.
            let mut out = Vec::with_capacity(count);
            let mut rest = bytes;
            for i in 0..count {
                let too_short = || TensorError::BytesElementTruncated(i);
                let (len, tail) = rest.split_at_checked(4).ok_or_else(too_short)?;
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                let (value, tail) = tail.split_at_checked(len).ok_or_else(too_short)?;
                out.push(
                    std::str::from_utf8(value).map_err(|_| TensorError::BytesElementNotUtf8(i))?,
                );
                rest = tail;
            }
            if !rest.is_empty() {
                return Err(TensorError::BytesLeftOver {
                    left: rest.len(),
                    count,
                });
            }
            Arc::new(StringArray::from(out))
        }
        other => return Err(unsupported(other)),
    })
}

/// Splits a flat `[N * width]` array into `width` columns.
fn split_columns(
    name: &str,
    values: ArrayRef,
    width: usize,
) -> Result<Vec<(String, ArrayRef)>, datafusion::arrow::error::ArrowError> {
    if width == 1 {
        return Ok(vec![(name.to_string(), values)]);
    }
    let rows = values.len() / width;
    (0..width)
        .map(|j| {
            let indices: UInt32Array = (0..rows).map(|r| (r * width + j) as u32).collect();
            take(values.as_ref(), &indices, None).map(|c| (format!("{name}[{j}]"), c))
        })
        .collect()
}

/// One output tensor of an answer.
pub struct OutputTensor<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// One value per row.
    pub values: &'a ArrayRef,
    /// Written as binary data.
    pub binary: bool,
}

/// Encodes an answer. Returns the body and, when any tensor is binary, the length of its JSON
/// part (the `Inference-Header-Content-Length` to send). A null value cannot be represented:
/// it is an error naming the tensor and row (the model's fault, 502).
pub fn encode_response(
    model: &str,
    version: &str,
    id: Option<&str>,
    outputs: &[OutputTensor<'_>],
) -> Result<(Vec<u8>, Option<usize>), ResponseError> {
    let mut tensors = Vec::with_capacity(outputs.len());
    let mut binary = Vec::new();
    for output in outputs {
        let values = output.values;
        if let Some(row) = (0..values.len()).find(|r| values.is_null(*r)) {
            return Err(ResponseError::Null {
                output: output.name.to_string(),
                row,
            });
        }
        let (datatype, data, bytes) = tensor_data(values, output.binary)?;
        let mut tensor = json!({
            "name": output.name,
            "datatype": datatype,
            "shape": [values.len()],
        });
        if output.binary {
            tensor["parameters"] = json!({ "binary_data_size": bytes.len() });
            binary.extend_from_slice(&bytes);
        } else {
            tensor["data"] = data;
        }
        tensors.push(tensor);
    }
    let mut answer = json!({
        "model_name": model,
        "model_version": version,
        "outputs": tensors,
    });
    if let Some(id) = id {
        answer["id"] = json!(id);
    }
    let mut body = serde_json::to_vec(&answer)?;
    if outputs.iter().any(|o| o.binary) {
        let json_length = body.len();
        body.extend_from_slice(&binary);
        return Ok((body, Some(json_length)));
    }
    Ok((body, None))
}

/// Datatype, JSON data and (when `binary`) raw bytes of a column.
fn tensor_data(
    values: &ArrayRef,
    binary: bool,
) -> Result<(&'static str, Value, Vec<u8>), ResponseError> {
    macro_rules! numbers {
        ($arrow:ty, $name:literal) => {{
            let a = values.as_primitive::<$arrow>();
            if binary {
                let bytes = a.values().iter().flat_map(|v| v.to_le_bytes()).collect();
                ($name, Value::Null, bytes)
            } else {
                ($name, json!(a.values().to_vec()), Vec::new())
            }
        }};
    }
    Ok(match values.data_type() {
        DataType::Float32 => numbers!(Float32Type, "FP32"),
        DataType::Float64 => numbers!(Float64Type, "FP64"),
        DataType::Int64 => numbers!(Int64Type, "INT64"),
        DataType::Int32 => numbers!(Int32Type, "INT32"),
        DataType::Boolean => {
            let a = values.as_boolean();
            let v: Vec<bool> = (0..a.len()).map(|i| a.value(i)).collect();
            if binary {
                ("BOOL", Value::Null, v.iter().map(|b| *b as u8).collect())
            } else {
                ("BOOL", json!(v), Vec::new())
            }
        }
        DataType::Utf8 => {
            let a = values.as_string::<i32>();
            let v: Vec<&str> = (0..a.len()).map(|i| a.value(i)).collect();
            if binary {
                let mut bytes = Vec::new();
                for s in &v {
                    bytes.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    bytes.extend_from_slice(s.as_bytes());
                }
                ("BYTES", Value::Null, bytes)
            } else {
                ("BYTES", json!(v), Vec::new())
            }
        }
        other => return Err(ResponseError::Unsupported(other.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_request(json_part: &str, data: &[u8]) -> (Vec<u8>, usize) {
        let mut body = json_part.as_bytes().to_vec();
        body.extend_from_slice(data);
        (body, json_part.len())
    }

    #[test]
    fn json_inputs_become_columns_and_matrices_are_split() {
        let body = br#"{"id": "r1", "inputs": [
            {"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.5, 2.5]},
            {"name": "features", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]},
            {"name": "country", "shape": [2, 1], "datatype": "BYTES", "data": ["FR", "DE"]}
        ], "outputs": [{"name": "score", "parameters": {"binary_data": true}}]}"#;
        let request = decode_request(body, None).unwrap();
        assert_eq!(request.id.as_deref(), Some("r1"));
        let names: Vec<String> = request
            .batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "amount",
                "features[0]",
                "features[1]",
                "features[2]",
                "country"
            ]
        );
        let f1 = request.batch.column(2).as_primitive::<Float32Type>();
        assert_eq!(f1.values(), &[2.0, 5.0]);
        assert_eq!(request.outputs, [("score".to_string(), true)]);
    }

    #[test]
    fn binary_inputs_are_read_in_order() {
        let mut data = Vec::new();
        data.extend_from_slice(&1.5f32.to_le_bytes());
        data.extend_from_slice(&2.5f32.to_le_bytes());
        for s in ["ab", "c"] {
            data.extend_from_slice(&(s.len() as u32).to_le_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        let header = r#"{"inputs": [
            {"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
            {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}}
        ]}"#;
        let (body, len) = binary_request(header, &data);
        let request = decode_request(&body, Some(len)).unwrap();
        assert_eq!(
            request
                .batch
                .column(0)
                .as_primitive::<Float32Type>()
                .values(),
            &[1.5, 2.5]
        );
        assert_eq!(request.batch.column(1).as_string::<i32>().value(0), "ab");
    }

    #[test]
    fn bad_requests_are_refused_with_reasons() {
        let cases: &[(&str, Option<usize>, &str)] = &[
            (r#"{"inputs": []}"#, None, "no inputs"),
            (
                r#"{"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1]}]}"#,
                None,
                "2 values) but 1 values",
            ),
            (
                r#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}, {"name": "b", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}"#,
                None,
                "same first dimension",
            ),
            (
                r#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP16", "data": [1]}]}"#,
                None,
                "not supported",
            ),
            (
                r#"{"inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [300]}]}"#,
                None,
                "does not fit INT8",
            ),
            (
                r#"{"inputs": [{"name": "a", "shape": [-1], "datatype": "FP32", "data": [1]}]}"#,
                None,
                "first dimension",
            ),
            (
                r#"{"inputs": [{"name": "a", "shape": [1, 0], "datatype": "FP32", "data": []}]}"#,
                None,
                "zero dimension",
            ),
            (
                r#"{"inputs": [{"name": "a", "shape": [1000000, 1000000], "datatype": "FP32", "data": []}]}"#,
                None,
                "more than",
            ),
            (
                r#"{"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}"#,
                Some(10_000),
                "past the end",
            ),
            ("{", None, "not an OIP v2 inference request"),
        ];
        for (body, len, expected) in cases {
            let len = len.map(|l| l.min(body.len()));
            let err = decode_request(body.as_bytes(), len)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
        let header = r#"{"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}"#;
        let (body, len) = binary_request(header, &[0; 4]);
        let err = decode_request(&body, Some(len)).unwrap_err().to_string();
        assert!(err.contains("4 bytes of binary data for 2 FP32"), "{err}");
        let header = r#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}"#;
        let (body, len) = binary_request(header, &[0; 6]);
        let err = decode_request(&body, Some(len)).unwrap_err().to_string();
        assert!(err.contains("not claimed"), "{err}");
    }

    #[test]
    fn deeply_nested_bodies_are_refused_before_parsing() {
        let deep = |levels: usize| {
            format!(
                r#"{{"inputs": [{{"name": "a", "shape": [1], "datatype": "FP32", "data": {}1{}}}]}}"#,
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        // The request itself nests 3 levels: 61 more are fine, 62 are not.
        assert!(decode_request(deep(MAX_JSON_DEPTH - 3).as_bytes(), None).is_ok());
        for levels in [MAX_JSON_DEPTH - 2, 10_000, 1_000_000] {
            let err = decode_request(deep(levels).as_bytes(), None)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("nests arrays and objects deeper than 64 levels (at byte 129)"),
                "{err}"
            );
        }
        // Brackets inside strings, escaped quotes included, are not nesting.
        let quoted = format!(r#"{{"a": "\"{}", "b": [1]}}"#, "[".repeat(1000));
        assert_eq!(check_json_depth(quoted.as_bytes(), 2), Ok(()));
        assert!(check_json_depth(b"[[[", 2).is_err());
    }

    #[test]
    fn answers_in_json_and_binary() {
        let scores: ArrayRef = Arc::new(datafusion::arrow::array::Float32Array::from(vec![
            0.25, 0.5,
        ]));
        let labels: ArrayRef = Arc::new(StringArray::from(vec!["ok", "fraud"]));
        let outputs = [
            OutputTensor {
                name: "score",
                values: &scores,
                binary: true,
            },
            OutputTensor {
                name: "label",
                values: &labels,
                binary: false,
            },
        ];
        let (body, json_length) = encode_response("fraud", "1", Some("r1"), &outputs).unwrap();
        let json_length = json_length.unwrap();
        let head: Value = serde_json::from_slice(&body[..json_length]).unwrap();
        assert_eq!(head["id"], "r1");
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(head["outputs"][1]["data"], json!(["ok", "fraud"]));
        assert_eq!(&body[json_length..json_length + 4], &0.25f32.to_le_bytes());
        let nulls: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.0), None]));
        let err = encode_response(
            "m",
            "1",
            None,
            &[OutputTensor {
                name: "s",
                values: &nulls,
                binary: false,
            }],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("null for row 1"), "{err}");
    }
}
