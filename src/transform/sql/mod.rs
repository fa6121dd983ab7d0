//! The SQL stage: a DataFusion query over each micro-batch, planned once at startup.
//!
//! The query reads a table called `input` (decoded record columns plus metadata columns). It is
//! parsed, checked, rewritten and physically planned once in [`SqlTransform::new`]. Per batch,
//! [`SqlTransform::apply`] swaps the batch into the plan's leaf (a custom scan node holding the
//! current batch) by rebuilding only the path from that leaf to the root, then executes it:
//! a few microseconds of overhead instead of the ~1.4 ms a re-plan costs.
//!
//! **Stateless queries only.** Each micro-batch is evaluated on its own, so aggregates, joins,
//! windows, sorting, `LIMIT`, `DISTINCT` and set operations would give per-batch answers that
//! mean nothing over a stream; they are rejected with a clear message. Allowed: projection,
//! filters, scalar functions, `CASE`, sub-selects in `FROM`, and `unnest`.
//!
//! **Provenance.** A hidden column `__sg_row` (UInt32, the row's index in the input batch) is
//! appended to the scanned batch and carried through every projection of the plan, so every
//! output row knows which input row (and so which original record) it came from. When
//! execution fails (say `CAST('x' AS INT)` in one row), the batch is bisected to isolate the
//! failing rows, which are reported as [`RecordFailure`]s with class `sql_error`.

mod message;
mod provenance;
mod query;
mod scan;
mod stateless;

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{SchemaRef, UInt32Type};

use crate::batch::{ErrorClass, RecordFailure};
use crate::codec::metadata::is_metadata_column;

use self::message::{error_message, trim};
use self::query::{Query, plan_query};

pub use self::stateless::is_planning_time_function;

/// Name of the table the query reads.
pub const INPUT_TABLE: &str = "input";

/// Hidden row-id column carried through the plan for provenance.
pub const ROW_ID: &str = "__sg_row";

/// An input batch whose schema is not the one the SQL was planned for (every row fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("input batch does not have the schema the SQL was planned for")]
pub struct InputSchemaChanged;

/// Rows per batch inside DataFusion. Larger than any micro-batch we expect so operators do not
/// split batches (a split would only cost a concat at the end).
const DATAFUSION_BATCH_SIZE: usize = 65_536;

/// Longest error message kept (DataFusion messages can list every column).
const MAX_MESSAGE: usize = 500;

/// Why a query cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SqlError {
    /// DataFusion could not parse or plan the query (syntax, unknown column or function, type
    /// error).
    #[error("invalid SQL: {0}")]
    Plan(String),
    /// The query is valid SQL but not evaluable row by row on a stream.
    #[error(
        "unsupported SQL: {0}; streaming SQL is evaluated per micro-batch, so aggregates, joins, \
         windows, sorting, LIMIT, DISTINCT and set operations are not meaningful; use \
         projections, filters and scalar functions"
    )]
    Unsupported(String),
    /// The query does not read from the `input` table.
    #[error("the query must read its rows from the `input` table (SELECT ... FROM input)")]
    NoInput,
    /// Something unexpected went wrong while planning.
    #[error("internal error planning SQL: {0}")]
    Internal(String),
}

/// The result of applying the SQL stage to one batch.
#[derive(Debug, Clone)]
pub struct SqlOutput {
    /// The result rows, with the query's columns only ([`SqlTransform::output_schema`]).
    pub batch: RecordBatch,
    /// For each output row, the index of the input row it came from. A filter drops rows and
    /// `unnest` repeats them, so this is neither complete nor unique.
    pub rows: Vec<u32>,
    /// Input rows whose evaluation failed (class `sql_error`), by ascending index.
    pub failures: Vec<RecordFailure>,
}

/// The SQL stage, planned once and applied to every batch.
pub struct SqlTransform {
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    kind: Kind,
}

enum Kind {
    /// No SQL: the record columns, metadata dropped.
    Passthrough { columns: Vec<usize> },
    /// A planned query.
    Query(Box<Query>),
}

impl fmt::Debug for SqlTransform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("SqlTransform");
        s.field("output_schema", &self.output_schema);
        match &self.kind {
            Kind::Passthrough { .. } => s.field("sql", &"none"),
            Kind::Query(q) => s.field(
                "plan",
                &datafusion::physical_plan::displayable(q.plan.as_ref())
                    .indent(false)
                    .to_string(),
            ),
        };
        s.finish()
    }
}

impl SqlTransform {
    /// Plans `sql` against a table `input` of `input_schema` (see
    /// [`crate::codec::metadata::input_table_schema`]). With `None`, the stage passes the
    /// record columns through and drops the metadata columns.
    pub async fn new(sql: Option<&str>, input_schema: SchemaRef) -> Result<Self, SqlError> {
        if input_schema.column_with_name(ROW_ID).is_some() {
            return Err(SqlError::Internal(format!(
                "the input schema already has a column `{ROW_ID}`"
            )));
        }
        let Some(sql) = sql else {
            let columns: Vec<usize> = input_schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| !is_metadata_column(f.name()))
                .map(|(i, _)| i)
                .collect();
            let output_schema = input_schema
                .project(&columns)
                .map_err(|e| SqlError::Internal(e.to_string()))?;
            return Ok(SqlTransform {
                input_schema,
                output_schema: Arc::new(output_schema),
                kind: Kind::Passthrough { columns },
            });
        };
        let (query, output_schema) = plan_query(sql, &input_schema).await?;
        Ok(SqlTransform {
            input_schema,
            output_schema,
            kind: Kind::Query(Box::new(query)),
        })
    }

    /// The schema of [`SqlOutput::batch`]: the query's columns (without the hidden row id).
    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    /// Names of the input table's columns the stage reads (the query's pushed-down
    /// projection; every record column without SQL), so a columnar reader can skip the rest.
    pub fn used_input_columns(&self) -> Vec<String> {
        let names = |idx: &mut dyn Iterator<Item = usize>| -> Vec<String> {
            idx.filter_map(|i| self.input_schema.fields().get(i).map(|f| f.name().clone()))
                .filter(|n| n != ROW_ID)
                .collect()
        };
        match &self.kind {
            Kind::Passthrough { columns } => names(&mut columns.iter().copied()),
            Kind::Query(q) => match q.scanned_columns() {
                Some(p) => names(&mut p.into_iter()),
                None => names(&mut (0..self.input_schema.fields().len())),
            },
        }
    }

    /// The schema batches given to [`Self::apply`] must have.
    pub fn input_schema(&self) -> SchemaRef {
        self.input_schema.clone()
    }

    /// Runs the stage over one batch. Never fails as a whole: rows whose evaluation fails are
    /// isolated (by bisection) and reported in [`SqlOutput::failures`].
    pub async fn apply(&self, input: RecordBatch) -> SqlOutput {
        let n = input.num_rows();
        if let Err(e) = self.check_input(&input) {
            return self.all_failed(n, e.to_string());
        }
        match &self.kind {
            Kind::Passthrough { columns } => match input.project(columns) {
                Ok(batch) => SqlOutput {
                    batch,
                    rows: (0..n as u32).collect(),
                    failures: Vec::new(),
                },
                Err(e) => self.all_failed(n, trim(&e.to_string())),
            },
            Kind::Query(q) => {
                let mut columns = input.columns().to_vec();
                columns.push(Arc::new(UInt32Array::from_iter_values(0..n as u32)) as ArrayRef);
                match RecordBatch::try_new(q.scan_schema.clone(), columns) {
                    Ok(batch) => self.run_isolating(q, batch).await,
                    Err(e) => self.all_failed(n, trim(&e.to_string())),
                }
            }
        }
    }

    fn check_input(&self, input: &RecordBatch) -> Result<(), InputSchemaChanged> {
        let expected = self.input_schema.fields();
        let got = input.schema();
        let same = got.fields().len() == expected.len()
            && got
                .fields()
                .iter()
                .zip(expected.iter())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if same {
            Ok(())
        } else {
            Err(InputSchemaChanged)
        }
    }

    /// Executes over `batch` (with row ids); on error, bisects to isolate failing rows.
    async fn run_isolating(&self, q: &Query, batch: RecordBatch) -> SqlOutput {
        let mut parts: Vec<RecordBatch> = Vec::new();
        let mut failures = Vec::new();
        if batch.num_rows() > 0 {
            // Ranges still to run, processed last-in first-out: push the right half first so
            // output stays in input order.
            let mut pending = vec![(0usize, batch.num_rows())];
            while let Some((offset, len)) = pending.pop() {
                let slice = batch.slice(offset, len);
                match q.run(slice.clone()).await {
                    Ok(out) => parts.extend(out),
                    Err(e) if len == 1 => {
                        let index = row_ids(&slice).first().copied().unwrap_or(offset as u32);
                        failures.push(RecordFailure {
                            index: index as usize,
                            class: ErrorClass::SqlError,
                            message: error_message(&e),
                        });
                    }
                    Err(_) => {
                        let half = len / 2;
                        pending.push((offset + half, len - half));
                        pending.push((offset, half));
                    }
                }
            }
        }
        let plan_schema = q.plan.schema();
        let combined = match parts.len() {
            0 => Ok(RecordBatch::new_empty(plan_schema)),
            1 => Ok(parts.swap_remove(0)),
            _ => concat_batches(&plan_schema, &parts),
        };
        let result = combined.and_then(|b| {
            let rows = b
                .column(q.row_column)
                .as_primitive_opt::<UInt32Type>()
                .map(|a| a.values().to_vec())
                .unwrap_or_default();
            let out = b.project(&q.output_columns)?;
            let out = RecordBatch::try_new(self.output_schema.clone(), out.columns().to_vec())?;
            Ok((out, rows))
        });
        match result {
            Ok((batch, rows)) => SqlOutput {
                batch,
                rows,
                failures,
            },
            Err(e) => self.all_failed(batch.num_rows(), trim(&e.to_string())),
        }
    }

    /// An output in which every one of `rows` input rows failed with `message`.
    fn all_failed(&self, rows: usize, message: String) -> SqlOutput {
        SqlOutput {
            batch: RecordBatch::new_empty(self.output_schema.clone()),
            rows: Vec::new(),
            failures: (0..rows)
                .map(|index| RecordFailure {
                    index,
                    class: ErrorClass::SqlError,
                    message: message.clone(),
                })
                .collect(),
        }
    }
}

/// Row ids of a scan batch (last column).
fn row_ids(batch: &RecordBatch) -> Vec<u32> {
    batch
        .columns()
        .last()
        .and_then(|c| c.as_primitive_opt::<UInt32Type>())
        .map(|a| a.values().to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use datafusion::arrow::array::{Float64Array, Int64Array, ListArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;
    use crate::batch::{Position, RawRecord};
    use crate::codec::json::JsonDecoder;

    pub(super) fn record_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, false),
            Field::new("note", DataType::Utf8, true),
        ]))
    }

    fn decoded(n: usize, note: impl Fn(usize) -> String) -> RecordBatch {
        let decoder = JsonDecoder::new(record_schema());
        let records: Vec<RawRecord> = (0..n)
            .map(|i| RawRecord {
                key: Some(format!("k{i}").into_bytes()),
                payload: format!(
                    r#"{{"id":"t{i}","amount":{},"note":"{}"}}"#,
                    i as f64 * 10.0,
                    note(i)
                )
                .into_bytes(),
                headers: vec![],
                timestamp_ms: Some(0),
                position: Position {
                    topic: "tx".into(),
                    partition: 0,
                    offset: i as i64,
                },
            })
            .collect();
        let out = decoder.decode(&records);
        assert!(out.failures.is_empty());
        out.batch
    }

    pub(super) fn input_schema() -> SchemaRef {
        crate::codec::metadata::input_table_schema(&record_schema())
    }

    /// Compile-time check: the stage can be shared and its future sent across threads.
    #[allow(dead_code)]
    fn apply_is_send(t: &SqlTransform, b: RecordBatch) {
        fn is_send<F: Send>(_: F) {}
        fn is_sync<T: Send + Sync>(_: &T) {}
        is_sync(t);
        is_send(t.apply(b));
    }

    #[tokio::test]
    async fn projection_filter_and_provenance() {
        let t = SqlTransform::new(
            Some("SELECT id, amount * 2 AS double, _offset FROM input WHERE amount >= 20"),
            input_schema(),
        )
        .await
        .expect("plan");
        let names: Vec<String> = t
            .output_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["id", "double", "_offset"]);
        let out = t.apply(decoded(5, |_| "n".into())).await;
        assert!(out.failures.is_empty());
        assert_eq!(out.rows, [2, 3, 4]);
        let doubled = out.batch.column(1).as_any().downcast_ref::<Float64Array>();
        assert_eq!(doubled.map(|a| a.value(0)), Some(40.0));
        assert_eq!(out.batch.schema(), t.output_schema());
    }

    #[tokio::test]
    async fn select_star_and_subquery_alias() {
        let t = SqlTransform::new(
            Some("SELECT x.id FROM (SELECT * FROM input WHERE amount > 0) AS x WHERE x.id <> 't2'"),
            input_schema(),
        )
        .await
        .expect("plan");
        let out = t.apply(decoded(4, |_| "n".into())).await;
        assert_eq!(out.rows, [1, 3]);
        assert_eq!(out.batch.num_columns(), 1);

        let star = SqlTransform::new(Some("SELECT * FROM input"), input_schema())
            .await
            .expect("plan");
        assert_eq!(star.output_schema().fields().len(), 9);
        let out = star.apply(decoded(3, |_| "n".into())).await;
        assert_eq!(out.rows, [0, 1, 2]);
    }

    #[tokio::test]
    async fn cast_failure_is_isolated() {
        let t = SqlTransform::new(
            Some("SELECT id, CAST(note AS INT) AS n FROM input"),
            input_schema(),
        )
        .await
        .expect("plan");
        let batch = decoded(100, |i| {
            if i == 37 || i == 80 {
                "x".into()
            } else {
                i.to_string()
            }
        });
        let out = t.apply(batch).await;
        let failed: Vec<usize> = out.failures.iter().map(|f| f.index).collect();
        assert_eq!(failed, [37, 80]);
        assert_eq!(out.failures[0].class, ErrorClass::SqlError);
        assert!(
            out.failures[0].message.to_lowercase().contains("cast"),
            "{:?}",
            out.failures
        );
        let expected: Vec<u32> = (0..100).filter(|i| *i != 37 && *i != 80).collect();
        assert_eq!(out.rows, expected);
        let n = out
            .batch
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
        for (row, &src) in out.rows.iter().enumerate() {
            assert_eq!(n.value(row), src as i32);
        }
    }

    #[tokio::test]
    async fn unnest_repeats_provenance() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                true,
            ),
        ]));
        let t = SqlTransform::new(
            Some("SELECT id, unnest(tags) AS tag FROM input"),
            schema.clone(),
        )
        .await
        .expect("plan");
        let tags = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
            Some(vec![Some(3)]),
        ]);
        // The list above is Int64; build a Utf8 list instead through casting.
        let tags = datafusion::arrow::compute::cast(&tags, schema.field(1).data_type())
            .expect("cast list");
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![10, 11, 12])), tags],
        )
        .expect("batch");
        let out = t.apply(batch).await;
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        assert_eq!(out.rows, [0, 0, 2]);
        let tag = out.batch.column(1).as_any().downcast_ref::<StringArray>();
        assert_eq!(tag.map(|a| a.value(1).to_string()), Some("2".into()));
    }

    #[tokio::test]
    async fn passthrough_drops_metadata() {
        let t = SqlTransform::new(None, input_schema())
            .await
            .expect("passthrough");
        assert_eq!(t.output_schema(), record_schema());
        let out = t.apply(decoded(3, |_| "n".into())).await;
        assert_eq!(out.rows, [0, 1, 2]);
        assert_eq!(out.batch.num_columns(), 3);
    }

    #[tokio::test]
    async fn wrong_input_schema_fails_rows_not_process() {
        let t = SqlTransform::new(Some("SELECT id FROM input"), input_schema())
            .await
            .expect("plan");
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1, 2]))],
        )
        .expect("batch");
        let out = t.apply(other).await;
        assert_eq!(out.failures.len(), 2);
        assert_eq!(out.batch.num_rows(), 0);
    }

    #[tokio::test]
    async fn empty_batch() {
        let t = SqlTransform::new(Some("SELECT id FROM input"), input_schema())
            .await
            .expect("plan");
        let out = t.apply(decoded(0, |_| String::new())).await;
        assert_eq!(out.batch.num_rows(), 0);
        assert!(out.rows.is_empty());
    }

    #[tokio::test]
    async fn per_batch_overhead() {
        // Prints the cost; timing is not asserted (noisy machines, debug builds).
        let sql = "SELECT id, amount, CASE WHEN amount > 500 THEN 'high' ELSE 'low' END AS risk, \
                   upper(note) AS note FROM input WHERE amount >= 0";
        let start = Instant::now();
        let t = SqlTransform::new(Some(sql), input_schema())
            .await
            .expect("plan");
        let plan_us = start.elapsed().as_secs_f64() * 1e6;
        let batch = decoded(1000, |i| format!("n{i}"));
        let Kind::Query(q) = &t.kind else {
            panic!("query expected")
        };
        let mut scan_cols = batch.columns().to_vec();
        scan_cols.push(Arc::new(UInt32Array::from_iter_values(0..1000)));
        let scan = RecordBatch::try_new(q.scan_schema.clone(), scan_cols).expect("scan batch");
        let rounds = 200;
        let start = Instant::now();
        for _ in 0..rounds {
            let _ = q.with_batch(scan.clone()).expect("swap");
        }
        let swap_us = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        let _ = t.apply(batch.clone()).await;
        let start = Instant::now();
        for _ in 0..rounds {
            let out = t.apply(batch.clone()).await;
            assert_eq!(out.batch.num_rows(), 1000);
        }
        let apply_us = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        let tiny = decoded(1, |_| "n".into());
        let start = Instant::now();
        for _ in 0..rounds {
            let _ = t.apply(tiny.clone()).await;
        }
        let tiny_us = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        println!(
            "sql: plan once {plan_us:.0} µs; leaf swap {swap_us:.1} µs; apply 1000-row batch \
             {apply_us:.1} µs ({:.3} µs/row); apply 1-row batch (fixed overhead) {tiny_us:.1} µs",
            apply_us / 1000.0
        );
    }
}
