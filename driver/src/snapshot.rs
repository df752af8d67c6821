//! Snapshot: what the driver is doing and has done (jobs, stages, tasks, executors, cached
//! datasets), built by folding scheduler events, so the live view and a replayed event log
//! are the same computation.

use std::collections::BTreeMap;
use std::path::Path;

use ember_engine::{DatasetId, ExecutorId, JobId, StageId};
use serde::{Deserialize, Serialize};

use crate::events::{
    read_event_log, JobStatus, SchedulerEvent, StageStatus, TaskEndStatus, TaskFigures,
};

/// The state of one application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppSnapshot {
    /// The application's id.
    pub app: String,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// Jobs, oldest first.
    pub jobs: Vec<JobSnapshot>,
    /// Executors ever registered, by id.
    pub executors: Vec<ExecutorSnapshot>,
    /// Cached datasets not unpersisted.
    pub cached: Vec<CachedDatasetSnapshot>,
    /// mllib training runs, oldest first (the newest [`RETAINED_TRAINING_RUNS`]).
    #[serde(default)]
    pub training: Vec<TrainingSnapshot>,
}

/// One mllib training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSnapshot {
    /// The run.
    pub run: u64,
    /// What is trained.
    pub algorithm: String,
    /// Rows trained on.
    pub rows: u64,
    /// The objective at each pass over the data, in order (NaN for a pass not yet
    /// reported).
    pub pass_objectives: Vec<f64>,
    /// Partials per level of the last pass's tree reduction.
    pub tree_levels: Vec<usize>,
    /// When the first pass ended.
    pub started_ms: u64,
    /// When the last pass (or the run) ended.
    pub updated_ms: u64,
    /// Accepted iterations, once the run ended.
    pub iterations: Option<u32>,
    /// Whether it converged, once the run ended.
    pub converged: Option<bool>,
    /// The objective after each accepted iteration, once the run ended.
    pub objective_history: Vec<f64>,
}

impl AppSnapshot {
    /// The snapshot without the executors' heartbeat figures (memory, blocks, spilled
    /// bytes), which the event log does not keep: what a replay can be compared with.
    pub fn without_heartbeat_figures(mut self) -> Self {
        for e in &mut self.executors {
            e.used_bytes = 0;
            e.blocks = 0;
            e.disk_bytes = 0;
        }
        self
    }
}

/// One job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSnapshot {
    /// Its id.
    pub job: JobId,
    /// What it runs.
    pub description: String,
    /// Its scheduling pool.
    pub pool: String,
    /// Ember's stages and DataFusion's physical plan (empty when not planned from a query).
    #[serde(default)]
    pub plan: String,
    /// Who started it (see [`crate::JobDescription::tags`]).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Its state.
    pub status: JobStatus,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// When it started.
    pub submitted_ms: u64,
    /// When it ended.
    pub completed_ms: Option<u64>,
    /// Its stage attempts, in submission order.
    pub stages: Vec<StageSnapshot>,
}

impl JobSnapshot {
    /// The stage DAG's edges, (from, to): from the newest attempt that computed a dataset
    /// to each stage that read it.
    pub fn stage_edges(&self) -> Vec<(StageId, StageId)> {
        self.stages
            .iter()
            .flat_map(|s| {
                s.parents.iter().filter_map(move |p| {
                    self.stages
                        .iter()
                        .rfind(|from| from.dataset == *p)
                        .map(|from| (from.stage, s.stage))
                })
            })
            .collect()
    }

    /// Tasks of the job now running.
    pub fn running_tasks(&self) -> usize {
        self.stages.iter().map(|s| s.counts.running).sum()
    }
}

/// Task counts of a stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Running now.
    pub running: usize,
    /// Succeeded.
    pub succeeded: usize,
    /// Failed.
    pub failed: usize,
    /// Killed (cancelled, lost with an executor, or beaten by another attempt).
    pub killed: usize,
    /// Speculative copies launched.
    pub speculative: usize,
}

/// One stage attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSnapshot {
    /// Its id.
    pub stage: StageId,
    /// Its job.
    pub job: JobId,
    /// The dataset it computes.
    pub dataset: DatasetId,
    /// Whether it is a shuffle's map side.
    pub shuffle: bool,
    /// The datasets its tasks read (the stage DAG's edges).
    #[serde(default)]
    pub parents: Vec<DatasetId>,
    /// Its operators, top first.
    #[serde(default)]
    pub name: String,
    /// Its state.
    pub status: StageStatus,
    /// Partitions it computes.
    pub num_tasks: usize,
    /// Task attempt counts.
    pub counts: TaskCounts,
    /// When it was submitted.
    pub submitted_ms: u64,
    /// When it ended.
    pub completed_ms: Option<u64>,
    /// Sums over its successful tasks.
    pub totals: TaskFigures,
    /// Every task attempt, in launch order.
    pub tasks: Vec<TaskSnapshot>,
}

/// Quantities of a stage's successful tasks that quantiles are asked of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskMetric {
    /// Wall time from launch to end, in ms.
    Duration,
    /// Bytes fetched from peers.
    ShuffleRead,
    /// Bytes written into shuffle buckets.
    ShuffleWrite,
    /// Bytes spilled.
    Spill,
    /// Output bytes.
    Output,
}

impl StageSnapshot {
    /// The `qs` quantiles (each in 0..=1) of `metric` over the stage's successful tasks,
    /// by nearest rank; empty when no task has succeeded.
    pub fn quantiles(&self, metric: TaskMetric, qs: &[f64]) -> Vec<f64> {
        self.quantiles_by(qs, |t| {
            let f = t.figures.as_ref();
            Some(match metric {
                TaskMetric::Duration => t.duration_ms? as f64,
                TaskMetric::ShuffleRead => f?.bytes_fetched as f64,
                TaskMetric::ShuffleWrite => f?.shuffle_bytes_written as f64,
                TaskMetric::Spill => f?.spilled_bytes as f64,
                TaskMetric::Output => f?.output_bytes as f64,
            })
        })
    }

    /// The `qs` quantiles (each in 0..=1) of what `value` reads off each successful task
    /// (tasks it gives `None` for are left out), by nearest rank; empty when there is none.
    pub fn quantiles_by(
        &self,
        qs: &[f64],
        value: impl Fn(&TaskSnapshot) -> Option<f64>,
    ) -> Vec<f64> {
        let mut values: Vec<f64> = self
            .tasks
            .iter()
            .filter(|t| t.status == Some(TaskEndStatus::Success))
            .filter_map(value)
            .collect();
        if values.is_empty() {
            return Vec::new();
        }
        values.sort_by(f64::total_cmp);
        qs.iter()
            .map(|q| {
                let rank = (q.clamp(0.0, 1.0) * (values.len() - 1) as f64).round() as usize;
                values[rank]
            })
            .collect()
    }
}

/// One task attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// The attempt's id.
    pub task: u64,
    /// Its partition.
    pub partition: u32,
    /// Attempt number of the partition within the stage.
    pub attempt: u32,
    /// Where it ran.
    pub executor: ExecutorId,
    /// Whether it was a speculative copy.
    pub speculative: bool,
    /// When it was launched.
    pub launched_ms: u64,
    /// How it ended; `None` while running.
    pub status: Option<TaskEndStatus>,
    /// From launch to end.
    pub duration_ms: Option<u64>,
    /// Why it failed or was killed.
    pub reason: Option<String>,
    /// What it read and wrote, when it succeeded.
    pub figures: Option<TaskFigures>,
}

/// One executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorSnapshot {
    /// Its id.
    pub executor: ExecutorId,
    /// Its address.
    pub address: String,
    /// Task slots.
    pub cores: u32,
    /// Memory limit.
    pub memory_bytes: u64,
    /// Bytes of blocks held at its last heartbeat (live view only).
    pub used_bytes: u64,
    /// Blocks held at its last heartbeat (live view only).
    pub blocks: u32,
    /// Bytes of blocks spilled to its disk at its last heartbeat (live view only).
    pub disk_bytes: u64,
    /// What its mllib kernels run on.
    pub device: String,
    /// Whether it is registered and alive.
    pub active: bool,
    /// Why it was removed.
    pub removed_reason: Option<String>,
    /// Why it is excluded now, if it is.
    pub excluded: Option<String>,
    /// Task attempts running on it.
    pub running_tasks: usize,
    /// Task attempts that succeeded on it.
    pub succeeded_tasks: usize,
    /// Task attempts that failed on it.
    pub failed_tasks: usize,
    /// Task attempts killed on it.
    pub killed_tasks: usize,
    /// Sum of its tasks' run times, in ms.
    pub task_time_ms: u64,
    /// When it (last) registered.
    #[serde(default)]
    pub added_ms: u64,
    /// When it was removed, if it is.
    #[serde(default)]
    pub removed_ms: Option<u64>,
}

/// One cached dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedDatasetSnapshot {
    /// The dataset.
    pub dataset: DatasetId,
    /// Its partitions.
    pub partitions: usize,
    /// Partitions held by executors now.
    pub partitions_cached: usize,
    /// Bytes of those partitions.
    pub bytes: u64,
    /// Each partition held now, with its executor.
    #[serde(default)]
    pub blocks: Vec<CachedBlockSnapshot>,
    /// Partitions cached again after they were lost or evicted (recomputed from lineage).
    #[serde(default)]
    pub recomputed: usize,
}

/// One cached partition and where it is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedBlockSnapshot {
    /// The partition.
    pub partition: u32,
    /// The executor holding it.
    pub executor: ExecutorId,
    /// Its size.
    pub bytes: u64,
}

/// Finished jobs a snapshot keeps (the oldest are dropped beyond it), so a driver that runs
/// for weeks holds a bounded history.
pub const RETAINED_JOBS: usize = 1000;

/// Training runs a snapshot keeps (the oldest are dropped beyond it).
pub const RETAINED_TRAINING_RUNS: usize = 100;

/// Folds events into an [`AppSnapshot`].
#[derive(Debug, Default, Clone)]
pub struct SnapshotBuilder {
    /// Executors and application; jobs live in `jobs` until `snapshot()` lists them.
    snapshot: AppSnapshot,
    jobs: BTreeMap<JobId, JobSnapshot>,
    /// Finished jobs, oldest first.
    finished: std::collections::VecDeque<JobId>,
    /// (job, stage index) of each stage.
    stages: BTreeMap<StageId, (JobId, usize)>,
    /// (job, stage index, task index) of each task attempt.
    tasks: BTreeMap<u64, (JobId, usize, usize)>,
    executors: BTreeMap<ExecutorId, usize>,
    /// Cached partitions: (bytes, executor) by (dataset, partition).
    cached_blocks: BTreeMap<(DatasetId, u32), (u64, ExecutorId)>,
    cached: BTreeMap<DatasetId, usize>,
    /// Cached partitions lost (evicted or with their executor) and not cached again yet.
    lost_cached: std::collections::BTreeSet<(DatasetId, u32)>,
    /// Partitions of each cached dataset cached again after a loss.
    recomputed: BTreeMap<DatasetId, usize>,
}

impl SnapshotBuilder {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replays an event log written with `--event-log`.
    ///
    /// # Errors
    ///
    /// The log cannot be read or holds a line that is not an event.
    pub fn replay(path: &Path) -> std::io::Result<AppSnapshot> {
        let mut builder = Self::new();
        for event in read_event_log(path)? {
            builder.apply(&event);
        }
        Ok(builder.snapshot())
    }

    /// The snapshot so far.
    pub fn snapshot(&self) -> AppSnapshot {
        let mut s = self.snapshot.clone();
        s.jobs = self.jobs.values().cloned().collect();
        s.cached = self
            .cached
            .iter()
            .map(|(dataset, partitions)| {
                let blocks: Vec<CachedBlockSnapshot> = self
                    .cached_blocks
                    .range((*dataset, 0)..=(*dataset, u32::MAX))
                    .map(|((_, partition), (bytes, executor))| CachedBlockSnapshot {
                        partition: *partition,
                        executor: executor.clone(),
                        bytes: *bytes,
                    })
                    .collect();
                CachedDatasetSnapshot {
                    dataset: *dataset,
                    partitions: *partitions,
                    partitions_cached: blocks.len(),
                    bytes: blocks.iter().map(|b| b.bytes).sum(),
                    blocks,
                    recomputed: self.recomputed.get(dataset).copied().unwrap_or_default(),
                }
            })
            .collect();
        s
    }

    /// Records an executor's live figures from a heartbeat (not an event: too frequent to
    /// log, and meaningless after the fact).
    pub fn executor_heartbeat(&mut self, executor: &ExecutorId, used: u64, blocks: u32, disk: u64) {
        if let Some(e) = self
            .executors
            .get(executor)
            .and_then(|i| self.snapshot.executors.get_mut(*i))
        {
            e.used_bytes = used;
            e.blocks = blocks;
            e.disk_bytes = disk;
        }
    }

    fn executor_mut(&mut self, executor: &ExecutorId) -> Option<&mut ExecutorSnapshot> {
        self.executors
            .get(executor)
            .and_then(|i| self.snapshot.executors.get_mut(*i))
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &SchedulerEvent) {
        use SchedulerEvent::*;
        match event {
            ApplicationStarted { app, time_ms } => {
                self.snapshot.app = app.clone();
                self.snapshot.started_ms = *time_ms;
            }
            ExecutorAdded {
                executor,
                address,
                cores,
                memory_bytes,
                device,
                time_ms,
                ..
            } => {
                let fresh = ExecutorSnapshot {
                    executor: executor.clone(),
                    address: address.clone(),
                    cores: *cores,
                    memory_bytes: *memory_bytes,
                    used_bytes: 0,
                    blocks: 0,
                    disk_bytes: 0,
                    device: device.clone(),
                    active: true,
                    removed_reason: None,
                    excluded: None,
                    running_tasks: 0,
                    succeeded_tasks: 0,
                    failed_tasks: 0,
                    killed_tasks: 0,
                    task_time_ms: 0,
                    added_ms: *time_ms,
                    removed_ms: None,
                };
                match self.executors.get(executor) {
                    Some(i) => {
                        let old = &mut self.snapshot.executors[*i];
                        // Re-registration: same executor, new life; task history stays.
                        old.address = fresh.address;
                        old.cores = fresh.cores;
                        old.memory_bytes = fresh.memory_bytes;
                        old.device = fresh.device;
                        old.active = true;
                        old.removed_reason = None;
                        old.added_ms = fresh.added_ms;
                        old.removed_ms = None;
                        old.running_tasks = 0;
                    }
                    None => {
                        self.executors
                            .insert(executor.clone(), self.snapshot.executors.len());
                        self.snapshot.executors.push(fresh);
                    }
                }
            }
            ExecutorRemoved {
                executor,
                reason,
                time_ms,
            } => {
                if let Some(e) = self.executor_mut(executor) {
                    e.active = false;
                    e.removed_reason = Some(reason.clone());
                    e.removed_ms = Some(*time_ms);
                }
                let lost = &mut self.lost_cached;
                self.cached_blocks.retain(|key, (_, at)| {
                    let keep = at != executor;
                    if !keep {
                        lost.insert(*key);
                    }
                    keep
                });
            }
            ExecutorExcluded {
                executor, reason, ..
            } => {
                if let Some(e) = self.executor_mut(executor) {
                    e.excluded = Some(reason.clone());
                }
            }
            ExecutorIncluded { executor, .. } => {
                if let Some(e) = self.executor_mut(executor) {
                    e.excluded = None;
                }
            }
            JobStarted {
                job,
                description,
                pool,
                plan,
                tags,
                time_ms,
            } => {
                self.jobs.insert(
                    *job,
                    JobSnapshot {
                        job: *job,
                        description: description.clone(),
                        pool: pool.clone(),
                        plan: plan.clone(),
                        tags: tags.clone(),
                        status: JobStatus::Running,
                        error: None,
                        submitted_ms: *time_ms,
                        completed_ms: None,
                        stages: Vec::new(),
                    },
                );
            }
            JobEnded {
                job,
                status,
                error,
                time_ms,
            } => {
                if let Some(j) = self.jobs.get_mut(job) {
                    j.status = *status;
                    j.error = error.clone();
                    j.completed_ms = Some(*time_ms);
                    self.finished.push_back(*job);
                }
                while self.finished.len() > RETAINED_JOBS {
                    if let Some(old) = self.finished.pop_front() {
                        self.forget_job(old);
                    }
                }
            }
            StageSubmitted {
                job,
                stage,
                dataset,
                tasks,
                shuffle,
                parents,
                name,
                time_ms,
            } => {
                let Some(j) = self.jobs.get_mut(job) else {
                    return;
                };
                let stages = &mut j.stages;
                self.stages.insert(*stage, (*job, stages.len()));
                stages.push(StageSnapshot {
                    stage: *stage,
                    job: *job,
                    dataset: *dataset,
                    shuffle: *shuffle,
                    parents: parents.clone(),
                    name: name.clone(),
                    status: StageStatus::Active,
                    num_tasks: *tasks,
                    counts: TaskCounts::default(),
                    submitted_ms: *time_ms,
                    completed_ms: None,
                    totals: TaskFigures::default(),
                    tasks: Vec::new(),
                });
            }
            StageCompleted {
                stage,
                status,
                time_ms,
                ..
            } => {
                if let Some(s) = self.stage_mut(*stage) {
                    s.status = *status;
                    s.completed_ms = Some(*time_ms);
                }
            }
            TaskStarted {
                stage,
                task,
                partition,
                attempt,
                executor,
                speculative,
                time_ms,
                ..
            } => {
                let Some((ji, si)) = self.stages.get(stage).copied() else {
                    return;
                };
                let Some(s) = self.jobs.get_mut(&ji).and_then(|j| j.stages.get_mut(si)) else {
                    return;
                };
                self.tasks.insert(*task, (ji, si, s.tasks.len()));
                s.counts.running += 1;
                if *speculative {
                    s.counts.speculative += 1;
                }
                s.tasks.push(TaskSnapshot {
                    task: *task,
                    partition: *partition,
                    attempt: *attempt,
                    executor: executor.clone(),
                    speculative: *speculative,
                    launched_ms: *time_ms,
                    status: None,
                    duration_ms: None,
                    reason: None,
                    figures: None,
                });
                if let Some(e) = self.executor_mut(executor) {
                    e.running_tasks += 1;
                }
            }
            TaskEnded {
                task,
                executor,
                status,
                reason,
                figures,
                time_ms,
                ..
            } => {
                let Some((ji, si, ti)) = self.tasks.get(task).copied() else {
                    return;
                };
                let Some(s) = self.jobs.get_mut(&ji).and_then(|j| j.stages.get_mut(si)) else {
                    return;
                };
                let t = &mut s.tasks[ti];
                if t.status.is_some() {
                    return;
                }
                t.status = Some(*status);
                t.duration_ms = Some(time_ms.saturating_sub(t.launched_ms));
                t.reason = reason.clone();
                t.figures = figures.clone();
                s.counts.running = s.counts.running.saturating_sub(1);
                match status {
                    TaskEndStatus::Success => s.counts.succeeded += 1,
                    TaskEndStatus::Failed => s.counts.failed += 1,
                    TaskEndStatus::Killed => s.counts.killed += 1,
                }
                let run_ms = figures.as_ref().map(|f| f.run_ms).unwrap_or_default();
                if let Some(f) = figures {
                    let tot = &mut s.totals;
                    tot.rows += f.rows;
                    tot.output_bytes += f.output_bytes;
                    tot.blocks_read_local += f.blocks_read_local;
                    tot.blocks_read_remote += f.blocks_read_remote;
                    tot.bytes_fetched += f.bytes_fetched;
                    tot.shuffle_bytes_written += f.shuffle_bytes_written;
                    tot.spilled_bytes += f.spilled_bytes;
                    tot.run_ms += f.run_ms;
                    tot.fetch_ms += f.fetch_ms;
                }
                if let Some(e) = self.executor_mut(executor) {
                    e.running_tasks = e.running_tasks.saturating_sub(1);
                    e.task_time_ms += run_ms;
                    match status {
                        TaskEndStatus::Success => e.succeeded_tasks += 1,
                        TaskEndStatus::Failed => e.failed_tasks += 1,
                        TaskEndStatus::Killed => e.killed_tasks += 1,
                    }
                }
            }
            DatasetCached {
                dataset,
                partitions,
                ..
            } => {
                self.cached.insert(*dataset, *partitions);
            }
            BlockCached {
                dataset,
                partition,
                executor,
                bytes,
                ..
            } => {
                if self.cached.contains_key(dataset) {
                    if self.lost_cached.remove(&(*dataset, *partition)) {
                        *self.recomputed.entry(*dataset).or_default() += 1;
                    }
                    self.cached_blocks
                        .insert((*dataset, *partition), (*bytes, executor.clone()));
                }
            }
            BlockUncached {
                dataset, partition, ..
            } => {
                if self.cached_blocks.remove(&(*dataset, *partition)).is_some() {
                    self.lost_cached.insert((*dataset, *partition));
                }
            }
            DatasetUnpersisted { dataset, .. } => {
                self.cached.remove(dataset);
                self.recomputed.remove(dataset);
                self.lost_cached.retain(|(d, _)| d != dataset);
                self.cached_blocks.retain(|(d, _), _| d != dataset);
            }
            TrainingPass {
                run,
                algorithm,
                pass,
                objective,
                tree_levels,
                rows,
                time_ms,
            } => {
                let runs = &mut self.snapshot.training;
                let i = match runs.iter().position(|r| r.run == *run) {
                    Some(i) => i,
                    None => {
                        runs.push(TrainingSnapshot {
                            run: *run,
                            algorithm: algorithm.clone(),
                            rows: *rows,
                            pass_objectives: Vec::new(),
                            tree_levels: Vec::new(),
                            started_ms: *time_ms,
                            updated_ms: *time_ms,
                            iterations: None,
                            converged: None,
                            objective_history: Vec::new(),
                        });
                        if runs.len() > RETAINED_TRAINING_RUNS {
                            runs.remove(0);
                        }
                        runs.len() - 1
                    }
                };
                let r = &mut runs[i];
                // Passes may arrive out of order: each goes to its own place.
                let at = (*pass as usize).max(1) - 1;
                if r.pass_objectives.len() <= at {
                    r.pass_objectives.resize(at + 1, f64::NAN);
                }
                r.pass_objectives[at] = *objective;
                r.tree_levels = tree_levels.clone();
                r.updated_ms = *time_ms;
            }
            TrainingEnded {
                run,
                iterations,
                converged,
                objective_history,
                time_ms,
            } => {
                if let Some(r) = self.snapshot.training.iter_mut().find(|r| r.run == *run) {
                    r.iterations = Some(*iterations);
                    r.converged = Some(*converged);
                    r.objective_history = objective_history.clone();
                    r.updated_ms = *time_ms;
                }
            }
        }
    }

    fn stage_mut(&mut self, stage: StageId) -> Option<&mut StageSnapshot> {
        let (ji, si) = self.stages.get(&stage).copied()?;
        self.jobs.get_mut(&ji)?.stages.get_mut(si)
    }

    /// Drops a finished job and the indexes of its stages and tasks.
    fn forget_job(&mut self, job: JobId) {
        let Some(j) = self.jobs.remove(&job) else {
            return;
        };
        for stage in &j.stages {
            self.stages.remove(&stage.stage);
            for task in &stage.tasks {
                self.tasks.remove(&task.task);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_finished_jobs_are_kept() {
        let mut b = SnapshotBuilder::new();
        let extra = 5;
        for j in 1..=(RETAINED_JOBS + extra) as u64 {
            b.apply(&SchedulerEvent::JobStarted {
                job: JobId(j),
                description: format!("job {j}"),
                pool: "default".into(),
                plan: String::new(),
                tags: Vec::new(),
                time_ms: j,
            });
            b.apply(&SchedulerEvent::StageSubmitted {
                job: JobId(j),
                stage: StageId(j as u32),
                dataset: DatasetId(j),
                tasks: 1,
                shuffle: false,
                parents: Vec::new(),
                name: String::new(),
                time_ms: j,
            });
            b.apply(&SchedulerEvent::JobEnded {
                job: JobId(j),
                status: JobStatus::Succeeded,
                error: None,
                time_ms: j + 1,
            });
        }
        // A running job is never dropped.
        b.apply(&SchedulerEvent::JobStarted {
            job: JobId(0),
            description: "still running".into(),
            pool: "default".into(),
            plan: String::new(),
            tags: Vec::new(),
            time_ms: 0,
        });
        let s = b.snapshot();
        assert_eq!(s.jobs.len(), RETAINED_JOBS + 1);
        assert_eq!(s.jobs[0].job, JobId(0));
        assert_eq!(s.jobs[1].job, JobId(extra as u64 + 1));
        assert_eq!(b.stages.len(), RETAINED_JOBS);
    }
}
