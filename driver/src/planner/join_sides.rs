//! Build sides chosen by what is known: a hash join collects the side whose size its scans
//! bound, not a side whose size is a join's estimate.
//!
//! DataFusion picks a hash join's build side (and whether to broadcast it) from its
//! inputs' estimated statistics. A scan's row count comes from file metadata and bounds
//! everything above it but joins; a join's output estimate is a guess that can be off by
//! orders of magnitude (TPC-DS q72: 18,000 rows estimated, 45 million produced). Broadcasting
//! such a side costs a single process memory; it costs Ember more, because a broadcast
//! build side is a stage of its own, written whole to blocks and read whole by every task
//! of the next stage. [`BoundedBuildSide`] runs right after DataFusion's join selection and
//! swaps a hash join whose build side holds a join while its probe side holds none and is
//! bounded below a limit: the bounded side is broadcast and the join's output streams on
//! through the probe side, in the same stage.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::JoinType;
use datafusion::config::ConfigOptions;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DfResult;
use datafusion::physical_optimizer::join_selection::JoinSelection;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PartitionMode, SortMergeJoinExec,
    SymmetricHashJoinExec,
};
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;

/// How many times the session's broadcast threshold
/// (`hash_join_single_partition_threshold`) a bounded side may reach and still be
/// broadcast in place of a side of unknown size.
pub const BOUNDED_BUILD_FACTOR: usize = 16;

/// Bytes assumed per value of a variable-width column (strings, binary, lists) when a
/// side's size is bounded from its row count.
const VARIABLE_WIDTH_BYTES: usize = 32;

/// The physical optimizer rule of this module (see the module's documentation).
#[derive(Debug, Default)]
pub struct BoundedBuildSide;

impl PhysicalOptimizerRule for BoundedBuildSide {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let limit = config
            .optimizer
            .hash_join_single_partition_threshold
            .saturating_mul(BOUNDED_BUILD_FACTOR);
        if limit == 0 {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if !swaps_safely(join)
                || !contains_join(join.left())?
                || contains_join(join.right())?
                || bound_bytes(join.right()).is_none_or(|bytes| bytes > limit)
            {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(
                join.swap_inputs(PartitionMode::CollectLeft)?,
            ))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "ember_bounded_build_side"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// DataFusion's physical optimizer rules with Ember's: [`BoundedBuildSide`] right after
/// its join selection (before distribution is enforced and join filters are created) and,
/// with `key_range_scans`, [`KeyRangeScans`](super::key_ranges::KeyRangeScans) right
/// before distribution is enforced.
pub fn physical_optimizer_rules(
    key_range_scans: bool,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
    let join_selection = JoinSelection::new();
    let at = rules
        .iter()
        .position(|r| r.name() == join_selection.name())
        .map_or(0, |i| i + 1);
    rules.insert(at, Arc::new(BoundedBuildSide));
    if key_range_scans {
        let at = rules
            .iter()
            .position(|r| r.name() == ENSURE_REQUIREMENTS)
            .unwrap_or(at + 1);
        rules.insert(at, Arc::new(super::key_ranges::KeyRangeScans));
    }
    rules
}

/// The name of DataFusion's rule that enforces distributions and orderings.
const ENSURE_REQUIREMENTS: &str = "EnsureRequirements";

/// Whether `join`, with its sides swapped and its new build side collected whole into
/// every task, still answers right: only probe-side rows may be emitted after the swap (a
/// collected side's unmatched rows would be emitted once per task), and DataFusion must
/// not have given it a join filter yet.
fn swaps_safely(join: &HashJoinExec) -> bool {
    matches!(
        join.join_type,
        JoinType::Inner | JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti
    ) && !join.null_aware
        && join.dynamic_expressions_produced().is_empty()
}

/// Whether `plan` holds a join anywhere.
pub(crate) fn contains_join(plan: &Arc<dyn ExecutionPlan>) -> DfResult<bool> {
    plan.exists(|node| {
        Ok(node.is::<HashJoinExec>()
            || node.is::<SortMergeJoinExec>()
            || node.is::<NestedLoopJoinExec>()
            || node.is::<CrossJoinExec>()
            || node.is::<SymmetricHashJoinExec>())
    })
}

/// An upper bound of the bytes `plan` produces: the row counts of the scans below it
/// (file metadata; filters, aggregates and limits only remove rows) times the width of
/// `plan`'s own rows. `None` where a node could add rows (a join) or is not known here.
pub(crate) fn bound_bytes(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    bound_rows(plan)?.checked_mul(row_width(&plan.schema()))
}

fn bound_rows(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    if plan.is::<DataSourceExec>() {
        let stats = StatisticsContext::new()
            .compute(plan.as_ref(), &StatisticsArgs::new())
            .ok()?;
        return match stats.num_rows {
            Precision::Exact(n) | Precision::Inexact(n) => Some(n),
            Precision::Absent => None,
        };
    }
    if plan.is::<UnionExec>() {
        return plan
            .children()
            .into_iter()
            .try_fold(0usize, |sum, child| sum.checked_add(bound_rows(child)?));
    }
    let passes_rows_through = plan.is::<FilterExec>()
        || plan.is::<ProjectionExec>()
        || plan.is::<CoalescePartitionsExec>()
        || plan.is::<RepartitionExec>()
        || plan.is::<SortExec>()
        || plan.is::<AggregateExec>()
        || plan.is::<GlobalLimitExec>()
        || plan.is::<LocalLimitExec>();
    match plan.children().as_slice() {
        [child] if passes_rows_through => bound_rows(child),
        _ => None,
    }
}

pub(crate) fn row_width(schema: &Schema) -> usize {
    schema
        .fields()
        .iter()
        .map(|f| {
            f.data_type()
                .primitive_width()
                .unwrap_or(VARIABLE_WIDTH_BYTES)
        })
        .sum::<usize>()
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::common::NullEquality;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::displayable;

    /// A scan of `rows` rows of one `Int64` column `name`.
    fn scan(name: &str, rows: i64) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap();
        MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None).unwrap()
    }

    fn join(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        left_key: &str,
        right_key: &str,
        join_type: JoinType,
    ) -> Arc<dyn ExecutionPlan> {
        let on = vec![(
            Arc::new(Column::new_with_schema(left_key, &left.schema()).unwrap()) as _,
            Arc::new(Column::new_with_schema(right_key, &right.schema()).unwrap()) as _,
        )];
        Arc::new(
            HashJoinExec::try_new(
                left,
                right,
                on,
                None,
                &join_type,
                None,
                PartitionMode::CollectLeft,
                NullEquality::NullEqualsNothing,
                false,
            )
            .unwrap(),
        )
    }

    fn optimize(plan: Arc<dyn ExecutionPlan>, threshold: usize) -> Arc<dyn ExecutionPlan> {
        let mut config = ConfigOptions::new();
        config.optimizer.hash_join_single_partition_threshold = threshold;
        BoundedBuildSide.optimize(plan, &config).unwrap()
    }

    /// The build (left) side's first column name of the top hash join in `plan`.
    fn build_side_columns(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
        let mut columns = None;
        plan.apply(|node| {
            if let Some(join) = node.downcast_ref::<HashJoinExec>() {
                columns = Some(
                    join.left()
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect(),
                );
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        columns.unwrap()
    }

    /// (fact ⋈ fact2) as the build side of a join with a bounded 1,000-row dimension.
    fn joined_facts_then(dim_rows: i64, join_type: JoinType) -> Arc<dyn ExecutionPlan> {
        let facts = join(scan("a", 100), scan("b", 100), "a", "b", JoinType::Inner);
        join(facts, scan("d", dim_rows), "a", "d", join_type)
    }

    #[test]
    fn a_bounded_side_is_built_instead_of_a_joins_output() {
        let plan = joined_facts_then(1_000, JoinType::Inner);
        let schema = plan.schema();
        let swapped = optimize(plan, 1 << 20);
        assert_eq!(
            build_side_columns(&swapped),
            ["d"],
            "{}",
            displayable(swapped.as_ref()).indent(true)
        );
        // The output keeps its columns and their order.
        assert_eq!(swapped.schema(), schema);
        // Outer and semi joins keeping the probe side's rows swap too.
        for t in [JoinType::Left, JoinType::LeftSemi, JoinType::LeftAnti] {
            let swapped = optimize(joined_facts_then(1_000, t), 1 << 20);
            assert_eq!(build_side_columns(&swapped), ["d"], "{t}");
        }
    }

    #[test]
    fn sides_stay_when_the_other_side_is_not_bounded_small_or_the_swap_would_be_wrong() {
        // 16 MiB over 8-byte rows: 2 Mi rows is the limit at a 1 MiB threshold.
        let too_big = optimize(joined_facts_then(3_000_000, JoinType::Inner), 1 << 20);
        assert_eq!(build_side_columns(&too_big), ["a", "b"]);
        // Broadcasts switched off.
        let off = optimize(joined_facts_then(10, JoinType::Inner), 0);
        assert_eq!(build_side_columns(&off), ["a", "b"]);
        // A right or full join emits the build side's unmatched rows: each task would.
        for t in [JoinType::Right, JoinType::Full, JoinType::RightSemi] {
            let kept = optimize(joined_facts_then(10, t), 1 << 20);
            assert_eq!(build_side_columns(&kept), ["a", "b"], "{t}");
        }
        // Both sides joins: neither size is known.
        let facts = || join(scan("a", 10), scan("b", 10), "a", "b", JoinType::Inner);
        let both = join(facts(), facts(), "a", "a", JoinType::Inner);
        assert_eq!(build_side_columns(&optimize(both, 1 << 20)), ["a", "b"]);
    }

    #[test]
    fn the_rule_runs_right_after_join_selection() {
        let names: Vec<String> = physical_optimizer_rules(true)
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        let at = names.iter().position(|n| n == "join_selection").unwrap();
        assert_eq!(names[at + 1], "ember_bounded_build_side");
        let at = names
            .iter()
            .position(|n| n == "ember_key_range_scans")
            .unwrap();
        assert_eq!(names[at + 1], ENSURE_REQUIREMENTS);
        let without: Vec<String> = physical_optimizer_rules(false)
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        assert_eq!(without.len() + 1, names.len());
    }
}
