//! Ember's driver: knows the executors, where every block lives and how every dataset is
//! computed, and runs jobs by scheduling tasks on executors.
//!
//! # Layout
//!
//! - [`scheduler`]: the loop that owns jobs, stages, task attempts and executors: task
//!   placement (FIFO or FAIR), retries, speculation, exclusion, cancellation, executor loss.
//! - [`planner`]: cuts DataFusion physical plans into stages and the driver's fragment.
//! - `dag_scheduler`: a job's walk over its lineage, one stage at a time; recomputes lost
//!   inputs.
//! - [`registry`]: the published view of the executors (written by the loop).
//! - [`block_locations`]: which executor holds which block.
//! - [`events`], [`snapshot`]: what the scheduler reports, the event log, and the state
//!   folded from events.
//! - `grpc`: the DriverService executors call (register, heartbeat, task status).
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
/// Scheduler events and the event log.
pub mod events;
mod grpc;
/// Per-job counters.
pub mod metrics;
/// Cutting physical plans into stages.
pub mod planner;
/// Executors known to the driver.
pub mod registry;
/// The scheduler loop.
pub mod scheduler;
/// State folded from scheduler events.
pub mod snapshot;
mod tree_aggregate;

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use datafusion::prelude::SessionContext;
use ember_engine::lineage::{Dataset, Persistence};
use ember_engine::proto::driver_service_server::DriverServiceServer;
use ember_engine::proto::{RemoveBlocksRequest, ShutdownRequest};
use ember_engine::rpc::{self, ChannelPool, CONTROL_TIMEOUT, MAX_MESSAGE_BYTES};
use ember_engine::security::Security;
use ember_engine::{BlockId, DatasetId, EngineError, ExecutorId, JobId, StageId};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use block_locations::BlockLocations;
pub use dag_scheduler::{JobStream, RESULT_BATCHES_IN_FLIGHT};
pub use error::{DriverError, Result};
pub use events::{JobStatus, SchedulerEvent, StageStatus, TaskEndStatus, TaskFigures};
pub use metrics::{JobMetrics, StageTiming};
pub use registry::{ExecutorInfo, ExecutorRegistry, ExecutorState};
pub use scheduler::{Exclusion, SchedulingMode, Speculation};
pub use snapshot::{AppSnapshot, SnapshotBuilder};

use crate::scheduler::SchedulerHandle;

/// What a job is, for the snapshot, the event log and FAIR scheduling.
#[derive(Debug, Clone)]
pub struct JobDescription {
    /// What it runs: the SQL text, or the action.
    pub text: String,
    /// The pool it shares task slots in under [`SchedulingMode::Fair`].
    pub pool: String,
    /// Ember's stages and DataFusion's physical plan as `EXPLAIN` prints them, for the UI
    /// and the event log (empty when not known).
    pub plan: String,
    /// Tags naming who started the job (an operation of a Spark Connect session, the
    /// client's own tags), so that its progress can be followed and reported to them.
    pub tags: Vec<String>,
}

impl JobDescription {
    /// A job described by `text`, in the default pool, with the tags of the task that
    /// makes it (see [`with_job_tags`]).
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            pool: DEFAULT_POOL.to_string(),
            plan: String::new(),
            tags: current_job_tags(),
        }
    }

    /// A description of a job run on behalf of this one (a join side run first, say):
    /// `text`, in the same pool, with the same tags.
    pub fn derived(&self, text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            pool: self.pool.clone(),
            plan: String::new(),
            tags: self.tags.clone(),
        }
    }

    /// This description with its plan text made by `describe` when it has none yet.
    pub fn planned(&self, describe: impl FnOnce() -> String) -> Self {
        let mut d = self.clone();
        if d.plan.is_empty() {
            d.plan = describe();
        }
        d
    }
}

/// The pool jobs run in unless told otherwise.
pub const DEFAULT_POOL: &str = "default";

tokio::task_local! {
    static JOB_TAGS: Vec<String>;
}

/// Runs `fut` so that every job described while it runs ([`JobDescription::new`]) carries
/// `tags` too, besides those of an enclosing call. Tags follow the task, not spawned ones.
pub async fn with_job_tags<F: std::future::Future>(tags: Vec<String>, fut: F) -> F::Output {
    let mut all = current_job_tags();
    for tag in tags {
        if !all.contains(&tag) {
            all.push(tag);
        }
    }
    JOB_TAGS.scope(all, fut).await
}

/// The tags [`with_job_tags`] gives jobs described in the current task (none outside it).
pub fn current_job_tags() -> Vec<String> {
    JOB_TAGS.try_with(Clone::clone).unwrap_or_default()
}

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
    /// Longest a task attempt may run before it is stopped and tried again (counted as a
    /// failure).
    pub task_timeout: Duration,
    /// How long a job waits for an executor when none is alive.
    pub executor_wait: Duration,
    /// How jobs share task slots.
    pub scheduling_mode: SchedulingMode,
    /// Speculative copies of stragglers.
    pub speculation: Speculation,
    /// Excluding executors whose tasks keep failing or straggling.
    pub exclusion: Exclusion,
    /// Where to append the JSON-lines event log (`<dir>/<app id>.jsonl`); none when unset.
    pub event_log: Option<PathBuf>,
    /// Who may call the driver and how its channels are protected (the secret, TLS).
    pub security: Security,
    /// The address executors and clients are told to dial (`HOST[:PORT]`); by default the
    /// bound address, or this host's address on its default route when bound to a wildcard.
    pub advertise: Option<String>,
    /// Whether a stage's independent inputs (the two sides of a join) are materialized at
    /// once, their stages sharing the slots (`false`: one after the other, to measure what
    /// running them together saves).
    pub branches_together: bool,
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
            scheduling_mode: SchedulingMode::Fifo,
            speculation: Speculation::default(),
            exclusion: Exclusion::default(),
            event_log: None,
            security: Security::none(),
            advertise: None,
            branches_together: true,
        }
    }
}

/// The driver: the lineage graph, the published executor and block views, and the way
/// into the scheduler loop that owns everything that changes while jobs run.
pub struct Driver {
    address: SocketAddr,
    /// What executors and clients are told to dial.
    advertised: String,
    app: String,
    config: DriverConfig,
    registry: Arc<ExecutorRegistry>,
    locations: Arc<BlockLocations>,
    pool: ChannelPool,
    scheduler: SchedulerHandle,
    lineage: DashMap<DatasetId, Arc<Dataset>>,
    /// Blocks computed at least once, to tell a first computation from a recomputation.
    computed: DashMap<BlockId, ()>,
    next_dataset: AtomicU64,
    next_job: AtomicU64,
    next_stage: AtomicU32,
    session: SessionContext,
    /// The directory this process shares block files through with same-host executors
    /// (set by a local cluster), so the driver maps their blocks instead of fetching them.
    share_root: std::sync::OnceLock<PathBuf>,
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

/// A running driver: its gRPC server and scheduler loop stop when this is dropped.
#[derive(Debug)]
pub struct DriverHandle {
    driver: Arc<Driver>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    scheduler: JoinHandle<()>,
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
        self.scheduler.abort();
    }
}

impl DriverHandle {
    /// Asks executor `id` how it is doing (memory, blocks, spilled bytes, running tasks).
    ///
    /// # Errors
    ///
    /// The executor is unknown or does not answer.
    pub async fn executor_status(
        &self,
        id: &ExecutorId,
    ) -> Result<ember_engine::proto::ExecutorStatus> {
        self.status_call(id, false).await
    }

    /// Like [`DriverHandle::executor_status`], and the executor starts a new peak resident-set
    /// measurement right after answering: call it before a query and again after it to
    /// get the query's peak.
    ///
    /// # Errors
    ///
    /// As [`DriverHandle::executor_status`].
    pub async fn reset_executor_peak_rss(
        &self,
        id: &ExecutorId,
    ) -> Result<ember_engine::proto::ExecutorStatus> {
        self.status_call(id, true).await
    }

    async fn status_call(
        &self,
        id: &ExecutorId,
        reset_peak_rss: bool,
    ) -> Result<ember_engine::proto::ExecutorStatus> {
        let info = self.registry.get(id).ok_or_else(|| {
            EngineError::Internal(format!("{id} is not registered with this driver"))
        })?;
        let mut client = self.pool.executor(&info.address)?;
        match tokio::time::timeout(
            CONTROL_TIMEOUT,
            client.status(ember_engine::proto::StatusRequest { reset_peak_rss }),
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

    /// Starts a driver listening on `bind` (port 0 picks a free one).
    ///
    /// # Errors
    ///
    /// The address cannot be bound.
    pub async fn start(bind: SocketAddr, config: DriverConfig) -> Result<Self> {
        config.security.check_exposure("the driver", bind.ip())?;
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| EngineError::io(bind.to_string(), e))?;
        let address = listener
            .local_addr()
            .map_err(|e| EngineError::io(bind.to_string(), e))?;
        let advertised = rpc::advertised_address(address, config.advertise.as_deref(), None)?;
        let server_builder = rpc::server(&config.security)?;
        let auth = config.security.server_auth();
        let registry = Arc::new(ExecutorRegistry::new());
        let locations = Arc::new(BlockLocations::new());
        let pool = ChannelPool::new(config.security.clone());
        let app = format!("app-{}-{}", events::now_ms(), std::process::id());
        let (scheduler, loop_task) = SchedulerHandle::start(
            config.clone(),
            Arc::clone(&registry),
            Arc::clone(&locations),
            Arc::new(scheduler::GrpcBackend { pool: pool.clone() }),
            app.clone(),
        )?;
        let driver = Arc::new(Driver {
            address,
            advertised,
            app,
            config,
            registry,
            locations,
            pool,
            scheduler,
            lineage: DashMap::new(),
            computed: DashMap::new(),
            next_dataset: AtomicU64::new(1),
            next_job: AtomicU64::new(1),
            next_stage: AtomicU32::new(1),
            session: execution_session(),
            share_root: std::sync::OnceLock::new(),
        });
        let (shutdown, _) = watch::channel(false);
        let mut stop = shutdown.subscribe();
        let svc = DriverServiceServer::new(grpc::DriverServiceImpl {
            driver: Arc::clone(&driver),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let svc = tonic::service::interceptor::InterceptedService::new(svc, auth);
        let mut server_builder = server_builder;
        let server = tokio::spawn(async move {
            let incoming = rpc::incoming(listener, rpc::MAX_CONNECTIONS);
            let result = server_builder
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "driver server failed");
            }
        });
        tracing::info!(%address, advertised = %driver.advertised, app = %driver.app, "driver started");
        Ok(Self {
            driver,
            shutdown,
            server,
            scheduler: loop_task,
        })
    }
}

impl Driver {
    /// The address the driver is bound to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The address executors are told to register at (`host:port`).
    pub fn advertised_address(&self) -> &str {
        &self.advertised
    }

    /// Who may call, and how channels are protected.
    pub fn security(&self) -> &Security {
        &self.config.security
    }

    /// The driver's channels to executors (carrying its credentials).
    pub fn channels(&self) -> &ChannelPool {
        &self.pool
    }

    /// The executors known to the driver.
    pub fn registry(&self) -> &ExecutorRegistry {
        &self.registry
    }

    /// Reads the blocks of executors that share `root` with this process (same-host
    /// block files, see `ember-executor --share-dir`) by mapping their files; set once.
    pub fn share_block_files(&self, root: PathBuf) {
        let _ = self.share_root.set(root);
    }

    /// The same-host share directory, when one was set.
    pub(crate) fn share_root(&self) -> Option<&std::path::Path> {
        self.share_root.get().map(PathBuf::as_path)
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

    /// The application's id (the event log's file name).
    pub fn app_id(&self) -> &str {
        &self.app
    }

    /// Scheduler events from now on (every job, stage, task and executor change). A
    /// receiver that falls more than 1024 events behind loses the oldest.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<SchedulerEvent> {
        self.scheduler.subscribe()
    }

    /// What the driver is doing and has done: jobs with their stages and tasks, executors,
    /// cached datasets.
    ///
    /// # Errors
    ///
    /// The scheduler loop has stopped.
    pub async fn snapshot(&self) -> Result<AppSnapshot> {
        self.scheduler.snapshot().await
    }

    /// Records a training run's progress (a pass over the data, or its end) in the event
    /// stream, the event log and the snapshot; other events are ignored.
    pub async fn record_training(&self, event: SchedulerEvent) {
        if matches!(
            event,
            SchedulerEvent::TrainingPass { .. } | SchedulerEvent::TrainingEnded { .. }
        ) {
            self.scheduler.record_event(event).await;
        }
    }

    /// Cancels a running job: its tasks are stopped on the executors and its job-scoped
    /// blocks removed; the job's caller gets [`DriverError::Cancelled`]. Resolves once no
    /// task of it runs. Returns whether the job was running.
    ///
    /// # Errors
    ///
    /// The scheduler loop has stopped.
    pub async fn cancel_job(&self, job: JobId, reason: &str) -> Result<bool> {
        Ok(self.scheduler.cancel(Some(job), reason.to_string()).await? > 0)
    }

    /// Cancels every running job; returns how many.
    ///
    /// # Errors
    ///
    /// The scheduler loop has stopped.
    pub async fn cancel_all(&self, reason: &str) -> Result<usize> {
        self.scheduler.cancel(None, reason.to_string()).await
    }

    /// Adds a dataset to the lineage graph.
    pub fn register_dataset(&self, dataset: Dataset) -> Arc<Dataset> {
        let dataset = Arc::new(dataset);
        self.lineage.insert(dataset.id(), Arc::clone(&dataset));
        dataset
    }

    /// Adds a cached dataset to the lineage graph and reports it in the snapshot.
    pub async fn register_cached_dataset(&self, dataset: Dataset) -> Arc<Dataset> {
        let partitions = dataset.partitions();
        let dataset = self.register_dataset(dataset);
        self.scheduler
            .record_event(SchedulerEvent::DatasetCached {
                dataset: dataset.id(),
                partitions,
                time_ms: events::now_ms(),
            })
            .await;
        dataset
    }

    /// Drops a dataset from the lineage graph (its blocks are removed separately).
    fn forget_dataset(&self, id: DatasetId) {
        self.lineage.remove(&id);
    }

    /// Forgets which blocks of `id` were ever computed.
    fn forget_dataset_blocks(&self, id: DatasetId) {
        self.computed.retain(|block, _| block.dataset != id);
    }

    /// A dataset of the lineage graph.
    pub fn dataset(&self, id: DatasetId) -> Result<Arc<Dataset>> {
        self.lineage
            .get(&id)
            .map(|d| Arc::clone(d.value()))
            .ok_or_else(|| DriverError::Internal(format!("{id} is not in the lineage graph")))
    }

    /// Unpersists a cached dataset: its blocks leave every executor, and it stays in the
    /// lineage graph as a job-scoped dataset, so plans still reading it (clones of a cached
    /// DataFrame, views) compute it again per job instead of failing.
    ///
    /// # Errors
    ///
    /// The dataset is not in the lineage graph.
    pub async fn unpersist_dataset(&self, id: DatasetId) -> Result<()> {
        let dataset = self.dataset(id)?;
        if dataset.persistence() == Persistence::Cached {
            let demoted = Dataset::try_new(id, Arc::clone(dataset.plan()), Persistence::Job)?;
            self.lineage.insert(id, Arc::new(demoted));
        }
        self.drop_dataset_blocks(id).await;
        Ok(())
    }

    /// Drops a dataset's blocks from every executor and the dataset from the lineage graph.
    pub async fn remove_dataset(&self, id: DatasetId) {
        self.drop_dataset_blocks(id).await;
        self.lineage.remove(&id);
    }

    /// Removes a dataset's blocks from every executor and forgets they were computed.
    async fn drop_dataset_blocks(&self, id: DatasetId) {
        self.drop_blocks(&[id]).await;
        self.forget_dataset_blocks(id);
        self.scheduler
            .record_event(SchedulerEvent::DatasetUnpersisted {
                dataset: id,
                time_ms: events::now_ms(),
            })
            .await;
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

    /// Declares an executor lost: it gets no more tasks, every block it held is forgotten
    /// (to be recomputed from lineage when next needed) and its running tasks run again
    /// elsewhere. Returns whether it was alive until now.
    pub async fn lose_executor(&self, id: &ExecutorId, reason: &str) -> bool {
        self.scheduler
            .executor_lost(id.clone(), reason.to_string())
            .await
    }

    /// Asks every live executor to shut down.
    pub async fn shutdown_executors(&self) {
        let calls = self.registry.alive().into_iter().map(|e| async move {
            if let Ok(mut client) = self.pool.executor(&e.address) {
                let _ = tokio::time::timeout(CONTROL_TIMEOUT, client.shutdown(ShutdownRequest {}))
                    .await;
            }
            self.scheduler
                .executor_lost(e.id.clone(), "shut down by the driver".into())
                .await;
        });
        futures::future::join_all(calls).await;
    }
}

/// The driver's own session, in which it runs final fragments and computes blocks from
/// lineage: a broadcast join's filter is filled in by Ember's `join_filter` (put over
/// the plan before it runs), never by DataFusion's, which waits for every probe partition
/// of one plan instance.
fn execution_session() -> SessionContext {
    let mut config = datafusion::prelude::SessionConfig::new();
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    SessionContext::new_with_config(config)
}
