//! Block manager: owns this executor's blocks and their byte accounting against the memory
//! limit; evicts least-recently-used cached blocks to make room and spills job blocks
//! (shuffle outputs, stage results) to local disk; knows nothing of lineage.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
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
    /// Written to an Arrow IPC file in the same-host share directory (a memory file
    /// system) for a peer to map, and read by mapping it here too; counted against the
    /// limit, since its pages are memory.
    Shared { path: PathBuf, bytes: usize },
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
            Stored::Shared { bytes, .. } => *bytes,
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
    /// Numbers spill and share files, so a block stored again (a retried or recomputed
    /// task) never writes over the file of the copy it replaces, whose removal would then
    /// take the new copy with it.
    spill_seq: AtomicU64,
    /// The same-host share directory, when this executor has one.
    share: Option<Share>,
}

/// Where an executor writes the blocks same-host peers ask for.
#[derive(Debug)]
struct Share {
    /// The directory the application's processes on this host share: a peer that names
    /// the same one in its fetch request is on this host.
    root: PathBuf,
    /// This executor's own directory inside it, where its block files go.
    dir: PathBuf,
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
            share: None,
        }
    }

    /// The same block manager, writing blocks that same-host peers fetch as Arrow IPC files
    /// into `dir` (inside `root`, the directory the application's processes on this host
    /// share; `dir` must exist, and its files are deleted with their blocks).
    pub fn with_share_dir(mut self, root: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        self.share = Some(Share {
            root: root.into(),
            dir: dir.into(),
        });
        self
    }

    /// The directory this executor shares with same-host processes, if any.
    pub fn share_root(&self) -> Option<&Path> {
        self.share.as_ref().map(|s| s.root.as_path())
    }

    /// The Arrow IPC file a same-host peer can map to read block `id`: written now (once)
    /// from the block in memory, which from then on is that file; `None` when the block
    /// is not held, is a cached block (kept in this process for its own readers), is
    /// spilled, or cannot be written (a full memory file system): the peer is then sent
    /// the block's bytes.
    pub fn export(&self, id: BlockId) -> Option<PathBuf> {
        let share = self.share.as_ref()?;
        let partition = {
            let entry = self.blocks.get(&id)?;
            entry.last_used.store(self.tick(), Ordering::Relaxed);
            match (&entry.stored, entry.kind) {
                (Stored::Shared { path, .. }, _) => return Some(path.clone()),
                (Stored::Memory(p), BlockKind::Pinned) => Arc::clone(p),
                _ => return None,
            }
        };
        let name = file_name(id, self.spill_seq.fetch_add(1, Ordering::Relaxed));
        let (path, bytes) = match ember_engine::shared_block::write_block_file(
            &share.dir,
            &name,
            partition.schema(),
            partition.batches(),
        ) {
            Ok(written) => written,
            Err(e) => {
                tracing::debug!(%id, error = %e, "block not shared through a file; sending it");
                return None;
            }
        };
        let _guard = self.insert_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut entry) = self.blocks.get_mut(&id) else {
            let _ = std::fs::remove_file(&path);
            return None;
        };
        // The block may have been replaced or removed while the file was written.
        if !matches!(&entry.stored, Stored::Memory(p) if Arc::ptr_eq(p, &partition)) {
            drop(entry);
            let _ = std::fs::remove_file(&path);
            return None;
        }
        entry.stored = Stored::Shared {
            path: path.clone(),
            bytes,
        };
        drop(entry);
        self.sub_used(partition.memory_size());
        self.used.fetch_add(bytes, Ordering::AcqRel);
        Some(path)
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

    /// Opens the block for reading, if held, and marks it recently used: a block in memory
    /// is shared as it is; a spilled block's file is opened while the entry is held, so
    /// removing the block afterwards unlinks the file but cannot take it from this reader.
    pub fn open(&self, id: BlockId) -> Option<OpenBlock> {
        let opened = {
            let entry = self.blocks.get(&id)?;
            entry.last_used.store(self.tick(), Ordering::Relaxed);
            match &entry.stored {
                Stored::Memory(p) => return Some(OpenBlock::Memory(Arc::clone(p))),
                Stored::Disk { path, .. } => File::open(path),
                Stored::Shared { path, .. } => {
                    // Mapped while the entry is held, so its removal cannot come first.
                    // SAFETY: this block manager wrote the file and never changes it.
                    return match unsafe { ember_engine::shared_block::map_block_file(path) } {
                        Ok((schema, batches)) => {
                            Some(OpenBlock::Memory(Arc::new(Partition::new(schema, batches))))
                        }
                        Err(e) => {
                            tracing::warn!(%id, error = %e, "shared block file unreadable; treating it as lost");
                            None
                        }
                    };
                }
            }
        };
        match opened.and_then(SpilledBlock::new) {
            Ok(file) => Some(OpenBlock::Disk(Box::new(file))),
            Err(e) => {
                tracing::warn!(%id, error = %e, "spilled block unreadable; treating it as lost");
                None
            }
        }
    }

    /// The whole block, if held (read back from disk if it was spilled); marks it recently
    /// used. A spilled block whose file cannot be read is reported as missing, so its
    /// producer is recomputed. Readers that can take batches one at a time use
    /// [`BlockManager::open`] instead.
    pub fn get(&self, id: BlockId) -> Option<Arc<Partition>> {
        match self.open(id)? {
            OpenBlock::Memory(p) => Some(p),
            OpenBlock::Disk(file) => {
                let schema = file.schema();
                match file.collect::<std::result::Result<Vec<_>, _>>() {
                    Ok(batches) => Some(Arc::new(Partition::new(schema, batches))),
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "spilled block unreadable; treating it as lost");
                        None
                    }
                }
            }
        }
    }

    /// Takes room for `bytes` that a task is about to hold for a block it is building,
    /// evicting least-recently-used cached blocks if needed, except those of `spare` (a
    /// cached dataset's block never pushes out its siblings, which would only be computed
    /// again: as in Spark's memory store). Returns the blocks evicted, or `None` when there
    /// is no room even then (nothing is evicted): the caller spills or stops keeping.
    pub fn reserve(&self, bytes: usize, spare: Option<DatasetId>) -> Option<Vec<BlockId>> {
        let _guard = self.insert_lock.lock().unwrap_or_else(|p| p.into_inner());
        let victims = self.make_room(bytes, None, spare)?;
        self.evict(&victims);
        self.used.fetch_add(bytes, Ordering::AcqRel);
        Some(victims)
    }

    /// Lowers the bytes counted, never below zero (a miscount must not wrap around and
    /// make every later reservation fail).
    fn sub_used(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Gives back room taken with [`BlockManager::reserve`].
    pub fn unreserve(&self, bytes: usize) {
        self.sub_used(bytes);
    }

    /// Stores a block built in room taken with [`BlockManager::reserve`]: `reserved` bytes
    /// of that room become the block's (the difference to its real size is settled).
    pub fn put_reserved(
        &self,
        id: BlockId,
        partition: Arc<Partition>,
        kind: BlockKind,
        reserved: usize,
    ) {
        let _guard = self.insert_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.insert_memory(id, partition, kind);
        self.sub_used(reserved);
    }

    /// A file to write block `id` into batch by batch, for a block too big to build in
    /// memory; [`BlockManager::put_spilled`] makes it the block.
    ///
    /// # Errors
    ///
    /// [`ExecutorError::MemoryLimit`] without a spill directory; an I/O error when the file
    /// cannot be made.
    pub fn spill_writer(&self, id: BlockId, schema: &SchemaRef) -> Result<SpillWriter> {
        let Some(dir) = &self.spill_dir else {
            return Err(ExecutorError::MemoryLimit {
                block: id,
                needed: 0,
                pinned: self.used_bytes(),
                limit: self.limit,
            });
        };
        let seq = self.spill_seq.fetch_add(1, Ordering::Relaxed);
        SpillWriter::create(dir.join(file_name(id, seq)), schema)
    }

    /// Stores the block written with `writer`; returns the bytes it has on disk.
    ///
    /// # Errors
    ///
    /// An I/O error when the file cannot be completed (it is removed then).
    pub fn put_spilled(&self, id: BlockId, writer: SpillWriter, kind: BlockKind) -> Result<usize> {
        let (path, bytes) = writer.finish()?;
        self.spilled.fetch_add(bytes as u64, Ordering::Relaxed);
        tracing::debug!(%id, bytes, path = %path.display(), "block spilled to disk");
        let entry = Entry {
            stored: Stored::Disk { path, bytes },
            kind,
            last_used: AtomicU64::new(self.tick()),
        };
        let _guard = self.insert_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.replace(id, entry);
        Ok(bytes)
    }

    /// The cached blocks in memory to evict, least recently used first, so that `needed`
    /// more bytes fit (`id`'s current copy, about to be replaced, counts as free; blocks of
    /// `spare` are kept); `None` when evicting every one would not be enough. Called under
    /// the insert lock.
    fn make_room(
        &self,
        needed: usize,
        id: Option<BlockId>,
        spare: Option<DatasetId>,
    ) -> Option<Vec<BlockId>> {
        let replaced = id
            .and_then(|id| self.blocks.get(&id).map(|e| e.memory_size()))
            .unwrap_or(0);
        let used = self.used.load(Ordering::Acquire).saturating_sub(replaced);
        if used + needed <= self.limit {
            return Some(Vec::new());
        }
        let mut candidates: Vec<(u64, BlockId, usize)> = self
            .blocks
            .iter()
            .filter(|e| {
                e.kind == BlockKind::Cached
                    && matches!(e.stored, Stored::Memory(_))
                    && Some(*e.key()) != id
                    && Some(e.key().dataset) != spare
            })
            .map(|e| {
                (
                    e.last_used.load(Ordering::Relaxed),
                    *e.key(),
                    e.memory_size(),
                )
            })
            .collect();
        candidates.sort_unstable();
        let mut victims = Vec::new();
        let mut freed = 0;
        for (_, victim, size) in candidates {
            if used - freed + needed <= self.limit {
                break;
            }
            victims.push(victim);
            freed += size;
        }
        (used - freed + needed <= self.limit).then_some(victims)
    }

    /// Drops evicted cached blocks and remembers them for the driver.
    fn evict(&self, victims: &[BlockId]) {
        if victims.is_empty() {
            return;
        }
        for victim in victims {
            self.remove(*victim);
        }
        self.evicted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(victims.iter().copied());
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
        let guard = self.insert_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(victims) = self.make_room(needed, Some(id), None) else {
            drop(guard);
            return match (&self.spill_dir, kind) {
                // Evicting cached blocks would not make room: keep them, spill this one.
                (Some(_), BlockKind::Pinned) => {
                    let mut writer = self.spill_writer(id, partition.schema())?;
                    for batch in partition.batches() {
                        writer.write(batch)?;
                    }
                    let spilled = self.put_spilled(id, writer, kind)?;
                    Ok(PutOutcome {
                        evicted: Vec::new(),
                        spilled,
                    })
                }
                _ => Err(ExecutorError::MemoryLimit {
                    block: id,
                    needed,
                    pinned: self.used_bytes(),
                    limit: self.limit,
                }),
            };
        };
        self.evict(&victims);
        self.insert_memory(id, partition, kind);
        Ok(PutOutcome {
            evicted: victims,
            spilled: 0,
        })
    }

    /// Stores `partition` in memory as block `id` and counts its bytes. Called under the
    /// insert lock.
    fn insert_memory(&self, id: BlockId, partition: Arc<Partition>, kind: BlockKind) {
        let size = partition.memory_size();
        let entry = Entry {
            stored: Stored::Memory(partition),
            kind,
            last_used: AtomicU64::new(self.tick()),
        };
        self.replace(id, entry);
        self.used.fetch_add(size, Ordering::AcqRel);
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
                self.sub_used(p.memory_size());
            }
            Stored::Disk { path, .. } => {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "spill file not removed");
                }
            }
            Stored::Shared { path, bytes } => {
                self.sub_used(bytes);
                // A peer that mapped the file keeps its pages until it drops them.
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "shared block file not removed");
                }
            }
        }
    }

    /// The directory spill files go to, if blocks may spill.
    pub fn spill_dir(&self) -> Option<&Path> {
        self.spill_dir.as_deref()
    }

    /// Bytes of blocks spilled to disk and held now.
    pub fn disk_bytes(&self) -> usize {
        self.blocks
            .iter()
            .map(|e| match &e.stored {
                Stored::Disk { bytes, .. } => *bytes,
                Stored::Memory(_) | Stored::Shared { .. } => 0,
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

    /// Drops every block (room reserved by tasks still building blocks stays theirs).
    pub fn clear(&self) {
        let _guard = self.insert_lock.lock().unwrap_or_else(|p| p.into_inner());
        let ids: Vec<BlockId> = self.blocks.iter().map(|e| *e.key()).collect();
        for id in ids {
            self.remove(id);
        }
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

/// The file name of block `id`'s copy number `seq` (numbered, so a block stored again never
/// writes over the file of the copy it replaces, whose removal would then take the new
/// copy with it).
fn file_name(id: BlockId, seq: u64) -> String {
    match id.reduce {
        Some(r) => format!("{}-{}-{}-{seq}.arrow", id.dataset.0, id.partition, r),
        None => format!("{}-{}-{seq}.arrow", id.dataset.0, id.partition),
    }
}

/// A block being written to a spill file, batch by batch. Dropped before it is stored, it
/// removes its file.
pub struct SpillWriter {
    path: PathBuf,
    writer: Option<FileWriter<BufWriter<File>>>,
}

impl SpillWriter {
    fn create(path: PathBuf, schema: &SchemaRef) -> Result<Self> {
        let file = File::create(&path).map_err(|e| spill_io(&path, e))?;
        let mut spill = Self { path, writer: None };
        let writer = FileWriter::try_new(BufWriter::new(file), schema)
            .map_err(|e| spill_io(&spill.path, std::io::Error::other(e)))?;
        spill.writer = Some(writer);
        Ok(spill)
    }

    /// Appends one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(spill_io(
                &self.path,
                std::io::Error::other("spill file already closed"),
            ));
        };
        writer
            .write(batch)
            .map_err(|e| spill_io(&self.path, std::io::Error::other(e)))
    }

    /// Completes the file; returns its path and size. Once this is called, the file is the
    /// caller's.
    fn finish(mut self) -> Result<(PathBuf, usize)> {
        let Some(mut writer) = self.writer.take() else {
            return Err(spill_io(
                &self.path,
                std::io::Error::other("spill file already closed"),
            ));
        };
        let path = std::mem::take(&mut self.path);
        let closed = writer
            .finish()
            .map_err(|e| spill_io(&path, std::io::Error::other(e)));
        drop(writer);
        let sized = closed.and_then(|()| {
            std::fs::metadata(&path)
                .map(|m| m.len() as usize)
                .map_err(|e| spill_io(&path, e))
        });
        match sized {
            Ok(bytes) => Ok((path, bytes)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}

impl Drop for SpillWriter {
    /// A file never stored as a block belongs to nothing: it goes.
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            drop(writer);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl std::fmt::Debug for SpillWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn spill_io(path: &Path, e: std::io::Error) -> ExecutorError {
    ExecutorError::from(EngineError::io(path, e))
}

/// A block as opened for reading.
#[derive(Debug)]
pub enum OpenBlock {
    /// Held in memory.
    Memory(Arc<Partition>),
    /// Spilled: its batches are read from the file one at a time.
    Disk(Box<SpilledBlock>),
}

/// A spilled block's file, opened: iterates over its batches, reading one at a time.
pub struct SpilledBlock(FileReader<BufReader<File>>);

impl SpilledBlock {
    fn new(file: File) -> std::io::Result<Self> {
        FileReader::try_new(BufReader::new(file), None)
            .map(Self)
            .map_err(std::io::Error::other)
    }

    /// The schema of the block's batches.
    pub fn schema(&self) -> SchemaRef {
        self.0.schema()
    }
}

impl std::fmt::Debug for SpilledBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpilledBlock").finish_non_exhaustive()
    }
}

impl Iterator for SpilledBlock {
    type Item = std::result::Result<RecordBatch, arrow::error::ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        // A batch read back is a set of slices of its message body; see `exact_buffers`.
        self.0.next().map(|batch| {
            batch.and_then(|b| {
                ember_engine::codec::exact_buffers(b)
                    .map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))
            })
        })
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

    /// A pinned block a same-host peer asks for becomes one file in the share directory,
    /// written once, counted against the limit instead of the memory copy, readable here
    /// too, and removed with the block; cached blocks and stores without a share
    /// directory send bytes instead.
    #[test]
    fn exported_blocks_are_counted_files_removed_with_their_blocks() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("executor");
        std::fs::create_dir(&dir).expect("mkdir");
        let store = BlockManager::new(1 << 30).with_share_dir(root.path(), &dir);
        assert_eq!(store.share_root(), Some(root.path()));
        let pinned = partition(1000);
        store
            .put(block(0), Arc::clone(&pinned), BlockKind::Pinned)
            .expect("put");
        let path = store.export(block(0)).expect("exported");
        assert!(path.starts_with(&dir), "{}", path.display());
        assert_eq!(store.export(block(0)), Some(path.clone()), "written once");
        let bytes = std::fs::metadata(&path).expect("stat").len() as usize;
        assert_eq!(store.used_bytes(), bytes);
        // SAFETY: the store just wrote it.
        let (_, mapped) =
            unsafe { ember_engine::shared_block::map_block_file(&path) }.expect("map");
        assert_eq!(mapped, pinned.batches());
        let back = store.get(block(0)).expect("readable here");
        assert_eq!(back.batches(), pinned.batches());

        let cached = partition(10);
        store
            .put(block(1), Arc::clone(&cached), BlockKind::Cached)
            .expect("put");
        assert_eq!(
            store.export(block(1)),
            None,
            "cached blocks stay in the process"
        );
        assert_eq!(store.export(block(7)), None, "not held");
        assert!(store.remove(block(0)));
        assert!(!path.exists(), "the file goes with its block");
        assert_eq!(store.used_bytes(), cached.memory_size());
        // A mapping taken before the removal still reads.
        assert_eq!(mapped[0].num_rows(), 1000);

        let unshared = BlockManager::new(1 << 30);
        unshared
            .put(block(0), pinned, BlockKind::Pinned)
            .expect("put");
        assert_eq!(unshared.export(block(0)), None);
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

    /// Room for a block being built evicts cached blocks of other datasets, never those of
    /// the dataset it belongs to, and is refused (nothing evicted) when there is no room.
    #[test]
    fn reservations_spare_their_own_dataset() {
        let size = partition(1000).memory_size();
        let bm = BlockManager::new(size * 2);
        bm.put(block(0), partition(1000), BlockKind::Cached)
            .expect("fits");
        let other = BlockId::new(DatasetId(2), 0);
        bm.put(other, partition(1000), BlockKind::Cached)
            .expect("fits");
        // A block of dataset 1 may push out dataset 2's block, not its sibling.
        assert_eq!(bm.reserve(size, Some(DatasetId(1))), Some(vec![other]));
        assert!(bm.get(block(0)).is_some());
        assert_eq!(bm.used_bytes(), 2 * size);
        assert_eq!(bm.reserve(size, Some(DatasetId(1))), None);
        assert_eq!(bm.len(), 1, "a refused reservation evicts nothing");
        bm.unreserve(size);
        assert_eq!(bm.used_bytes(), size);
        // A job's block may push out any cached block.
        assert_eq!(bm.reserve(2 * size, None), Some(vec![block(0)]));
        bm.unreserve(2 * size);
        assert_eq!(bm.used_bytes(), 0);
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
