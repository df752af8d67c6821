//! Executor membership: registration, heartbeats (liveness, running tasks, evictions) and
//! loss, with what a lost executor takes down with it.

use std::collections::{BTreeSet, VecDeque};

use ember_engine::ExecutorId;
use tokio::time::Instant;

use super::{Exec, OutputKind, Scheduler, Stage, TaskAttempt, TaskId};
use crate::events::{now_ms, SchedulerEvent, TaskEndStatus};
use crate::registry::ExecutorInfo;
use crate::scheduler::Heartbeat;

impl Scheduler {
    /// Registers (or revives) an executor. A live executor's id is refused to any other
    /// process (another address or pid): re-using it would take the live one's place and
    /// its blocks. The same process registering again (a retried call) replaces itself.
    pub(super) fn register(&mut self, info: ExecutorInfo) -> std::result::Result<(), String> {
        let id = info.id.clone();
        if let Some(live) = self.executors.get(&id).filter(|e| e.alive) {
            if live.info.address != info.address || live.info.pid != info.pid {
                tracing::warn!(executor = %id, live = %live.info.address, refused = %info.address, "refused a registration re-using a live executor's id");
                return Err(format!(
                    "executor id `{id}` belongs to a live executor at {} (pid {}); \
                     give each executor its own --id",
                    live.info.address, live.info.pid
                ));
            }
            self.executor_lost(&id, "registered again (restarted)");
        }
        // Blocks it held in an earlier life are never read again.
        self.locations.remove_executor(&id);
        self.registry.register(info.clone());
        self.sink.emit(SchedulerEvent::ExecutorAdded {
            executor: id.clone(),
            address: info.address.clone(),
            cores: info.cores,
            memory_bytes: info.memory_bytes,
            device: info.device.clone(),
            time_ms: now_ms(),
        });
        self.executors.insert(
            id,
            Exec {
                info,
                alive: true,
                last_heartbeat: Instant::now(),
                running: BTreeSet::new(),
                strikes: VecDeque::new(),
                excluded_until: None,
            },
        );
        Ok(())
    }

    pub(super) fn heartbeat(&mut self, beat: Heartbeat) -> bool {
        let now = Instant::now();
        let Some(exec) = self.executors.get_mut(&beat.executor).filter(|e| e.alive) else {
            return false;
        };
        exec.last_heartbeat = now;
        exec.info.used_bytes = beat.used_bytes;
        self.registry.heartbeat(&beat.executor, beat.used_bytes);
        self.sink.snapshot.executor_heartbeat(
            &beat.executor,
            beat.used_bytes,
            beat.blocks,
            beat.disk_bytes,
        );
        let running: BTreeSet<TaskId> = beat.running.iter().copied().collect();
        for task in &exec.running {
            if let Some(a) = self.attempts.get_mut(task) {
                if a.state != TaskAttempt::Running {
                    continue;
                }
                if running.contains(task) {
                    a.absent_since = None;
                } else {
                    a.absent_since.get_or_insert(now);
                }
            }
        }
        for block in beat.evicted {
            if self.locations.remove_if_at(block, &beat.executor)
                && self.cached.contains(&block.dataset)
            {
                self.sink.emit(SchedulerEvent::BlockUncached {
                    dataset: block.dataset,
                    partition: block.partition,
                    time_ms: now_ms(),
                });
            }
        }
        true
    }

    /// Declares an executor lost: no more tasks, its blocks forgotten, its running tasks
    /// and the partitions it computed for running stages queued again. Returns whether
    /// it was alive until now.
    pub(super) fn executor_lost(&mut self, id: &ExecutorId, reason: &str) -> bool {
        let Some(exec) = self.executors.get_mut(id).filter(|e| e.alive) else {
            return false;
        };
        exec.alive = false;
        exec.excluded_until = None;
        let running: Vec<TaskId> = exec.running.iter().copied().collect();
        let address = exec.info.address.clone();
        self.registry.mark_lost(id);
        self.backend.forget(&address);
        let lost_blocks = self.locations.remove_executor(id);
        tracing::warn!(executor = %id, blocks = lost_blocks.len(), reason, "executor lost");
        self.sink.emit(SchedulerEvent::ExecutorRemoved {
            executor: id.clone(),
            reason: reason.to_string(),
            time_ms: now_ms(),
        });
        for block in lost_blocks {
            if self.cached.contains(&block.dataset) {
                self.sink.emit(SchedulerEvent::BlockUncached {
                    dataset: block.dataset,
                    partition: block.partition,
                    time_ms: now_ms(),
                });
            }
        }
        // Partitions running stages already computed there are gone with it (files
        // written to a shared directory stay).
        let mut touched = Vec::new();
        for (sid, stage) in &mut self.stages {
            let before = stage.lost.len();
            let keep_done = matches!(stage.output, OutputKind::Parquet(_));
            if !keep_done && matches!(stage.state, Stage::Running) {
                let lost: Vec<usize> = stage
                    .done
                    .iter()
                    .filter(|(_, d)| &d.executor == id)
                    .map(|(i, _)| *i)
                    .collect();
                for i in lost {
                    stage.done.remove(&i);
                    stage.parts[i].done = false;
                    stage.done_parts -= 1;
                    stage.parts[i].speculated = false;
                    stage.requeue(i);
                    stage.lost.insert(id.clone());
                }
            }
            if stage.parts.iter().any(|p| {
                p.running
                    .iter()
                    .any(|t| self.attempts.get(t).is_some_and(|a| &a.executor == id))
            }) {
                stage.lost.insert(id.clone());
            }
            if stage.lost.len() != before {
                touched.push(*sid);
            }
        }
        for task in running {
            self.end_attempt(
                task,
                TaskEndStatus::Killed,
                Some(format!("executor {id} lost: {reason}")),
                None,
                true,
            );
        }
        true
    }
}
