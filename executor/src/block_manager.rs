//! Block manager: owns this executor's blocks and their byte accounting against the memory
//! limit; evicts least-recently-used cached blocks to make room; knows nothing of lineage.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use ember_engine::{BlockId, DatasetId, Partition};

use crate::error::{ExecutorError, Result};

/// How a block may be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// A cached dataset's block: evicted under memory pressure, least recently used first.
    Cached,
    /// A job's intermediate block: kept until the driver removes it.
    Pinned,
}

#[derive(Debug)]
struct Entry {
    partition: Arc<Partition>,
    kind: BlockKind,
    /// Logical clock of the last read or write, for LRU.
    last_used: AtomicU64,
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
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The block, if held; marks it recently used.
    pub fn get(&self, id: BlockId) -> Option<Arc<Partition>> {
        let entry = self.blocks.get(&id)?;
        entry.last_used.store(self.tick(), Ordering::Relaxed);
        Some(Arc::clone(&entry.partition))
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
        let needed = partition.memory_size();
        // A poisoned lock only means another insert panicked; the map itself is consistent.
        let _guard = self.insert_lock.lock().unwrap_or_else(|p| p.into_inner());
        let replaced = self
            .blocks
            .get(&id)
            .map(|e| e.partition.memory_size())
            .unwrap_or(0);
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
                        e.partition.memory_size(),
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
                return Err(ExecutorError::MemoryLimit {
                    block: id,
                    needed,
                    pinned: used - freed,
                    limit: self.limit,
                });
            }
        }
        for victim in &victims {
            self.remove(*victim);
        }
        let entry = Entry {
            partition,
            kind,
            last_used: AtomicU64::new(self.tick()),
        };
        if let Some(old) = self.blocks.insert(id, entry) {
            self.used
                .fetch_sub(old.partition.memory_size(), Ordering::AcqRel);
        }
        self.used.fetch_add(needed, Ordering::AcqRel);
        if !victims.is_empty() {
            self.evicted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(victims.iter().copied());
        }
        Ok(victims)
    }

    /// Drops a block; returns whether it was held.
    pub fn remove(&self, id: BlockId) -> bool {
        match self.blocks.remove(&id) {
            Some((_, entry)) => {
                self.used
                    .fetch_sub(entry.partition.memory_size(), Ordering::AcqRel);
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
        self.blocks.clear();
        self.used.store(0, Ordering::Release);
    }

    /// Evicted blocks not yet reported; reporting them clears the list.
    pub fn take_evicted(&self) -> Vec<BlockId> {
        std::mem::take(&mut *self.evicted.lock().unwrap_or_else(|p| p.into_inner()))
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
