//! Ids: newtypes for every identifier Ember passes around, so one can never stand in for another.
//!
//! ```compile_fail
//! use ember_engine::ids::{DatasetId, JobId};
//! fn wants_dataset(_: DatasetId) {}
//! wants_dataset(JobId(7));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::proto;

/// A node of the lineage graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DatasetId(pub u64);

/// One action (collect, count, write) and everything it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub u64);

/// A stage of a job: the tasks that compute the missing partitions of one dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StageId(pub u32);

/// An executor process (or in-process executor), unique for its lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExecutorId(pub String);

/// A partition of a dataset, or one reduce bucket of a shuffle map partition: the unit the
/// block manager stores and executors serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockId {
    /// The dataset the block belongs to.
    pub dataset: DatasetId,
    /// The partition index within the dataset (the map partition of a shuffle).
    pub partition: u32,
    /// For a shuffle block: the reduce partition whose rows it holds.
    pub reduce: Option<u32>,
}

impl BlockId {
    /// The block holding partition `partition` of `dataset`.
    pub fn new(dataset: DatasetId, partition: u32) -> Self {
        Self {
            dataset,
            partition,
            reduce: None,
        }
    }

    /// The rows of map partition `map` of shuffle `dataset` that go to reduce partition
    /// `reduce`.
    pub fn shuffle(dataset: DatasetId, map: u32, reduce: u32) -> Self {
        Self {
            dataset,
            partition: map,
            reduce: Some(reduce),
        }
    }

    /// The map output this block belongs to: the unit the driver tracks locations of (all
    /// reduce buckets of a map partition live on the executor that computed it). A plain
    /// block is its own map output.
    pub fn map_output(self) -> Self {
        Self::new(self.dataset, self.partition)
    }
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dataset {}", self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {}", self.0)
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage {}", self.0)
    }
}

impl fmt::Display for ExecutorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "executor {}", self.0)
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reduce {
            None => write!(f, "block {}/{}", self.dataset.0, self.partition),
            Some(r) => write!(
                f,
                "shuffle block {}/map {}/reduce {}",
                self.dataset.0, self.partition, r
            ),
        }
    }
}

impl From<BlockId> for proto::BlockId {
    fn from(b: BlockId) -> Self {
        proto::BlockId {
            dataset: b.dataset.0,
            partition: b.partition,
            reduce: b.reduce,
        }
    }
}

impl From<&proto::BlockId> for BlockId {
    fn from(b: &proto::BlockId) -> Self {
        BlockId {
            dataset: DatasetId(b.dataset),
            partition: b.partition,
            reduce: b.reduce,
        }
    }
}

impl From<proto::BlockId> for BlockId {
    fn from(b: proto::BlockId) -> Self {
        BlockId::from(&b)
    }
}
