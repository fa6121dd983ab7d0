//! Record schemas: the Arrow schema of a decoded record, from columns declared inline in the
//! pipeline file, from an Avro schema (`.avsc`) or from a JSON Schema (`.json`).
//!
//! Only the shape of the record matters here (names, types, nullability): payloads are still
//! JSON. Every error names the file and the (dotted) field it is about.

pub(crate) mod avro;
mod json_schema;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::metadata;
use crate::spec::{ColumnSpec, ColumnType, JsonFormatSpec};

pub use avro::avro_to_fields;
pub use json_schema::json_schema_to_fields;

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

fn join_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The column names of `schema`, comma-separated, for error messages that list what exists.
pub fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write test schema");
    }

    pub(super) fn spec_file(name: &str) -> JsonFormatSpec {
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
}
