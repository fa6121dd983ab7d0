//! The check that a query is evaluable row by row: no aggregates, joins, windows, sorting,
//! `LIMIT`, `DISTINCT`, set operations, subqueries or planning-time functions such as `now()`.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};

use super::{INPUT_TABLE, ROW_ID, SqlError};

/// Rejects plans that are not evaluable row by row.
pub(super) fn check_stateless(plan: &LogicalPlan) -> Result<(), SqlError> {
    let mut problem: Option<SqlError> = None;
    let walk = plan.apply(|node| {
        let bad = match node {
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Unnest(_) => None,
            LogicalPlan::TableScan(scan) => {
                (scan.table_name.table() != INPUT_TABLE).then_some(SqlError::NoInput)
            }
            LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Some(SqlError::NoInput),
            LogicalPlan::Aggregate(_) => {
                Some(unsupported("aggregation (GROUP BY, COUNT, SUM, ...)"))
            }
            LogicalPlan::Window(_) => Some(unsupported("window functions (OVER ...)")),
            LogicalPlan::Join(_) => Some(unsupported("joins")),
            LogicalPlan::Sort(_) => Some(unsupported("ORDER BY")),
            LogicalPlan::Limit(_) => Some(unsupported("LIMIT / OFFSET")),
            LogicalPlan::Distinct(_) => Some(unsupported("DISTINCT")),
            LogicalPlan::Union(_) => Some(unsupported("UNION / INTERSECT / EXCEPT")),
            LogicalPlan::RecursiveQuery(_) => Some(unsupported("recursive queries")),
            LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::DescribeTable(_) => Some(SqlError::Plan(
                "only a SELECT query is allowed (no DDL, DML, EXPLAIN or other statements)".into(),
            )),
            other => Some(unsupported(&format!(
                "plan node `{}`",
                other.display().to_string().split(':').next().unwrap_or("?")
            ))),
        };
        if let Some(err) = bad {
            problem = Some(err);
            return Ok(TreeNodeRecursion::Stop);
        }
        for expr in node.expressions() {
            if let Some(err) = check_expr(&expr) {
                problem = Some(err);
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if let Err(e) = walk {
        return Err(SqlError::Internal(e.to_string()));
    }
    match problem {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn unsupported(what: &str) -> SqlError {
    SqlError::Unsupported(what.to_string())
}

/// Rejects subqueries and user-defined uses of the reserved row-id name in an expression.
fn check_expr(expr: &Expr) -> Option<SqlError> {
    let mut problem = None;
    let _ = expr.apply(|e| {
        let bad = match e {
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_) => {
                Some(unsupported("subqueries in expressions"))
            }
            Expr::AggregateFunction(_) => Some(unsupported("aggregate functions")),
            Expr::WindowFunction(_) => Some(unsupported("window functions (OVER ...)")),
            Expr::ScalarFunction(f) if is_planning_time_function(f.name()) => {
                Some(SqlError::Plan(format!(
                    "`{}()` would be fixed at the time the query is planned (once, at startup); \
                     use the record timestamp `_timestamp` instead",
                    f.name()
                )))
            }
            Expr::Alias(alias) if alias.name == ROW_ID => Some(SqlError::Plan(format!(
                "`{ROW_ID}` is a reserved column name"
            ))),
            _ => None,
        };
        match bad {
            Some(err) => {
                problem = Some(err);
                Ok(TreeNodeRecursion::Stop)
            }
            None => Ok(TreeNodeRecursion::Continue),
        }
    });
    problem
}

/// Functions DataFusion folds into a constant when planning: with a plan built once they would
/// return the startup time forever.
pub fn is_planning_time_function(name: &str) -> bool {
    matches!(
        name,
        "now" | "current_timestamp" | "current_date" | "current_time" | "today"
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::input_schema;
    use super::super::{ROW_ID, SqlTransform};

    #[tokio::test]
    async fn rejects_stateful_and_bad_queries() {
        let cases = [
            ("SELECT count(*) FROM input", "aggregat"),
            ("SELECT id FROM input ORDER BY id", "ORDER BY"),
            ("SELECT id FROM input LIMIT 5", "LIMIT"),
            ("SELECT DISTINCT id FROM input", "DISTINCT"),
            ("SELECT id, row_number() OVER () FROM input", "window"),
            (
                "SELECT a.id FROM input a JOIN input b ON a.id = b.id",
                "join",
            ),
            (
                "SELECT id FROM input UNION ALL SELECT id FROM input",
                "UNION",
            ),
            ("SELECT 1", "input"),
            (
                "SELECT id FROM input WHERE id IN (SELECT id FROM input)",
                "subquer",
            ),
            ("SELECT amount AS __sg_row FROM input", "reserved"),
            ("CREATE TABLE t (a INT)", "SELECT"),
            ("SELECT nope FROM input", "nope"),
            ("SELECT id, now() AS t FROM input", "_timestamp"),
            (
                "SELECT id FROM input WHERE _timestamp > current_date",
                "_timestamp",
            ),
            ("SELEC id FROM input", "SELEC"),
        ];
        for (sql, needle) in cases {
            let err = SqlTransform::new(Some(sql), input_schema())
                .await
                .expect_err(sql)
                .to_string();
            println!("{sql}\n  => {err}");
            assert!(
                err.to_lowercase().contains(&needle.to_lowercase()),
                "{sql}: {err}"
            );
            assert!(
                !err.contains(ROW_ID) || needle == "reserved",
                "{sql}: {err}"
            );
        }
    }
}
