//! Arrow cells to JSON request values, and JSON answer values to Arrow columns.

use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int64Builder, ListBuilder,
    StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value;

use crate::spec::{OutputType, TensorDatatype};

/// Why a cell cannot be written as JSON or cast for a tensor, or a JSON answer value cannot
/// become a column.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ValueError {
    /// NaN or an infinity (JSON has none).
    #[error("{0} cannot be sent as JSON")]
    NotFinite(f64),
    /// A column that is not numeric sent as a tensor.
    #[error("a {column_type} column cannot be a {} tensor", datatype.as_str())]
    NotNumeric {
        /// The column's type.
        column_type: DataType,
        /// The tensor's datatype.
        datatype: TensorDatatype,
    },
    /// An answer value of the wrong type.
    #[error("row {row}: expected {expected}, got {got}")]
    WrongType {
        /// The row.
        row: usize,
        /// What the output's type needs (`a number`, ...).
        expected: &'static str,
        /// The value, as JSON, bounded.
        got: String,
    },
    /// Formatting or casting the column failed.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

/// Appends the JSON form of `array[row]` to `out`: numbers, booleans and strings as such,
/// other types as their display string. Non-finite floats are an error (JSON has none).
pub(crate) fn write_cell(
    out: &mut String,
    array: &dyn Array,
    row: usize,
) -> Result<(), ValueError> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes as t;
    if array.is_null(row) {
        out.push_str("null");
        return Ok(());
    }
    match array.data_type() {
        DataType::Boolean => {
            out.push_str(if array.as_boolean().value(row) {
                "true"
            } else {
                "false"
            });
        }
        DataType::Int8 => write_int(out, array.as_primitive::<t::Int8Type>().value(row)),
        DataType::Int16 => write_int(out, array.as_primitive::<t::Int16Type>().value(row)),
        DataType::Int32 => write_int(out, array.as_primitive::<t::Int32Type>().value(row)),
        DataType::Int64 => write_int(out, array.as_primitive::<t::Int64Type>().value(row)),
        DataType::UInt8 => write_int(out, array.as_primitive::<t::UInt8Type>().value(row)),
        DataType::UInt16 => write_int(out, array.as_primitive::<t::UInt16Type>().value(row)),
        DataType::UInt32 => write_int(out, array.as_primitive::<t::UInt32Type>().value(row)),
        DataType::UInt64 => write_int(out, array.as_primitive::<t::UInt64Type>().value(row)),
        DataType::Float32 => {
            let v = array.as_primitive::<t::Float32Type>().value(row);
            if !write_whole_float(out, f64::from(v), F32_EXACT_INTEGERS) {
                write_float(out, v, v.is_finite())?
            }
        }
        DataType::Float64 => {
            let v = array.as_primitive::<t::Float64Type>().value(row);
            if !write_whole_float(out, v, F64_EXACT_INTEGERS) {
                write_float(out, v, v.is_finite())?
            }
        }
        DataType::Utf8 => write_str(out, array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => write_str(out, array.as_string::<i64>().value(row)),
        DataType::Utf8View => write_str(out, array.as_string_view().value(row)),
        _ => {
            let formatter = ArrayFormatter::try_new(array, &FormatOptions::default())?;
            write_str(out, &formatter.value(row).to_string());
        }
    }
    Ok(())
}

fn write_int(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Below these magnitudes every integer is a float of the width, so a whole value's shortest
/// round-trip decimal is the integer itself.
const F32_EXACT_INTEGERS: f64 = 16_777_216.0; // 2^24
const F64_EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0; // 2^53

/// Writes a whole float below `limit` as an integer, the text [`write_float`] would write,
/// without the float formatter: flags and counts (`0`, `1`) are common model features.
/// Returns false, writing nothing, for any other value (`-0` included).
fn write_whole_float(out: &mut String, v: f64, limit: f64) -> bool {
    let whole = v.abs() < limit && v.trunc() == v && !(v == 0.0 && v.is_sign_negative());
    if whole {
        // Exact: |v| < 2^53 fits an i64 and has no fraction.
        write_int(out, v as i64);
    }
    whole
}

/// Writes the shortest decimal that reads back as the same value of the float's own width, so
/// an FP32 value is `0.1`, not the `0.10000000149011612` its widening to f64 would print.
fn write_float(
    out: &mut String,
    v: impl ryu::Float + std::fmt::Display + Into<f64>,
    finite: bool,
) -> Result<(), ValueError> {
    if !finite {
        return Err(ValueError::NotFinite(v.into()));
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(v);
    // Prompt templates render these values as text, so keep Display's plain decimals: whole
    // numbers as `2`, not `2.0`, and no exponent (`10000000000000000`, not `1e16`). Display
    // is slower, but only very large and very small values take that path.
    if text.contains('e') {
        let _ = write!(out, "{v}");
    } else {
        out.push_str(text.strip_suffix(".0").unwrap_or(text));
    }
    Ok(())
}

/// Appends `s` as a JSON string.
pub(crate) fn write_str(out: &mut String, s: &str) {
    // serde_json escapes exactly what JSON requires.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string()));
}

/// Casts a numeric input column to the tensor datatype, so values are written (and rounded)
/// as the model will read them.
pub(crate) fn cast_for_tensor(
    array: &ArrayRef,
    datatype: TensorDatatype,
) -> Result<ArrayRef, ValueError> {
    let target = match datatype {
        TensorDatatype::Fp32 => DataType::Float32,
        TensorDatatype::Fp64 => DataType::Float64,
        TensorDatatype::Int32 => DataType::Int32,
        TensorDatatype::Int64 => DataType::Int64,
    };
    let source = array.data_type();
    let numeric = source.is_numeric() || *source == DataType::Boolean;
    if !numeric {
        return Err(ValueError::NotNumeric {
            column_type: source.clone(),
            datatype,
        });
    }
    Ok(cast(array, &target)?)
}

/// The OIP v2 datatype of an input column sent as its own tensor.
pub(crate) fn oip_datatype(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Boolean => "BOOL",
        DataType::Int8 => "INT8",
        DataType::Int16 => "INT16",
        DataType::Int32 => "INT32",
        DataType::Int64 => "INT64",
        DataType::UInt8 => "UINT8",
        DataType::UInt16 => "UINT16",
        DataType::UInt32 => "UINT32",
        DataType::UInt64 => "UINT64",
        DataType::Float16 => "FP16",
        DataType::Float32 => "FP32",
        DataType::Float64 => "FP64",
        _ => "BYTES",
    }
}

/// Builds a column of `ty` from one JSON value per row. A value of the wrong type is an error
/// naming the row; `null` becomes a null.
pub(crate) fn to_array(values: &[&Value], ty: OutputType) -> Result<ArrayRef, ValueError> {
    let wrong = |row: usize, v: &Value| ValueError::WrongType {
        row,
        expected: type_name(ty),
        got: crate::codec::truncate_message(&v.to_string(), 60),
    };
    Ok(match ty {
        OutputType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Bool(x) => b.append_value(*x),
                    Value::Number(n) if n.as_f64() == Some(0.0) => b.append_value(false),
                    Value::Number(n) if n.as_f64() == Some(1.0) => b.append_value(true),
                    _ => return Err(wrong(row, v)),
                }
            }
            Arc::new(b.finish())
        }
        OutputType::Int64 => {
            let mut b = Int64Builder::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Number(n) => match n.as_i64() {
                        Some(i) => b.append_value(i),
                        None => match n.as_f64() {
                            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                                b.append_value(f as i64)
                            }
                            _ => return Err(wrong(row, v)),
                        },
                    },
                    _ => return Err(wrong(row, v)),
                }
            }
            Arc::new(b.finish())
        }
        OutputType::Float32 => {
            let mut b = Float32Builder::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Number(n) => {
                        b.append_value(n.as_f64().ok_or_else(|| wrong(row, v))? as f32)
                    }
                    _ => return Err(wrong(row, v)),
                }
            }
            Arc::new(b.finish())
        }
        OutputType::Float64 => {
            let mut b = Float64Builder::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Number(n) => b.append_value(n.as_f64().ok_or_else(|| wrong(row, v))?),
                    _ => return Err(wrong(row, v)),
                }
            }
            Arc::new(b.finish())
        }
        OutputType::String => {
            let mut b = StringBuilder::with_capacity(values.len(), values.len() * 16);
            for v in values {
                match v {
                    Value::Null => b.append_null(),
                    Value::String(s) => b.append_value(s),
                    other => b.append_value(other.to_string()),
                }
            }
            Arc::new(b.finish())
        }
        OutputType::Float32List => {
            let mut b = ListBuilder::new(Float32Builder::new());
            for (row, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Array(items) => {
                        for item in items {
                            let f = item.as_f64().ok_or_else(|| wrong(row, v))?;
                            b.values().append_value(f as f32);
                        }
                        b.append(true);
                    }
                    _ => return Err(wrong(row, v)),
                }
            }
            Arc::new(b.finish())
        }
    })
}

/// Arrow type of an output column.
pub(crate) fn output_data_type(ty: OutputType) -> DataType {
    match ty {
        OutputType::Boolean => DataType::Boolean,
        OutputType::Int64 => DataType::Int64,
        OutputType::Float32 => DataType::Float32,
        OutputType::Float64 => DataType::Float64,
        OutputType::String => DataType::Utf8,
        OutputType::Float32List => DataType::new_list(DataType::Float32, true),
    }
}

fn type_name(ty: OutputType) -> &'static str {
    match ty {
        OutputType::Boolean => "a boolean",
        OutputType::Int64 => "an integer",
        OutputType::Float32 | OutputType::Float64 => "a number",
        OutputType::String => "a string",
        OutputType::Float32List => "a list of numbers",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Float64Array, StringArray};
    use serde_json::json;

    #[test]
    fn cells_are_written_as_json() {
        let mut out = String::new();
        let f = Float64Array::from(vec![Some(0.1), None, Some(f64::NAN)]);
        write_cell(&mut out, &f, 0).unwrap();
        out.push(',');
        write_cell(&mut out, &f, 1).unwrap();
        assert_eq!(
            write_cell(&mut out, &f, 2).unwrap_err().to_string(),
            "NaN cannot be sent as JSON"
        );
        out.push(',');
        write_cell(&mut out, &StringArray::from(vec!["a\"b\n"]), 0).unwrap();
        assert_eq!(out, "0.1,null,\"a\\\"b\\n\"");
    }

    #[test]
    fn floats_are_written_at_their_own_width_and_read_back_exactly() {
        use datafusion::arrow::array::{Float32Array, Int64Array};
        // An FP32 tensor value is written as the shortest f32 decimal, not as its f64
        // widening (`0.10000000149011612`), which doubled request sizes before.
        let values = [
            0.1f32,
            1.0,
            -2.5e-8,
            3.4028235e38,
            f32::MIN_POSITIVE,
            16777217.0,
        ];
        let f = Float32Array::from(values.to_vec());
        for (row, v) in values.iter().enumerate() {
            let mut out = String::new();
            write_cell(&mut out, &f, row).unwrap();
            let parsed: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(parsed.as_f64().unwrap() as f32, *v, "{out}");
            // Outside the range ryu writes without an exponent, Display's plain decimal is
            // longer, but still exact.
            if (1e-5..1e13).contains(&v.abs()) {
                assert!(out.len() <= 11, "{out} is not the shortest form");
            }
        }
        let mut out = String::new();
        write_cell(&mut out, &f, 0).unwrap();
        out.push(',');
        write_cell(&mut out, &f, 1).unwrap();
        assert_eq!(out, "0.1,1");
        // Plain decimals like Display's, never an exponent (prompts show them as text).
        let wide = Float64Array::from(vec![1e16, 1e-7, -0.0, 2.5e-3, 123456789.0]);
        let written: Vec<String> = (0..wide.len())
            .map(|row| {
                let mut out = String::new();
                write_cell(&mut out, &wide, row).unwrap();
                out
            })
            .collect();
        assert_eq!(
            written,
            [
                "10000000000000000",
                "0.0000001",
                "-0",
                "0.0025",
                "123456789"
            ]
        );
        let mut out = String::new();
        write_cell(&mut out, &Float32Array::from(vec![1.5e13f32]), 0).unwrap();
        assert_eq!(out, "15000000000000");
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert!(write_cell(&mut String::new(), &Float32Array::from(vec![bad]), 0).is_err());
        }
        let mut out = String::new();
        write_cell(&mut out, &Int64Array::from(vec![i64::MIN]), 0).unwrap();
        assert_eq!(out, i64::MIN.to_string());
    }

    #[test]
    fn json_values_become_typed_columns() {
        let values = [json!(0.5), json!(1), Value::Null];
        let refs: Vec<&Value> = values.iter().collect();
        let a = to_array(&refs, OutputType::Float64).unwrap();
        assert_eq!(
            a.as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(1),
            1.0
        );
        assert!(a.is_null(2));
        let err = to_array(&[&json!("x")], OutputType::Float32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 0: expected a number"), "{err}");
        let list = to_array(&[&json!([1.0, 2.0])], OutputType::Float32List).unwrap();
        assert_eq!(list.as_list::<i32>().value(0).len(), 2);
    }

    /// What the float formatter writes, for comparison with the whole-number fast path.
    fn formatted(v: impl ryu::Float + std::fmt::Display + Into<f64>) -> String {
        let mut out = String::new();
        write_float(&mut out, v, true).unwrap();
        out
    }

    #[test]
    fn whole_floats_take_the_integer_path_only_inside_the_exact_range() {
        let mut out = String::new();
        for (v, whole) in [
            (0.0, true),
            (1.0, true),
            (-3.0, true),
            (16_777_215.0, true),
            (16_777_216.0, false),
            (-0.0, false),
            (0.5, false),
        ] {
            out.clear();
            assert_eq!(
                write_whole_float(&mut out, v, F32_EXACT_INTEGERS),
                whole,
                "{v}"
            );
            if whole {
                assert_eq!(out, formatted(v as f32));
            } else {
                assert!(out.is_empty());
            }
        }
        assert!(write_whole_float(
            &mut out,
            F64_EXACT_INTEGERS - 1.0,
            F64_EXACT_INTEGERS
        ));
        assert!(!write_whole_float(&mut out, f64::NAN, F64_EXACT_INTEGERS));
        assert!(!write_whole_float(
            &mut out,
            f64::INFINITY,
            F64_EXACT_INTEGERS
        ));
    }

    proptest::proptest! {
        /// The integer fast path writes byte for byte what the float formatter writes.
        #[test]
        fn whole_floats_are_written_as_the_formatter_would(
            n32 in -16_777_215i32..=16_777_215,
            n64 in -9_007_199_254_740_991i64..=9_007_199_254_740_991,
            fraction in 0.0f64..1.0,
        ) {
            for (v, whole) in [(n32 as f32, true), (n32 as f32 + fraction as f32, false)] {
                let mut out = String::new();
                let took = write_whole_float(&mut out, f64::from(v), F32_EXACT_INTEGERS);
                proptest::prop_assert!(!whole || took);
                if took {
                    proptest::prop_assert_eq!(&out, &formatted(v));
                }
            }
            for v in [n64 as f64, n64 as f64 + fraction] {
                let mut out = String::new();
                if write_whole_float(&mut out, v, F64_EXACT_INTEGERS) {
                    proptest::prop_assert_eq!(&out, &formatted(v));
                }
            }
            let cells = datafusion::arrow::array::Float32Array::from(vec![n32 as f32]);
            let mut out = String::new();
            write_cell(&mut out, &cells, 0).unwrap();
            proptest::prop_assert_eq!(out, n32.to_string());
        }
    }
}
