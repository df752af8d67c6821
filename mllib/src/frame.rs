//! The seam between mllib and the session: what mllib needs from a DataFrame (the facade's
//! `DataFrame` implements it), so that mllib depends on the engine and driver only.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::physical_plan::ExecutionPlan;
use ember_driver::JobMetrics;

use crate::error::Result;

/// Builds a plan on top of another (a tree aggregation's partial or merge step).
pub type PlanFn<'a> =
    dyn Fn(Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> + Send + Sync + 'a;

/// A lazy, distributed DataFrame of an Ember session, as mllib uses it.
#[async_trait]
pub trait Frame: Clone + Send + Sync + Sized + 'static {
    /// The DataFusion logical DataFrame (building further expressions on it is free).
    fn logical(&self) -> &datafusion::dataframe::DataFrame;

    /// A frame of the same session over `df`.
    fn derive(&self, df: datafusion::dataframe::DataFrame) -> Self;

    /// The schema.
    fn schema(&self) -> SchemaRef {
        Arc::new(self.logical().schema().as_arrow().clone())
    }

    /// Runs the query on the cluster and returns every row.
    async fn collect_batches(&self) -> Result<Vec<RecordBatch>>;

    /// Hands a training run's progress (`TrainingPass`, `TrainingEnded`) to whoever watches
    /// the session: the driver's event stream, event log and web UI. By default nothing.
    fn record_training(&self, _event: ember_driver::SchedulerEvent) {}

    /// The same rows, kept in the executors' memory once computed (a lineage dataset: a
    /// lost block is recomputed).
    async fn cached(&self) -> Result<Self>;

    /// Drops the cached blocks of a frame made by [`Frame::cached`].
    async fn uncache(self) -> Result<()>;

    /// Tree aggregation: `partial` turns the frame's physical plan (one output partition
    /// per input partition) into one partial result per partition, `merge` merges the
    /// partials its input reads; see the driver's `tree_aggregate` for the tree's shape.
    async fn tree_aggregate(
        &self,
        partial: &PlanFn<'_>,
        merge: &PlanFn<'_>,
        fan_in: usize,
    ) -> Result<(Vec<RecordBatch>, JobMetrics)>;
}
