//! Join sides broadcast by their size when run: a partitioned join whose one side is much
//! cheaper to compute than the other runs that side first, as a job of its own, and when
//! its rows turn out small the join collects them instead of shuffling both sides.
//!
//! DataFusion decides between a partitioned and a broadcast (collect-left) hash join from
//! estimates. Below a join or a filter an estimate can be far from what runs: TPC-H q5's
//! `customer ⋈ orders of 1994` is 227,000 rows of two keys (3.6 MB), estimated too big to
//! broadcast, so all 6 million `lineitem` rows are shuffled by order key to meet it. One
//! process pays for that with an in-memory repartition; Ember pays a stage boundary: every
//! row encoded, stored and fetched by another process. Spark answers this at run time
//! (its adaptive execution turns a sort-merge join into a broadcast join once a shuffle's
//! map side has measured its output); Ember does the same before the job is cut, because
//! the small side can be run on its own: when its rows fit under the limit (16 times the
//! broadcast threshold, as [`super::join_sides`] allows for bounded sides) they are held
//! on the driver and written into the plan as an in-memory build side, which travels to
//! each task with its launch; the big side is probed where it is read, in one stage, and
//! its shuffle is gone. A side that outgrows the limit is cancelled at once and the join
//! runs as planned.
//!
//! A side is tried when the other side reads at least [`PROBE_TO_SIDE_RATIO`] times what
//! it reads (both bounded by their scans' row counts), so running it first costs little
//! next to the shuffle it may save; when the other side's estimated output reaches the
//! limit, so a small query (or one whose big side is filtered down) does not pay a job for
//! nothing; and when it may fit: a side holding a join always may (that estimate is the
//! guess being checked), any other side only when its estimate does, so a whole table
//! too big to broadcast is not read twice. A side that keeps the groups of an aggregation
//! passing a condition (a `HAVING`) is tried whenever it reads no more than the other.
//!
//! A side run first with few enough rows (see [`restricts`]) also restricts the other side
//! to its keys (`key IN (...)`, pushed as deep as it stays the same restriction) when the
//! join emits none of the other side's unmatched rows; see [`restrict_other_side`].
//!
//! A side a semi or anti join keeps (`EXISTS`, `IN`, `NOT EXISTS`) cannot be collected,
//! since every task would emit its rows; but when it is small next to the other side
//! (the same test as above) it is run first all the same, to restrict the other side,
//! which is then only a filter of it: TPC-H q20's Canadian suppliers cut the `partsupp` of
//! `forest` parts, and the `lineitem` of a year aggregated against it, down to their
//! supplier keys. When the side fits, its rows replace it in the join (it is not computed
//! twice), which keeps its mode.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, NullEquality, ScalarValue, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::expressions::{in_list, lit, Column};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::ensure_requirements::EnsureRequirements;
use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan, Partitioning};
use futures::future::BoxFuture;
use futures::StreamExt;

use super::join_sides::{bound_bytes, contains_join, row_width, BOUNDED_BUILD_FACTOR};
use ember_engine::EngineError;

use crate::error::Result;
use crate::{Driver, JobDescription};

/// How many times a side's input the other side's input must be for the side to be run
/// first.
pub const PROBE_TO_SIDE_RATIO: usize = 4;

/// At most this many sides are run first for one query (each is a job).
pub const MAX_SIDES_PER_QUERY: usize = 4;

/// What [`Driver::broadcast_small_sides`] did to a plan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuntimeBroadcast {
    /// Sides run first whose rows fit: their joins now collect them.
    pub broadcast: usize,
    /// Sides kept by a semi or anti join, run first and fitting: their rows restrict the
    /// other side where it is read, and the join reads them from memory.
    pub restricting: usize,
    /// Sides run first that outgrew the limit (cancelled; their joins run as planned).
    pub too_big: usize,
    /// Whether the rewritten plan broke a requirement its operators have of their inputs'
    /// partitioning that could not be restored, so the query runs as first planned.
    pub abandoned: bool,
}

/// The bytes a side run first may hold for `options`: 0 (never) when broadcasting is off.
pub fn side_limit(options: &ConfigOptions) -> usize {
    options
        .optimizer
        .hash_join_single_partition_threshold
        .saturating_mul(BOUNDED_BUILD_FACTOR)
}

impl Driver {
    /// Runs first, each as a job of its own, the small-looking sides of `plan`'s
    /// partitioned hash joins (innermost first), and makes each join whose side's rows fit
    /// under [`side_limit`] collect them from memory while its other side is probed
    /// unshuffled (see the module's documentation). Returns the plan to run and what was
    /// done; the plan is `plan` itself when nothing was tried, or when the rewritten plan
    /// cannot keep its operators' input requirements.
    ///
    /// # Errors
    ///
    /// A side's job failed (the query would have failed the same way), or was cancelled.
    pub async fn broadcast_small_sides(
        self: &Arc<Self>,
        plan: Arc<dyn ExecutionPlan>,
        options: &ConfigOptions,
        description: &JobDescription,
    ) -> Result<(Arc<dyn ExecutionPlan>, RuntimeBroadcast)> {
        let limit = side_limit(options);
        let mut done = RuntimeBroadcast::default();
        if limit == 0 || !has_candidate(&plan, limit) {
            return Ok((plan, done));
        }
        let rewritten = self
            .rewrite(Arc::clone(&plan), limit, description, &mut done)
            .await?;
        if done.broadcast + done.restricting == 0 {
            return Ok((plan, done));
        }
        match keep_requirements(rewritten, options) {
            Some(rewritten) => Ok((rewritten, done)),
            None => {
                tracing::debug!("a broadcast at run time broke an input requirement; running the plan as planned");
                done.abandoned = true;
                Ok((plan, done))
            }
        }
    }

    /// `plan` with its children rewritten first, then itself when it is a join to try.
    fn rewrite<'a>(
        self: &'a Arc<Self>,
        plan: Arc<dyn ExecutionPlan>,
        limit: usize,
        description: &'a JobDescription,
        done: &'a mut RuntimeBroadcast,
    ) -> BoxFuture<'a, Result<Arc<dyn ExecutionPlan>>> {
        Box::pin(async move {
            let children: Vec<Arc<dyn ExecutionPlan>> =
                plan.children().into_iter().cloned().collect();
            let mut rewritten = Vec::with_capacity(children.len());
            for child in children {
                rewritten.push(self.rewrite(child, limit, description, done).await?);
            }
            let plan = replace_children_if_necessary(plan, rewritten).map_err(EngineError::from)?;
            if done.broadcast + done.restricting + done.too_big >= MAX_SIDES_PER_QUERY {
                return Ok(plan);
            }
            let Some(join) = plan.downcast_ref::<HashJoinExec>() else {
                return Ok(plan);
            };
            let Some(candidate) = candidate(join, limit) else {
                return Ok(plan);
            };
            tracing::debug!(
                collect = candidate.collect,
                side_input = ?input_bytes(&candidate.side),
                side_estimate = ?estimated_bytes(&candidate.side),
                other_input = ?input_bytes(&candidate.other),
                "running a join side first"
            );
            let Some(rows) = self
                .run_side(Arc::clone(&candidate.side), limit, description)
                .await?
            else {
                tracing::debug!("the join side outgrew the limit; the join runs as planned");
                done.too_big += 1;
                return Ok(plan);
            };
            let candidate =
                restrict_other_side(join, candidate, &rows).map_err(EngineError::from)?;
            let memory: Arc<dyn ExecutionPlan> =
                MemorySourceConfig::try_new_exec(&[rows], candidate.side.schema(), None)
                    .map_err(EngineError::from)?;
            if candidate.collect {
                done.broadcast += 1;
                Ok(collect_side(join, candidate, memory).map_err(EngineError::from)?)
            } else {
                done.restricting += 1;
                Ok(keep_side(join, candidate, memory).map_err(EngineError::from)?)
            }
        })
    }

    /// Runs `side` as a job and returns its rows, or `None` (the job cancelled) once they
    /// hold more than `limit` bytes.
    async fn run_side(
        self: &Arc<Self>,
        side: Arc<dyn ExecutionPlan>,
        limit: usize,
        description: &JobDescription,
    ) -> Result<Option<Vec<RecordBatch>>> {
        let job = self.plan_job(side)?;
        let description = description.derived(format!(
            "join side, broadcast if small: {}",
            description.text
        ));
        let (mut stream, _metrics) = self.execute_stream(job.root, job.stages, &description);
        let mut rows = Vec::new();
        let mut bytes = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            bytes += batch.get_array_memory_size();
            if bytes > limit {
                // Dropping the stream cancels the side's job.
                return Ok(None);
            }
            if batch.num_rows() > 0 {
                rows.push(batch);
            }
        }
        Ok(Some(rows))
    }
}

/// `join` collecting `memory`, the rows of `candidate`'s side, as its build side, probed
/// by the other side unshuffled.
fn collect_side(
    join: &HashJoinExec,
    candidate: Candidate,
    memory: Arc<dyn ExecutionPlan>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    if candidate.side_is_left {
        return join
            .builder()
            .with_partition_mode(PartitionMode::CollectLeft)
            .with_new_children(vec![memory, candidate.other])?
            .recompute_properties()
            .build_exec();
    }
    // The join's own filter reached the side's scans, which are gone.
    join.builder()
        .reset_state()
        .with_new_children(vec![candidate.other, memory])?
        .recompute_properties()
        .build()?
        .swap_inputs(PartitionMode::CollectLeft)
}

/// `join` reading `memory`, the rows of `candidate`'s side, where the side was, and
/// `candidate`'s other side (restricted) where it was, in its own mode (a collect-left
/// semi or anti join is partitioned when the plan is cut into stages).
fn keep_side(
    join: &HashJoinExec,
    candidate: Candidate,
    memory: Arc<dyn ExecutionPlan>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let (left, right) = if candidate.side_is_left {
        (memory, candidate.other)
    } else {
        (candidate.other, memory)
    };
    join.builder()
        .with_new_children(vec![
            above_as_before(join.left(), left)?,
            above_as_before(join.right(), right)?,
        ])?
        .recompute_properties()
        .build_exec()
}

/// `input` under the hash repartition `original` is, if it is one (see [`below_shuffle`]).
fn above_as_before(
    original: &Arc<dyn ExecutionPlan>,
    input: Arc<dyn ExecutionPlan>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    match original.downcast_ref::<RepartitionExec>() {
        Some(repartition) if matches!(repartition.partitioning(), Partitioning::Hash(..)) => {
            replace_children_if_necessary(Arc::clone(original), vec![input])
        }
        _ => Ok(input),
    }
}

/// A join side to run first.
struct Candidate {
    /// Whether the side is the join's left input.
    side_is_left: bool,
    /// The side, below the shuffle that partitions it for the join.
    side: Arc<dyn ExecutionPlan>,
    /// The other side, below its shuffle.
    other: Arc<dyn ExecutionPlan>,
    /// Whether the join collects the side once run (a broadcast); otherwise the join keeps
    /// the side's rows and the side only restricts the other side.
    collect: bool,
}

impl Candidate {
    /// The join's left input run first, its right the other side.
    fn left(left: Arc<dyn ExecutionPlan>, right: Arc<dyn ExecutionPlan>) -> Self {
        Candidate {
            side_is_left: true,
            side: left,
            other: right,
            collect: true,
        }
    }

    /// The join's right input run first, its left the other side.
    fn right(left: Arc<dyn ExecutionPlan>, right: Arc<dyn ExecutionPlan>) -> Self {
        Candidate {
            side_is_left: false,
            side: right,
            other: left,
            collect: true,
        }
    }

    /// The candidate kept by the join instead of collected.
    fn kept(self) -> Self {
        Candidate {
            collect: false,
            ..self
        }
    }
}

/// Whether any join of `plan` is worth running a side of first.
fn has_candidate(plan: &Arc<dyn ExecutionPlan>, limit: usize) -> bool {
    let mut found = false;
    // The closure never fails, so neither does the walk.
    let _ = plan.apply(|node| {
        if node
            .downcast_ref::<HashJoinExec>()
            .is_some_and(|join| candidate(join, limit).is_some())
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The side of `join` to run first, if any: a partitioned join whose side, once
/// collected, answers the same as build side of every task (only the other side's rows,
/// or matched pairs, are emitted), and whose other side's input is at least
/// [`PROBE_TO_SIDE_RATIO`] times the side's and at least `limit` bytes; a `HAVING` side;
/// or, to restrict the other side only, a side a semi or anti join keeps, under the same
/// size test.
fn candidate(join: &HashJoinExec, limit: usize) -> Option<Candidate> {
    if join.null_aware {
        return None;
    }
    // A collect-left semi or anti join is partitioned when the plan is cut into stages
    // (`lineage::one_partition_per_task`): each task would emit the left rows. Its left
    // side is a kept side like a partitioned join's.
    let kept_left_once_cut = join.mode == PartitionMode::CollectLeft
        && matches!(join.join_type, JoinType::LeftSemi | JoinType::LeftAnti)
        && join
            .right()
            .properties()
            .output_partitioning()
            .partition_count()
            > 1;
    if join.mode != PartitionMode::Partitioned && !kept_left_once_cut {
        return None;
    }
    let left = below_shuffle(join.left());
    let right = below_shuffle(join.right());
    let left_bytes = (
        input_bytes(&left)?,
        estimated_bytes(&left),
        fits(&left, limit),
    );
    let right_bytes = (
        input_bytes(&right)?,
        estimated_bytes(&right),
        fits(&right, limit),
    );
    // A side is run first when it reads at most a quarter of what the other side reads,
    // the other side's output is big enough that its shuffle matters, and the side may
    // fit; `(input bytes, estimated output bytes, may fit)`.
    let small = |side: (usize, Option<usize>, bool), other: (usize, Option<usize>, bool)| {
        side.2
            && side.0.saturating_mul(PROBE_TO_SIDE_RATIO) <= other.0
            && other.1.unwrap_or(other.0) >= limit
    };
    let left_collectable = matches!(
        join.join_type,
        JoinType::Inner
            | JoinType::Right
            | JoinType::RightSemi
            | JoinType::RightAnti
            | JoinType::RightMark
    );
    let right_collectable = matches!(
        join.join_type,
        JoinType::Inner | JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti
    );
    let partitioned = join.mode == PartitionMode::Partitioned;
    // Sides read co-partitioned from their files (`super::key_ranges`) have no shuffle
    // for a broadcast to save; a side is still run first to restrict the other.
    let co_partitioned = [join.left(), join.right()].iter().all(|side| {
        matches!(
            side.properties().output_partitioning(),
            Partitioning::Range(_)
        )
    });
    let broadcast_saves_a_shuffle = partitioned && !co_partitioned;
    if broadcast_saves_a_shuffle && left_collectable && small(left_bytes, right_bytes) {
        return Some(Candidate::left(left, right));
    }
    if broadcast_saves_a_shuffle && right_collectable && small(right_bytes, left_bytes) {
        return Some(Candidate::right(left, right));
    }
    // A side that keeps the groups of an aggregation passing a condition (`HAVING`, as
    // in `o_orderkey IN (SELECT l_orderkey ... HAVING sum(..) > 300)`) has no estimate
    // worth the name; its rows only filter the other side, so when few they cut the
    // other side down to its matches before any shuffle (see
    // [`restrict_other_side`]). It is tried when it reads no more than the other side.
    let having =
        |side: &Arc<dyn ExecutionPlan>, side_in: usize, other: (usize, Option<usize>, bool)| {
            keeps_some_groups(side) && side_in <= other.0 && other.1.unwrap_or(other.0) >= limit
        };
    if partitioned
        && matches!(join.join_type, JoinType::Inner | JoinType::RightSemi)
        && having(&left, left_bytes.0, right_bytes)
    {
        return Some(Candidate::left(left, right));
    }
    if partitioned
        && matches!(join.join_type, JoinType::Inner | JoinType::LeftSemi)
        && having(&right, right_bytes.0, left_bytes)
    {
        return Some(Candidate::right(left, right));
    }
    // A side a semi or anti join keeps, the other side being only a filter of it: run
    // first, few rows restrict the other side before its shuffle (see
    // [`restrict_other_side`]).
    if matches!(join.join_type, JoinType::LeftSemi | JoinType::LeftAnti)
        && small(left_bytes, right_bytes)
    {
        return Some(Candidate::left(left, right).kept());
    }
    if partitioned
        && matches!(join.join_type, JoinType::RightSemi | JoinType::RightAnti)
        && small(right_bytes, left_bytes)
    {
        return Some(Candidate::right(left, right).kept());
    }
    None
}

/// Whether `plan` keeps the groups of an aggregation that pass a condition (a `HAVING`),
/// seen through projections.
fn keeps_some_groups(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        return keeps_some_groups(projection.input());
    }
    plan.downcast_ref::<FilterExec>()
        .is_some_and(|filter| filter.input().is::<AggregateExec>())
}

/// `candidate` with its other side restricted, as deep below as the restriction holds, to
/// the rows whose join keys are among the side's keys, when the join emits none of the
/// other side's unmatched rows (an inner join, a semi join keeping the other side's rows,
/// or a join keeping the side's rows whatever they match) and the side's rows are few
/// enough to be worth it ([`restricts`]). Every such key is also a key of the joins below
/// it that equate it with another column, so those joins' other inputs are restricted
/// too: TPC-H q18's 57 order keys cut both `orders` and `lineitem` down before they are
/// shuffled.
fn restrict_other_side(
    join: &HashJoinExec,
    mut candidate: Candidate,
    rows: &[RecordBatch],
) -> DfResult<Candidate> {
    let other_unmatched_dropped = if candidate.side_is_left {
        matches!(
            join.join_type,
            JoinType::Inner
                | JoinType::Left
                | JoinType::LeftSemi
                | JoinType::LeftAnti
                | JoinType::LeftMark
                | JoinType::RightSemi
        )
    } else {
        matches!(
            join.join_type,
            JoinType::Inner
                | JoinType::Right
                | JoinType::RightSemi
                | JoinType::RightAnti
                | JoinType::RightMark
                | JoinType::LeftSemi
        )
    };
    let count: usize = rows.iter().map(RecordBatch::num_rows).sum();
    if !other_unmatched_dropped
        || join.null_aware
        || join.null_equality() != NullEquality::NullEqualsNothing
        || !restricts(count, &candidate.other)
    {
        return Ok(candidate);
    }
    for (left, right) in join.on() {
        let (side_key, other_key) = if candidate.side_is_left {
            (left, right)
        } else {
            (right, left)
        };
        let (Some(side_key), Some(other_key)) = (as_column(side_key), as_column(other_key)) else {
            continue;
        };
        let side_type = candidate.side.schema().field(side_key).data_type().clone();
        if candidate.other.schema().field(other_key).data_type() != &side_type {
            continue;
        }
        let mut keys = HashSet::new();
        for batch in rows {
            let column = batch.column(side_key);
            for row in 0..column.len() {
                if column.is_valid(row) {
                    keys.insert(ScalarValue::try_from_array(column, row)?);
                }
            }
        }
        let mut keys: Vec<ScalarValue> = keys.into_iter().collect();
        keys.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        candidate.other = restrict(Arc::clone(&candidate.other), other_key, &keys)?;
    }
    Ok(candidate)
}

/// Up to this many rows of a side run first always restrict the other side.
pub const FEW_MEMBERSHIP_KEYS: usize = 4096;

/// At most this many rows of a side run first restrict the other side (an `IN` list of
/// literals is a hash set, but it travels in every task's plan).
pub const MAX_MEMBERSHIP_KEYS: usize = 1 << 17;

/// How many times the rows of a side run first the other side's estimated rows must be for
/// more than [`FEW_MEMBERSHIP_KEYS`] of them to restrict it.
pub const MEMBERSHIP_SELECTIVITY: usize = 8;

/// Whether `count` rows of a side run first restrict `other`: always when they are few
/// ([`FEW_MEMBERSHIP_KEYS`]), and up to [`MAX_MEMBERSHIP_KEYS`] when `other` is estimated
/// to hold [`MEMBERSHIP_SELECTIVITY`] times as many rows, so that the restriction drops
/// most of them.
fn restricts(count: usize, other: &Arc<dyn ExecutionPlan>) -> bool {
    count <= FEW_MEMBERSHIP_KEYS
        || (count <= MAX_MEMBERSHIP_KEYS
            && estimated_rows(other)
                .is_some_and(|rows| count.saturating_mul(MEMBERSHIP_SELECTIVITY) <= rows))
}

/// The index of the column `expr` is, if it is one.
fn as_column(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    expr.downcast_ref::<Column>().map(Column::index)
}

/// `plan` keeping only the rows whose output column `column` is among `keys`, the
/// restriction pushed as far down as it stays the same restriction: through projections
/// of the column, filters, exchanges, the grouping columns of aggregations, and inner or
/// semi hash joins (into the input the column comes from and, when the column is one of
/// the join's keys, into the other input on its partner key). Where it can go no deeper
/// it is a filter.
fn restrict(
    plan: Arc<dyn ExecutionPlan>,
    column: usize,
    keys: &[ScalarValue],
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let one_input = |input: &Arc<dyn ExecutionPlan>, column: usize| {
        let input = restrict(Arc::clone(input), column, keys)?;
        replace_children_if_necessary(Arc::clone(&plan), vec![input])
    };
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        if let Some(inner) = projection
            .expr()
            .get(column)
            .and_then(|e| as_column(&e.expr))
        {
            return one_input(projection.input(), inner);
        }
    } else if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let inner = filter.projection().as_ref().map_or(column, |p| p[column]);
        return one_input(filter.input(), inner);
    } else if plan.is::<RepartitionExec>() || plan.is::<CoalescePartitionsExec>() {
        return one_input(plan.children()[0], column);
    } else if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        let group = aggregate.group_expr();
        if group.is_single() {
            if let Some(inner) = group.expr().get(column).and_then(|(e, _)| as_column(e)) {
                return one_input(aggregate.input(), inner);
            }
        }
    } else if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        if join.null_equality() == NullEquality::NullEqualsNothing {
            if let Some(children) = restrict_join(join, column, keys)? {
                return replace_children_if_necessary(Arc::clone(&plan), children);
            }
        }
    }
    // No keys at all: the other side has nothing that can match.
    let predicate = if keys.is_empty() {
        lit(false)
    } else {
        in_list(
            Arc::new(Column::new(plan.schema().field(column).name(), column)),
            keys.iter().map(|k| lit(k.clone())).collect(),
            &false,
            &plan.schema(),
        )?
    };
    Ok(Arc::new(FilterExec::try_new(predicate, plan)?))
}

/// The inputs of inner or semi `join` restricted to `keys` on its output column `column`
/// (see [`restrict`]); `None` for other joins.
fn restrict_join(
    join: &HashJoinExec,
    column: usize,
    keys: &[ScalarValue],
) -> DfResult<Option<Vec<Arc<dyn ExecutionPlan>>>> {
    let column = join.projection.as_ref().map_or(column, |p| p[column]);
    let left_width = join.left().schema().fields().len();
    let (from_left, column) = match join.join_type {
        JoinType::Inner if column < left_width => (true, column),
        JoinType::Inner => (false, column - left_width),
        JoinType::LeftSemi => (true, column),
        JoinType::RightSemi => (false, column),
        _ => return Ok(None),
    };
    let partner = join.on().iter().find_map(|(l, r)| {
        let (own, partner) = if from_left { (l, r) } else { (r, l) };
        (as_column(own) == Some(column))
            .then(|| as_column(partner))
            .flatten()
    });
    let mut left = Arc::clone(join.left());
    let mut right = Arc::clone(join.right());
    let (own, other) = if from_left {
        (&mut left, &mut right)
    } else {
        (&mut right, &mut left)
    };
    *own = restrict(Arc::clone(own), column, keys)?;
    if let Some(partner) = partner {
        if other.schema().field(partner).data_type() == own.schema().field(column).data_type() {
            *other = restrict(Arc::clone(other), partner, keys)?;
        }
    }
    Ok(Some(vec![left, right]))
}

/// Whether `side`'s rows may fit under `limit`: a side holding a join may (a join's output
/// estimate is a guess, which is why the side is run to find out); any other side when
/// its estimate (row counts from file metadata, filter selectivities from column
/// statistics) or its bound does.
fn fits(side: &Arc<dyn ExecutionPlan>, limit: usize) -> bool {
    if contains_join(side).unwrap_or(true) {
        return true;
    }
    estimated_bytes(side)
        .or_else(|| bound_bytes(side))
        .is_some_and(|bytes| bytes <= limit)
}

/// DataFusion's estimate of the bytes `plan` produces, when it has one.
fn estimated_bytes(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    let stats = statistics(plan)?;
    match (stats.total_byte_size, stats.num_rows) {
        (Precision::Exact(bytes) | Precision::Inexact(bytes), _) => Some(bytes),
        (_, Precision::Exact(rows) | Precision::Inexact(rows)) => {
            rows.checked_mul(row_width(&plan.schema()))
        }
        _ => None,
    }
}

/// DataFusion's estimate of the rows `plan` produces, when it has one.
fn estimated_rows(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    match statistics(plan)?.num_rows {
        Precision::Exact(rows) | Precision::Inexact(rows) => Some(rows),
        Precision::Absent => None,
    }
}

/// DataFusion's estimated statistics of `plan`'s output.
fn statistics(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<Statistics>> {
    StatisticsContext::new()
        .compute(plan.as_ref(), &StatisticsArgs::new())
        .ok()
}

/// `plan` without the hash repartition that partitions it for a join.
fn below_shuffle(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    match plan.downcast_ref::<RepartitionExec>() {
        Some(repartition) if matches!(repartition.partitioning(), Partitioning::Hash(..)) => {
            Arc::clone(repartition.input())
        }
        _ => Arc::clone(plan),
    }
}

/// The bytes `plan`'s leaves read, bounded by their row counts and widths; `None` when a
/// leaf's size is not known (a block read, a scan without row counts).
fn input_bytes(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    let mut total = Some(0usize);
    // The closure never fails, so neither does the walk.
    let _ = plan.apply(|node| {
        if !node.children().is_empty() {
            return Ok(TreeNodeRecursion::Continue);
        }
        let bytes = if node.is::<EmptyExec>() || node.is::<PlaceholderRowExec>() {
            Some(0)
        } else if node.is::<DataSourceExec>() {
            bound_bytes(node)
        } else {
            None
        };
        total = match (total, bytes) {
            (Some(sum), Some(bytes)) => sum.checked_add(bytes),
            _ => None,
        };
        Ok(if total.is_some() {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    total
}

/// `plan` when every operator's requirements of its inputs (partitioning, ordering) hold,
/// or once exchanges restore them; `None` when they cannot be restored.
fn keep_requirements(
    plan: Arc<dyn ExecutionPlan>,
    options: &ConfigOptions,
) -> Option<Arc<dyn ExecutionPlan>> {
    let sane = |plan: Arc<dyn ExecutionPlan>| SanityCheckPlan::new().optimize(plan, options).ok();
    if let Some(plan) = sane(Arc::clone(&plan)) {
        return Some(plan);
    }
    sane(EnsureRequirements::new().optimize(plan, options).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// A plan of `rows` rows of one key column, whose row count DataFusion knows.
    fn rows_of(rows: i64) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .expect("batch");
        MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None).expect("memory plan")
    }

    #[test]
    fn few_keys_always_restrict_and_more_only_a_side_many_times_their_number() {
        let small = rows_of(100);
        assert!(restricts(FEW_MEMBERSHIP_KEYS, &small));
        assert!(!restricts(FEW_MEMBERSHIP_KEYS + 1, &small));
        let big = rows_of(200_000);
        assert!(restricts(200_000 / MEMBERSHIP_SELECTIVITY, &big));
        assert!(!restricts(200_000 / MEMBERSHIP_SELECTIVITY + 1, &big));
        let huge = rows_of((MAX_MEMBERSHIP_KEYS * MEMBERSHIP_SELECTIVITY * 2) as i64);
        assert!(restricts(MAX_MEMBERSHIP_KEYS, &huge));
        assert!(!restricts(MAX_MEMBERSHIP_KEYS + 1, &huge));
    }
}
