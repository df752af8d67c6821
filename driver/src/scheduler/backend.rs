//! Executor backend: how the scheduler loop reaches executors (launch, cancel), behind a
//! trait so the loop's handlers are tested with fake executors and no processes.

use std::sync::Arc;

use ember_engine::proto::{CancelTaskRequest, LaunchTaskRequest, TaskStatus};
use ember_engine::rpc::{ChannelPool, CONTROL_TIMEOUT};
use futures::future::BoxFuture;

/// Why a task could not be handed to an executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchError {
    /// The executor cannot be reached (connection refused or reset) or is shutting down:
    /// it is lost.
    Unreachable(String),
    /// The executor did not answer in time or answered with an error: the task is tried
    /// again, and the executor's fate is left to its heartbeats.
    NotAccepted(String),
}

/// The scheduler's way to the executors.
pub trait ExecutorBackend: Send + Sync + 'static {
    /// Hands a task to the executor at `address`; resolves once it accepted the task, with
    /// the task's status when it already ended (no report follows then).
    fn launch(
        &self,
        address: String,
        request: LaunchTaskRequest,
    ) -> BoxFuture<'static, Result<Option<TaskStatus>, LaunchError>>;

    /// Asks the executor at `address` to stop `tasks`; each then reports itself cancelled.
    fn cancel(&self, address: String, tasks: Vec<u64>, reason: String) -> BoxFuture<'static, ()>;

    /// Forgets the connection to a lost executor.
    fn forget(&self, address: &str);
}

/// The real backend: gRPC over the driver's channel pool.
#[derive(Debug, Clone)]
pub struct GrpcBackend {
    pub(crate) pool: ChannelPool,
}

impl ExecutorBackend for GrpcBackend {
    fn launch(
        &self,
        address: String,
        request: LaunchTaskRequest,
    ) -> BoxFuture<'static, Result<Option<TaskStatus>, LaunchError>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut client = pool
                .executor(&address)
                .map_err(|e| LaunchError::Unreachable(e.to_string()))?;
            match tokio::time::timeout(CONTROL_TIMEOUT, client.launch_task(request)).await {
                Ok(Ok(response)) => Ok(response.into_inner().status),
                Ok(Err(status)) => Err(classify(&address, &status)),
                Err(_) => Err(LaunchError::NotAccepted(format!(
                    "{address} did not accept the task within {CONTROL_TIMEOUT:?}"
                ))),
            }
        })
    }

    fn cancel(&self, address: String, tasks: Vec<u64>, reason: String) -> BoxFuture<'static, ()> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let Ok(mut client) = pool.executor(&address) else {
                return;
            };
            let request = CancelTaskRequest {
                task_ids: tasks,
                reason,
            };
            if let Err(e) = tokio::time::timeout(CONTROL_TIMEOUT, client.cancel_task(request)).await
            {
                tracing::debug!(%address, error = %e, "cancel request timed out");
            }
        })
    }

    fn forget(&self, address: &str) {
        self.pool.forget(address);
    }
}

/// A refused or broken connection (or an executor that says it is shutting down) means
/// the executor is gone; any other status leaves the decision to heartbeats.
fn classify(address: &str, status: &tonic::Status) -> LaunchError {
    let text = format!("{address}: {}", status.message());
    match status.code() {
        tonic::Code::Unavailable => LaunchError::Unreachable(text),
        _ => LaunchError::NotAccepted(text),
    }
}

/// A shared backend.
pub type Backend = Arc<dyn ExecutorBackend>;
