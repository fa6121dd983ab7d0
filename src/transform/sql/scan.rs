//! The `input` table: its `TableProvider` and the leaf `ExecutionPlan` holding the current
//! batch.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

use super::INPUT_TABLE;

/// The `input` table: a schema only; its scan is a [`BatchExec`] that is given a batch per
/// execution.
#[derive(Debug)]
pub(super) struct BatchTable {
    pub(super) schema: SchemaRef,
}

type ScanFuture<'a> =
    Pin<Box<dyn Future<Output = datafusion::common::Result<Arc<dyn ExecutionPlan>>> + Send + 'a>>;

// `TableProvider` is an `async_trait` trait; this is the method it expects, written out by
// hand so the crate does not need the macro.
impl TableProvider for BatchTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    fn scan<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 self,
        _state: &'life1 dyn Session,
        projection: Option<&'life2 Vec<usize>>,
        _filters: &'life3 [Expr],
        _limit: Option<usize>,
    ) -> ScanFuture<'async_trait>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        let result = BatchExec::try_new(self.schema.clone(), projection.cloned())
            .map(|exec| Arc::new(exec) as Arc<dyn ExecutionPlan>);
        Box::pin(async move { result })
    }
}

/// Leaf of the physical plan: yields the one batch it holds (projected), once per execution.
#[derive(Debug, Clone)]
pub(super) struct BatchExec {
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
    batch: Option<RecordBatch>,
}

impl BatchExec {
    fn try_new(
        table_schema: SchemaRef,
        projection: Option<Vec<usize>>,
    ) -> datafusion::common::Result<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(table_schema.project(p)?),
            None => table_schema,
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(BatchExec {
            projection,
            properties: Arc::new(properties),
            batch: None,
        })
    }

    /// Columns of the table schema this scan reads (`None`: all).
    pub(super) fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }

    /// The same node (sharing its properties) holding `batch`, a batch of the full table
    /// schema.
    pub(super) fn with_batch(&self, batch: RecordBatch) -> datafusion::common::Result<Self> {
        let batch = match &self.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        };
        Ok(BatchExec {
            projection: self.projection.clone(),
            properties: Arc::clone(&self.properties),
            batch: Some(batch),
        })
    }
}

impl DisplayAs for BatchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BatchExec: table={INPUT_TABLE}")
    }
}

impl ExecutionPlan for BatchExec {
    fn name(&self) -> &str {
        "BatchExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::common::Result<TreeNodeRecursion>,
    ) -> datafusion::common::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "BatchExec has one partition, asked for {partition}"
            )));
        }
        let data: Vec<RecordBatch> = self.batch.iter().cloned().collect();
        Ok(Box::pin(MemoryStream::try_new(data, self.schema(), None)?))
    }
}
