//! Block writer: builds the blocks a task outputs (a stored partition, or one shuffle bucket
//! per reduce partition) batch by batch, inside the block store's limit: every batch kept
//! in memory is reserved first, and when the store has no room the task's blocks so far
//! move to spill files, which later batches are appended to.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use ember_engine::{BlockId, Partition};

use crate::block_manager::{BlockKind, BlockManager, SpillWriter};
use crate::error::Result;

/// One block being built.
#[derive(Debug)]
struct Pending {
    id: BlockId,
    /// Batches held in memory, in room reserved in the block store.
    batches: Vec<RecordBatch>,
    /// Bytes reserved for `batches`.
    reserved: usize,
    /// The spill file, once the block has spilled: `batches` are appended to it at the end.
    file: Option<SpillWriter>,
}

/// What building a task's blocks did.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Rows in all blocks.
    pub(crate) rows: u64,
    /// In-memory size of all batches written (whether they stayed in memory or spilled).
    pub(crate) bytes: u64,
    /// Bytes written to spill files.
    pub(crate) spilled: u64,
    /// Cached blocks evicted to make room.
    pub(crate) evicted: Vec<BlockId>,
}

/// Builds a task's output blocks within the block store's limit. Dropped before
/// [`BlockWriter::finish`] (the task failed), it gives back its room and removes its files.
#[derive(Debug)]
pub(crate) struct BlockWriter {
    store: Arc<BlockManager>,
    schema: SchemaRef,
    kind: BlockKind,
    blocks: Vec<Pending>,
    written: Written,
}

impl BlockWriter {
    /// A writer of the blocks `ids`, all of `schema`, stored as `kind`.
    pub(crate) fn new(
        store: Arc<BlockManager>,
        schema: SchemaRef,
        kind: BlockKind,
        ids: impl IntoIterator<Item = BlockId>,
    ) -> Self {
        let blocks = ids
            .into_iter()
            .map(|id| Pending {
                id,
                batches: Vec::new(),
                reserved: 0,
                file: None,
            })
            .collect();
        Self {
            store,
            schema,
            kind,
            blocks,
            written: Written::default(),
        }
    }

    /// Appends `batch` to block number `index`: in memory when the store has room for it,
    /// otherwise this writer's blocks spill and the batch goes to its block's file.
    pub(crate) fn push(&mut self, index: usize, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let size = batch.get_array_memory_size();
        self.written.rows += batch.num_rows() as u64;
        self.written.bytes += size as u64;
        // A cached block never evicts its own dataset's blocks; a job's block may evict any.
        let spare = (self.kind == BlockKind::Cached).then_some(self.blocks[index].id.dataset);
        if let Some(evicted) = self.store.reserve(size, spare) {
            self.written.evicted.extend(evicted);
            let block = &mut self.blocks[index];
            block.reserved += size;
            block.batches.push(batch);
            return Ok(());
        }
        self.spill()?;
        let block = &mut self.blocks[index];
        let file = match &mut block.file {
            Some(file) => file,
            None => block
                .file
                .insert(self.store.spill_writer(block.id, &self.schema)?),
        };
        file.write(&batch)
    }

    /// Moves every block's in-memory batches to its spill file and gives back their room.
    fn spill(&mut self) -> Result<()> {
        for block in &mut self.blocks {
            if block.batches.is_empty() {
                continue;
            }
            let file = match &mut block.file {
                Some(file) => file,
                None => block
                    .file
                    .insert(self.store.spill_writer(block.id, &self.schema)?),
            };
            for batch in block.batches.drain(..) {
                file.write(&batch)?;
            }
            self.store.unreserve(std::mem::take(&mut block.reserved));
        }
        Ok(())
    }

    /// Stores every block: those that spilled as files (with their last in-memory batches
    /// appended), the others in memory in the room already reserved. Empty blocks are
    /// stored too, so a reader finds every block it expects.
    pub(crate) fn finish(mut self) -> Result<Written> {
        for block in std::mem::take(&mut self.blocks) {
            let Pending {
                id,
                batches,
                reserved,
                file,
            } = block;
            match file {
                Some(mut file) => {
                    let stored = batches
                        .iter()
                        .try_for_each(|b| file.write(b))
                        .and_then(|()| self.store.put_spilled(id, file, self.kind));
                    self.store.unreserve(reserved);
                    self.written.spilled += stored? as u64;
                }
                None => {
                    let partition = Partition::new(Arc::clone(&self.schema), batches);
                    self.store
                        .put_reserved(id, Arc::new(partition), self.kind, reserved);
                }
            }
        }
        Ok(std::mem::take(&mut self.written))
    }
}

impl Drop for BlockWriter {
    /// Blocks never stored give back their room; their spill files remove themselves.
    fn drop(&mut self) {
        let reserved: usize = self.blocks.iter().map(|b| b.reserved).sum();
        if reserved > 0 {
            self.store.unreserve(reserved);
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use ember_engine::DatasetId;

    use super::*;

    fn batch(rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..rows as i64))],
        )
        .expect("valid batch")
    }

    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).expect("ls").count()
    }

    /// Buckets that outgrow the store spill as they are written, keep every row in order,
    /// and leave the store's accounting where it was once their blocks are removed.
    #[test]
    fn blocks_larger_than_the_store_spill_while_they_are_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = batch(1000).get_array_memory_size();
        let store = Arc::new(BlockManager::new(size * 3).with_spill_dir(dir.path()));
        let ids: Vec<BlockId> = (0..2)
            .map(|r| BlockId::shuffle(DatasetId(5), 0, r))
            .collect();
        let mut writer = BlockWriter::new(
            Arc::clone(&store),
            batch(1).schema(),
            BlockKind::Pinned,
            ids.clone(),
        );
        for i in 0..10 {
            writer.push(i % 2, batch(1000)).expect("push");
            assert!(store.used_bytes() <= store.limit(), "the limit holds");
        }
        let written = writer.finish().expect("finish");
        assert_eq!(written.rows, 10_000);
        assert!(written.spilled > 0);
        assert_eq!(files(dir.path()), 2, "one file per spilled block");
        for id in &ids {
            let back = store.get(*id).expect("block readable");
            assert_eq!(back.num_rows(), 5000);
        }
        for id in &ids {
            store.remove(*id);
        }
        assert_eq!(store.used_bytes(), 0);
        assert_eq!(files(dir.path()), 0, "spill files go with their blocks");
    }

    /// Blocks that fit stay in memory in the room they reserved; a writer dropped before
    /// finishing (a failed task) gives its room back and leaves no file.
    #[test]
    fn blocks_that_fit_stay_in_memory_and_a_failed_task_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = batch(1000).get_array_memory_size();
        let store = Arc::new(BlockManager::new(size * 4).with_spill_dir(dir.path()));
        let id = BlockId::new(DatasetId(6), 0);
        let mut writer = BlockWriter::new(
            Arc::clone(&store),
            batch(1).schema(),
            BlockKind::Pinned,
            [id],
        );
        writer.push(0, batch(1000)).expect("push");
        writer.push(0, batch(1000)).expect("push");
        let written = writer.finish().expect("finish");
        assert_eq!(written.spilled, 0);
        assert_eq!(store.used_bytes(), 2 * size);
        assert_eq!(store.disk_bytes(), 0);

        let other = BlockId::new(DatasetId(7), 0);
        let mut failed = BlockWriter::new(
            Arc::clone(&store),
            batch(1).schema(),
            BlockKind::Pinned,
            [other],
        );
        for _ in 0..6 {
            failed.push(0, batch(1000)).expect("push");
        }
        assert_eq!(files(dir.path()), 1);
        drop(failed);
        assert_eq!(store.used_bytes(), 2 * size, "room given back");
        assert_eq!(files(dir.path()), 0, "no file left");
        assert!(store.get(other).is_none());
    }
}
