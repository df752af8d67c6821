//! Tree aggregation: one partial result per partition, merged first on the executor that
//! holds them, then across executors in a tree of bounded fan-in, and last on the driver.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::physical_plan::ExecutionPlan;
use ember_engine::block_read::BlockReadExec;
use ember_engine::lineage::{Dataset, Persistence};
use ember_engine::{BlockId, DatasetId};

use crate::error::Result;
use crate::metrics::JobMetrics;
use crate::Driver;

/// Builds the plan that merges the partials its input reads (one output partition per
/// group of partials).
pub type MergePlan<'a> =
    dyn Fn(Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> + Send + Sync + 'a;

impl Driver {
    /// Computes `leaf` (whose partition *i* is the partial result of input partition *i*)
    /// and merges its partials with the plans `merge` builds, as one job:
    ///
    /// 1. each executor merges the partials it holds (no data moves), when it holds more
    ///    than one;
    /// 2. while more than `fan_in` partials remain, tasks merge groups of at most `fan_in`
    ///    of them, fetching their peers' partials;
    /// 3. the driver merges the last `fan_in` or fewer.
    ///
    /// Every level is a dataset of the lineage graph, so a partial lost with its executor
    /// is recomputed like any other block. `temporary` are datasets made for this job alone.
    ///
    /// # Errors
    ///
    /// As [`Driver::collect`].
    pub async fn tree_aggregate(
        self: &Arc<Self>,
        leaf: Dataset,
        temporary: Vec<Dataset>,
        merge: &MergePlan<'_>,
        fan_in: usize,
        description: &crate::JobDescription,
    ) -> Result<(Vec<RecordBatch>, JobMetrics)> {
        let leaf_id = leaf.id();
        let mut all = temporary;
        all.push(leaf);
        let mut job = self.new_job(all, description).await;
        let result = self.tree_in(&mut job, leaf_id, merge, fan_in.max(2)).await;
        self.end_job(&mut job, &result).await;
        result.map(|batches| (batches, job.metrics()))
    }

    async fn tree_in(
        self: &Arc<Self>,
        job: &mut crate::dag_scheduler::Job,
        leaf: DatasetId,
        merge: &MergePlan<'_>,
        fan_in: usize,
    ) -> Result<Vec<RecordBatch>> {
        self.materialize(job, leaf).await?;
        let schema = self.dataset(leaf)?.plan().schema();
        let mut current = leaf;
        let mut partials = self.dataset(leaf)?.partitions();
        job.book().metrics.tree_levels.push(partials);
        // Level 1: per executor, when some executor holds several partials.
        let mut by_executor: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for p in 0..partials as u32 {
            let holder = self
                .locations
                .get(BlockId::new(current, p))
                .map(|e| e.0)
                .unwrap_or_default();
            by_executor.entry(holder).or_default().push(p);
        }
        let per_executor: Vec<Vec<u32>> = by_executor.into_values().collect();
        if per_executor.len() < partials {
            (current, partials) = self
                .merge_level(job, current, &schema, per_executor, merge)
                .await?;
        }
        while partials > fan_in {
            (current, partials) = self
                .merge_level(job, current, &schema, chunks(partials, fan_in), merge)
                .await?;
        }
        let root = merge(Arc::new(BlockReadExec::grouped(
            current,
            schema,
            vec![(0..partials as u32).collect()],
        )))?;
        let batches = self.collect_in(job, root).await?;
        job.book().metrics.tree_levels.push(1);
        Ok(batches)
    }

    /// Merges the partials of `current` in `groups` on the executors: returns the new
    /// level's dataset and its number of partials.
    async fn merge_level(
        self: &Arc<Self>,
        job: &mut crate::dag_scheduler::Job,
        current: DatasetId,
        schema: &arrow::datatypes::SchemaRef,
        groups: Vec<Vec<u32>>,
        merge: &MergePlan<'_>,
    ) -> Result<(DatasetId, usize)> {
        let read = BlockReadExec::grouped(current, Arc::clone(schema), groups);
        let plan = merge(Arc::new(read))?;
        let dataset = Dataset::try_new(self.next_dataset_id(), plan, Persistence::Job)?;
        let id = dataset.id();
        let partials = dataset.partitions();
        self.register_dataset(dataset);
        job.temporary.push(id);
        self.materialize(job, id).await?;
        job.book().metrics.tree_levels.push(partials);
        Ok((id, partials))
    }
}

/// Partitions `0..n` in consecutive groups of at most `size`.
fn chunks(n: usize, size: usize) -> Vec<Vec<u32>> {
    (0..n as u32)
        .collect::<Vec<_>>()
        .chunks(size)
        .map(<[u32]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_cover_every_partition_once() {
        assert_eq!(chunks(5, 2), vec![vec![0, 1], vec![2, 3], vec![4]]);
        assert_eq!(chunks(2, 4), vec![vec![0, 1]]);
        assert!(chunks(0, 3).is_empty());
    }
}
