//! Task runner: decodes a task's plan fragment, executes its partition with DataFusion on
//! the compute runtime, and stores or writes the output. Owns no state between tasks.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::compute::BatchCoalescer;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::{ExecutionPlanProperties, SendableRecordBatchStream};
use datafusion::prelude::SessionContext;
use ember_engine::block_read::task_context_with_reader;
use ember_engine::join_filter::with_build_side_bounds;
use ember_engine::plan_codec::decode_plan;
use ember_engine::proto::{
    task_output, task_status, LaunchTaskRequest, TaskMetrics, TaskStatus, TaskSuccess,
};
use ember_engine::rpc::ChannelPool;
use ember_engine::{BlockId, DatasetId, EngineError, ExecutorId};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;

use crate::block_manager::{BlockKind, BlockManager};
use crate::block_reader::TaskBlockReader;
use crate::block_writer::BlockWriter;
use crate::error::{ExecutorError, Result};

/// What a task needs from its executor.
#[derive(Clone)]
pub(crate) struct TaskEnv {
    pub(crate) executor_id: ExecutorId,
    pub(crate) blocks: Arc<BlockManager>,
    pub(crate) session: SessionContext,
    pub(crate) pool: ChannelPool,
    /// Kernel hooks; the device is reported with every task.
    pub(crate) hooks: crate::ExecutorHooks,
}

impl std::fmt::Debug for TaskEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEnv")
            .field("executor_id", &self.executor_id)
            .finish_non_exhaustive()
    }
}

/// Runs one task to completion and reports its status. Never panics on a bad task: every
/// failure becomes a `TaskFailure` the driver can act on.
pub(crate) async fn run_task(env: TaskEnv, request: LaunchTaskRequest) -> TaskStatus {
    let started = Instant::now();
    let reader = Arc::new(TaskBlockReader::new(
        Arc::clone(&env.blocks),
        env.executor_id.clone(),
        request.inputs.clone().unwrap_or_default(),
        env.pool.clone(),
    ));
    let outcome = execute(&env, &request, Arc::clone(&reader)).await;
    let outcome = outcome.map_err(|e| with_source_files(e, &request, &env));
    let result = match outcome {
        Ok(Output {
            rows,
            bytes,
            mut evicted,
            written,
        }) => {
            let mut metrics = reader.metrics();
            metrics.run_micros = started.elapsed().as_micros() as u64;
            metrics.shuffle_write_micros = written.shuffle_write_micros;
            metrics.shuffle_bytes_written = written.shuffle_bytes_written;
            metrics.spilled_bytes = written.spilled_bytes;
            metrics.device = env.hooks.device();
            let filled = reader.take_filled();
            evicted.extend(reader.take_evicted());
            // A block filled early in the task may have been evicted by its own output.
            let (filled, filled_bytes): (Vec<_>, Vec<u64>) = filled
                .into_iter()
                .filter(|(b, _)| !evicted.contains(b))
                .map(|(b, bytes)| (ember_engine::proto::BlockId::from(b), bytes))
                .unzip();
            task_status::Result::Success(TaskSuccess {
                rows,
                bytes,
                metrics: Some(metrics),
                evicted: evicted.into_iter().map(Into::into).collect(),
                filled,
                filled_bytes,
            })
        }
        Err(e) => {
            tracing::debug!(
                job = request.job_id,
                stage = request.stage_id,
                partition = request.partition,
                error = %e,
                "task failed"
            );
            task_status::Result::Failure(e.to_task_failure())
        }
    };
    TaskStatus {
        result: Some(result),
    }
}

/// Names the source files a failing task was reading, so a bad row or a corrupt file can
/// be found: the file group of the task's partition in the fragment's file scan.
fn with_source_files(
    error: ExecutorError,
    request: &LaunchTaskRequest,
    env: &TaskEnv,
) -> ExecutorError {
    let ExecutorError::Engine(engine) = error else {
        return error;
    };
    // Failures that are not about the input keep their own class: a lack of memory (so
    // the query is planned leaner instead of retried), a lost block, a bug.
    if matches!(
        engine,
        EngineError::FetchFailed { .. }
            | EngineError::Reading { .. }
            | EngineError::ResourcesExhausted(_)
            | EngineError::Internal(_)
    ) {
        return ExecutorError::Engine(engine);
    }
    let ctx = env.session.task_ctx();
    let Ok(plan) = decode_plan(&request.plan, &ctx) else {
        return ExecutorError::Engine(engine);
    };
    let mut files = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<DataSourceExec>() {
            if let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() {
                if let Some(group) = config.file_groups.get(request.partition as usize) {
                    files.extend(
                        group
                            .files()
                            .iter()
                            .map(|f| f.object_meta.location.to_string()),
                    );
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if files.is_empty() {
        ExecutorError::Engine(engine)
    } else {
        ExecutorError::Engine(EngineError::Reading {
            files: files.join(", "),
            source: Box::new(engine),
        })
    }
}

fn task_context(
    env: &TaskEnv,
    request: &LaunchTaskRequest,
    reader: Arc<TaskBlockReader>,
) -> TaskContext {
    let task_id = format!(
        "job{}-stage{}-part{}-attempt{}",
        request.job_id, request.stage_id, request.partition, request.attempt
    );
    task_context_with_reader(&env.session.task_ctx(), Some(task_id), reader)
}

/// What a task produced.
struct Output {
    rows: u64,
    bytes: u64,
    /// Cached blocks evicted to store the output.
    evicted: Vec<BlockId>,
    /// Shuffle-write and spill figures (the other fields are the reader's).
    written: TaskMetrics,
}

impl Output {
    fn stored(rows: u64, bytes: u64, evicted: Vec<BlockId>) -> Self {
        Self {
            rows,
            bytes,
            evicted,
            written: TaskMetrics::default(),
        }
    }
}

async fn execute(
    env: &TaskEnv,
    request: &LaunchTaskRequest,
    reader: Arc<TaskBlockReader>,
) -> Result<Output> {
    let ctx = Arc::new(task_context(env, request, Arc::clone(&reader)));
    let decoding = Instant::now();
    let plan = decode_plan(&request.plan, &ctx)?;
    let plan = with_build_side_bounds(plan).map_err(EngineError::from)?;
    reader.note_plan_decode(decoding.elapsed());
    let partition = request.partition as usize;
    let partitions = plan.output_partitioning().partition_count();
    let shuffle = matches!(
        request.output.as_ref().and_then(|o| o.kind.as_ref()),
        Some(task_output::Kind::Shuffle(_))
    );
    if partition >= partitions && !shuffle {
        return Err(ExecutorError::MalformedTask(format!(
            "partition {partition} of a plan with {partitions} partitions"
        )));
    }
    let output = request
        .output
        .as_ref()
        .and_then(|o| o.kind.as_ref())
        .ok_or_else(|| ExecutorError::MalformedTask("no output given".into()))?;
    match output {
        task_output::Kind::Shuffle(_) => shuffle_write(env, request, plan, ctx).await,
        task_output::Kind::Store(store) => {
            let mut stream = plan.execute(partition, ctx).map_err(EngineError::from)?;
            let block = BlockId::new(DatasetId(request.dataset), request.partition);
            // A cached partition too big for memory goes to disk like a job's block (Spark's
            // MEMORY_AND_DISK, the default level of a cached DataFrame).
            let kind = if store.cached {
                BlockKind::Cached
            } else {
                BlockKind::Pinned
            };
            let mut writer =
                BlockWriter::new(Arc::clone(&env.blocks), stream.schema(), kind, [block]);
            while let Some(batch) = stream.next().await {
                writer.push(0, batch.map_err(EngineError::from)?)?;
            }
            let written = writer.finish()?;
            let mut output = Output::stored(written.rows, written.bytes, written.evicted);
            output.written.spilled_bytes = written.spilled;
            Ok(output)
        }
        task_output::Kind::WriteParquet(write) => {
            let stream = plan.execute(partition, ctx).map_err(EngineError::from)?;
            let (rows, bytes) =
                write_parquet(stream, PathBuf::from(&write.path), request.attempt).await?;
            Ok(Output::stored(rows, bytes, Vec::new()))
        }
    }
}

/// Rows per batch of a shuffle block: small hash-partitioned pieces are coalesced to this.
const SHUFFLE_BATCH_ROWS: usize = 8192;

/// Runs map partition `request.partition` of a shuffle: `plan` is the repartition, whose
/// input partition is computed and split by the repartition's partitioning into one block
/// per reduce partition (empty buckets included, so every reduce task finds its block).
async fn shuffle_write(
    env: &TaskEnv,
    request: &LaunchTaskRequest,
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    ctx: Arc<TaskContext>,
) -> Result<Output> {
    let repartition = plan.downcast_ref::<RepartitionExec>().ok_or_else(|| {
        ExecutorError::MalformedTask(format!(
            "a shuffle map task needs a repartition at its root, not {}",
            plan.name()
        ))
    })?;
    let input = Arc::clone(repartition.input());
    let maps = input.output_partitioning().partition_count();
    let map = request.partition as usize;
    if map >= maps {
        return Err(ExecutorError::MalformedTask(format!(
            "map partition {map} of a shuffle with {maps} map partitions"
        )));
    }
    let partitioning = repartition.partitioning().clone();
    let reduces = partitioning.partition_count();
    let schema = input.schema();
    let mut stream = input.execute(map, ctx).map_err(EngineError::from)?;
    let timer = datafusion::physical_plan::metrics::Time::new();
    let mut partitioner = BatchPartitioner::try_new(partitioning, timer.clone(), map, maps)
        .map_err(EngineError::from)?;
    let mut buckets: Vec<BatchCoalescer> = (0..reduces)
        .map(|_| {
            // Pieces already half a batch or bigger are kept as they are, not copied again.
            BatchCoalescer::new(Arc::clone(&schema), SHUFFLE_BATCH_ROWS)
                .with_biggest_coalesce_batch_size(Some(SHUFFLE_BATCH_ROWS / 2))
        })
        .collect();
    let dataset = DatasetId(request.dataset);
    let mut writer = BlockWriter::new(
        Arc::clone(&env.blocks),
        Arc::clone(&schema),
        BlockKind::Pinned,
        (0..reduces as u32).map(|r| BlockId::shuffle(dataset, request.partition, r)),
    );
    let mut store_time = std::time::Duration::ZERO;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(EngineError::from)?;
        let mut full = Vec::new();
        partitioner
            .partition(batch, |reduce, piece| {
                buckets[reduce].push_batch(piece)?;
                while let Some(done) = buckets[reduce].next_completed_batch() {
                    full.push((reduce, done));
                }
                Ok(())
            })
            .map_err(EngineError::from)?;
        let stored = Instant::now();
        for (reduce, done) in full {
            writer.push(reduce, done)?;
        }
        store_time += stored.elapsed();
    }
    let stored = Instant::now();
    for (reduce, mut bucket) in buckets.into_iter().enumerate() {
        bucket
            .finish_buffered_batch()
            .map_err(|e| EngineError::from(datafusion::error::DataFusionError::from(e)))?;
        while let Some(done) = bucket.next_completed_batch() {
            writer.push(reduce, done)?;
        }
    }
    let written = writer.finish()?;
    store_time += stored.elapsed();
    let store_micros = store_time.as_micros() as u64;
    let write_micros = (timer.value() / 1000) as u64 + store_micros;
    tracing::debug!(
        dataset = request.dataset,
        map,
        rows = written.rows,
        bytes = written.bytes,
        spilled = written.spilled,
        partition_micros = timer.value() / 1000,
        store_micros,
        "shuffle map output stored"
    );
    let mut output = Output::stored(written.rows, written.bytes, written.evicted);
    output.written.shuffle_write_micros = write_micros;
    output.written.shuffle_bytes_written = written.bytes;
    output.written.spilled_bytes = written.spilled;
    Ok(output)
}

/// Streams the task's output into `path` through a temporary file that is renamed into
/// place only when complete, so a failed task leaves no partial file under the final name.
async fn write_parquet(
    mut stream: SendableRecordBatchStream,
    path: PathBuf,
    attempt: u32,
) -> Result<(u64, u64)> {
    let tmp = path.with_extension(format!("parquet.tmp{attempt}"));
    let file = File::create(&tmp).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound && tmp.parent().is_some_and(|d| !d.exists()) {
            // The driver made the directory; this host does not see it.
            EngineError::Input(format!(
                "{}: the output directory the driver created does not exist on this \
                 executor's host; in a cluster across hosts, write to a filesystem every \
                 executor and the driver share (NFS, a mounted bucket)",
                tmp.parent()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            ))
        } else {
            EngineError::io(&tmp, e)
        }
    })?;
    let mut writer = ArrowWriter::try_new(file, stream.schema(), None)
        .map_err(|e| EngineError::Internal(format!("parquet writer: {e}")))?;
    let mut rows = 0u64;
    let result: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(EngineError::from)?;
            rows += batch.num_rows() as u64;
            // The compute runtime is dedicated to tasks, so a blocking write here delays
            // only this task's own pipeline, never RPCs.
            writer
                .write(&batch)
                .map_err(|e| EngineError::io(&tmp, std::io::Error::other(e)))?;
        }
        Ok(())
    }
    .await;
    let closed = result.and_then(|()| {
        writer
            .close()
            .map_err(|e| EngineError::io(&tmp, std::io::Error::other(e)).into())
    });
    if let Err(e) = closed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let bytes = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
    std::fs::rename(&tmp, &path).map_err(|e| EngineError::io(&path, e))?;
    Ok((rows, bytes))
}
