//! DriverService: the gRPC surface executors call (register, heartbeat). Handlers only
//! update the registry and block locations.

use std::sync::Arc;

use ember_engine::proto::driver_service_server::DriverService;
use ember_engine::proto::{
    HeartbeatRequest, HeartbeatResponse, RegisterExecutorRequest, RegisterExecutorResponse,
};
use ember_engine::{BlockId, ExecutorId};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::registry::{ExecutorInfo, ExecutorState};
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
        // A re-registering executor may hold blocks the driver already wrote off; they are
        // never read again, so drop them to free its memory.
        self.driver.locations.remove_executor(&id);
        self.driver.registry.register(ExecutorInfo {
            id,
            address: r.address,
            cores: r.cores.max(1),
            memory_bytes: r.memory_bytes,
            used_bytes: 0,
            pid: r.pid,
            last_heartbeat: Instant::now(),
            state: ExecutorState::Alive,
            device: r.device,
        });
        Ok(Response::new(RegisterExecutorResponse {
            heartbeat_interval_ms: self.driver.config.heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let id = ExecutorId(r.executor_id);
        let known = self.driver.registry.heartbeat(&id, r.used_bytes);
        for block in &r.evicted {
            self.driver
                .locations
                .remove_if_at(BlockId::from(block), &id);
        }
        Ok(Response::new(HeartbeatResponse { reregister: !known }))
    }
}
