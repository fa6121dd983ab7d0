//! Output routing filters: the `where` of each output, a SQL boolean expression over the SQL
//! stage's result columns, compiled once into a physical expression and evaluated per batch.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::prep_null_mask_filter;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, DataFusionError};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::physical_expr::PhysicalExpr;

use crate::batch::{ErrorClass, RecordFailure};

/// Longest error message kept.
const MAX_MESSAGE: usize = 500;

/// Why a filter expression cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    /// The expression does not parse or names unknown columns or functions.
    #[error("invalid filter `{sql}`: {message}")]
    Invalid {
        /// The expression.
        sql: String,
        /// DataFusion's message.
        message: String,
    },
    /// The expression is not boolean.
    #[error("filter `{sql}` must be a boolean expression, but it is {data_type}")]
    NotBoolean {
        /// The expression.
        sql: String,
        /// Its type.
        data_type: DataType,
    },
    /// The expression uses something that cannot be evaluated row by row.
    #[error("filter `{sql}`: {what} cannot be used in a row filter")]
    Unsupported {
        /// The expression.
        sql: String,
        /// What it uses.
        what: &'static str,
    },
}

/// The result of evaluating a filter over a batch.
#[derive(Debug, Clone)]
pub struct RouteResult {
    /// One value per row: true when the row goes to the output (null and failed rows are
    /// false). Has no null entries.
    pub mask: BooleanArray,
    /// Rows whose evaluation failed (class `route_error`), by ascending row index.
    pub failures: Vec<RecordFailure>,
}

/// A compiled `where` expression.
#[derive(Debug, Clone)]
pub struct RowFilter {
    sql: String,
    schema: SchemaRef,
    expr: Arc<dyn PhysicalExpr>,
}

impl RowFilter {
    /// Compiles `sql` (a boolean SQL expression such as `risk = 'high' AND amount > 100`)
    /// against `schema`, the SQL stage's output schema.
    pub fn new(sql: &str, schema: SchemaRef) -> Result<Self, RouteError> {
        let invalid = |e: DataFusionError| RouteError::Invalid {
            sql: sql.to_string(),
            message: trim(&e.to_string()),
        };
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(invalid)?;
        let ctx = SessionContext::new();
        let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(invalid)?;
        if let Some(what) = unsupported(&expr) {
            return Err(RouteError::Unsupported {
                sql: sql.to_string(),
                what,
            });
        }
        let data_type = expr.get_type(&df_schema).map_err(invalid)?;
        if !matches!(data_type, DataType::Boolean | DataType::Null) {
            return Err(RouteError::NotBoolean {
                sql: sql.to_string(),
                data_type,
            });
        }
        let expr = ctx
            .create_physical_expr(expr, &df_schema)
            .map_err(invalid)?;
        Ok(RowFilter {
            sql: sql.to_string(),
            schema,
            expr,
        })
    }

    /// The expression as written.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The schema the filter was compiled against.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Evaluates the filter over `batch`. Never fails as a whole: if evaluation fails, rows are
    /// evaluated one by one and the failing ones are reported (and not selected).
    pub fn evaluate(&self, batch: &RecordBatch) -> RouteResult {
        match self.mask_of(batch) {
            Ok(mask) => RouteResult {
                mask,
                failures: Vec::new(),
            },
            Err(_) => {
                let mut values = Vec::with_capacity(batch.num_rows());
                let mut failures = Vec::new();
                for i in 0..batch.num_rows() {
                    match self.mask_of(&batch.slice(i, 1)) {
                        Ok(m) => values.push(m.len() == 1 && m.value(0)),
                        Err(e) => {
                            values.push(false);
                            failures.push(RecordFailure {
                                index: i,
                                class: ErrorClass::RouteError,
                                message: trim(&e.to_string()),
                            });
                        }
                    }
                }
                RouteResult {
                    mask: BooleanArray::from(values),
                    failures,
                }
            }
        }
    }

    fn mask_of(&self, batch: &RecordBatch) -> Result<BooleanArray, DataFusionError> {
        let value = self.expr.evaluate(batch)?;
        let array = value.into_array(batch.num_rows())?;
        if array.len() != batch.num_rows() {
            return Err(DataFusionError::Execution(format!(
                "filter produced {} values for {} rows",
                array.len(),
                batch.num_rows()
            )));
        }
        let mask = match array.data_type() {
            DataType::Boolean => array.as_boolean().clone(),
            DataType::Null => BooleanArray::from(vec![false; array.len()]),
            other => {
                return Err(DataFusionError::Execution(format!(
                    "filter produced {other}, not Boolean"
                )));
            }
        };
        Ok(if mask.null_count() > 0 {
            prep_null_mask_filter(&mask)
        } else {
            mask
        })
    }
}

/// What in `expr` cannot be evaluated row by row, if anything.
fn unsupported(expr: &Expr) -> Option<&'static str> {
    let mut what = None;
    let _ = expr.apply(|e| {
        what = match e {
            Expr::AggregateFunction(_) => Some("an aggregate function"),
            Expr::WindowFunction(_) => Some("a window function"),
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_) => Some("a subquery"),
            Expr::ScalarFunction(f) if super::sql::is_planning_time_function(f.name()) => {
                Some("a function fixed at planning time (now, current_date, ...)")
            }
            _ => None,
        };
        Ok(if what.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    what
}

fn trim(message: &str) -> String {
    crate::batch::truncate_message(message, MAX_MESSAGE)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("risk", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
            Field::new("code", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("high"),
                    Some("low"),
                    None,
                    Some("high"),
                ])),
                Arc::new(Float64Array::from(vec![
                    Some(900.0),
                    Some(5.0),
                    Some(1.0),
                    None,
                ])),
                Arc::new(StringArray::from(vec!["1", "2", "x", "4"])),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn filters_and_treats_null_as_false() {
        let b = batch();
        let f = RowFilter::new("risk = 'high' AND amount > 100", b.schema()).expect("filter");
        let r = f.evaluate(&b);
        assert!(r.failures.is_empty());
        assert_eq!(r.mask, BooleanArray::from(vec![true, false, false, false]));
        assert_eq!(r.mask.null_count(), 0);
    }

    #[test]
    fn compile_errors() {
        let s = batch().schema();
        let err = RowFilter::new("riskk = 'high'", s.clone()).expect_err("unknown column");
        assert!(matches!(err, RouteError::Invalid { .. }));
        assert!(err.to_string().contains("riskk"), "{err}");
        let err = RowFilter::new("amount + 1", s.clone()).expect_err("not boolean");
        assert!(matches!(err, RouteError::NotBoolean { .. }), "{err}");
        let err = RowFilter::new("amount >", s.clone()).expect_err("syntax");
        assert!(matches!(err, RouteError::Invalid { .. }), "{err}");
        let err = RowFilter::new("sum(amount) > 1", s.clone()).expect_err("aggregate");
        assert!(matches!(err, RouteError::Unsupported { .. }), "{err}");
        let err = RowFilter::new("now() > now()", s).expect_err("now");
        assert!(matches!(err, RouteError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn failing_rows_are_isolated() {
        let b = batch();
        let f = RowFilter::new("CAST(code AS INT) > 1", b.schema()).expect("filter");
        let r = f.evaluate(&b);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(r.failures[0].index, 2);
        assert_eq!(r.failures[0].class, ErrorClass::RouteError);
        assert_eq!(r.mask, BooleanArray::from(vec![false, true, false, true]));
    }
}
