//! The scheduler's state and its event handlers. Everything here runs on the loop's one
//! task: plain structs, no locks, no awaits on the network (RPCs are spawned and report
//! back as events).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ember_engine::proto::{
    task_output, ShuffleWrite, StoreBlock, TaskOutput, TaskStatus, WriteParquet,
};
use ember_engine::{DatasetId, ExecutorId, JobId, StageId};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::backend::{Backend, LaunchError};
use super::{
    Event, OutputKind, SchedulingMode, StageEnd, StageReport, StageSpec, TaskDone, TaskId,
};
use crate::block_locations::BlockLocations;
use crate::error::{DriverError, Result};
use crate::events::{now_ms, EventLog, SchedulerEvent, StageStatus, TaskEndStatus, TaskFigures};
use crate::registry::{ExecutorInfo, ExecutorRegistry};
use crate::snapshot::SnapshotBuilder;
use crate::DriverConfig;

mod executors;
mod health;
mod outcomes;

/// A job, as the loop sees it.
///
/// ```text
///   JobStarted ──► Running ──CancelJob──► Cancelling ──(no task left)──► cancel waiters told
///                     │                        │
///                     └──────── JobEnded ──────┴──► Succeeded | Failed | Cancelled (removed)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Job {
    /// Its stages may launch tasks.
    Running,
    /// Cancelled: its stages launch nothing more and end once their running tasks stop.
    Cancelling(String),
}

/// A stage attempt.
///
/// ```text
///   SubmitStage ──► Running ──every partition done, nothing running──► Complete
///                     │
///                     ├─ fetch failure ───────────┐
///                     ├─ task failed for good ────┼──► Aborting(cause) ──nothing running──►
///                     ├─ job cancelled ───────────┤        Failed | Cancelled
///                     └─ no executor for too long ┘   (the job resubmits after a fetch
///                                                      failure, once the input is rebuilt)
/// ```
#[derive(Debug)]
pub(crate) enum Stage {
    /// Launching tasks for its pending partitions.
    Running,
    /// Stopped: launches nothing, reports once its running attempts are gone.
    Aborting(StageEnd),
}

/// A task attempt.
///
/// ```text
///   launched ──► Launching ──accepted──► Running ──status──► Succeeded | Failed (removed)
///                    │                      │
///                    │ refused: executor     ├─ cancel (job cancelled, another attempt
///                    │ lost, task requeued   │  won, ran past the task timeout)
///                    ▼                      ▼
///                 Killed ◄──status──── Killing(reason)
///                    ▲
///                    └── executor lost (heartbeats stopped), or its status never came
/// ```
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TaskAttempt {
    /// The launch RPC is in flight.
    Launching,
    /// The executor accepted it.
    Running,
    /// Asked to stop; its slot is held until the executor says it ended.
    Killing(String),
}

/// One task attempt.
#[derive(Debug)]
struct Attempt {
    stage: StageId,
    job: JobId,
    /// Index into the stage's partitions.
    index: usize,
    partition: u32,
    executor: ExecutorId,
    state: TaskAttempt,
    started: Instant,
    speculative: bool,
    /// Since when the executor's heartbeats no longer list it as running.
    absent_since: Option<Instant>,
}

/// One partition of a stage.
#[derive(Debug)]
struct Part {
    partition: u32,
    preferred: Vec<ExecutorId>,
    /// Failed attempts that count against the attempt limit.
    failures: u32,
    /// Attempts launched.
    launched: u32,
    running: Vec<TaskId>,
    done: bool,
    queued: bool,
    speculated: bool,
    /// Executors where an attempt failed.
    failed_on: Vec<ExecutorId>,
}

/// A running stage attempt.
#[derive(Debug)]
struct StageRun {
    job: JobId,
    dataset: DatasetId,
    template: ember_engine::proto::LaunchTaskRequest,
    output: OutputKind,
    parts: Vec<Part>,
    pending: VecDeque<usize>,
    speculative: VecDeque<usize>,
    /// Run times of the successful attempts, for speculation.
    durations: Vec<Duration>,
    done: BTreeMap<usize, TaskDone>,
    /// Partitions done, and attempts running (kept as counts: checked after every event).
    done_parts: usize,
    running_attempts: usize,
    attempts: usize,
    failures: usize,
    lost: BTreeSet<ExecutorId>,
    state: Stage,
    reply: Option<oneshot::Sender<StageReport>>,
    starved_since: Option<Instant>,
}

impl StageRun {
    fn running(&self) -> bool {
        self.running_attempts > 0
    }

    fn complete(&self) -> bool {
        self.done_parts == self.parts.len()
    }

    fn shuffle(&self) -> bool {
        self.output == OutputKind::Shuffle
    }

    fn abort(&mut self, end: StageEnd) {
        if matches!(self.state, Stage::Running) {
            self.state = Stage::Aborting(end);
            self.pending.clear();
            self.speculative.clear();
        }
    }

    fn requeue(&mut self, index: usize) {
        let part = &mut self.parts[index];
        if matches!(self.state, Stage::Running)
            && !part.done
            && part.running.is_empty()
            && !part.queued
        {
            part.queued = true;
            self.pending.push_back(index);
        }
    }
}

/// One job.
#[derive(Debug)]
struct JobState {
    pool: String,
    state: Job,
    running_tasks: usize,
    stages: Vec<StageId>,
}

/// One executor.
#[derive(Debug)]
struct Exec {
    info: ExecutorInfo,
    alive: bool,
    last_heartbeat: Instant,
    running: BTreeSet<TaskId>,
    strikes: VecDeque<(Instant, String)>,
    excluded_until: Option<Instant>,
}

impl Exec {
    fn free_slots(&self, now: Instant) -> u32 {
        if !self.alive || self.excluded_until.is_some_and(|t| t > now) {
            return 0;
        }
        self.info.cores.saturating_sub(self.running.len() as u32)
    }
}

/// Where events go: subscribers, the snapshot, the event log.
struct Sink {
    broadcast: broadcast::Sender<SchedulerEvent>,
    snapshot: SnapshotBuilder,
    log: Option<EventLog>,
}

impl Sink {
    fn emit(&mut self, event: SchedulerEvent) {
        self.snapshot.apply(&event);
        self.write_log(|log| log.append(&event));
        let _ = self.broadcast.send(event);
    }

    /// Writes out the event log's buffer.
    fn flush(&mut self) {
        self.write_log(EventLog::flush);
    }

    /// Runs `write` on the event log; a failed write stops logging (the loop goes on).
    fn write_log(&mut self, write: impl FnOnce(&mut EventLog) -> std::io::Result<()>) {
        if let Some(log) = &mut self.log {
            if let Err(e) = write(log) {
                tracing::error!(path = %log.path().display(), error = %e, "event log write failed; logging stops");
                self.log = None;
            }
        }
    }
}

/// The scheduler: owns every job, stage, task attempt and executor.
pub(crate) struct Scheduler {
    config: DriverConfig,
    registry: Arc<ExecutorRegistry>,
    locations: Arc<BlockLocations>,
    backend: Backend,
    /// RPCs in flight (launches report back as events; cancels report nothing). Owned
    /// here, so they stop with the loop.
    rpcs: JoinSet<Option<Event>>,
    /// Callers of `cancel` waiting until their jobs have no task left.
    cancel_waiters: Vec<(BTreeSet<JobId>, usize, oneshot::Sender<usize>)>,
    sink: Sink,
    executors: BTreeMap<ExecutorId, Exec>,
    jobs: BTreeMap<JobId, JobState>,
    stages: BTreeMap<StageId, StageRun>,
    attempts: HashMap<TaskId, Attempt>,
    next_task: TaskId,
    /// Cached datasets (their blocks are reported in the snapshot).
    cached: BTreeSet<DatasetId>,
}

impl Scheduler {
    pub(crate) fn new(
        config: DriverConfig,
        registry: Arc<ExecutorRegistry>,
        locations: Arc<BlockLocations>,
        backend: Backend,
        broadcast: broadcast::Sender<SchedulerEvent>,
        app: String,
    ) -> Result<Self> {
        let log =
            match &config.event_log {
                Some(dir) => Some(EventLog::create(dir, &app).map_err(|e| {
                    DriverError::Engine(ember_engine::EngineError::io(dir.clone(), e))
                })?),
                None => None,
            };
        let mut sink = Sink {
            broadcast,
            snapshot: SnapshotBuilder::new(),
            log,
        };
        sink.emit(SchedulerEvent::ApplicationStarted {
            app,
            time_ms: now_ms(),
        });
        Ok(Self {
            config,
            registry,
            locations,
            backend,
            rpcs: JoinSet::new(),
            cancel_waiters: Vec::new(),
            sink,
            executors: BTreeMap::new(),
            jobs: BTreeMap::new(),
            stages: BTreeMap::new(),
            attempts: HashMap::new(),
            next_task: 1,
            cached: BTreeSet::new(),
        })
    }

    /// How often the loop looks at the clock: heartbeat expiry, speculation, starvation.
    fn tick_interval(&self) -> Duration {
        (self.config.heartbeat_interval / 2)
            .clamp(Duration::from_millis(20), Duration::from_millis(200))
    }

    /// Reads events until every sender is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        let mut ticker = tokio::time::interval(self.tick_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => self.handle(event),
                    None => return,
                },
                Some(done) = self.rpcs.join_next(), if !self.rpcs.is_empty() => {
                    if let Ok(Some(event)) = done {
                        self.handle(event);
                    }
                }
                _ = ticker.tick() => self.tick(Instant::now()),
            }
            // Idle for now: the event log catches up (a no-op when nothing is buffered).
            if rx.is_empty() {
                self.sink.flush();
            }
        }
    }

    /// Applies the results of RPCs that have finished (for tests that drive the loop by
    /// hand).
    #[cfg(test)]
    pub(crate) fn finished_rpcs(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(done) = self.rpcs.try_join_next() {
            if let Ok(Some(event)) = done {
                events.push(event);
            }
        }
        events
    }

    /// Applies one event.
    pub(crate) fn handle(&mut self, event: Event) {
        match event {
            Event::JobStarted {
                job,
                description,
                pool,
                plan,
                tags,
            } => self.job_started(job, description, pool, plan, tags),
            Event::JobEnded { job, status, error } => {
                self.jobs.remove(&job);
                self.job_drained(job);
                self.sink.emit(SchedulerEvent::JobEnded {
                    job,
                    status,
                    error,
                    time_ms: now_ms(),
                });
            }
            Event::SubmitStage { spec, reply } => self.submit_stage(spec, reply),
            Event::CancelJob { job, reason, reply } => self.cancel_jobs(job, reason, reply),
            Event::Launched { task, result } => self.launched(task, result),
            Event::TaskStatus {
                executor,
                task,
                status,
            } => self.task_status(&executor, task, status),
            Event::ExecutorRegistered { info, reply } => {
                let _ = reply.send(self.register(info));
            }
            Event::Heartbeat { beat, reply } => {
                let known = self.heartbeat(beat);
                let _ = reply.send(known);
            }
            Event::ExecutorLost {
                executor,
                reason,
                reply,
            } => {
                let was_alive = self.executor_lost(&executor, &reason);
                if let Some(reply) = reply {
                    let _ = reply.send(was_alive);
                }
            }
            Event::Record { event } => {
                match &event {
                    SchedulerEvent::DatasetCached { dataset, .. } => {
                        self.cached.insert(*dataset);
                    }
                    SchedulerEvent::DatasetUnpersisted { dataset, .. } => {
                        self.cached.remove(dataset);
                    }
                    _ => {}
                }
                self.sink.emit(event);
            }
            Event::Snapshot { reply } => {
                // The log is never behind a snapshot.
                self.sink.flush();
                let _ = reply.send(self.sink.snapshot.snapshot());
            }
        }
        self.schedule(Instant::now());
    }

    fn job_started(
        &mut self,
        job: JobId,
        description: String,
        pool: String,
        plan: String,
        tags: Vec<String>,
    ) {
        self.jobs.insert(
            job,
            JobState {
                pool: pool.clone(),
                state: Job::Running,
                running_tasks: 0,
                stages: Vec::new(),
            },
        );
        self.sink.emit(SchedulerEvent::JobStarted {
            job,
            description,
            pool,
            plan,
            tags,
            time_ms: now_ms(),
        });
    }

    fn submit_stage(&mut self, spec: StageSpec, reply: oneshot::Sender<StageReport>) {
        let job_state = self.jobs.get_mut(&spec.job);
        let cancelled = match job_state.as_ref().map(|j| &j.state) {
            Some(Job::Running) => None,
            Some(Job::Cancelling(reason)) => Some(reason.clone()),
            None => Some(format!("{} is not running", spec.job)),
        };
        if let Some(reason) = cancelled {
            let _ = reply.send(StageReport {
                done: Vec::new(),
                attempts: 0,
                failures: 0,
                executors_lost: 0,
                end: StageEnd::Cancelled(reason),
            });
            return;
        }
        if let Some(j) = job_state {
            j.stages.push(spec.stage);
        }
        let parts: Vec<Part> = spec
            .partitions
            .iter()
            .zip(
                spec.preferred
                    .into_iter()
                    .chain(std::iter::repeat(Vec::new())),
            )
            .map(|(p, preferred)| Part {
                partition: *p,
                preferred,
                failures: 0,
                launched: 0,
                running: Vec::new(),
                done: false,
                queued: true,
                speculated: false,
                failed_on: Vec::new(),
            })
            .collect();
        let stage = StageRun {
            job: spec.job,
            dataset: spec.dataset,
            template: spec.template,
            output: spec.output,
            pending: (0..parts.len()).collect(),
            parts,
            speculative: VecDeque::new(),
            durations: Vec::new(),
            done: BTreeMap::new(),
            done_parts: 0,
            running_attempts: 0,
            attempts: 0,
            failures: 0,
            lost: BTreeSet::new(),
            state: Stage::Running,
            reply: Some(reply),
            starved_since: None,
        };
        self.sink.emit(SchedulerEvent::StageSubmitted {
            job: spec.job,
            stage: spec.stage,
            dataset: spec.dataset,
            tasks: stage.parts.len(),
            shuffle: stage.shuffle(),
            parents: spec.parents,
            name: spec.name,
            time_ms: now_ms(),
        });
        self.stages.insert(spec.stage, stage);
        self.maybe_finish(spec.stage);
    }

    /// Places pending tasks on free slots, stage by stage in the scheduling mode's order,
    /// one task at a time (so FAIR sees each launch).
    fn schedule(&mut self, now: Instant) {
        loop {
            if !self.executors.values().any(|e| e.free_slots(now) > 0) {
                return;
            }
            let mut order: Vec<(StageId, (usize, usize, u64, u32))> = self
                .stages
                .iter()
                .filter(|(_, s)| {
                    matches!(s.state, Stage::Running)
                        && !(s.pending.is_empty() && s.speculative.is_empty())
                })
                .map(|(id, s)| (*id, self.order_key(s.job, *id)))
                .collect();
            if order.is_empty() {
                return;
            }
            order.sort_by_key(|(_, key)| *key);
            let mut placed = false;
            for (stage, _) in order {
                if self.place_one(stage, now) {
                    placed = true;
                    break;
                }
            }
            if !placed {
                return;
            }
        }
    }

    /// Sort key of a stage: FIFO by job then stage; FAIR by the running tasks of its pool,
    /// then of its job.
    fn order_key(&self, job: JobId, stage: StageId) -> (usize, usize, u64, u32) {
        match self.config.scheduling_mode {
            SchedulingMode::Fifo => (0, 0, job.0, stage.0),
            SchedulingMode::Fair => {
                let pool = self.jobs.get(&job).map(|j| j.pool.as_str()).unwrap_or("");
                let pool_running: usize = self
                    .jobs
                    .values()
                    .filter(|j| j.pool == pool)
                    .map(|j| j.running_tasks)
                    .sum();
                let job_running = self.jobs.get(&job).map_or(0, |j| j.running_tasks);
                (pool_running, job_running, job.0, stage.0)
            }
        }
    }

    /// Launches one task of `stage` if an executor has room: a pending partition first,
    /// else a speculative copy (never on an executor already running that partition).
    fn place_one(&mut self, stage_id: StageId, now: Instant) -> bool {
        let Some(stage) = self.stages.get_mut(&stage_id) else {
            return false;
        };
        while stage.pending.front().is_some_and(|i| stage.parts[*i].done) {
            if let Some(i) = stage.pending.pop_front() {
                stage.parts[i].queued = false;
            }
        }
        let mut chosen = None;
        for (position, &index) in stage.pending.iter().enumerate() {
            let part = &stage.parts[index];
            if part.done {
                continue;
            }
            // A partition does not run again where it failed while another executor could
            // take it (it waits for one instead).
            let elsewhere = !part.failed_on.is_empty()
                && self
                    .executors
                    .values()
                    .any(|e| e.alive && !part.failed_on.contains(&e.info.id));
            let avoid: &[ExecutorId] = if elsewhere { &part.failed_on } else { &[] };
            if let Some(executor) = pick(&self.executors, &part.preferred, avoid, now) {
                chosen = Some((position, index, executor));
                break;
            }
            if avoid.is_empty() {
                // No free slot anywhere.
                return false;
            }
        }
        if let Some((position, index, executor)) = chosen {
            stage.pending.remove(position);
            stage.parts[index].queued = false;
            self.launch(stage_id, index, executor, false, now);
            return true;
        }
        while let Some(&index) = stage.speculative.front() {
            let part = &stage.parts[index];
            if part.done || part.running.is_empty() {
                stage.speculative.pop_front();
                continue;
            }
            let busy: Vec<ExecutorId> = part
                .running
                .iter()
                .filter_map(|t| self.attempts.get(t).map(|a| a.executor.clone()))
                .collect();
            let Some(executor) = pick(&self.executors, &[], &busy, now) else {
                return false;
            };
            stage.speculative.pop_front();
            self.launch(stage_id, index, executor, true, now);
            return true;
        }
        false
    }

    fn launch(
        &mut self,
        stage_id: StageId,
        index: usize,
        executor: ExecutorId,
        speculative: bool,
        now: Instant,
    ) {
        let Some(stage) = self.stages.get_mut(&stage_id) else {
            return;
        };
        let Some(exec) = self.executors.get_mut(&executor) else {
            return;
        };
        let task = self.next_task;
        self.next_task += 1;
        let part = &mut stage.parts[index];
        let number = part.launched;
        part.launched += 1;
        part.running.push(task);
        stage.running_attempts += 1;
        stage.attempts += 1;
        let mut request = stage.template.clone();
        request.partition = part.partition;
        request.attempt = number;
        request.task_id = task;
        request.output = Some(task_output(&stage.output, part.partition));
        exec.running.insert(task);
        let address = exec.info.address.clone();
        if let Some(job) = self.jobs.get_mut(&stage.job) {
            job.running_tasks += 1;
        }
        self.attempts.insert(
            task,
            Attempt {
                stage: stage_id,
                job: stage.job,
                index,
                partition: part.partition,
                executor: executor.clone(),
                state: TaskAttempt::Launching,
                started: now,
                speculative,
                absent_since: None,
            },
        );
        self.sink.emit(SchedulerEvent::TaskStarted {
            job: stage.job,
            stage: stage_id,
            task,
            partition: part.partition,
            attempt: number,
            executor,
            speculative,
            time_ms: now_ms(),
        });
        let launch = self.backend.launch(address, request);
        self.rpcs.spawn(async move {
            let result = launch.await;
            Some(Event::Launched { task, result })
        });
    }

    fn launched(
        &mut self,
        task: TaskId,
        result: std::result::Result<Option<TaskStatus>, LaunchError>,
    ) {
        let Some(attempt) = self.attempts.get_mut(&task) else {
            return;
        };
        match result {
            Ok(status) => {
                if attempt.state == TaskAttempt::Launching {
                    attempt.state = TaskAttempt::Running;
                }
                if let Some(status) = status {
                    let executor = attempt.executor.clone();
                    self.task_status(&executor, task, status);
                }
            }
            Err(LaunchError::Unreachable(reason)) => {
                let executor = attempt.executor.clone();
                self.executor_lost(&executor, &format!("task launch failed: {reason}"));
            }
            Err(LaunchError::NotAccepted(reason)) => {
                // Tried again elsewhere, not counted: nothing ran.
                self.end_attempt(task, TaskEndStatus::Killed, Some(reason), None, true);
            }
        }
    }

    /// Removes an attempt from every index, emits its end, and (when `requeue`) queues its
    /// partition again. Returns the attempt.
    fn end_attempt(
        &mut self,
        task: TaskId,
        status: TaskEndStatus,
        reason: Option<String>,
        figures: Option<TaskFigures>,
        requeue: bool,
    ) -> Option<Attempt> {
        let attempt = self.attempts.remove(&task)?;
        if let Some(exec) = self.executors.get_mut(&attempt.executor) {
            exec.running.remove(&task);
        }
        if let Some(job) = self.jobs.get_mut(&attempt.job) {
            job.running_tasks = job.running_tasks.saturating_sub(1);
        }
        if self
            .jobs
            .get(&attempt.job)
            .is_none_or(|j| j.running_tasks == 0)
        {
            self.job_drained(attempt.job);
        }
        if let Some(stage) = self.stages.get_mut(&attempt.stage) {
            let part = &mut stage.parts[attempt.index];
            let before = part.running.len();
            part.running.retain(|t| *t != task);
            stage.running_attempts -= before - part.running.len();
            if status == TaskEndStatus::Failed {
                stage.failures += 1;
            }
            if requeue {
                stage.requeue(attempt.index);
            }
        }
        self.sink.emit(SchedulerEvent::TaskEnded {
            job: attempt.job,
            stage: attempt.stage,
            task,
            partition: attempt.partition,
            executor: attempt.executor.clone(),
            status,
            reason,
            figures,
            time_ms: now_ms(),
        });
        let stage = attempt.stage;
        self.maybe_finish(stage);
        Some(attempt)
    }

    /// Asks executors to stop `tasks` (grouped per executor); their slots stay held until
    /// each reports that it ended.
    fn kill(&mut self, tasks: &[TaskId], reason: &str) {
        let mut by_executor: BTreeMap<ExecutorId, Vec<TaskId>> = BTreeMap::new();
        for task in tasks {
            if let Some(a) = self.attempts.get_mut(task) {
                if matches!(a.state, TaskAttempt::Killing(_)) {
                    continue;
                }
                a.state = TaskAttempt::Killing(reason.to_string());
                by_executor
                    .entry(a.executor.clone())
                    .or_default()
                    .push(*task);
            }
        }
        for (executor, tasks) in by_executor {
            let Some(exec) = self.executors.get(&executor).filter(|e| e.alive) else {
                continue;
            };
            let cancel = self
                .backend
                .cancel(exec.info.address.clone(), tasks, reason.to_string());
            self.rpcs.spawn(async move {
                cancel.await;
                None
            });
        }
    }

    /// Reports a stage to its job once nothing of it runs and it is complete or aborted.
    fn maybe_finish(&mut self, stage_id: StageId) {
        let Some(stage) = self.stages.get(&stage_id) else {
            return;
        };
        if stage.running() {
            return;
        }
        if matches!(stage.state, Stage::Running) && !stage.complete() {
            return;
        }
        let Some(mut stage) = self.stages.remove(&stage_id) else {
            return;
        };
        let end = match std::mem::replace(&mut stage.state, Stage::Running) {
            Stage::Running => StageEnd::Complete,
            Stage::Aborting(end) => end,
        };
        let status = match &end {
            StageEnd::Complete => StageStatus::Complete,
            StageEnd::Cancelled(_) => StageStatus::Cancelled,
            _ => StageStatus::Failed,
        };
        if let Some(job) = self.jobs.get_mut(&stage.job) {
            job.stages.retain(|s| *s != stage_id);
        }
        self.sink.emit(SchedulerEvent::StageCompleted {
            job: stage.job,
            stage: stage_id,
            dataset: stage.dataset,
            shuffle: stage.shuffle(),
            tasks: stage.attempts,
            status,
            time_ms: now_ms(),
        });
        if let Some(reply) = stage.reply.take() {
            let _ = reply.send(StageReport {
                done: stage.done.into_values().collect(),
                attempts: stage.attempts,
                failures: stage.failures,
                executors_lost: stage.lost.len(),
                end,
            });
        }
    }

    fn cancel_jobs(
        &mut self,
        job: Option<JobId>,
        reason: String,
        reply: Option<oneshot::Sender<usize>>,
    ) {
        // A job already cancelling is waited for too, but not counted again.
        let targets: Vec<JobId> = self
            .jobs
            .keys()
            .filter(|id| job.is_none_or(|want| want == **id))
            .copied()
            .collect();
        let mut count = 0;
        let mut waiting = Vec::new();
        for id in &targets {
            let Some(j) = self.jobs.get_mut(id) else {
                continue;
            };
            if j.running_tasks > 0 {
                waiting.push(*id);
            }
            if j.state != Job::Running {
                continue;
            }
            count += 1;
            j.state = Job::Cancelling(reason.clone());
            tracing::info!(job = %id, %reason, "job cancelled");
            let stages = j.stages.clone();
            let mut running = Vec::new();
            for s in &stages {
                if let Some(stage) = self.stages.get_mut(s) {
                    stage.abort(StageEnd::Cancelled(reason.clone()));
                    running.extend(stage.parts.iter().flat_map(|p| p.running.iter().copied()));
                }
            }
            self.kill(&running, &format!("job cancelled: {reason}"));
            for s in stages {
                self.maybe_finish(s);
            }
        }
        if let Some(reply) = reply {
            if waiting.is_empty() {
                let _ = reply.send(count);
            } else {
                self.cancel_waiters
                    .push((waiting.into_iter().collect(), count, reply));
            }
        }
    }

    /// A job has no task left: callers waiting for its cancellation may be answered.
    fn job_drained(&mut self, job: JobId) {
        let mut i = 0;
        while i < self.cancel_waiters.len() {
            self.cancel_waiters[i].0.remove(&job);
            if self.cancel_waiters[i].0.is_empty() {
                let (_, count, reply) = self.cancel_waiters.swap_remove(i);
                let _ = reply.send(count);
            } else {
                i += 1;
            }
        }
    }
}

/// The executor for a task: the first preferred one with a free slot, else the least
/// loaded with a free slot; never one of `avoid`.
fn pick(
    executors: &BTreeMap<ExecutorId, Exec>,
    preferred: &[ExecutorId],
    avoid: &[ExecutorId],
    now: Instant,
) -> Option<ExecutorId> {
    for p in preferred {
        if let Some(e) = executors.get(p) {
            if e.free_slots(now) > 0 && !avoid.contains(p) {
                return Some(p.clone());
            }
        }
    }
    executors
        .values()
        .filter(|e| e.free_slots(now) > 0 && !avoid.contains(&e.info.id))
        .min_by(|a, b| {
            let la = a.running.len() as f64 / a.info.cores.max(1) as f64;
            let lb = b.running.len() as f64 / b.info.cores.max(1) as f64;
            la.total_cmp(&lb)
        })
        .map(|e| e.info.id.clone())
}

/// The output message of partition `partition`'s task.
fn task_output(output: &OutputKind, partition: u32) -> TaskOutput {
    let kind = match output {
        OutputKind::Shuffle => task_output::Kind::Shuffle(ShuffleWrite {}),
        OutputKind::Store { cached } => task_output::Kind::Store(StoreBlock { cached: *cached }),
        OutputKind::Parquet(dir) => task_output::Kind::WriteParquet(WriteParquet {
            path: dir
                .join(crate::dag_scheduler::part_file_name(partition))
                .to_string_lossy()
                .into_owned(),
        }),
    };
    TaskOutput { kind: Some(kind) }
}

fn figures_of(success: &ember_engine::proto::TaskSuccess) -> TaskFigures {
    let m = success.metrics.clone().unwrap_or_default();
    TaskFigures {
        rows: success.rows,
        output_bytes: success.bytes,
        blocks_read_local: m.blocks_read_local,
        blocks_read_remote: m.blocks_read_remote,
        bytes_fetched: m.bytes_fetched,
        shuffle_bytes_written: m.shuffle_bytes_written,
        spilled_bytes: m.spilled_bytes,
        run_ms: m.run_micros / 1000,
        fetch_ms: m.fetch_micros / 1000,
    }
}
