//! The JSON Schema of the pipeline format, generated from the serde types.
//!
//! Titles and descriptions come from the `///` docs in [`super::types`], and
//! `additionalProperties: false` from `deny_unknown_fields`. On top of what the types say, the
//! bounds that [`super::validate`] enforces and editors can check as you type (name and topic
//! patterns, numeric ranges, non-empty lists, duration syntax) are added here, so an editor
//! flags most mistakes before `streamgate validate` does.
//!
//! The schema is draft-07, the newest draft every common YAML editor plugin understands.
//! `schemas/pipeline.schema.json` is generated from it; a test fails when that file is stale
//! (`UPDATE_GOLDEN=1 cargo test` rewrites it).

use schemars::Schema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::PipelineSpec;

/// Pattern of pipeline and output names (see [`super::validate::is_valid_name`]), or any value
/// with a `${VAR}` reference, which is only checked once interpolated.
const NAME_PATTERN: &str = "^(?:[a-z0-9][a-z0-9_-]{0,62}|.*\\$\\{.*)$";
/// Pattern of Kafka topic names (see [`super::validate::is_legal_topic`]), or any value with a
/// `${VAR}` reference.
const TOPIC_PATTERN: &str = "^(?:[A-Za-z0-9._-]{1,249}|.*\\$\\{.*)$";
/// Loose pattern of durations as `humantime` parses them: `"250ms"`, `"30s"`, `"1m 30s"`.
const DURATION_PATTERN: &str = "^\\s*([0-9]+\\s*[A-Za-zµ]+\\s*)+$";

/// The JSON Schema of a pipeline file, pretty-printed, with a trailing newline.
pub fn pipeline_json_schema() -> String {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<PipelineSpec>();
    let mut value = schema.to_value();
    refine(&mut value);
    unwrap_paragraphs(&mut value);
    // Serialised as a `Schema` for its stable, readable keyword order (`title`, `description`,
    // `type` first).
    let schema = Schema::try_from(value).expect("the root schema is an object");
    serde_json::to_string_pretty(&schema).expect("a JSON Schema always serialises") + "\n"
}

/// Adds the constraints the types cannot express.
fn refine(schema: &mut Value) {
    let root = schema
        .as_object_mut()
        .expect("the root schema is an object");
    root.insert("title".into(), json!("Streamgate pipeline"));

    let root_props = properties(schema, None);
    extend(root_props, "version", json!({ "minimum": 1, "maximum": 1 }));
    extend(root_props, "name", json!({ "pattern": NAME_PATTERN }));
    extend(root_props, "outputs", json!({ "minItems": 1 }));

    let source = variant_properties(schema, "SourceSpec", "kafka");
    extend(source, "bootstrap_servers", json!({ "minLength": 1 }));
    extend(source, "group_id", json!({ "minLength": 1 }));
    extend(
        source,
        "topics",
        json!({ "minItems": 1, "items": { "type": "string", "pattern": TOPIC_PATTERN } }),
    );

    let batch = properties(schema, Some("BatchSpec"));
    extend(
        batch,
        "max_rows",
        json!({ "minimum": 1, "maximum": 100_000 }),
    );
    extend(batch, "max_age", json!({ "pattern": DURATION_PATTERN }));

    let processing = properties(schema, Some("ProcessingSpec"));
    extend(
        processing,
        "workers",
        json!({ "minimum": 1, "maximum": 64 }),
    );
    extend(
        processing,
        "queued_batches",
        json!({ "minimum": 1, "maximum": 1024 }),
    );
    extend(
        processing,
        "drain_timeout",
        json!({ "pattern": DURATION_PATTERN }),
    );

    let json_format = variant_properties(schema, "FormatSpec", "json");
    extend(json_format, "columns", json!({ "minItems": 1 }));
    extend(json_format, "schema", json!({ "minLength": 1 }));

    let column = properties(schema, Some("ColumnSpec"));
    extend(
        column,
        "name",
        json!({ "minLength": 1, "pattern": "^[^_]" }),
    );

    let output = properties(schema, Some("OutputSpec"));
    extend(output, "name", json!({ "pattern": NAME_PATTERN }));

    let kafka_sink = variant_properties(schema, "SinkSpec", "kafka");
    extend(kafka_sink, "topic", json!({ "pattern": TOPIC_PATTERN }));

    let file_sink = variant_properties(schema, "SinkSpec", "file");
    extend(file_sink, "path", json!({ "minLength": 1 }));
}

/// The `properties` of the root schema (`None`) or of a definition.
fn properties<'a>(schema: &'a mut Value, definition: Option<&str>) -> &'a mut Map<String, Value> {
    let object = match definition {
        None => schema,
        Some(name) => &mut schema["definitions"][name],
    };
    object["properties"]
        .as_object_mut()
        .unwrap_or_else(|| panic!("JSON Schema: no properties in {definition:?}"))
}

/// The `properties` of the variant of a `type`-tagged enum definition whose tag is `tag`.
fn variant_properties<'a>(
    schema: &'a mut Value,
    definition: &str,
    tag: &str,
) -> &'a mut Map<String, Value> {
    schema["definitions"][definition]["oneOf"]
        .as_array_mut()
        .and_then(|variants| {
            variants
                .iter_mut()
                .find(|v| v["properties"]["type"]["const"] == tag)
        })
        .and_then(|variant| variant["properties"].as_object_mut())
        .unwrap_or_else(|| panic!("JSON Schema: no variant {tag:?} in {definition}"))
}

/// Adds `keywords` to the schema of property `name`; for an optional property (`anyOf` /
/// `type: [.., "null"]`) they apply to the non-null value, which JSON Schema does for free
/// since these keywords ignore values of other types.
fn extend(properties: &mut Map<String, Value>, name: &str, keywords: Value) {
    let property = properties
        .get_mut(name)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("JSON Schema: no property {name:?}"));
    for (key, value) in keywords.as_object().expect("keywords are an object") {
        match (property.get_mut(key), value) {
            // Merge nested objects such as `items`.
            (Some(Value::Object(existing)), Value::Object(extra)) => {
                existing.extend(extra.clone());
            }
            _ => {
                property.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Doc comments are wrapped at 100 columns; editors show `description` as is, so single line
/// breaks become spaces and only paragraph breaks stay.
fn unwrap_paragraphs(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, value) in object.iter_mut() {
                match value {
                    Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|paragraph| paragraph.replace('\n', " "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_paragraphs(value),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_paragraphs),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        serde_json::from_str(&pipeline_json_schema()).unwrap()
    }

    #[test]
    fn is_draft_07_with_documented_closed_objects() {
        let schema = schema();
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        assert_eq!(schema["title"], "Streamgate pipeline");
        assert_eq!(schema["additionalProperties"], false);
        assert!(
            schema["properties"]["name"]["description"]
                .as_str()
                .unwrap()
                .starts_with("Pipeline name")
        );
        for (name, definition) in schema["definitions"].as_object().unwrap() {
            assert!(
                definition["description"].is_string(),
                "{name} has no description"
            );
            if definition["type"] == "object" {
                assert_eq!(definition["additionalProperties"], false, "{name}");
            }
        }
        let text = pipeline_json_schema();
        assert!(text.ends_with("}\n"));
        assert!(!text.contains("$defs"));
    }

    #[test]
    fn carries_validation_bounds() {
        let schema = schema();
        let defs = &schema["definitions"];
        assert_eq!(schema["properties"]["name"]["pattern"], NAME_PATTERN);
        assert_eq!(
            defs["BatchSpec"]["properties"]["max_rows"]["maximum"],
            100_000
        );
        assert_eq!(
            defs["ProcessingSpec"]["properties"]["workers"]["minimum"],
            1
        );
        let kafka = defs["SourceSpec"]["oneOf"][0]["properties"]["topics"].clone();
        assert_eq!(kafka["minItems"], 1);
        assert_eq!(kafka["items"]["pattern"], TOPIC_PATTERN);
    }

    #[test]
    fn descriptions_keep_only_paragraph_breaks() {
        let text = pipeline_json_schema();
        let schema: Value = serde_json::from_str(&text).unwrap();
        let description = schema["description"].as_str().unwrap();
        assert!(!description.contains('\n'), "{description}");
    }
}
