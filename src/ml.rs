//! Machine learning on Ember: mllib's pipelines, features, models and evaluators over the
//! facade's [`DataFrame`], which is mllib's [`Frame`].
//!
//! ```no_run
//! use ember::prelude::*;
//! use ember::ml::{LogisticRegression, Pipeline, VectorAssembler, TransformerExt};
//!
//! # #[tokio::main] async fn main() -> ember::Result<()> {
//! ember::run_executor_if_requested();
//! let session = Session::local_cluster(2).await?;
//! let df = session.read_parquet("data/train").await?;
//! let model = Pipeline::new()
//!     .transformer(VectorAssembler::new(["x1", "x2"]))
//!     .estimator(LogisticRegression::new().reg_param(0.01))
//!     .fit(&df)
//!     .await?;
//! model.transform(&df)?.show().await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::physical_plan::ExecutionPlan;
use ember_driver::{DriverError, JobMetrics};
use ember_engine::lineage::{Dataset, Persistence};
use ember_mllib::frame::PlanFn;

use crate::dataframe::DataFrame;
use crate::error::Error;

pub use ember_mllib::aggregate::DEFAULT_FAN_IN;
pub use ember_mllib::classification::{
    Family, LogisticRegression, LogisticRegressionModel, LogisticRegressionParams, Solver,
};
pub use ember_mllib::clustering::{InitMode, KMeans, KMeansModel, KMeansParams};
pub use ember_mllib::evaluation::{
    BinaryClassificationEvaluator, BinaryMetric, ClusteringEvaluator,
    MulticlassClassificationEvaluator, MulticlassMetric, RegressionEvaluator, RegressionMetric,
};
pub use ember_mllib::feature::{
    Imputer, ImputerModel, ImputerStrategy, MinMaxScaler, OneHotEncoder, OneHotEncoderModel,
    ScalerModel, StandardScaler, StringIndexer, StringIndexerModel, VectorAssembler,
};
pub use ember_mllib::pipeline::{Estimator, PipelineModel, Transformer, TransformerExt};
pub use ember_mllib::regression::{
    LinearRegression, LinearRegressionModel, LinearRegressionParams, RegressionSolver,
};
pub use ember_mllib::vector::vector_type;
pub use ember_mllib::{kernel, optim, persist};
pub use ember_mllib::{Frame, HandleInvalid, MlError, TrainingSummary};

/// A pipeline of stages over Ember DataFrames.
pub type Pipeline = ember_mllib::Pipeline<DataFrame>;

fn to_ml(e: Error) -> MlError {
    match e {
        Error::Ml(e) => e,
        Error::Engine(e) => MlError::Engine(e),
        Error::Driver(e) => MlError::Driver(e),
        other => MlError::Session(Box::new(other)),
    }
}

#[async_trait]
impl Frame for DataFrame {
    fn logical(&self) -> &datafusion::dataframe::DataFrame {
        self.inner()
    }

    fn record_training(&self, event: ember_driver::SchedulerEvent) {
        // Fire and forget: progress must never slow or fail training.
        let driver = std::sync::Arc::clone(self.session().driver());
        tokio::spawn(async move { driver.record_training(event).await });
    }

    fn derive(&self, df: datafusion::dataframe::DataFrame) -> Self {
        DataFrame::new(self.session().clone(), df)
    }

    async fn collect_batches(&self) -> ember_mllib::Result<Vec<RecordBatch>> {
        self.collect().await.map_err(to_ml)
    }

    async fn cached(&self) -> ember_mllib::Result<Self> {
        self.clone().cache().await.map_err(to_ml)
    }

    async fn uncache(self) -> ember_mllib::Result<()> {
        self.unpersist().await.map(|_| ()).map_err(to_ml)
    }

    async fn tree_aggregate(
        &self,
        partial: &PlanFn<'_>,
        merge: &PlanFn<'_>,
        fan_in: usize,
    ) -> ember_mllib::Result<(Vec<RecordBatch>, JobMetrics)> {
        let started = std::time::Instant::now();
        let plan = self
            .inner()
            .clone()
            .create_physical_plan()
            .await
            .map_err(MlError::from)?;
        let session = self.session();
        let driver = session.driver();
        let (cut, stages) = driver.plan_stages(plan)?;
        let leaf = Dataset::try_new(driver.next_dataset_id(), partial(cut)?, Persistence::Job)?;
        let planning = started.elapsed();
        let merge = |input: Arc<dyn ExecutionPlan>| {
            merge(input).map_err(|e| DriverError::Internal(format!("merge plan: {e}")))
        };
        let description = self.job_description("tree aggregation (mllib)");
        let (batches, mut metrics) = driver
            .tree_aggregate(leaf, stages, &merge, fan_in, &description)
            .await?;
        metrics.planning = planning;
        session.record_metrics(metrics.clone());
        Ok((batches, metrics))
    }
}

impl DataFrame {
    /// Splits the rows into parts with the given relative `weights`, by a hash of each
    /// row's values and `seed`: the same rows land in the same part on every run and after
    /// any recomputation (identical rows always land together).
    ///
    /// # Errors
    ///
    /// A weight is negative or not finite, or they sum to zero.
    pub fn random_split(&self, weights: &[f64], seed: u64) -> crate::Result<Vec<DataFrame>> {
        Ok(ember_mllib::feature::random_split(self, weights, seed)?)
    }
}
