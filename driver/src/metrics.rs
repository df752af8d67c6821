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
    /// Of `bytes_fetched`, bytes read from same-host peers' block files (memory-mapped,
    /// not sent).
    pub bytes_mapped: u64,
    /// Executors declared lost during the job.
    pub executors_lost: usize,
    /// Executor processes of a local cluster that died and were replaced by new ones while
    /// the job ran.
    pub executors_replaced: usize,
    /// Wall time of the job.
    pub duration: Duration,
    /// Time the session spent planning the job (parsing, optimizing, cutting stages).
    pub planning: Duration,
    /// Task run time summed over tasks (executors run several at once).
    pub task_time: Duration,
    /// Of the task time, time spent fetching input blocks from peers (summed over
    /// concurrent fetches).
    pub fetch_time: Duration,
    /// Of the task time, time spent decoding plan fragments (once per task).
    pub plan_decode_time: Duration,
    /// Bytes of the launch messages sent for the job's tasks (plan fragment, input
    /// locations, ids), summed over tasks.
    pub launch_bytes: u64,
    /// Of the task time, time map tasks spent partitioning and storing shuffle output.
    pub shuffle_write_time: Duration,
    /// Bytes written into shuffle blocks.
    pub shuffle_bytes_written: u64,
    /// Rows written to files by the job's tasks (`write_parquet`, `COPY ... TO`).
    pub rows_written: u64,
    /// Bytes of blocks spilled to executors' disks.
    pub spilled_bytes: u64,
    /// Intermediate datasets whose blocks were released as soon as every stage reading
    /// them had finished, before the job's end.
    pub datasets_released_early: usize,
    /// Join filters the driver filled in from a build side of a later stage before running
    /// the stage whose scans consume them (`join_filter::FilterInput`).
    pub join_filters_filled: usize,
    /// Partitioned joins whose smaller side was run first (a job of its own) and, its rows
    /// being small, broadcast to the other side's tasks (`planner::runtime_broadcast`).
    pub sides_broadcast: usize,
    /// Partitioned semi or anti joins whose kept side was run first (a job of its own) and,
    /// being small, restricted the other side to its keys (`planner::runtime_broadcast`).
    pub sides_restricting: usize,
    /// Time the driver spent running the job's final fragment.
    pub driver_time: Duration,
    /// Per stage run: (dataset, tasks, wall time), in the order they finished.
    pub stages: Vec<StageTiming>,
    /// For a tree aggregation: the number of partial results at each level, from one per
    /// input partition down to the one the driver computes (so `len() - 1` merge levels).
    pub tree_levels: Vec<usize>,
    /// Leaner plans the query was planned again with, in order, after a task of an earlier
    /// plan ran out of operator memory (`sort-merge joins`, `8 partitions`); empty when the
    /// first plan ran.
    pub replanned: Vec<String>,
    /// What the executors that ran the job's tasks compute mllib kernels on (`cpu`, or
    /// `gpu: <adapter>`), each listed once.
    pub devices: Vec<String>,
}

/// Wall time of one stage run.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTiming {
    /// The dataset computed.
    pub dataset: ember_engine::DatasetId,
    /// Whether it was a shuffle's map side.
    pub shuffle: bool,
    /// Tasks run (retries included).
    pub tasks: usize,
    /// From submission to the last task's end.
    pub wall: Duration,
}
