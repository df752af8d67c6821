//! The scheduler loop: one task that owns the state of every job, stage, task attempt and
//! executor, and changes it only in answer to events read from one bounded channel.
//!
//! ```text
//!   gRPC: RegisterExecutor, Heartbeat, ReportTaskStatus ─┐
//!   jobs: JobStarted, SubmitStage, JobEnded, CancelJob ──┼─► mpsc (bounded) ─► Scheduler
//!   its own RPCs (JoinSet): Launched ────────────────────┤      │ owns executors, jobs,
//!   timer: Tick (heartbeat expiry, speculation) ─────────┘      │ stages, task attempts
//!                                                                ├─► LaunchTask / CancelTask
//!                                                                │   (in the loop's JoinSet,
//!                                                                │    never awaited inline)
//!                                                                └─► SchedulerEvent: broadcast,
//!                                                                    snapshot, event log
//! ```
//!
//! A job's own task (see `dag_scheduler`) walks its lineage: it decides which dataset to
//! compute next and submits one stage at a time, then awaits the stage's report. Which
//! task runs where and when, retries, speculation, cancellation and executor loss are all
//! decided here.

pub mod backend;
mod state;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ember_engine::proto::{LaunchTaskRequest, TaskStatus, TaskSuccess};
use ember_engine::{BlockId, DatasetId, ExecutorId, JobId, StageId};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::block_locations::BlockLocations;
use crate::error::{DriverError, Result};
use crate::events::{JobStatus, SchedulerEvent};
use crate::registry::{ExecutorInfo, ExecutorRegistry};
use crate::snapshot::AppSnapshot;
use crate::{DriverConfig, JobDescription};

pub use backend::{ExecutorBackend, GrpcBackend, LaunchError};
pub(crate) use state::Scheduler;

/// How jobs share the executors' task slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SchedulingMode {
    /// The oldest job's tasks go first; later jobs get the slots it leaves free.
    #[default]
    Fifo,
    /// Slots go round-robin between pools, then between the jobs of a pool: a short job
    /// submitted behind a long one starts at once.
    Fair,
}

impl std::str::FromStr for SchedulingMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "fifo" => Ok(Self::Fifo),
            "fair" => Ok(Self::Fair),
            other => Err(format!("unknown scheduling mode `{other}` (fifo or fair)")),
        }
    }
}

/// When a straggler gets a speculative copy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speculation {
    /// Whether stragglers get copies.
    pub enabled: bool,
    /// Share of a stage's tasks that must have finished first.
    pub quantile: f64,
    /// A task is a straggler once it has run this many times the median of finished ones.
    pub multiplier: f64,
    /// ... and at least this long.
    pub min_runtime: Duration,
}

impl Default for Speculation {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: 0.75,
            multiplier: 1.5,
            min_runtime: Duration::from_secs(1),
        }
    }
}

/// When an executor is given no tasks for a while.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exclusion {
    /// Strikes within `window` that exclude an executor. A strike is a task that failed on
    /// the executor and then succeeded on another, or a task of the executor beaten by a
    /// speculative copy elsewhere (so a bad input row, which fails everywhere, never
    /// excludes anyone).
    pub max_strikes: usize,
    /// How far back strikes count.
    pub window: Duration,
    /// How long an excluded executor gets no tasks.
    pub duration: Duration,
}

impl Default for Exclusion {
    fn default() -> Self {
        Self {
            max_strikes: 2,
            window: Duration::from_secs(300),
            duration: Duration::from_secs(60),
        }
    }
}

/// Task attempt id: unique within a driver.
pub type TaskId = u64;

/// Where a stage's output goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OutputKind {
    /// A block per partition in the block managers (`cached` ones are evictable).
    Store { cached: bool },
    /// A block per reduce partition of each map partition.
    Shuffle,
    /// A Parquet file per partition under this directory.
    Parquet(PathBuf),
}

/// One stage attempt as a job hands it to the scheduler.
#[derive(Debug)]
pub(crate) struct StageSpec {
    pub(crate) job: JobId,
    pub(crate) stage: StageId,
    pub(crate) dataset: DatasetId,
    /// The datasets its tasks read.
    pub(crate) parents: Vec<DatasetId>,
    /// Its operators, top first (for the UI).
    pub(crate) name: String,
    /// Partitions to compute.
    pub(crate) partitions: Vec<u32>,
    /// For each of `partitions`, executors to prefer (holders of its inputs).
    pub(crate) preferred: Vec<Vec<ExecutorId>>,
    /// Plan, inputs and ids; partition, attempt, task id and output are set per task.
    pub(crate) template: LaunchTaskRequest,
    pub(crate) output: OutputKind,
}

/// One partition a stage computed.
#[derive(Debug, Clone)]
pub(crate) struct TaskDone {
    pub(crate) partition: u32,
    pub(crate) executor: ExecutorId,
    pub(crate) success: TaskSuccess,
}

/// How a stage attempt ended.
#[derive(Debug)]
pub(crate) enum StageEnd {
    /// Every partition was computed.
    Complete,
    /// A task could not read an input block: recompute it, then resubmit.
    FetchFailed {
        block: BlockId,
        executor: ExecutorId,
        reason: String,
    },
    /// The job cannot succeed.
    Failed(DriverError),
    /// The job was cancelled.
    Cancelled(String),
}

/// What the scheduler tells a job about one of its stages once no task of it runs.
#[derive(Debug)]
pub(crate) struct StageReport {
    /// Partitions computed (also when the stage did not complete).
    pub(crate) done: Vec<TaskDone>,
    /// Task attempts launched.
    pub(crate) attempts: usize,
    /// Task attempts that failed.
    pub(crate) failures: usize,
    /// Executors lost while the stage ran.
    pub(crate) executors_lost: usize,
    pub(crate) end: StageEnd,
}

/// What the scheduler loop reads.
#[derive(Debug)]
pub(crate) enum Event {
    JobStarted {
        job: JobId,
        description: String,
        pool: String,
        plan: String,
        tags: Vec<String>,
    },
    JobEnded {
        job: JobId,
        status: JobStatus,
        error: Option<String>,
    },
    SubmitStage {
        spec: StageSpec,
        reply: oneshot::Sender<StageReport>,
    },
    /// Cancels one job (or every running job); `reply` gets how many were cancelled once
    /// none of their tasks runs any more.
    CancelJob {
        job: Option<JobId>,
        reason: String,
        reply: Option<oneshot::Sender<usize>>,
    },
    /// The executor accepted the task (`Ok`, with its status when it already ended) or
    /// could not be given it.
    Launched {
        task: TaskId,
        result: std::result::Result<Option<TaskStatus>, LaunchError>,
    },
    TaskStatus {
        executor: ExecutorId,
        task: TaskId,
        status: TaskStatus,
    },
    ExecutorRegistered {
        info: ExecutorInfo,
        /// `Err` with the reason when the registration is refused.
        reply: oneshot::Sender<std::result::Result<(), String>>,
    },
    Heartbeat {
        beat: Heartbeat,
        reply: oneshot::Sender<bool>,
    },
    ExecutorLost {
        executor: ExecutorId,
        reason: String,
        reply: Option<oneshot::Sender<bool>>,
    },
    /// An event from outside the loop: a cached dataset registered or dropped, a training
    /// pass.
    Record {
        event: SchedulerEvent,
    },
    Snapshot {
        reply: oneshot::Sender<AppSnapshot>,
    },
}

/// One executor heartbeat.
#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    pub(crate) executor: ExecutorId,
    pub(crate) used_bytes: u64,
    pub(crate) blocks: u32,
    pub(crate) disk_bytes: u64,
    pub(crate) running: Vec<TaskId>,
    pub(crate) evicted: Vec<BlockId>,
}

/// Events the loop may hold unread before senders wait.
const EVENT_QUEUE: usize = 4096;

/// The way into the scheduler loop.
#[derive(Debug, Clone)]
pub(crate) struct SchedulerHandle {
    tx: mpsc::Sender<Event>,
    events: broadcast::Sender<SchedulerEvent>,
}

fn gone() -> DriverError {
    DriverError::Internal("the scheduler loop has stopped".into())
}

impl SchedulerHandle {
    /// Starts the loop; it runs until the returned task is aborted.
    pub(crate) fn start(
        config: DriverConfig,
        registry: Arc<ExecutorRegistry>,
        locations: Arc<BlockLocations>,
        backend: backend::Backend,
        app: String,
    ) -> Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let events = broadcast::channel(1024).0;
        let scheduler = Scheduler::new(config, registry, locations, backend, events.clone(), app)?;
        let task = tokio::spawn(scheduler.run(rx));
        Ok((Self { tx, events }, task))
    }

    async fn send(&self, event: Event) -> Result<()> {
        self.tx.send(event).await.map_err(|_| gone())
    }

    /// Scheduler events from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<SchedulerEvent> {
        self.events.subscribe()
    }

    pub(crate) async fn job_started(&self, job: JobId, description: &JobDescription) {
        let _ = self
            .send(Event::JobStarted {
                job,
                description: description.text.clone(),
                pool: description.pool.clone(),
                plan: description.plan.clone(),
                tags: description.tags.clone(),
            })
            .await;
    }

    pub(crate) async fn job_ended(&self, job: JobId, status: JobStatus, error: Option<String>) {
        let _ = self.send(Event::JobEnded { job, status, error }).await;
    }

    /// Runs a stage; resolves when none of its tasks runs any more.
    pub(crate) async fn run_stage(&self, spec: StageSpec) -> Result<StageReport> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::SubmitStage { spec, reply }).await?;
        rx.await.map_err(|_| gone())
    }

    /// Cancels `job` (all running jobs when `None`); resolves once none of their tasks
    /// runs, with the number of jobs cancelled.
    pub(crate) async fn cancel(&self, job: Option<JobId>, reason: String) -> Result<usize> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::CancelJob {
            job,
            reason,
            reply: Some(reply),
        })
        .await?;
        rx.await.map_err(|_| gone())
    }

    pub(crate) async fn task_status(&self, executor: ExecutorId, task: TaskId, status: TaskStatus) {
        let _ = self
            .send(Event::TaskStatus {
                executor,
                task,
                status,
            })
            .await;
    }

    /// Registers an executor; the inner `Err` says why the registration was refused.
    pub(crate) async fn register(
        &self,
        info: ExecutorInfo,
    ) -> Result<std::result::Result<(), String>> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::ExecutorRegistered { info, reply }).await?;
        rx.await.map_err(|_| gone())
    }

    /// Records a heartbeat; false when the executor must register again.
    pub(crate) async fn heartbeat(&self, beat: Heartbeat) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::Heartbeat { beat, reply }).await?;
        rx.await.map_err(|_| gone())
    }

    /// Declares an executor lost; true when it was alive until now.
    pub(crate) async fn executor_lost(&self, executor: ExecutorId, reason: String) -> bool {
        let (reply, rx) = oneshot::channel();
        if self
            .send(Event::ExecutorLost {
                executor,
                reason,
                reply: Some(reply),
            })
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    pub(crate) async fn record_event(&self, event: SchedulerEvent) {
        let _ = self.send(Event::Record { event }).await;
    }

    pub(crate) async fn snapshot(&self) -> Result<AppSnapshot> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::Snapshot { reply }).await?;
        rx.await.map_err(|_| gone())
    }
}
