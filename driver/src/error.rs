//! DriverError: why a job or a cluster operation failed, with the stage, partition and
//! executor involved.

use std::time::Duration;

use ember_engine::{DatasetId, EngineError, ExecutorId, StageId};

/// Result with [`DriverError`] as the default error.
pub type Result<T, E = DriverError> = std::result::Result<T, E>;

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A failure from the core (planning, encoding, fetching, executing on the driver).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A task failed for good: a user error, a bug, or too many attempts.
    #[error(
        "{stage} ({dataset}) partition {partition} on {executor} failed after {attempts} \
         attempt(s): {message}"
    )]
    TaskFailed {
        /// The stage the task belonged to.
        stage: StageId,
        /// The dataset it computed.
        dataset: DatasetId,
        /// The partition it computed.
        partition: u32,
        /// Where its last attempt ran.
        executor: ExecutorId,
        /// How many attempts were made.
        attempts: u32,
        /// Whether the failure was the user's (plan or input) rather than the cluster's.
        user_error: bool,
        /// The executor's account of the last failure.
        message: String,
    },
    /// A task ran out of operator memory (a hash table or buffer that cannot spill did not
    /// fit the executor's operator pool). Retrying the same plan with the same memory is
    /// pointless: a leaner plan (sort-merge joins, more partitions) or more `--memory` is.
    #[error(
        "{stage} ({dataset}) partition {partition} ran out of memory on {executor} (a leaner \
         plan or a larger --memory is needed): {message}"
    )]
    OutOfMemory {
        /// The stage the task belonged to.
        stage: StageId,
        /// The dataset it computed.
        dataset: DatasetId,
        /// The partition it computed.
        partition: u32,
        /// Where it ran.
        executor: ExecutorId,
        /// The executor's account of the failure.
        message: String,
    },
    /// No executor was available to run tasks.
    #[error("no executor available after waiting {waited:?} (are executors running and able to reach the driver?)")]
    NoExecutors {
        /// How long the scheduler waited for one.
        waited: Duration,
    },
    /// A dataset kept losing its inputs and was resubmitted too often.
    #[error("{dataset} could not be computed after {attempts} stage attempts: {last_cause}")]
    StageAttemptsExhausted {
        /// The dataset.
        dataset: DatasetId,
        /// Stage attempts made.
        attempts: u32,
        /// Why the last attempt failed.
        last_cause: String,
    },
    /// The job was cancelled (by `cancel_job`, `cancel_all`, or its caller dropping it).
    #[error("{job} cancelled: {reason}")]
    Cancelled {
        /// The job.
        job: ember_engine::JobId,
        /// Why.
        reason: String,
    },
    /// A bug in Ember.
    #[error("internal error (this is a bug in Ember): {0}")]
    Internal(String),
}

impl DriverError {
    /// Whether the failure is the user's to fix (bad plan or bad input data).
    pub fn is_user_error(&self) -> bool {
        match self {
            DriverError::Engine(e) => e.is_user_error(),
            DriverError::TaskFailed { user_error, .. } => *user_error,
            _ => false,
        }
    }
}
