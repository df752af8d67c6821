//! Cached table: how a cached DataFrame appears to DataFusion's planner, as a table whose
//! scan reads the cached dataset's blocks.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session as CatalogSession;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, PlanProperties};
use ember_engine::block_read::BlockReadExec;
use ember_engine::DatasetId;

/// A cached dataset seen as a table.
#[derive(Debug)]
pub(crate) struct CachedTable {
    pub(crate) dataset: DatasetId,
    /// Properties of the plan that computes the dataset: its blocks keep its partitioning
    /// and ordering.
    pub(crate) properties: PlanProperties,
}

#[async_trait]
impl TableProvider for CachedTable {
    fn schema(&self) -> SchemaRef {
        self.properties.eq_properties.schema().clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let read: Arc<dyn ExecutionPlan> =
            Arc::new(BlockReadExec::new(self.dataset, self.properties.clone()));
        let Some(projection) = projection else {
            return Ok(read);
        };
        let schema = self.schema();
        let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = projection
            .iter()
            .map(|&i| {
                let name = schema.field(i).name().clone();
                (
                    Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                    name,
                )
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, read)?))
    }
}
