//! Task block reader: serves a running task's block reads from this executor's block
//! manager, or from the peer the driver named, and counts what it read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use ember_engine::block_read::BlockReader;
use ember_engine::proto::{BlockLocation, TaskMetrics};
use ember_engine::rpc::{fetch_block, ChannelPool};
use ember_engine::{BlockId, EngineError, ExecutorId, Partition, Result};

use crate::block_manager::BlockManager;

/// Reads the blocks one task needs.
#[derive(Debug)]
pub(crate) struct TaskBlockReader {
    local: Arc<BlockManager>,
    self_id: ExecutorId,
    inputs: HashMap<BlockId, (ExecutorId, String)>,
    pool: ChannelPool,
    read_local: AtomicU32,
    read_remote: AtomicU32,
    bytes_fetched: AtomicU64,
}

impl TaskBlockReader {
    /// A reader for a task whose inputs live at `locations`.
    pub(crate) fn new(
        local: Arc<BlockManager>,
        self_id: ExecutorId,
        locations: &[BlockLocation],
        pool: ChannelPool,
    ) -> Self {
        let inputs = locations
            .iter()
            .filter_map(|l| {
                let block = BlockId::from(l.block.as_ref()?);
                Some((block, (ExecutorId(l.executor_id.clone()), l.address.clone())))
            })
            .collect();
        Self {
            local,
            self_id,
            inputs,
            pool,
            read_local: AtomicU32::new(0),
            read_remote: AtomicU32::new(0),
            bytes_fetched: AtomicU64::new(0),
        }
    }

    /// What the task read so far.
    pub(crate) fn metrics(&self) -> TaskMetrics {
        TaskMetrics {
            blocks_read_local: self.read_local.load(Ordering::Relaxed),
            blocks_read_remote: self.read_remote.load(Ordering::Relaxed),
            bytes_fetched: self.bytes_fetched.load(Ordering::Relaxed),
            run_micros: 0,
        }
    }
}

#[async_trait]
impl BlockReader for TaskBlockReader {
    async fn read(&self, block: BlockId) -> Result<Arc<Partition>> {
        if let Some(p) = self.local.get(block) {
            self.read_local.fetch_add(1, Ordering::Relaxed);
            return Ok(p);
        }
        let Some((executor, address)) = self.inputs.get(&block) else {
            return Err(EngineError::FetchFailed {
                block,
                executor: self.self_id.clone(),
                reason: "the driver named no location for it".into(),
            });
        };
        if *executor == self.self_id {
            return Err(EngineError::FetchFailed {
                block,
                executor: executor.clone(),
                reason: "no longer held here (evicted or removed)".into(),
            });
        }
        match fetch_block(&self.pool, address, block).await {
            Ok((partition, bytes)) => {
                self.read_remote.fetch_add(1, Ordering::Relaxed);
                self.bytes_fetched.fetch_add(bytes as u64, Ordering::Relaxed);
                Ok(partition)
            }
            Err(e) => Err(EngineError::FetchFailed {
                block,
                executor: executor.clone(),
                reason: e.to_string(),
            }),
        }
    }
}
