//! `ExecutionProgress` of one Spark Connect operation: the stages of the jobs it started,
//! found by the operation's job tag in the scheduler's events, counted as they run and
//! reported to the client every `spark.connect.progress.reportInterval`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use ember_driver::{SchedulerEvent, TaskEndStatus};
use ember_engine::{JobId, StageId};
use tokio::sync::{broadcast, oneshot};

use super::proto::execute_plan_response::{execution_progress, ExecutionProgress};

/// The configuration key that sets how often progress is reported (`0` turns it off).
pub(crate) const INTERVAL_KEY: &str = "spark.connect.progress.reportInterval";

/// How often progress is reported unless the session's configuration says otherwise.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// The job tag every job of operation `id` carries.
pub(crate) fn operation_tag(id: &str) -> String {
    format!("spark-connect-operation-{id}")
}

/// One stage's counts.
#[derive(Debug, Default, Clone, PartialEq)]
struct StageProgress {
    tasks: u64,
    completed: u64,
    bytes_read: u64,
    done: bool,
}

/// The stages of an operation's jobs, folded from scheduler events.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    tag: String,
    jobs: HashSet<JobId>,
    stages: BTreeMap<StageId, StageProgress>,
    inflight: i64,
}

impl Progress {
    /// Progress of the jobs tagged `tag`, none seen yet.
    fn new(tag: String) -> Self {
        Self {
            tag,
            ..Self::default()
        }
    }

    /// Folds in `event`; whether it changed what a report would say.
    fn apply(&mut self, event: &SchedulerEvent) -> bool {
        match event {
            SchedulerEvent::JobStarted { job, tags, .. } if tags.contains(&self.tag) => {
                self.jobs.insert(*job);
                false
            }
            SchedulerEvent::StageSubmitted {
                job, stage, tasks, ..
            } if self.jobs.contains(job) => {
                let s = self.stages.entry(*stage).or_default();
                // A stage submitted again runs only its missing partitions.
                s.tasks = s.tasks.max(s.completed + *tasks as u64);
                s.done = false;
                true
            }
            SchedulerEvent::TaskStarted { job, .. } if self.jobs.contains(job) => {
                self.inflight += 1;
                true
            }
            SchedulerEvent::TaskEnded {
                job,
                stage,
                status,
                figures,
                ..
            } if self.jobs.contains(job) => {
                self.inflight = (self.inflight - 1).max(0);
                if let Some(s) = self.stages.get_mut(stage) {
                    if *status == TaskEndStatus::Success {
                        s.completed = (s.completed + 1).min(s.tasks);
                        s.bytes_read += figures.as_ref().map_or(0, |f| f.bytes_fetched);
                    }
                }
                true
            }
            SchedulerEvent::StageCompleted { job, stage, .. } if self.jobs.contains(job) => {
                if let Some(s) = self.stages.get_mut(stage) {
                    s.done = true;
                }
                true
            }
            SchedulerEvent::JobEnded { job, .. } if self.jobs.contains(job) => {
                // Stages a job cancelled or left unfinished (a limit met early) are over.
                for s in self.stages.values_mut() {
                    s.done = true;
                }
                true
            }
            _ => false,
        }
    }

    /// Whether any stage ran.
    pub(crate) fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The report: every stage seen, and the tasks running now. A stage's bytes read are
    /// those its tasks fetched from other stages' outputs and cached blocks (Ember does not
    /// count what a scan reads from files).
    pub(crate) fn report(&self) -> ExecutionProgress {
        ExecutionProgress {
            stages: self
                .stages
                .iter()
                .map(|(stage, s)| execution_progress::StageInfo {
                    stage_id: i64::from(stage.0),
                    num_tasks: s.tasks as i64,
                    num_completed_tasks: s.completed as i64,
                    input_bytes_read: s.bytes_read as i64,
                    done: s.done,
                })
                .collect(),
            num_inflight_tasks: self.inflight,
        }
    }
}

/// Follows an operation's jobs while it runs and hands a report to `send` each interval
/// in which something changed. Dropping it stops it.
pub(crate) struct Reporter {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Progress>,
}

impl Reporter {
    /// Starts following the jobs tagged `tag` in `events` (subscribed before the
    /// operation's first job starts), reporting through `send` every `interval`; `send`
    /// returns `false` once the client is gone.
    pub(crate) fn start<F, Fut>(
        mut events: broadcast::Receiver<SchedulerEvent>,
        tag: String,
        interval: Option<Duration>,
        send: F,
    ) -> Self
    where
        F: Fn(ExecutionProgress) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut progress = Progress::new(tag);
            let mut ticker = interval.map(|every| {
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let mut changed = false;
            let mut reporting = true;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    event = events.recv() => match event {
                        Ok(event) => changed |= progress.apply(&event),
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tick(&mut ticker), if reporting && changed => {
                        changed = false;
                        reporting = send(progress.report()).await;
                    }
                }
            }
            // Events the scheduler sent before the operation's last response.
            while let Ok(event) = events.try_recv() {
                progress.apply(&event);
            }
            progress
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Stops following and returns what was seen.
    pub(crate) async fn finish(mut self) -> Progress {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap_or_default()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The next tick, or never without a ticker.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The report interval a session's configuration value gives (`None`: no reports).
pub(crate) fn interval(value: Option<&str>) -> Option<Duration> {
    let every = match value {
        None => DEFAULT_INTERVAL,
        Some(v) => match v.trim().parse::<i64>() {
            // A bare number is milliseconds, as Spark reads the key; negative turns it off.
            Ok(ms) if ms <= 0 => return None,
            Ok(ms) => Duration::from_millis(ms as u64),
            Err(_) => crate::serve::parse_duration(v).unwrap_or(DEFAULT_INTERVAL),
        },
    };
    (!every.is_zero()).then_some(every)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_driver::{JobStatus, StageStatus, TaskFigures};
    use ember_engine::{DatasetId, ExecutorId};

    fn started(job: u64, tags: &[&str]) -> SchedulerEvent {
        SchedulerEvent::JobStarted {
            job: JobId(job),
            description: String::new(),
            pool: "default".into(),
            plan: String::new(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            time_ms: 0,
        }
    }

    fn submitted(job: u64, stage: u32, tasks: usize) -> SchedulerEvent {
        SchedulerEvent::StageSubmitted {
            job: JobId(job),
            stage: StageId(stage),
            dataset: DatasetId(u64::from(stage)),
            tasks,
            shuffle: false,
            parents: Vec::new(),
            name: String::new(),
            time_ms: 0,
        }
    }

    fn task(job: u64, stage: u32, ended: Option<TaskEndStatus>) -> SchedulerEvent {
        match ended {
            None => SchedulerEvent::TaskStarted {
                job: JobId(job),
                stage: StageId(stage),
                task: 0,
                partition: 0,
                attempt: 0,
                executor: ExecutorId("e1".into()),
                speculative: false,
                time_ms: 0,
            },
            Some(status) => SchedulerEvent::TaskEnded {
                job: JobId(job),
                stage: StageId(stage),
                task: 0,
                partition: 0,
                executor: ExecutorId("e1".into()),
                status,
                reason: None,
                figures: Some(TaskFigures {
                    bytes_fetched: 100,
                    ..TaskFigures::default()
                }),
                time_ms: 0,
            },
        }
    }

    #[test]
    fn only_the_operations_own_jobs_are_counted() {
        let mut p = Progress::new(operation_tag("op"));
        assert!(!p.apply(&started(1, &["spark-connect-operation-op", "user"])));
        p.apply(&started(2, &["spark-connect-operation-other"]));
        assert!(p.apply(&submitted(1, 10, 2)));
        assert!(!p.apply(&submitted(2, 20, 4)));
        p.apply(&task(1, 10, None));
        p.apply(&task(1, 10, None));
        p.apply(&task(2, 20, None));
        p.apply(&task(1, 10, Some(TaskEndStatus::Success)));
        let r = p.report();
        assert_eq!(r.num_inflight_tasks, 1);
        assert_eq!(r.stages.len(), 1);
        let s = &r.stages[0];
        assert_eq!(
            (
                s.stage_id,
                s.num_tasks,
                s.num_completed_tasks,
                s.input_bytes_read,
                s.done
            ),
            (10, 2, 1, 100, false)
        );
        // A failed attempt is not a completed task.
        p.apply(&task(1, 10, None));
        p.apply(&task(1, 10, Some(TaskEndStatus::Failed)));
        assert_eq!(p.report().stages[0].num_completed_tasks, 1);
        p.apply(&SchedulerEvent::StageCompleted {
            job: JobId(1),
            stage: StageId(10),
            dataset: DatasetId(10),
            shuffle: false,
            tasks: 3,
            status: StageStatus::Complete,
            time_ms: 0,
        });
        assert!(p.report().stages[0].done);
    }

    #[test]
    fn a_resubmitted_stage_counts_its_partitions_once() {
        let mut p = Progress::new(operation_tag("op"));
        p.apply(&started(1, &["spark-connect-operation-op"]));
        p.apply(&submitted(1, 3, 4));
        for _ in 0..3 {
            p.apply(&task(1, 3, None));
            p.apply(&task(1, 3, Some(TaskEndStatus::Success)));
        }
        // One partition lost with its executor: the stage runs it again.
        p.apply(&submitted(1, 3, 1));
        p.apply(&task(1, 3, None));
        p.apply(&task(1, 3, Some(TaskEndStatus::Success)));
        p.apply(&task(1, 3, None));
        p.apply(&task(1, 3, Some(TaskEndStatus::Success)));
        let s = &p.report().stages[0];
        assert_eq!((s.num_tasks, s.num_completed_tasks), (4, 4));
        p.apply(&SchedulerEvent::JobEnded {
            job: JobId(1),
            status: JobStatus::Succeeded,
            error: None,
            time_ms: 0,
        });
        assert!(p.report().stages[0].done);
    }

    #[test]
    fn the_interval_is_read_as_spark_reads_it() {
        assert_eq!(interval(None), Some(DEFAULT_INTERVAL));
        assert_eq!(interval(Some("500")), Some(Duration::from_millis(500)));
        assert_eq!(interval(Some("100ms")), Some(Duration::from_millis(100)));
        assert_eq!(interval(Some("3s")), Some(Duration::from_secs(3)));
        assert_eq!(interval(Some("0")), None);
        assert_eq!(interval(Some("-1")), None);
    }

    #[tokio::test]
    async fn a_reporter_sends_what_changed_and_returns_the_rest() {
        let (tx, rx) = broadcast::channel(64);
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
        let reporter = Reporter::start(
            rx,
            operation_tag("op"),
            Some(Duration::from_millis(10)),
            move |report| {
                let sent_tx = sent_tx.clone();
                async move { sent_tx.send(report).is_ok() }
            },
        );
        tx.send(started(7, &["spark-connect-operation-op"]))
            .unwrap();
        tx.send(submitted(7, 1, 2)).unwrap();
        tx.send(task(7, 1, None)).unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), sent_rx.recv())
            .await
            .expect("a report within the interval")
            .expect("the reporter is running");
        assert_eq!(first.stages[0].num_tasks, 2);
        tx.send(task(7, 1, Some(TaskEndStatus::Success))).unwrap();
        let last = reporter.finish().await.report();
        assert_eq!(last.stages[0].num_completed_tasks, 1);
        assert_eq!(last.num_inflight_tasks, 0);
    }
}
