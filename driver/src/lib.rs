//! Ember's driver: knows the executors, where every block lives and how every dataset is
//! computed, and runs jobs by scheduling tasks on executors.
//!
//! # Layout
//!
//! - [`registry`]: executors, their liveness and heartbeats.
//! - [`block_locations`]: which executor holds which block.
//! - `dag_scheduler`: turns a job into stages and tasks, retries, recomputes lost blocks.
//! - `grpc`: the DriverService executors call.
//! - `block_fetch`: block reads for the fragment the driver runs itself.
//! - [`metrics`]: per-job counters.
//! - [`error`]: the error type, [`DriverError`].
#![warn(missing_docs)]

mod block_fetch;
/// Which executor holds which block.
pub mod block_locations;
mod dag_scheduler;
/// The driver's error type.
pub mod error;
mod grpc;
/// Per-job counters.
pub mod metrics;
/// Executors known to the driver.
pub mod registry;
mod tree_aggregate;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use datafusion::prelude::SessionContext;
use ember_engine::lineage::Dataset;
use ember_engine::proto::driver_service_server::DriverServiceServer;
use ember_engine::proto::{RemoveBlocksRequest, ShutdownRequest};
use ember_engine::rpc::{self, ChannelPool, CONTROL_TIMEOUT, MAX_MESSAGE_BYTES};
use ember_engine::{BlockId, DatasetId, EngineError, ExecutorId, JobId, StageId};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use block_locations::BlockLocations;
pub use error::{DriverError, Result};
pub use metrics::{JobMetrics, StageTiming};
pub use registry::{ExecutorInfo, ExecutorRegistry, ExecutorState};

/// Tunables of the driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// How often executors heartbeat.
    pub heartbeat_interval: Duration,
    /// An executor silent for this long is declared lost.
    pub executor_timeout: Duration,
    /// Attempts of one task before the job fails.
    pub max_task_attempts: u32,
    /// Times one dataset may be resubmitted after losing its inputs.
    pub max_stage_attempts: u32,
    /// Longest a single task may run.
    pub task_timeout: Duration,
    /// How long a job waits for an executor when none is alive.
    pub executor_wait: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(500),
            executor_timeout: Duration::from_secs(10),
            max_task_attempts: 4,
            max_stage_attempts: 4,
            task_timeout: Duration::from_secs(3600),
            executor_wait: Duration::from_secs(30),
        }
    }
}

/// The driver's state, shared by the scheduler, the gRPC service and the heartbeat monitor.
pub struct Driver {
    address: SocketAddr,
    config: DriverConfig,
    registry: ExecutorRegistry,
    locations: BlockLocations,
    pool: ChannelPool,
    lineage: DashMap<DatasetId, Arc<Dataset>>,
    /// Blocks computed at least once, to tell a first computation from a recomputation.
    computed: DashMap<BlockId, ()>,
    next_dataset: AtomicU64,
    next_job: AtomicU64,
    next_stage: AtomicU32,
    session: SessionContext,
    events: tokio::sync::broadcast::Sender<SchedulerEvent>,
}

/// What the scheduler reports as jobs run (for monitoring, and for tests that act at a
/// given point of a job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedulerEvent {
    /// Every task of a stage succeeded.
    StageCompleted {
        /// The job.
        job: JobId,
        /// The stage.
        stage: StageId,
        /// The dataset whose partitions the stage computed.
        dataset: DatasetId,
        /// Whether the stage was the map side of a shuffle.
        shuffle: bool,
        /// Tasks the stage ran.
        tasks: usize,
    },
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("address", &self.address)
            .field("executors", &self.registry.alive().len())
            .field("datasets", &self.lineage.len())
            .finish_non_exhaustive()
    }
}

/// A running driver: its gRPC server and heartbeat monitor stop when this is dropped.
#[derive(Debug)]
pub struct DriverHandle {
    driver: Arc<Driver>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    monitor: JoinHandle<()>,
}

impl Deref for DriverHandle {
    type Target = Arc<Driver>;
    fn deref(&self) -> &Arc<Driver> {
        &self.driver
    }
}

impl Drop for DriverHandle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.server.abort();
        self.monitor.abort();
    }
}

impl DriverHandle {
    /// Starts a driver listening on `bind` (port 0 picks a free one).
    ///
    /// # Errors
    ///
    /// Asks executor `id` how it is doing (memory, blocks, spilled bytes, running tasks).
    ///
    /// # Errors
    ///
    /// The executor is unknown or does not answer.
    pub async fn executor_status(
        &self,
        id: &ExecutorId,
    ) -> Result<ember_engine::proto::ExecutorStatus> {
        let info = self.registry.get(id).ok_or_else(|| {
            EngineError::Internal(format!("{id} is not registered with this driver"))
        })?;
        let mut client = self.pool.executor(&info.address)?;
        match tokio::time::timeout(
            CONTROL_TIMEOUT,
            client.status(ember_engine::proto::StatusRequest {}),
        )
        .await
        {
            Ok(Ok(status)) => Ok(status.into_inner()),
            Ok(Err(status)) => Err(rpc::transport_error(&info.address, status).into()),
            Err(_) => Err(rpc::transport_error(
                &info.address,
                tonic::Status::deadline_exceeded("status"),
            )
            .into()),
        }
    }

    /// Scheduler events from now on. A receiver that falls more than 256 events behind
    /// loses the oldest.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<SchedulerEvent> {
        self.events.subscribe()
    }

    /// The address cannot be bound.
    pub async fn start(bind: SocketAddr, config: DriverConfig) -> Result<Self> {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| EngineError::io(bind.to_string(), e))?;
        let address = listener
            .local_addr()
            .map_err(|e| EngineError::io(bind.to_string(), e))?;
        let driver = Arc::new(Driver {
            address,
            config,
            registry: ExecutorRegistry::new(),
            locations: BlockLocations::new(),
            pool: ChannelPool::new(),
            lineage: DashMap::new(),
            computed: DashMap::new(),
            next_dataset: AtomicU64::new(1),
            next_job: AtomicU64::new(1),
            next_stage: AtomicU32::new(1),
            session: SessionContext::new(),
            events: tokio::sync::broadcast::channel(256).0,
        });
        let (shutdown, _) = watch::channel(false);
        let mut stop = shutdown.subscribe();
        let svc = DriverServiceServer::new(grpc::DriverServiceImpl {
            driver: Arc::clone(&driver),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let server = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(rpc::incoming(listener), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "driver server failed");
            }
        });
        let monitor = tokio::spawn(heartbeat_monitor(Arc::clone(&driver)));
        tracing::info!(%address, "driver started");
        Ok(Self {
            driver,
            shutdown,
            server,
            monitor,
        })
    }
}

/// Declares executors lost when their heartbeats stop.
async fn heartbeat_monitor(driver: Arc<Driver>) {
    let mut ticker = tokio::time::interval(driver.config.heartbeat_interval);
    loop {
        ticker.tick().await;
        for id in driver.registry.expired(driver.config.executor_timeout) {
            driver.lose_executor(&id, "missed heartbeats");
        }
    }
}

impl Driver {
    /// The address executors register at.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The executors known to the driver.
    pub fn registry(&self) -> &ExecutorRegistry {
        &self.registry
    }

    /// Which executor holds which block.
    pub fn locations(&self) -> &BlockLocations {
        &self.locations
    }

    /// A fresh dataset id.
    pub fn next_dataset_id(&self) -> DatasetId {
        DatasetId(self.next_dataset.fetch_add(1, Ordering::Relaxed))
    }

    fn next_job_id(&self) -> JobId {
        JobId(self.next_job.fetch_add(1, Ordering::Relaxed))
    }

    fn next_stage_id(&self) -> StageId {
        StageId(self.next_stage.fetch_add(1, Ordering::Relaxed))
    }

    /// Adds a dataset to the lineage graph.
    pub fn register_dataset(&self, dataset: Dataset) -> Arc<Dataset> {
        let dataset = Arc::new(dataset);
        self.lineage.insert(dataset.id(), Arc::clone(&dataset));
        dataset
    }

    /// A dataset of the lineage graph.
    pub fn dataset(&self, id: DatasetId) -> Result<Arc<Dataset>> {
        self.lineage
            .get(&id)
            .map(|d| Arc::clone(d.value()))
            .ok_or_else(|| DriverError::Internal(format!("{id} is not in the lineage graph")))
    }

    /// Drops a dataset's blocks from every executor and the dataset from the lineage graph.
    pub async fn remove_dataset(&self, id: DatasetId) {
        self.drop_blocks(&[id]).await;
        self.lineage.remove(&id);
    }

    /// Removes every block of `datasets` from the executors holding them.
    async fn drop_blocks(&self, datasets: &[DatasetId]) {
        let mut holders: Vec<ExecutorId> = Vec::new();
        for d in datasets {
            for (_, executor) in self.locations.remove_dataset(*d) {
                if !holders.contains(&executor) {
                    holders.push(executor);
                }
            }
        }
        let request = RemoveBlocksRequest {
            blocks: vec![],
            datasets: datasets.iter().map(|d| d.0).collect(),
        };
        // Executors that ran tasks whose results were abandoned may hold blocks the driver
        // never recorded, so every live executor is told.
        let calls = self.registry.alive().into_iter().map(|e| {
            let request = request.clone();
            async move {
                let Ok(mut client) = self.pool.executor(&e.address) else {
                    return;
                };
                if let Err(err) =
                    tokio::time::timeout(CONTROL_TIMEOUT, client.remove_blocks(request)).await
                {
                    tracing::debug!(executor = %e.id, error = %err, "remove blocks timed out");
                }
            }
        });
        futures::future::join_all(calls).await;
    }

    /// Declares an executor lost: it gets no more tasks and every block it held is
    /// forgotten, to be recomputed from lineage when next needed.
    pub fn lose_executor(&self, id: &ExecutorId, reason: &str) -> bool {
        if !self.registry.mark_lost(id) {
            return false;
        }
        let lost = self.locations.remove_executor(id);
        if let Some(info) = self.registry.get(id) {
            self.pool.forget(&info.address);
        }
        tracing::warn!(executor = %id.0, blocks = lost.len(), reason, "executor lost");
        true
    }

    /// Asks every live executor to shut down.
    pub async fn shutdown_executors(&self) {
        let calls = self.registry.alive().into_iter().map(|e| async move {
            if let Ok(mut client) = self.pool.executor(&e.address) {
                let _ = tokio::time::timeout(CONTROL_TIMEOUT, client.shutdown(ShutdownRequest {}))
                    .await;
            }
            self.registry.mark_lost(&e.id);
        });
        futures::future::join_all(calls).await;
    }
}
