//! Block manager: owns this executor's blocks and their byte accounting against the memory
//! limit; evicts least-recently-used cached blocks to make room and spills job blocks
//! (shuffle outputs, stage results) to local disk; knows nothing of lineage.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use dashmap::DashMap;
use ember_engine::{BlockId, DatasetId, EngineError, Partition};

use crate::error::{ExecutorError, Result};

/// How a block may be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// A cached dataset's block: evicted under memory pressure, least recently used first.
    Cached,
    /// A job's intermediate block: kept until the driver removes it.
    Pinned,
}

/// Where a block's rows are.
#[derive(Debug)]
enum Stored {
    /// In memory, counted against the limit.
    Memory(Arc<Partition>),
    /// Spilled to an Arrow IPC file in the spill directory; not counted against the limit.
    Disk { path: PathBuf, bytes: usize },
}

#[derive(Debug)]
struct Entry {
    stored: Stored,
    kind: BlockKind,
    /// Logical clock of the last read or write, for LRU.
    last_used: AtomicU64,
}

impl Entry {
    /// Bytes this entry holds in memory.
    fn memory_size(&self) -> usize {
        match &self.stored {
            Stored::Memory(p) => p.memory_size(),
            Stored::Disk { .. } => 0,
        }
    }
}

/// What storing a block did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PutOutcome {
    /// Cached blocks evicted to make room.
    pub evicted: Vec<BlockId>,
    /// Bytes of the block written to disk instead of memory (0 when it stayed in memory).
    pub spilled: usize,
}

/// The blocks held by one executor.
///
/// Duties: store and hand out blocks as shared `Arc<Partition>`s; keep the sum of their
/// sizes within `limit` by evicting cached blocks, least recently used first; remember
/// what it evicted until the driver has been told.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::Int64Array;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use ember_engine::{BlockId, DatasetId, Partition};
/// use ember_executor::{BlockKind, BlockManager};
///
/// let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
/// let block = |rows: i64| {
///     let batch = RecordBatch::try_new(
///         schema.clone(),
///         vec![Arc::new(Int64Array::from_iter_values(0..rows))],
///     )
///     .unwrap();
///     Arc::new(Partition::new(schema.clone(), vec![batch]))
/// };
/// let size = block(1000).memory_size();
/// let blocks = BlockManager::new(2 * size);
/// let id = |p| BlockId::new(DatasetId(1), p);
/// blocks.put(id(0), block(1000), BlockKind::Cached).unwrap();
/// blocks.put(id(1), block(1000), BlockKind::Cached).unwrap();
/// // A third block pushes out the least recently used one.
/// let evicted = blocks.put(id(2), block(1000), BlockKind::Cached).unwrap();
/// assert_eq!(evicted, vec![id(0)]);
/// assert!(blocks.get(id(0)).is_none());
/// assert_eq!(blocks.used_bytes(), 2 * size);
/// ```
#[derive(Debug)]
pub struct BlockManager {
    blocks: DashMap<BlockId, Entry>,
    used: AtomicUsize,
    limit: usize,
    clock: AtomicU64,
    /// Serializes the check-evict-insert sequence so two inserts cannot both pass the
    /// limit check; nothing is awaited while it is held.
    insert_lock: Mutex<()>,
    /// Evicted blocks not yet reported to the driver.
    evicted: Mutex<Vec<BlockId>>,
    /// Where pinned blocks that do not fit in memory go; `None`: they fail instead.
    spill_dir: Option<PathBuf>,
    /// Bytes spilled since start.
    spilled: AtomicU64,
    /// Numbers spill files, so a block stored again (a retried or recomputed task) never
    /// writes over the file of the copy it replaces, whose removal would then take the new
    /// copy with it.
    spill_seq: AtomicU64,
}

impl BlockManager {
    /// An empty block manager that keeps at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            blocks: DashMap::new(),
            used: AtomicUsize::new(0),
            limit,
            clock: AtomicU64::new(0),
            insert_lock: Mutex::new(()),
            evicted: Mutex::new(Vec::new()),
            spill_dir: None,
            spilled: AtomicU64::new(0),
            spill_seq: AtomicU64::new(0),
        }
    }

    /// The same block manager, spilling pinned blocks that do not fit in memory to files
    /// under `dir` (which must exist; files are deleted with their blocks).
    pub fn with_spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// Bytes spilled to disk since start.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled.load(Ordering::Relaxed)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The block, if held (read back from disk if it was spilled); marks it recently used.
    /// A spilled block whose file cannot be read is reported as missing, so its producer is
    /// recomputed.
    pub fn get(&self, id: BlockId) -> Option<Arc<Partition>> {
        // The spill file is opened while the entry is held: removing the block afterwards
        // unlinks the file but cannot take it from this reader.
        let opened = {
            let entry = self.blocks.get(&id)?;
            entry.last_used.store(self.tick(), Ordering::Relaxed);
            match &entry.stored {
                Stored::Memory(p) => return Some(Arc::clone(p)),
                Stored::Disk { path, .. } => File::open(path),
            }
        };
        match opened.and_then(read_spill) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                tracing::warn!(%id, error = %e, "spilled block unreadable; treating it as lost");
                None
            }
        }
    }

    /// Stores a block, evicting least-recently-used cached blocks if needed. Returns the
    /// blocks evicted to make room.
    ///
    /// # Errors
    ///
    /// [`ExecutorError::MemoryLimit`] when the block does not fit even after evicting every
    /// cached block; nothing is evicted then.
    pub fn put(
        &self,
        id: BlockId,
        partition: Arc<Partition>,
        kind: BlockKind,
    ) -> Result<Vec<BlockId>> {
        self.put_block(id, partition, kind).map(|o| o.evicted)
    }

    /// Stores a block like [`BlockManager::put`]; a pinned block that does not fit even
    /// after evicting every cached block is spilled to disk when a spill directory is set.
    ///
    /// # Errors
    ///
    /// [`ExecutorError::MemoryLimit`] when the block fits neither in memory nor (without a
    /// spill directory, or for a cached block) on disk; an I/O error when spilling fails.
    pub fn put_block(
        &self,
        id: BlockId,
        partition: Arc<Partition>,
        kind: BlockKind,
    ) -> Result<PutOutcome> {
        let needed = partition.memory_size();
        // A poisoned lock only means another insert panicked; the map itself is consistent.
        let _guard = self.insert_lock.lock().unwrap_or_else(|p| p.into_inner());
        let replaced = self.blocks.get(&id).map(|e| e.memory_size()).unwrap_or(0);
        let used = self.used.load(Ordering::Acquire) - replaced;
        let mut victims = Vec::new();
        if used + needed > self.limit {
            let mut candidates: Vec<(u64, BlockId, usize)> = self
                .blocks
                .iter()
                .filter(|e| e.kind == BlockKind::Cached && *e.key() != id)
                .map(|e| {
                    (
                        e.last_used.load(Ordering::Relaxed),
                        *e.key(),
                        e.memory_size(),
                    )
                })
                .collect();
            candidates.sort_unstable();
            let mut freed = 0;
            for (_, victim, size) in candidates {
                if used - freed + needed <= self.limit {
                    break;
                }
                victims.push(victim);
                freed += size;
            }
            if used - freed + needed > self.limit {
                return match (&self.spill_dir, kind) {
                    // Evicting cached blocks would not make room: keep them, spill this one.
                    (Some(dir), BlockKind::Pinned) => self.spill(id, &partition, dir),
                    _ => Err(ExecutorError::MemoryLimit {
                        block: id,
                        needed,
                        pinned: used - freed,
                        limit: self.limit,
                    }),
                };
            }
        }
        for victim in &victims {
            self.remove(*victim);
        }
        let entry = Entry {
            stored: Stored::Memory(partition),
            kind,
            last_used: AtomicU64::new(self.tick()),
        };
        self.replace(id, entry);
        self.used.fetch_add(needed, Ordering::AcqRel);
        if !victims.is_empty() {
            self.evicted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(victims.iter().copied());
        }
        Ok(PutOutcome {
            evicted: victims,
            spilled: 0,
        })
    }

    /// Writes `partition` to a file under `dir` and records it as block `id`.
    fn spill(&self, id: BlockId, partition: &Partition, dir: &Path) -> Result<PutOutcome> {
        let seq = self.spill_seq.fetch_add(1, Ordering::Relaxed);
        let name = match id.reduce {
            Some(r) => format!("{}-{}-{}-{seq}.arrow", id.dataset.0, id.partition, r),
            None => format!("{}-{}-{seq}.arrow", id.dataset.0, id.partition),
        };
        let path = dir.join(name);
        write_spill(&path, partition)?;
        let bytes = std::fs::metadata(&path)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        self.spilled.fetch_add(bytes as u64, Ordering::Relaxed);
        tracing::debug!(%id, bytes, path = %path.display(), "block spilled to disk");
        let entry = Entry {
            stored: Stored::Disk { path, bytes },
            kind: BlockKind::Pinned,
            last_used: AtomicU64::new(self.tick()),
        };
        self.replace(id, entry);
        Ok(PutOutcome {
            evicted: Vec::new(),
            spilled: bytes,
        })
    }

    /// Inserts `entry` as `id`, releasing what an earlier entry of the same id held.
    fn replace(&self, id: BlockId, entry: Entry) {
        if let Some(old) = self.blocks.insert(id, entry) {
            self.release(old);
        }
    }

    /// Gives back what a dropped entry held: its memory, or its spill file.
    fn release(&self, entry: Entry) {
        match entry.stored {
            Stored::Memory(p) => {
                self.used.fetch_sub(p.memory_size(), Ordering::AcqRel);
            }
            Stored::Disk { path, .. } => {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "spill file not removed");
                }
            }
        }
    }

    /// Bytes of blocks spilled to disk and held now.
    pub fn disk_bytes(&self) -> usize {
        self.blocks
            .iter()
            .map(|e| match &e.stored {
                Stored::Disk { bytes, .. } => *bytes,
                Stored::Memory(_) => 0,
            })
            .sum()
    }

    /// Drops a block; returns whether it was held.
    pub fn remove(&self, id: BlockId) -> bool {
        match self.blocks.remove(&id) {
            Some((_, entry)) => {
                self.release(entry);
                true
            }
            None => false,
        }
    }

    /// Drops every block of `dataset`; returns how many were held.
    pub fn remove_dataset(&self, dataset: DatasetId) -> usize {
        let ids: Vec<BlockId> = self
            .blocks
            .iter()
            .filter(|e| e.key().dataset == dataset)
            .map(|e| *e.key())
            .collect();
        ids.into_iter().filter(|id| self.remove(*id)).count()
    }

    /// Drops every block.
    pub fn clear(&self) {
        let _guard = self.insert_lock.lock().unwrap_or_else(|p| p.into_inner());
        let ids: Vec<BlockId> = self.blocks.iter().map(|e| *e.key()).collect();
        for id in ids {
            self.remove(id);
        }
        self.used.store(0, Ordering::Release);
    }

    /// Evicted blocks not yet reported; reporting them clears the list.
    pub fn take_evicted(&self) -> Vec<BlockId> {
        std::mem::take(&mut *self.evicted.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts back evictions taken with [`BlockManager::take_evicted`] that could not be
    /// reported (the heartbeat carrying them failed), so the next report includes them.
    pub fn restore_evicted(&self, blocks: Vec<BlockId>) {
        if blocks.is_empty() {
            return;
        }
        let mut evicted = self.evicted.lock().unwrap_or_else(|p| p.into_inner());
        for b in blocks {
            if !evicted.contains(&b) {
                evicted.push(b);
            }
        }
    }

    /// Bytes held.
    pub fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The memory limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Number of blocks held.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether no block is held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

/// Writes a spilled block as an Arrow IPC file.
fn write_spill(path: &Path, partition: &Partition) -> Result<()> {
    let io = |e: std::io::Error| ExecutorError::from(EngineError::io(path, e));
    let file = File::create(path).map_err(io)?;
    let mut writer = FileWriter::try_new(BufWriter::new(file), partition.schema())
        .map_err(|e| io(std::io::Error::other(e)))?;
    for batch in partition.batches() {
        writer
            .write(batch)
            .map_err(|e| io(std::io::Error::other(e)))?;
    }
    writer.finish().map_err(|e| io(std::io::Error::other(e)))?;
    Ok(())
}

/// Reads a spilled block back from its opened file.
fn read_spill(file: File) -> std::io::Result<Partition> {
    let reader = FileReader::try_new(BufReader::new(file), None).map_err(std::io::Error::other)?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(std::io::Error::other)?;
    Ok(Partition::new(schema, batches))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    use super::*;

    fn block(p: u32) -> BlockId {
        BlockId::new(DatasetId(1), p)
    }

    fn partition(rows: usize) -> Arc<Partition> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..rows as i64))],
        )
        .expect("valid batch");
        Arc::new(Partition::new(schema, vec![batch]))
    }

    #[test]
    fn accounts_bytes_and_replaces() {
        let bm = BlockManager::new(1 << 30);
        let p = partition(1000);
        let size = p.memory_size();
        bm.put(block(0), p.clone(), BlockKind::Cached)
            .expect("fits");
        bm.put(block(0), p.clone(), BlockKind::Cached)
            .expect("fits");
        assert_eq!(bm.used_bytes(), size);
        assert!(bm.remove(block(0)));
        assert_eq!(bm.used_bytes(), 0);
        assert!(!bm.remove(block(0)));
    }

    #[test]
    fn evicts_least_recently_used_cached_block_first() {
        let size = partition(1000).memory_size();
        let bm = BlockManager::new(size * 3);
        for p in 0..3 {
            bm.put(block(p), partition(1000), BlockKind::Cached)
                .expect("fits");
        }
        // Touch 0 so 1 is now the least recently used.
        assert!(bm.get(block(0)).is_some());
        let evicted = bm
            .put(block(3), partition(1000), BlockKind::Cached)
            .expect("fits");
        assert_eq!(evicted, vec![block(1)]);
        assert!(bm.get(block(1)).is_none());
        assert!(bm.get(block(0)).is_some());
        assert_eq!(bm.take_evicted(), vec![block(1)]);
        assert!(bm.take_evicted().is_empty());
        // A heartbeat that failed puts its evictions back for the next one.
        bm.restore_evicted(vec![block(1)]);
        bm.restore_evicted(vec![block(1)]);
        assert_eq!(bm.take_evicted(), vec![block(1)]);
        assert!(bm.used_bytes() <= bm.limit());
    }

    #[test]
    fn pinned_blocks_are_never_evicted() {
        let size = partition(1000).memory_size();
        let bm = BlockManager::new(size * 2);
        bm.put(block(0), partition(1000), BlockKind::Pinned)
            .expect("fits");
        bm.put(block(1), partition(1000), BlockKind::Pinned)
            .expect("fits");
        let err = bm
            .put(block(2), partition(1000), BlockKind::Cached)
            .expect_err("over the limit");
        assert!(matches!(err, ExecutorError::MemoryLimit { needed, .. } if needed == size));
        assert_eq!(bm.len(), 2);
        assert!(err.to_string().contains("memory limit"));
    }

    #[test]
    fn pinned_blocks_that_do_not_fit_spill_to_disk_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = partition(1000).memory_size();
        let bm = BlockManager::new(size).with_spill_dir(dir.path());
        let pinned = block(0);
        bm.put(pinned, partition(1000), BlockKind::Pinned)
            .expect("fits");
        let shuffle = BlockId::shuffle(DatasetId(7), 0, 3);
        let outcome = bm
            .put_block(shuffle, partition(1000), BlockKind::Pinned)
            .expect("spills");
        assert!(outcome.spilled > 0);
        assert!(outcome.evicted.is_empty());
        assert_eq!(bm.used_bytes(), size);
        assert_eq!(bm.disk_bytes(), outcome.spilled);
        let back = bm.get(shuffle).expect("spilled block readable");
        assert_eq!(back.num_rows(), 1000);
        assert_eq!(back.batches(), partition(1000).batches());
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
        // Removing the dataset deletes its spill file.
        assert_eq!(bm.remove_dataset(DatasetId(7)), 1);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
        assert_eq!(bm.disk_bytes(), 0);
        // A cached block never spills: it is not kept.
        let err = bm
            .put(block(1), partition(2000), BlockKind::Cached)
            .expect_err("too big to cache");
        assert!(matches!(err, ExecutorError::MemoryLimit { .. }));
        // Cached blocks make room for a pinned block before anything spills.
        let bm = BlockManager::new(size).with_spill_dir(dir.path());
        bm.put(block(2), partition(1000), BlockKind::Cached)
            .expect("fits");
        let outcome = bm
            .put_block(shuffle, partition(1000), BlockKind::Pinned)
            .expect("fits after eviction");
        assert_eq!(outcome.evicted, vec![block(2)]);
        assert_eq!(outcome.spilled, 0);
    }

    /// A spilled block stored again (a retried or recomputed map task) stays readable, and
    /// a reader that looked the block up keeps its data even when the block is removed
    /// while it reads.
    #[test]
    fn a_spilled_block_stored_again_stays_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = partition(1000).memory_size();
        let bm = BlockManager::new(size).with_spill_dir(dir.path());
        bm.put(block(0), partition(1000), BlockKind::Pinned)
            .expect("fits");
        let shuffle = BlockId::shuffle(DatasetId(7), 0, 3);
        for round in 0..3 {
            bm.put_block(shuffle, partition(1000), BlockKind::Pinned)
                .expect("spills");
            let back = bm
                .get(shuffle)
                .unwrap_or_else(|| panic!("round {round}: the new copy was deleted"));
            assert_eq!(back.num_rows(), 1000);
            assert_eq!(
                std::fs::read_dir(dir.path()).expect("ls").count(),
                1,
                "the replaced copy's file is gone, the new one kept"
            );
        }
        // Read it, evict everything else, read it again: still there, nothing lost.
        bm.remove(block(0));
        assert!(bm.get(shuffle).is_some());
        assert!(bm.remove(shuffle));
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    #[test]
    fn remove_dataset_drops_only_its_blocks() {
        let bm = BlockManager::new(1 << 30);
        bm.put(block(0), partition(10), BlockKind::Cached)
            .expect("fits");
        bm.put(block(1), partition(10), BlockKind::Cached)
            .expect("fits");
        let other = BlockId::new(DatasetId(2), 0);
        bm.put(other, partition(10), BlockKind::Pinned)
            .expect("fits");
        assert_eq!(bm.remove_dataset(DatasetId(1)), 2);
        assert_eq!(bm.len(), 1);
        assert!(bm.get(other).is_some());
    }
}
