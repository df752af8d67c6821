//! Task outcomes: what the loop does with a task's reported end (success, each failure
//! class, a late report from an attempt it already stopped).

use ember_engine::failure::Reaction;
use ember_engine::proto::{task_status, FailureKind, TaskFailure, TaskStatus, TaskSuccess};
use ember_engine::{BlockId, DatasetId, ExecutorId, StageId};
use tokio::time::Instant;

use super::{figures_of, OutputKind, Scheduler, Stage, StageEnd, TaskAttempt, TaskDone, TaskId};
use crate::error::DriverError;
use crate::events::{now_ms, SchedulerEvent, TaskEndStatus};

impl Scheduler {
    pub(super) fn task_status(&mut self, executor: &ExecutorId, task: TaskId, status: TaskStatus) {
        let Some(attempt) = self.attempts.get(&task) else {
            return;
        };
        if &attempt.executor != executor {
            tracing::warn!(task, %executor, "status from an executor that does not run the task");
            return;
        }
        if let TaskAttempt::Killing(reason) = &attempt.state {
            let reason = reason.clone();
            self.end_attempt(task, TaskEndStatus::Killed, Some(reason), None, false);
            return;
        }
        let stage_id = attempt.stage;
        let index = attempt.index;
        let started = attempt.started;
        let speculative = attempt.speculative;
        match status.result {
            Some(task_status::Result::Success(success)) => {
                self.task_succeeded(task, stage_id, index, started, speculative, success)
            }
            Some(task_status::Result::Failure(failure)) => {
                self.task_failed(task, stage_id, index, failure)
            }
            None => self.task_failed(
                task,
                stage_id,
                index,
                TaskFailure {
                    kind: FailureKind::Internal as i32,
                    message: "executor sent an empty task status".into(),
                    missing_block: None,
                    missing_block_executor: String::new(),
                },
            ),
        }
    }

    fn task_succeeded(
        &mut self,
        task: TaskId,
        stage_id: StageId,
        index: usize,
        started: Instant,
        speculative: bool,
        success: TaskSuccess,
    ) {
        let now = Instant::now();
        let Some(stage) = self.stages.get_mut(&stage_id) else {
            self.end_attempt(
                task,
                TaskEndStatus::Killed,
                Some("its stage ended".into()),
                None,
                false,
            );
            return;
        };
        let executor = self.attempts[&task].executor.clone();
        if stage.parts[index].done {
            self.end_attempt(
                task,
                TaskEndStatus::Killed,
                Some("another attempt of this partition finished first".into()),
                None,
                false,
            );
            return;
        }
        let part = &mut stage.parts[index];
        part.done = true;
        stage.done_parts += 1;
        let partition = part.partition;
        let losers: Vec<TaskId> = part
            .running
            .iter()
            .copied()
            .filter(|t| *t != task)
            .collect();
        let mut strikes: Vec<(ExecutorId, String)> = part
            .failed_on
            .iter()
            .filter(|e| **e != executor)
            .map(|e| {
                (
                    e.clone(),
                    format!("a task failed here and then succeeded on {executor}"),
                )
            })
            .collect();
        stage.durations.push(now.saturating_duration_since(started));
        let figures = figures_of(&success);
        let cached = matches!(stage.output, OutputKind::Store { cached: true });
        let dataset = stage.dataset;
        // Where the output lives, known the moment the task reports it (a shuffle's map
        // output is located by its map partition).
        if !matches!(stage.output, OutputKind::Parquet(_)) {
            self.locations
                .insert(BlockId::new(dataset, partition), executor.clone());
        }
        for filled in &success.filled {
            self.locations
                .insert(BlockId::from(filled), executor.clone());
        }
        for evicted in &success.evicted {
            self.locations
                .remove_if_at(BlockId::from(evicted), &executor);
        }
        let mut cached_blocks: Vec<(BlockId, u64)> = Vec::new();
        if cached {
            cached_blocks.push((BlockId::new(dataset, partition), success.bytes));
        }
        for (i, filled) in success.filled.iter().enumerate() {
            let bytes = success.filled_bytes.get(i).copied().unwrap_or_default();
            cached_blocks.push((BlockId::from(filled), bytes));
        }
        stage.done.insert(
            index,
            TaskDone {
                partition,
                executor: executor.clone(),
                success,
            },
        );
        for loser in &losers {
            if let Some(a) = self.attempts.get(loser) {
                if speculative && !a.speculative {
                    strikes.push((
                        a.executor.clone(),
                        "a straggler here was beaten by a speculative copy".into(),
                    ));
                }
            }
        }
        self.kill(&losers, "another attempt of this partition finished first");
        for (executor, reason) in strikes {
            self.strike(&executor, reason, now);
        }
        for (block, bytes) in cached_blocks {
            if self.cached.contains(&block.dataset) {
                self.sink.emit(SchedulerEvent::BlockCached {
                    dataset: block.dataset,
                    partition: block.partition,
                    executor: executor.clone(),
                    bytes,
                    time_ms: now_ms(),
                });
            }
        }
        self.end_attempt(task, TaskEndStatus::Success, None, Some(figures), false);
    }

    fn task_failed(&mut self, task: TaskId, stage_id: StageId, index: usize, failure: TaskFailure) {
        let kind = FailureKind::try_from(failure.kind).unwrap_or(FailureKind::Internal);
        let Some(stage) = self.stages.get_mut(&stage_id) else {
            self.end_attempt(
                task,
                TaskEndStatus::Failed,
                Some(failure.message),
                None,
                false,
            );
            return;
        };
        let executor = self.attempts[&task].executor.clone();
        let partition = stage.parts[index].partition;
        let earlier_failures = stage.parts[index].failures;
        let mut requeue = false;
        let status = match kind.reaction() {
            // Stopped (the executor is shutting down): nothing is wrong with the task.
            Reaction::Requeue => {
                requeue = true;
                TaskEndStatus::Killed
            }
            Reaction::RecomputeInput => {
                let block = failure
                    .missing_block
                    .map(BlockId::from)
                    .unwrap_or(BlockId::new(DatasetId(0), 0));
                stage.abort(StageEnd::FetchFailed {
                    block,
                    executor: ExecutorId(failure.missing_block_executor.clone()),
                    reason: failure.message.clone(),
                });
                TaskEndStatus::Failed
            }
            Reaction::NeedsMemory => {
                stage.abort(StageEnd::Failed(DriverError::OutOfMemory {
                    stage: stage_id,
                    dataset: stage.dataset,
                    partition,
                    executor: executor.clone(),
                    message: failure.message.clone(),
                }));
                TaskEndStatus::Failed
            }
            Reaction::Fail => {
                stage.abort(StageEnd::Failed(DriverError::TaskFailed {
                    stage: stage_id,
                    dataset: stage.dataset,
                    partition,
                    executor: executor.clone(),
                    attempts: earlier_failures + 1,
                    user_error: kind == FailureKind::Plan,
                    message: failure.message.clone(),
                }));
                TaskEndStatus::Failed
            }
            Reaction::Retry => {
                let part = &mut stage.parts[index];
                part.failures += 1;
                part.failed_on.push(executor.clone());
                let failures = part.failures;
                if failures >= self.config.max_task_attempts {
                    stage.abort(StageEnd::Failed(DriverError::TaskFailed {
                        stage: stage_id,
                        dataset: stage.dataset,
                        partition,
                        executor: executor.clone(),
                        attempts: failures,
                        user_error: false,
                        message: failure.message.clone(),
                    }));
                } else {
                    tracing::warn!(stage = %stage_id, partition, %executor, error = %failure.message, "task failed; retrying");
                    requeue = true;
                }
                TaskEndStatus::Failed
            }
        };
        let aborting = matches!(stage.state, Stage::Aborting(_));
        if aborting {
            let others: Vec<TaskId> = stage
                .parts
                .iter()
                .flat_map(|p| p.running.iter().copied())
                .filter(|t| *t != task)
                .collect();
            self.kill(&others, "its stage stopped");
        }
        self.end_attempt(task, status, Some(failure.message), None, requeue);
    }
}
