//! Planner: cuts a DataFusion physical plan into Ember's stages (datasets of the lineage
//! graph) and the final fragment the driver runs, checks that every stage keeps the plan's
//! invariants, and describes the cut for `EXPLAIN`.
//!
//! Stages are cut from the plan DataFusion has fully optimized (distribution and sorting
//! rules included), not planned again per stage: every operator keeps the input
//! partitioning and ordering the optimizer chose for it, because the leaf that reads a
//! stage's blocks declares the partitioning, orderings and equalities of the plan that
//! produced them (`BlockReadExec`, carried to executors by the plan codec).

pub mod join_sides;
pub mod key_ranges;
pub mod runtime_broadcast;

use std::sync::Arc;

use datafusion::execution::TaskContext;
use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use ember_engine::join_filter::stage_filter_inputs;
use ember_engine::lineage::{cut_stages, reads_only_blocks, stage_of, Dataset, Persistence};
use ember_engine::plan_codec::{decode_plan, encode_plan};
use ember_engine::DatasetId;
use ember_engine::EngineError;

use crate::error::{DriverError, Result};
use crate::Driver;

/// A query cut for the cluster: the stages a job computes and the fragment the driver runs
/// over their blocks.
#[derive(Debug)]
pub struct JobPlan {
    /// The driver's final fragment (its leaves read blocks).
    pub root: Arc<dyn ExecutionPlan>,
    /// The datasets the job computes, in dependency order.
    pub stages: Vec<Dataset>,
}

impl Driver {
    /// Cuts `plan` into a job, with dataset ids from this driver.
    ///
    /// # Errors
    ///
    /// A node of the plan cannot be cut (a bug, or an operator Ember cannot distribute).
    pub fn plan_job(&self, plan: Arc<dyn ExecutionPlan>) -> Result<JobPlan> {
        let mut next = || self.next_dataset_id();
        let (root, stages) = job_stages(plan, &mut next)?;
        Ok(JobPlan { root, stages })
    }

    /// Cuts `plan` for caching: its inner exchanges become job-scoped stages; returns the
    /// plan over them and the stages.
    ///
    /// # Errors
    ///
    /// As [`Driver::plan_job`].
    pub fn plan_stages(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> Result<(Arc<dyn ExecutionPlan>, Vec<Dataset>)> {
        let mut next = || self.next_dataset_id();
        let mut stages = Vec::new();
        let plan = cut_stages(plan, &mut next, &mut stages)?;
        Ok((plan, stages))
    }
}

impl JobPlan {
    /// Checks DataFusion's physical-plan invariants (every operator's required input
    /// distribution and ordering hold, and each operator's own invariants) for every stage
    /// as an executor decodes it from the bytes a task carries, and for the driver's final
    /// fragment. Runs nothing.
    ///
    /// # Errors
    ///
    /// [`DriverError::Internal`] naming the stage (its dataset) and what does not hold: a
    /// planner bug, caught before any task runs.
    pub fn check_invariants(&self, ctx: &TaskContext) -> Result<()> {
        let options = ctx.session_config().options();
        let check = |plan: Arc<dyn ExecutionPlan>| SanityCheckPlan::new().optimize(plan, options);
        for stage in &self.stages {
            let bad =
                |what: String| DriverError::Internal(format!("stage of {}: {what}", stage.id()));
            let bytes = encode_plan(Arc::clone(stage.plan())).map_err(|e| bad(e.to_string()))?;
            let decoded = decode_plan(&bytes, ctx).map_err(|e| bad(e.to_string()))?;
            check(decoded).map_err(|e| bad(e.to_string()))?;
        }
        check(Arc::clone(&self.root))
            .map_err(|e| DriverError::Internal(format!("the driver's final fragment: {e}")))?;
        Ok(())
    }
}

/// Ember's stages for `plan` as `EXPLAIN` prints them (dataset ids numbered from 1, not
/// taken from any driver).
///
/// # Errors
///
/// As [`Driver::plan_job`].
pub fn explain_stages(plan: Arc<dyn ExecutionPlan>) -> Result<String> {
    let (root, stages) = job_stages(plan, &mut local_ids())?;
    Ok(describe_stages(&root, &stages))
}

/// Cuts `plan` as a job would (dataset ids numbered from 1, not taken from any driver) and
/// checks the invariants of every stage ([`JobPlan::check_invariants`]); runs nothing.
///
/// # Errors
///
/// As [`Driver::plan_job`] and [`JobPlan::check_invariants`].
pub fn check_stages(plan: Arc<dyn ExecutionPlan>, ctx: &TaskContext) -> Result<()> {
    let (root, stages) = job_stages(plan, &mut local_ids())?;
    JobPlan { root, stages }.check_invariants(ctx)
}

/// Dataset ids numbered from 1, for a cut that no driver runs (`EXPLAIN`, checks).
fn local_ids() -> impl FnMut() -> DatasetId {
    let mut id = 0u64;
    move || {
        id += 1;
        DatasetId(id)
    }
}

/// Cuts a query's physical plan into the datasets a job computes and the final fragment the
/// driver runs. The driver runs the final fragment itself only when it merges blocks into
/// one stream (a final aggregation, a global limit or sort), or when the query reads no
/// data at all (`SELECT 1`, whose answer needs no executor, as a constant row in Spark is
/// computed on its driver); any per-partition work left at the top runs as one more stage
/// on the executors.
pub fn job_stages(
    plan: Arc<dyn ExecutionPlan>,
    next: &mut dyn FnMut() -> DatasetId,
) -> Result<(Arc<dyn ExecutionPlan>, Vec<Dataset>)> {
    let mut stages = Vec::new();
    let mut root = cut_stages(plan, next, &mut stages)?;
    if root.output_partitioning().partition_count() > 1
        || !(reads_only_blocks(&root) || reads_nothing(&root))
    {
        root = stage_of(root, next, &mut stages, Persistence::Job)?;
    }
    if root.output_partitioning().partition_count() > 1 {
        root = Arc::new(CoalescePartitionsExec::new(root));
    }
    let inputs = stage_filter_inputs(&root, &stages).map_err(EngineError::from)?;
    for (stage, inputs) in stages.iter_mut().zip(inputs) {
        stage.set_filter_inputs(inputs);
    }
    Ok((root, stages))
}

/// Whether every leaf of `plan` makes its rows from nothing (a placeholder row, an empty
/// relation): a constant query, with nothing to distribute.
fn reads_nothing(plan: &Arc<dyn ExecutionPlan>) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
    let mut nothing = true;
    // The closure never fails, so neither does the walk.
    let _ = plan.apply(|node| {
        if node.children().is_empty() && !node.is::<PlaceholderRowExec>() && !node.is::<EmptyExec>()
        {
            nothing = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    nothing
}

/// Ember's stages in the order they run, then the driver's final fragment.
pub fn describe_stages(root: &Arc<dyn ExecutionPlan>, stages: &[Dataset]) -> String {
    use datafusion::physical_plan::displayable;
    use std::fmt::Write;
    let mut out = format!("Ember stages ({}):\n", stages.len());
    for (i, stage) in stages.iter().enumerate() {
        let deps: Vec<String> = stage
            .dependencies()
            .iter()
            .map(|d| d.0.to_string())
            .collect();
        let mut filters: Vec<String> = Vec::new();
        for input in stage.filter_inputs() {
            for d in input.build_datasets() {
                let d = d.0.to_string();
                if !filters.contains(&d) {
                    filters.push(d);
                }
            }
        }
        let _ = writeln!(
            out,
            "Stage {} (dataset {}): {} tasks{}{}{}",
            i + 1,
            stage.id().0,
            stage.partitions(),
            match stage.reduce_partitions() {
                Some(r) => format!(", shuffle write into {r} partitions"),
                None => String::new(),
            },
            if deps.is_empty() {
                String::new()
            } else {
                format!(", reads datasets {}", deps.join(", "))
            },
            match (stage.filter_inputs().len(), filters.is_empty()) {
                (0, _) => String::new(),
                (n, true) => format!(", {n} join filter(s) filled first (from files)"),
                (n, false) => format!(
                    ", {n} join filter(s) filled first (from datasets {})",
                    filters.join(", ")
                ),
            },
        );
        let _ = write!(
            out,
            "{}",
            indent(&displayable(stage.plan().as_ref()).indent(true).to_string())
        );
    }
    let _ = writeln!(out, "Driver (final fragment):");
    let _ = write!(
        out,
        "{}",
        indent(&displayable(root.as_ref()).indent(true).to_string())
    );
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
