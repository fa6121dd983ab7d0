//! JSON Schemas (`.json`) to Arrow fields.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields};

use super::{MAX_DEPTH, SchemaError, join_path, timestamp_ms};

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
    use datafusion::arrow::datatypes::SchemaRef;

    use super::*;
    use crate::codec::schema::load_record_schema;
    use crate::codec::schema::tests::{spec_file, write};

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
