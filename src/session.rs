//! Session: the entry point of an Ember application. Owns the driver, the executors it
//! started (in-process or as processes) and the SQL catalog; plans with DataFusion and
//! hands jobs to the driver.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::options::ArrowReadOptions;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{
    CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext,
};
use ember_driver::{
    AppSnapshot, DriverConfig, DriverHandle, ExecutorInfo, JobDescription, JobMetrics,
    SchedulingMode,
};
use ember_engine::lineage::{Dataset, Persistence};
use ember_engine::JobId;
use ember_executor::{ExecutorConfig, ExecutorHandle};

use crate::dataframe::DataFrame;
use crate::error::{Error, Result};
use crate::local_cluster::{find_launch, spawn_executor, ChildGuard, Healer};
use crate::subquery::SubqueryFirstPlanner;

/// How long a new session waits for its executors to register.
const EXECUTOR_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Default block-manager memory of each executor a session starts.
const DEFAULT_EXECUTOR_MEMORY: usize = 2 << 30;

/// By default, how many dead executor processes a local cluster replaces over a session's
/// life (Spark's standalone master gives up on an application after ten executor
/// failures in a row).
pub const DEFAULT_EXECUTOR_RESTARTS: usize = 10;

/// How often a local cluster looks for executor processes that died.
const HEAL_INTERVAL: Duration = Duration::from_millis(200);

/// Where a session's executors run.
#[derive(Debug)]
enum Executors {
    /// In this process, over the same gRPC task and block protocol.
    InProcess(Vec<Option<ExecutorHandle>>),
    /// Child processes on loopback.
    Processes(Vec<ChildGuard>),
    /// Started by someone else (`ember-executor --driver ADDR`).
    External,
}

struct Inner {
    driver: DriverHandle,
    executors: Mutex<Executors>,
    last_metrics: Mutex<Option<JobMetrics>>,
    /// For a local cluster: replaces executor processes that die.
    healer: Option<Arc<Healer>>,
    /// The web UI, when the builder asked for one.
    ui: std::sync::OnceLock<crate::ui::UiHandle>,
    /// The planner's choices this session makes.
    planning: Planning,
}

/// Choices of Ember's planner that a session makes or leaves out (to measure them).
#[derive(Debug, Clone, Copy)]
struct Planning {
    /// Whether small-looking join sides run first and are broadcast when they turn out
    /// small ([`ember_driver::planner::runtime_broadcast`]).
    runtime_broadcast: bool,
    /// Whether scans of files holding disjoint key ranges are co-partitioned on their join
    /// keys ([`ember_driver::planner::key_ranges`]).
    key_range_scans: bool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("driver", &self.driver.address())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Executor processes are killed by their guards; in-process ones by their handles.
        tracing::debug!("session closed");
    }
}

/// A connection to an Ember cluster: reads data, runs SQL, and runs DataFrame jobs on the
/// cluster's executors. Cheap to clone; the cluster it started stops when the last clone
/// is dropped.
///
/// ```no_run
/// # async fn demo() -> ember::Result<()> {
/// use ember::prelude::*;
/// let session = Session::local_cluster(2).await?;
/// let df = session.sql("SELECT 1 + 1 AS two").await?;
/// let batches = df.collect().await?;
/// assert_eq!(batches[0].num_rows(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
    /// The SQL catalog, configuration and planner of this handle (shared by its clones;
    /// see [`Session::isolated`]).
    ctx: SessionContext,
    /// The scheduling pool this handle's jobs run in (see [`Session::with_pool`]).
    pool: Arc<str>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("cluster", &self.inner)
            .field("session_id", &self.ctx.session_id())
            .field("pool", &self.pool)
            .finish()
    }
}

/// Options for starting a session.
#[derive(Debug, Clone)]
pub struct SessionBuilder {
    executors: usize,
    cores: Option<usize>,
    memory: usize,
    executor_binary: Option<std::path::PathBuf>,
    driver: DriverConfig,
    broadcast_threshold: usize,
    device: ember_mllib::gpu::Device,
    adapter: ember_mllib::gpu::AdapterChoice,
    /// Fault injection: (executor index, delay before each of its tasks).
    task_delays: Vec<(usize, Duration)>,
    executor_restarts: usize,
    ui: Option<crate::ui::UiConfig>,
    progress: bool,
    host_files: bool,
    planning: Planning,
}

/// Default size under which a join's build side is sent whole to every task instead of
/// both sides being shuffled.
pub const DEFAULT_BROADCAST_THRESHOLD: usize = 1 << 20;

impl Default for SessionBuilder {
    fn default() -> Self {
        Self {
            executors: 2,
            cores: None,
            memory: DEFAULT_EXECUTOR_MEMORY,
            executor_binary: None,
            driver: DriverConfig::default(),
            broadcast_threshold: DEFAULT_BROADCAST_THRESHOLD,
            device: ember_mllib::gpu::Device::Auto,
            adapter: ember_mllib::gpu::AdapterChoice::default(),
            task_delays: Vec::new(),
            executor_restarts: DEFAULT_EXECUTOR_RESTARTS,
            ui: None,
            progress: true,
            host_files: true,
            planning: Planning {
                runtime_broadcast: true,
                key_range_scans: false,
            },
        }
    }
}

impl SessionBuilder {
    /// Number of executors (at least 1).
    pub fn executors(mut self, n: usize) -> Self {
        self.executors = n.max(1);
        self
    }

    /// Task slots per executor; defaults to the machine's cores divided among executors.
    pub fn cores_per_executor(mut self, cores: usize) -> Self {
        self.cores = Some(cores.max(1));
        self
    }

    /// Memory limit per executor, in bytes (default 2 GiB): half holds blocks (cached
    /// partitions, shuffle outputs; beyond it shuffle outputs spill to disk), half is the
    /// operators' pool (hash tables and sorts spill to disk beyond it).
    pub fn memory_per_executor(mut self, bytes: usize) -> Self {
        self.memory = bytes;
        self
    }

    /// Joins whose smaller side is estimated under `bytes` (and under 128k rows) send that
    /// side whole to every task (a broadcast join); larger joins shuffle both sides by key.
    /// 0 always shuffles. Default [`DEFAULT_BROADCAST_THRESHOLD`].
    pub fn broadcast_join_threshold(mut self, bytes: usize) -> Self {
        self.broadcast_threshold = bytes;
        self
    }

    /// The program to start executor processes from (default: see
    /// [`Session::local_cluster`]).
    pub fn executor_binary(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.executor_binary = Some(path.into());
        self
    }

    /// Driver tunables (heartbeats, retry limits, timeouts).
    pub fn driver_config(mut self, config: DriverConfig) -> Self {
        self.driver = config;
        self
    }

    /// How concurrent jobs share the executors' task slots: `Fifo` (default: the oldest
    /// job first) or `Fair` (round-robin between pools, then jobs; see
    /// [`Session::with_pool`]).
    pub fn scheduling_mode(mut self, mode: SchedulingMode) -> Self {
        self.driver.scheduling_mode = mode;
        self
    }

    /// Appends every scheduler event (jobs, stages, tasks, executors, cached datasets) as
    /// JSON lines to `<dir>/<application id>.jsonl`; replay it with
    /// [`ember_driver::SnapshotBuilder::replay`].
    pub fn event_log(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.driver.event_log = Some(dir.into());
        self
    }

    /// Serves the web UI and its REST API (Spark's monitoring API's shape) and `/metrics`
    /// while the session lives; [`Session::ui_url`] says where.
    pub fn ui(mut self, config: crate::ui::UiConfig) -> Self {
        self.ui = Some(config);
        self
    }

    /// Whether the executor processes of a local cluster hand each other blocks through
    /// files on a memory file system (`/dev/shm`), written once and memory-mapped by the
    /// reader, instead of sending them over loopback gRPC (default on where `/dev/shm`
    /// exists; off, every block a peer reads is sent, as between hosts).
    pub fn same_host_files(mut self, on: bool) -> Self {
        self.host_files = on;
        self
    }

    /// Whether running stages show progress bars on stderr when it is a terminal (default
    /// on; they are never drawn into a pipe or a file).
    pub fn console_progress(mut self, show: bool) -> Self {
        self.progress = show;
        self
    }

    /// Starts the web UI of `session` when one was asked for, and the console progress
    /// bars.
    async fn with_ui(&self, session: Session) -> Result<Session> {
        if self.progress && crate::progress::wanted() {
            crate::progress::follow(session.driver().subscribe());
        }
        let Some(config) = &self.ui else {
            return Ok(session);
        };
        let driver = session.driver();
        let environment = vec![
            ("ember.app.id".to_string(), driver.app_id().to_string()),
            (
                "ember.driver.address".into(),
                driver.advertised_address().to_string(),
            ),
            (
                "ember.executor.instances".into(),
                self.executors.to_string(),
            ),
            ("ember.executor.cores".into(), self.cores().to_string()),
            ("ember.executor.memory".into(), self.memory.to_string()),
            (
                "ember.scheduler.mode".into(),
                format!("{:?}", self.driver.scheduling_mode),
            ),
            (
                "ember.eventLog.dir".into(),
                self.driver
                    .event_log
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "ember.autoBroadcastJoinThreshold".into(),
                self.broadcast_threshold.to_string(),
            ),
            (
                "ember.authenticate".into(),
                self.driver.security.secret.is_some().to_string(),
            ),
        ];
        let handle = crate::ui::serve_live(Arc::clone(driver), environment, config)
            .await
            .map_err(|e| Error::Cluster(e.to_string()))?;
        tracing::info!(url = %handle.url(), "web UI started");
        let _ = session.inner.ui.set(handle);
        Ok(session)
    }

    /// Whether a partitioned join's small-looking side runs first, as a job of its own, and
    /// is broadcast to the other side's tasks when its rows turn out to fit under 16 times
    /// the broadcast threshold, saving the other side's shuffle (default on; see
    /// [`ember_driver::planner::runtime_broadcast`]).
    pub fn runtime_broadcast(mut self, on: bool) -> Self {
        self.planning.runtime_broadcast = on;
        self
    }

    /// Whether the scans of a partitioned join whose files hold disjoint ranges of the join
    /// key (each file's footer bounds its keys) read their files grouped by range, so that
    /// the join needs no shuffle (default off until it is measured at scale; see
    /// [`ember_driver::planner::key_ranges`]).
    pub fn key_range_scans(mut self, on: bool) -> Self {
        self.planning.key_range_scans = on;
        self
    }

    /// Fault injection for tests of straggler handling: executor `index` (in start order)
    /// waits `delay` before each task it runs. May be given for several executors.
    pub fn inject_task_delay(mut self, index: usize, delay: Duration) -> Self {
        self.task_delays.push((index, delay));
        self
    }

    /// How many executor processes of a local cluster that die (killed, crashed, ended by
    /// the kernel's OOM killer) are replaced by new ones over the session's life; default
    /// [`DEFAULT_EXECUTOR_RESTARTS`], 0 to leave dead executors dead.
    pub fn max_executor_restarts(mut self, n: usize) -> Self {
        self.executor_restarts = n;
        self
    }

    fn delay_of(&self, index: usize) -> Option<Duration> {
        self.task_delays
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, delay)| *delay)
    }

    /// What the executors run mllib kernels on: `Auto` (default: a hardware GPU adapter
    /// when one opens at the first training pass, else the CPU), `Gpu` (any adapter,
    /// software ones included; an executor without one fails to start) or `Cpu`.
    pub fn device(mut self, device: ember_mllib::gpu::Device) -> Self {
        self.device = device;
        self
    }

    /// Which GPU adapter the executors open (by name, by backend); by default the
    /// best-ranked one: discrete > integrated > virtual > software, then Vulkan > Metal >
    /// DX12 > GL.
    pub fn adapter(mut self, adapter: ember_mllib::gpu::AdapterChoice) -> Self {
        self.adapter = adapter;
        self
    }

    fn executor_settings(&self) -> crate::local_cluster::ExecutorSettings {
        crate::local_cluster::ExecutorSettings {
            cores: self.cores(),
            memory: self.memory,
            device: self.device,
            adapter: self.adapter.clone(),
            security: self.driver.security.clone(),
            share: None,
        }
    }

    /// Who may call the cluster's driver and executors, and how their connections are
    /// protected. Local clusters (in-process or processes) get a fresh random secret when
    /// none is given, so no other local user can call their loopback ports.
    pub fn security(mut self, security: ember_engine::security::Security) -> Self {
        self.driver.security = security;
        self
    }

    /// Gives a local cluster a random secret unless one was set.
    fn with_local_secret(mut self) -> Self {
        if self.driver.security.secret.is_none() {
            self.driver.security.secret = Some(ember_engine::security::Secret::generate());
        }
        self
    }

    fn cores(&self) -> usize {
        self.cores.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1);
            (cpus / self.executors).max(1)
        })
    }

    async fn start_driver(&self) -> Result<DriverHandle> {
        crate::register_extensions();
        let bind = "127.0.0.1:0"
            .parse()
            .map_err(|e| Error::Cluster(format!("{e}")))?;
        Ok(DriverHandle::start(bind, self.driver.clone()).await?)
    }

    /// Starts executors inside this process; tasks and blocks still go through gRPC on
    /// loopback exactly as with processes.
    pub async fn local(self) -> Result<Session> {
        let this = self.with_local_secret();
        let driver = this.start_driver().await?;
        let cores = this.cores();
        let mut handles = Vec::with_capacity(this.executors);
        for i in 0..this.executors {
            let handle = ember_executor::start(ExecutorConfig {
                driver: driver.address().to_string(),
                bind: "127.0.0.1:0"
                    .parse()
                    .map_err(|e| Error::Cluster(format!("{e}")))?,
                memory_bytes: this.memory,
                cores,
                id: Some(format!("exec-{i}")),
                register_timeout: ember_executor::DEFAULT_REGISTER_TIMEOUT,
                hooks: crate::executor_main::kernel_hooks(this.device, this.adapter.clone())
                    .await?,
                driver_timeout: ember_executor::DEFAULT_DRIVER_TIMEOUT,
                task_delay: this.delay_of(i),
                advertise: None,
                security: this.driver.security.clone(),
                share_dir: None,
            })
            .await?;
            handles.push(Some(handle));
        }
        let session = Session::assemble(
            driver,
            Executors::InProcess(handles),
            this.executors,
            cores,
            this.broadcast_threshold,
            this.planning,
            None,
        )
        .await?;
        this.with_ui(session).await
    }

    /// Starts executor processes on loopback ports and waits until they have registered.
    pub async fn local_cluster(self) -> Result<Session> {
        let this = self.with_local_secret();
        this.start_local_cluster().await
    }

    async fn start_local_cluster(self) -> Result<Session> {
        let launch = find_launch(self.executor_binary.as_deref())?;
        let driver = self.start_driver().await?;
        let cores = self.cores();
        let address = driver.advertised_address().to_string();
        let mut settings = self.executor_settings();
        if self.host_files {
            settings.share = crate::local_cluster::host_share_dir().map(Arc::new);
            if let Some(share) = &settings.share {
                driver.share_block_files(share.path().to_path_buf());
            }
        }
        let mut children = Vec::with_capacity(self.executors);
        for i in 0..self.executors {
            children.push(spawn_executor(
                &launch,
                &address,
                &format!("exec-{i}"),
                &settings,
                self.delay_of(i),
            )?);
        }
        // Wait for registrations, noticing at once an executor that died on start.
        let started = std::time::Instant::now();
        let mut dead: Vec<String> = Vec::new();
        let mut up = 0;
        while started.elapsed() < EXECUTOR_START_TIMEOUT && dead.is_empty() {
            up = driver
                .registry()
                .wait_for(self.executors, Duration::from_millis(100))
                .await;
            if up >= self.executors {
                break;
            }
            dead = children
                .iter_mut()
                .filter_map(|c| {
                    c.exited()
                        .map(|status| format!("{} exited ({status})", c.id))
                })
                .collect();
        }
        if up < self.executors {
            return Err(Error::Cluster(format!(
                "only {up} of {} executors registered within {EXECUTOR_START_TIMEOUT:?} \
                 (binary {}){}",
                self.executors,
                launch.binary.display(),
                if dead.is_empty() {
                    String::new()
                } else {
                    format!(": {}", dead.join(", "))
                }
            )));
        }
        let healer = Arc::new(Healer {
            launch,
            driver: address,
            settings,
            task_delays: self.task_delays.clone(),
            limit: self.executor_restarts,
            replaced: Default::default(),
        });
        let session = Session::assemble(
            driver,
            Executors::Processes(children),
            self.executors,
            cores,
            self.broadcast_threshold,
            self.planning,
            Some(Arc::clone(&healer)),
        )
        .await?;
        let inner = Arc::downgrade(&session.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEAL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Ends with the session.
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let mut executors = inner.executors.lock().unwrap_or_else(|p| p.into_inner());
                if let Executors::Processes(children) = &mut *executors {
                    healer.heal(children);
                }
            }
        });
        self.with_ui(session).await
    }

    /// Starts a driver on `bind` for executors started elsewhere with
    /// `ember-executor --driver ADDR`, and waits until `self.executors` have registered.
    pub async fn standalone(self, bind: std::net::SocketAddr) -> Result<Session> {
        crate::register_extensions();
        let driver = DriverHandle::start(bind, self.driver.clone()).await?;
        let up = driver
            .registry()
            .wait_for(self.executors, EXECUTOR_START_TIMEOUT)
            .await;
        if up < self.executors {
            return Err(Error::Cluster(format!(
                "only {up} of {} executors registered at {} within {EXECUTOR_START_TIMEOUT:?}",
                self.executors,
                driver.advertised_address()
            )));
        }
        let cores = driver
            .registry()
            .alive()
            .iter()
            .map(|e| e.cores as usize)
            .sum::<usize>()
            / up.max(1);
        let session = Session::assemble(
            driver,
            Executors::External,
            up,
            cores,
            self.broadcast_threshold,
            self.planning,
            None,
        )
        .await?;
        self.with_ui(session).await
    }
}

impl Session {
    /// Options for a new session.
    pub fn builder() -> SessionBuilder {
        SessionBuilder::default()
    }

    /// A session with `n` executors inside this process (same task and block protocol as a
    /// cluster, no processes to manage).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> ember::Result<()> {
    /// use ember::prelude::*;
    /// let session = Session::local(2).await?;
    /// assert_eq!(session.executors().len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn local(n: usize) -> Result<Session> {
        Session::builder().executors(n).local().await
    }

    /// A session with `n` executor processes on loopback ports, stopped when the session
    /// is dropped.
    ///
    /// Executors are started from, in order: the binary named by `EMBER_EXECUTOR_BIN`;
    /// this program itself if it called [`crate::run_executor_if_requested`] first; an
    /// `ember-executor` binary beside this program.
    pub async fn local_cluster(n: usize) -> Result<Session> {
        Session::builder().executors(n).local_cluster().await
    }

    async fn assemble(
        driver: DriverHandle,
        executors: Executors,
        n: usize,
        cores: usize,
        broadcast_threshold: usize,
        planning: Planning,
        healer: Option<Arc<Healer>>,
    ) -> Result<Session> {
        // Hash repartitions become shuffles between executors. Round-robin repartitioning
        // only spreads a scan's batches over more partitions; Ember gets that parallelism
        // from splitting files instead, without moving rows between processes.
        let config = SessionConfig::new()
            .with_target_partitions((n * cores).max(1))
            .with_round_robin_repartition(false)
            .with_repartition_joins(true)
            .with_repartition_aggregations(true)
            .with_repartition_windows(true)
            .with_information_schema(true);
        let mut config = config;
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.hash_join_single_partition_threshold = broadcast_threshold;
        if broadcast_threshold == 0 {
            optimizer.hash_join_single_partition_threshold_rows = 0;
        }
        // Two DataFusion features share state between the partitions of one in-memory plan,
        // which Ember's tasks (one partition each, from their own copy of the plan) cannot:
        // dynamic join filters wait for every probe partition of the same plan instance,
        // and physical scalar subqueries hand their value to expressions through an
        // in-memory container. Join filters are still planned (pushed into the probe
        // side's scan) and filled in per task from a broadcast join's build side by
        // Ember's `join_filter`; uncorrelated scalar subqueries are kept as such by the
        // optimizer and run as jobs of their own before the query is planned with their
        // values (`subquery::SubqueryFirstPlanner`).
        optimizer.enable_dynamic_filter_pushdown = true;
        optimizer.enable_join_dynamic_filter_pushdown = true;
        optimizer.enable_topk_dynamic_filter_pushdown = false;
        optimizer.enable_aggregate_dynamic_filter_pushdown = false;
        optimizer.enable_physical_uncorrelated_scalar_subquery = true;
        // Partition i of a scan must read only file group i (see the executor's session).
        config
            .options_mut()
            .execution
            .enable_file_stream_work_stealing = false;
        // Every read lists its directory again (as Spark does): a listing kept for the
        // session's life would hide files written after the first read.
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_cache_manager(
                datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                    .with_list_files_cache_limit(0),
            )
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rules(
                ember_driver::planner::join_sides::physical_optimizer_rules(
                    planning.key_range_scans,
                ),
            )
            .with_query_planner(Arc::new(SubqueryFirstPlanner::new(Arc::clone(&*driver))))
            .build();
        Ok(Session {
            ctx: SessionContext::new_with_state(state),
            inner: Arc::new(Inner {
                driver,
                executors: Mutex::new(executors),
                last_metrics: Mutex::new(None),
                healer,
                ui: std::sync::OnceLock::new(),
                planning,
            }),
            pool: Arc::from(ember_driver::DEFAULT_POOL),
        })
    }

    /// A handle on the same session whose jobs run in scheduling pool `pool`: under
    /// [`SchedulingMode::Fair`] pools share task slots round-robin, whatever number of
    /// jobs each runs.
    pub fn with_pool(&self, pool: &str) -> Session {
        Session {
            inner: Arc::clone(&self.inner),
            ctx: self.ctx.clone(),
            pool: Arc::from(pool),
        }
    }

    /// A handle on the same cluster with a catalog and configuration of its own: tables
    /// and views registered through it are not seen by other handles, nor theirs by it,
    /// while jobs, executors and the block cache are shared. Spark Connect sessions of one
    /// `ember server` are isolated this way.
    pub fn isolated(&self) -> Session {
        let config = self.ctx.copied_config();
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.ctx.runtime_env())
            .with_default_features()
            .with_physical_optimizer_rules(
                ember_driver::planner::join_sides::physical_optimizer_rules(
                    self.inner.planning.key_range_scans,
                ),
            )
            .with_query_planner(Arc::new(SubqueryFirstPlanner::new(Arc::clone(
                &*self.inner.driver,
            ))))
            .build();
        Session {
            inner: Arc::clone(&self.inner),
            ctx: SessionContext::new_with_state(state),
            pool: Arc::clone(&self.pool),
        }
    }

    /// A job description in this handle's pool.
    pub(crate) fn job_description(&self, text: String) -> JobDescription {
        JobDescription {
            pool: self.pool.to_string(),
            ..JobDescription::new(text)
        }
    }

    /// What the driver is doing and has done: jobs (with their stages and tasks),
    /// executors and cached datasets.
    ///
    /// # Errors
    ///
    /// The driver's scheduler has stopped.
    pub async fn snapshot(&self) -> Result<AppSnapshot> {
        Ok(self.inner.driver.snapshot().await?)
    }

    /// Ids of the jobs running now, oldest first.
    ///
    /// # Errors
    ///
    /// The driver's scheduler has stopped.
    pub async fn running_jobs(&self) -> Result<Vec<JobId>> {
        Ok(self
            .snapshot()
            .await?
            .jobs
            .iter()
            .filter(|j| j.status == ember_driver::JobStatus::Running)
            .map(|j| j.job)
            .collect())
    }

    /// Cancels a running job: its tasks stop on the executors, its slots free up, its
    /// job-scoped blocks and spill files are removed, and its caller gets a "cancelled"
    /// error. Resolves once none of its tasks runs. Returns whether it was running.
    ///
    /// # Errors
    ///
    /// The driver's scheduler has stopped.
    pub async fn cancel_job(&self, job: JobId) -> Result<bool> {
        Ok(self
            .inner
            .driver
            .cancel_job(job, "cancelled by the session")
            .await?)
    }

    /// Cancels every running job; returns how many.
    ///
    /// # Errors
    ///
    /// The driver's scheduler has stopped.
    pub async fn cancel_all(&self) -> Result<usize> {
        Ok(self
            .inner
            .driver
            .cancel_all("cancelled by the session")
            .await?)
    }

    /// DataFusion's context: the catalog and planner this session uses.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The driver (registry, block locations, lineage).
    pub fn driver(&self) -> &DriverHandle {
        &self.inner.driver
    }

    /// The web UI's URL, when the session serves one ([`SessionBuilder::ui`]).
    pub fn ui_url(&self) -> Option<String> {
        self.inner.ui.get().map(crate::ui::UiHandle::url)
    }

    /// The executors alive now.
    pub fn executors(&self) -> Vec<ExecutorInfo> {
        self.inner.driver.registry().alive()
    }

    /// Metrics of the last job this session ran.
    pub fn last_job_metrics(&self) -> Option<JobMetrics> {
        self.inner
            .last_metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the last job's recorded metrics.
    pub(crate) fn amend_metrics(&self, amend: impl FnOnce(&mut JobMetrics)) {
        if let Some(m) = self
            .inner
            .last_metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            amend(m);
        }
    }

    pub(crate) fn record_metrics(&self, metrics: JobMetrics) {
        *self
            .inner
            .last_metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(metrics);
    }

    /// Kills executor `index` (0-based, in start order) the hard way: SIGKILL for a
    /// process, an abrupt stop for an in-process executor. Its blocks are gone; the driver
    /// finds out through a failed call or missed heartbeats; a local cluster starts a
    /// replacement process in its slot (see [`SessionBuilder::max_executor_restarts`]).
    /// Returns its id.
    pub fn kill_executor(&self, index: usize) -> Result<String> {
        let mut executors = self
            .inner
            .executors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &mut *executors {
            Executors::Processes(children) => {
                let child = children
                    .get_mut(index)
                    .ok_or_else(|| Error::Cluster(format!("no executor {index}")))?;
                child.kill();
                Ok(child.id.clone())
            }
            Executors::InProcess(handles) => {
                let handle = handles
                    .get_mut(index)
                    .and_then(Option::take)
                    .ok_or_else(|| Error::Cluster(format!("no running executor {index}")))?;
                let id = handle.id().0.clone();
                drop(handle);
                Ok(id)
            }
            Executors::External => Err(Error::Cluster(
                "executors of a standalone cluster are not this session's to kill".into(),
            )),
        }
    }

    /// How many executor processes of this session's local cluster died and were replaced
    /// (see [`SessionBuilder::max_executor_restarts`]).
    pub fn executors_replaced(&self) -> usize {
        self.inner
            .healer
            .as_ref()
            .map_or(0, |h| h.replaced.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Process ids of the executor processes this session started.
    pub fn executor_pids(&self) -> Vec<u32> {
        let executors = self
            .inner
            .executors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &*executors {
            Executors::Processes(children) => children.iter().map(|c| c.child.id()).collect(),
            _ => Vec::new(),
        }
    }

    /// Plans `query` (any SQL DataFusion accepts). DDL such as `CREATE EXTERNAL TABLE`
    /// takes effect at once, and so does `COPY (query) TO 'dir' STORED AS PARQUET`, which
    /// the executors write as one file per partition (its result is the row count; a COPY
    /// to a single named file or with options or partition columns is written by
    /// DataFusion on the driver when collected). Queries run when an action is called on
    /// the result; `EXPLAIN` shows Ember's stages.
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> ember::Result<()> {
    /// use ember::prelude::*;
    /// let session = Session::local(1).await?;
    /// let df = session.sql("SELECT 40 + 2 AS answer").await?;
    /// assert_eq!(df.count().await?, 1);
    /// assert!(session.sql("SELEC nonsense").await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn sql(&self, query: &str) -> Result<DataFrame> {
        let df = self.ctx.sql(query).await?;
        match df.logical_plan() {
            // EXPLAIN shows Ember's stages as well as DataFusion's plans.
            LogicalPlan::Explain(explain) => {
                let inner = datafusion::dataframe::DataFrame::new(
                    self.ctx.state(),
                    explain.plan.as_ref().clone(),
                );
                let text = DataFrame::new(self.clone(), inner).explain().await?;
                self.one_value(
                    "plan",
                    Arc::new(arrow::array::StringArray::from(vec![text])),
                )
            }
            // COPY ... TO a directory in Parquet: the executors write one file per
            // partition, atomically (see `DataFrame::write_parquet`). It runs now, as DDL
            // does, and the result is the row count.
            LogicalPlan::Copy(copy)
                if copy.partition_by.is_empty()
                    && copy.options.is_empty()
                    && copy.file_type.get_ext().eq_ignore_ascii_case("parquet")
                    && Path::new(&copy.output_url).extension().is_none() =>
            {
                let input = datafusion::dataframe::DataFrame::new(
                    self.ctx.state(),
                    copy.input.as_ref().clone(),
                );
                DataFrame::new(self.clone(), input)
                    .with_description(query)
                    .write_parquet(&copy.output_url)
                    .await?;
                let rows = self
                    .last_job_metrics()
                    .map(|m| m.rows_written)
                    .unwrap_or_default();
                self.one_value(
                    "count",
                    Arc::new(arrow::array::UInt64Array::from(vec![rows])),
                )
            }
            LogicalPlan::Analyze(_) => Err(Error::Unsupported(
                "EXPLAIN ANALYZE: run the query and read Session::last_job_metrics() instead"
                    .into(),
            )),
            // Catalog queries (SHOW TABLES, SHOW COLUMNS, DESCRIBE, information_schema)
            // read the driver's catalog: they run here, at once, not on executors.
            plan if reads_catalog(plan) => {
                let read = catalog_on_driver(&self.ctx, df).await?;
                Ok(DataFrame::new(self.clone(), read).with_description(query))
            }
            _ => Ok(DataFrame::new(self.clone(), df).with_description(query)),
        }
    }

    /// A one-row, one-column DataFrame (the result of a statement run at once).
    fn one_value(&self, name: &str, value: arrow::array::ArrayRef) -> Result<DataFrame> {
        let batch = RecordBatch::try_from_iter(vec![(name, value)])
            .map_err(ember_engine::EngineError::from)?;
        Ok(DataFrame::new(self.clone(), self.ctx.read_batch(batch)?))
    }

    /// A DataFrame over a Parquet file or directory.
    pub async fn read_parquet(&self, path: impl AsRef<Path>) -> Result<DataFrame> {
        let path = existing(path.as_ref())?;
        let df = self
            .ctx
            .read_parquet(path, ParquetReadOptions::default())
            .await?;
        Ok(DataFrame::new(self.clone(), df))
    }

    /// A DataFrame over a CSV file or directory (with a header row).
    pub async fn read_csv(&self, path: impl AsRef<Path>) -> Result<DataFrame> {
        let path = existing(path.as_ref())?;
        let df = self.ctx.read_csv(path, CsvReadOptions::new()).await?;
        Ok(DataFrame::new(self.clone(), df))
    }

    /// A DataFrame over a newline-delimited JSON file or directory.
    pub async fn read_json(&self, path: impl AsRef<Path>) -> Result<DataFrame> {
        let path = existing(path.as_ref())?;
        let ext = extension_of(path.as_ref(), ".json");
        let df = self
            .ctx
            .read_json(path, JsonReadOptions::default().file_extension(&ext))
            .await?;
        Ok(DataFrame::new(self.clone(), df))
    }

    /// Registers a Parquet file or directory as table `name` for SQL.
    pub async fn register_parquet(&self, name: &str, path: impl AsRef<Path>) -> Result<()> {
        let path = existing(path.as_ref())?;
        self.ctx
            .register_parquet(name, path, ParquetReadOptions::default())
            .await?;
        Ok(())
    }

    /// Registers a CSV file or directory (with a header row) as table `name` for SQL.
    pub async fn register_csv(&self, name: &str, path: impl AsRef<Path>) -> Result<()> {
        let path = existing(path.as_ref())?;
        let ext = extension_of(path.as_ref(), ".csv");
        self.ctx
            .register_csv(name, path, CsvReadOptions::new().file_extension(&ext))
            .await?;
        Ok(())
    }

    /// Registers a newline-delimited JSON file or directory as table `name` for SQL.
    pub async fn register_json(&self, name: &str, path: impl AsRef<Path>) -> Result<()> {
        let path = existing(path.as_ref())?;
        let ext = extension_of(path.as_ref(), ".json");
        self.ctx
            .register_json(name, path, JsonReadOptions::default().file_extension(&ext))
            .await?;
        Ok(())
    }

    /// A DataFrame over an Arrow IPC file or directory.
    pub async fn read_arrow(&self, path: impl AsRef<Path>) -> Result<DataFrame> {
        let path = existing(path.as_ref())?;
        let ext = extension_of(path.as_ref(), ".arrow");
        let df = self
            .ctx
            .read_arrow(
                path,
                ArrowReadOptions {
                    file_extension: &ext,
                    ..Default::default()
                },
            )
            .await?;
        Ok(DataFrame::new(self.clone(), df))
    }

    /// Registers an Arrow IPC file or directory as table `name` for SQL.
    pub async fn register_arrow(&self, name: &str, path: impl AsRef<Path>) -> Result<()> {
        let path = existing(path.as_ref())?;
        let ext = extension_of(path.as_ref(), ".arrow");
        self.ctx
            .register_arrow(
                name,
                &path,
                ArrowReadOptions {
                    file_extension: &ext,
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Registers a DataFrame as a view named `name` for SQL.
    pub fn register_dataframe(&self, name: &str, df: &DataFrame) -> Result<()> {
        self.ctx
            .register_table(name, df.inner().clone().into_view())?;
        Ok(())
    }

    /// Runs a DataFusion physical plan on the cluster: it is cut into stages at its
    /// exchanges, the stages run on the executors and the final fragment on the driver.
    pub async fn collect_plan(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Vec<RecordBatch>> {
        let description = self.job_description(format!(
            "collect: {}",
            datafusion::physical_plan::displayable(plan.as_ref()).one_line()
        ));
        self.run_collect_planned(plan, std::time::Instant::now(), &description)
            .await
    }

    /// Cuts `plan` into stages and runs it (the final fragment on the driver), for a plan
    /// whose planning began at `planning_started`.
    pub(crate) async fn run_collect_planned(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        planning_started: std::time::Instant,
        description: &JobDescription,
    ) -> Result<Vec<RecordBatch>> {
        let driver = &self.inner.driver;
        let (plan, broadcast) = self.broadcast_small_sides(plan, description).await?;
        let job = driver.plan_job(plan)?;
        let planning = planning_started.elapsed();
        let replaced = self.executors_replaced();
        let (batches, mut metrics) = driver.collect(job.root, job.stages, description).await?;
        metrics.planning = planning;
        metrics.sides_broadcast = broadcast.broadcast;
        metrics.sides_restricting = broadcast.restricting;
        metrics.executors_replaced = self.executors_replaced() - replaced;
        self.record_metrics(metrics);
        Ok(batches)
    }

    /// Cuts `plan` into stages and runs it, handing the final fragment's batches on as
    /// the driver produces them; the job's metrics are recorded when it ends.
    pub(crate) async fn run_stream_planned(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        planning_started: std::time::Instant,
        description: &JobDescription,
    ) -> Result<crate::dataframe::ResultStream> {
        let driver = &self.inner.driver;
        let (plan, broadcast) = self.broadcast_small_sides(plan, description).await?;
        let job = driver.plan_job(plan)?;
        let planning = planning_started.elapsed();
        let (stream, metrics) = driver.execute_stream(job.root, job.stages, description);
        let session = self.clone();
        tokio::spawn(async move {
            if let Ok(mut metrics) = metrics.await {
                metrics.planning = planning;
                metrics.sides_broadcast = broadcast.broadcast;
                metrics.sides_restricting = broadcast.restricting;
                session.record_metrics(metrics);
            }
        });
        Ok(crate::dataframe::ResultStream { inner: stream })
    }

    /// `plan` with the small-looking sides of its partitioned joins run first and
    /// broadcast when they turn out small, when this session does that.
    async fn broadcast_small_sides(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        description: &JobDescription,
    ) -> Result<(
        Arc<dyn ExecutionPlan>,
        ember_driver::planner::runtime_broadcast::RuntimeBroadcast,
    )> {
        if !self.inner.planning.runtime_broadcast {
            return Ok((plan, Default::default()));
        }
        let options = Arc::clone(self.ctx.state().config_options());
        Ok(self
            .inner
            .driver
            .broadcast_small_sides(plan, &options, description)
            .await?)
    }

    /// Ember's stages for `plan`, as [`DataFrame::explain`] prints them.
    pub(crate) fn explain_stages(&self, plan: Arc<dyn ExecutionPlan>) -> Result<String> {
        Ok(ember_driver::planner::explain_stages(plan)?)
    }

    /// Makes `plan` a cached dataset (with its inner exchanges cut into job-scoped ones)
    /// and returns it with the plan's properties.
    pub(crate) async fn persist(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> Result<(
        ember_engine::DatasetId,
        datafusion::physical_plan::PlanProperties,
    )> {
        let driver = &self.inner.driver;
        let (plan, stages) = driver.plan_stages(plan)?;
        let properties = plan.properties().as_ref().clone();
        let dataset = Dataset::try_new(driver.next_dataset_id(), plan, Persistence::Cached)?;
        let id = dataset.id();
        for s in stages {
            driver.register_dataset(s);
        }
        driver.register_cached_dataset(dataset).await;
        Ok((id, properties))
    }

    /// Runs `plan` with every partition written as a Parquet file under `dir`.
    pub(crate) async fn run_write_parquet(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        dir: &Path,
        description: &JobDescription,
    ) -> Result<Vec<std::path::PathBuf>> {
        let driver = &self.inner.driver;
        let (plan, stages) = driver.plan_stages(plan)?;
        let dataset = Dataset::try_new(driver.next_dataset_id(), plan, Persistence::Job)?;
        let (files, metrics) = driver
            .write_parquet(dataset, stages, dir, description)
            .await?;
        self.record_metrics(metrics);
        Ok(files)
    }
}

/// Checks that a user-given path exists, so a typo is reported with the path.
fn existing(path: &Path) -> Result<String> {
    if !path.exists() {
        return Err(Error::Path {
            path: path.to_path_buf(),
            message: "no such file or directory".into(),
        });
    }
    Ok(path.to_string_lossy().into_owned())
}

/// The extension DataFusion should look for: the file's own for a file, `default` for a
/// directory.
fn extension_of(path: &Path, default: &str) -> String {
    if path.is_file() {
        path.extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default()
    } else {
        default.to_string()
    }
}

/// `df` computed now, by DataFusion on the driver, when it reads the session's catalog
/// (which only the driver has), as an in-memory table of `ctx`; any other plan unchanged.
pub(crate) async fn catalog_on_driver(
    ctx: &SessionContext,
    df: datafusion::dataframe::DataFrame,
) -> Result<datafusion::dataframe::DataFrame> {
    if !reads_catalog(df.logical_plan()) {
        return Ok(df);
    }
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
    Ok(ctx.read_table(Arc::new(table))?)
}

/// Whether `plan` reads the session's catalog (`information_schema`, `DESCRIBE`), which
/// only the driver has.
fn reads_catalog(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    matches!(plan, LogicalPlan::DescribeTable(_))
        || plan
            .exists(|node| {
                Ok(matches!(
                    node,
                    LogicalPlan::TableScan(scan)
                        if scan.table_name.schema() == Some("information_schema")
                ))
            })
            .unwrap_or(false)
}
