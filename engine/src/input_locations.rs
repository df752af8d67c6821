//! Task input locations: who holds each block a task reads, in the compact form a launch
//! message carries (each executor once, one small number per partition).

use std::collections::HashMap;

use crate::ids::{BlockId, DatasetId, ExecutorId};
use crate::proto::{DatasetHolders, ExecutorAddress, InputLocations};

/// Builds the [`InputLocations`] of a stage's tasks, block by block.
#[derive(Debug, Default)]
pub struct InputLocationsBuilder {
    locations: InputLocations,
    /// Position of each executor in `locations.executors`.
    executors: HashMap<String, u32>,
    /// Position of each dataset in `locations.datasets`.
    datasets: HashMap<u64, usize>,
}

impl InputLocationsBuilder {
    /// An empty set of locations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `executor`, reached at `address`, holds `block`.
    pub fn add(&mut self, block: BlockId, executor: &ExecutorId, address: &str) {
        let next = self.executors.len() as u32;
        let holder = *self.executors.entry(executor.0.clone()).or_insert_with(|| {
            self.locations.executors.push(ExecutorAddress {
                executor_id: executor.0.clone(),
                address: address.to_string(),
            });
            next
        });
        let next = self.datasets.len();
        let at = *self.datasets.entry(block.dataset.0).or_insert_with(|| {
            self.locations.datasets.push(DatasetHolders {
                dataset: block.dataset.0,
                holders: Vec::new(),
            });
            next
        });
        let holders = &mut self.locations.datasets[at].holders;
        let p = block.partition as usize;
        if holders.len() <= p {
            holders.resize(p + 1, 0);
        }
        holders[p] = holder + 1;
    }

    /// The locations recorded.
    pub fn build(self) -> InputLocations {
        self.locations
    }
}

impl InputLocations {
    /// The executor holding partition `block.partition` of `block.dataset` (every reduce
    /// bucket of a map partition lives where the map task ran), and its address.
    pub fn holder(&self, block: BlockId) -> Option<(ExecutorId, &str)> {
        let holders = self
            .datasets
            .iter()
            .find(|d| DatasetId(d.dataset) == block.dataset)?;
        let index = *holders.holders.get(block.partition as usize)?;
        let executor = self.executors.get(index.checked_sub(1)? as usize)?;
        Some((
            ExecutorId(executor.executor_id.clone()),
            executor.address.as_str(),
        ))
    }

    /// How many blocks have a holder.
    pub fn len(&self) -> usize {
        self.datasets
            .iter()
            .map(|d| d.holders.iter().filter(|h| **h > 0).count())
            .sum()
    }

    /// Whether no block has a holder.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Holders come back by dataset and partition (buckets by their map partition);
    /// partitions with no holder and unknown datasets have none; the encoding grows by a
    /// byte or so per partition, not by a name and an address.
    #[test]
    fn holders_are_found_by_block_and_stay_small() {
        let a = ExecutorId("exec-0".into());
        let b = ExecutorId("exec-1".into());
        let mut builder = InputLocationsBuilder::new();
        let partitions = 1000;
        for p in 0..partitions {
            let (who, address) = if p % 2 == 0 {
                (&a, "127.0.0.1:4000")
            } else {
                (&b, "127.0.0.1:4001")
            };
            if p != 7 {
                builder.add(BlockId::new(DatasetId(3), p), who, address);
            }
        }
        builder.add(BlockId::new(DatasetId(9), 2), &b, "127.0.0.1:4001");
        let locations = builder.build();
        assert_eq!(locations.executors.len(), 2);
        assert_eq!(locations.len(), partitions as usize);
        let bucket = BlockId::shuffle(DatasetId(3), 4, 17).map_output();
        assert_eq!(
            locations.holder(bucket),
            Some((a.clone(), "127.0.0.1:4000"))
        );
        assert_eq!(
            locations.holder(BlockId::new(DatasetId(3), 5)),
            Some((b.clone(), "127.0.0.1:4001"))
        );
        assert_eq!(locations.holder(BlockId::new(DatasetId(3), 7)), None);
        assert_eq!(locations.holder(BlockId::new(DatasetId(9), 0)), None);
        assert_eq!(
            locations.holder(BlockId::new(DatasetId(9), 2)),
            Some((b, "127.0.0.1:4001"))
        );
        assert_eq!(locations.holder(BlockId::new(DatasetId(4), 0)), None);
        let bytes = locations.encoded_len();
        assert!(bytes < 2 * partitions as usize, "{bytes} bytes");
        // Block by block, each with its holder's name and address, as a list of
        // `BlockLocation`s: over twenty times as much.
        let listed: usize = (0..partitions)
            .map(|p| {
                crate::proto::BlockLocation {
                    block: Some(BlockId::new(DatasetId(3), p).into()),
                    executor_id: a.0.clone(),
                    address: "127.0.0.1:4000".into(),
                }
                .encoded_len()
                    + 2
            })
            .sum();
        assert!(listed > 20 * bytes, "{listed} vs {bytes}");
    }
}
