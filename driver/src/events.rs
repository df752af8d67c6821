//! Scheduler events: every lifecycle change the driver's scheduler makes (applications,
//! executors, jobs, stages, tasks, cached datasets), as serializable records for
//! subscribers, the JSON-lines event log, and the snapshot that replays them.

use std::io::Write;
use std::path::{Path, PathBuf};

use ember_engine::{DatasetId, ExecutorId, JobId, StageId};
use serde::{Deserialize, Serialize};

/// How a job ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Still running.
    Running,
    /// Every stage finished and the result was delivered.
    Succeeded,
    /// A task or stage failed for good.
    Failed,
    /// Cancelled by a caller (or its future was dropped).
    Cancelled,
}

/// How a stage attempt ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StageStatus {
    /// Tasks are pending or running.
    Active,
    /// Every partition was computed.
    Complete,
    /// The stage stopped: a task failed for good, or an input was lost (the stage is then
    /// resubmitted as a new attempt once the input is recomputed).
    Failed,
    /// Its job was cancelled.
    Cancelled,
}

/// How a task attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskEndStatus {
    /// It computed its partition (and its result was used).
    Success,
    /// It failed (see the reason); it may be retried.
    Failed,
    /// It was stopped: its job was cancelled, another attempt of its partition won, or
    /// its executor was lost.
    Killed,
}

/// What one task attempt read, wrote and cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFigures {
    /// Rows it output.
    pub rows: u64,
    /// Bytes of its output block (or file).
    pub output_bytes: u64,
    /// Input blocks read from the executor's own memory.
    pub blocks_read_local: u32,
    /// Input blocks fetched from peers.
    pub blocks_read_remote: u32,
    /// Bytes fetched from peers (shuffle read, remote cached blocks).
    pub bytes_fetched: u64,
    /// Bytes written into shuffle buckets.
    pub shuffle_bytes_written: u64,
    /// Bytes of blocks spilled to disk.
    pub spilled_bytes: u64,
    /// Time the executor ran it, in milliseconds.
    pub run_ms: u64,
    /// Of that, time fetching inputs from peers.
    pub fetch_ms: u64,
}

/// A lifecycle event of the scheduler. Times are wall-clock milliseconds since the Unix
/// epoch, so an event log replays to the same snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SchedulerEvent {
    /// The driver started.
    ApplicationStarted {
        /// The application's id (also the event log's file name).
        app: String,
        /// When.
        time_ms: u64,
    },
    /// An executor registered (or registered again after being lost).
    ExecutorAdded {
        /// Its id.
        executor: ExecutorId,
        /// Where its ExecutorService listens.
        address: String,
        /// Task slots.
        cores: u32,
        /// Its memory limit.
        memory_bytes: u64,
        /// What its mllib kernels run on.
        device: String,
        /// When.
        time_ms: u64,
    },
    /// An executor was declared lost: it gets no more tasks and its blocks are forgotten.
    ExecutorRemoved {
        /// Its id.
        executor: ExecutorId,
        /// Why (missed heartbeats, refused connections, failed fetches).
        reason: String,
        /// When.
        time_ms: u64,
    },
    /// An executor is given no tasks for a while (its tasks kept failing where others
    /// succeeded, or kept being beaten by speculative copies).
    ExecutorExcluded {
        /// Its id.
        executor: ExecutorId,
        /// Why.
        reason: String,
        /// Until when.
        until_ms: u64,
        /// When.
        time_ms: u64,
    },
    /// An excluded executor takes tasks again.
    ExecutorIncluded {
        /// Its id.
        executor: ExecutorId,
        /// When.
        time_ms: u64,
    },
    /// A job started.
    JobStarted {
        /// Its id.
        job: JobId,
        /// What it runs (the SQL text, or the action).
        description: String,
        /// The pool it shares slots in under FAIR scheduling.
        pool: String,
        /// Ember's stages and DataFusion's physical plan, as `EXPLAIN` prints them (empty
        /// when the job was not planned from a query).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        plan: String,
        /// Who started it: a Spark Connect operation's tag and its client's tags.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tags: Vec<String>,
        /// When.
        time_ms: u64,
    },
    /// A job ended.
    JobEnded {
        /// Its id.
        job: JobId,
        /// How.
        status: JobStatus,
        /// The error, for a failed or cancelled job.
        error: Option<String>,
        /// When.
        time_ms: u64,
    },
    /// A stage attempt was submitted: one task per missing partition of a dataset.
    StageSubmitted {
        /// The job.
        job: JobId,
        /// The stage.
        stage: StageId,
        /// The dataset whose partitions it computes.
        dataset: DatasetId,
        /// Tasks (partitions) it runs.
        tasks: usize,
        /// Whether it is the map side of a shuffle.
        shuffle: bool,
        /// The datasets its tasks read (shuffles, stored stage outputs, cached data): the
        /// stage DAG's edges.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        parents: Vec<DatasetId>,
        /// What it runs: its operators, top first.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        name: String,
        /// When.
        time_ms: u64,
    },
    /// A stage attempt ended (see `status`).
    StageCompleted {
        /// The job.
        job: JobId,
        /// The stage.
        stage: StageId,
        /// The dataset whose partitions the stage computed.
        dataset: DatasetId,
        /// Whether the stage was the map side of a shuffle.
        shuffle: bool,
        /// Task attempts the stage ran (retries and speculative copies included).
        tasks: usize,
        /// How it ended.
        status: StageStatus,
        /// When.
        time_ms: u64,
    },
    /// A task attempt was launched.
    TaskStarted {
        /// The job.
        job: JobId,
        /// The stage.
        stage: StageId,
        /// The attempt's id.
        task: u64,
        /// The partition it computes.
        partition: u32,
        /// Attempt number of the partition within the stage (0 first).
        attempt: u32,
        /// Where it runs.
        executor: ExecutorId,
        /// Whether it is a speculative copy of a straggler.
        speculative: bool,
        /// When.
        time_ms: u64,
    },
    /// A task attempt ended.
    TaskEnded {
        /// The job.
        job: JobId,
        /// The stage.
        stage: StageId,
        /// The attempt's id.
        task: u64,
        /// The partition.
        partition: u32,
        /// Where it ran.
        executor: ExecutorId,
        /// How it ended.
        status: TaskEndStatus,
        /// Why it failed or was killed.
        reason: Option<String>,
        /// What it read and wrote (for a successful attempt).
        figures: Option<TaskFigures>,
        /// When.
        time_ms: u64,
    },
    /// A cached dataset was registered.
    DatasetCached {
        /// The dataset.
        dataset: DatasetId,
        /// Its partitions.
        partitions: usize,
        /// When.
        time_ms: u64,
    },
    /// A partition of a cached dataset is held by an executor.
    BlockCached {
        /// The dataset.
        dataset: DatasetId,
        /// The partition.
        partition: u32,
        /// Where.
        executor: ExecutorId,
        /// Its size.
        bytes: u64,
        /// When.
        time_ms: u64,
    },
    /// A cached partition is no longer held (evicted, or its executor lost).
    BlockUncached {
        /// The dataset.
        dataset: DatasetId,
        /// The partition.
        partition: u32,
        /// When.
        time_ms: u64,
    },
    /// A cached dataset was dropped (unpersisted).
    DatasetUnpersisted {
        /// The dataset.
        dataset: DatasetId,
        /// When.
        time_ms: u64,
    },
    /// An mllib training run made a pass over its data (a gradient evaluation, or a Lloyd
    /// iteration of k-means).
    TrainingPass {
        /// The run (unique in the process).
        run: u64,
        /// What is trained (`LogisticRegression`, `LinearRegression`, `KMeans`).
        algorithm: String,
        /// Passes so far, this one included.
        pass: u32,
        /// The objective at this pass (loss with regularization, or k-means cost).
        objective: f64,
        /// Partials per level of the pass's tree reduction.
        tree_levels: Vec<usize>,
        /// Rows trained on.
        rows: u64,
        /// When.
        time_ms: u64,
    },
    /// An mllib training run ended.
    TrainingEnded {
        /// The run.
        run: u64,
        /// Accepted iterations.
        iterations: u32,
        /// Whether the tolerance was met before the iteration limit.
        converged: bool,
        /// The objective after each accepted iteration (the first at the start).
        objective_history: Vec<f64>,
        /// When.
        time_ms: u64,
    },
}

impl SchedulerEvent {
    /// When the event happened.
    pub fn time_ms(&self) -> u64 {
        use SchedulerEvent::*;
        match self {
            ApplicationStarted { time_ms, .. }
            | ExecutorAdded { time_ms, .. }
            | ExecutorRemoved { time_ms, .. }
            | ExecutorExcluded { time_ms, .. }
            | ExecutorIncluded { time_ms, .. }
            | JobStarted { time_ms, .. }
            | JobEnded { time_ms, .. }
            | StageSubmitted { time_ms, .. }
            | StageCompleted { time_ms, .. }
            | TaskStarted { time_ms, .. }
            | TaskEnded { time_ms, .. }
            | DatasetCached { time_ms, .. }
            | BlockCached { time_ms, .. }
            | BlockUncached { time_ms, .. }
            | DatasetUnpersisted { time_ms, .. }
            | TrainingPass { time_ms, .. }
            | TrainingEnded { time_ms, .. } => *time_ms,
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Appends events to `DIR/<app>.jsonl`, one JSON object a line. Writes are buffered; the
/// scheduler flushes whenever it has no event waiting and before every snapshot, so the
/// file is never behind a snapshot and a crash loses at most one burst of events.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl EventLog {
    /// Creates the log of application `app` under `dir` (made if missing).
    ///
    /// # Errors
    ///
    /// The directory cannot be made or the file created.
    pub fn create(dir: &Path, app: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{app}.jsonl"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Self {
            path,
            file: std::io::BufWriter::new(file),
        })
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event.
    ///
    /// # Errors
    ///
    /// The write failed (disk full, file removed).
    pub fn append(&mut self, event: &SchedulerEvent) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.file, event)?;
        self.file.write_all(b"\n")
    }

    /// Writes out what is buffered.
    ///
    /// # Errors
    ///
    /// The write failed.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Reads every event of a log written by [`EventLog`].
///
/// # Errors
///
/// The file cannot be read, or a line is not an event (the error names the line).
pub fn read_event_log(path: &Path) -> std::io::Result<Vec<SchedulerEvent>> {
    let text = std::fs::read_to_string(path)?;
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: line {}: not a scheduler event: {e}",
                    path.display(),
                    i + 1
                ),
            )
        })?;
        events.push(event);
    }
    Ok(events)
}
