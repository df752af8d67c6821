//! Job metrics: what one action cost, for users and for tests of caching and recovery.

use std::time::Duration;

use ember_engine::JobId;

/// Counters of one job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobMetrics {
    /// The job.
    pub job: Option<JobId>,
    /// Stage attempts run (a stage resubmitted after a lost input counts again).
    pub stages_run: usize,
    /// Task attempts launched.
    pub tasks_run: usize,
    /// Task attempts that failed (and were retried or ended the job).
    pub task_failures: usize,
    /// Partitions computed again because their earlier block was lost or evicted.
    pub partitions_recomputed: usize,
    /// Tasks that read a source (file or in-memory scan) rather than only blocks.
    pub source_partitions_read: usize,
    /// Partitions of cached datasets found in executors' memory, so not recomputed.
    pub cached_blocks_used: usize,
    /// Block reads served from the reading executor's own memory.
    pub blocks_read_local: usize,
    /// Block reads fetched from another executor (or by the driver).
    pub blocks_read_remote: usize,
    /// Bytes moved by block fetches.
    pub bytes_fetched: u64,
    /// Executors declared lost during the job.
    pub executors_lost: usize,
    /// Wall time of the job.
    pub duration: Duration,
}
