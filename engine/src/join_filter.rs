//! Join filters per task: the key bounds of a broadcast hash join's build side, handed to
//! the probe side's scan of the same task.
//!
//! DataFusion's planner gives a hash join a dynamic filter and pushes it into the probe
//! side's scan, where it prunes files, row groups and pages once the join has filled it in.
//! DataFusion fills it in only after every probe partition *of the same plan instance* has
//! reported its build side, but an Ember task runs one partition of its own decoded copy
//! of the stage: it would wait for reports that never come. Executors therefore run with
//! DataFusion's join filters off, and [`with_build_side_bounds`] puts a
//! [`BuildBoundsExec`] over the build side of every broadcast (`CollectLeft`) join whose
//! filter reached a scan. A broadcast join's build side is whole in every task, so its
//! bounds are right after one task has read it: the node fills the filter in as the build
//! side ends, which is before the join reads its first probe row.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{NullEquality, ScalarValue};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::{Accumulator, Operator};
use datafusion::physical_expr::expressions::{lit, BinaryExpr, DynamicFilterPhysicalExpr};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, RecordBatchStream,
    SendableRecordBatchStream,
};
use futures::{Stream, StreamExt};

use crate::block_read::BlockReadExec;
use crate::ids::DatasetId;
use crate::lineage::{block_dependencies, Dataset};

/// Puts a [`BuildBoundsExec`] over the build side of every broadcast hash join in `plan`
/// whose dynamic filter a scan on its probe side consumes. Joins that keep probe-side
/// nulls (null-equal or null-aware) are left alone, with their filter letting every row
/// through. The plan must be executed with DataFusion's own join filters off
/// (`enable_join_dynamic_filter_pushdown = false`), or its joins would wait for sibling
/// partitions.
pub fn with_build_side_bounds(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(join) = node.downcast_ref::<HashJoinExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(filter) = fillable_filter(join) else {
            return Ok(Transformed::no(node));
        };
        if join.left().downcast_ref::<BuildBoundsExec>().is_some()
            || !consumes(join.right(), filter.as_ref())?
        {
            return Ok(Transformed::no(node));
        }
        let (build_keys, probe_keys) = join
            .on()
            .iter()
            .map(|(l, r)| (Arc::clone(l), Arc::clone(r)))
            .unzip();
        let tap = Arc::new(BuildBoundsExec {
            input: Arc::clone(join.left()),
            build_keys,
            probe_keys,
            filter,
        });
        let right = Arc::clone(join.right());
        // The tap has its input's properties, so the join (and every node above) keeps its.
        let keep = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);
        Ok(Transformed::yes(
            Arc::clone(&node).replace_children(vec![tap, right], keep)?,
        ))
    })
    .map(|t| t.data)
}

/// The dynamic filter of `join` when its build side's bounds may fill it in: a broadcast
/// (`CollectLeft`) join that drops probe-side nulls (neither null-equal nor null-aware).
fn fillable_filter(join: &HashJoinExec) -> Option<Arc<dyn PhysicalExpr>> {
    let filter = join
        .dynamic_expressions_produced()
        .into_iter()
        .find(|e| e.is::<DynamicFilterPhysicalExpr>())?;
    (*join.partition_mode() == PartitionMode::CollectLeft
        && join.null_equality() == NullEquality::NullEqualsNothing
        && !join.null_aware)
        .then_some(filter)
}

/// A join filter that a stage's scan consumes while its join runs in a later stage (or in
/// the driver's final fragment): the filter crossed a stage boundary when DataFusion pushed
/// it down, so no task holds both the join's build side and the scan. When the join's
/// build side is a plain read (blocks of earlier stages, or files, under merges, filters
/// and projections), the driver reads it, fills the filter in and then runs the stage: the
/// scan prunes with the bounds as it would in one process. A build side that reads files
/// the driver cannot reach leaves the filter open.
#[derive(Debug, Clone)]
pub struct FilterInput {
    /// The join's build side: block or file reads under merges, filters and projections.
    pub build_side: Arc<dyn ExecutionPlan>,
    /// The join's build-side keys, over `build_side`'s schema.
    pub build_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The matching probe-side keys, in the filter's terms.
    pub probe_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The join's filter (a [`DynamicFilterPhysicalExpr`], shared with the scan).
    pub filter: Arc<dyn PhysicalExpr>,
}

impl FilterInput {
    /// The datasets the build side reads.
    pub fn build_datasets(&self) -> Vec<DatasetId> {
        block_dependencies(&self.build_side)
    }
}

/// The filter inputs of each of `stages` (same order): for every fillable join filter (see
/// [`FilterInput`]) of a join in another stage or in `root` whose build side is a plain
/// read of files or of datasets that do not depend on the consuming stage.
///
/// # Errors
///
/// A plan's expressions cannot be walked (a bug).
pub fn stage_filter_inputs(
    root: &Arc<dyn ExecutionPlan>,
    stages: &[Dataset],
) -> DfResult<Vec<Vec<FilterInput>>> {
    // (the stage holding the join, or None for the driver's fragment; the input)
    let mut joins: Vec<(Option<usize>, FilterInput)> = Vec::new();
    let owners = stages
        .iter()
        .map(|s| s.plan())
        .enumerate()
        .map(|(i, plan)| (Some(i), plan))
        .chain(std::iter::once((None, root)));
    for (owner, plan) in owners {
        plan.apply(|node| {
            if let Some(join) = node.downcast_ref::<HashJoinExec>() {
                if let Some(filter) = fillable_filter(join) {
                    if is_plain_read(join.left()) {
                        let (build_keys, probe_keys) = join
                            .on()
                            .iter()
                            .map(|(l, r)| (Arc::clone(l), Arc::clone(r)))
                            .unzip();
                        joins.push((
                            owner,
                            FilterInput {
                                build_side: Arc::clone(join.left()),
                                build_keys,
                                probe_keys,
                                filter,
                            },
                        ));
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
    }
    let mut inputs = vec![Vec::new(); stages.len()];
    for (owner, input) in joins {
        for (i, stage) in stages.iter().enumerate() {
            if owner == Some(i)
                || !consumes(stage.plan(), input.filter.as_ref())?
                || input
                    .build_datasets()
                    .iter()
                    .any(|d| depends_on(stages, *d, stage.id()))
            {
                continue;
            }
            inputs[i].push(input.clone());
        }
    }
    Ok(inputs)
}

/// Whether `plan` reads blocks or files under merges, filters and projections only: cheap
/// for the driver to read once (a broadcast build side is small).
fn is_plain_read(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if plan.is::<BlockReadExec>() || plan.is::<DataSourceExec>() {
        return true;
    }
    let passes = plan.is::<CoalescePartitionsExec>()
        || plan.is::<ProjectionExec>()
        || plan.is::<FilterExec>();
    passes && plan.children().into_iter().all(is_plain_read)
}

/// Whether dataset `id` is `target` or reads it, directly or through other `stages`.
fn depends_on(stages: &[Dataset], id: DatasetId, target: DatasetId) -> bool {
    if id == target {
        return true;
    }
    stages.iter().find(|s| s.id() == id).is_some_and(|s| {
        s.dependencies()
            .iter()
            .any(|d| depends_on(stages, *d, target))
    })
}

/// Whether an expression of some node under `plan` is (a view of) `filter`.
fn consumes(plan: &Arc<dyn ExecutionPlan>, filter: &dyn PhysicalExpr) -> DfResult<bool> {
    let Some(id) = filter.expression_id() else {
        return Ok(false);
    };
    plan.exists(|node| {
        let mut found = false;
        node.apply_expressions(&mut |root| {
            found = root.exists(|expr| Ok(expr.expression_id() == Some(id)))?;
            Ok(if found {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        })?;
        Ok(found)
    })
}

/// Passes a broadcast join's build side through unchanged, keeping the smallest and
/// largest value of each join key; when the build side ends it sets the join's dynamic
/// filter to `probe_key BETWEEN min AND max` for every key (nulls never match, so they
/// never pass). An empty build side leaves the filter as it was.
#[derive(Debug)]
pub struct BuildBoundsExec {
    input: Arc<dyn ExecutionPlan>,
    /// The join's build-side key expressions, over `input`'s schema.
    build_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The matching probe-side key expressions, in the filter's terms.
    probe_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The join's filter (a [`DynamicFilterPhysicalExpr`]).
    filter: Arc<dyn PhysicalExpr>,
}

impl DisplayAs for BuildBoundsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BuildBoundsExec: keys=[")?;
        for (i, key) in self.build_keys.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{key}")?;
        }
        write!(f, "]")
    }
}

impl ExecutionPlan for BuildBoundsExec {
    fn name(&self) -> &str {
        "BuildBoundsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        // The same properties object as the input's, so the join above keeps its own.
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        for key in &self.build_keys {
            if f(key)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(datafusion::error::DataFusionError::Internal(
                "BuildBoundsExec takes one child".into(),
            ));
        }
        Ok(Arc::new(BuildBoundsExec {
            input: children.remove(0),
            build_keys: self.build_keys.clone(),
            probe_keys: self.probe_keys.clone(),
            filter: Arc::clone(&self.filter),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        Ok(Box::pin(BoundsStream {
            input: self.input.execute(partition, context)?,
            bounds: BuildBounds::try_new(&self.build_keys, &self.input.schema())?,
            probe_keys: self.probe_keys.clone(),
            filter: Arc::clone(&self.filter),
            published: false,
        }))
    }
}

/// Smallest and largest value of one key expression (`None`: a type min/max cannot order,
/// so this key adds nothing to the filter).
struct KeyBounds {
    key: Arc<dyn PhysicalExpr>,
    acc: Option<(MinAccumulator, MaxAccumulator)>,
}

impl KeyBounds {
    fn try_new(key: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> DfResult<Self> {
        let mut data_type = key.data_type(schema)?;
        // Min and max read dictionaries but are set up with the value type.
        while let DataType::Dictionary(_, value) = data_type {
            data_type = *value;
        }
        let acc = MinAccumulator::try_new(&data_type)
            .and_then(|min| Ok((min, MaxAccumulator::try_new(&data_type)?)))
            .ok();
        Ok(Self {
            key: Arc::clone(key),
            acc,
        })
    }

    fn update(&mut self, batch: &RecordBatch) -> DfResult<()> {
        if let Some((min, max)) = &mut self.acc {
            let values = self.key.evaluate(batch)?.into_array(batch.num_rows())?;
            min.update_batch(std::slice::from_ref(&values))?;
            max.update_batch(std::slice::from_ref(&values))?;
        }
        Ok(())
    }

    /// `probe_key >= min AND probe_key <= max`, or `None` without non-null values.
    fn predicate(
        &mut self,
        probe_key: &Arc<dyn PhysicalExpr>,
    ) -> DfResult<Option<Arc<dyn PhysicalExpr>>> {
        let Some((min, max)) = &mut self.acc else {
            return Ok(None);
        };
        let (low, high) = (min.evaluate()?, max.evaluate()?);
        if low.is_null() || high.is_null() || is_nan(&low) || is_nan(&high) {
            return Ok(None);
        }
        let at_least: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::clone(probe_key),
            Operator::GtEq,
            lit(low),
        ));
        let at_most: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::clone(probe_key),
            Operator::LtEq,
            lit(high),
        ));
        Ok(Some(Arc::new(BinaryExpr::new(
            at_least,
            Operator::And,
            at_most,
        ))))
    }
}

/// NaN compares unlike any number, so a bound that is NaN cannot bound anything.
fn is_nan(value: &ScalarValue) -> bool {
    match value {
        ScalarValue::Float16(Some(v)) => v.is_nan(),
        ScalarValue::Float32(Some(v)) => v.is_nan(),
        ScalarValue::Float64(Some(v)) => v.is_nan(),
        _ => false,
    }
}

/// The smallest and largest value of each key of a join's build side, kept as its batches
/// go by, and the join filter they make.
pub struct BuildBounds {
    keys: Vec<KeyBounds>,
    rows: usize,
}

impl BuildBounds {
    /// Bounds of `build_keys`, expressions over `schema` (the build side's).
    ///
    /// # Errors
    ///
    /// A key's type cannot be computed from `schema`.
    pub fn try_new(build_keys: &[Arc<dyn PhysicalExpr>], schema: &SchemaRef) -> DfResult<Self> {
        Ok(Self {
            keys: build_keys
                .iter()
                .map(|key| KeyBounds::try_new(key, schema))
                .collect::<DfResult<_>>()?,
            rows: 0,
        })
    }

    /// Takes in one batch of the build side.
    ///
    /// # Errors
    ///
    /// A key cannot be evaluated on `batch`.
    pub fn update(&mut self, batch: &RecordBatch) -> DfResult<()> {
        self.rows += batch.num_rows();
        self.keys.iter_mut().try_for_each(|key| key.update(batch))
    }

    /// Sets `filter` (a join's [`DynamicFilterPhysicalExpr`]) to `probe_key BETWEEN min AND
    /// max` for every key with bounds. Returns whether it set anything: an empty build side
    /// or keys without orderable values leave the filter as it was.
    ///
    /// # Errors
    ///
    /// The filter rejects the predicate (a key it was not made over).
    pub fn publish(
        &mut self,
        filter: &Arc<dyn PhysicalExpr>,
        probe_keys: &[Arc<dyn PhysicalExpr>],
    ) -> DfResult<bool> {
        let Some(filter) = filter.downcast_ref::<DynamicFilterPhysicalExpr>() else {
            return Ok(false);
        };
        if self.rows == 0 {
            return Ok(false);
        }
        let mut predicate: Option<Arc<dyn PhysicalExpr>> = None;
        for (bounds, probe_key) in self.keys.iter_mut().zip(probe_keys) {
            if let Some(range) = bounds.predicate(probe_key)? {
                predicate = Some(match predicate {
                    Some(acc) => Arc::new(BinaryExpr::new(acc, Operator::And, range)),
                    None => range,
                });
            }
        }
        match predicate {
            Some(predicate) => filter.update(predicate).map(|()| true),
            None => Ok(false),
        }
    }
}

struct BoundsStream {
    input: SendableRecordBatchStream,
    bounds: BuildBounds,
    probe_keys: Vec<Arc<dyn PhysicalExpr>>,
    filter: Arc<dyn PhysicalExpr>,
    published: bool,
}

impl BoundsStream {
    /// Sets the filter from the bounds seen (once: the stream ends once).
    fn publish(&mut self) -> DfResult<()> {
        if std::mem::replace(&mut self.published, true) {
            return Ok(());
        }
        self.bounds.publish(&self.filter, &self.probe_keys)?;
        if let Some(filter) = self.filter.downcast_ref::<DynamicFilterPhysicalExpr>() {
            filter.mark_complete();
        }
        Ok(())
    }
}

impl Stream for BoundsStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.input.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(batch))) => match this.bounds.update(&batch) {
                Ok(()) => Poll::Ready(Some(Ok(batch))),
                Err(e) => Poll::Ready(Some(Err(e))),
            },
            Poll::Ready(None) => match this.publish() {
                Ok(()) => Poll::Ready(None),
                Err(e) => Poll::Ready(Some(Err(e))),
            },
            other => other,
        }
    }
}

impl RecordBatchStream for BoundsStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan_codec::{decode_plan, encode_plan};
    use bytes::Bytes;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::physical_plan::{collect, displayable, ExecutionPlanProperties};
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    use futures::TryStreamExt;

    /// Writes `keys` (and `value = key * 10`) as Parquet in row groups of 1,000 rows.
    fn write_table(path: &std::path::Path, keys: impl Iterator<Item = i64>) {
        let keys: Vec<i64> = keys.collect();
        let values: Vec<i64> = keys.iter().map(|k| k * 10).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(keys)),
                Arc::new(Int64Array::from(values)),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1_000))
            .build();
        let file = std::fs::File::create(path).unwrap();
        let mut writer = ArrowWriter::try_new(file, schema, Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    /// Planning with join filters on, as Ember's sessions do.
    fn planning_context() -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(2);
        config
            .options_mut()
            .optimizer
            .enable_join_dynamic_filter_pushdown = true;
        SessionContext::new_with_config(config)
    }

    /// Executing with DataFusion's own join filters off, as executors do.
    fn task_context() -> Arc<TaskContext> {
        let mut config = SessionConfig::new().with_target_partitions(2);
        config
            .options_mut()
            .optimizer
            .enable_join_dynamic_filter_pushdown = false;
        // As on executors: a partition reads only its own files.
        config
            .options_mut()
            .execution
            .enable_file_stream_work_stealing = false;
        SessionContext::new_with_config(config).task_ctx()
    }

    /// Rows the probe side's scan (the one reading `fact`) produced.
    fn probe_rows_scanned(plan: &Arc<dyn ExecutionPlan>) -> usize {
        let mut rows = 0;
        plan.apply(|node| {
            if node.downcast_ref::<DataSourceExec>().is_some()
                && displayable(node.as_ref())
                    .one_line()
                    .to_string()
                    .contains("fact")
            {
                rows += node.metrics().and_then(|m| m.output_rows()).unwrap_or(0);
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        rows
    }

    /// Writes `fact` (one file per key range, so one scan partition each) and `dim`, plans
    /// `sql` over them with join filters on and returns the encoded plan.
    async fn encoded_plan(
        dir: &std::path::Path,
        fact: &[std::ops::Range<i64>],
        dim: std::ops::Range<i64>,
        sql: &str,
    ) -> Bytes {
        let fact_dir = dir.join("fact");
        std::fs::create_dir(&fact_dir).unwrap();
        for (i, keys) in fact.iter().enumerate() {
            write_table(&fact_dir.join(format!("{i}.parquet")), keys.clone());
        }
        let dim_file = dir.join("dim.parquet");
        write_table(&dim_file, dim);
        let ctx = planning_context();
        for (name, path) in [("fact", &fact_dir), ("dim", &dim_file)] {
            ctx.register_parquet(name, path.to_str().unwrap(), ParquetReadOptions::default())
                .await
                .unwrap();
        }
        let planned = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let shown = displayable(planned.as_ref()).indent(false).to_string();
        assert!(shown.contains("mode=CollectLeft"), "{shown}");
        assert!(shown.contains("DynamicFilter"), "{shown}");
        encode_plan(planned).unwrap()
    }

    #[tokio::test]
    async fn each_task_prunes_the_probe_scan_to_the_build_sides_key_range() {
        let dir = tempfile::tempdir().unwrap();
        // Two files, so the probe side has two partitions (two tasks).
        let bytes = encoded_plan(
            dir.path(),
            &[0..4_000, 4_000..8_000],
            2_100..2_150,
            "SELECT f.k, f.v FROM dim d JOIN fact f ON d.k = f.k",
        )
        .await;

        // Every partition from its own decoded copy of the plan, as tasks run them.
        let task = task_context();
        let partitions = decode_plan(&bytes, &task)
            .unwrap()
            .output_partitioning()
            .partition_count();
        assert!(partitions > 1, "the probe scan is split: {partitions}");
        let (mut rows, mut scanned) = (0, 0);
        for partition in 0..partitions {
            let plan = with_build_side_bounds(decode_plan(&bytes, &task).unwrap()).unwrap();
            let shown = displayable(plan.as_ref()).indent(false).to_string();
            assert!(shown.contains("BuildBoundsExec"), "{shown}");
            let batches: Vec<RecordBatch> = plan
                .execute(partition, Arc::clone(&task))
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
            scanned += probe_rows_scanned(&plan);
            let shown = displayable(plan.as_ref()).indent(false).to_string();
            assert!(
                shown.contains("k@0 >= 2100 AND k@0 <= 2149"),
                "the scan's filter holds the build side's bounds: {shown}"
            );
        }
        assert_eq!(rows, 50, "every build key matches one probe row");
        // 8 row groups of 1,000 keys: only the one holding 2,100-2,149 is read.
        assert_eq!(scanned, 1_000, "row groups outside the bounds are skipped");
    }

    #[tokio::test]
    async fn an_empty_build_side_leaves_the_filter_open_and_the_answer_empty() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encoded_plan(
            dir.path(),
            std::slice::from_ref(&(0..3_000)),
            0..10,
            "SELECT f.k FROM dim d JOIN fact f ON d.k = f.k WHERE d.v < 0",
        )
        .await;
        let task = task_context();
        let plan = with_build_side_bounds(decode_plan(&bytes, &task).unwrap()).unwrap();
        let batches = collect(plan, task).await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    }
}
