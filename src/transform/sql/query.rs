//! The planned query: planning it once, and running it with a batch swapped into its leaf.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DataFusionError;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

use super::message::error_message;
use super::provenance::carry_row_id;
use super::scan::{BatchExec, BatchTable};
use super::stateless::check_stateless;
use super::{DATAFUSION_BATCH_SIZE, INPUT_TABLE, ROW_ID, SqlError};

pub(super) struct Query {
    /// The physical plan, with an empty [`BatchExec`] leaf.
    pub(super) plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    /// `input_schema` plus [`ROW_ID`].
    pub(super) scan_schema: SchemaRef,
    /// Position of [`ROW_ID`] in the plan output.
    pub(super) row_column: usize,
    /// Positions of the user's columns in the plan output.
    pub(super) output_columns: Vec<usize>,
}

impl Query {
    /// Executes the plan over `batch` (which carries row ids).
    pub(super) async fn run(
        &self,
        batch: RecordBatch,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        let plan = self.with_batch(batch)?;
        let stream = plan.execute(0, self.task_ctx.clone())?;
        datafusion::physical_plan::common::collect(stream).await
    }

    /// Columns of the scan schema the plan reads, from the leaf's pushed-down projection
    /// (`None`: every column).
    pub(super) fn scanned_columns(&self) -> Option<Vec<usize>> {
        let mut found = None;
        let _ = self.plan.apply(|node| {
            if let Some(leaf) = node.as_ref().downcast_ref::<BatchExec>() {
                found = Some(leaf.projection().map(<[usize]>::to_vec));
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        found.flatten()
    }

    /// A copy of the plan whose leaf holds `batch`. Only the nodes from the leaf to the root are
    /// rebuilt (reusing their cached properties); nothing is re-planned.
    pub(super) fn with_batch(
        &self,
        batch: RecordBatch,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let transformed = Arc::clone(&self.plan).transform_up(|node| {
            match node.as_ref().downcast_ref::<BatchExec>() {
                Some(leaf) => Ok(Transformed::yes(
                    Arc::new(leaf.with_batch(batch.clone())?) as Arc<dyn ExecutionPlan>
                )),
                None => Ok(Transformed::no(node)),
            }
        })?;
        Ok(transformed.data)
    }
}

/// Plans the query once: logical plan, checks, row-id rewrite, physical plan.
pub(super) async fn plan_query(
    sql: &str,
    input_schema: &SchemaRef,
) -> Result<(Query, SchemaRef), SqlError> {
    let mut fields: Vec<Field> = input_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(ROW_ID, DataType::UInt32, false));
    let scan_schema = Arc::new(Schema::new(fields));

    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(DATAFUSION_BATCH_SIZE)
        .with_repartition_joins(false)
        .with_repartition_aggregations(false)
        .with_repartition_windows(false)
        .with_repartition_sorts(false)
        .with_repartition_file_scans(false)
        .with_round_robin_repartition(false)
        .with_information_schema(false);
    let ctx = SessionContext::new_with_config(config);
    ctx.register_table(
        INPUT_TABLE,
        Arc::new(BatchTable {
            schema: scan_schema.clone(),
        }),
    )
    .map_err(|e| SqlError::Internal(e.to_string()))?;

    let state = ctx.state();
    let logical = state
        .create_logical_plan(sql)
        .await
        .map_err(|e| SqlError::Plan(error_message(&e)))?;
    check_stateless(&logical)?;
    let logical = carry_row_id(logical)?;

    let mut plan = state
        .create_physical_plan(&logical)
        .await
        .map_err(|e| SqlError::Plan(error_message(&e)))?;
    if plan.output_partitioning().partition_count() != 1 {
        plan = Arc::new(CoalescePartitionsExec::new(plan));
    }

    let plan_schema = plan.schema();
    let row_column = match plan_schema.index_of(ROW_ID) {
        Ok(i) if plan_schema.field(i).data_type() == &DataType::UInt32 => i,
        _ => {
            return Err(SqlError::Internal(format!(
                "the planned query lost the `{ROW_ID}` column"
            )));
        }
    };
    let output_columns: Vec<usize> = (0..plan_schema.fields().len())
        .filter(|&i| i != row_column)
        .collect();
    let output_schema = Arc::new(
        plan_schema
            .project(&output_columns)
            .map_err(|e| SqlError::Internal(e.to_string()))?,
    );
    if output_schema.fields().is_empty() {
        return Err(SqlError::Plan("the query selects no columns".into()));
    }
    let query = Query {
        plan,
        task_ctx: ctx.task_ctx(),
        scan_schema,
        row_column,
        output_columns,
    };
    Ok((query, output_schema))
}
