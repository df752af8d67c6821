//! Status reporter: owns the delivery of task outcomes to the driver. Each accepted task
//! ends with exactly one report, retried until the driver acknowledges it or is given up.

use std::time::Duration;

use ember_engine::proto::{TaskStatus, TaskStatusReport};
use ember_engine::rpc::RpcChannel;
use ember_engine::rpc::CONTROL_TIMEOUT;
use tokio::sync::watch;
use tokio::time::Instant;

/// Sends task statuses to the driver.
#[derive(Debug)]
pub(crate) struct StatusReporter {
    pub(crate) channel: RpcChannel,
    pub(crate) executor_id: String,
    /// How long to keep retrying one report: as long as the executor waits for a silent
    /// driver before stopping.
    pub(crate) give_up_after: Duration,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl StatusReporter {
    /// Delivers `status` of task `task_id`, retrying with backoff. A report that cannot be
    /// delivered is dropped with a warning: the driver then learns of the task through
    /// heartbeats (it is no longer listed as running) or declares this executor lost.
    pub(crate) async fn report(&self, task_id: u64, status: TaskStatus) {
        let request = TaskStatusReport {
            executor_id: self.executor_id.clone(),
            task_id,
            status: Some(status),
        };
        let deadline = Instant::now() + self.give_up_after;
        let mut backoff = Duration::from_millis(20);
        loop {
            let mut client = ember_engine::rpc::driver_client(self.channel.clone());
            let error = match tokio::time::timeout(
                CONTROL_TIMEOUT,
                client.report_task_status(request.clone()),
            )
            .await
            {
                Ok(Ok(_)) => return,
                Ok(Err(status)) => status.to_string(),
                Err(_) => "no answer within the control timeout".to_string(),
            };
            if Instant::now() + backoff > deadline || *self.shutdown.borrow() {
                tracing::warn!(task_id, %error, "task status could not be reported to the driver");
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}
