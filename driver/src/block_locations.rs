//! Block locations: owns the map of which executor holds which block; knows nothing of
//! how blocks are made.

use dashmap::DashMap;
use ember_engine::{BlockId, DatasetId, ExecutorId};

/// Where every known block lives. A block missing from the map must be (re)computed.
#[derive(Debug, Default)]
pub struct BlockLocations {
    blocks: DashMap<BlockId, ExecutorId>,
}

impl BlockLocations {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `executor` holds `block`.
    pub fn insert(&self, block: BlockId, executor: ExecutorId) {
        self.blocks.insert(block, executor);
    }

    /// The executor holding `block`.
    pub fn get(&self, block: BlockId) -> Option<ExecutorId> {
        self.blocks.get(&block).map(|e| e.value().clone())
    }

    /// Forgets `block` if `executor` is the one recorded as holding it (a stale report from
    /// an executor that no longer holds the current copy changes nothing).
    pub fn remove_if_at(&self, block: BlockId, executor: &ExecutorId) -> bool {
        self.blocks
            .remove_if(&block, |_, at| at == executor)
            .is_some()
    }

    /// The blocks (map outputs, for a shuffle) `executor` holds.
    pub fn held_by(&self, executor: &ExecutorId) -> Vec<BlockId> {
        self.blocks
            .iter()
            .filter(|e| e.value() == executor)
            .map(|e| *e.key())
            .collect()
    }

    /// Forgets every block `executor` held; returns them.
    pub fn remove_executor(&self, executor: &ExecutorId) -> Vec<BlockId> {
        let lost: Vec<BlockId> = self
            .blocks
            .iter()
            .filter(|e| e.value() == executor)
            .map(|e| *e.key())
            .collect();
        for b in &lost {
            self.blocks.remove_if(b, |_, at| at == executor);
        }
        lost
    }

    /// Forgets every block of `dataset`; returns where they were.
    pub fn remove_dataset(&self, dataset: DatasetId) -> Vec<(BlockId, ExecutorId)> {
        let gone: Vec<(BlockId, ExecutorId)> = self
            .blocks
            .iter()
            .filter(|e| e.key().dataset == dataset)
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        for (b, _) in &gone {
            self.blocks.remove(b);
        }
        gone
    }

    /// Partitions of `dataset` (out of `partitions`) that no executor holds.
    pub fn missing(&self, dataset: DatasetId, partitions: usize) -> Vec<u32> {
        (0..partitions as u32)
            .filter(|p| !self.blocks.contains_key(&BlockId::new(dataset, *p)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losing_an_executor_loses_exactly_its_blocks() {
        let l = BlockLocations::new();
        let (a, b) = (ExecutorId("a".into()), ExecutorId("b".into()));
        for p in 0..4 {
            let at = if p % 2 == 0 { a.clone() } else { b.clone() };
            l.insert(BlockId::new(DatasetId(1), p), at);
        }
        let mut lost = l.remove_executor(&a);
        lost.sort();
        assert_eq!(
            lost,
            vec![BlockId::new(DatasetId(1), 0), BlockId::new(DatasetId(1), 2)]
        );
        assert_eq!(l.missing(DatasetId(1), 4), vec![0, 2]);
        assert!(!l.remove_if_at(BlockId::new(DatasetId(1), 1), &a));
        assert!(l.remove_if_at(BlockId::new(DatasetId(1), 1), &b));
        assert_eq!(l.missing(DatasetId(1), 4), vec![0, 1, 2]);
    }
}
