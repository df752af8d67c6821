//! DataFrame: a lazy, immutable query over a session's data. Transformations build a
//! DataFusion logical plan; actions (`collect`, `count`, `show`, `write_parquet`) run it as
//! a job on the cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, Int64Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, JoinType, SortExpr};
use datafusion::prelude::lit;
use ember_driver::DriverError;
use ember_engine::{DatasetId, EngineError};

use crate::cached_table::CachedTable;
use crate::error::{Error, Result};
use crate::session::Session;

/// Rows printed by [`DataFrame::show`].
const SHOW_ROWS: usize = 20;

/// A lazy query. Methods take `self` and return a new DataFrame; nothing runs until an
/// action is called.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> ember::Result<()> {
/// use ember::prelude::*;
/// let session = Session::local(2).await?;
/// let df = session
///     .sql("SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c')) AS t(id, name)")
///     .await?
///     .filter(col("id").gt(lit(1)))?
///     .select(vec![col("name")])?;
/// assert_eq!(df.count().await?, 2);
/// # Ok(()) }
/// ```
#[must_use]
#[derive(Debug, Clone)]
pub struct DataFrame {
    session: Session,
    inner: datafusion::dataframe::DataFrame,
    /// Set on a cached DataFrame: the dataset holding its blocks, and the plan it was
    /// cached from (restored by `unpersist`).
    cached: Option<(DatasetId, Box<datafusion::dataframe::DataFrame>)>,
    /// What its jobs are called in the snapshot and the event log (the SQL text for a
    /// query from [`Session::sql`]).
    description: Option<Arc<str>>,
}

impl DataFrame {
    pub(crate) fn new(session: Session, inner: datafusion::dataframe::DataFrame) -> Self {
        Self {
            session,
            inner,
            cached: None,
            description: None,
        }
    }

    /// Names the jobs this DataFrame runs (in the snapshot, the event log and the UI).
    pub fn with_description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(Arc::from(text.into()));
        self
    }

    /// The description of a job running `action` on this DataFrame.
    pub(crate) fn job_description(&self, action: &str) -> ember_driver::JobDescription {
        let text = match &self.description {
            Some(text) => format!("{action}: {text}"),
            None => {
                let plan = self.inner.logical_plan().display().to_string();
                format!("{action}: {plan}")
            }
        };
        self.session.job_description(text)
    }

    fn derive(&self, inner: datafusion::dataframe::DataFrame) -> Self {
        Self::new(self.session.clone(), inner)
    }

    /// The DataFusion DataFrame underneath (its logical plan).
    pub fn inner(&self) -> &datafusion::dataframe::DataFrame {
        &self.inner
    }

    /// The session this DataFrame belongs to.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The output schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.inner.schema().as_arrow().clone())
    }

    /// Keeps rows where `predicate` is true.
    pub fn filter(self, predicate: Expr) -> Result<Self> {
        Ok(self.derive(self.inner.clone().filter(predicate)?))
    }

    /// Computes `exprs` for every row.
    pub fn select(self, exprs: Vec<Expr>) -> Result<Self> {
        Ok(self.derive(self.inner.clone().select(exprs)?))
    }

    /// Keeps the named columns.
    pub fn select_columns(self, columns: &[&str]) -> Result<Self> {
        Ok(self.derive(self.inner.clone().select_columns(columns)?))
    }

    /// Adds (or replaces) column `name` computed by `expr`.
    pub fn with_column(self, name: &str, expr: Expr) -> Result<Self> {
        Ok(self.derive(self.inner.clone().with_column(name, expr)?))
    }

    /// Skips `skip` rows and keeps at most `fetch`.
    pub fn limit(self, skip: usize, fetch: Option<usize>) -> Result<Self> {
        Ok(self.derive(self.inner.clone().limit(skip, fetch)?))
    }

    /// Groups by `group` and computes `aggregates` per group (partial aggregation runs on
    /// the executors, the final one on the driver).
    pub fn aggregate(self, group: Vec<Expr>, aggregates: Vec<Expr>) -> Result<Self> {
        Ok(self.derive(self.inner.clone().aggregate(group, aggregates)?))
    }

    /// Sorts by `exprs`.
    pub fn sort(self, exprs: Vec<SortExpr>) -> Result<Self> {
        Ok(self.derive(self.inner.clone().sort(exprs)?))
    }

    /// Joins with `right` on equal values of `left_on` / `right_on` (column names, pairwise),
    /// keeping rows as `join_type` says. Large inputs are hash-partitioned on the keys by a
    /// shuffle; a side smaller than the broadcast threshold is sent whole to every task.
    pub fn join(
        self,
        right: DataFrame,
        join_type: JoinType,
        left_on: &[&str],
        right_on: &[&str],
    ) -> Result<Self> {
        Ok(self.derive(
            self.inner
                .clone()
                .join(right.inner, join_type, left_on, right_on, None)?,
        ))
    }

    /// Joins with `right` where `on` holds (equalities in `on` become hash-join keys).
    pub fn join_on(self, right: DataFrame, join_type: JoinType, on: Vec<Expr>) -> Result<Self> {
        Ok(self.derive(self.inner.clone().join_on(right.inner, join_type, on)?))
    }

    /// Keeps one row of each set of equal rows.
    pub fn distinct(self) -> Result<Self> {
        Ok(self.derive(self.inner.clone().distinct()?))
    }

    /// The rows of this DataFrame followed by those of `other` (same columns), duplicates
    /// kept (SQL `UNION ALL`).
    pub fn union(self, other: DataFrame) -> Result<Self> {
        Ok(self.derive(self.inner.clone().union(other.inner)?))
    }

    /// Like [`DataFrame::union`], without duplicate rows (SQL `UNION`).
    pub fn union_distinct(self, other: DataFrame) -> Result<Self> {
        Ok(self.derive(self.inner.clone().union_distinct(other.inner)?))
    }

    /// Adds a column per window expression (for example
    /// `row_number().partition_by(vec![col("k")]).order_by(..).build()?`); rows are
    /// hash-partitioned by the window's partition keys.
    pub fn window(self, exprs: Vec<Expr>) -> Result<Self> {
        Ok(self.derive(self.inner.clone().window(exprs)?))
    }

    /// How the query runs: DataFusion's logical and physical plans, then Ember's stages
    /// (each a dataset of the lineage graph with its partition count, shuffle map sides
    /// marked with their reduce partition count) in the order they run.
    pub async fn explain(&self) -> Result<String> {
        let batches = self.inner.clone().explain(false, false)?.collect().await?;
        let datafusion = arrow::util::pretty::pretty_format_batches(&batches)
            .map_err(EngineError::from)?
            .to_string();
        let plan = self.inner.clone().create_physical_plan().await?;
        let stages = self.session.explain_stages(plan)?;
        Ok(format!("{datafusion}\n{stages}"))
    }

    /// Plans the query and cuts it into Ember's stages as running it would, then checks
    /// that every stage, as an executor decodes it, keeps DataFusion's physical-plan
    /// invariants (each operator's required input partitioning and ordering); runs
    /// nothing.
    ///
    /// # Errors
    ///
    /// A planning error, or an internal error naming the stage that breaks an invariant.
    pub async fn check_stages(&self) -> Result<()> {
        let plan = self.inner.clone().create_physical_plan().await?;
        let ctx = self.inner.clone().task_ctx();
        Ok(ember_driver::planner::check_stages(plan, &ctx)?)
    }

    /// Runs the query on the cluster and returns every row.
    pub async fn collect(&self) -> Result<Vec<RecordBatch>> {
        self.collect_as("collect").await
    }

    /// Runs the query as a job described as `action`. A query whose task runs out of
    /// operator memory is planned again, leaner (see [`crate::memory_plan`]), up to
    /// [`crate::memory_plan::MAX_REPLANS`] times; the job metrics list what changed.
    async fn collect_as(&self, action: &str) -> Result<Vec<RecordBatch>> {
        let started = std::time::Instant::now();
        let description = self.job_description(action);
        let mut inner = self.inner.clone();
        let mut replanned = Vec::new();
        loop {
            let plan = inner.clone().create_physical_plan().await?;
            let error = match self
                .session
                .run_collect_planned(Arc::clone(&plan), started, &description)
                .await
            {
                Err(Error::Driver(e @ DriverError::OutOfMemory { .. })) => e,
                Ok(batches) => {
                    if !replanned.is_empty() {
                        self.session.amend_metrics(|m| m.replanned = replanned);
                    }
                    return Ok(batches);
                }
                Err(e) => return Err(e),
            };
            let leaner = (replanned.len() < crate::memory_plan::MAX_REPLANS)
                .then(|| crate::memory_plan::leaner(inner.clone(), &plan))
                .flatten();
            let Some((df, change)) = leaner else {
                return Err(error.into());
            };
            tracing::warn!(error = %error, change = %change, "query ran out of operator memory; planning it again");
            replanned.push(change);
            inner = df;
        }
    }

    /// Runs the query on the cluster and returns its rows as the driver produces them,
    /// never holding the whole result: a consumer that writes rows out as they come can
    /// take a result larger than the driver's memory. Dropping the stream cancels the job;
    /// the job's metrics are recorded once it ends. (Unlike [`DataFrame::collect`], a
    /// query that runs out of operator memory is not planned again here: rows may already
    /// have been handed on.)
    pub async fn execute_stream(&self) -> Result<ResultStream> {
        let started = std::time::Instant::now();
        let plan = self.inner.clone().create_physical_plan().await?;
        self.session
            .run_stream_planned(plan, started, &self.job_description("execute_stream"))
            .await
    }

    /// Number of rows, counted on the executors.
    pub async fn count(&self) -> Result<usize> {
        let counted = self
            .inner
            .clone()
            .aggregate(vec![], vec![count(lit(1)).alias("count")])?;
        let mut counted = self.derive(counted);
        counted.description = self.description.clone();
        let batches = counted.collect_as("count").await?;
        let total = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .filter_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .map(|a| a.value(0))
            })
            .sum::<i64>();
        Ok(total as usize)
    }

    /// Prints the first 20 rows as a table.
    pub async fn show(&self) -> Result<()> {
        println!("{}", self.to_table_string(SHOW_ROWS).await?);
        Ok(())
    }

    /// The first `rows` rows formatted as a table.
    pub async fn to_table_string(&self, rows: usize) -> Result<String> {
        let batches = self.clone().limit(0, Some(rows))?.collect().await?;
        Ok(arrow::util::pretty::pretty_format_batches(&batches)
            .map_err(EngineError::from)?
            .to_string())
    }

    /// Writes the result as Parquet files under `dir`, one per partition, written by the
    /// executors in parallel. Files appear only when every partition succeeded; a failed
    /// job leaves no output behind. `dir` must be empty or absent.
    pub async fn write_parquet(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))?;
            if entries.next().is_some() {
                return Err(Error::Path {
                    path: dir.to_path_buf(),
                    message: "output directory is not empty".into(),
                });
            }
        }
        let staging = dir.join(format!("_ember_staging_{}", std::process::id()));
        std::fs::create_dir_all(&staging).map_err(|e| EngineError::io(&staging, e))?;
        let plan = self.inner.clone().create_physical_plan().await?;
        let description = self.job_description(&format!("write_parquet {}", dir.display()));
        let written = self
            .session
            .run_write_parquet(plan, &staging, &description)
            .await;
        let result = written.and_then(|files| {
            let mut done = Vec::with_capacity(files.len());
            for f in files {
                let target = dir.join(f.file_name().unwrap_or_default());
                if !f.exists() {
                    return Err(Error::Path {
                        path: f.clone(),
                        message: "an executor wrote this file, but the driver's host does not \
                                  see it: in a cluster across hosts, write to a filesystem every \
                                  executor and the driver share (NFS, a mounted bucket)"
                            .into(),
                    });
                }
                std::fs::rename(&f, &target).map_err(|e| EngineError::io(&target, e))?;
                done.push(target);
            }
            Ok(done)
        });
        let _ = std::fs::remove_dir_all(&staging);
        result
    }

    /// Marks this DataFrame's result to be kept by the executors once computed (lazily, by
    /// the next action): in memory, and on the executor's disk for a partition that does
    /// not fit (Spark's `MEMORY_AND_DISK`, its default for DataFrames). Later actions read
    /// the cached blocks instead of the sources; a block lost with its executor, or
    /// evicted from memory to make room for newer ones, is recomputed from lineage.
    pub async fn cache(self) -> Result<Self> {
        if self.cached.is_some() {
            return Ok(self);
        }
        let plan = self.inner.clone().create_physical_plan().await?;
        let (dataset, properties) = self.session.persist(plan).await?;
        let table = CachedTable {
            dataset,
            properties,
        };
        let df = self.session.context().read_table(Arc::new(table))?;
        Ok(Self {
            session: self.session.clone(),
            inner: df,
            cached: Some((dataset, Box::new(self.inner))),
            description: self.description.clone(),
        })
    }

    /// Same as [`DataFrame::cache`] (Ember has one storage level: memory, then disk).
    pub async fn persist(self) -> Result<Self> {
        self.cache().await
    }

    /// Drops the cached blocks from every executor and returns the uncached DataFrame.
    /// Clones of the cached DataFrame and views registered from it keep working: they
    /// compute the data again when used, without caching it.
    pub async fn unpersist(self) -> Result<Self> {
        match self.cached {
            Some((dataset, original)) => {
                self.session.driver().unpersist_dataset(dataset).await?;
                let mut df = Self::new(self.session, *original);
                df.description = self.description;
                Ok(df)
            }
            None => Ok(self),
        }
    }

    /// The cached dataset behind this DataFrame, if it is cached.
    pub fn cached_dataset(&self) -> Option<DatasetId> {
        self.cached.as_ref().map(|(d, _)| *d)
    }
}

/// A query's rows as they arrive from the driver ([`DataFrame::execute_stream`]).
#[derive(Debug)]
pub struct ResultStream {
    pub(crate) inner: ember_driver::JobStream,
}

impl ResultStream {
    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

impl futures::Stream for ResultStream {
    type Item = Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(Error::from)))
    }
}
