//! ExecutorError: why a task or an executor call failed, and whether the scheduler should
//! try the task again.

use ember_engine::proto::{FailureKind, TaskFailure};
use ember_engine::{BlockId, EngineError};

/// Result with [`ExecutorError`] as the default error.
pub type Result<T, E = ExecutorError> = std::result::Result<T, E>;

/// Errors of an executor.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// A failure from the core (plan decode, execution, fetch, I/O).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The block manager cannot hold a block even after evicting every cached block.
    #[error(
        "memory limit of {limit} bytes reached: {block} needs {needed} bytes and {pinned} bytes \
         are held by blocks that cannot be evicted"
    )]
    MemoryLimit {
        /// The block being stored.
        block: BlockId,
        /// Its size.
        needed: usize,
        /// Bytes held by non-evictable blocks.
        pinned: usize,
        /// The executor's limit (`--memory`).
        limit: usize,
    },
    /// A task message was incomplete.
    #[error("malformed task: {0}")]
    MalformedTask(String),
    /// The task was stopped before it finished: the executor is shutting down, or the
    /// driver cancelled it (job cancelled, a speculative copy won).
    #[error("task cancelled: {0}")]
    Cancelled(String),
}

impl ExecutorError {
    /// Whether the scheduler may run the task again (possibly elsewhere).
    ///
    /// Runtime failures and lost inputs are retried; plan and input errors can never
    /// succeed, nor can the same task with the same memory after running out of it; a
    /// cancelled task is retried without counting against its limit.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// The failure's class, which decides the scheduler's reaction
    /// ([`FailureKind::reaction`]).
    pub fn kind(&self) -> FailureKind {
        match self {
            ExecutorError::Engine(EngineError::FetchFailed { .. }) => FailureKind::FetchFailed,
            ExecutorError::Engine(EngineError::Internal(_)) | ExecutorError::MalformedTask(_) => {
                FailureKind::Internal
            }
            ExecutorError::Engine(e) if e.is_user_error() => FailureKind::Plan,
            ExecutorError::Engine(EngineError::ResourcesExhausted(_))
            | ExecutorError::MemoryLimit { .. } => FailureKind::ResourcesExhausted,
            ExecutorError::Cancelled(_) => FailureKind::Cancelled,
            ExecutorError::Engine(_) => FailureKind::Execution,
        }
    }

    /// The failure as reported to the driver.
    pub fn to_task_failure(&self) -> TaskFailure {
        let mut failure = TaskFailure {
            kind: FailureKind::Execution as i32,
            message: self.to_string(),
            missing_block: None,
            missing_block_executor: String::new(),
        };
        if let ExecutorError::Engine(EngineError::FetchFailed {
            block, executor, ..
        }) = self
        {
            failure.missing_block = Some((*block).into());
            failure.missing_block_executor = executor.0.clone();
        }
        failure.kind = self.kind() as i32;
        failure
    }
}

#[cfg(test)]
mod tests {
    use ember_engine::{DatasetId, ExecutorId};

    use super::*;

    #[test]
    fn failures_are_sorted_by_how_the_scheduler_reacts() {
        let fetch = ExecutorError::Engine(EngineError::FetchFailed {
            block: BlockId::new(DatasetId(1), 2),
            executor: ExecutorId("e9".into()),
            reason: "gone".into(),
        });
        let f = fetch.to_task_failure();
        assert_eq!(f.kind, FailureKind::FetchFailed as i32);
        assert_eq!(f.missing_block_executor, "e9");
        assert_eq!(f.missing_block.map(|b| b.partition), Some(2));
        assert!(fetch.is_retryable());

        let plan = ExecutorError::Engine(EngineError::Plan("no column z".into()));
        assert_eq!(plan.to_task_failure().kind, FailureKind::Plan as i32);
        assert!(!plan.is_retryable());

        let input = ExecutorError::Engine(EngineError::Input("row 9: 4 fields".into()));
        assert!(!input.is_retryable());

        let mem = ExecutorError::MemoryLimit {
            block: BlockId::new(DatasetId(1), 0),
            needed: 10,
            pinned: 5,
            limit: 8,
        };
        assert_eq!(
            mem.to_task_failure().kind,
            FailureKind::ResourcesExhausted as i32
        );
        // The same task with the same memory would fail the same way.
        assert!(!mem.is_retryable());
        assert_eq!(
            ExecutorError::Cancelled("shutdown".into())
                .to_task_failure()
                .kind,
            FailureKind::Cancelled as i32
        );

        let bug = ExecutorError::Engine(EngineError::Internal("oops".into()));
        assert!(!bug.is_retryable());
        assert_eq!(bug.to_task_failure().kind, FailureKind::Internal as i32);
    }
}
