//! Record schemas: the Arrow schema of a decoded record, from columns declared inline in the
//! pipeline file, from an Avro schema (`.avsc`) or from a JSON Schema (`.json`).
//!
//! Only the shape of the record matters here (names, types, nullability): payloads are still
//! JSON. Every error names the file and the (dotted) field it is about.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apache_avro::Schema as AvroSchema;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use super::metadata;
use crate::spec::{ColumnSpec, ColumnType, JsonFormatSpec};

/// Time zone of every timestamp column: records carry instants, shown in UTC.
const UTC: &str = "UTC";

/// Deepest nesting of records / objects / arrays accepted in a schema file. Real record schemas
/// are a few levels deep; the bound only protects against pathological (or recursive) input.
const MAX_DEPTH: usize = 32;

/// Why a record schema could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Neither or both of `schema` and `columns` were given.
    #[error("give exactly one of `format.schema` or `format.columns`")]
    NoSchema,
    /// The schema file could not be read.
    #[error("cannot read schema file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The schema file has an extension other than `.avsc` or `.json`.
    #[error(
        "schema file {path}: unknown kind; use an Avro schema (.avsc) or a JSON Schema (.json)"
    )]
    UnknownKind {
        /// The file.
        path: PathBuf,
    },
    /// The schema file is not a valid Avro schema / JSON document.
    #[error("schema file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A field has a type that cannot be mapped to a column.
    #[error("{source_name}: field `{field}`: {message}")]
    Field {
        /// The file, or `columns` for inline columns.
        source_name: String,
        /// Dotted path of the field (`merchant.address.city`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The schema as a whole is unusable (not a record, no fields).
    #[error("{source_name}: {message}")]
    Invalid {
        /// The file, or `columns` for inline columns.
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

/// The Arrow schema of decoded records, from inline columns or a schema file relative to
/// `base_dir`.
///
/// Field names must be unique, non-empty, and must not collide with the metadata columns
/// (`_key`, `_topic`, ...) or start with the reserved prefix `__sg_`.
pub fn load_record_schema(
    format: &JsonFormatSpec,
    base_dir: &Path,
) -> Result<SchemaRef, SchemaError> {
    let (fields, source_name) = match (&format.schema, &format.columns) {
        (Some(file), None) => {
            let path = base_dir.join(file);
            (load_file(&path)?, path.display().to_string())
        }
        (None, Some(columns)) => (columns_to_fields(columns), "columns".to_string()),
        _ => return Err(SchemaError::NoSchema),
    };
    check_top_level(&fields, &source_name)?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The Arrow type of a declared column type.
pub fn column_type(data_type: ColumnType) -> DataType {
    match data_type {
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float32 => DataType::Float32,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::String => DataType::Utf8,
        ColumnType::Timestamp => timestamp_ms(),
        ColumnType::Date => DataType::Date32,
    }
}

/// Arrow fields of inline columns (no validation beyond the type mapping).
pub fn columns_to_fields(columns: &[ColumnSpec]) -> Vec<Field> {
    columns
        .iter()
        .map(|c| Field::new(c.name.clone(), column_type(c.data_type), c.nullable))
        .collect()
}

fn timestamp_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into()))
}

fn check_top_level(fields: &[Field], source_name: &str) -> Result<(), SchemaError> {
    if fields.is_empty() {
        return Err(SchemaError::Invalid {
            source_name: source_name.to_string(),
            message: "the record has no fields".into(),
        });
    }
    let mut seen = HashSet::new();
    for f in fields {
        let name = f.name();
        let err = |message: String| SchemaError::Field {
            source_name: source_name.to_string(),
            field: name.clone(),
            message,
        };
        if name.is_empty() {
            return Err(err("empty field name".into()));
        }
        if metadata::is_metadata_column(name) {
            return Err(err(format!(
                "`{name}` is a reserved metadata column name ({})",
                metadata::METADATA_COLUMNS.join(", ")
            )));
        }
        if name.starts_with(metadata::RESERVED_PREFIX) {
            return Err(err(format!(
                "names starting with `{}` are reserved",
                metadata::RESERVED_PREFIX
            )));
        }
        if !seen.insert(name.as_str()) {
            return Err(err("declared more than once".into()));
        }
    }
    Ok(())
}

fn load_file(path: &Path) -> Result<Vec<Field>, SchemaError> {
    let kind = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match kind.as_deref() {
        Some("avsc") => avro_to_fields(&text, path),
        Some("json") => json_schema_to_fields(&text, path),
        _ => Err(SchemaError::UnknownKind {
            path: path.to_path_buf(),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Avro

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

fn join_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn trim_message(message: &str) -> String {
    const MAX: usize = 300;
    if message.len() <= MAX {
        return message.to_string();
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

// ---------------------------------------------------------------------------------------------
// JSON Schema

/// A JSON document that keeps object members in file order (serde_json's `Value` sorts them,
/// and column order should follow the schema file).
#[derive(Debug)]
enum Node {
    Null,
    Bool,
    Number,
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> serde::de::Visitor<'de> for NodeVisitor {
            type Value = Node;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Bool)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Number)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Number)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Number)
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::String(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::String(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Node>()? {
                    members.push((k, v));
                }
                Ok(Node::Object(members))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Converts the text of a JSON Schema (an object schema) into Arrow fields, in the order of
/// `properties` in the file.
pub fn json_schema_to_fields(text: &str, path: &Path) -> Result<Vec<Field>, SchemaError> {
    let doc: Node = serde_json::from_str(text).map_err(|e| SchemaError::Parse {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })?;
    let conv = JsonSchemaConverter {
        source_name: path.display().to_string(),
    };
    let (types, _) = conv.types_of(&doc, "")?;
    if types != ["object"] {
        return Err(SchemaError::Invalid {
            source_name: conv.source_name,
            message: "the top-level JSON Schema must have `\"type\": \"object\"`".into(),
        });
    }
    conv.object_fields(&doc, "", 0)
}

struct JsonSchemaConverter {
    source_name: String,
}

impl JsonSchemaConverter {
    fn err(&self, field: &str, message: impl Into<String>) -> SchemaError {
        if field.is_empty() {
            SchemaError::Invalid {
                source_name: self.source_name.clone(),
                message: message.into(),
            }
        } else {
            SchemaError::Field {
                source_name: self.source_name.clone(),
                field: field.to_string(),
                message: message.into(),
            }
        }
    }

    /// The non-null type names of a schema node and whether `null` is among its types.
    fn types_of<'a>(
        &self,
        node: &'a Node,
        path: &str,
    ) -> Result<(Vec<&'a str>, bool), SchemaError> {
        if !matches!(node, Node::Object(_)) {
            return Err(self.err(path, "schema must be a JSON object"));
        }
        if node.get("$ref").is_some() {
            return Err(self.err(path, "`$ref` is not supported; inline the definition"));
        }
        let names: Vec<&str> = match node.get("type") {
            Some(Node::String(s)) => vec![s.as_str()],
            Some(Node::Array(items)) => {
                let mut names = Vec::with_capacity(items.len());
                for item in items {
                    match item.as_str() {
                        Some(s) => names.push(s),
                        None => return Err(self.err(path, "`type` entries must be strings")),
                    }
                }
                names
            }
            Some(_) => return Err(self.err(path, "`type` must be a string or a list of strings")),
            None => return Err(self.err(path, "missing `type`")),
        };
        let nullable = names.contains(&"null");
        let non_null: Vec<&str> = names.into_iter().filter(|n| *n != "null").collect();
        Ok((non_null, nullable))
    }

    fn object_fields(
        &self,
        node: &Node,
        path: &str,
        depth: usize,
    ) -> Result<Vec<Field>, SchemaError> {
        let required: HashSet<&str> = match node.get("required") {
            None => HashSet::new(),
            Some(Node::Array(items)) => items.iter().filter_map(|v| v.as_str()).collect(),
            Some(_) => return Err(self.err(path, "`required` must be a list of names")),
        };
        let properties = match node.get("properties") {
            Some(Node::Object(p)) => p,
            Some(_) => return Err(self.err(path, "`properties` must be an object")),
            None => return Err(self.err(path, "an object schema needs `properties`")),
        };
        let mut fields = Vec::with_capacity(properties.len());
        for (name, prop) in properties {
            let field_path = join_path(path, name);
            let (data_type, nullable) = self.property_type(prop, &field_path, depth + 1)?;
            let nullable = nullable || !required.contains(name.as_str());
            fields.push(Field::new(name.clone(), data_type, nullable));
        }
        for name in &required {
            if !properties.iter().any(|(k, _)| k == name) {
                return Err(self.err(
                    path,
                    format!("`required` names `{name}`, which is not in `properties`"),
                ));
            }
        }
        Ok(fields)
    }

    fn property_type(
        &self,
        node: &Node,
        path: &str,
        depth: usize,
    ) -> Result<(DataType, bool), SchemaError> {
        if depth > MAX_DEPTH {
            return Err(self.err(path, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let (types, nullable) = self.types_of(node, path)?;
        let [kind] = types.as_slice() else {
            return Err(self.err(
                path,
                "exactly one non-null type is supported (`\"type\": [\"string\", \"null\"]`)",
            ));
        };
        let data_type = match *kind {
            "string" => match node.get("format").and_then(|f| f.as_str()) {
                Some("date-time") => timestamp_ms(),
                Some("date") => DataType::Date32,
                _ => DataType::Utf8,
            },
            "integer" => DataType::Int64,
            "number" => DataType::Float64,
            "boolean" => DataType::Boolean,
            "object" => {
                let fields = self.object_fields(node, path, depth)?;
                if fields.is_empty() {
                    return Err(self.err(path, "an object without properties"));
                }
                DataType::Struct(Fields::from(fields))
            }
            "array" => {
                let Some(items) = node.get("items") else {
                    return Err(self.err(path, "an array schema needs `items`"));
                };
                let (item, item_nullable) = self.property_type(items, path, depth + 1)?;
                DataType::List(Arc::new(Field::new_list_field(item, item_nullable)))
            }
            other => {
                return Err(self.err(
                    path,
                    format!(
                        "type `{other}` is not supported (use string, integer, number, boolean, \
                         object or array)"
                    ),
                ));
            }
        };
        Ok((data_type, nullable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write test schema");
    }

    fn spec_file(name: &str) -> JsonFormatSpec {
        JsonFormatSpec {
            schema: Some(name.into()),
            columns: None,
        }
    }

    #[test]
    fn inline_columns() {
        let spec = JsonFormatSpec {
            schema: None,
            columns: Some(vec![
                ColumnSpec {
                    name: "id".into(),
                    data_type: ColumnType::String,
                    nullable: false,
                },
                ColumnSpec {
                    name: "ts".into(),
                    data_type: ColumnType::Timestamp,
                    nullable: true,
                },
                ColumnSpec {
                    name: "d".into(),
                    data_type: ColumnType::Date,
                    nullable: true,
                },
            ]),
        };
        let schema = load_record_schema(&spec, Path::new(".")).expect("schema");
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        assert!(!schema.field(0).is_nullable());
        assert_eq!(schema.field(1).data_type(), &timestamp_ms());
        assert!(schema.field(1).is_nullable());
        assert_eq!(schema.field(2).data_type(), &DataType::Date32);
    }

    #[test]
    fn neither_or_both_is_an_error() {
        let spec = JsonFormatSpec {
            schema: None,
            columns: None,
        };
        assert!(matches!(
            load_record_schema(&spec, Path::new(".")),
            Err(SchemaError::NoSchema)
        ));
    }

    #[test]
    fn reserved_and_duplicate_names() {
        let col = |name: &str| ColumnSpec {
            name: name.into(),
            data_type: ColumnType::Int64,
            nullable: false,
        };
        for cols in [
            vec![col("_key")],
            vec![col("__sg_row")],
            vec![col("a"), col("a")],
        ] {
            let spec = JsonFormatSpec {
                schema: None,
                columns: Some(cols),
            };
            let err = load_record_schema(&spec, Path::new(".")).expect_err("must fail");
            assert!(matches!(err, SchemaError::Field { .. }), "{err}");
        }
    }

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
    fn example_json_schema_matches_avro() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let json = load_record_schema(&spec_file("transaction.schema.json"), &dir).expect("json");
        let avro = load_record_schema(&spec_file("transaction.avsc"), &dir).expect("avsc");
        let names = |s: &SchemaRef| -> Vec<String> {
            s.fields().iter().map(|f| f.name().clone()).collect()
        };
        assert_eq!(names(&json), names(&avro), "file order is kept");
        for f in avro.fields() {
            let j = json.field_with_name(f.name()).expect("same fields");
            let expected = match f.data_type() {
                DataType::Int32 => DataType::Int64,
                other => other.clone(),
            };
            assert_eq!(j.data_type(), &expected, "{}", f.name());
            assert_eq!(j.is_nullable(), f.is_nullable(), "{}", f.name());
        }
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

    #[test]
    fn json_schema_types_and_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "s.json",
            r#"{"type":"object","required":["id","geo"],"properties":{
                "id":{"type":"string"},
                "n":{"type":["integer","null"]},
                "d":{"type":"string","format":"date"},
                "geo":{"type":"object","required":["lat"],"properties":{
                    "lat":{"type":"number"},"lon":{"type":"number"}}},
                "tags":{"type":"array","items":{"type":"string"}}
            }}"#,
        );
        let schema = load_record_schema(&spec_file("s.json"), dir.path()).expect("json schema");
        let id = schema.field_with_name("id").expect("id");
        assert!(!id.is_nullable());
        assert_eq!(
            schema.field_with_name("n").expect("n").data_type(),
            &DataType::Int64
        );
        assert_eq!(
            schema.field_with_name("d").expect("d").data_type(),
            &DataType::Date32
        );
        let geo = schema.field_with_name("geo").expect("geo");
        let DataType::Struct(g) = geo.data_type() else {
            panic!("struct expected")
        };
        assert!(!g[0].is_nullable() && g[1].is_nullable());

        write(
            dir.path(),
            "bad.json",
            r#"{"type":"object","properties":{"a":{"type":"object","properties":{
                "b":{"type":["string","integer"]}}}}}"#,
        );
        let err = load_record_schema(&spec_file("bad.json"), dir.path())
            .expect_err("bad")
            .to_string();
        assert!(err.contains("bad.json") && err.contains("a.b"), "{err}");

        write(
            dir.path(),
            "arr.json",
            r#"{"type":"array","items":{"type":"string"}}"#,
        );
        assert!(load_record_schema(&spec_file("arr.json"), dir.path()).is_err());
    }
}
