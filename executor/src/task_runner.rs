//! Task runner: decodes a task's plan fragment, executes its partition with DataFusion on
//! the compute runtime, and stores or writes the output. Owns no state between tasks.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlanProperties, SendableRecordBatchStream};
use datafusion::prelude::SessionContext;
use ember_engine::block_read::task_context_with_reader;
use ember_engine::plan_codec::decode_plan;
use ember_engine::proto::{task_output, task_status, LaunchTaskRequest, TaskStatus, TaskSuccess};
use ember_engine::rpc::ChannelPool;
use ember_engine::{BlockId, DatasetId, EngineError, ExecutorId, Partition};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;

use crate::block_manager::{BlockKind, BlockManager};
use crate::block_reader::TaskBlockReader;
use crate::error::{ExecutorError, Result};

/// What a task needs from its executor.
#[derive(Clone)]
pub(crate) struct TaskEnv {
    pub(crate) executor_id: ExecutorId,
    pub(crate) blocks: Arc<BlockManager>,
    pub(crate) session: SessionContext,
    pub(crate) pool: ChannelPool,
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
        &request.inputs,
        env.pool.clone(),
    ));
    let outcome = execute(&env, &request, Arc::clone(&reader)).await;
    let outcome = outcome.map_err(|e| with_source_files(e, &request, &env));
    let result = match outcome {
        Ok((rows, bytes, mut evicted)) => {
            let mut metrics = reader.metrics();
            metrics.run_micros = started.elapsed().as_micros() as u64;
            let filled = reader.take_filled();
            evicted.extend(reader.take_evicted());
            // A block filled early in the task may have been evicted by its own output.
            let filled = filled
                .into_iter()
                .filter(|b| !evicted.contains(b))
                .map(Into::into)
                .collect();
            task_status::Result::Success(TaskSuccess {
                rows,
                bytes,
                metrics: Some(metrics),
                evicted: evicted.into_iter().map(Into::into).collect(),
                filled,
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
    if matches!(
        engine,
        EngineError::FetchFailed { .. } | EngineError::Reading { .. }
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

async fn execute(
    env: &TaskEnv,
    request: &LaunchTaskRequest,
    reader: Arc<TaskBlockReader>,
) -> Result<(u64, u64, Vec<BlockId>)> {
    let ctx = Arc::new(task_context(env, request, reader));
    let plan = decode_plan(&request.plan, &ctx)?;
    let partition = request.partition as usize;
    let partitions = plan.output_partitioning().partition_count();
    if partition >= partitions {
        return Err(ExecutorError::MalformedTask(format!(
            "partition {partition} of a plan with {partitions} partitions"
        )));
    }
    let stream = plan.execute(partition, ctx).map_err(EngineError::from)?;
    let output = request
        .output
        .as_ref()
        .and_then(|o| o.kind.as_ref())
        .ok_or_else(|| ExecutorError::MalformedTask("no output given".into()))?;
    match output {
        task_output::Kind::Store(store) => {
            let block = BlockId::new(DatasetId(request.dataset), request.partition);
            let schema = stream.schema();
            let batches = collect(stream).await?;
            let part = Arc::new(Partition::new(schema, batches));
            let (rows, bytes) = (part.num_rows() as u64, part.memory_size() as u64);
            let kind = if store.cached {
                BlockKind::Cached
            } else {
                BlockKind::Pinned
            };
            let evicted = env.blocks.put(block, part, kind)?;
            Ok((rows, bytes, evicted))
        }
        task_output::Kind::WriteParquet(write) => {
            let (rows, bytes) =
                write_parquet(stream, PathBuf::from(&write.path), request.attempt).await?;
            Ok((rows, bytes, Vec::new()))
        }
    }
}

async fn collect(
    mut stream: SendableRecordBatchStream,
) -> Result<Vec<arrow::record_batch::RecordBatch>> {
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(EngineError::from)?;
        if batch.num_rows() > 0 {
            batches.push(batch);
        }
    }
    Ok(batches)
}

/// Streams the task's output into `path` through a temporary file that is renamed into
/// place only when complete, so a failed task leaves no partial file under the final name.
async fn write_parquet(
    mut stream: SendableRecordBatchStream,
    path: PathBuf,
    attempt: u32,
) -> Result<(u64, u64)> {
    let tmp = path.with_extension(format!("parquet.tmp{attempt}"));
    let file = File::create(&tmp).map_err(|e| EngineError::io(&tmp, e))?;
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
