//! ExecutorService: the gRPC surface of an executor. Handlers only translate; task work goes
//! to the compute runtime and block encoding to blocking threads, so heartbeats and fetches
//! never queue behind compute.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ember_engine::codec::{encode_batches, encode_chunks};
use ember_engine::proto::executor_service_server::ExecutorService;
use ember_engine::proto::{
    BlockChunk, CancelTaskRequest, CancelTaskResponse, ExecutorStatus, FetchBlockRequest,
    LaunchTaskRequest, LaunchTaskResponse, RemoveBlocksRequest, RemoveBlocksResponse,
    ShutdownRequest, ShutdownResponse, StatusRequest, TaskStatus,
};
use ember_engine::{BlockId, DatasetId};
use futures::Stream;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::block_manager::OpenBlock;
use crate::compute::ComputeRuntime;
use crate::error::ExecutorError;
use crate::process_memory;
use crate::reporter::StatusReporter;
use crate::task_runner::{run_task, TaskEnv};

/// How long `LaunchTask` waits for the task before answering: a task that ends by then
/// (an empty partition, a tiny one) is answered with its status inline, which saves the
/// status report's round trip; any other is answered as accepted.
const INLINE_STATUS_WINDOW: Duration = Duration::from_millis(3);

/// How long a task launched onto an executor whose slots are all busy waits for one: the
/// driver counts a slot free when a task it stopped is still winding down here, which
/// takes milliseconds. After this the launch is refused (the driver tries again).
const SLOT_WAIT: Duration = Duration::from_secs(2);

/// Block fetches one peer connection may have in flight here; more wait for one to end.
pub(crate) const MAX_FETCHES_PER_PEER: usize = 64;

/// Chunks encoded ahead of the network while a block is being sent. Two in flight keep the
/// encoder busy while one is on the wire, and cap a fetch's memory at 2 chunks.
const FETCH_CHUNKS_IN_FLIGHT: usize = 2;

/// The executor's gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct ExecutorServiceImpl {
    pub(crate) env: TaskEnv,
    pub(crate) compute: Arc<ComputeRuntime>,
    pub(crate) running: Arc<AtomicU32>,
    /// Tasks accepted and not yet ended, by task id: sending a reason stops one.
    pub(crate) tasks: Arc<DashMap<u64, oneshot::Sender<String>>>,
    pub(crate) reporter: Arc<StatusReporter>,
    pub(crate) cores: u32,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Fault injection for tests of straggler handling: every task waits this long first.
    pub(crate) task_delay: Option<Duration>,
    /// One permit per task slot: the executor runs no more tasks than it has cores,
    /// whatever its callers believe.
    pub(crate) slots: Arc<Semaphore>,
    /// Fetches in flight per peer connection (by its address).
    pub(crate) fetches: Arc<DashMap<std::net::SocketAddr, Arc<Semaphore>>>,
}

impl ExecutorServiceImpl {
    /// Refuses work once the executor is stopping: open connections may outlive the
    /// listener, and an executor that is going away must not look alive through them.
    fn ensure_running(&self) -> Result<(), Status> {
        if *self.shutdown.borrow() {
            return Err(Status::unavailable(format!(
                "{} is shutting down",
                self.env.executor_id
            )));
        }
        Ok(())
    }
}

/// Decrements the running-task count when a task ends, however it ends; the last task to
/// end hands the memory it freed back to the system.
struct RunningGuard(Arc<AtomicU32>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Trimming walks the heap (milliseconds on a large one): not on an RPC thread.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(process_memory::release_free_memory)),
                Err(_) => process_memory::release_free_memory(),
            }
        }
    }
}

#[tonic::async_trait]
impl ExecutorService for ExecutorServiceImpl {
    async fn launch_task(
        &self,
        request: Request<LaunchTaskRequest>,
    ) -> Result<Response<LaunchTaskResponse>, Status> {
        self.ensure_running()?;
        let slot =
            match tokio::time::timeout(SLOT_WAIT, Arc::clone(&self.slots).acquire_owned()).await {
                Ok(Ok(slot)) => slot,
                _ => {
                    return Err(Status::resource_exhausted(format!(
                        "{}: all {} task slots stayed busy for {SLOT_WAIT:?}",
                        self.env.executor_id, self.cores
                    )))
                }
            };
        let request = request.into_inner();
        let task_id = request.task_id;
        let (cancel, cancelled) = oneshot::channel::<String>();
        if self.tasks.insert(task_id, cancel).is_some() {
            tracing::warn!(
                task_id,
                "task id launched twice; the earlier copy is orphaned"
            );
        }
        self.running.fetch_add(1, Ordering::Relaxed);
        let guard = RunningGuard(Arc::clone(&self.running));
        let this = self.clone();
        let (inline, answered) = oneshot::channel::<TaskStatus>();
        // The task runs apart from this call: the driver learns how it ended from this
        // answer when it ends within the window, else from the status report, so a long
        // task never holds an RPC open.
        tokio::spawn(async move {
            let _guard = guard;
            let status = this.run(request, cancelled).await;
            // The slot is free before the driver hears of the end and sends the next task.
            drop(slot);
            this.tasks.remove(&task_id);
            if let Err(status) = inline.send(status) {
                this.reporter.report(task_id, status).await;
            }
        });
        let mut answered = answered;
        let status = match tokio::time::timeout(INLINE_STATUS_WINDOW, &mut answered).await {
            Ok(status) => status.ok(),
            Err(_) => {
                // From here the task reports by RPC; a status sent just before is kept.
                answered.close();
                answered.try_recv().ok()
            }
        };
        Ok(Response::new(LaunchTaskResponse { status }))
    }

    async fn cancel_task(
        &self,
        request: Request<CancelTaskRequest>,
    ) -> Result<Response<CancelTaskResponse>, Status> {
        let request = request.into_inner();
        let mut cancelled = 0;
        for id in request.task_ids {
            if let Some((_, stop)) = self.tasks.remove(&id) {
                cancelled += u32::from(stop.send(request.reason.clone()).is_ok());
            }
        }
        if cancelled > 0 {
            tracing::debug!(cancelled, reason = %request.reason, "tasks cancelled");
        }
        Ok(Response::new(CancelTaskResponse { cancelled }))
    }

    type FetchBlockStream = Pin<Box<dyn Stream<Item = Result<BlockChunk, Status>> + Send>>;

    async fn fetch_block(
        &self,
        request: Request<FetchBlockRequest>,
    ) -> Result<Response<Self::FetchBlockStream>, Status> {
        self.ensure_running()?;
        let permit = match request.remote_addr() {
            Some(peer) => Some(self.fetch_permit(peer).await),
            None => None,
        };
        let request = request.into_inner();
        let block = request
            .block
            .map(BlockId::from)
            .ok_or_else(|| Status::invalid_argument("fetch without a block id"))?;
        // A fetcher that shares this executor's share directory is on this host: it is
        // handed the block's file there to map, instead of its bytes.
        let same_host = !request.share_dir.is_empty()
            && self.env.blocks.share_root() == Some(std::path::Path::new(&request.share_dir));
        let (tx, rx) = mpsc::channel(FETCH_CHUNKS_IN_FLIGHT);
        let blocks = Arc::clone(&self.env.blocks);
        let executor = self.env.executor_id.clone();
        // A spilled block is read back from disk: that, like the encoding, stays off the
        // threads that answer RPCs.
        tokio::task::spawn_blocking(move || {
            // Held until the block is sent or the fetcher hangs up.
            let _permit = permit;
            if same_host {
                if let Some(path) = blocks.export(block) {
                    let chunk = BlockChunk {
                        data: bytes::Bytes::new(),
                        shared_path: path.to_string_lossy().into_owned(),
                    };
                    let _ = tx.blocking_send(Ok(chunk));
                    return;
                }
            }
            let send = |chunks: &mut dyn Iterator<Item = ember_engine::Result<bytes::Bytes>>| {
                for chunk in chunks {
                    let msg = chunk
                        .map(|data| BlockChunk {
                            data,
                            shared_path: String::new(),
                        })
                        .map_err(|e| Status::internal(e.to_string()));
                    // The receiver is gone when the fetcher hung up: stop encoding.
                    if tx.blocking_send(msg).is_err() {
                        break;
                    }
                }
            };
            match blocks.open(block) {
                Some(OpenBlock::Memory(partition)) => send(&mut encode_chunks(&partition)),
                // A spilled block goes out as it is read, one batch at a time.
                Some(OpenBlock::Disk(file)) => {
                    let schema = file.schema();
                    send(&mut encode_batches(
                        schema,
                        file.map(|b| b.map_err(Into::into)),
                    ))
                }
                None => {
                    let missing = Status::not_found(format!("{block} is not held by {executor}"));
                    let _ = tx.blocking_send(Err(missing));
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn remove_blocks(
        &self,
        request: Request<RemoveBlocksRequest>,
    ) -> Result<Response<RemoveBlocksResponse>, Status> {
        let request = request.into_inner();
        let mut removed = 0;
        for block in &request.blocks {
            removed += u32::from(self.env.blocks.remove(BlockId::from(block)));
        }
        for dataset in request.datasets {
            removed += self.env.blocks.remove_dataset(DatasetId(dataset)) as u32;
        }
        Ok(Response::new(RemoveBlocksResponse { removed }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<ExecutorStatus>, Status> {
        self.ensure_running()?;
        let memory = process_memory::read();
        if request.into_inner().reset_peak_rss {
            process_memory::reset_peak();
        }
        let pool = &self.env.session.runtime_env().memory_pool;
        Ok(Response::new(ExecutorStatus {
            executor_id: self.env.executor_id.0.clone(),
            used_bytes: self.env.blocks.used_bytes() as u64,
            memory_bytes: self.env.blocks.limit() as u64,
            blocks: self.env.blocks.len() as u32,
            running_tasks: self.running.load(Ordering::Relaxed),
            cores: self.cores,
            disk_bytes: self.env.blocks.disk_bytes() as u64,
            device: self.env.hooks.device(),
            rss_bytes: memory.rss,
            peak_rss_bytes: memory.peak_rss,
            operator_bytes: pool.reserved() as u64,
            operator_limit: match pool.memory_limit() {
                datafusion::execution::memory_pool::MemoryLimit::Finite(n) => n as u64,
                _ => 0,
            },
            spill_dir: self
                .env
                .blocks
                .spill_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        }))
    }

    async fn shutdown(
        &self,
        _request: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        tracing::info!(executor = %self.env.executor_id, "shutdown requested");
        self.shutdown.send_replace(true);
        Ok(Response::new(ShutdownResponse {}))
    }
}

impl ExecutorServiceImpl {
    /// Waits for one of `peer`'s [`MAX_FETCHES_PER_PEER`] fetch slots.
    async fn fetch_permit(&self, peer: std::net::SocketAddr) -> FetchPermit {
        let slots = Arc::clone(
            self.fetches
                .entry(peer)
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_FETCHES_PER_PEER)))
                .value(),
        );
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("fetch slots are never closed");
        FetchPermit {
            permit: Some(permit),
            peer,
            slots,
            fetches: Arc::clone(&self.fetches),
        }
    }

    /// Runs one task on the compute runtime until it ends, is cancelled by the driver, or
    /// the executor shuts down. A stopped task is awaited until it is really gone, so
    /// nothing it would have stored appears after its status is reported.
    async fn run(
        &self,
        request: LaunchTaskRequest,
        cancelled: oneshot::Receiver<String>,
    ) -> TaskStatus {
        let env = self.env.clone();
        let delay = self.task_delay;
        let mut task = self.compute.spawn(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            run_task(env, request).await
        });
        let mut shutdown = self.shutdown.subscribe();
        // A dropped sender (the task left the map on its own) is not a cancellation.
        let cancelled = async move {
            match cancelled.await {
                Ok(reason) => reason,
                Err(_) => std::future::pending().await,
            }
        };
        let reason = tokio::select! {
            joined = &mut task => return joined.unwrap_or_else(panicked),
            reason = cancelled => reason,
            _ = shutdown.wait_for(|stop| *stop) => "executor shutting down".to_string(),
        };
        task.abort();
        match task.await {
            // It finished before the abort took effect: its real outcome stands.
            Ok(status) => status,
            Err(_) => failed(&ExecutorError::Cancelled(reason)),
        }
    }
}

fn panicked(e: tokio::task::JoinError) -> TaskStatus {
    failed(&ExecutorError::Engine(ember_engine::EngineError::Internal(
        format!("task panicked: {e}"),
    )))
}

fn failed(e: &ExecutorError) -> TaskStatus {
    TaskStatus {
        result: Some(ember_engine::proto::task_status::Result::Failure(
            e.to_task_failure(),
        )),
    }
}

/// One in-flight fetch of a peer; the last one to end forgets the peer's slots.
struct FetchPermit {
    permit: Option<OwnedSemaphorePermit>,
    peer: std::net::SocketAddr,
    slots: Arc<Semaphore>,
    fetches: Arc<DashMap<std::net::SocketAddr, Arc<Semaphore>>>,
}

impl Drop for FetchPermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        // Idle: no fetch holds a slot and no one else holds the semaphore but the map.
        self.fetches.remove_if(&self.peer, |_, slots| {
            Arc::ptr_eq(slots, &self.slots)
                && Arc::strong_count(slots) == 2
                && slots.available_permits() == MAX_FETCHES_PER_PEER
        });
    }
}
