//! DAG scheduler: runs a job by materializing the datasets it reads, stage by stage, one
//! task per missing partition, then running the job's final fragment on the driver.
//!
//! A stage computes the missing partitions of one dataset:
//!
//! ```text
//!   dependencies materialized? --no--> materialize them first (recursively)
//!        | yes
//!   launch a task per missing partition (preferring the executor holding its input)
//!        |-- success ------------------> record the block's location
//!        |-- executor unreachable -----> executor lost, its blocks forgotten, task requeued
//!        |-- runtime failure ----------> requeued until the task's attempt limit
//!        |-- plan / input error -------> job fails
//!        '-- input block missing ------> stage ends; the lost input is recomputed and the
//!                                        stage resubmitted (up to the stage attempt limit)
//! ```

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::replace_children_if_necessary;
use datafusion::physical_plan::{collect, ExecutionPlan};
use ember_engine::block_read::BlockReadExec;
use ember_engine::block_read::{task_context_with_reader, BlockReader};
use ember_engine::lineage::{all_block_reads, block_dependencies, Dataset, Persistence};
use ember_engine::plan_codec::encode_plan;
use ember_engine::proto::{
    task_output, task_status, BlockLocation, FailureKind, LaunchTaskRequest, ShuffleWrite,
    StoreBlock, TaskFailure, TaskOutput, WriteParquet,
};
use ember_engine::rpc::transport_error;
use ember_engine::{BlockId, DatasetId, EngineError, ExecutorId, StageId};
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use crate::block_fetch::DriverBlockReader;
use crate::error::{DriverError, Result};
use crate::metrics::JobMetrics;
use crate::registry::ExecutorInfo;
use crate::Driver;

/// Bookkeeping of one running job.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) metrics: JobMetrics,
    /// Datasets made for this job alone: dropped from the lineage graph when it ends.
    pub(crate) temporary: Vec<DatasetId>,
    /// Job-scoped datasets whose blocks this job made: removed when it ends.
    materialized: Vec<DatasetId>,
    /// Cached datasets whose resident blocks were already counted as cache hits.
    cache_counted: Vec<DatasetId>,
    started: Instant,
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

/// The outcome of one task attempt, as the scheduler sees it.
enum Attempt {
    Succeeded(ember_engine::proto::TaskSuccess),
    Failed(TaskFailure),
    Unreachable(EngineError),
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

/// Name of the file partition `p` of a written dataset goes to.
pub fn part_file_name(partition: u32) -> String {
    format!("part-{partition:05}.parquet")
}

impl Driver {
    pub(crate) fn new_job(&self, temporary: Vec<Dataset>) -> Job {
        let mut ids = Vec::with_capacity(temporary.len());
        for d in temporary {
            ids.push(d.id());
            self.register_dataset(d);
        }
        Job {
            metrics: JobMetrics {
                job: Some(self.next_job_id()),
                ..JobMetrics::default()
            },
            temporary: ids,
            materialized: Vec::new(),
            cache_counted: Vec::new(),
            started: Instant::now(),
        }
    }

    pub(crate) async fn end_job(&self, job: &mut Job) {
        let mut drop: Vec<DatasetId> = job.materialized.clone();
        for d in &job.temporary {
            if !drop.contains(d) {
                drop.push(*d);
            }
        }
        self.drop_blocks(&drop).await;
        for d in &job.temporary {
            self.lineage.remove(d);
        }
        job.metrics.duration = job.started.elapsed();
    }

    /// Runs `root` (a fragment whose leaves read blocks) on the driver after materializing
    /// every dataset it reads; `temporary` are datasets made for this job alone.
    ///
    /// # Errors
    ///
    /// A task failed for good (the error names stage, partition, executor and cause), no
    /// executor was available, or inputs kept getting lost.
    pub async fn collect(
        self: &Arc<Self>,
        root: Arc<dyn ExecutionPlan>,
        temporary: Vec<Dataset>,
    ) -> Result<(Vec<RecordBatch>, JobMetrics)> {
        let mut job = self.new_job(temporary);
        let result = self.collect_in(&mut job, root).await;
        self.end_job(&mut job).await;
        result.map(|batches| (batches, job.metrics))
    }

    pub(crate) async fn collect_in(
        self: &Arc<Self>,
        job: &mut Job,
        root: Arc<dyn ExecutionPlan>,
    ) -> Result<Vec<RecordBatch>> {
        let deps = block_dependencies(&root);
        let mut retries = Retries::new(self.config.max_stage_attempts, deps.len());
        loop {
            for dep in &deps {
                self.materialize(job, *dep).await?;
            }
            let reader = Arc::new(DriverBlockReader {
                driver: Arc::clone(self),
                blocks: AtomicUsize::new(0),
                bytes: AtomicU64::new(0),
            });
            let ctx = self.task_context(Arc::clone(&reader) as _);
            let started = Instant::now();
            let result = collect(Arc::clone(&root), ctx).await;
            job.metrics.driver_time += started.elapsed();
            job.metrics.blocks_read_remote += reader.blocks.load(Ordering::Relaxed);
            job.metrics.bytes_fetched += reader.bytes.load(Ordering::Relaxed);
            match result.map_err(EngineError::from) {
                Ok(batches) => return Ok(batches),
                Err(EngineError::FetchFailed {
                    block,
                    executor,
                    reason,
                }) => {
                    let lost = self.handle_fetch_failure(job, block, &executor).await;
                    retries.record(lost, block.dataset, reason)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes `dataset` as one Parquet file per partition under `dir`, by the executors.
    /// Returns the files written.
    pub async fn write_parquet(
        self: &Arc<Self>,
        dataset: Dataset,
        temporary: Vec<Dataset>,
        dir: &Path,
    ) -> Result<(Vec<PathBuf>, JobMetrics)> {
        let id = dataset.id();
        let partitions = dataset.partitions();
        let mut all = temporary;
        all.push(dataset);
        let mut job = self.new_job(all);
        let result = self
            .run_until_done(
                &mut job,
                id,
                (0..partitions as u32).collect(),
                StageOutput::Parquet(dir.to_path_buf()),
            )
            .await;
        self.end_job(&mut job).await;
        result?;
        let files = (0..partitions as u32)
            .map(|p| dir.join(part_file_name(p)))
            .collect();
        Ok((files, job.metrics))
    }

    fn task_context(&self, reader: Arc<dyn BlockReader>) -> Arc<TaskContext> {
        Arc::new(task_context_with_reader(
            &self.session.task_ctx(),
            None,
            reader,
        ))
    }

    /// Makes sure every partition of `id` is held by some executor.
    pub(crate) async fn materialize(self: &Arc<Self>, job: &mut Job, id: DatasetId) -> Result<()> {
        let dataset = self.dataset(id)?;
        let missing = self.locations.missing(id, dataset.partitions());
        if dataset.persistence() == Persistence::Cached && !job.cache_counted.contains(&id) {
            job.cache_counted.push(id);
            job.metrics.cached_blocks_used += dataset.partitions() - missing.len();
        }
        if missing.is_empty() {
            return Ok(());
        }
        if dataset.persistence() == Persistence::Job && !job.materialized.contains(&id) {
            job.materialized.push(id);
        }
        Box::pin(self.run_until_done(job, id, missing, StageOutput::Store)).await
    }

    /// Runs stages of `id` until `partitions` are all done, recomputing lost inputs.
    async fn run_until_done(
        self: &Arc<Self>,
        job: &mut Job,
        id: DatasetId,
        mut partitions: Vec<u32>,
        output: StageOutput,
    ) -> Result<()> {
        let dataset = self.dataset(id)?;
        let mut retries = Retries::new(self.config.max_stage_attempts, dataset.partitions());
        loop {
            let mut deps = Vec::new();
            let plan = self.expand(dataset.plan(), &mut deps)?;
            for dep in &deps {
                Box::pin(self.materialize(job, *dep)).await?;
            }
            match self
                .run_stage(job, &dataset, plan, &partitions, &output)
                .await
            {
                Ok(()) => return Ok(()),
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
    async fn handle_fetch_failure(
        &self,
        job: &mut Job,
        block: BlockId,
        executor: &ExecutorId,
    ) -> bool {
        // A shuffle block is lost with its whole map output.
        let block = block.map_output();
        let reachable = match self.registry.get(executor) {
            Some(info) => match self.pool.executor(&info.address) {
                Ok(mut client) => matches!(
                    tokio::time::timeout(
                        ember_engine::rpc::CONTROL_TIMEOUT,
                        client.status(ember_engine::proto::StatusRequest {})
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
            if self.lose_executor(executor, "block fetch failed") {
                job.metrics.executors_lost += 1;
            }
            true
        }
    }

    /// Runs one stage: a task for each of `partitions` of `dataset`.
    async fn run_stage(
        self: &Arc<Self>,
        job: &mut Job,
        dataset: &Arc<Dataset>,
        plan: Arc<dyn ExecutionPlan>,
        partitions: &[u32],
        output: &StageOutput,
    ) -> Result<(), StageFailure> {
        let stage = self.next_stage_id();
        let stage_started = Instant::now();
        let tasks_before = job.metrics.tasks_run;
        job.metrics.stages_run += 1;
        let job_id = job.metrics.job.map(|j| j.0).unwrap_or_default();
        let inputs = self.input_locations(&plan)?;
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
        tracing::debug!(%stage, dataset = %dataset.id(), tasks = partitions.len(), "stage submitted");

        let mut pending: VecDeque<(u32, u32)> = partitions.iter().map(|p| (*p, 0)).collect();
        let mut busy: HashMap<ExecutorId, u32> = HashMap::new();
        let mut running = FuturesUnordered::new();
        let mut waited_since: Option<Instant> = None;
        loop {
            // Launch while there are free slots.
            while let Some(&(partition, attempts)) = pending.front() {
                let alive = self.registry.alive();
                let Some(executor) =
                    choose_executor(&alive, &busy, partition, &narrow, &grouped, self)
                else {
                    break;
                };
                pending.pop_front();
                *busy.entry(executor.id.clone()).or_default() += 1;
                job.metrics.tasks_run += 1;
                if dataset.reads_source() {
                    job.metrics.source_partitions_read += 1;
                }
                let request = LaunchTaskRequest {
                    job_id,
                    stage_id: stage.0,
                    partition,
                    attempt: attempts,
                    dataset: dataset.id().0,
                    plan: encoded.clone(),
                    inputs: inputs.clone(),
                    output: Some(task_output_for(dataset, output, partition)),
                };
                let driver = Arc::clone(self);
                running.push(async move {
                    let attempt = driver.launch(&executor, request).await;
                    (partition, attempts, executor.id, attempt)
                });
            }
            if running.is_empty() {
                if pending.is_empty() {
                    let tasks = job.metrics.tasks_run - tasks_before;
                    let shuffle = dataset.reduce_partitions().is_some();
                    job.metrics.stages.push(crate::metrics::StageTiming {
                        dataset: dataset.id(),
                        shuffle,
                        tasks,
                        wall: stage_started.elapsed(),
                    });
                    let _ = self.events.send(crate::SchedulerEvent::StageCompleted {
                        job: job.metrics.job.unwrap_or(ember_engine::JobId(0)),
                        stage,
                        dataset: dataset.id(),
                        shuffle,
                        tasks,
                    });
                    return Ok(());
                }
                // Nothing running and nothing could be placed: no executor is alive.
                let since = *waited_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.config.executor_wait {
                    return Err(DriverError::NoExecutors {
                        waited: since.elapsed(),
                    }
                    .into());
                }
                let left = self.config.executor_wait - since.elapsed();
                self.registry.wait_for(1, left).await;
                continue;
            }
            waited_since = None;
            let Some((partition, attempts, executor, attempt)) = running.next().await else {
                continue;
            };
            if let Some(n) = busy.get_mut(&executor) {
                *n = n.saturating_sub(1);
            }
            let give_up = |attempts: u32, user_error: bool, message: String| -> StageFailure {
                task_failed(
                    stage,
                    dataset.id(),
                    partition,
                    &executor,
                    attempts,
                    user_error,
                    message,
                )
                .into()
            };
            let cause = match attempt {
                Attempt::Succeeded(success) => {
                    self.record_success(job, dataset, partition, &executor, output, success);
                    continue;
                }
                Attempt::Unreachable(e) => {
                    job.metrics.task_failures += 1;
                    if self.lose_executor(&executor, "task launch failed") {
                        job.metrics.executors_lost += 1;
                    }
                    e.to_string()
                }
                Attempt::Failed(failure) => {
                    job.metrics.task_failures += 1;
                    let kind = FailureKind::try_from(failure.kind).unwrap_or(FailureKind::Internal);
                    match kind {
                        FailureKind::FetchFailed => {
                            let block = failure
                                .missing_block
                                .map(BlockId::from)
                                .unwrap_or(BlockId::new(DatasetId(0), 0));
                            return Err(StageFailure::FetchFailed {
                                block,
                                executor: ExecutorId(failure.missing_block_executor),
                                reason: failure.message,
                            });
                        }
                        FailureKind::Cancelled => {
                            pending.push_back((partition, attempts));
                            continue;
                        }
                        FailureKind::Plan | FailureKind::Internal => {
                            return Err(give_up(
                                attempts + 1,
                                kind == FailureKind::Plan,
                                failure.message,
                            ));
                        }
                        FailureKind::Execution | FailureKind::ResourcesExhausted => {
                            tracing::warn!(%stage, partition, executor = %executor, error = %failure.message, "task failed; retrying");
                            failure.message
                        }
                    }
                }
            };
            let attempts = attempts + 1;
            if attempts >= self.config.max_task_attempts {
                return Err(give_up(attempts, false, cause));
            }
            pending.push_back((partition, attempts));
        }
    }

    /// Records a successful task: its block's location, blocks it filled or evicted, and
    /// what it read.
    fn record_success(
        &self,
        job: &mut Job,
        dataset: &Dataset,
        partition: u32,
        executor: &ExecutorId,
        output: &StageOutput,
        success: ember_engine::proto::TaskSuccess,
    ) {
        if matches!(output, StageOutput::Store) {
            let block = BlockId::new(dataset.id(), partition);
            if self.computed.insert(block, ()).is_some() {
                job.metrics.partitions_recomputed += 1;
            }
            self.locations.insert(block, executor.clone());
        }
        if matches!(output, StageOutput::Parquet(_)) {
            job.metrics.rows_written += success.rows;
        }
        for evicted in &success.evicted {
            self.locations
                .remove_if_at(BlockId::from(evicted), executor);
        }
        for filled in &success.filled {
            let block = BlockId::from(filled);
            if self.computed.insert(block, ()).is_some() {
                job.metrics.partitions_recomputed += 1;
            }
            self.locations.insert(block, executor.clone());
        }
        if let Some(m) = success.metrics {
            job.metrics.blocks_read_local += m.blocks_read_local as usize;
            job.metrics.blocks_read_remote += m.blocks_read_remote as usize;
            job.metrics.bytes_fetched += m.bytes_fetched;
            job.metrics.cached_blocks_used += m.cached_blocks_read as usize;
            job.metrics.source_partitions_read += m.source_partitions_read as usize;
            job.metrics.task_time += std::time::Duration::from_micros(m.run_micros);
            job.metrics.fetch_time += std::time::Duration::from_micros(m.fetch_micros);
            job.metrics.shuffle_write_time +=
                std::time::Duration::from_micros(m.shuffle_write_micros);
            job.metrics.shuffle_bytes_written += m.shuffle_bytes_written;
            job.metrics.spilled_bytes += m.spilled_bytes;
            if !m.device.is_empty() && !job.metrics.devices.contains(&m.device) {
                job.metrics.devices.push(m.device);
            }
        }
    }

    /// Where every block `plan` may read lives now. A missing block of a job-scoped dataset
    /// was lost since it was materialized; a missing cached block is computed by the task.
    fn input_locations(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
    ) -> Result<Vec<BlockLocation>, StageFailure> {
        let mut inputs = Vec::new();
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
                let address = self
                    .registry
                    .get(&executor)
                    .map(|e| e.address)
                    .unwrap_or_default();
                inputs.push(BlockLocation {
                    block: Some(block.into()),
                    executor_id: executor.0,
                    address,
                });
            }
        }
        Ok(inputs)
    }

    async fn launch(&self, executor: &ExecutorInfo, request: LaunchTaskRequest) -> Attempt {
        let mut client = match self.pool.executor(&executor.address) {
            Ok(c) => c,
            Err(e) => return Attempt::Unreachable(e),
        };
        match tokio::time::timeout(self.config.task_timeout, client.launch_task(request)).await {
            Err(_) => Attempt::Unreachable(transport_error(
                &executor.address,
                tonic::Status::deadline_exceeded("task ran past the task timeout"),
            )),
            Ok(Err(status)) => Attempt::Unreachable(transport_error(&executor.address, status)),
            Ok(Ok(resp)) => match resp.into_inner().result {
                Some(task_status::Result::Success(s)) => Attempt::Succeeded(s),
                Some(task_status::Result::Failure(f)) => Attempt::Failed(f),
                None => Attempt::Failed(TaskFailure {
                    kind: FailureKind::Internal as i32,
                    message: "executor sent an empty task status".into(),
                    missing_block: None,
                    missing_block_executor: String::new(),
                }),
            },
        }
    }
}

fn task_failed(
    stage: StageId,
    dataset: DatasetId,
    partition: u32,
    executor: &ExecutorId,
    attempts: u32,
    user_error: bool,
    message: String,
) -> DriverError {
    DriverError::TaskFailed {
        stage,
        dataset,
        partition,
        executor: executor.clone(),
        attempts,
        user_error,
        message,
    }
}

fn task_output_for(dataset: &Dataset, output: &StageOutput, partition: u32) -> TaskOutput {
    let kind = match output {
        StageOutput::Store if dataset.reduce_partitions().is_some() => {
            task_output::Kind::Shuffle(ShuffleWrite {})
        }
        StageOutput::Store => task_output::Kind::Store(StoreBlock {
            cached: dataset.persistence() == Persistence::Cached,
        }),
        StageOutput::Parquet(dir) => task_output::Kind::WriteParquet(WriteParquet {
            path: dir
                .join(part_file_name(partition))
                .to_string_lossy()
                .into_owned(),
        }),
    };
    TaskOutput { kind: Some(kind) }
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

/// Picks where partition `partition` runs: the executor holding its narrow input (or most
/// of a grouped read's inputs) if it has a free slot, else the least loaded executor with a
/// free slot.
fn choose_executor(
    alive: &[ExecutorInfo],
    busy: &HashMap<ExecutorId, u32>,
    partition: u32,
    narrow: &[DatasetId],
    grouped: &[BlockReadExec],
    driver: &Driver,
) -> Option<ExecutorInfo> {
    let load = |e: &ExecutorInfo| busy.get(&e.id).copied().unwrap_or(0);
    for dep in narrow {
        if let Some(holder) = driver.locations.get(BlockId::new(*dep, partition)) {
            if let Some(e) = alive.iter().find(|e| e.id == holder && load(e) < e.cores) {
                return Some(e.clone());
            }
        }
    }
    for read in grouped {
        let mut held: HashMap<ExecutorId, usize> = HashMap::new();
        for p in read.inputs_of(partition as usize) {
            if let Some(holder) = driver.locations.get(BlockId::new(read.dataset(), p)) {
                *held.entry(holder).or_default() += 1;
            }
        }
        let best = alive
            .iter()
            .filter(|e| load(e) < e.cores)
            .filter_map(|e| held.get(&e.id).map(|n| (n, e)))
            .max_by_key(|(n, _)| **n);
        if let Some((_, e)) = best {
            return Some(e.clone());
        }
    }
    alive
        .iter()
        .filter(|e| load(e) < e.cores)
        .min_by(|a, b| {
            let la = load(a) as f64 / a.cores as f64;
            let lb = load(b) as f64 / b.cores as f64;
            la.total_cmp(&lb)
        })
        .cloned()
}
