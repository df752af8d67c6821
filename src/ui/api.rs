//! The REST API under `/api/v1`: Spark's monitoring API's paths and field names where the
//! concept is the same, computed from an [`AppSnapshot`]. Ember's extras are documented in
//! `docs/ui.md`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use ember_driver::snapshot::{JobSnapshot, StageSnapshot, TaskSnapshot};
use ember_driver::{AppSnapshot, JobStatus, StageStatus, TaskEndStatus};
use serde_json::{json, Value};

use super::{ApiError, ApiResult, QuantileQuery, StatusQuery, UiState};

type St = State<Arc<UiState>>;

/// Spark's default quantiles of `taskSummary`.
const DEFAULT_QUANTILES: [f64; 5] = [0.05, 0.25, 0.5, 0.75, 0.95];

/// A time as Spark's API writes it (`2026-12-02T04:05:20.123GMT`).
pub(crate) fn time(ms: u64) -> Value {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64) {
        Some(t) => Value::String(t.format("%Y-%m-%dT%H:%M:%S%.3fGMT").to_string()),
        None => Value::Null,
    }
}

fn opt_time(ms: Option<u64>) -> Value {
    ms.map(time).unwrap_or(Value::Null)
}

/// `GET /api/v1/version`.
pub(crate) async fn version() -> Json<Value> {
    Json(json!({
        "spark": crate::connect::SPARK_VERSION,
        "ember": env!("CARGO_PKG_VERSION"),
    }))
}

fn app_info(a: &AppSnapshot) -> Value {
    let last = a
        .jobs
        .iter()
        .map(|j| j.completed_ms.unwrap_or(j.submitted_ms))
        .max()
        .unwrap_or(a.started_ms)
        .max(a.started_ms);
    let running = a.jobs.iter().any(|j| j.status == JobStatus::Running);
    json!({
        "id": a.app,
        "name": a.app,
        "attempts": [{
            "startTime": time(a.started_ms),
            "endTime": time(last),
            "lastUpdated": time(last),
            "duration": last.saturating_sub(a.started_ms),
            "sparkUser": std::env::var("USER").unwrap_or_default(),
            "completed": !running,
            "appSparkVersion": crate::connect::SPARK_VERSION,
            "startTimeEpoch": a.started_ms,
            "endTimeEpoch": last,
            "lastUpdatedEpoch": last,
        }],
    })
}

/// `GET /api/v1/applications`.
pub(crate) async fn applications(State(state): St) -> ApiResult<Json<Value>> {
    let apps = state.apps().await?;
    Ok(Json(Value::Array(
        apps.iter().map(|a| app_info(a)).collect(),
    )))
}

/// `GET /api/v1/applications/{app}`.
pub(crate) async fn application(
    State(state): St,
    Path(app): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(app_info(&*state.app(&app).await?)))
}

fn job_status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Running => "RUNNING",
        JobStatus::Succeeded => "SUCCEEDED",
        // Spark reports a killed job as failed; `emberStatus` tells the two apart.
        JobStatus::Failed | JobStatus::Cancelled => "FAILED",
    }
}

fn ember_job_status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Running => "RUNNING",
        JobStatus::Succeeded => "SUCCEEDED",
        JobStatus::Failed => "FAILED",
        JobStatus::Cancelled => "CANCELLED",
    }
}

fn stage_status(status: StageStatus) -> &'static str {
    match status {
        StageStatus::Active => "ACTIVE",
        StageStatus::Complete => "COMPLETE",
        StageStatus::Failed | StageStatus::Cancelled => "FAILED",
    }
}

fn job_json(j: &JobSnapshot) -> Value {
    let sum = |f: fn(&StageSnapshot) -> usize| j.stages.iter().map(f).sum::<usize>();
    let count = |s: StageStatus| j.stages.iter().filter(|st| st.status == s).count();
    json!({
        "jobId": j.job.0,
        "name": first_line(&j.description),
        "description": j.description,
        "submissionTime": time(j.submitted_ms),
        "completionTime": opt_time(j.completed_ms),
        "stageIds": j.stages.iter().map(|s| s.stage.0).collect::<Vec<_>>(),
        "jobTags": j.tags,
        "status": job_status(j.status),
        "numTasks": sum(|s| s.num_tasks),
        "numActiveTasks": sum(|s| s.counts.running),
        "numCompletedTasks": sum(|s| s.counts.succeeded),
        "numSkippedTasks": 0,
        "numFailedTasks": sum(|s| s.counts.failed),
        "numKilledTasks": sum(|s| s.counts.killed),
        "numCompletedIndices": sum(|s| s.counts.succeeded),
        "numActiveStages": count(StageStatus::Active),
        "numCompletedStages": count(StageStatus::Complete),
        "numSkippedStages": 0,
        "numFailedStages": count(StageStatus::Failed) + count(StageStatus::Cancelled),
        "killedTasksSummary": {},
        // Ember's extras.
        "emberStatus": ember_job_status(j.status),
        "error": j.error,
        "schedulingPool": j.pool,
        "durationMs": j.completed_ms.unwrap_or_else(ember_driver::events::now_ms)
            .saturating_sub(j.submitted_ms),
    })
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut line: String = line.chars().take(120).collect();
    if line.len() < text.trim().len() {
        line.push('…');
    }
    line
}

/// Whether `status` (`?status=` value, case-insensitive) matches Spark's name `name`.
fn status_matches(filter: &Option<String>, name: &str) -> bool {
    filter
        .as_deref()
        .is_none_or(|f| f.split(',').any(|f| f.trim().eq_ignore_ascii_case(name)))
}

/// `GET /api/v1/applications/{app}/jobs[?status=running|succeeded|failed]`, newest first.
pub(crate) async fn jobs(
    State(state): St,
    Path(app): Path<String>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Json<Value>> {
    let a = state.app(&app).await?;
    Ok(Json(Value::Array(
        a.jobs
            .iter()
            .rev()
            .filter(|j| status_matches(&q.status, job_status(j.status)))
            .map(job_json)
            .collect(),
    )))
}

/// The job `id` of `a`, or 404.
pub(crate) fn find_job(a: &AppSnapshot, id: u64) -> ApiResult<&JobSnapshot> {
    a.jobs.iter().find(|j| j.job.0 == id).ok_or_else(|| {
        ApiError::not_found(format!(
            "no job {id} (finished jobs beyond the newest 1000 are dropped)"
        ))
    })
}

/// `GET /api/v1/applications/{app}/jobs/{job}`.
pub(crate) async fn job(
    State(state): St,
    Path((app, id)): Path<(String, u64)>,
) -> ApiResult<Json<Value>> {
    let a = state.app(&app).await?;
    Ok(Json(job_json(find_job(&a, id)?)))
}

fn stage_json(s: &StageSnapshot, pool: &str, with_tasks: bool) -> Value {
    let t = &s.totals;
    let first_launch = s.tasks.iter().map(|t| t.launched_ms).min();
    let failure = s
        .tasks
        .iter()
        .rev()
        .find(|t| t.status == Some(TaskEndStatus::Failed))
        .and_then(|t| t.reason.clone());
    let mut v = json!({
        "status": stage_status(s.status),
        "stageId": s.stage.0,
        "attemptId": 0,
        "numTasks": s.num_tasks,
        "numActiveTasks": s.counts.running,
        "numCompleteTasks": s.counts.succeeded,
        "numFailedTasks": s.counts.failed,
        "numKilledTasks": s.counts.killed,
        "numCompletedIndices": s.counts.succeeded,
        "submissionTime": time(s.submitted_ms),
        "firstTaskLaunchedTime": opt_time(first_launch),
        "completionTime": opt_time(s.completed_ms),
        "failureReason": failure,
        "executorRunTime": t.run_ms,
        "inputBytes": 0,
        "inputRecords": 0,
        "outputBytes": t.output_bytes,
        "outputRecords": t.rows,
        "shuffleReadBytes": t.bytes_fetched,
        "shuffleRemoteBytesRead": t.bytes_fetched,
        "shuffleRemoteBlocksFetched": t.blocks_read_remote,
        "shuffleLocalBlocksFetched": t.blocks_read_local,
        "shuffleFetchWaitTime": t.fetch_ms,
        "shuffleWriteBytes": t.shuffle_bytes_written,
        "memoryBytesSpilled": t.spilled_bytes,
        "diskBytesSpilled": t.spilled_bytes,
        "name": s.name,
        "details": s.name,
        "schedulingPool": pool,
        "rddIds": std::iter::once(s.dataset.0).chain(s.parents.iter().map(|d| d.0)).collect::<Vec<_>>(),
        "accumulatorUpdates": [],
        "killedTasksSummary": {},
        // Ember's extras.
        "jobId": s.job.0,
        "datasetId": s.dataset.0,
        "parentDatasetIds": s.parents.iter().map(|d| d.0).collect::<Vec<_>>(),
        "shuffleMapStage": s.shuffle,
        "numSpeculativeTasks": s.counts.speculative,
        "emberStatus": match s.status {
            StageStatus::Cancelled => "CANCELLED",
            other => stage_status(other),
        },
    });
    if with_tasks {
        let tasks: serde_json::Map<String, Value> = s
            .tasks
            .iter()
            .map(|t| (t.task.to_string(), task_json(t)))
            .collect();
        v["tasks"] = Value::Object(tasks);
    }
    v
}

fn task_status(t: &TaskSnapshot) -> &'static str {
    match t.status {
        None => "RUNNING",
        Some(TaskEndStatus::Success) => "SUCCESS",
        Some(TaskEndStatus::Failed) => "FAILED",
        Some(TaskEndStatus::Killed) => "KILLED",
    }
}

fn task_json(t: &TaskSnapshot) -> Value {
    let f = t.figures.clone().unwrap_or_default();
    json!({
        "taskId": t.task,
        "index": t.partition,
        "attempt": t.attempt,
        "partitionId": t.partition,
        "launchTime": time(t.launched_ms),
        "duration": t.duration_ms,
        "executorId": t.executor.0.clone(),
        "status": task_status(t),
        "taskLocality": if f.blocks_read_remote == 0 { "PROCESS_LOCAL" } else { "ANY" },
        "speculative": t.speculative,
        "errorMessage": t.reason,
        "taskMetrics": {
            "executorRunTime": f.run_ms,
            "resultSize": f.output_bytes,
            "memoryBytesSpilled": f.spilled_bytes,
            "diskBytesSpilled": f.spilled_bytes,
            "outputMetrics": { "bytesWritten": f.output_bytes, "recordsWritten": f.rows },
            "shuffleReadMetrics": {
                "remoteBlocksFetched": f.blocks_read_remote,
                "localBlocksFetched": f.blocks_read_local,
                "fetchWaitTime": f.fetch_ms,
                "remoteBytesRead": f.bytes_fetched,
            },
            "shuffleWriteMetrics": { "bytesWritten": f.shuffle_bytes_written },
        },
    })
}

fn all_stages(a: &AppSnapshot) -> impl Iterator<Item = (&StageSnapshot, &str)> {
    a.jobs
        .iter()
        .flat_map(|j| j.stages.iter().map(move |s| (s, j.pool.as_str())))
}

fn find_stage(a: &AppSnapshot, id: u32) -> ApiResult<(&StageSnapshot, &str)> {
    all_stages(a)
        .find(|(s, _)| s.stage.0 == id)
        .ok_or_else(|| ApiError::not_found(format!("no stage {id}")))
}

/// `GET /api/v1/applications/{app}/stages[?status=active|complete|failed]`, newest first.
pub(crate) async fn stages(
    State(state): St,
    Path(app): Path<String>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Json<Value>> {
    let a = state.app(&app).await?;
    let mut list: Vec<(&StageSnapshot, &str)> = all_stages(&a)
        .filter(|(s, _)| status_matches(&q.status, stage_status(s.status)))
        .collect();
    list.sort_by_key(|(s, _)| std::cmp::Reverse(s.stage));
    Ok(Json(Value::Array(
        list.into_iter()
            .map(|(s, pool)| stage_json(s, pool, false))
            .collect(),
    )))
}

/// `GET /api/v1/applications/{app}/stages/{stage}`: its attempts (Ember gives every
/// attempt its own stage id, so there is one).
pub(crate) async fn stage(
    State(state): St,
    Path((app, id)): Path<(String, u32)>,
) -> ApiResult<Json<Value>> {
    let a = state.app(&app).await?;
    let (s, pool) = find_stage(&a, id)?;
    Ok(Json(json!([stage_json(s, pool, true)])))
}

fn find_attempt(a: &AppSnapshot, id: u32, attempt: u32) -> ApiResult<(&StageSnapshot, &str)> {
    if attempt != 0 {
        return Err(ApiError::not_found(format!(
            "no attempt {attempt} of stage {id}: Ember numbers each stage attempt as its own stage"
        )));
    }
    find_stage(a, id)
}

/// `GET /api/v1/applications/{app}/stages/{stage}/{attempt}`.
pub(crate) async fn stage_attempt(
    State(state): St,
    Path((app, id, attempt)): Path<(String, u32, u32)>,
) -> ApiResult<Json<Value>> {
    let a = state.app(&app).await?;
    let (s, pool) = find_attempt(&a, id, attempt)?;
    Ok(Json(stage_json(s, pool, true)))
}

/// Parses `?quantiles=`.
fn quantiles(q: &QuantileQuery) -> ApiResult<Vec<f64>> {
    let Some(text) = q.quantiles.as_deref() else {
        return Ok(DEFAULT_QUANTILES.to_vec());
    };
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))
                .ok_or_else(|| {
                    ApiError(
                        axum::http::StatusCode::BAD_REQUEST,
                        format!("quantiles: `{s}` is not a number in [0, 1]"),
                    )
                })
        })
        .collect()
}

/// The task-metric distributions of a stage (`taskSummary`), over its successful tasks.
pub(crate) fn task_summary_json(s: &StageSnapshot, qs: &[f64]) -> Value {
    let by = |f: fn(&TaskSnapshot) -> Option<f64>| json!(s.quantiles_by(qs, f));
    json!({
        "quantiles": qs,
        "duration": by(|t| t.duration_ms.map(|d| d as f64)),
        "executorRunTime": by(|t| t.figures.as_ref().map(|f| f.run_ms as f64)),
        "resultSize": by(|t| t.figures.as_ref().map(|f| f.output_bytes as f64)),
        "memoryBytesSpilled": by(|t| t.figures.as_ref().map(|f| f.spilled_bytes as f64)),
        "diskBytesSpilled": by(|t| t.figures.as_ref().map(|f| f.spilled_bytes as f64)),
        "outputMetrics": {
            "bytesWritten": by(|t| t.figures.as_ref().map(|f| f.output_bytes as f64)),
            "recordsWritten": by(|t| t.figures.as_ref().map(|f| f.rows as f64)),
        },
        "shuffleReadMetrics": {
            "readBytes": by(|t| t.figures.as_ref().map(|f| f.bytes_fetched as f64)),
            "remoteBytesRead": by(|t| t.figures.as_ref().map(|f| f.bytes_fetched as f64)),
            "fetchWaitTime": by(|t| t.figures.as_ref().map(|f| f.fetch_ms as f64)),
        },
        "shuffleWriteMetrics": {
            "writeBytes": by(|t| t.figures.as_ref().map(|f| f.shuffle_bytes_written as f64)),
        },
    })
}

/// `GET .../stages/{stage}/{attempt}/taskSummary?quantiles=0.05,0.5,0.95`.
pub(crate) async fn task_summary(
    State(state): St,
    Path((app, id, attempt)): Path<(String, u32, u32)>,
    Query(q): Query<QuantileQuery>,
) -> ApiResult<Json<Value>> {
    let qs = quantiles(&q)?;
    let a = state.app(&app).await?;
    let (s, _) = find_attempt(&a, id, attempt)?;
    Ok(Json(task_summary_json(s, &qs)))
}

/// `offset` and `length` of `taskList`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Page {
    offset: Option<usize>,
    length: Option<usize>,
}

/// `GET .../stages/{stage}/{attempt}/taskList[?offset=0&length=20]`.
pub(crate) async fn task_list(
    State(state): St,
    Path((app, id, attempt)): Path<(String, u32, u32)>,
    Query(page): Query<Page>,
) -> ApiResult<Json<Value>> {
    let a = state.app(&app).await?;
    let (s, _) = find_attempt(&a, id, attempt)?;
    Ok(Json(Value::Array(
        s.tasks
            .iter()
            .skip(page.offset.unwrap_or(0))
            .take(page.length.unwrap_or(20))
            .map(task_json)
            .collect(),
    )))
}

fn executor_json(e: &ember_driver::snapshot::ExecutorSnapshot, rdd_blocks: usize) -> Value {
    json!({
        "id": e.executor.0.clone(),
        "hostPort": e.address,
        "isActive": e.active,
        "rddBlocks": rdd_blocks,
        "memoryUsed": e.used_bytes,
        "diskUsed": e.disk_bytes,
        "totalCores": e.cores,
        "maxTasks": e.cores,
        "activeTasks": e.running_tasks,
        "failedTasks": e.failed_tasks,
        "completedTasks": e.succeeded_tasks,
        "totalTasks": e.running_tasks + e.failed_tasks + e.succeeded_tasks + e.killed_tasks,
        "totalDuration": e.task_time_ms,
        "totalGCTime": 0,
        "isBlacklisted": e.excluded.is_some(),
        "isExcluded": e.excluded.is_some(),
        "maxMemory": e.memory_bytes,
        "addTime": time(e.added_ms),
        "removeTime": opt_time(e.removed_ms),
        "removeReason": e.removed_reason,
        // Ember's extras.
        "excludedReason": e.excluded,
        "killedTasks": e.killed_tasks,
        "blocks": e.blocks,
        "device": e.device,
    })
}

fn executors_json(a: &AppSnapshot, all: bool) -> Value {
    Value::Array(
        a.executors
            .iter()
            .filter(|e| all || e.active)
            .map(|e| {
                let rdd_blocks = a
                    .cached
                    .iter()
                    .flat_map(|c| &c.blocks)
                    .filter(|b| b.executor == e.executor)
                    .count();
                executor_json(e, rdd_blocks)
            })
            .collect(),
    )
}

/// `GET /api/v1/applications/{app}/executors`: the active ones.
pub(crate) async fn executors(State(state): St, Path(app): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(executors_json(&*state.app(&app).await?, false)))
}

/// `GET /api/v1/applications/{app}/allexecutors`: lost ones too.
pub(crate) async fn all_executors(
    State(state): St,
    Path(app): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(executors_json(&*state.app(&app).await?, true)))
}

const STORAGE_LEVEL: &str = "Memory Deserialized 1x Replicated";

fn storage_json(
    a: &AppSnapshot,
    c: &ember_driver::snapshot::CachedDatasetSnapshot,
    detail: bool,
) -> Value {
    let mut v = json!({
        "id": c.dataset.0,
        "name": format!("dataset {}", c.dataset.0),
        "numPartitions": c.partitions,
        "numCachedPartitions": c.partitions_cached,
        "storageLevel": STORAGE_LEVEL,
        "memoryUsed": c.bytes,
        "diskUsed": 0,
        "recomputedPartitions": c.recomputed,
    });
    if detail {
        let distribution: Vec<Value> = a
            .executors
            .iter()
            .filter(|e| e.active)
            .map(|e| {
                let (n, bytes) = c
                    .blocks
                    .iter()
                    .filter(|b| b.executor == e.executor)
                    .fold((0usize, 0u64), |(n, s), b| (n + 1, s + b.bytes));
                json!({
                    "address": e.address,
                    "executorId": e.executor.0.clone(),
                    "memoryUsed": bytes,
                    "memoryRemaining": e.memory_bytes.saturating_sub(e.used_bytes),
                    "diskUsed": 0,
                    "partitions": n,
                })
            })
            .collect();
        let partitions: Vec<Value> = c
            .blocks
            .iter()
            .map(|b| {
                json!({
                    "blockName": format!("rdd_{}_{}", c.dataset.0, b.partition),
                    "storageLevel": STORAGE_LEVEL,
                    "memoryUsed": b.bytes,
                    "diskUsed": 0,
                    "executors": [b.executor.0.clone()],
                })
            })
            .collect();
        v["dataDistribution"] = Value::Array(distribution);
        v["partitions"] = Value::Array(partitions);
    }
    v
}

/// `GET /api/v1/applications/{app}/storage/rdd`: cached datasets.
pub(crate) async fn storage(State(state): St, Path(app): Path<String>) -> ApiResult<Json<Value>> {
    let a = state.app(&app).await?;
    Ok(Json(Value::Array(
        a.cached
            .iter()
            .map(|c| storage_json(&a, c, false))
            .collect(),
    )))
}

/// `GET /api/v1/applications/{app}/storage/rdd/{dataset}`: where its partitions are.
pub(crate) async fn storage_one(
    State(state): St,
    Path((app, id)): Path<(String, u64)>,
) -> ApiResult<Json<Value>> {
    let a = state.app(&app).await?;
    let c = a
        .cached
        .iter()
        .find(|c| c.dataset.0 == id)
        .ok_or_else(|| ApiError::not_found(format!("no cached dataset {id}")))?;
    Ok(Json(storage_json(&a, c, true)))
}

fn sql_json(j: &JobSnapshot, detail: bool) -> Value {
    let status = match j.status {
        JobStatus::Running => "RUNNING",
        JobStatus::Succeeded => "COMPLETED",
        JobStatus::Failed | JobStatus::Cancelled => "FAILED",
    };
    let ids = |want: JobStatus| {
        if j.status == want {
            vec![j.job.0]
        } else {
            Vec::new()
        }
    };
    let mut v = json!({
        "id": j.job.0,
        "status": status,
        "description": j.description,
        "planDescription": j.plan,
        "submissionTime": time(j.submitted_ms),
        "duration": j.completed_ms.unwrap_or_else(ember_driver::events::now_ms)
            .saturating_sub(j.submitted_ms),
        "runningJobIds": ids(JobStatus::Running),
        "successJobIds": ids(JobStatus::Succeeded),
        "failedJobIds": if matches!(j.status, JobStatus::Failed | JobStatus::Cancelled) {
            vec![j.job.0]
        } else {
            Vec::new()
        },
        "error": j.error,
    });
    if detail {
        // The stage graph with each stage's figures: Ember measures per stage (its tasks'
        // sums), not per operator.
        let nodes: Vec<Value> = j
            .stages
            .iter()
            .map(|s| {
                json!({
                    "nodeId": s.stage.0,
                    "nodeName": s.name,
                    "datasetId": s.dataset.0,
                    "metrics": [
                        {"name": "number of output rows", "value": s.totals.rows.to_string()},
                        {"name": "output bytes", "value": s.totals.output_bytes.to_string()},
                        {"name": "shuffle bytes written", "value": s.totals.shuffle_bytes_written.to_string()},
                        {"name": "bytes fetched from peers", "value": s.totals.bytes_fetched.to_string()},
                        {"name": "spill size", "value": s.totals.spilled_bytes.to_string()},
                        {"name": "task time total (ms)", "value": s.totals.run_ms.to_string()},
                        {"name": "tasks", "value": s.num_tasks.to_string()},
                    ],
                })
            })
            .collect();
        let edges: Vec<Value> = j
            .stage_edges()
            .into_iter()
            .map(|(from, to)| json!({"fromId": from.0, "toId": to.0}))
            .collect();
        v["nodes"] = Value::Array(nodes);
        v["edges"] = Value::Array(edges);
    }
    v
}

/// `GET /api/v1/applications/{app}/sql`: jobs planned from a query, newest first.
pub(crate) async fn sql(State(state): St, Path(app): Path<String>) -> ApiResult<Json<Value>> {
    let a = state.app(&app).await?;
    Ok(Json(Value::Array(
        a.jobs
            .iter()
            .rev()
            .filter(|j| !j.plan.is_empty())
            .map(|j| sql_json(j, false))
            .collect(),
    )))
}

/// `GET /api/v1/applications/{app}/sql/{id}`: the query text, Ember's stage plan and
/// DataFusion's physical plan, and the stage graph with each stage's figures.
pub(crate) async fn sql_one(
    State(state): St,
    Path((app, id)): Path<(String, u64)>,
) -> ApiResult<Json<Value>> {
    let a = state.app(&app).await?;
    Ok(Json(sql_json(find_job(&a, id)?, true)))
}

/// `GET /api/v1/applications/{app}/environment`.
pub(crate) async fn environment(
    State(state): St,
    Path(app): Path<String>,
) -> ApiResult<Json<Value>> {
    state.app(&app).await?;
    let props: Vec<Value> = state
        .environment()
        .into_iter()
        .map(|(k, v)| json!([k, v]))
        .collect();
    Ok(Json(json!({
        "runtime": {
            "emberVersion": env!("CARGO_PKG_VERSION"),
            "javaVersion": "",
            "javaHome": "",
            "scalaVersion": "",
        },
        "sparkProperties": props,
        "hadoopProperties": [],
        "systemProperties": [
            ["os.name", std::env::consts::OS],
            ["os.arch", std::env::consts::ARCH],
        ],
        "metricsProperties": [],
        "classpathEntries": [],
        "resourceProfiles": [],
    })))
}

fn training_json(r: &ember_driver::snapshot::TrainingSnapshot) -> Value {
    json!({
        "run": r.run,
        "algorithm": r.algorithm,
        "rows": r.rows,
        "status": if r.iterations.is_some() { "FINISHED" } else { "RUNNING" },
        "passes": r.pass_objectives.len(),
        "passObjectives": r.pass_objectives,
        "iterations": r.iterations,
        "converged": r.converged,
        "objectiveHistory": r.objective_history,
        "treeLevels": r.tree_levels,
        "startTime": time(r.started_ms),
        "lastUpdated": time(r.updated_ms),
    })
}

/// `GET /api/v1/applications/{app}/ml` (Ember's): mllib training runs, newest first, with
/// the objective at each pass and, once ended, per accepted iteration.
pub(crate) async fn ml(State(state): St, Path(app): Path<String>) -> ApiResult<Json<Value>> {
    let a = state.app(&app).await?;
    Ok(Json(Value::Array(
        a.training.iter().rev().map(training_json).collect(),
    )))
}

/// The training run `id` of `a`, or 404.
pub(crate) fn find_run(
    a: &AppSnapshot,
    id: u64,
) -> ApiResult<&ember_driver::snapshot::TrainingSnapshot> {
    a.training
        .iter()
        .find(|r| r.run == id)
        .ok_or_else(|| ApiError::not_found(format!("no training run {id}")))
}
