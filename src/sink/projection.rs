//! Which columns an output's payloads carry: every column, or the projection an output's
//! `columns` / `exclude_columns` names. Keys, headers and subjects are read from the full row,
//! so a column can key a message without being in its payload.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use crate::codec::schema::column_list;

/// The payload columns of one output, as indices into the rows it receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadColumns {
    /// `None` sends every column; otherwise these columns, in this order.
    indices: Option<Arc<[usize]>>,
}

impl PayloadColumns {
    /// Every column.
    pub fn all() -> Self {
        Self::default()
    }

    /// Resolves an output's `columns` (kept, in that order) or `exclude_columns` (dropped)
    /// against the schema of its rows. Errors are `(field, message)` pairs, the field being
    /// `columns[i]`, `exclude_columns[i]` or `exclude_columns`.
    pub fn resolve(
        columns: Option<&[String]>,
        exclude: &[String],
        schema: &Schema,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut lookup = |field: &str, i: usize, name: &str| match schema.index_of(name) {
            Ok(index) => Some(index),
            Err(_) => {
                errors.push((
                    format!("{field}[{i}]"),
                    format!(
                        "column `{name}` is not in the output rows (columns: {})",
                        column_list(schema)
                    ),
                ));
                None
            }
        };
        let indices: Vec<usize> = match columns {
            Some(keep) => keep
                .iter()
                .enumerate()
                .filter_map(|(i, name)| lookup("columns", i, name))
                .collect(),
            None if exclude.is_empty() => return Ok(Self::all()),
            None => {
                let dropped: HashSet<usize> = exclude
                    .iter()
                    .enumerate()
                    .filter_map(|(i, name)| lookup("exclude_columns", i, name))
                    .collect();
                let kept: Vec<usize> = (0..schema.fields().len())
                    .filter(|i| !dropped.contains(i))
                    .collect();
                if kept.is_empty() && errors.is_empty() {
                    errors.push((
                        "exclude_columns".to_string(),
                        "leaves no column: each payload needs at least one".to_string(),
                    ));
                }
                kept
            }
        };
        if errors.is_empty() {
            Ok(PayloadColumns {
                indices: Some(indices.into()),
            })
        } else {
            Err(errors)
        }
    }

    /// The schema of the payloads, given the schema of the rows.
    pub fn schema(&self, rows: &SchemaRef) -> Result<SchemaRef, ArrowError> {
        match &self.indices {
            None => Ok(rows.clone()),
            Some(indices) => Ok(Arc::new(rows.project(indices)?)),
        }
    }

    /// The payload columns of `batch` (a cheap copy of column references).
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        match &self.indices {
            None => Ok(batch.clone()),
            Some(indices) => batch.project(indices),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float32Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("f0", DataType::Float32, false),
            Field::new("amount", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Float32Array::from(vec![0.5, 1.5])),
                Arc::new(Int64Array::from(vec![10, 20])),
            ],
        )
        .unwrap()
    }

    fn names(batch: &RecordBatch) -> Vec<String> {
        let schema = batch.schema();
        schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_setting_keeps_every_column() {
        let b = batch();
        let all = PayloadColumns::resolve(None, &[], &b.schema()).unwrap();
        assert_eq!(all, PayloadColumns::all());
        assert_eq!(names(&all.apply(&b).unwrap()), ["id", "f0", "amount"]);
        assert_eq!(all.schema(&b.schema()).unwrap(), b.schema());
    }

    #[test]
    fn columns_keeps_the_named_ones_in_their_order() {
        let b = batch();
        let keep = strings(&["amount", "id"]);
        let p = PayloadColumns::resolve(Some(&keep), &[], &b.schema()).unwrap();
        let out = p.apply(&b).unwrap();
        assert_eq!(names(&out), ["amount", "id"]);
        assert_eq!(out.num_rows(), 2);
        assert_eq!(p.schema(&b.schema()).unwrap(), out.schema());
    }

    #[test]
    fn exclude_drops_the_named_ones() {
        let b = batch();
        let p = PayloadColumns::resolve(None, &strings(&["f0"]), &b.schema()).unwrap();
        assert_eq!(names(&p.apply(&b).unwrap()), ["id", "amount"]);
    }

    #[test]
    fn unknown_names_are_errors_naming_the_columns() {
        let b = batch();
        let keep = strings(&["id", "score"]);
        let err = PayloadColumns::resolve(Some(&keep), &[], &b.schema()).unwrap_err();
        assert_eq!(
            err,
            vec![(
                "columns[1]".to_string(),
                "column `score` is not in the output rows (columns: id, f0, amount)".to_string()
            )]
        );
        let err = PayloadColumns::resolve(None, &strings(&["f9"]), &b.schema()).unwrap_err();
        assert_eq!(err[0].0, "exclude_columns[0]");
    }

    #[test]
    fn excluding_every_column_is_an_error() {
        let b = batch();
        let every = strings(&["id", "f0", "amount"]);
        let err = PayloadColumns::resolve(None, &every, &b.schema()).unwrap_err();
        assert_eq!(
            err,
            vec![(
                "exclude_columns".to_string(),
                "leaves no column: each payload needs at least one".to_string()
            )]
        );
    }
}
