//! Tests of the scheduler loop's handlers: fake executors (a backend that records launches
//! and cancellations), paused time, no processes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ember_engine::proto::{
    task_status, FailureKind, LaunchTaskRequest, TaskFailure, TaskMetrics, TaskStatus, TaskSuccess,
};
use ember_engine::{BlockId, DatasetId, ExecutorId, JobId, StageId};
use futures::future::BoxFuture;
use tokio::sync::{broadcast, oneshot};

use super::backend::{ExecutorBackend, LaunchError};
use super::state::Scheduler;
use super::{
    Event, Heartbeat, OutputKind, SchedulingMode, StageEnd, StageReport, StageSpec, TaskId,
};
use crate::block_locations::BlockLocations;
use crate::events::{JobStatus, SchedulerEvent, StageStatus, TaskEndStatus};
use crate::registry::{ExecutorInfo, ExecutorRegistry, ExecutorState};
use crate::snapshot::SnapshotBuilder;
use crate::DriverConfig;

/// What the fake executors were asked to do.
#[derive(Default)]
struct Calls {
    launched: Vec<(String, LaunchTaskRequest)>,
    cancelled: Vec<(String, u64)>,
}

/// Executors that accept every task (unless refusing) and record everything.
#[derive(Clone, Default)]
struct FakeExecutors {
    calls: Arc<Mutex<Calls>>,
    refuse: Arc<Mutex<Vec<String>>>,
    /// Answer every launch with a success inline (a task that ended at once).
    inline: Arc<Mutex<bool>>,
}

impl ExecutorBackend for FakeExecutors {
    fn launch(
        &self,
        address: String,
        request: LaunchTaskRequest,
    ) -> BoxFuture<'static, Result<Option<TaskStatus>, LaunchError>> {
        let refused = self.refuse.lock().unwrap().contains(&address);
        let inline = *self.inline.lock().unwrap();
        self.calls
            .lock()
            .unwrap()
            .launched
            .push((address.clone(), request));
        Box::pin(async move {
            if refused {
                Err(LaunchError::Unreachable(format!(
                    "{address}: connection refused"
                )))
            } else if inline {
                Ok(Some(TaskStatus {
                    result: Some(success()),
                }))
            } else {
                Ok(None)
            }
        })
    }

    fn cancel(&self, address: String, tasks: Vec<u64>, _reason: String) -> BoxFuture<'static, ()> {
        let mut calls = self.calls.lock().unwrap();
        for t in tasks {
            calls.cancelled.push((address.clone(), t));
        }
        Box::pin(async {})
    }

    fn forget(&self, _address: &str) {}
}

struct Harness {
    scheduler: Scheduler,
    fake: FakeExecutors,
    registry: Arc<ExecutorRegistry>,
    events: broadcast::Receiver<SchedulerEvent>,
    /// Launches already handed out by `take_launches`.
    seen: usize,
}

fn config() -> DriverConfig {
    DriverConfig {
        heartbeat_interval: Duration::from_millis(100),
        executor_timeout: Duration::from_secs(2),
        max_task_attempts: 3,
        ..DriverConfig::default()
    }
}

impl Harness {
    fn new(config: DriverConfig) -> Self {
        let broadcast = broadcast::channel(4096).0;
        let events = broadcast.subscribe();
        let registry = Arc::new(ExecutorRegistry::new());
        let fake = FakeExecutors::default();
        let scheduler = Scheduler::new(
            config,
            Arc::clone(&registry),
            Arc::new(BlockLocations::new()),
            Arc::new(fake.clone()),
            broadcast,
            "app-test".into(),
        )
        .expect("scheduler");
        Self {
            scheduler,
            fake,
            registry,
            events,
            seen: 0,
        }
    }

    /// Lets spawned launch futures report back, and applies what they sent.
    async fn settle(&mut self) {
        for _ in 0..8 {
            tokio::task::yield_now().await;
            for event in self.scheduler.finished_rpcs() {
                self.scheduler.handle(event);
            }
        }
    }

    fn executor(&mut self, id: &str, cores: u32) {
        let (reply, _) = oneshot::channel();
        self.scheduler.handle(Event::ExecutorRegistered {
            info: ExecutorInfo {
                id: ExecutorId(id.into()),
                address: format!("addr-{id}"),
                cores,
                memory_bytes: 1 << 30,
                used_bytes: 0,
                pid: 1,
                last_heartbeat: tokio::time::Instant::now(),
                state: ExecutorState::Alive,
                device: "cpu".into(),
            },
            reply,
        });
    }

    fn job(&mut self, job: u64, pool: &str) {
        self.scheduler.handle(Event::JobStarted {
            job: JobId(job),
            description: format!("job {job}"),
            pool: pool.into(),
            plan: String::new(),
            tags: Vec::new(),
        });
    }

    fn stage(&mut self, job: u64, stage: u32, partitions: u32) -> oneshot::Receiver<StageReport> {
        let (reply, rx) = oneshot::channel();
        self.scheduler.handle(Event::SubmitStage {
            spec: StageSpec {
                job: JobId(job),
                stage: StageId(stage),
                dataset: DatasetId(stage as u64),
                parents: Vec::new(),
                name: String::new(),
                partitions: (0..partitions).collect(),
                preferred: Vec::new(),
                template: LaunchTaskRequest {
                    job_id: job,
                    stage_id: stage,
                    ..LaunchTaskRequest::default()
                },
                output: OutputKind::Store { cached: false },
            },
            reply,
        });
        rx
    }

    /// Launches since the last call: (executor address, job, partition, task id).
    async fn take_launches(&mut self) -> Vec<(String, u64, u32, TaskId)> {
        self.settle().await;
        let calls = self.fake.calls.lock().unwrap();
        let new = calls.launched[self.seen..]
            .iter()
            .map(|(a, r)| (a.clone(), r.job_id, r.partition, r.task_id))
            .collect();
        self.seen = calls.launched.len();
        new
    }

    fn cancelled(&self) -> Vec<u64> {
        self.fake
            .calls
            .lock()
            .unwrap()
            .cancelled
            .iter()
            .map(|(_, t)| *t)
            .collect()
    }

    fn finish(&mut self, executor: &str, task: TaskId, result: task_status::Result) {
        self.scheduler.handle(Event::TaskStatus {
            executor: ExecutorId(executor.into()),
            task,
            status: TaskStatus {
                result: Some(result),
            },
        });
    }

    fn succeed(&mut self, address: &str, task: TaskId) {
        self.finish(exec_of(address), task, success());
    }

    fn fail(&mut self, address: &str, task: TaskId, kind: FailureKind, message: &str) {
        self.finish(
            exec_of(address),
            task,
            task_status::Result::Failure(TaskFailure {
                kind: kind as i32,
                message: message.into(),
                missing_block: Some(BlockId::new(DatasetId(99), 0).into()),
                missing_block_executor: "b".into(),
            }),
        );
    }

    fn heartbeat(&mut self, executor: &str, running: Vec<TaskId>) -> bool {
        let (reply, mut rx) = oneshot::channel();
        self.scheduler.handle(Event::Heartbeat {
            beat: Heartbeat {
                executor: ExecutorId(executor.into()),
                running,
                used_bytes: 0,
                blocks: 0,
                disk_bytes: 0,
                evicted: Vec::new(),
            },
            reply,
        });
        rx.try_recv().expect("heartbeat answered")
    }

    fn drain_events(&mut self) -> Vec<SchedulerEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }
}

fn exec_of(address: &str) -> &str {
    address.trim_start_matches("addr-")
}

fn success() -> task_status::Result {
    task_status::Result::Success(TaskSuccess {
        rows: 10,
        bytes: 100,
        metrics: Some(TaskMetrics::default()),
        evicted: vec![],
        filled: vec![],
        filled_bytes: vec![],
    })
}

fn report(rx: &mut oneshot::Receiver<StageReport>) -> Option<StageReport> {
    rx.try_recv().ok()
}

#[tokio::test(start_paused = true)]
async fn tasks_fill_free_slots_and_the_stage_reports_when_all_are_done() {
    let mut h = Harness::new(config());
    h.executor("a", 1);
    h.executor("b", 1);
    h.job(1, "default");
    let mut rx = h.stage(1, 1, 3);
    let first = h.take_launches().await;
    assert_eq!(first.len(), 2, "one task per free slot");
    assert_ne!(first[0].0, first[1].0, "spread over both executors");
    h.succeed(&first[0].0, first[0].3);
    let next = h.take_launches().await;
    assert_eq!(next.len(), 1, "the freed slot takes the third partition");
    assert_eq!(next[0].0, first[0].0);
    assert!(report(&mut rx).is_none());
    h.succeed(&first[1].0, first[1].3);
    h.succeed(&next[0].0, next[0].3);
    let r = report(&mut rx).expect("stage reported");
    assert!(matches!(r.end, StageEnd::Complete));
    assert_eq!(r.done.len(), 3);
    assert_eq!(r.attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn a_status_answered_with_the_launch_needs_no_report() {
    let mut h = Harness::new(config());
    *h.fake.inline.lock().unwrap() = true;
    h.executor("a", 1);
    h.job(1, "default");
    let mut rx = h.stage(1, 1, 3);
    // One slot: each inline answer frees it for the next partition at once.
    assert_eq!(h.take_launches().await.len(), 3);
    let r = report(&mut rx).expect("every task answered inline");
    assert!(matches!(r.end, StageEnd::Complete));
    assert_eq!(r.done.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_task_error_is_retried_and_never_loses_the_executor() {
    let mut h = Harness::new(config());
    h.executor("a", 1);
    h.job(1, "default");
    let mut rx = h.stage(1, 1, 1);
    for attempt in 0..3 {
        let l = h.take_launches().await;
        assert_eq!(l.len(), 1, "attempt {attempt} launched");
        h.fail(&l[0].0, l[0].3, FailureKind::Execution, "bad cast");
        assert!(h.registry.is_alive(&ExecutorId("a".into())));
    }
    let r = report(&mut rx).expect("stage gave up");
    match r.end {
        StageEnd::Failed(crate::DriverError::TaskFailed {
            attempts, message, ..
        }) => {
            assert_eq!(attempts, 3);
            assert!(message.contains("bad cast"));
        }
        other => panic!("unexpected end {other:?}"),
    }
    assert_eq!(r.failures, 3);
    assert!(h.registry.is_alive(&ExecutorId("a".into())));
}

#[tokio::test(start_paused = true)]
async fn a_plan_error_fails_the_stage_at_once_and_stops_its_other_tasks() {
    let mut h = Harness::new(config());
    h.executor("a", 2);
    h.job(1, "default");
    let mut rx = h.stage(1, 1, 2);
    let l = h.take_launches().await;
    h.fail(&l[0].0, l[0].3, FailureKind::Plan, "no column z");
    assert!(
        report(&mut rx).is_none(),
        "waits for the other task to stop"
    );
    assert_eq!(h.cancelled(), vec![l[1].3]);
    h.fail(&l[1].0, l[1].3, FailureKind::Cancelled, "cancelled");
    let r = report(&mut rx).expect("reported");
    assert!(matches!(
        r.end,
        StageEnd::Failed(crate::DriverError::TaskFailed {
            user_error: true,
            ..
        })
    ));
    assert!(h.registry.is_alive(&ExecutorId("a".into())));
    assert!(
        h.take_launches().await.is_empty(),
        "no retry of a plan error"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fetch_failure_ends_the_stage_for_the_job_to_rebuild_the_input() {
    let mut h = Harness::new(config());
    h.executor("a", 1);
    h.job(1, "default");
    let mut rx = h.stage(1, 1, 1);
    let l = h.take_launches().await;
    h.fail(&l[0].0, l[0].3, FailureKind::FetchFailed, "peer gone");
    let r = report(&mut rx).expect("reported");
    match r.end {
        StageEnd::FetchFailed {
            block, executor, ..
        } => {
            assert_eq!(block.dataset, DatasetId(99));
            assert_eq!(executor, ExecutorId("b".into()));
        }
        other => panic!("unexpected end {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_executor_is_lost_and_its_task_runs_elsewhere() {
    let mut h = Harness::new(config());
    h.executor("a", 1);
    h.executor("b", 1);
    h.job(1, "default");
    let mut rx = h.stage(1, 1, 1);
    let l = h.take_launches().await;
    let (victim, other) = if l[0].0 == "addr-a" {
        ("a", "b")
    } else {
        ("b", "a")
    };
    for _ in 0..30 {
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(h.heartbeat(other, vec![]));
        h.scheduler.tick(tokio::time::Instant::now());
    }
    assert!(!h.registry.is_alive(&ExecutorId(victim.into())));
    assert!(
        !h.heartbeat(victim, vec![]),
        "a lost executor must register again"
    );
    let again = h.take_launches().await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, format!("addr-{other}"));
    h.succeed(&again[0].0, again[0].3);
    let r = report(&mut rx).expect("reported");
    assert!(matches!(r.end, StageEnd::Complete));
    assert_eq!(r.executors_lost, 1);
    assert_eq!(
        r.failures, 0,
        "losing an executor is not the task's failure"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_launch_loses_the_executor() {
    let mut h = Harness::new(config());
    h.executor("a", 1);
    h.executor("b", 1);
    h.fake.refuse.lock().unwrap().push("addr-a".into());
    h.job(1, "default");
    let mut rx = h.stage(1, 1, 2);
    let l = h.take_launches().await;
    assert_eq!(l.len(), 2);
    assert!(!h.registry.is_alive(&ExecutorId("a".into())));
    for (address, _, _, task) in l.iter().filter(|l| l.0 == "addr-b") {
        h.succeed(address, *task);
    }
    let more = h.take_launches().await;
    for (address, _, _, task) in &more {
        h.succeed(address, *task);
    }
    assert!(matches!(
        report(&mut rx).expect("done").end,
        StageEnd::Complete
    ));
}

/// Job 1 fills both slots with 4 tasks; job 2 arrives with one task. When a slot frees,
/// FIFO gives it to job 1, FAIR to job 2.
async fn second_job_gets_the_freed_slot(mode: SchedulingMode) -> bool {
    let mut h = Harness::new(DriverConfig {
        scheduling_mode: mode,
        ..config()
    });
    h.executor("a", 2);
    h.job(1, "etl");
    let _long = h.stage(1, 1, 4);
    let first = h.take_launches().await;
    assert_eq!(first.len(), 2);
    h.job(2, "adhoc");
    let _short = h.stage(2, 2, 1);
    assert!(h.take_launches().await.is_empty(), "no free slot yet");
    h.succeed(&first[0].0, first[0].3);
    let next = h.take_launches().await;
    assert_eq!(next.len(), 1);
    next[0].1 == 2
}

#[tokio::test(start_paused = true)]
async fn fair_mode_lets_a_short_job_behind_a_long_one_start_first() {
    assert!(!second_job_gets_the_freed_slot(SchedulingMode::Fifo).await);
    assert!(second_job_gets_the_freed_slot(SchedulingMode::Fair).await);
}

#[tokio::test(start_paused = true)]
async fn a_straggler_gets_a_speculative_copy_and_the_first_result_wins() {
    let mut h = Harness::new(config());
    h.executor("a", 4);
    h.executor("b", 4);
    h.job(1, "default");
    let mut rx = h.stage(1, 1, 4);
    let l = h.take_launches().await;
    assert_eq!(l.len(), 4);
    tokio::time::advance(Duration::from_millis(200)).await;
    for (address, _, _, task) in &l[..3] {
        h.succeed(address, *task);
    }
    let straggler = l[3].clone();
    // Below the minimum run time nothing is copied.
    h.scheduler.tick(tokio::time::Instant::now());
    assert!(h.take_launches().await.is_empty());
    tokio::time::advance(Duration::from_secs(1)).await;
    h.heartbeat("a", vec![straggler.3]);
    h.heartbeat("b", vec![straggler.3]);
    h.scheduler.tick(tokio::time::Instant::now());
    let copy = h.take_launches().await;
    assert_eq!(copy.len(), 1, "one speculative copy");
    assert_eq!(copy[0].2, straggler.2, "of the straggler's partition");
    assert_ne!(copy[0].0, straggler.0, "on another executor");
    h.succeed(&copy[0].0, copy[0].3);
    assert_eq!(h.cancelled(), vec![straggler.3], "the original is stopped");
    assert!(
        report(&mut rx).is_none(),
        "reported once the original is gone"
    );
    h.fail(
        &straggler.0,
        straggler.3,
        FailureKind::Cancelled,
        "cancelled",
    );
    let r = report(&mut rx).expect("reported");
    assert!(matches!(r.end, StageEnd::Complete));
    assert_eq!(r.done.len(), 4);
    let winner = r
        .done
        .iter()
        .find(|d| d.partition == straggler.2)
        .expect("done");
    assert_eq!(format!("addr-{}", winner.executor.0), copy[0].0);
    let events = h.drain_events();
    assert!(events.iter().any(|e| matches!(
        e,
        SchedulerEvent::TaskStarted {
            speculative: true,
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_job_stops_its_tasks_and_refuses_its_next_stage() {
    let mut h = Harness::new(config());
    h.executor("a", 2);
    h.job(1, "default");
    let mut rx = h.stage(1, 1, 3);
    let l = h.take_launches().await;
    assert_eq!(l.len(), 2);
    let (reply, mut cancelled) = oneshot::channel();
    h.scheduler.handle(Event::CancelJob {
        job: Some(JobId(1)),
        reason: "user asked".into(),
        reply: Some(reply),
    });
    let mut sent = h.cancelled();
    sent.sort();
    assert_eq!(sent, vec![l[0].3, l[1].3]);
    h.settle().await;
    assert!(
        cancelled.try_recv().is_err(),
        "answered when the tasks are gone"
    );
    for (address, _, _, task) in &l {
        h.fail(address, *task, FailureKind::Cancelled, "cancelled");
    }
    h.settle().await;
    assert_eq!(cancelled.try_recv().expect("answered"), 1);
    assert!(matches!(
        report(&mut rx).expect("reported").end,
        StageEnd::Cancelled(_)
    ));
    assert!(
        h.take_launches().await.is_empty(),
        "the third partition never runs"
    );
    let mut next = h.stage(1, 2, 1);
    assert!(matches!(
        report(&mut next).expect("refused").end,
        StageEnd::Cancelled(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn an_executor_whose_tasks_fail_where_others_succeed_is_excluded() {
    let mut h = Harness::new(config());
    h.executor("a", 1);
    h.executor("b", 1);
    h.job(1, "default");
    let mut rx = h.stage(1, 1, 3);
    // Every partition that runs on `a` fails there and then succeeds on `b`.
    let mut done = 0;
    let mut failed_on_a = 0;
    for _ in 0..10 {
        for (address, _, _, task) in h.take_launches().await {
            if address == "addr-a" {
                failed_on_a += 1;
                h.fail(&address, task, FailureKind::Execution, "disk error");
            } else {
                done += 1;
                h.succeed(&address, task);
            }
        }
        if done == 3 {
            break;
        }
    }
    assert!(failed_on_a >= 2);
    assert!(matches!(
        report(&mut rx).expect("done").end,
        StageEnd::Complete
    ));
    let events = h.drain_events();
    let excluded = events.iter().find_map(|e| match e {
        SchedulerEvent::ExecutorExcluded {
            executor, reason, ..
        } => Some((executor.clone(), reason.clone())),
        _ => None,
    });
    let (executor, reason) = excluded.expect("a was excluded");
    assert_eq!(executor, ExecutorId("a".into()));
    assert!(reason.contains("succeeded on executor b"), "{reason}");
    // Excluded: a new stage runs only on b, until the exclusion ends.
    h.job(2, "default");
    let _rx = h.stage(2, 2, 2);
    let l = h.take_launches().await;
    assert!(l.iter().all(|l| l.0 == "addr-b"), "{l:?}");
    let (reply, _) = oneshot::channel();
    h.scheduler.handle(Event::Snapshot { reply });
    tokio::time::advance(Duration::from_secs(61)).await;
    h.heartbeat("a", vec![]);
    h.heartbeat("b", l.iter().map(|l| l.3).collect());
    h.scheduler.tick(tokio::time::Instant::now());
    assert!(h
        .drain_events()
        .iter()
        .any(|e| matches!(e, SchedulerEvent::ExecutorIncluded { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_task_whose_status_never_comes_is_run_again() {
    let mut h = Harness::new(config());
    h.executor("a", 1);
    h.job(1, "default");
    let mut rx = h.stage(1, 1, 1);
    let l = h.take_launches().await;
    for _ in 0..25 {
        tokio::time::advance(Duration::from_millis(100)).await;
        h.heartbeat("a", vec![]);
        h.scheduler.tick(tokio::time::Instant::now());
    }
    let again = h.take_launches().await;
    assert_eq!(
        again.len(),
        1,
        "relaunched after the executor stopped listing it"
    );
    assert_ne!(again[0].3, l[0].3);
    h.succeed(&again[0].0, again[0].3);
    assert!(matches!(
        report(&mut rx).expect("done").end,
        StageEnd::Complete
    ));
}

#[tokio::test(start_paused = true)]
async fn a_stage_with_no_executor_fails_after_the_wait() {
    let mut h = Harness::new(DriverConfig {
        executor_wait: Duration::from_secs(3),
        ..config()
    });
    h.job(1, "default");
    let mut rx = h.stage(1, 1, 1);
    for _ in 0..40 {
        tokio::time::advance(Duration::from_millis(100)).await;
        h.scheduler.tick(tokio::time::Instant::now());
    }
    assert!(matches!(
        report(&mut rx).expect("gave up").end,
        StageEnd::Failed(crate::DriverError::NoExecutors { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_counts_tasks_and_an_event_log_replays_to_the_same_snapshot() {
    let dir = tempfile_dir();
    let mut h = Harness::new(DriverConfig {
        event_log: Some(dir.clone()),
        ..config()
    });
    h.executor("a", 2);
    h.job(1, "reports");
    let mut rx = h.stage(1, 1, 3);
    let l = h.take_launches().await;
    h.fail(&l[0].0, l[0].3, FailureKind::Execution, "flaky");
    h.succeed(&l[1].0, l[1].3);
    for (address, _, _, task) in h.take_launches().await {
        h.succeed(&address, task);
    }
    for (address, _, _, task) in h.take_launches().await {
        h.succeed(&address, task);
    }
    assert!(matches!(
        report(&mut rx).expect("done").end,
        StageEnd::Complete
    ));
    h.scheduler.handle(Event::JobEnded {
        job: JobId(1),
        status: JobStatus::Succeeded,
        error: None,
    });
    let (reply, mut snap) = oneshot::channel();
    h.scheduler.handle(Event::Snapshot { reply });
    let live = snap.try_recv().expect("snapshot");
    let job = &live.jobs[0];
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.description, "job 1");
    assert_eq!(job.pool, "reports");
    let stage = &job.stages[0];
    assert_eq!(stage.status, StageStatus::Complete);
    assert_eq!(stage.num_tasks, 3);
    assert_eq!(stage.counts.succeeded, 3);
    assert_eq!(stage.counts.failed, 1);
    assert_eq!(stage.counts.running, 0);
    assert_eq!(stage.totals.rows, 30);
    assert_eq!(
        stage
            .tasks
            .iter()
            .filter(|t| t.status == Some(TaskEndStatus::Failed))
            .count(),
        1
    );
    assert_eq!(live.executors[0].succeeded_tasks, 3);
    let log = std::fs::read_dir(&dir)
        .expect("log dir")
        .next()
        .expect("a log file")
        .expect("entry")
        .path();
    let replayed = SnapshotBuilder::replay(&log).expect("replay");
    assert_eq!(replayed, live.without_heartbeat_figures());
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ember-eventlog-test-{}-{}",
        std::process::id(),
        crate::events::now_ms()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Where one driver saturates (figures in docs/architecture.md, "Scale"): `n` fake
/// executors of 4 slots answer every task inline, so the loop's own handling is all that
/// is timed (no gRPC, no task work). Prints tasks per second through the loop for a stage
/// of 10,000 tasks, the cost of one heartbeat, and the block-location map's size and
/// the cost of forgetting one executor's blocks.
#[tokio::test]
async fn saturation_of_one_driver_with_100_and_1000_executors() {
    use std::time::Instant;
    const TASKS: u32 = 10_000;
    for n in [100usize, 1000] {
        let mut h = Harness::new(config());
        *h.fake.inline.lock().unwrap() = true;
        let started = Instant::now();
        for i in 0..n {
            h.executor(&format!("e{i}"), 4);
        }
        let registering = started.elapsed();
        h.job(1, "default");
        let started = Instant::now();
        let mut rx = h.stage(1, 1, TASKS);
        let mut done = None;
        while done.is_none() {
            h.settle().await;
            done = report(&mut rx);
        }
        let stage = started.elapsed();
        let r = done.expect("reported");
        assert!(matches!(r.end, StageEnd::Complete));
        assert_eq!(r.done.len(), TASKS as usize);
        let used: std::collections::HashSet<String> = h
            .fake
            .calls
            .lock()
            .unwrap()
            .launched
            .iter()
            .map(|(a, _)| a.clone())
            .collect();
        assert_eq!(used.len(), n, "every executor got tasks");

        let rounds = 20;
        let started = Instant::now();
        for _ in 0..rounds {
            for i in 0..n {
                assert!(h.heartbeat(&format!("e{i}"), Vec::new()));
            }
        }
        let per_beat = started.elapsed() / (rounds * n) as u32;

        // Ten shuffles of 10,000 map outputs each, spread over the executors.
        let locations = BlockLocations::new();
        for stage in 0..10u64 {
            for p in 0..TASKS {
                locations.insert(
                    BlockId::new(DatasetId(stage), p),
                    ExecutorId(format!("e{}", p as usize % n)),
                );
            }
        }
        let entries = 10 * TASKS as usize;
        let bytes =
            entries * (std::mem::size_of::<BlockId>() + std::mem::size_of::<ExecutorId>() + 8);
        let started = Instant::now();
        let lost = locations.remove_executor(&ExecutorId("e0".into()));
        let forget = started.elapsed();
        assert_eq!(lost.len(), entries / n);
        eprintln!(
            "saturation n={n}: registered in {:.1} ms; {TASKS} tasks in {:.0} ms = {:.0} tasks/s; \
             heartbeat {:.1} us ({:.1}% of one core at 2 beats/s each); \
             {entries} block locations ~{:.1} MiB; forgetting one executor's {} blocks {:.2} ms",
            registering.as_secs_f64() * 1e3,
            stage.as_secs_f64() * 1e3,
            f64::from(TASKS) / stage.as_secs_f64(),
            per_beat.as_secs_f64() * 1e6,
            per_beat.as_secs_f64() * 2.0 * n as f64 * 100.0,
            bytes as f64 / (1 << 20) as f64,
            lost.len(),
            forget.as_secs_f64() * 1e3,
        );
    }
}
