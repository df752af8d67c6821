//! Block writer: builds the blocks a task outputs (a stored partition, or one shuffle bucket
//! per reduce partition) batch by batch, inside the block store's limit: every batch kept
//! in memory is reserved first, and when the store has no room the task's blocks so far
//! move to spill files, which later batches are appended to.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, GenericByteViewArray};
use arrow::datatypes::{ByteViewType, DataType, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
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
        let batch = compact_views(batch);
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

/// The batch with every string or binary view column that points into buffers much larger
/// than its own strings copied into compact ones. A hash join or a shuffle split picks rows
/// by reference: each output piece of a view column keeps its source batch's whole data
/// buffers alive, and a block of such pieces would hold (and write to disk, and send) those
/// buffers many times over. Other columns are shared as they are.
pub(crate) fn compact_views(batch: RecordBatch) -> RecordBatch {
    fn wasteful<T: ByteViewType + ?Sized>(array: &GenericByteViewArray<T>) -> bool {
        let held: usize = array.data_buffers().iter().map(|b| b.len()).sum();
        held > 2 * array.total_buffer_bytes_used() + VIEW_SLACK_BYTES
    }
    let mut changed = false;
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|column| {
            let compacted: Option<ArrayRef> = match column.data_type() {
                DataType::Utf8View => {
                    let a = column.as_string_view();
                    wasteful(a).then(|| Arc::new(a.gc()) as ArrayRef)
                }
                DataType::BinaryView => {
                    let a = column.as_binary_view();
                    wasteful(a).then(|| Arc::new(a.gc()) as ArrayRef)
                }
                _ => None,
            };
            changed |= compacted.is_some();
            compacted.unwrap_or_else(|| Arc::clone(column))
        })
        .collect();
    if !changed {
        return batch;
    }
    RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .unwrap_or(batch)
}

/// Data-buffer bytes a view column may hold beyond twice what its strings need before it
/// is compacted: small batches are not worth copying.
const VIEW_SLACK_BYTES: usize = 64 * 1024;

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

    /// A view column that references a much larger buffer (a few rows taken from a big
    /// batch) is stored compacted: the block holds its own strings only.
    #[test]
    fn view_columns_are_stored_without_the_buffers_they_were_cut_from() {
        use arrow::array::{Array, StringViewArray};
        let long: Vec<String> = (0..10_000).map(|i| format!("{i:0>40}")).collect();
        let big = StringViewArray::from_iter_values(long.iter().map(String::as_str));
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let piece = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(big.slice(0, 10))])
            .expect("batch");
        let before = piece.get_array_memory_size();
        let compacted = compact_views(piece.clone());
        assert!(
            compacted.get_array_memory_size() * 20 < before,
            "{} vs {before}",
            compacted.get_array_memory_size()
        );
        assert_eq!(compacted.column(0).as_string_view().value(9), long[9]);
        assert_eq!(compacted.column(0).len(), 10);
        // A compact column is shared, not copied.
        let whole = RecordBatch::try_new(schema, vec![Arc::new(big)]).expect("batch");
        let kept = compact_views(whole.clone());
        let data_buffer = |b: &RecordBatch| b.column(0).to_data().buffers()[1].as_ptr();
        assert_eq!(data_buffer(&kept), data_buffer(&whole));
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
