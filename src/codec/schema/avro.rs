//! Avro schemas (`.avsc`) to Arrow fields.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use apache_avro::Schema as AvroSchema;
use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};

use super::{MAX_DEPTH, SchemaError, UTC, join_path, timestamp_ms};

/// Converts the text of an Avro schema (a record) into Arrow fields.
pub fn avro_to_fields(text: &str, path: &Path) -> Result<Vec<Field>, SchemaError> {
    let schema = AvroSchema::parse_str(text).map_err(|e| SchemaError::Parse {
        path: path.to_path_buf(),
        message: trim_message(&e.to_string()),
    })?;
    let mut conv = AvroConverter {
        source_name: path.display().to_string(),
        named: HashMap::new(),
        expanding: Vec::new(),
    };
    match &schema {
        AvroSchema::Record(record) => conv.record_fields(record, "", 0),
        other => Err(SchemaError::Invalid {
            source_name: conv.source_name,
            message: format!(
                "the top-level Avro schema must be a record, found {}",
                avro_kind(other)
            ),
        }),
    }
}

struct AvroConverter {
    source_name: String,
    /// Named types (records, enums, fixed) seen so far, for `Ref`s.
    named: HashMap<String, AvroSchema>,
    /// Records being expanded (to reject recursive types).
    expanding: Vec<String>,
}

impl AvroConverter {
    fn err(&self, field: &str, message: impl Into<String>) -> SchemaError {
        SchemaError::Field {
            source_name: self.source_name.clone(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn record_fields(
        &mut self,
        record: &apache_avro::schema::RecordSchema,
        prefix: &str,
        depth: usize,
    ) -> Result<Vec<Field>, SchemaError> {
        let full = record.name.fullname(None);
        self.named
            .insert(full.clone(), AvroSchema::Record(record.clone()));
        self.expanding.push(full);
        let mut fields = Vec::with_capacity(record.fields.len());
        for f in &record.fields {
            let path = join_path(prefix, &f.name);
            let (data_type, nullable) = self.field_type(&f.schema, &path, depth + 1)?;
            fields.push(Field::new(f.name.clone(), data_type, nullable));
        }
        self.expanding.pop();
        Ok(fields)
    }

    /// The Arrow type of an Avro schema and whether it is nullable.
    fn field_type(
        &mut self,
        schema: &AvroSchema,
        path: &str,
        depth: usize,
    ) -> Result<(DataType, bool), SchemaError> {
        if depth > MAX_DEPTH {
            return Err(self.err(path, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let data_type = match schema {
            AvroSchema::Union(union) => {
                let variants = union.variants();
                let non_null: Vec<&AvroSchema> = variants
                    .iter()
                    .filter(|v| !matches!(v, AvroSchema::Null))
                    .collect();
                return match non_null.as_slice() {
                    [single] if non_null.len() < variants.len() => {
                        let (dt, _) = self.field_type(single, path, depth)?;
                        Ok((dt, true))
                    }
                    _ => Err(self.err(
                        path,
                        "only unions of `null` and one other type ([\"null\", T]) are supported",
                    )),
                };
            }
            AvroSchema::Null => {
                return Err(self.err(path, "a field of type `null` carries no data"));
            }
            AvroSchema::Boolean => DataType::Boolean,
            AvroSchema::Int => DataType::Int32,
            AvroSchema::Long => DataType::Int64,
            AvroSchema::Float => DataType::Float32,
            AvroSchema::Double => DataType::Float64,
            // Payloads are JSON, where Avro bytes are written as strings.
            AvroSchema::String | AvroSchema::Bytes | AvroSchema::Uuid => DataType::Utf8,
            AvroSchema::Enum(e) => {
                self.named
                    .insert(e.name.fullname(None), AvroSchema::Enum(e.clone()));
                DataType::Utf8
            }
            AvroSchema::TimestampMillis => timestamp_ms(),
            AvroSchema::TimestampMicros => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
            }
            AvroSchema::Date => DataType::Date32,
            AvroSchema::Record(record) => {
                let fields = self.record_fields(record, path, depth)?;
                if fields.is_empty() {
                    return Err(self.err(path, "a record without fields"));
                }
                DataType::Struct(Fields::from(fields))
            }
            AvroSchema::Array(array) => {
                let (item, nullable) = self.field_type(&array.items, path, depth + 1)?;
                DataType::List(Arc::new(Field::new_list_field(item, nullable)))
            }
            AvroSchema::Map(map) => {
                let (value, nullable) = self.field_type(&map.types, path, depth + 1)?;
                map_type(value, nullable)
            }
            AvroSchema::Ref { name } => {
                let full = name.fullname(None);
                if self.expanding.contains(&full) {
                    return Err(self.err(
                        path,
                        format!("recursive type `{full}` cannot be represented as columns"),
                    ));
                }
                let Some(target) = self.named.get(&full).cloned() else {
                    return Err(self.err(path, format!("unknown type reference `{full}`")));
                };
                return self.field_type(&target, path, depth + 1);
            }
            other => {
                return Err(self.err(
                    path,
                    format!(
                        "Avro type {} is not supported (use boolean, int, long, float, double, \
                         string, bytes, enum, record, array, map, date or timestamp-millis/micros)",
                        avro_kind(other)
                    ),
                ));
            }
        };
        Ok((data_type, false))
    }
}

fn avro_kind(schema: &AvroSchema) -> String {
    let name = match schema {
        AvroSchema::Null => "null",
        AvroSchema::Boolean => "boolean",
        AvroSchema::Int => "int",
        AvroSchema::Long => "long",
        AvroSchema::Float => "float",
        AvroSchema::Double => "double",
        AvroSchema::Bytes => "bytes",
        AvroSchema::String => "string",
        AvroSchema::Array(_) => "array",
        AvroSchema::Map(_) => "map",
        AvroSchema::Union(_) => "union",
        AvroSchema::Record(_) => "record",
        AvroSchema::Enum(_) => "enum",
        AvroSchema::Fixed(_) => "fixed",
        AvroSchema::Decimal(_) | AvroSchema::BigDecimal => "decimal",
        AvroSchema::Uuid => "uuid",
        AvroSchema::Date => "date",
        AvroSchema::TimeMillis => "time-millis",
        AvroSchema::TimeMicros => "time-micros",
        AvroSchema::TimestampMillis => "timestamp-millis",
        AvroSchema::TimestampMicros => "timestamp-micros",
        AvroSchema::TimestampNanos => "timestamp-nanos",
        AvroSchema::LocalTimestampMillis => "local-timestamp-millis",
        AvroSchema::LocalTimestampMicros => "local-timestamp-micros",
        AvroSchema::LocalTimestampNanos => "local-timestamp-nanos",
        AvroSchema::Duration => "duration",
        AvroSchema::Ref { .. } => "reference",
    };
    format!("`{name}`")
}

/// `Map<Utf8, value>` as arrow-json decodes JSON objects into.
fn map_type(value: DataType, value_nullable: bool) -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", value, value_nullable),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

fn trim_message(message: &str) -> String {
    /// Avro parser messages can quote the whole schema.
    const MAX: usize = 300;
    crate::codec::truncate_message(message, MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::schema::load_record_schema;
    use crate::codec::schema::tests::{spec_file, write};

    #[test]
    fn example_avro_schema() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let schema = load_record_schema(&spec_file("transaction.avsc"), &dir).expect("avsc");
        let f = schema.field_with_name("event_time").expect("event_time");
        assert_eq!(f.data_type(), &timestamp_ms());
        assert!(!f.is_nullable());
        assert_eq!(
            schema
                .field_with_name("amount")
                .expect("amount")
                .data_type(),
            &DataType::Float64
        );
        let age = schema.field_with_name("customer_age").expect("age");
        assert_eq!(age.data_type(), &DataType::Int32);
        assert!(age.is_nullable());
        assert_eq!(schema.fields().len(), 12);
    }

    #[test]
    fn avro_nested_array_map_enum_and_refs() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "r.avsc",
            r#"{"type":"record","name":"R","namespace":"x","fields":[
                {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B"]}},
                {"name":"other","type":"Kind"},
                {"name":"tags","type":{"type":"array","items":"string"}},
                {"name":"attrs","type":["null",{"type":"map","values":"long"}]},
                {"name":"merchant","type":{"type":"record","name":"M","fields":[
                    {"name":"id","type":"string"},
                    {"name":"since","type":{"type":"int","logicalType":"date"}}]}},
                {"name":"us","type":{"type":"long","logicalType":"timestamp-micros"}}
            ]}"#,
        );
        let schema = load_record_schema(&spec_file("r.avsc"), dir.path()).expect("avsc");
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
        assert!(matches!(schema.field(2).data_type(), DataType::List(_)));
        assert!(matches!(schema.field(3).data_type(), DataType::Map(_, _)));
        assert!(schema.field(3).is_nullable());
        let DataType::Struct(m) = schema.field(4).data_type() else {
            panic!("struct expected");
        };
        assert_eq!(m[1].data_type(), &DataType::Date32);
    }

    #[test]
    fn avro_errors_name_file_and_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "bad.avsc",
            r#"{"type":"record","name":"R","fields":[
                {"name":"m","type":{"type":"record","name":"M","fields":[
                    {"name":"price","type":{"type":"fixed","name":"F","size":4}}]}}]}"#,
        );
        let err = load_record_schema(&spec_file("bad.avsc"), dir.path())
            .expect_err("fixed unsupported")
            .to_string();
        assert!(err.contains("bad.avsc") && err.contains("m.price"), "{err}");

        write(
            dir.path(),
            "union.avsc",
            r#"{"type":"record","name":"R","fields":[{"name":"u","type":["int","string"]}]}"#,
        );
        let err = load_record_schema(&spec_file("union.avsc"), dir.path())
            .expect_err("union unsupported")
            .to_string();
        assert!(err.contains("`u`"), "{err}");

        write(
            dir.path(),
            "rec.avsc",
            r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#,
        );
        let err = load_record_schema(&spec_file("rec.avsc"), dir.path())
            .expect_err("recursive")
            .to_string();
        assert!(err.contains("recursive"), "{err}");

        write(dir.path(), "top.avsc", r#""string""#);
        assert!(load_record_schema(&spec_file("top.avsc"), dir.path()).is_err());
        write(dir.path(), "junk.avsc", "{not json");
        let err = load_record_schema(&spec_file("junk.avsc"), dir.path())
            .expect_err("junk")
            .to_string();
        assert!(err.contains("junk.avsc"), "{err}");
        let err = load_record_schema(&spec_file("missing.avsc"), dir.path())
            .expect_err("missing")
            .to_string();
        assert!(err.contains("missing.avsc"), "{err}");
        write(dir.path(), "x.yaml", "a: 1");
        assert!(matches!(
            load_record_schema(&spec_file("x.yaml"), dir.path()),
            Err(SchemaError::UnknownKind { .. })
        ));
    }
}
