//! Task block reader: serves a running task's block reads from this executor's block
//! manager, or from the peer the driver named, and counts what it read.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use ember_engine::block_read::{partition_batches, BlockBatches, BlockReader, BlockSink};
use ember_engine::proto::{InputLocations, TaskMetrics};
use ember_engine::rpc::{fetch_block_stream, ChannelPool, FetchStats};
use ember_engine::{BlockId, EngineError, ExecutorId, Result};
use futures::{stream, StreamExt, TryStreamExt};

use crate::block_manager::{BlockKind, BlockManager, OpenBlock};
use crate::block_writer::BlockWriter;

/// Reads the blocks one task needs.
#[derive(Debug)]
pub(crate) struct TaskBlockReader {
    local: Arc<BlockManager>,
    self_id: ExecutorId,
    inputs: InputLocations,
    pool: ChannelPool,
    read_local: AtomicU32,
    read_remote: AtomicU32,
    fetched: Arc<FetchStats>,
    cached_read: AtomicU32,
    computed_inline: AtomicU32,
    source_reads: AtomicU32,
    plan_decode_micros: AtomicU64,
    /// Blocks computed inline and kept, and blocks evicted to keep them; nothing is awaited
    /// while these are locked.
    filled: Arc<Mutex<Vec<(BlockId, u64)>>>,
    evicted: Arc<Mutex<Vec<BlockId>>>,
}

impl TaskBlockReader {
    /// A reader for a task whose inputs live at `inputs`.
    pub(crate) fn new(
        local: Arc<BlockManager>,
        self_id: ExecutorId,
        inputs: InputLocations,
        pool: ChannelPool,
    ) -> Self {
        Self {
            local,
            self_id,
            inputs,
            pool,
            read_local: AtomicU32::new(0),
            read_remote: AtomicU32::new(0),
            fetched: Arc::default(),
            cached_read: AtomicU32::new(0),
            computed_inline: AtomicU32::new(0),
            source_reads: AtomicU32::new(0),
            plan_decode_micros: AtomicU64::new(0),
            filled: Arc::default(),
            evicted: Arc::default(),
        }
    }

    /// Cached blocks computed inline and kept by this executor.
    pub(crate) fn take_filled(&self) -> Vec<(BlockId, u64)> {
        std::mem::take(&mut *self.filled.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Cached blocks evicted to keep inline-computed ones.
    pub(crate) fn take_evicted(&self) -> Vec<BlockId> {
        std::mem::take(&mut *self.evicted.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records how long decoding the task's plan took.
    pub(crate) fn note_plan_decode(&self, took: std::time::Duration) {
        self.plan_decode_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// What the task read so far.
    pub(crate) fn metrics(&self) -> TaskMetrics {
        TaskMetrics {
            blocks_read_local: self.read_local.load(Ordering::Relaxed),
            blocks_read_remote: self.read_remote.load(Ordering::Relaxed),
            bytes_fetched: self.fetched.bytes.load(Ordering::Relaxed),
            run_micros: 0,
            cached_blocks_read: self.cached_read.load(Ordering::Relaxed),
            blocks_computed_inline: self.computed_inline.load(Ordering::Relaxed),
            source_partitions_read: self.source_reads.load(Ordering::Relaxed),
            fetch_micros: self.fetched.micros.load(Ordering::Relaxed),
            bytes_mapped: self.fetched.mapped.load(Ordering::Relaxed),
            plan_decode_micros: self.plan_decode_micros.load(Ordering::Relaxed),
            ..TaskMetrics::default()
        }
    }
}

#[async_trait]
impl BlockReader for TaskBlockReader {
    async fn read(&self, block: BlockId) -> Result<BlockBatches> {
        match self.local.open(block) {
            Some(OpenBlock::Memory(partition)) => {
                self.read_local.fetch_add(1, Ordering::Relaxed);
                return Ok(partition_batches(partition));
            }
            Some(OpenBlock::Disk(file)) => {
                self.read_local.fetch_add(1, Ordering::Relaxed);
                // Read one batch at a time on the task's own thread, as its operators would;
                // a file that cannot be read loses the block here, so it is recomputed.
                let here = self.self_id.clone();
                let batches = file.map(move |b| {
                    b.map_err(|e| EngineError::FetchFailed {
                        block,
                        executor: here.clone(),
                        reason: format!("spill file unreadable: {e}"),
                    })
                });
                return Ok(stream::iter(batches).boxed());
            }
            None => {}
        }
        // Every reduce bucket of a map partition lives where the map task ran.
        let Some((executor, address)) = self.inputs.holder(block.map_output()) else {
            return Err(EngineError::FetchFailed {
                block,
                executor: self.self_id.clone(),
                reason: "the driver named no location for it".into(),
            });
        };
        if executor == self.self_id {
            return Err(EngineError::FetchFailed {
                block,
                executor: executor.clone(),
                reason: "no longer held here (evicted or removed)".into(),
            });
        }
        let lost = move |e: EngineError| EngineError::FetchFailed {
            block,
            executor: executor.clone(),
            reason: e.to_string(),
        };
        let batches = fetch_block_stream(
            &self.pool,
            address,
            block,
            Arc::clone(&self.fetched),
            self.local.share_root(),
        )
        .await
        .map_err(&lost)?;
        self.read_remote.fetch_add(1, Ordering::Relaxed);
        Ok(batches.map_err(lost).boxed())
    }

    fn keep(&self, block: BlockId, schema: SchemaRef) -> Option<Box<dyn BlockSink>> {
        Some(Box::new(CacheSink {
            block,
            writer: BlockWriter::new(Arc::clone(&self.local), schema, BlockKind::Cached, [block]),
            filled: Arc::clone(&self.filled),
            evicted: Arc::clone(&self.evicted),
        }))
    }

    fn note_computed(&self, read_source: bool) {
        self.computed_inline.fetch_add(1, Ordering::Relaxed);
        if read_source {
            self.source_reads.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn note_cached_read(&self) {
        self.cached_read.fetch_add(1, Ordering::Relaxed);
    }
}

/// Keeps a cached block computed inside a task: in memory while the block store has room,
/// on the executor's disk from the batch where it has none (a cached DataFrame is kept in
/// memory and on disk, as Spark's default level for one).
struct CacheSink {
    block: BlockId,
    writer: BlockWriter,
    filled: Arc<Mutex<Vec<(BlockId, u64)>>>,
    evicted: Arc<Mutex<Vec<BlockId>>>,
}

impl BlockSink for CacheSink {
    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        self.writer.push(0, batch).map_err(into_engine)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let written = self.writer.finish().map_err(into_engine)?;
        self.evicted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(written.evicted);
        self.filled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((self.block, written.bytes));
        Ok(())
    }
}

fn into_engine(e: crate::error::ExecutorError) -> EngineError {
    match e {
        crate::error::ExecutorError::Engine(e) => e,
        e @ crate::error::ExecutorError::MemoryLimit { .. } => {
            EngineError::ResourcesExhausted(e.to_string())
        }
        other => EngineError::Internal(other.to_string()),
    }
}
