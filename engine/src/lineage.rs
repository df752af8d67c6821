//! Lineage: datasets (Ember's resilient partitioned collections) and the cutting of a
//! DataFusion physical plan into them at exchange boundaries. Owns no scheduling state.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    replace_children_if_necessary, ExecutionPlan, ExecutionPlanProperties,
};

use crate::block_read::BlockReadExec;
use crate::error::Result;
use crate::ids::DatasetId;
use crate::plan_codec::encode_plan;

/// How long a dataset's blocks are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Kept in executors' block managers until `unpersist`, evictable under memory pressure
    /// (an evicted or lost block is recomputed from lineage on next use).
    Cached,
    /// An intermediate result: removed when the job that needed it ends.
    Job,
}

/// A node of the lineage graph: a plan fragment that computes partition *i* of the dataset
/// from source splits and from the blocks of its dependencies.
///
/// # Determinism
///
/// Recomputing a partition must give the same rows as the first computation: the plan is
/// fixed when the dataset is made (file splits included) and only re-executed afterwards.
#[derive(Debug)]
pub struct Dataset {
    id: DatasetId,
    plan: Arc<dyn ExecutionPlan>,
    encoded: Bytes,
    partitions: usize,
    dependencies: Vec<DatasetId>,
    reads_source: bool,
    persistence: Persistence,
}

impl Dataset {
    /// Makes a dataset of `plan`, which must contain no exchange that was not already cut
    /// (see [`cut_stages`]). Fails if the plan cannot be sent to executors.
    pub fn try_new(
        id: DatasetId,
        plan: Arc<dyn ExecutionPlan>,
        persistence: Persistence,
    ) -> Result<Self> {
        let encoded = encode_plan(Arc::clone(&plan))?;
        let dependencies = block_dependencies(&plan);
        let mut reads_source = false;
        plan.apply(|node| {
            reads_source |= node.is::<DataSourceExec>();
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(Self {
            id,
            partitions: plan.output_partitioning().partition_count(),
            plan,
            encoded,
            dependencies,
            reads_source,
            persistence,
        })
    }

    /// The dataset's id.
    pub fn id(&self) -> DatasetId {
        self.id
    }

    /// The plan fragment.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }

    /// The plan fragment, encoded once for every task that computes a partition of it.
    pub fn encoded_plan(&self) -> &Bytes {
        &self.encoded
    }

    /// Number of partitions (= blocks).
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The datasets whose blocks this one reads.
    pub fn dependencies(&self) -> &[DatasetId] {
        &self.dependencies
    }

    /// Whether computing a partition reads a source (file or in-memory scan).
    pub fn reads_source(&self) -> bool {
        self.reads_source
    }

    /// How long its blocks are kept.
    pub fn persistence(&self) -> Persistence {
        self.persistence
    }

    /// Whether partition *i* reads only partition *i* of `dependency` (a narrow dependency),
    /// so the executor holding that block is the best place to compute it.
    pub fn is_narrow_on(&self, dependency: &Dataset) -> bool {
        dependency.partitions == self.partitions && self.dependencies.contains(&dependency.id)
    }
}

/// Whether `plan` moves rows between partitions, so that its input must be a separate stage.
pub fn is_exchange(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<CoalescePartitionsExec>()
        || plan.is::<SortPreservingMergeExec>()
        || plan.is::<RepartitionExec>()
}

/// Cuts `plan` below every exchange: each exchange's input becomes a new job-scoped dataset
/// (returned in dependency order, inputs first) and is replaced by a [`BlockReadExec`] of it.
/// `next_id` hands out dataset ids.
pub fn cut_stages(
    plan: Arc<dyn ExecutionPlan>,
    next_id: &mut dyn FnMut() -> DatasetId,
    stages: &mut Vec<Dataset>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    if children.is_empty() {
        return Ok(plan);
    }
    let exchange = is_exchange(plan.as_ref());
    let mut new_children = Vec::with_capacity(children.len());
    for child in children {
        let child = cut_stages(child, next_id, stages)?;
        if exchange && !child.is::<BlockReadExec>() {
            new_children.push(stage_of(child, next_id, stages, Persistence::Job)?);
        } else {
            new_children.push(child);
        }
    }
    Ok(replace_children_if_necessary(plan, new_children)?)
}

/// Makes `plan` (already cut) a dataset and returns the leaf that reads it.
pub fn stage_of(
    plan: Arc<dyn ExecutionPlan>,
    next_id: &mut dyn FnMut() -> DatasetId,
    stages: &mut Vec<Dataset>,
    persistence: Persistence,
) -> Result<Arc<dyn ExecutionPlan>> {
    let id = next_id();
    let properties = plan.properties().as_ref().clone();
    stages.push(Dataset::try_new(id, plan, persistence)?);
    Ok(Arc::new(BlockReadExec::new(id, properties)))
}

/// The datasets whose blocks `plan`'s [`BlockReadExec`] leaves read, in plan order.
pub fn block_dependencies(plan: &Arc<dyn ExecutionPlan>) -> Vec<DatasetId> {
    let mut dependencies = Vec::new();
    // The closure never fails, so neither does the walk.
    let _ = plan.apply(|node| {
        if let Some(read) = node.downcast_ref::<BlockReadExec>() {
            if !dependencies.contains(&read.dataset()) {
                dependencies.push(read.dataset());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    dependencies
}

/// Every dataset whose blocks `plan` may read, including through the fallback plans of
/// cached readers.
pub fn all_block_reads(plan: &Arc<dyn ExecutionPlan>) -> Vec<DatasetId> {
    let mut found = Vec::new();
    let mut pending = vec![Arc::clone(plan)];
    while let Some(p) = pending.pop() {
        // The closure never fails, so neither does the walk.
        let _ = p.apply(|node| {
            if let Some(read) = node.downcast_ref::<BlockReadExec>() {
                if !found.contains(&read.dataset()) {
                    found.push(read.dataset());
                }
                if let Some(fallback) = read.fallback() {
                    pending.push(Arc::clone(fallback));
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    found
}

/// Whether every leaf of `plan` reads blocks, so it can run wherever blocks can be fetched
/// (the driver runs such a final fragment itself).
pub fn reads_only_blocks(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut only_blocks = true;
    // The closure never fails, so neither does the walk.
    let _ = plan.apply(|node| {
        if node.children().is_empty() && !node.is::<BlockReadExec>() {
            only_blocks = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    only_blocks
}
