//! Health: the clock-driven part of the scheduler loop. Silent executors, exclusions that
//! end, stragglers that get a speculative copy, attempts whose status never came, tasks
//! past their timeout, and stages that wait for any executor too long.

use std::time::Duration;

use ember_engine::ExecutorId;
use tokio::time::Instant;

use super::{Scheduler, Stage, StageEnd, TaskAttempt, TaskId};
use crate::error::DriverError;
use crate::events::{now_ms, SchedulerEvent, TaskEndStatus};

impl Scheduler {
    /// Counts a strike against an executor; enough within the window exclude it, unless
    /// it is the last executor taking tasks.
    pub(super) fn strike(&mut self, id: &ExecutorId, reason: String, now: Instant) {
        let config = self.config.exclusion;
        let others = self
            .executors
            .values()
            .filter(|e| &e.info.id != id && e.alive && e.excluded_until.is_none_or(|t| t <= now))
            .count();
        let Some(exec) = self.executors.get_mut(id).filter(|e| e.alive) else {
            return;
        };
        exec.strikes.push_back((now, reason.clone()));
        while exec
            .strikes
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > config.window)
        {
            exec.strikes.pop_front();
        }
        if exec.strikes.len() < config.max_strikes || others == 0 {
            return;
        }
        let reasons: Vec<String> = exec.strikes.drain(..).map(|(_, r)| r).collect();
        let reason = format!("{} strikes: {}", reasons.len(), reasons.join("; "));
        exec.excluded_until = Some(now + config.duration);
        tracing::warn!(executor = %id, %reason, for_ = ?config.duration, "executor excluded");
        self.sink.emit(SchedulerEvent::ExecutorExcluded {
            executor: id.clone(),
            reason,
            until_ms: now_ms() + config.duration.as_millis() as u64,
            time_ms: now_ms(),
        });
    }

    /// Looks at the clock: silent executors, ended exclusions, stragglers, forgotten
    /// statuses, tasks past their timeout, stages with no executor to run on.
    pub(crate) fn tick(&mut self, now: Instant) {
        let silent: Vec<(ExecutorId, Duration)> = self
            .executors
            .values()
            .filter(|e| e.alive)
            .map(|e| {
                (
                    e.info.id.clone(),
                    now.saturating_duration_since(e.last_heartbeat),
                )
            })
            .filter(|(_, since)| *since > self.config.executor_timeout)
            .collect();
        for (id, since) in silent {
            self.executor_lost(
                &id,
                &format!("no heartbeat for {:.1} s", since.as_secs_f64()),
            );
        }
        let included: Vec<ExecutorId> = self
            .executors
            .values_mut()
            .filter(|e| e.excluded_until.is_some_and(|t| t <= now))
            .map(|e| {
                e.excluded_until = None;
                e.info.id.clone()
            })
            .collect();
        for executor in included {
            self.sink.emit(SchedulerEvent::ExecutorIncluded {
                executor,
                time_ms: now_ms(),
            });
        }
        // Attempts whose status never came: the executor no longer lists them.
        let forgotten: Vec<TaskId> = self
            .attempts
            .iter()
            .filter(|(_, a)| {
                a.absent_since.is_some_and(|t| {
                    now.saturating_duration_since(t) > self.config.executor_timeout
                })
            })
            .map(|(t, _)| *t)
            .collect();
        for task in forgotten {
            self.end_attempt(
                task,
                TaskEndStatus::Killed,
                Some("the executor stopped listing it and never reported its end".into()),
                None,
                true,
            );
        }
        self.timeouts(now);
        if self.config.speculation.enabled {
            self.speculate(now);
        }
        self.starvation(now);
        self.schedule(now);
    }

    fn timeouts(&mut self, now: Instant) {
        let limit = self.config.task_timeout;
        let late: Vec<TaskId> = self
            .attempts
            .iter()
            .filter(|(_, a)| {
                matches!(a.state, TaskAttempt::Running | TaskAttempt::Launching)
                    && now.saturating_duration_since(a.started) > limit
            })
            .map(|(t, _)| *t)
            .collect();
        for task in late {
            let (stage_id, index, executor) = {
                let a = &self.attempts[&task];
                (a.stage, a.index, a.executor.clone())
            };
            let message = format!("ran past the task timeout of {limit:?}");
            self.kill(&[task], &message);
            let max = self.config.max_task_attempts;
            if let Some(stage) = self.stages.get_mut(&stage_id) {
                let part = &mut stage.parts[index];
                part.failures += 1;
                part.failed_on.push(executor.clone());
                let (partition, failures) = (part.partition, part.failures);
                if failures >= max {
                    stage.abort(StageEnd::Failed(DriverError::TaskFailed {
                        stage: stage_id,
                        dataset: stage.dataset,
                        partition,
                        executor,
                        attempts: failures,
                        user_error: false,
                        message,
                    }));
                } else {
                    part.queued = true;
                    stage.pending.push_back(index);
                }
            }
        }
    }

    /// Marks stragglers for a speculative copy.
    fn speculate(&mut self, now: Instant) {
        let s = self.config.speculation;
        for stage in self.stages.values_mut() {
            if !matches!(stage.state, Stage::Running) || stage.durations.is_empty() {
                continue;
            }
            let total = stage.parts.len();
            if (stage.durations.len() as f64) < s.quantile * total as f64 {
                continue;
            }
            let mut sorted = stage.durations.clone();
            sorted.sort();
            let median = sorted[sorted.len() / 2];
            let threshold = median.mul_f64(s.multiplier).max(s.min_runtime);
            for (i, part) in stage.parts.iter_mut().enumerate() {
                if part.done || part.speculated || part.running.len() != 1 {
                    continue;
                }
                let Some(a) = self.attempts.get(&part.running[0]) else {
                    continue;
                };
                if a.state == TaskAttempt::Running
                    && now.saturating_duration_since(a.started) > threshold
                {
                    part.speculated = true;
                    stage.speculative.push_back(i);
                    tracing::info!(partition = part.partition, executor = %a.executor, ?threshold, "straggler: launching a speculative copy");
                }
            }
        }
    }

    /// Aborts stages that have waited for any executor longer than `executor_wait`.
    fn starvation(&mut self, now: Instant) {
        let any_alive = self.executors.values().any(|e| e.alive);
        let wait = self.config.executor_wait;
        let mut ended = Vec::new();
        for (id, stage) in &mut self.stages {
            if any_alive || stage.pending.is_empty() || !matches!(stage.state, Stage::Running) {
                stage.starved_since = None;
                continue;
            }
            let since = *stage.starved_since.get_or_insert(now);
            let waited = now.saturating_duration_since(since);
            if waited >= wait {
                stage.abort(StageEnd::Failed(DriverError::NoExecutors { waited }));
                ended.push(*id);
            }
        }
        for id in ended {
            self.maybe_finish(id);
        }
    }
}
