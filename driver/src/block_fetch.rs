//! Driver block reader: lets the final fragment of a job, which runs on the driver, read
//! blocks from whichever executor holds them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use ember_engine::block_read::{BlockBatches, BlockReader};
use ember_engine::rpc::{fetch_block_stream, FetchStats};
use ember_engine::{BlockId, EngineError, ExecutorId, Result};
use futures::TryStreamExt;

use crate::Driver;

/// Fetches blocks for a fragment running on the driver, counting what it moved.
#[derive(Debug)]
pub(crate) struct DriverBlockReader {
    pub(crate) driver: Arc<Driver>,
    pub(crate) blocks: AtomicUsize,
    pub(crate) fetched: Arc<FetchStats>,
}

impl DriverBlockReader {
    /// A reader for one run of a fragment on `driver`.
    pub(crate) fn new(driver: Arc<Driver>) -> Self {
        Self {
            driver,
            blocks: AtomicUsize::new(0),
            fetched: Arc::default(),
        }
    }
}

#[async_trait]
impl BlockReader for DriverBlockReader {
    async fn read(&self, block: BlockId) -> Result<BlockBatches> {
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
        let lost = move |e: EngineError, executor: ExecutorId| EngineError::FetchFailed {
            block,
            executor,
            reason: e.to_string(),
        };
        match fetch_block_stream(
            &self.driver.pool,
            &address,
            block,
            Arc::clone(&self.fetched),
            self.driver.share_root(),
        )
        .await
        {
            Ok(batches) => {
                self.blocks.fetch_add(1, Ordering::Relaxed);
                Ok(Box::pin(
                    batches.map_err(move |e| lost(e, executor.clone())),
                ))
            }
            Err(e) => Err(lost(e, executor)),
        }
    }
}
