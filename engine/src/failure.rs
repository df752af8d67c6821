//! Task failure classes: the one place that says what the scheduler does about each kind
//! of task failure. Executors classify their errors into a `FailureKind`; the driver's
//! scheduler loop acts on [`FailureKind::reaction`].

use crate::proto::FailureKind;

/// What the scheduler does about a failed task attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Run the task again (possibly elsewhere), counting the failure against its attempt
    /// limit: a runtime failure that another attempt may not meet.
    Retry,
    /// Run the task again without counting it: it was stopped, not broken.
    Requeue,
    /// An input block could not be read: its producer is recomputed, then the stage runs
    /// again.
    RecomputeInput,
    /// The task ran out of operator memory: the same plan with the same memory fails the
    /// same way again, so the job fails at once with an error saying so, which a planner
    /// able to choose a leaner plan (sort-merge joins, more partitions) acts on.
    NeedsMemory,
    /// Another attempt cannot succeed (a plan or input error, a bug): the job fails.
    Fail,
}

impl FailureKind {
    /// How the scheduler reacts to a task that failed this way. Never "the executor is
    /// lost": only missed heartbeats, refused connections and failed fetches say that.
    pub fn reaction(self) -> Reaction {
        match self {
            FailureKind::Execution => Reaction::Retry,
            FailureKind::ResourcesExhausted => Reaction::NeedsMemory,
            FailureKind::Cancelled => Reaction::Requeue,
            FailureKind::FetchFailed => Reaction::RecomputeInput,
            FailureKind::Plan | FailureKind::Internal => Reaction::Fail,
        }
    }

    /// Whether another attempt of the same task may succeed.
    pub fn is_retryable(self) -> bool {
        !matches!(self.reaction(), Reaction::Fail | Reaction::NeedsMemory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_errors_bugs_and_lack_of_memory_are_not_retried() {
        assert_eq!(FailureKind::Plan.reaction(), Reaction::Fail);
        assert_eq!(FailureKind::Internal.reaction(), Reaction::Fail);
        assert_eq!(FailureKind::Execution.reaction(), Reaction::Retry);
        assert_eq!(
            FailureKind::ResourcesExhausted.reaction(),
            Reaction::NeedsMemory
        );
        assert!(!FailureKind::ResourcesExhausted.is_retryable());
        assert_eq!(FailureKind::Cancelled.reaction(), Reaction::Requeue);
        assert_eq!(
            FailureKind::FetchFailed.reaction(),
            Reaction::RecomputeInput
        );
        assert!(FailureKind::FetchFailed.is_retryable());
        assert!(!FailureKind::Plan.is_retryable());
    }
}
