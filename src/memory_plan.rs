//! Memory plans: how a query is planned again, leaner, after one of its tasks ran out of
//! operator memory (a hash join's build side or a buffer that cannot spill outgrew the
//! executor's operator pool). The same plan would fail the same way; these do not hold
//! whole inputs in memory.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::dataframe::DataFrame;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::ExecutionPlan;

/// How many times one query is planned again before its out-of-memory error is returned.
pub const MAX_REPLANS: usize = 2;

/// The next leaner way to plan `df`, whose last physical plan was `plan`, with a word on
/// what changed:
///
/// 1. hash joins become sort-merge joins, whose sorts spill to disk;
/// 2. then the partition count doubles, halving each task's share of every shuffle.
pub(crate) fn leaner(df: DataFrame, plan: &Arc<dyn ExecutionPlan>) -> Option<(DataFrame, String)> {
    let (state, logical) = df.into_parts();
    let mut config = state.config().clone();
    let options = config.options_mut();
    let change = if options.optimizer.prefer_hash_join && has_hash_join(plan) {
        options.optimizer.prefer_hash_join = false;
        "sort-merge joins".to_string()
    } else {
        let partitions = options.execution.target_partitions.checked_mul(2)?;
        options.execution.target_partitions = partitions;
        format!("{partitions} partitions")
    };
    // The new state shares the session's catalogs; making a default catalog would replace
    // the one holding the session's tables.
    options.catalog.create_default_catalog_and_schema = false;
    let state = SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build();
    Some((DataFrame::new(state, logical), change))
}

/// Whether `plan` joins anything with a hash table.
fn has_hash_join(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        found = node.downcast_ref::<HashJoinExec>().is_some();
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}
