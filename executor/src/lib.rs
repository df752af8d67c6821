//! Ember's executor: runs tasks, keeps blocks, serves them to the driver and to peers.
//!
//! # Layout
//!
//! - [`block_manager`]: blocks, byte accounting, LRU eviction.
//! - `block_reader`: a task's view of blocks (local first, else fetched from a peer).
//! - `task_runner`: decode, execute, store or write a task's output.
//! - `service`: the gRPC ExecutorService (tasks run apart from the call that launched them).
//! - `reporter`: delivers each task's outcome to the driver.
//! - `compute`: the runtime tasks run on, apart from RPCs.
//! - [`error`]: [`ExecutorError`] and how the scheduler should react to it.
//!
//! [`start`] brings an executor up (in this process or in the `ember-executor` binary):
//! it binds, registers with the driver, heartbeats, and serves until shut down.
#![warn(missing_docs)]

/// Blocks held by an executor.
pub mod block_manager;
mod block_reader;
mod block_writer;
mod compute;
/// The executor's error type.
pub mod error;
pub mod process_memory;
mod reporter;
mod service;
mod task_runner;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use ember_engine::proto::driver_service_client::DriverServiceClient;
use ember_engine::proto::executor_service_server::ExecutorServiceServer;
use ember_engine::proto::{HeartbeatRequest, RegisterExecutorRequest};
use ember_engine::rpc::{self, ChannelPool, RpcChannel, CONTROL_TIMEOUT, MAX_MESSAGE_BYTES};
use ember_engine::security::Security;
use ember_engine::{EngineError, ExecutorId};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use block_manager::{BlockKind, BlockManager, PutOutcome};
pub use error::{ExecutorError, Result};

use crate::compute::ComputeRuntime;
use crate::service::ExecutorServiceImpl;
use crate::task_runner::TaskEnv;

/// How long an executor keeps trying to register before giving up on the driver, by
/// default: long enough for a driver that is still starting.
pub const DEFAULT_REGISTER_TIMEOUT: Duration = Duration::from_secs(15);

/// By default, an executor whose driver has not answered a heartbeat for this long assumes
/// the driver is gone and stops, so executors never outlive the application that started
/// them (see [`ExecutorConfig::driver_timeout`]).
pub const DEFAULT_DRIVER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an executor that the driver wrote off waits for its stopped tasks to end
/// before it drops its blocks and registers again.
const TASK_STOP_WAIT: Duration = Duration::from_secs(5);

/// The share of an executor's memory limit that holds blocks (cached partitions, shuffle
/// outputs); the rest is the operators' pool.
pub const BLOCK_MEMORY_SHARE: f64 = 0.5;

/// The smallest operator memory pool an executor runs with, however small its limit: below
/// this, ordinary aggregates could not run at all.
pub const MIN_OPERATOR_MEMORY: usize = 64 << 20;

/// What an executor process holds beyond its `--memory`, which no limit accounts for: the
/// binary and its runtimes (about 30 MiB), the batches a running task holds between
/// operators (a few per task), fetch chunks in flight (at most 2 x 2 MiB per fetch),
/// DataFusion's spill-merge read buffers, and the allocator's slack (glibc keeps freed
/// pages of a busy heap). Measured peaks are in `docs/benchmarks.md`; tests assert every
/// executor's peak resident set stays within `--memory` plus this.
pub const PROCESS_OVERHEAD_BYTES: usize = 128 << 20;

/// What a spilling sort keeps of an operator pool of `pool` bytes for merging its runs: a
/// thirty-second of the pool, between 1 and 10 MiB.
pub fn sort_merge_reservation(pool: usize) -> usize {
    (pool / 32).clamp(1 << 20, 10 << 20)
}

/// How an executor's memory limit is divided: (block store, operator pool).
pub fn memory_split(memory_bytes: usize) -> (usize, usize) {
    let blocks = (memory_bytes as f64 * BLOCK_MEMORY_SHARE) as usize;
    (
        blocks,
        memory_bytes.saturating_sub(blocks).max(MIN_OPERATOR_MEMORY),
    )
}

/// How an executor is started.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The driver's `host:port`.
    pub driver: String,
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// The executor's memory limit in bytes: [`BLOCK_MEMORY_SHARE`] of it holds blocks,
    /// the rest (at least [`MIN_OPERATOR_MEMORY`]) is DataFusion's pool for operators
    /// (hash tables, sorts), which spill to disk when it runs out.
    pub memory_bytes: usize,
    /// Task slots, and worker threads of the compute runtime.
    pub cores: usize,
    /// The executor's id; made from the bound address when absent.
    pub id: Option<String>,
    /// How long to keep trying to register with the driver.
    pub register_timeout: Duration,
    /// What the process that starts the executor adds to it (kernels of its extensions).
    pub hooks: ExecutorHooks,
    /// How long the executor keeps running while its driver does not answer heartbeats
    /// (default [`DEFAULT_DRIVER_TIMEOUT`]); then it stops.
    pub driver_timeout: Duration,
    /// Fault injection for tests of straggler handling: every task waits this long before
    /// it starts. `None` in normal operation.
    pub task_delay: Option<Duration>,
    /// The address the driver and peers are told to dial (`HOST[:PORT]`); by default the
    /// bound address, or this host's address on the route to the driver when bound to a
    /// wildcard.
    pub advertise: Option<String>,
    /// Who may call the executor, and how its channels are protected.
    pub security: Security,
    /// The directory this executor shares with the other processes of its application on
    /// this host, on a memory file system: blocks a same-host peer fetches are written
    /// there once, into a directory of this executor's own, and memory-mapped by the
    /// peer. `None`: peers are always sent the bytes.
    pub share_dir: Option<PathBuf>,
}

/// Adds a configuration value to an executor's DataFusion session.
pub type SessionHook = Arc<dyn Fn(SessionConfig) -> SessionConfig + Send + Sync>;

/// Describes what the executor's compute kernels run on, now.
pub type DeviceProbe = Arc<dyn Fn() -> String + Send + Sync>;

/// What the process starting an executor gives it beyond the engine: for instance
/// mllib's kernel (CPU or a GPU adapter) and how to describe it.
#[derive(Clone, Default)]
pub struct ExecutorHooks {
    /// Applied to the session configuration every task runs with.
    pub session: Option<SessionHook>,
    /// What the executor reports as its device (`cpu` when absent).
    pub device: Option<DeviceProbe>,
}

impl ExecutorHooks {
    /// The device description.
    pub fn device(&self) -> String {
        self.device
            .as_ref()
            .map(|probe| probe())
            .unwrap_or_else(|| "cpu".to_string())
    }
}

impl std::fmt::Debug for ExecutorHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorHooks")
            .field("session", &self.session.is_some())
            .field("device", &self.device())
            .finish()
    }
}

/// A running executor. Dropping the handle stops it.
#[derive(Debug)]
pub struct ExecutorHandle {
    id: ExecutorId,
    address: SocketAddr,
    advertised: String,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    heartbeat: JoinHandle<()>,
    blocks: Arc<BlockManager>,
    _compute: Arc<ComputeRuntime>,
    /// Where spilled blocks go; removed (with anything left in it) when the handle drops.
    _spill_dir: tempfile::TempDir,
    /// This executor's directory of same-host block files; removed when the handle drops.
    _share_dir: Option<OwnedDir>,
}

impl ExecutorHandle {
    /// The executor's id.
    pub fn id(&self) -> &ExecutorId {
        &self.id
    }

    /// The address its ExecutorService listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The address the driver and peers dial.
    pub fn advertised_address(&self) -> &str {
        &self.advertised
    }

    /// Its block manager (for in-process inspection).
    pub fn blocks(&self) -> &Arc<BlockManager> {
        &self.blocks
    }

    /// Asks the executor to stop: no new tasks, running tasks cancelled, server closed.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A sender that stops the executor when `true` is sent (for watchers that outlive a
    /// borrow of the handle, such as a stdin watcher).
    pub fn shutdown_signal(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Waits until the executor has stopped (after [`ExecutorHandle::shutdown`], a
    /// `Shutdown` RPC, or the driver being lost).
    pub async fn stopped(mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for ExecutorHandle {
    fn drop(&mut self) {
        // Like a process that exits: every block is gone and nothing answers any more.
        self.shutdown.send_replace(true);
        self.blocks.clear();
        self.heartbeat.abort();
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// Start of the name of an executor's spill directory: `ember-spill-{pid}-{id}-{random}`.
const SPILL_DIR_PREFIX: &str = "ember-spill-";

/// Removes the spill directories under `tmp` of executor processes that no longer run:
/// one killed outright (SIGKILL, a crash, the OOM killer) cannot remove its own.
fn remove_stale_spill_dirs(tmp: &std::path::Path) {
    remove_dirs_of_dead_processes(tmp, SPILL_DIR_PREFIX);
}

/// Removes the entries of `dir` named `{prefix}{pid}-...` whose process `pid` no longer
/// runs. Only where `/proc` tells which processes run; other names are left alone.
pub fn remove_dirs_of_dead_processes(dir: &std::path::Path, prefix: &str) {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(dir = %entry.path().display(), "removing what a dead process left");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Starts an executor in this process: binds, registers with the driver, then serves and
/// heartbeats in the background until stopped.
///
/// # Errors
///
/// The bind address is unusable, or the driver cannot be reached within 15 seconds.
pub async fn start(config: ExecutorConfig) -> Result<ExecutorHandle> {
    config
        .security
        .check_exposure("an executor", config.bind.ip())?;
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|e| EngineError::io(config.bind.to_string(), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| EngineError::io(config.bind.to_string(), e))?;
    let address = rpc::advertised_address(
        bound,
        config.advertise.as_deref(),
        Some(config.driver.as_str()),
    )?;
    let server_builder = rpc::server(&config.security)?;
    let id = ExecutorId(
        config
            .id
            .clone()
            .unwrap_or_else(|| format!("exec-{address}")),
    );
    let cores = config.cores.max(1);
    let compute = Arc::new(
        ComputeRuntime::try_new(cores).map_err(|e| EngineError::io("compute runtime", e))?,
    );
    remove_stale_spill_dirs(&std::env::temp_dir());
    // Named by process first, so a later executor can tell a dead one's directory.
    let spill_dir = tempfile::Builder::new()
        .prefix(&format!(
            "{SPILL_DIR_PREFIX}{}-{}-",
            std::process::id(),
            sanitize(&id.0)
        ))
        .tempdir()
        .map_err(|e| EngineError::io(std::env::temp_dir(), e))?;
    let (block_memory, operator_memory) = memory_split(config.memory_bytes);
    let share = config.share_dir.as_deref().and_then(|root| {
        // Named by process first, so whoever started this process can remove what it
        // leaves behind if it dies.
        let dir = root.join(format!("{}-{}", std::process::id(), sanitize(&id.0)));
        match std::fs::create_dir_all(&dir) {
            Ok(()) => Some((root.to_path_buf(), OwnedDir(dir))),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e,
                    "cannot use the share directory; same-host peers are sent blocks");
                None
            }
        }
    });
    let mut blocks = BlockManager::new(block_memory).with_spill_dir(spill_dir.path());
    if let Some((root, dir)) = &share {
        blocks = blocks.with_share_dir(root, &dir.0);
    }
    let blocks = Arc::new(blocks);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(operator_memory)))
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(
            DiskManagerMode::Directories(vec![spill_dir.path().to_path_buf()]),
        ))
        .build_arc()
        .map_err(EngineError::from)?;
    let mut session_config = SessionConfig::new().with_target_partitions(cores);
    // A task executes one partition of a scan, and that partition must read exactly its own
    // file group: DataFusion's sibling work stealing would let a lone partition read every
    // file of the scan, duplicating rows across tasks.
    session_config
        .options_mut()
        .execution
        .enable_file_stream_work_stealing = false;
    // Plans arrive already optimized; nothing here may wait on sibling partitions of a plan
    // instance that other tasks own (see the session's planner settings): a broadcast
    // join's filter is filled in by Ember's `join_filter` instead of DataFusion's, which
    // waits for every probe partition of the plan.
    let optimizer = &mut session_config.options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    // A sort that spills keeps this much of the pool for merging its runs; DataFusion's
    // 10 MiB default is a sixth of a small executor's pool, and a sort that cannot get it
    // back after spilling fails instead of merging.
    session_config
        .options_mut()
        .execution
        .sort_spill_reservation_bytes = sort_merge_reservation(operator_memory);
    if let Some(hook) = &config.hooks.session {
        session_config = hook(session_config);
    }
    let session = SessionContext::new_with_config_rt(session_config, runtime);
    // Functions of the extensions this binary registered (mllib's, for one), so plans
    // calling them decode here.
    for function in ember_engine::extension::scalar_functions() {
        session.register_udf(function.as_ref().clone());
    }
    let (shutdown, _) = watch::channel(false);

    let driver_channel = rpc::channel(&config.driver, &config.security)?;
    let registration = RegisterExecutorRequest {
        executor_id: id.0.clone(),
        address: address.clone(),
        cores: cores as u32,
        memory_bytes: config.memory_bytes as u64,
        pid: std::process::id(),
        device: config.hooks.device(),
    };
    let interval = register(
        &driver_channel,
        &config.driver,
        &registration,
        config.register_timeout,
    )
    .await?;

    let tasks = Arc::new(dashmap::DashMap::new());
    let reporter = Arc::new(reporter::StatusReporter {
        channel: driver_channel.clone(),
        executor_id: id.0.clone(),
        give_up_after: config.driver_timeout,
        shutdown: shutdown.subscribe(),
    });
    let running = Arc::new(AtomicU32::new(0));
    let service = ExecutorServiceImpl {
        env: TaskEnv {
            executor_id: id.clone(),
            blocks: Arc::clone(&blocks),
            session,
            pool: ChannelPool::new(config.security.clone()),
            hooks: config.hooks.clone(),
        },
        compute: Arc::clone(&compute),
        running: Arc::clone(&running),
        tasks: Arc::clone(&tasks),
        reporter,
        cores: cores as u32,
        shutdown: shutdown.clone(),
        task_delay: config.task_delay,
        slots: Arc::new(tokio::sync::Semaphore::new(cores)),
        fetches: Arc::default(),
    };
    let mut stop = shutdown.subscribe();
    let auth = config.security.server_auth();
    let mut server_builder = server_builder;
    let server = tokio::spawn(async move {
        let svc = ExecutorServiceServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let svc = tonic::service::interceptor::InterceptedService::new(svc, auth);
        let result = server_builder
            .add_service(svc)
            .serve_with_incoming_shutdown(
                rpc::incoming(listener, rpc::MAX_CONNECTIONS),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "executor server failed");
        }
    });
    let heartbeat = tokio::spawn(heartbeat_loop(Heartbeats {
        channel: driver_channel,
        driver: config.driver.clone(),
        registration,
        interval,
        driver_timeout: config.driver_timeout,
        blocks: Arc::clone(&blocks),
        tasks,
        running,
        shutdown: shutdown.clone(),
    }));
    tracing::info!(executor = %id, %address, %bound, driver = %config.driver, "executor started");
    Ok(ExecutorHandle {
        id,
        address: bound,
        advertised: address,
        shutdown,
        server: Some(server),
        heartbeat,
        blocks,
        _compute: compute,
        _spill_dir: spill_dir,
        _share_dir: share.map(|(_, dir)| dir),
    })
}

/// A directory removed, with everything in it, when dropped.
#[derive(Debug)]
struct OwnedDir(PathBuf);

impl Drop for OwnedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `id` with every character that is not safe in a file name replaced.
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn driver_client(channel: &RpcChannel) -> DriverServiceClient<RpcChannel> {
    rpc::driver_client(channel.clone())
}

/// Registers with the driver, retrying with backoff until `timeout`; returns the heartbeat
/// interval the driver asked for.
async fn register(
    channel: &RpcChannel,
    driver: &str,
    request: &RegisterExecutorRequest,
    timeout: Duration,
) -> Result<Duration> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        let mut client = driver_client(channel);
        let outcome =
            tokio::time::timeout(CONTROL_TIMEOUT, client.register_executor(request.clone())).await;
        let err = match outcome {
            Ok(Ok(resp)) => {
                let ms = resp.into_inner().heartbeat_interval_ms.max(50);
                return Ok(Duration::from_millis(ms));
            }
            // Retrying cannot help a caller the driver does not trust, or an id in use.
            Ok(Err(status))
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::AlreadyExists
                ) =>
            {
                return Err(rpc::transport_error(driver, status).into());
            }
            Ok(Err(status)) => rpc::transport_error(driver, status),
            Err(_) => rpc::transport_error(driver, tonic::Status::deadline_exceeded("register")),
        };
        if Instant::now() + backoff > deadline {
            return Err(err.into());
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// What the heartbeat loop reads and reports.
struct Heartbeats {
    channel: RpcChannel,
    driver: String,
    registration: RegisterExecutorRequest,
    interval: Duration,
    driver_timeout: Duration,
    blocks: Arc<BlockManager>,
    tasks: Arc<dashmap::DashMap<u64, tokio::sync::oneshot::Sender<String>>>,
    running: Arc<AtomicU32>,
    shutdown: watch::Sender<bool>,
}

/// Heartbeats to the driver until the executor stops; stops the executor when the driver
/// has not answered for `driver_timeout`.
async fn heartbeat_loop(h: Heartbeats) {
    let mut last_ok = Instant::now();
    let mut ticker = tokio::time::interval(h.interval);
    let mut stop = h.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let evicted = h.blocks.take_evicted();
        let request = HeartbeatRequest {
            executor_id: h.registration.executor_id.clone(),
            used_bytes: h.blocks.used_bytes() as u64,
            running_tasks: h.running.load(std::sync::atomic::Ordering::Relaxed),
            evicted: evicted.iter().map(|b| (*b).into()).collect(),
            running_task_ids: h.tasks.iter().map(|t| *t.key()).collect(),
            blocks: h.blocks.len() as u32,
            disk_bytes: h.blocks.disk_bytes() as u64,
        };
        let mut client = driver_client(&h.channel);
        match tokio::time::timeout(CONTROL_TIMEOUT, client.heartbeat(request)).await {
            Ok(Ok(resp)) => {
                last_ok = Instant::now();
                if resp.into_inner().reregister {
                    tracing::warn!(driver = %h.driver, "driver asked this executor to register again");
                    // The driver wrote this executor off (it was silent too long): its
                    // blocks are forgotten and its tasks rerun elsewhere, so neither is
                    // worth keeping.
                    let ids: Vec<u64> = h.tasks.iter().map(|t| *t.key()).collect();
                    for id in ids {
                        if let Some((_, stop)) = h.tasks.remove(&id) {
                            let _ = stop.send("the driver wrote this executor off".into());
                        }
                    }
                    // Blocks go once the stopped tasks are gone, so none stores one after.
                    let stopping = Instant::now();
                    while h.running.load(std::sync::atomic::Ordering::Acquire) > 0
                        && stopping.elapsed() < TASK_STOP_WAIT
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    h.blocks.clear();
                    let _ = h.blocks.take_evicted();
                    if let Err(e) = register(
                        &h.channel,
                        &h.driver,
                        &h.registration,
                        DEFAULT_REGISTER_TIMEOUT,
                    )
                    .await
                    {
                        tracing::warn!(error = %e, "re-registration failed");
                    }
                }
            }
            _ => {
                // The driver has not heard of these evictions: report them next time.
                h.blocks.restore_evicted(evicted);
                if last_ok.elapsed() > h.driver_timeout {
                    tracing::error!(
                        driver = %h.driver,
                        timeout = ?h.driver_timeout,
                        "driver unreachable; executor stopping"
                    );
                    h.shutdown.send_replace(true);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dead executor's spill directory goes; a live one's, and anything else, stays.
    #[test]
    fn spill_dirs_of_dead_executors_are_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Above Linux's largest pid, so no process has it.
        let dead = tmp
            .path()
            .join(format!("{SPILL_DIR_PREFIX}4294967-exec-1-abc"));
        let live = tmp.path().join(format!(
            "{SPILL_DIR_PREFIX}{}-exec-2-def",
            std::process::id()
        ));
        let older = tmp.path().join(format!("{SPILL_DIR_PREFIX}exec-3-ghi"));
        let other = tmp.path().join("something-else");
        for dir in [&dead, &live, &older, &other] {
            std::fs::create_dir(dir).expect("mkdir");
            std::fs::write(dir.join("block"), b"x").expect("write");
        }
        remove_stale_spill_dirs(tmp.path());
        assert!(!dead.exists(), "a dead executor's directory is removed");
        assert!(live.exists() && older.exists() && other.exists());
    }
}
