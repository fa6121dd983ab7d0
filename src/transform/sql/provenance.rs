//! Provenance: the logical-plan rewrite that carries the hidden row-id column to the root.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DataFusionError};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection};

use super::message::error_message;
use super::{ROW_ID, SqlError};

/// Appends the row-id column to every projection that drops it, bottom-up, so it reaches the
/// root.
pub(super) fn carry_row_id(plan: LogicalPlan) -> Result<LogicalPlan, SqlError> {
    let rewritten = plan
        .transform_up(|node| {
            // Children may have gained the column: refresh this node's schema first.
            let node = node.recompute_schema()?;
            let LogicalPlan::Projection(projection) = node else {
                return Ok(Transformed::yes(node));
            };
            if projection.schema.has_column_with_unqualified_name(ROW_ID) {
                return Ok(Transformed::yes(LogicalPlan::Projection(projection)));
            }
            let Projection {
                mut expr, input, ..
            } = projection;
            let (qualifier, _) = input
                .schema()
                .qualified_field_with_unqualified_name(ROW_ID)?;
            expr.push(Expr::Column(Column::new(qualifier.cloned(), ROW_ID)));
            Ok(Transformed::yes(LogicalPlan::Projection(
                Projection::try_new(expr, input)?,
            )))
        })
        .map_err(|e| match e {
            DataFusionError::SchemaError(..) => SqlError::NoInput,
            e => SqlError::Internal(error_message(&e)),
        })?
        .data;
    if rewritten.schema().has_column_with_unqualified_name(ROW_ID) {
        Ok(rewritten)
    } else {
        Err(SqlError::NoInput)
    }
}
