//! DriverService: the gRPC surface executors call (register, heartbeat, task status).
//! Handlers only translate messages into scheduler events.

use std::sync::Arc;

use ember_engine::proto::driver_service_server::DriverService;
use ember_engine::proto::{
    HeartbeatRequest, HeartbeatResponse, RegisterExecutorRequest, RegisterExecutorResponse,
    TaskStatusAck, TaskStatusReport,
};
use ember_engine::{BlockId, ExecutorId};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::registry::{ExecutorInfo, ExecutorState};
use crate::scheduler::Heartbeat;
use crate::Driver;

/// The driver's gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct DriverServiceImpl {
    pub(crate) driver: Arc<Driver>,
}

#[tonic::async_trait]
impl DriverService for DriverServiceImpl {
    async fn register_executor(
        &self,
        request: Request<RegisterExecutorRequest>,
    ) -> Result<Response<RegisterExecutorResponse>, Status> {
        let r = request.into_inner();
        if r.executor_id.is_empty() || r.address.is_empty() {
            return Err(Status::invalid_argument(
                "registration needs an executor id and an address",
            ));
        }
        let id = ExecutorId(r.executor_id);
        self.driver
            .scheduler
            .register(ExecutorInfo {
                id,
                address: r.address,
                cores: r.cores.max(1),
                memory_bytes: r.memory_bytes,
                used_bytes: 0,
                pid: r.pid,
                last_heartbeat: Instant::now(),
                state: ExecutorState::Alive,
                device: r.device,
            })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .map_err(Status::already_exists)?;
        Ok(Response::new(RegisterExecutorResponse {
            heartbeat_interval_ms: self.driver.config.heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let known = self
            .driver
            .scheduler
            .heartbeat(Heartbeat {
                executor: ExecutorId(r.executor_id),
                used_bytes: r.used_bytes,
                blocks: r.blocks,
                disk_bytes: r.disk_bytes,
                running: r.running_task_ids,
                evicted: r.evicted.iter().map(BlockId::from).collect(),
            })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(HeartbeatResponse { reregister: !known }))
    }

    async fn report_task_status(
        &self,
        request: Request<TaskStatusReport>,
    ) -> Result<Response<TaskStatusAck>, Status> {
        let r = request.into_inner();
        let status = r
            .status
            .ok_or_else(|| Status::invalid_argument("task status report without a status"))?;
        self.driver
            .scheduler
            .task_status(ExecutorId(r.executor_id), r.task_id, status)
            .await;
        Ok(Response::new(TaskStatusAck {}))
    }
}
