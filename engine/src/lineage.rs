//! Lineage: datasets (Ember's resilient partitioned collections) and the cutting of a
//! DataFusion physical plan into them at exchange boundaries. Owns no scheduling state.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::JoinType;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    replace_children_if_necessary, ExecutionPlan, ExecutionPlanProperties, Partitioning,
};

use crate::block_read::BlockReadExec;
use crate::error::Result;
use crate::ids::DatasetId;
use crate::join_filter::FilterInput;

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
    partitions: usize,
    dependencies: Vec<DatasetId>,
    reads_source: bool,
    persistence: Persistence,
    /// For a shuffle map dataset: the number of reduce partitions each map partition's
    /// output is split into.
    reduce_partitions: Option<usize>,
    /// Join filters its scans consume that the driver fills in before it runs.
    filter_inputs: Vec<FilterInput>,
}

impl Dataset {
    /// Makes a dataset of `plan`, which must contain no exchange that was not already cut
    /// (see [`cut_stages`]). The plan is encoded for executors per stage, when the driver
    /// has given its cached inputs their lineage fallbacks.
    pub fn try_new(
        id: DatasetId,
        plan: Arc<dyn ExecutionPlan>,
        persistence: Persistence,
    ) -> Result<Self> {
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
            dependencies,
            reads_source,
            persistence,
            reduce_partitions: None,
            filter_inputs: Vec::new(),
        })
    }

    /// Makes the map side of a shuffle: `plan` is a repartition whose input partition *m*
    /// is computed by map task *m* and split into one block per reduce partition.
    pub fn try_new_shuffle(
        id: DatasetId,
        plan: Arc<dyn ExecutionPlan>,
        persistence: Persistence,
    ) -> Result<Self> {
        let Some(repartition) = shuffle_exchange(plan.as_ref()) else {
            return Err(crate::error::EngineError::Internal(format!(
                "a shuffle map dataset needs a hash or round-robin repartition at its root, \
                 not {}",
                plan.name()
            )));
        };
        let maps = repartition.input().output_partitioning().partition_count();
        let reduces = repartition.partitioning().partition_count();
        let mut dataset = Self::try_new(id, plan, persistence)?;
        dataset.partitions = maps;
        dataset.reduce_partitions = Some(reduces);
        Ok(dataset)
    }

    /// For a shuffle map dataset: the number of reduce partitions.
    pub fn reduce_partitions(&self) -> Option<usize> {
        self.reduce_partitions
    }

    /// Join filters its scans consume whose joins run in later stages: the driver fills
    /// them in from the joins' build sides before this dataset's stage runs.
    pub fn filter_inputs(&self) -> &[FilterInput] {
        &self.filter_inputs
    }

    /// Sets [`Dataset::filter_inputs`] (see `join_filter::stage_filter_inputs`).
    pub fn set_filter_inputs(&mut self, inputs: Vec<FilterInput>) {
        self.filter_inputs = inputs;
    }

    /// The dataset's id.
    pub fn id(&self) -> DatasetId {
        self.id
    }

    /// The plan fragment.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
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
        dependency.reduce_partitions.is_none()
            && dependency.partitions == self.partitions
            && self.dependencies.contains(&dependency.id)
    }
}

/// Whether `plan` moves rows between partitions, so that its input must be a separate stage.
pub fn is_exchange(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<CoalescePartitionsExec>()
        || plan.is::<SortPreservingMergeExec>()
        || plan.is::<RepartitionExec>()
}

/// The repartition `plan` is, if Ember runs it as a shuffle: hash or round-robin, without
/// order preservation. (An order-preserving repartition reads its input's blocks whole in
/// every output partition and merges them, which keeps the input's order.)
pub fn shuffle_exchange(plan: &dyn ExecutionPlan) -> Option<&RepartitionExec> {
    let repartition = plan.downcast_ref::<RepartitionExec>()?;
    let shuffles = matches!(
        repartition.partitioning(),
        Partitioning::Hash(..) | Partitioning::RoundRobinBatch(_)
    );
    (shuffles && !repartition.preserve_order()).then_some(repartition)
}

/// Cuts `plan` below every exchange: each exchange's input becomes a new job-scoped dataset
/// (returned in dependency order, inputs first) and is replaced by a [`BlockReadExec`] of it.
/// A hash or round-robin repartition becomes a shuffle: its map side (the repartition over
/// its input) is the new dataset, and the repartition itself is replaced by a shuffle reader.
/// `next_id` hands out dataset ids.
pub fn cut_stages(
    plan: Arc<dyn ExecutionPlan>,
    next_id: &mut dyn FnMut() -> DatasetId,
    stages: &mut Vec<Dataset>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = one_partition_per_task(plan)?;
    if let Some(repartition) = shuffle_exchange(plan.as_ref()) {
        let input = cut_stages(Arc::clone(repartition.input()), next_id, stages)?;
        let maps = input.output_partitioning().partition_count();
        let properties = plan.properties().as_ref().clone();
        let map_side = replace_children_if_necessary(Arc::clone(&plan), vec![input])?;
        let id = next_id();
        stages.push(Dataset::try_new_shuffle(id, map_side, Persistence::Job)?);
        return Ok(Arc::new(
            BlockReadExec::new(id, properties).with_shuffle(maps),
        ));
    }
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

/// Whether a join of `join_type` that collects its left side emits left rows when the
/// *last* probe partition finishes (unmatched or matched-once rows), which only works when
/// every probe partition runs against the same in-memory build side.
fn emits_build_rows_at_end(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Left
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
            | JoinType::Full
    )
}

/// Rewrites an operator that shares state between the partitions of one plan instance so
/// that it stays correct when each partition runs in its own task, from its own copy of the
/// plan.
///
/// A hash join that collects its left side and emits left rows at the end (left, full,
/// semi, anti and mark joins) counts down its probe partitions in memory; in Ember each
/// task would think it was the last one, or none would. Such a join becomes a partitioned
/// hash join over a shuffle of both sides on the join keys (its output partition count is
/// unchanged). A null-aware anti join (`NOT IN`) must see every probe row for its null
/// check, so its probe side is merged into one partition instead, as is the probe side of
/// such a nested-loop join.
pub fn one_partition_per_task(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        let probes = join.right.output_partitioning().partition_count();
        if join.mode != PartitionMode::CollectLeft
            || !emits_build_rows_at_end(join.join_type)
            || probes <= 1
        {
            return Ok(plan);
        }
        if join.null_aware {
            let right: Arc<dyn ExecutionPlan> =
                Arc::new(CoalescePartitionsExec::new(Arc::clone(&join.right)));
            return Ok(join
                .builder()
                .with_new_children(vec![Arc::clone(&join.left), right])?
                .recompute_properties()
                .build_exec()?);
        }
        let left_input = match join.left.downcast_ref::<CoalescePartitionsExec>() {
            Some(coalesce) => Arc::clone(coalesce.input()),
            None => Arc::clone(&join.left),
        };
        let (left_keys, right_keys): (Vec<_>, Vec<_>) = join
            .on
            .iter()
            .map(|(l, r)| (Arc::clone(l), Arc::clone(r)))
            .unzip();
        let left: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
            left_input,
            Partitioning::Hash(left_keys, probes),
        )?);
        let right: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
            Arc::clone(&join.right),
            Partitioning::Hash(right_keys, probes),
        )?);
        return Ok(join
            .builder()
            .with_partition_mode(PartitionMode::Partitioned)
            .with_new_children(vec![left, right])?
            .recompute_properties()
            .build_exec()?);
    }
    if let Some(join) = plan.downcast_ref::<NestedLoopJoinExec>() {
        if emits_build_rows_at_end(*join.join_type())
            && join.right().output_partitioning().partition_count() > 1
        {
            let right: Arc<dyn ExecutionPlan> =
                Arc::new(CoalescePartitionsExec::new(Arc::clone(join.right())));
            return Ok(replace_children_if_necessary(
                Arc::clone(&plan),
                vec![Arc::clone(join.left()), right],
            )?);
        }
    }
    Ok(plan)
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

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// Plans `sql` over `t(k, v)`, a table of three in-memory partitions.
    async fn physical(sql: &str, partitions: usize) -> Arc<dyn ExecutionPlan> {
        physical_with(sql, partitions, false).await
    }

    /// Like [`physical`], with DataFusion's hash repartitioning of aggregates on or off.
    async fn physical_with(
        sql: &str,
        partitions: usize,
        repartition: bool,
    ) -> Arc<dyn ExecutionPlan> {
        use arrow::array::{Float64Array, Int32Array};
        use arrow::datatypes::{DataType, Field, Schema};
        use arrow::record_batch::RecordBatch;
        let config = datafusion::prelude::SessionConfig::new()
            .with_target_partitions(partitions)
            .with_repartition_aggregations(repartition);
        let ctx = SessionContext::new_with_config(config);
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("v", DataType::Float64, false),
        ]));
        let part = |k: i32| {
            vec![RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int32Array::from(vec![k, k + 1])),
                    Arc::new(Float64Array::from(vec![1.0, 2.0])),
                ],
            )
            .expect("batch")]
        };
        let table = datafusion::datasource::MemTable::try_new(
            Arc::clone(&schema),
            vec![part(1), part(2), part(3)],
        )
        .expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        let df = ctx.sql(sql).await.expect("plan");
        df.create_physical_plan().await.expect("physical")
    }

    /// Cuts `plan` with dataset ids counting up from 1.
    fn cut(plan: &Arc<dyn ExecutionPlan>) -> (Arc<dyn ExecutionPlan>, Vec<Dataset>) {
        let mut next = 0u64;
        let mut ids = || {
            next += 1;
            DatasetId(next)
        };
        let mut stages = Vec::new();
        let root = cut_stages(Arc::clone(plan), &mut ids, &mut stages).expect("cut");
        (root, stages)
    }

    #[tokio::test]
    async fn cuts_below_every_exchange_and_leaves_a_block_reading_root() {
        let plan = physical("SELECT k, sum(v) FROM t GROUP BY k ORDER BY k", 4).await;
        let (root, stages) = cut(&plan);
        assert!(
            !stages.is_empty(),
            "{}",
            displayable(plan.as_ref()).indent(true)
        );
        // Stages come inputs first: each depends only on earlier ones.
        for (i, stage) in stages.iter().enumerate() {
            for dep in stage.dependencies() {
                assert!(
                    stages[..i].iter().any(|s| s.id() == *dep),
                    "stage {i} reads a later stage"
                );
            }
            // A shuffle map stage has its repartition at the root and no other exchange.
            let shuffle_root = stage.reduce_partitions().is_some();
            let mut inner_exchange = false;
            let _ = stage.plan().apply(|n| {
                let is_root = Arc::ptr_eq(n, stage.plan());
                inner_exchange |= is_exchange(n.as_ref()) && !(shuffle_root && is_root);
                Ok(TreeNodeRecursion::Continue)
            });
            assert!(!inner_exchange, "an exchange left inside a stage");
        }
        assert!(
            reads_only_blocks(&root),
            "{}",
            displayable(root.as_ref()).indent(true)
        );
        assert_eq!(
            block_dependencies(&root),
            vec![stages.last().expect("a stage").id()]
        );
    }

    #[tokio::test]
    async fn a_hash_repartition_becomes_a_shuffle_between_two_stages() {
        let plan = physical_with("SELECT k, sum(v) FROM t GROUP BY k", 4, true).await;
        let (root, stages) = cut(&plan);
        let shuffles: Vec<&Dataset> = stages
            .iter()
            .filter(|s| s.reduce_partitions().is_some())
            .collect();
        assert_eq!(
            shuffles.len(),
            1,
            "{}",
            displayable(plan.as_ref()).indent(true)
        );
        let map = shuffles[0];
        assert_eq!(map.partitions(), 3, "one map task per input partition");
        assert_eq!(map.reduce_partitions(), Some(4));
        assert!(map.reads_source());
        // The reduce side reads the shuffle through a shuffle reader of 4 partitions.
        let mut reader = None;
        let _ = root.apply(|n| {
            if let Some(read) = n.downcast_ref::<BlockReadExec>() {
                reader = Some((read.dataset(), read.map_partitions(), read.partitions()));
            }
            Ok(TreeNodeRecursion::Continue)
        });
        assert_eq!(reader, Some((map.id(), Some(3), 4)));
        assert_eq!(root.output_partitioning().partition_count(), 4);
        // A reduce-side dataset is not narrow on its shuffle input, even with equal counts.
        let reduce = Dataset::try_new(DatasetId(99), root, Persistence::Job).expect("dataset");
        assert!(!reduce.is_narrow_on(map));
    }

    #[tokio::test]
    async fn a_plan_without_exchanges_is_left_whole() {
        let plan = physical("SELECT k * 2 FROM t WHERE v > 1", 1).await;
        let mut stages = Vec::new();
        let root = cut_stages(Arc::clone(&plan), &mut || DatasetId(1), &mut stages).expect("cut");
        assert!(stages.is_empty());
        assert!(!reads_only_blocks(&root));
        let dataset = Dataset::try_new(DatasetId(9), root, Persistence::Job).expect("dataset");
        assert!(dataset.reads_source());
        assert!(dataset.dependencies().is_empty());
        assert_eq!(dataset.partitions(), 3, "one per in-memory partition");
    }
}
