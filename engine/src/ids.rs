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

/// A partition of a dataset: the unit the block manager stores and executors serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockId {
    /// The dataset the block belongs to.
    pub dataset: DatasetId,
    /// The partition index within the dataset.
    pub partition: u32,
}

impl BlockId {
    /// The block holding partition `partition` of `dataset`.
    pub fn new(dataset: DatasetId, partition: u32) -> Self {
        Self { dataset, partition }
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
        write!(f, "block {}/{}", self.dataset.0, self.partition)
    }
}

impl From<BlockId> for proto::BlockId {
    fn from(b: BlockId) -> Self {
        proto::BlockId {
            dataset: b.dataset.0,
            partition: b.partition,
        }
    }
}

impl From<&proto::BlockId> for BlockId {
    fn from(b: &proto::BlockId) -> Self {
        BlockId::new(DatasetId(b.dataset), b.partition)
    }
}

impl From<proto::BlockId> for BlockId {
    fn from(b: proto::BlockId) -> Self {
        BlockId::from(&b)
    }
}
