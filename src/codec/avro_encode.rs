//! Avro encode: rows of a record batch → Avro datums, plain or in the Confluent wire format.
//!
//! The writer schema is derived from the output columns (a record named after the output;
//! nullable columns become `["null", T]` unions with default `null`), so it always matches
//! what is written; with the Confluent framing it is registered under a subject chosen by the
//! naming strategy and its id prefixes every datum.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Field, Fields, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, Schema, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;

use apache_avro::Schema as AvroSchema;
use apache_avro::types::Value;
use datafusion::arrow::error::ArrowError;

/// Why a writer schema cannot be derived, an encoder built, or a row encoded.
#[derive(Debug, thiserror::Error)]
pub enum AvroEncodeError {
    /// A column's type has no Avro counterpart here.
    #[error(
        "column `{path}` has type {data_type}, which has no Avro encoding here; CAST it in the SQL \
         (to a string, number, timestamp or list)"
    )]
    UnsupportedColumn {
        /// The column (`a.b` inside a struct, `a[]` for list items).
        path: String,
        /// Its type.
        data_type: DataType,
    },
    /// A value's type has no Avro encoding here.
    #[error("type {0} has no Avro encoding here")]
    UnsupportedType(DataType),
    /// The schema does not parse, or the datum cannot be written with it.
    #[error(transparent)]
    Avro(#[from] apache_avro::Error),
    /// The row does not resolve to the user's schema.
    #[error("row does not fit the output schema: {0}")]
    Resolve(#[source] apache_avro::Error),
    /// A column could not be cast to the representation the encoder reads.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    /// Normalizing turned the row's value into a null (a timestamp in seconds beyond what
    /// milliseconds can hold).
    #[error("column `{column}`: the value cannot be represented as Avro {data_type}")]
    Unrepresentable {
        /// The column.
        column: String,
        /// The type it was cast to.
        data_type: DataType,
    },
    /// An unsigned value above `i64::MAX`.
    #[error("{0} does not fit an Avro long")]
    LongOverflow(u64),
}

/// Derives the Avro writer schema (as JSON) of rows with `schema`. Errors name the column
/// whose type has no Avro counterpart here.
pub fn writer_schema(
    schema: &Schema,
    name: &str,
    namespace: &str,
) -> Result<serde_json::Value, AvroEncodeError> {
    let mut record = record_schema(schema.fields(), name, "")?;
    if !namespace.is_empty() {
        record["namespace"] = serde_json::Value::String(namespace.to_string());
    }
    Ok(record)
}

fn record_schema(
    fields: &Fields,
    name: &str,
    path: &str,
) -> Result<serde_json::Value, AvroEncodeError> {
    let mut out = Vec::with_capacity(fields.len());
    for field in fields {
        let field_path = if path.is_empty() {
            field.name().clone()
        } else {
            format!("{path}.{}", field.name())
        };
        let mut ty = field_type(field, &field_path)?;
        let mut entry = serde_json::json!({ "name": field.name() });
        if field.is_nullable() {
            ty = serde_json::json!(["null", ty]);
            entry["default"] = serde_json::Value::Null;
        }
        entry["type"] = ty;
        out.push(entry);
    }
    Ok(serde_json::json!({ "type": "record", "name": name, "fields": out }))
}

fn field_type(field: &Field, path: &str) -> Result<serde_json::Value, AvroEncodeError> {
    use serde_json::json;
    Ok(match field.data_type() {
        DataType::Boolean => json!("boolean"),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            json!("int")
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => json!("long"),
        DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => json!("string"),
        DataType::Dictionary(_, value) if value.is_string() => json!("string"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => json!("bytes"),
        DataType::Date32 => json!({ "type": "int", "logicalType": "date" }),
        DataType::Timestamp(TimeUnit::Second | TimeUnit::Millisecond, _) => {
            json!({ "type": "long", "logicalType": "timestamp-millis" })
        }
        DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, _) => {
            json!({ "type": "long", "logicalType": "timestamp-micros" })
        }
        DataType::List(item) | DataType::LargeList(item) => {
            let mut items = field_type(item, &format!("{path}[]"))?;
            if item.is_nullable() {
                items = json!(["null", items]);
            }
            json!({ "type": "array", "items": items })
        }
        DataType::Struct(fields) => {
            // Nested record names must be unique in the schema: derive them from the path.
            let name = format!("{}_record", path.replace(['.', '[', ']'], "_"));
            record_schema(fields, &name, path)?
        }
        other => {
            return Err(AvroEncodeError::UnsupportedColumn {
                path: path.to_string(),
                data_type: other.clone(),
            });
        }
    })
}

/// How datums are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The bare datum.
    Plain,
    /// Magic byte 0, the schema's registry id (big-endian), the datum.
    Confluent(u32),
}

/// Encodes rows with a derived writer schema, or with a user's schema that the derived values
/// are resolved to.
#[derive(Debug)]
pub struct AvroEncoder {
    schema: AvroSchema,
    /// A user-supplied writer schema; `None` writes with `schema` (the derived one).
    target: Option<AvroSchema>,
    framing: Framing,
}

impl AvroEncoder {
    /// An encoder for the writer schema `schema_json`.
    pub fn new(schema_json: &serde_json::Value, framing: Framing) -> Result<Self, AvroEncodeError> {
        let schema = AvroSchema::parse(schema_json)?;
        Ok(AvroEncoder {
            schema,
            target: None,
            framing,
        })
    }

    /// An encoder that builds values with the derived schema `derived` and writes them with
    /// the user's schema `target` (Avro resolution: fields by name, defaults for missing
    /// ones, strings to enum symbols, values into unions).
    pub fn resolving(
        derived: &serde_json::Value,
        target: &serde_json::Value,
        framing: Framing,
    ) -> Result<Self, AvroEncodeError> {
        let mut encoder = Self::new(derived, framing)?;
        encoder.target = Some(AvroSchema::parse(target)?);
        Ok(encoder)
    }

    /// One datum per row, framed; the first row that cannot be encoded fails the call.
    pub fn encode_rows(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, AvroEncodeError> {
        self.encode_each(batch)?.into_iter().collect()
    }

    /// One datum per row, framed, or why that row cannot be encoded (a value the schema does
    /// not allow). The outer error is for the whole batch.
    pub fn encode_each(
        &self,
        batch: &RecordBatch,
    ) -> Result<Vec<Result<Vec<u8>, AvroEncodeError>>, AvroEncodeError> {
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(normalize)
            .collect::<Result<_, _>>()?;
        let fields = batch.schema().fields().clone();
        let mut lost = lost_in_normalizing(&fields, batch.columns(), &columns);
        let mut out = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            out.push(match lost.remove(&row) {
                Some(why) => Err(why),
                None => self.encode_row(&fields, &columns, row),
            });
        }
        Ok(out)
    }

    fn encode_row(
        &self,
        fields: &Fields,
        columns: &[ArrayRef],
        row: usize,
    ) -> Result<Vec<u8>, AvroEncodeError> {
        let mut record = record_value(fields, columns, row)?;
        if let Some(target) = &self.target {
            record = record.resolve(target).map_err(AvroEncodeError::Resolve)?;
        }
        let mut bytes = match self.framing {
            Framing::Plain => Vec::new(),
            Framing::Confluent(id) => {
                let mut b = Vec::with_capacity(64);
                b.push(0);
                b.extend_from_slice(&id.to_be_bytes());
                b
            }
        };
        let schema = self.target.as_ref().unwrap_or(&self.schema);
        bytes.extend(apache_avro::to_avro_datum(schema, record)?);
        Ok(bytes)
    }
}

/// Casts types the encoder reads through another representation (string views and
/// dictionaries to strings, seconds and nanoseconds to the timestamp units Avro has).
fn normalize(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let target = match array.data_type() {
        DataType::Utf8View | DataType::LargeUtf8 | DataType::Dictionary(_, _) => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Timestamp(TimeUnit::Second, tz) => {
            DataType::Timestamp(TimeUnit::Millisecond, tz.clone())
        }
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
        }
        _ => return Ok(array.clone()),
    };
    cast(array, &target)
}

/// Rows where normalizing turned a value into a null (a timestamp in seconds beyond what
/// milliseconds can hold): that row's failure, never a silently different value.
fn lost_in_normalizing(
    fields: &Fields,
    originals: &[ArrayRef],
    normalized: &[ArrayRef],
) -> std::collections::BTreeMap<usize, AvroEncodeError> {
    let mut lost = std::collections::BTreeMap::new();
    for ((field, original), normalized) in fields.iter().zip(originals).zip(normalized) {
        if normalized.null_count() == original.null_count() {
            continue;
        }
        for row in 0..original.len() {
            if original.is_valid(row) && normalized.is_null(row) {
                lost.entry(row)
                    .or_insert_with(|| AvroEncodeError::Unrepresentable {
                        column: field.name().clone(),
                        data_type: normalized.data_type().clone(),
                    });
            }
        }
    }
    lost
}

fn record_value(
    fields: &Fields,
    columns: &[ArrayRef],
    row: usize,
) -> Result<Value, AvroEncodeError> {
    let mut values = Vec::with_capacity(fields.len());
    for (field, column) in fields.iter().zip(columns) {
        values.push((field.name().clone(), cell(field, column, row)?));
    }
    Ok(Value::Record(values))
}

/// The value of one cell, wrapped in the `["null", T]` union when the field is nullable.
fn cell(field: &Field, array: &ArrayRef, row: usize) -> Result<Value, AvroEncodeError> {
    if !field.is_nullable() {
        return plain_value(array, row);
    }
    Ok(if array.is_null(row) {
        Value::Union(0, Box::new(Value::Null))
    } else {
        Value::Union(1, Box::new(plain_value(array, row)?))
    })
}

fn plain_value(array: &ArrayRef, row: usize) -> Result<Value, AvroEncodeError> {
    Ok(match array.data_type() {
        DataType::Boolean => Value::Boolean(array.as_boolean().value(row)),
        DataType::Int8 => Value::Int(array.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => Value::Int(array.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => Value::Int(array.as_primitive::<Int32Type>().value(row)),
        DataType::UInt8 => Value::Int(array.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => Value::Int(array.as_primitive::<UInt16Type>().value(row).into()),
        DataType::Int64 => Value::Long(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt32 => Value::Long(array.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => {
            let v = array.as_primitive::<UInt64Type>().value(row);
            Value::Long(i64::try_from(v).map_err(|_| AvroEncodeError::LongOverflow(v))?)
        }
        DataType::Float32 => Value::Float(array.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => Value::Double(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::Binary => Value::Bytes(array.as_binary::<i32>().value(row).to_vec()),
        DataType::Date32 => Value::Date(array.as_primitive::<Date32Type>().value(row)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Value::TimestampMillis(array.as_primitive::<TimestampMillisecondType>().value(row))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Value::TimestampMicros(array.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        DataType::List(item) => {
            let list = array.as_list::<i32>().value(row);
            list_value(item, &normalize(&list)?)?
        }
        DataType::LargeList(item) => {
            let list = array.as_list::<i64>().value(row);
            list_value(item, &normalize(&list)?)?
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let columns: Vec<ArrayRef> = s
                .columns()
                .iter()
                .map(normalize)
                .collect::<Result<_, _>>()?;
            record_value(fields, &columns, row)?
        }
        other => return Err(AvroEncodeError::UnsupportedType(other.clone())),
    })
}

fn list_value(item: &Field, values: &ArrayRef) -> Result<Value, AvroEncodeError> {
    (0..values.len())
        .map(|i| cell(item, values, i))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Float32Array, Float64Array, Int64Array, ListArray, StringArray, TimestampMillisecondArray,
    };
    use datafusion::arrow::datatypes::Float32Type as F32;
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let list = ListArray::from_iter_primitive::<F32, _, _>(vec![
            Some(vec![Some(0.5), Some(1.5)]),
            Some(vec![]),
        ]);
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("amount", DataType::Float64, false),
                Field::new("score", DataType::Float32, true),
                Field::new("n", DataType::Int64, true),
                Field::new(
                    "at",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
                Field::new("emb", list.data_type().clone(), true),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Float64Array::from(vec![1.25, 2.5])),
                Arc::new(Float32Array::from(vec![Some(0.9), None])),
                Arc::new(Int64Array::from(vec![None, Some(7)])),
                Arc::new(TimestampMillisecondArray::from(vec![1_000, 2_000]).with_timezone("UTC")),
                Arc::new(list),
            ],
        )
        .unwrap()
    }

    #[test]
    fn round_trips_through_the_derived_schema() {
        let batch = batch();
        let schema_json = writer_schema(&batch.schema(), "Alert", "io.streamgate").unwrap();
        let encoder = AvroEncoder::new(&schema_json, Framing::Confluent(42)).unwrap();
        let rows = encoder.encode_rows(&batch).unwrap();
        assert_eq!(rows.len(), 2);
        let schema = AvroSchema::parse(&schema_json).unwrap();
        let mut second = &rows[1][..];
        assert_eq!(&second[..5], &[0, 0, 0, 0, 42]);
        second = &second[5..];
        let value = apache_avro::from_avro_datum(&schema, &mut second, None).unwrap();
        let json = serde_json::Value::try_from(value).unwrap();
        assert_eq!(json["id"], "b");
        assert_eq!(json["amount"], 2.5);
        assert_eq!(json["score"], serde_json::Value::Null);
        assert_eq!(json["n"], 7);
        assert_eq!(json["at"], 2_000);
        assert_eq!(json["emb"], serde_json::json!([]));
    }

    #[test]
    fn resolves_to_a_user_schema_with_enums_unions_and_defaults() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("risk", DataType::Utf8, false),
                Field::new("score", DataType::Float64, false),
                Field::new("ignored", DataType::Int64, false),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["a"])),
                Arc::new(StringArray::from(vec!["high"])),
                Arc::new(Float64Array::from(vec![0.75])),
                Arc::new(Int64Array::from(vec![1])),
            ],
        )
        .unwrap();
        let user = serde_json::json!({
            "type": "record", "name": "Alert", "namespace": "fraud",
            "fields": [
                {"name": "id", "type": "string"},
                {"name": "risk", "type": {"type": "enum", "name": "Risk", "symbols": ["low", "high"]}},
                {"name": "score", "type": ["null", "double"]},
                {"name": "source", "type": "string", "default": "streamgate"}
            ]
        });
        let derived = writer_schema(&batch.schema(), "x", "").unwrap();
        let encoder = AvroEncoder::resolving(&derived, &user, Framing::Plain).unwrap();
        let rows = encoder.encode_rows(&batch).unwrap();
        let schema = AvroSchema::parse(&user).unwrap();
        let value = apache_avro::from_avro_datum(&schema, &mut &rows[0][..], None).unwrap();
        let json = serde_json::Value::try_from(value).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "a", "risk": "high", "score": 0.75, "source": "streamgate"})
        );

        let bad = RecordBatch::try_new(
            batch.schema(),
            vec![
                Arc::new(StringArray::from(vec!["a"])),
                Arc::new(StringArray::from(vec!["medium"])),
                Arc::new(Float64Array::from(vec![0.75])),
                Arc::new(Int64Array::from(vec![1])),
            ],
        )
        .unwrap();
        let err = encoder.encode_rows(&bad).unwrap_err().to_string();
        assert!(err.contains("does not fit the output schema"), "{err}");
    }

    #[test]
    fn unsupported_types_name_the_column() {
        let schema = Schema::new(vec![Field::new("d", DataType::Decimal128(10, 2), false)]);
        let err = writer_schema(&schema, "R", "").unwrap_err().to_string();
        assert!(err.contains("column `d`"), "{err}");
    }

    #[test]
    fn a_timestamp_in_seconds_beyond_milliseconds_is_the_rows_failure() {
        use datafusion::arrow::array::TimestampSecondArray;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(
                TimestampSecondArray::from(vec![1_700_000_000, i64::MAX / 10]).with_timezone("UTC"),
            )],
        )
        .unwrap();
        let derived = writer_schema(&schema, "R", "").unwrap();
        let encoder = AvroEncoder::new(&derived, Framing::Plain).unwrap();
        let rows = encoder.encode_each(&batch).unwrap();
        assert!(rows[0].is_ok());
        // Before: the cast to milliseconds overflowed to null and a garbage value was written.
        let why = rows[1].as_ref().unwrap_err().to_string();
        assert!(why.contains("column `t`"), "{why}");
    }
}
