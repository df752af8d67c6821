//! BlockReadExec: the leaf through which a plan fragment reads the blocks of a lineage dataset;
//! where the blocks come from (local cache, a peer, the driver's fetch) is the reader's business.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::stream::BoxStream;
use futures::{stream, StreamExt, TryStreamExt};

use crate::error::{EngineError, Result};
use crate::ids::{BlockId, DatasetId};
use crate::lineage::reads_only_blocks;
use crate::partition::Partition;

/// A block's batches in order, handed out as they are read (from memory, a spill file, or
/// a peer's stream), so a reader never needs a whole block at once.
pub type BlockBatches = BoxStream<'static, Result<RecordBatch>>;

/// The batches of a block held in memory (each a cheap clone sharing its buffers).
pub fn partition_batches(partition: Arc<Partition>) -> BlockBatches {
    let count = partition.batches().len();
    stream::iter((0..count).map(move |i| Ok(partition.batches()[i].clone()))).boxed()
}

/// Where a running plan gets the blocks its [`BlockReadExec`] leaves ask for.
///
/// The executor's reader looks in its own block manager first and fetches from the peer
/// named in the task's input locations otherwise; the driver's reader always fetches.
///
/// # Errors
///
/// A block that cannot be had is reported as [`EngineError::FetchFailed`] naming the block
/// and the executor that was expected to hold it, so the scheduler can recompute it.
#[async_trait]
pub trait BlockReader: Send + Sync + fmt::Debug {
    /// Starts reading the block; its batches follow as they are read.
    async fn read(&self, block: BlockId) -> Result<BlockBatches>;

    /// Somewhere to keep block `block` of a cached dataset, of `schema`, that was missing
    /// and is being computed from lineage inside the reading task, batch by batch as it
    /// streams through; `None` (the default) means it is not kept.
    fn keep(&self, _block: BlockId, _schema: SchemaRef) -> Option<Box<dyn BlockSink>> {
        None
    }

    /// Records that a missing cached block was computed from lineage inside the reading
    /// task; `read_source` says whether computing it read a source.
    fn note_computed(&self, _read_source: bool) {}

    /// Records that a cached block was found and read.
    fn note_cached_read(&self) {}
}

/// Where a block computed inline is kept as it streams through a task. Dropped before
/// [`BlockSink::finish`] (the read stopped early or failed), it keeps nothing.
pub trait BlockSink: Send {
    /// Keeps one more batch of the block.
    fn push(&mut self, batch: RecordBatch) -> Result<()>;

    /// The block is complete: store it.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// The [`BlockReader`] of a task, carried in its `SessionConfig` extensions.
#[derive(Debug, Clone)]
pub struct BlockReaderExtension(pub Arc<dyn BlockReader>);

/// A task context like `base` whose [`BlockReadExec`] leaves read through `reader`.
pub fn task_context_with_reader(
    base: &TaskContext,
    task_id: Option<String>,
    reader: Arc<dyn BlockReader>,
) -> TaskContext {
    let config = base
        .session_config()
        .clone()
        .with_extension(Arc::new(BlockReaderExtension(reader)));
    TaskContext::new(
        task_id,
        base.session_id(),
        config,
        base.scalar_functions().clone(),
        base.higher_order_functions().clone(),
        base.aggregate_functions().clone(),
        base.window_functions().clone(),
        base.runtime_env(),
    )
}

/// Reads partition *i* of a lineage dataset as output partition *i*.
///
/// A reader of a cached dataset carries a *fallback*: the dataset's own plan. When the
/// block is missing (never computed, evicted, or lost with its executor) the task computes
/// it from lineage right there, offers it to its executor's cache, and goes on, as Spark's
/// cached RDD partitions do.
#[derive(Debug, Clone)]
pub struct BlockReadExec {
    /// The dataset whose blocks are read.
    dataset: DatasetId,
    /// Properties of the plan that produced the blocks (ordering, partitioning).
    properties: Arc<PlanProperties>,
    /// Computes a missing block (cached datasets only).
    fallback: Option<Arc<dyn ExecutionPlan>>,
    /// For a shuffle: how many map partitions wrote reduce buckets.
    map_partitions: Option<usize>,
    /// For a grouped read: the parent partitions each output partition reads.
    groups: Option<Arc<Vec<Vec<u32>>>>,
}

/// How many shuffle blocks one reduce task fetches at once: enough to overlap the peers'
/// latency, few enough that a reduce task holds a bounded number of blocks in flight.
pub const SHUFFLE_FETCHES_IN_FLIGHT: usize = 4;

impl BlockReadExec {
    /// A reader of `dataset` whose blocks were produced by a plan with `properties`: the
    /// partitioning and ordering those blocks have carry over.
    pub fn new(dataset: DatasetId, properties: PlanProperties) -> Self {
        Self {
            dataset,
            properties: Arc::new(properties),
            fallback: None,
            map_partitions: None,
            groups: None,
        }
    }

    /// A reader whose output partition *j* is the concatenation of the blocks
    /// `groups[j]` of `dataset`, in order (a narrow dependency on a fixed set of parent
    /// partitions, as a tree reduction's merge step reads).
    pub fn grouped(dataset: DatasetId, schema: SchemaRef, groups: Vec<Vec<u32>>) -> Self {
        let mut read = Self::with_schema(dataset, schema, groups.len());
        read.groups = Some(Arc::new(groups));
        read
    }

    /// For a grouped read: the parent partitions each output partition reads.
    pub fn groups(&self) -> Option<&[Vec<u32>]> {
        self.groups.as_deref().map(Vec::as_slice)
    }

    /// The parent partitions output partition `partition` reads (for a shuffle reader:
    /// every map partition).
    pub fn inputs_of(&self, partition: usize) -> Vec<u32> {
        match (&self.groups, self.map_partitions) {
            (Some(groups), _) => groups.get(partition).cloned().unwrap_or_default(),
            (None, Some(maps)) => (0..maps as u32).collect(),
            (None, None) => vec![partition as u32],
        }
    }

    /// The same reader over a shuffle written by `map_partitions` map tasks: output
    /// partition *r* is the concatenation of reduce bucket *r* of every map partition.
    pub fn with_shuffle(mut self, map_partitions: usize) -> Self {
        self.map_partitions = Some(map_partitions);
        self
    }

    /// For a shuffle reader: the number of map partitions it reads buckets of.
    pub fn map_partitions(&self) -> Option<usize> {
        self.map_partitions
    }

    /// The same reader, computing missing blocks with `plan` (which must produce the
    /// dataset's partitions).
    pub fn with_fallback(mut self, plan: Arc<dyn ExecutionPlan>) -> Self {
        self.fallback = Some(plan);
        self
    }

    /// The plan that computes a missing block, if any.
    pub fn fallback(&self) -> Option<&Arc<dyn ExecutionPlan>> {
        self.fallback.as_ref()
    }

    /// A reader of `partitions` blocks of `dataset` with no known ordering.
    pub fn with_schema(dataset: DatasetId, schema: SchemaRef, partitions: usize) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self::new(dataset, properties)
    }

    /// The dataset read.
    pub fn dataset(&self) -> DatasetId {
        self.dataset
    }

    /// The number of blocks (= output partitions).
    pub fn partitions(&self) -> usize {
        self.properties.partitioning.partition_count()
    }
}

/// Streams reduce partition `reduce` of a shuffle: bucket `reduce` of every map partition,
/// in map order, with up to [`SHUFFLE_FETCHES_IN_FLIGHT`] fetches in flight.
fn shuffle_read(
    schema: SchemaRef,
    reader: Arc<dyn BlockReader>,
    dataset: DatasetId,
    maps: usize,
    reduce: u32,
) -> SendableRecordBatchStream {
    let batches = stream::iter(0..maps as u32)
        .map(move |map| {
            let reader = Arc::clone(&reader);
            async move {
                reader
                    .read(BlockId::shuffle(dataset, map, reduce))
                    .await
                    .map(|batches| batches.map_err(EngineError::into_datafusion))
                    .map_err(EngineError::into_datafusion)
            }
        })
        .buffered(SHUFFLE_FETCHES_IN_FLIGHT)
        .try_flatten();
    Box::pin(RecordBatchStreamAdapter::new(schema, batches.boxed()))
}

/// Computes a missing cached block from its dataset's plan, streaming its batches to the
/// reader while the reader's [`BlockSink`] (if it gives one) keeps a copy.
fn compute_from_lineage(
    reader: Arc<dyn BlockReader>,
    block: BlockId,
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) -> DfResult<BoxStream<'static, DfResult<RecordBatch>>> {
    reader.note_computed(!reads_only_blocks(&plan));
    let schema = plan.schema();
    let batches = plan.execute(block.partition as usize, context)?;
    let keeper = InlineCache(reader.keep(block, Arc::clone(&schema)));
    Ok(
        stream::unfold((batches, keeper), |(mut batches, mut keeper)| async move {
            match batches.next().await {
                Some(Ok(batch)) => {
                    keeper.keep(&batch);
                    Some((Ok(batch), (batches, keeper)))
                }
                Some(Err(e)) => Some((Err(e), (batches, keeper))),
                None => {
                    keeper.finish();
                    None
                }
            }
        })
        .boxed(),
    )
}

/// The copy of a block computed inline that is being kept for the cache, if any.
struct InlineCache(Option<Box<dyn BlockSink>>);

impl InlineCache {
    fn keep(&mut self, batch: &RecordBatch) {
        if let Some(sink) = &mut self.0 {
            if let Err(e) = sink.push(batch.clone()) {
                // The block streams on uncached and is recomputed when next needed.
                tracing::warn!(error = %e, "computed block not cached");
                self.0 = None;
            }
        }
    }

    fn finish(&mut self) {
        if let Some(sink) = self.0.take() {
            if let Err(e) = sink.finish() {
                tracing::warn!(error = %e, "computed block not cached");
            }
        }
    }
}

impl DisplayAs for BlockReadExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match self.map_partitions {
            Some(maps) => write!(
                f,
                "ShuffleReadExec: dataset={}, map_partitions={maps}, reduce_partitions={}",
                self.dataset.0,
                self.partitions()
            ),
            None => write!(
                f,
                "BlockReadExec: dataset={}, {}={}{}",
                self.dataset.0,
                if self.groups.is_some() {
                    "groups"
                } else {
                    "partitions"
                },
                self.partitions(),
                if self.fallback.is_some() {
                    ", cached"
                } else {
                    ""
                }
            ),
        }
    }
}

impl ExecutionPlan for BlockReadExec {
    fn name(&self) -> &str {
        "BlockReadExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "BlockReadExec is a leaf and takes no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let reader = context
            .session_config()
            .get_extension::<BlockReaderExtension>()
            .ok_or_else(|| {
                EngineError::Internal("task context carries no block reader".into())
                    .into_datafusion()
            })?;
        let index = u32::try_from(partition).map_err(|_| {
            EngineError::Internal(format!("partition index {partition} out of range"))
                .into_datafusion()
        })?;
        if let Some(maps) = self.map_partitions {
            return Ok(shuffle_read(
                self.schema(),
                reader.0.clone(),
                self.dataset,
                maps,
                index,
            ));
        }
        let inputs = match &self.groups {
            Some(groups) => groups.get(partition).cloned().ok_or_else(|| {
                EngineError::Internal(format!(
                    "grouped read of dataset {} has no output partition {partition}",
                    self.dataset
                ))
                .into_datafusion()
            })?,
            None => vec![index],
        };
        let dataset = self.dataset;
        let fallback = self.fallback.clone();
        let reader = reader.0.clone();
        // Nothing is fetched until the first batch is pulled; a group's blocks are read one
        // after the other.
        let batches = stream::iter(inputs)
            .then(move |p| {
                read_block(
                    Arc::clone(&reader),
                    BlockId::new(dataset, p),
                    fallback.clone(),
                    Arc::clone(&context),
                )
            })
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            batches.boxed(),
        )))
    }
}

/// Reads one block, computing it from lineage with `fallback` when it is a missing cached
/// block.
async fn read_block(
    reader: Arc<dyn BlockReader>,
    block: BlockId,
    fallback: Option<Arc<dyn ExecutionPlan>>,
    context: Arc<TaskContext>,
) -> DfResult<BoxStream<'static, DfResult<RecordBatch>>> {
    match (reader.read(block).await, fallback) {
        (Ok(batches), fallback) => {
            if fallback.is_some() {
                reader.note_cached_read();
            }
            Ok(batches.map_err(EngineError::into_datafusion).boxed())
        }
        (Err(EngineError::FetchFailed { .. }), Some(plan)) => {
            compute_from_lineage(reader, block, plan, context)
        }
        (Err(e), _) => Err(e.into_datafusion()),
    }
}
