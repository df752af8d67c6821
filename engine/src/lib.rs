//! Ember's core library: everything the driver and the executors share, and no process
//! management.
//!
//! # Layout
//!
//! - [`ids`]: newtype ids (dataset, block, job, stage, executor).
//! - [`partition`]: a block's contents, a schema plus record batches.
//! - [`codec`]: partitions to bounded Arrow IPC chunks and back.
//! - [`block_read`]: the plan leaf that reads a dataset's blocks, and the reader trait behind it.
//! - [`extension`]: plan nodes and functions registered by crates above the engine.
//! - [`plan_codec`]: plan fragments to bytes (datafusion-proto plus Ember's extension codec).
//! - [`lineage`]: datasets and the cutting of physical plans into them.
//! - [`rpc`]: channels with deadlines, the channel pool and the block fetch.
//! - [`security`]: the shared secret, TLS, and who may listen where.
//! - [`proto`]: the generated driver <-> executor protocol.
//! - [`failure`]: what the scheduler does about each kind of task failure.
//! - [`error`]: the error type, [`EngineError`].
#![warn(missing_docs)]

/// Driver <-> executor messages and services, generated from `proto/ember.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("ember");
}

/// Reading dataset blocks from inside a plan.
pub mod block_read;
/// Arrow IPC encoding of partitions for the wire.
pub mod codec;
/// The core's error type.
pub mod error;
/// Plan extensions registered per process.
pub mod extension;
/// Task failure classes and the scheduler's reaction to each.
pub mod failure;
/// Newtype identifiers.
pub mod ids;
/// Who holds the blocks a task reads.
pub mod input_locations;
/// Broadcast joins' key bounds handed to their probe-side scans within a task.
pub mod join_filter;
/// Datasets and plan cutting.
pub mod lineage;
/// The contents of a block.
pub mod partition;
/// Plan fragments as bytes.
pub mod plan_codec;
/// gRPC channels and block fetching.
pub mod rpc;
/// Authentication and TLS of every RPC.
pub mod security;
/// Block files shared by the processes of one host, read by memory-mapping.
pub mod shared_block;

pub use error::{EngineError, Result};
pub use ids::{BlockId, DatasetId, ExecutorId, JobId, StageId};
pub use partition::Partition;
