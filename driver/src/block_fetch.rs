//! Driver block reader: lets the final fragment of a job, which runs on the driver, read
//! blocks from whichever executor holds them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use ember_engine::block_read::BlockReader;
use ember_engine::rpc::fetch_block;
use ember_engine::{BlockId, EngineError, ExecutorId, Partition, Result};

use crate::Driver;

/// Fetches blocks for a fragment running on the driver, counting what it moved.
#[derive(Debug)]
pub(crate) struct DriverBlockReader {
    pub(crate) driver: Arc<Driver>,
    pub(crate) blocks: AtomicUsize,
    pub(crate) bytes: AtomicU64,
}

#[async_trait]
impl BlockReader for DriverBlockReader {
    async fn read(&self, block: BlockId) -> Result<Arc<Partition>> {
        let Some(executor) = self.driver.locations.get(block) else {
            return Err(EngineError::FetchFailed {
                block,
                executor: ExecutorId("<none>".into()),
                reason: "no executor holds it".into(),
            });
        };
        let address = self
            .driver
            .registry
            .get(&executor)
            .map(|e| e.address)
            .unwrap_or_default();
        match fetch_block(&self.driver.pool, &address, block).await {
            Ok((partition, bytes)) => {
                self.blocks.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                Ok(partition)
            }
            Err(e) => Err(EngineError::FetchFailed {
                block,
                executor,
                reason: e.to_string(),
            }),
        }
    }
}
