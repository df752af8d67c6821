//! `/metrics` of the UI server, in the Prometheus text format: counters of jobs, stages,
//! tasks and bytes folded from the driver's event stream as it happens (so they never go
//! down when old jobs leave the snapshot), and gauges read off the snapshot at each scrape.

use std::sync::Arc;

use ember_driver::{AppSnapshot, JobStatus, SchedulerEvent, StageStatus, TaskEndStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels by outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

fn status(status: &str) -> StatusLabels {
    StatusLabels {
        status: status.to_string(),
    }
}

/// Counters folded from events (shared atomics: the registry and the follower task see
/// the same values).
struct Counters {
    jobs: Family<StatusLabels, Counter>,
    stages: Family<StatusLabels, Counter>,
    tasks: Family<StatusLabels, Counter>,
    executors_lost: Counter,
    shuffle_written: Counter,
    fetched: Counter,
    spilled: Counter,
    task_seconds: Histogram,
}

/// The metrics and the registry that renders them.
pub(crate) struct EventMetrics {
    registry: Registry,
    counters: Arc<Counters>,
    executors_alive: Gauge,
    jobs_running: Gauge,
    cached_bytes: Gauge,
    memory_used: Gauge,
    disk_used: Gauge,
}

impl Default for EventMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ember");
        let c = Counters {
            jobs: Family::default(),
            stages: Family::default(),
            tasks: Family::default(),
            executors_lost: Counter::default(),
            shuffle_written: Counter::default(),
            fetched: Counter::default(),
            spilled: Counter::default(),
            // 1 ms to about 65 s.
            task_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
        };
        let m = Self {
            executors_alive: Gauge::default(),
            jobs_running: Gauge::default(),
            cached_bytes: Gauge::default(),
            memory_used: Gauge::default(),
            disk_used: Gauge::default(),
            registry: Registry::default(),
            counters: Arc::new(Counters {
                jobs: c.jobs.clone(),
                stages: c.stages.clone(),
                tasks: c.tasks.clone(),
                executors_lost: c.executors_lost.clone(),
                shuffle_written: c.shuffle_written.clone(),
                fetched: c.fetched.clone(),
                spilled: c.spilled.clone(),
                task_seconds: c.task_seconds.clone(),
            }),
        };
        registry.register("jobs", "Jobs ended, by outcome", c.jobs);
        registry.register("stages", "Stage attempts ended, by outcome", c.stages);
        registry.register("tasks", "Task attempts ended, by outcome", c.tasks);
        registry.register(
            "executors_lost",
            "Executors declared lost",
            c.executors_lost,
        );
        registry.register(
            "shuffle_written_bytes",
            "Bytes written into shuffle buckets by successful tasks",
            c.shuffle_written,
        );
        registry.register(
            "fetched_bytes",
            "Bytes fetched from peer executors by successful tasks",
            c.fetched,
        );
        registry.register(
            "spilled_bytes",
            "Bytes spilled to disk by successful tasks",
            c.spilled,
        );
        registry.register(
            "task_duration_seconds",
            "Run time of successful tasks on their executors",
            c.task_seconds,
        );
        registry.register(
            "executors_alive",
            "Executors registered and alive",
            m.executors_alive.clone(),
        );
        registry.register("jobs_running", "Jobs running now", m.jobs_running.clone());
        registry.register(
            "cached_bytes",
            "Bytes of cached dataset partitions held by executors",
            m.cached_bytes.clone(),
        );
        registry.register(
            "executor_memory_used_bytes",
            "Bytes of blocks held in executors' memory (last heartbeats)",
            m.memory_used.clone(),
        );
        registry.register(
            "executor_disk_used_bytes",
            "Bytes of blocks spilled to executors' disks (last heartbeats)",
            m.disk_used.clone(),
        );
        Self { registry, ..m }
    }
}

impl Counters {
    /// Counts one event.
    fn record(&self, event: &SchedulerEvent) {
        match event {
            SchedulerEvent::JobEnded { status: s, .. } => {
                let name = match s {
                    JobStatus::Running => return,
                    JobStatus::Succeeded => "succeeded",
                    JobStatus::Failed => "failed",
                    JobStatus::Cancelled => "cancelled",
                };
                self.jobs.get_or_create(&status(name)).inc();
            }
            SchedulerEvent::StageCompleted { status: s, .. } => {
                let name = match s {
                    StageStatus::Active => return,
                    StageStatus::Complete => "complete",
                    StageStatus::Failed => "failed",
                    StageStatus::Cancelled => "cancelled",
                };
                self.stages.get_or_create(&status(name)).inc();
            }
            SchedulerEvent::TaskEnded {
                status: s, figures, ..
            } => {
                let name = match s {
                    TaskEndStatus::Success => "success",
                    TaskEndStatus::Failed => "failed",
                    TaskEndStatus::Killed => "killed",
                };
                self.tasks.get_or_create(&status(name)).inc();
                if let (TaskEndStatus::Success, Some(f)) = (s, figures) {
                    self.shuffle_written.inc_by(f.shuffle_bytes_written);
                    self.fetched.inc_by(f.bytes_fetched);
                    self.spilled.inc_by(f.spilled_bytes);
                    self.task_seconds.observe(f.run_ms as f64 / 1000.0);
                }
            }
            SchedulerEvent::ExecutorRemoved { .. } => {
                self.executors_lost.inc();
            }
            _ => {}
        }
    }
}

impl EventMetrics {
    /// Counts the events of `rx` until the driver stops.
    pub(crate) fn follow(&self, mut rx: tokio::sync::broadcast::Receiver<SchedulerEvent>) {
        let me = Arc::clone(&self.counters);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(event) => me.record(&event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "metrics fell behind the driver's events");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// The text of a scrape; gauges are read off `app`.
    pub(crate) fn render(&self, app: Option<&AppSnapshot>) -> String {
        if let Some(a) = app {
            let alive: Vec<_> = a.executors.iter().filter(|e| e.active).collect();
            self.executors_alive.set(alive.len() as i64);
            self.jobs_running.set(
                a.jobs
                    .iter()
                    .filter(|j| j.status == JobStatus::Running)
                    .count() as i64,
            );
            self.cached_bytes
                .set(a.cached.iter().map(|c| c.bytes).sum::<u64>() as i64);
            self.memory_used
                .set(alive.iter().map(|e| e.used_bytes).sum::<u64>() as i64);
            self.disk_used
                .set(alive.iter().map(|e| e.disk_bytes).sum::<u64>() as i64);
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            text = format!("# encoding the metrics failed: {e}\n");
        }
        text
    }
}
