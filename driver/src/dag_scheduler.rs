//! DAG scheduler: a job's own walk over its lineage. It materializes the datasets the job
//! reads, stage by stage (one task per missing partition, handed to the scheduler loop),
//! then runs the job's final fragment on the driver. Independent inputs (the two sides of
//! a join) are materialized at once, so their stages share the executors' slots; an input
//! two branches need is computed once.
//!
//! ```text
//!   dependencies materialized? --no--> materialize them first (recursively, together)
//!        | yes
//!   submit the stage to the scheduler loop, await its report
//!        |-- complete ----------------> record the blocks' locations
//!        |-- input block missing -----> the lost input is recomputed and the stage
//!        |                              resubmitted (up to the stage attempt limit)
//!        |-- failed / cancelled ------> the job ends with the error
//! ```
//!
//! Task placement, retries, speculation, executor loss and cancellation belong to the
//! loop (`scheduler`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::replace_children_if_necessary;
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use ember_engine::block_read::BlockReadExec;
use ember_engine::block_read::{task_context_with_reader, BlockReader};
use ember_engine::input_locations::InputLocationsBuilder;
use ember_engine::join_filter::{with_build_side_bounds, BuildBounds, FilterInput};
use ember_engine::lineage::{all_block_reads, block_dependencies, Dataset, Persistence};
use ember_engine::plan_codec::encode_plan;
use ember_engine::proto::{InputLocations, LaunchTaskRequest};
use ember_engine::{BlockId, DatasetId, EngineError, ExecutorId, JobId};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::block_fetch::DriverBlockReader;
use crate::error::{DriverError, Result};
use crate::events::JobStatus;
use crate::metrics::JobMetrics;
use crate::planner::describe_stages;
use crate::scheduler::{OutputKind, StageEnd, StageSpec};
use crate::{Driver, JobDescription};

/// How many result batches the driver produces ahead of a caller reading a job's stream.
pub const RESULT_BATCHES_IN_FLIGHT: usize = 2;

/// Where the final fragment's batches go.
trait BatchSink: Send {
    /// Takes one batch; `false` when no more are wanted.
    fn accept(&mut self, batch: RecordBatch) -> impl std::future::Future<Output = bool> + Send;
}

impl BatchSink for Vec<RecordBatch> {
    async fn accept(&mut self, batch: RecordBatch) -> bool {
        self.push(batch);
        true
    }
}

impl BatchSink for mpsc::Sender<Result<RecordBatch>> {
    async fn accept(&mut self, batch: RecordBatch) -> bool {
        self.send(Ok(batch)).await.is_ok()
    }
}

/// A job's result batches as the driver produces them ([`Driver::execute_stream`]); the
/// last item is the job's error if it failed.
#[derive(Debug)]
pub struct JobStream {
    schema: SchemaRef,
    batches: ReceiverStream<Result<RecordBatch>>,
}

impl JobStream {
    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

impl futures::Stream for JobStream {
    type Item = Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.batches).poll_next(cx)
    }
}

/// Bookkeeping of one running job. Dropped before [`Driver::end_job`] (the caller stopped
/// waiting), it cancels the job's tasks and removes its blocks in the background.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: JobId,
    driver: Arc<Driver>,
    ended: bool,
    /// Datasets made for this job alone: dropped from the lineage graph when it ends.
    pub(crate) temporary: Vec<DatasetId>,
    /// What the job's concurrent branches record.
    book: std::sync::Mutex<Book>,
    /// One lock per dataset being materialized: a branch that needs a dataset another
    /// branch is computing waits for it instead of running its stage again.
    materializing: std::sync::Mutex<HashMap<DatasetId, Arc<tokio::sync::Mutex<()>>>>,
    started: Instant,
}

/// The part of a job's bookkeeping its branches update as their stages end.
#[derive(Debug, Default)]
pub(crate) struct Book {
    pub(crate) metrics: JobMetrics,
    /// Job-scoped datasets whose blocks this job made: removed when it ends.
    materialized: Vec<DatasetId>,
    /// Cached datasets whose resident blocks were already counted as cache hits.
    cache_counted: Vec<DatasetId>,
    /// Job-scoped datasets the job reads, by how many of their readers (stages of
    /// job-scoped datasets, the final fragment) have not finished: one that reaches zero
    /// is released at once instead of at the job's end.
    readers: HashMap<DatasetId, usize>,
    /// Job-scoped datasets whose stage finished, so their inputs were counted down.
    consumed: Vec<DatasetId>,
    /// Join filters the driver has filled in (or given up on), by expression id.
    filters_tried: Vec<u64>,
}

impl Job {
    /// The job's bookkeeping, locked (never held across an await).
    pub(crate) fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The job's counters so far.
    pub(crate) fn metrics(&self) -> JobMetrics {
        self.book().metrics.clone()
    }

    /// The lock a branch holds while it materializes `id`.
    fn dataset_lock(&self, id: DatasetId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.materializing.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(id).or_default())
    }

    /// The job-scoped datasets to drop when the job ends: those whose blocks it made, and
    /// those made for it alone.
    fn scoped_datasets(&self) -> Vec<DatasetId> {
        let mut datasets = self.book().materialized.clone();
        for d in &self.temporary {
            if !datasets.contains(d) {
                datasets.push(*d);
            }
        }
        datasets
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let driver = Arc::clone(&self.driver);
        let job = self.id;
        let scoped = self.scoped_datasets();
        let temporary = self.temporary.clone();
        runtime.spawn(async move {
            let reason = "the caller stopped waiting for the job".to_string();
            // Blocks go only once no task of the job can store one any more.
            let _ = driver.scheduler.cancel(Some(job), reason.clone()).await;
            driver
                .release_job(job, &scoped, &temporary, JobStatus::Cancelled, Some(reason))
                .await;
        });
    }
}

/// Where a stage's output goes.
#[derive(Debug, Clone)]
enum StageOutput {
    /// Blocks in the executors' block managers.
    Store,
    /// One Parquet file per partition under this directory.
    Parquet(PathBuf),
}

/// Why a stage stopped early.
#[derive(Debug)]
enum StageFailure {
    /// A task could not read an input block: recompute it, then resubmit the stage.
    FetchFailed {
        block: BlockId,
        executor: ExecutorId,
        reason: String,
    },
    /// The job cannot succeed.
    Fatal(DriverError),
}

impl From<DriverError> for StageFailure {
    fn from(e: DriverError) -> Self {
        StageFailure::Fatal(e)
    }
}

/// Resubmission budget of one dataset (or of the driver's final fragment).
///
/// Losing an executor is a failure and counts against the stage attempt limit. An evicted
/// input is not: recomputing it is the normal price of a small memory limit. Evictions still
/// have a budget so a stage whose inputs can never all fit in memory fails instead of
/// looping.
struct Retries {
    max_attempts: u32,
    attempts: u32,
    eviction_budget: usize,
    evictions: usize,
}

impl Retries {
    fn new(max_attempts: u32, partitions: usize) -> Self {
        Self {
            max_attempts,
            attempts: 1,
            eviction_budget: max_attempts as usize + 2 * partitions.max(1),
            evictions: 0,
        }
    }

    fn record(&mut self, executor_lost: bool, dataset: DatasetId, cause: String) -> Result<()> {
        if executor_lost {
            self.attempts += 1;
        } else {
            self.evictions += 1;
        }
        if self.attempts > self.max_attempts || self.evictions > self.eviction_budget {
            return Err(DriverError::StageAttemptsExhausted {
                dataset,
                attempts: self.attempts + self.evictions as u32,
                last_cause: cause,
            });
        }
        Ok(())
    }
}

/// The most bytes of a join's build side the driver reads to fill in a join filter of an
/// earlier stage (a broadcast build side is far smaller; a larger one is not worth the
/// driver's time, and its filter stays open).
pub const FILTER_BUILD_SIDE_LIMIT: usize = 64 << 20;

/// Adds what the driver read itself since `started` (its final fragment, a join filter's
/// build side) to the job's metrics.
fn count_driver_reads(job: &Job, reader: &DriverBlockReader, started: Instant) {
    let metrics = &mut job.book().metrics;
    metrics.driver_time += started.elapsed();
    metrics.blocks_read_remote += reader.blocks.load(Ordering::Relaxed);
    metrics.bytes_fetched += reader.fetched.bytes.load(Ordering::Relaxed);
    metrics.bytes_mapped += reader.fetched.mapped.load(Ordering::Relaxed);
}

/// Name of the file partition `p` of a written dataset goes to.
pub fn part_file_name(partition: u32) -> String {
    format!("part-{partition:05}.parquet")
}

impl Driver {
    /// Registers a job and its temporary datasets with the scheduler.
    pub(crate) async fn new_job(
        self: &Arc<Self>,
        temporary: Vec<Dataset>,
        description: &JobDescription,
    ) -> Job {
        let mut ids = Vec::with_capacity(temporary.len());
        for d in temporary {
            ids.push(d.id());
            self.register_dataset(d);
        }
        let id = self.next_job_id();
        self.scheduler.job_started(id, description).await;
        Job {
            id,
            driver: Arc::clone(self),
            ended: false,
            temporary: ids,
            book: std::sync::Mutex::new(Book {
                metrics: JobMetrics {
                    job: Some(id),
                    ..JobMetrics::default()
                },
                ..Book::default()
            }),
            materializing: std::sync::Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// Ends a job: drops its job-scoped blocks and temporary datasets and tells the
    /// scheduler how it went.
    pub(crate) async fn end_job<T>(&self, job: &mut Job, result: &Result<T>) {
        job.ended = true;
        job.book().metrics.duration = job.started.elapsed();
        let (status, error) = match result {
            Ok(_) => (JobStatus::Succeeded, None),
            Err(DriverError::Cancelled { reason, .. }) => {
                (JobStatus::Cancelled, Some(reason.clone()))
            }
            Err(e) => (JobStatus::Failed, Some(e.to_string())),
        };
        if let Some(reason) = &error {
            // A branch that failed leaves its sibling branches' stages running: stop them
            // before their blocks are removed.
            let _ = self.scheduler.cancel(Some(job.id), reason.clone()).await;
        }
        self.release_job(
            job.id,
            &job.scoped_datasets(),
            &job.temporary,
            status,
            error,
        )
        .await;
    }

    /// What ending a job releases, however it ends: the blocks of its job-scoped
    /// datasets, its temporary datasets in the lineage graph; then the scheduler is told.
    async fn release_job(
        &self,
        job: JobId,
        scoped: &[DatasetId],
        temporary: &[DatasetId],
        status: JobStatus,
        error: Option<String>,
    ) {
        self.drop_blocks(scoped).await;
        for d in scoped {
            self.forget_dataset_blocks(*d);
        }
        for d in temporary {
            self.forget_dataset(*d);
        }
        self.scheduler.job_ended(job, status, error).await;
    }

    /// Runs `root` (a fragment whose leaves read blocks) on the driver after materializing
    /// every dataset it reads; `temporary` are datasets made for this job alone.
    ///
    /// # Errors
    ///
    /// A task failed for good (the error names stage, partition, executor and cause), no
    /// executor was available, inputs kept getting lost, or the job was cancelled.
    pub async fn collect(
        self: &Arc<Self>,
        root: Arc<dyn ExecutionPlan>,
        temporary: Vec<Dataset>,
        description: &JobDescription,
    ) -> Result<(Vec<RecordBatch>, JobMetrics)> {
        let description = description.planned(|| describe_stages(&root, &temporary));
        let mut job = self.new_job(temporary, &description).await;
        let result = self.collect_in(&job, root).await;
        self.end_job(&mut job, &result).await;
        result.map(|batches| (batches, job.metrics()))
    }

    pub(crate) async fn collect_in(
        self: &Arc<Self>,
        job: &Job,
        root: Arc<dyn ExecutionPlan>,
    ) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        self.run_final(job, root, &mut batches).await?;
        Ok(batches)
    }

    /// Runs `root` on the driver after materializing every dataset it reads, handing its
    /// batches to `sink` as they come. An input lost before the first batch was handed on
    /// is recomputed and the fragment run again; after that, the job fails instead (the
    /// rows already handed on cannot be taken back). Returns whether the sink took every
    /// batch (`false`: it stopped wanting them).
    async fn run_final(
        self: &Arc<Self>,
        job: &Job,
        root: Arc<dyn ExecutionPlan>,
        sink: &mut impl BatchSink,
    ) -> Result<bool> {
        let deps = block_dependencies(&root);
        self.count_readers(job, &root)?;
        let root = with_build_side_bounds(root).map_err(EngineError::from)?;
        let mut retries = Retries::new(self.config.max_stage_attempts, deps.len());
        loop {
            self.materialize_all(job, &deps).await?;
            let reader = Arc::new(DriverBlockReader::new(Arc::clone(self)));
            let ctx = self.task_context(Arc::clone(&reader) as _);
            let started = Instant::now();
            let mut handed_on = false;
            let result: DfResult<bool> = async {
                let mut batches = execute_stream(Arc::clone(&root), ctx)?;
                while let Some(batch) = batches.next().await {
                    let batch = batch?;
                    // Empty batches may be handed on again after a rerun; rows may not.
                    handed_on |= batch.num_rows() > 0;
                    if !sink.accept(batch).await {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            .await;
            count_driver_reads(job, &reader, started);
            match result.map_err(EngineError::from) {
                Ok(taken) => return Ok(taken),
                Err(EngineError::FetchFailed {
                    block,
                    executor,
                    reason,
                }) if !handed_on => {
                    let lost = self.handle_fetch_failure(job, block, &executor).await;
                    retries.record(lost, block.dataset, reason)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs `root` like [`Driver::collect`], but hands its batches to the caller as the
    /// driver produces them, through a channel of [`RESULT_BATCHES_IN_FLIGHT`] batches:
    /// a result larger than memory streams through the driver. Dropping the stream cancels
    /// the job; the job's metrics arrive on the returned receiver once it has ended.
    pub fn execute_stream(
        self: &Arc<Self>,
        root: Arc<dyn ExecutionPlan>,
        temporary: Vec<Dataset>,
        description: &JobDescription,
    ) -> (JobStream, oneshot::Receiver<JobMetrics>) {
        let (tx, rx) = mpsc::channel(RESULT_BATCHES_IN_FLIGHT);
        let (done, metrics) = oneshot::channel();
        let schema = root.schema();
        let driver = Arc::clone(self);
        let description = description.planned(|| describe_stages(&root, &temporary));
        tokio::spawn(async move {
            let mut job = driver.new_job(temporary, &description).await;
            let id = job.id;
            let mut sink = tx.clone();
            let stopped = || DriverError::Cancelled {
                job: id,
                reason: "the caller stopped reading the result".into(),
            };
            let result = tokio::select! {
                result = driver.run_final(&job, root, &mut sink) => match result {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(stopped()),
                    Err(e) => Err(e),
                },
                () = tx.closed() => Err(stopped()),
            };
            if matches!(&result, Err(DriverError::Cancelled { .. })) {
                let _ = driver
                    .scheduler
                    .cancel(Some(id), "the caller stopped reading the result".into())
                    .await;
            }
            driver.end_job(&mut job, &result).await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
            let _ = done.send(job.metrics());
        });
        (
            JobStream {
                schema,
                batches: ReceiverStream::new(rx),
            },
            metrics,
        )
    }

    /// Writes `dataset` as one Parquet file per partition under `dir`, by the executors.
    /// Returns the files written.
    pub async fn write_parquet(
        self: &Arc<Self>,
        dataset: Dataset,
        temporary: Vec<Dataset>,
        dir: &Path,
        description: &JobDescription,
    ) -> Result<(Vec<PathBuf>, JobMetrics)> {
        let id = dataset.id();
        let partitions = dataset.partitions();
        let description = description.planned(|| describe_stages(dataset.plan(), &temporary));
        let mut all = temporary;
        all.push(dataset);
        let mut job = self.new_job(all, &description).await;
        let result = self
            .run_until_done(
                &job,
                id,
                (0..partitions as u32).collect(),
                StageOutput::Parquet(dir.to_path_buf()),
            )
            .await;
        self.end_job(&mut job, &result).await;
        result?;
        let files = (0..partitions as u32)
            .map(|p| dir.join(part_file_name(p)))
            .collect();
        Ok((files, job.metrics()))
    }

    fn task_context(&self, reader: Arc<dyn BlockReader>) -> Arc<TaskContext> {
        Arc::new(task_context_with_reader(
            &self.session.task_ctx(),
            None,
            reader,
        ))
    }

    /// Makes sure every partition of `id` is held by some executor.
    pub(crate) async fn materialize(self: &Arc<Self>, job: &Job, id: DatasetId) -> Result<()> {
        let lock = job.dataset_lock(id);
        let _computing = lock.lock().await;
        let dataset = self.dataset(id)?;
        let missing = self.locations.missing(id, dataset.partitions());
        {
            let mut book = job.book();
            if dataset.persistence() == Persistence::Cached && !book.cache_counted.contains(&id) {
                book.cache_counted.push(id);
                book.metrics.cached_blocks_used += dataset.partitions() - missing.len();
            }
            if missing.is_empty() {
                return Ok(());
            }
            if dataset.persistence() == Persistence::Job && !book.materialized.contains(&id) {
                book.materialized.push(id);
            }
        }
        Box::pin(self.run_until_done(job, id, missing, StageOutput::Store)).await
    }

    /// Materializes `deps` together: their stages are submitted as soon as their own
    /// inputs are there, and share the executors' slots (one stage's last tasks run beside
    /// the next one's first). The first error ends the rest.
    async fn materialize_all(self: &Arc<Self>, job: &Job, deps: &[DatasetId]) -> Result<()> {
        match deps {
            [] => Ok(()),
            [one] => Box::pin(self.materialize(job, *one)).await,
            _ if !self.config.branches_together => {
                for dep in deps {
                    Box::pin(self.materialize(job, *dep)).await?;
                }
                Ok(())
            }
            _ => futures::future::try_join_all(
                deps.iter().map(|d| Box::pin(self.materialize(job, *d))),
            )
            .await
            .map(drop),
        }
    }

    /// Counts the readers of every job-scoped dataset the job's fragment `root` reads,
    /// directly or through the stages below it (looking through cached datasets, whose
    /// missing blocks read their inputs inside the reading task).
    fn count_readers(&self, job: &Job, root: &Arc<dyn ExecutionPlan>) -> Result<()> {
        let mut pending = vec![Arc::clone(root)];
        let mut seen = Vec::new();
        while let Some(plan) = pending.pop() {
            let mut deps = Vec::new();
            self.expand(&plan, &mut deps)?;
            for d in deps {
                *job.book().readers.entry(d).or_default() += 1;
                if !seen.contains(&d) {
                    seen.push(d);
                    pending.push(Arc::clone(self.dataset(d)?.plan()));
                }
            }
        }
        Ok(())
    }

    /// Job-scoped dataset `id`'s stage finished: each of its inputs `deps` has one reader
    /// fewer, and an input no reader still needs is released now (its shuffle buckets and
    /// spill files leave the executors), so a long query does not hold every intermediate
    /// result until its end. Should one be needed again (its reader's output lost), it is
    /// recomputed from lineage like any lost block.
    async fn release_read_inputs(&self, job: &Job, id: DatasetId, deps: &[DatasetId]) {
        let done = {
            let mut book = job.book();
            if book.consumed.contains(&id) {
                return;
            }
            book.consumed.push(id);
            let mut done = Vec::new();
            for d in deps {
                if let Some(left) = book.readers.get_mut(d) {
                    *left = left.saturating_sub(1);
                    if *left == 0 && book.materialized.contains(d) {
                        done.push(*d);
                    }
                }
            }
            book.metrics.datasets_released_early += done.len();
            done
        };
        if !done.is_empty() {
            tracing::debug!(job = %job.id, datasets = ?done, "inputs read by every reader released");
            self.drop_blocks(&done).await;
        }
    }

    /// Runs stages of `id` until `partitions` are all done, recomputing lost inputs.
    async fn run_until_done(
        self: &Arc<Self>,
        job: &Job,
        id: DatasetId,
        mut partitions: Vec<u32>,
        output: StageOutput,
    ) -> Result<()> {
        let dataset = self.dataset(id)?;
        let mut retries = Retries::new(self.config.max_stage_attempts, dataset.partitions());
        loop {
            let mut deps = Vec::new();
            let plan = self.expand(dataset.plan(), &mut deps)?;
            self.materialize_all(job, &deps).await?;
            for input in dataset.filter_inputs() {
                Box::pin(self.fill_filter(job, input)).await?;
            }
            match self
                .run_stage(job, &dataset, plan, &partitions, &output)
                .await
            {
                Ok(()) => {
                    if dataset.persistence() == Persistence::Job {
                        self.release_read_inputs(job, id, &deps).await;
                    }
                    return Ok(());
                }
                Err(StageFailure::Fatal(e)) => return Err(e),
                Err(StageFailure::FetchFailed {
                    block,
                    executor,
                    reason,
                }) => {
                    let lost = self.handle_fetch_failure(job, block, &executor).await;
                    retries.record(lost, id, reason)?;
                    // Only what is still missing runs again (written files stay written).
                    if matches!(output, StageOutput::Store) {
                        partitions = self.locations.missing(id, dataset.partitions());
                    }
                }
            }
        }
    }

    /// Fills in a join filter that a stage's scans consume from the join's build side
    /// (blocks of earlier stages or files, read here), once per job. A build side larger
    /// than [`FILTER_BUILD_SIDE_LIMIT`], or one the driver cannot read (a file only the
    /// executors' hosts hold), leaves the filter open: it only prunes, the join itself
    /// still matches every row.
    async fn fill_filter(self: &Arc<Self>, job: &Job, input: &FilterInput) -> Result<()> {
        let Some(id) = input.filter.expression_id() else {
            return Ok(());
        };
        {
            let mut book = job.book();
            if book.filters_tried.contains(&id) {
                return Ok(());
            }
            book.filters_tried.push(id);
        }
        // As for a stage: cached inputs get their lineage, job-scoped ones are made first.
        let mut deps = Vec::new();
        let plan = self.expand(&input.build_side, &mut deps)?;
        Box::pin(self.materialize_all(job, &deps)).await?;
        let reader = Arc::new(DriverBlockReader::new(Arc::clone(self)));
        let ctx = self.task_context(Arc::clone(&reader) as _);
        let started = Instant::now();
        let filled: DfResult<bool> = async {
            let mut bounds = BuildBounds::try_new(&input.build_keys, &plan.schema())?;
            let mut bytes = 0;
            let mut batches = execute_stream(plan, ctx)?;
            while let Some(batch) = batches.next().await {
                let batch = batch?;
                bytes += batch.get_array_memory_size();
                if bytes > FILTER_BUILD_SIDE_LIMIT {
                    return Ok(false);
                }
                bounds.update(&batch)?;
            }
            bounds.publish(&input.filter, &input.probe_keys)
        }
        .await;
        count_driver_reads(job, &reader, started);
        match filled {
            Ok(true) => job.book().metrics.join_filters_filled += 1,
            Ok(false) => {}
            Err(e) => tracing::debug!(job = %job.id, error = %e, "join filter left open"),
        }
        Ok(())
    }

    /// Gives every cached dataset `plan` reads its lineage as a fallback, so a task that
    /// misses a cached block computes it in place; collects into `deps` the job-scoped
    /// datasets that must be materialized first.
    fn expand(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        deps: &mut Vec<DatasetId>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(read) = plan.downcast_ref::<BlockReadExec>() {
            let source = self.dataset(read.dataset())?;
            if source.persistence() == Persistence::Cached {
                let fallback = self.expand(source.plan(), deps)?;
                return Ok(Arc::new(read.clone().with_fallback(fallback)));
            }
            if !deps.contains(&read.dataset()) {
                deps.push(read.dataset());
            }
            return Ok(Arc::clone(plan));
        }
        let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
        if children.is_empty() {
            return Ok(Arc::clone(plan));
        }
        let mut expanded = Vec::with_capacity(children.len());
        for child in &children {
            expanded.push(self.expand(child, deps)?);
        }
        Ok(replace_children_if_necessary(Arc::clone(plan), expanded).map_err(EngineError::from)?)
    }

    /// A block could not be fetched from `executor`: if the executor is unreachable it is
    /// lost with all its blocks, otherwise only the block is forgotten (it was evicted).
    /// Returns whether an executor was lost.
    async fn handle_fetch_failure(&self, job: &Job, block: BlockId, executor: &ExecutorId) -> bool {
        // A shuffle block is lost with its whole map output.
        let block = block.map_output();
        let reachable = match self.registry.get(executor) {
            Some(info) => match self.pool.executor(&info.address) {
                Ok(mut client) => matches!(
                    tokio::time::timeout(
                        ember_engine::rpc::CONTROL_TIMEOUT,
                        client.status(ember_engine::proto::StatusRequest::default())
                    )
                    .await,
                    Ok(Ok(_))
                ),
                Err(_) => false,
            },
            None => false,
        };
        if reachable {
            self.locations.remove_if_at(block, executor);
            false
        } else {
            if self
                .scheduler
                .executor_lost(executor.clone(), "a block fetch from it failed".into())
                .await
            {
                job.book().metrics.executors_lost += 1;
            }
            true
        }
    }

    /// Runs one stage: a task for each of `partitions` of `dataset`, placed, retried and
    /// speculated by the scheduler loop.
    async fn run_stage(
        self: &Arc<Self>,
        job: &Job,
        dataset: &Arc<Dataset>,
        plan: Arc<dyn ExecutionPlan>,
        partitions: &[u32],
        output: &StageOutput,
    ) -> Result<(), StageFailure> {
        let stage = self.next_stage_id();
        let stage_started = Instant::now();
        job.book().metrics.stages_run += 1;
        let inputs = self.input_locations(&plan)?;
        let name = stage_name(plan.as_ref());
        let encoded = encode_plan(plan).map_err(DriverError::from)?;
        let narrow: Vec<DatasetId> = dataset
            .dependencies()
            .iter()
            .filter(|d| {
                self.dataset(**d)
                    .is_ok_and(|dep| dataset.is_narrow_on(&dep))
            })
            .copied()
            .collect();
        let grouped = grouped_reads(dataset.plan());
        let preferred = partitions
            .iter()
            .map(|p| self.preferred_executors(*p, &narrow, &grouped))
            .collect();
        let output_kind = match output {
            StageOutput::Store if dataset.reduce_partitions().is_some() => OutputKind::Shuffle,
            StageOutput::Store => OutputKind::Store {
                cached: dataset.persistence() == Persistence::Cached,
            },
            StageOutput::Parquet(dir) => OutputKind::Parquet(dir.clone()),
        };
        tracing::debug!(%stage, dataset = %dataset.id(), tasks = partitions.len(), "stage submitted");
        let template = LaunchTaskRequest {
            job_id: job.id.0,
            stage_id: stage.0,
            partition: 0,
            attempt: 0,
            dataset: dataset.id().0,
            plan: encoded,
            inputs: Some(inputs),
            output: None,
            task_id: 0,
        };
        // Each launch carries this much, plus its own ids and output.
        let launch_bytes = prost::Message::encoded_len(&template) as u64;
        let report = self
            .scheduler
            .run_stage(StageSpec {
                job: job.id,
                stage,
                dataset: dataset.id(),
                parents: dataset.dependencies().to_vec(),
                name,
                partitions: partitions.to_vec(),
                preferred,
                template,
                output: output_kind,
            })
            .await?;
        {
            let metrics = &mut job.book().metrics;
            metrics.launch_bytes += launch_bytes * report.attempts as u64;
            metrics.tasks_run += report.attempts;
            metrics.task_failures += report.failures;
            metrics.executors_lost += report.executors_lost;
            if dataset.reads_source() {
                metrics.source_partitions_read += report.attempts;
            }
        }
        for done in report.done {
            self.record_success(job, dataset, done.partition, output, done.success);
        }
        match report.end {
            StageEnd::Complete => {
                job.book().metrics.stages.push(crate::metrics::StageTiming {
                    dataset: dataset.id(),
                    shuffle: dataset.reduce_partitions().is_some(),
                    tasks: report.attempts,
                    wall: stage_started.elapsed(),
                });
                Ok(())
            }
            StageEnd::FetchFailed {
                block,
                executor,
                reason,
            } => Err(StageFailure::FetchFailed {
                block,
                executor,
                reason,
            }),
            StageEnd::Failed(e) => Err(StageFailure::Fatal(e)),
            StageEnd::Cancelled(reason) => Err(StageFailure::Fatal(DriverError::Cancelled {
                job: job.id,
                reason,
            })),
        }
    }

    /// Executors to prefer for `partition`: the holder of its narrow input, then the one
    /// holding most of a grouped read's inputs.
    fn preferred_executors(
        &self,
        partition: u32,
        narrow: &[DatasetId],
        grouped: &[BlockReadExec],
    ) -> Vec<ExecutorId> {
        let mut preferred = Vec::new();
        for dep in narrow {
            if let Some(holder) = self.locations.get(BlockId::new(*dep, partition)) {
                if !preferred.contains(&holder) {
                    preferred.push(holder);
                }
            }
        }
        for read in grouped {
            let mut held: HashMap<ExecutorId, usize> = HashMap::new();
            for p in read.inputs_of(partition as usize) {
                if let Some(holder) = self.locations.get(BlockId::new(read.dataset(), p)) {
                    *held.entry(holder).or_default() += 1;
                }
            }
            let mut by_count: Vec<(usize, ExecutorId)> =
                held.into_iter().map(|(e, n)| (n, e)).collect();
            by_count.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            for (_, e) in by_count {
                if !preferred.contains(&e) {
                    preferred.push(e);
                }
            }
        }
        preferred
    }

    /// Counts what a successful task computed and read (the scheduler loop already
    /// recorded where its blocks live).
    fn record_success(
        &self,
        job: &Job,
        dataset: &Dataset,
        partition: u32,
        output: &StageOutput,
        success: ember_engine::proto::TaskSuccess,
    ) {
        let metrics = &mut job.book().metrics;
        if matches!(output, StageOutput::Store) {
            let block = BlockId::new(dataset.id(), partition);
            if self.computed.insert(block, ()).is_some() {
                metrics.partitions_recomputed += 1;
            }
        }
        if matches!(output, StageOutput::Parquet(_)) {
            metrics.rows_written += success.rows;
        }
        for filled in &success.filled {
            let block = BlockId::from(filled);
            if self.computed.insert(block, ()).is_some() {
                metrics.partitions_recomputed += 1;
            }
        }
        if let Some(m) = success.metrics {
            metrics.blocks_read_local += m.blocks_read_local as usize;
            metrics.blocks_read_remote += m.blocks_read_remote as usize;
            metrics.bytes_fetched += m.bytes_fetched;
            metrics.bytes_mapped += m.bytes_mapped;
            metrics.cached_blocks_used += m.cached_blocks_read as usize;
            metrics.source_partitions_read += m.source_partitions_read as usize;
            metrics.task_time += std::time::Duration::from_micros(m.run_micros);
            metrics.fetch_time += std::time::Duration::from_micros(m.fetch_micros);
            metrics.plan_decode_time += std::time::Duration::from_micros(m.plan_decode_micros);
            metrics.shuffle_write_time += std::time::Duration::from_micros(m.shuffle_write_micros);
            metrics.shuffle_bytes_written += m.shuffle_bytes_written;
            metrics.spilled_bytes += m.spilled_bytes;
            if !m.device.is_empty() && !metrics.devices.contains(&m.device) {
                metrics.devices.push(m.device);
            }
        }
    }

    /// Where every block `plan` may read lives now. A missing block of a job-scoped dataset
    /// was lost since it was materialized; a missing cached block is computed by the task.
    fn input_locations(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
    ) -> Result<InputLocations, StageFailure> {
        let mut inputs = InputLocationsBuilder::new();
        let mut addresses: HashMap<ExecutorId, String> = HashMap::new();
        for dep in all_block_reads(plan) {
            let dep = self.dataset(dep)?;
            for p in 0..dep.partitions() as u32 {
                let block = BlockId::new(dep.id(), p);
                let Some(executor) = self.locations.get(block) else {
                    if dep.persistence() == Persistence::Cached {
                        continue;
                    }
                    return Err(StageFailure::FetchFailed {
                        block,
                        executor: ExecutorId("<none>".into()),
                        reason: "lost before the stage started".into(),
                    });
                };
                let address = addresses.entry(executor.clone()).or_insert_with(|| {
                    self.registry
                        .get(&executor)
                        .map(|e| e.address)
                        .unwrap_or_default()
                });
                inputs.add(block, &executor, address);
            }
        }
        Ok(inputs.build())
    }
}

/// The grouped block reads of `plan` (each output partition reads a fixed set of parent
/// partitions).
fn grouped_reads(plan: &Arc<dyn ExecutionPlan>) -> Vec<BlockReadExec> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = Vec::new();
    // The closure never fails, so neither does the walk.
    let _ = plan.apply(|node| {
        if let Some(read) = node.downcast_ref::<BlockReadExec>() {
            if read.groups().is_some() {
                found.push(read.clone());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Names of the operators a stage runs, top first, as the UI labels the stage: the first
/// child is followed down (joins show their probe side), at most eight names.
fn stage_name(plan: &dyn ExecutionPlan) -> String {
    let mut names = Vec::new();
    let mut node = Some(plan);
    while let Some(n) = node {
        if names.len() == 8 {
            names.push("…");
            break;
        }
        names.push(n.name());
        node = n.children().first().copied().map(|c| c.as_ref());
    }
    names.join(" ← ")
}
