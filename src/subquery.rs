//! Uncorrelated scalar subqueries run first, each as its own job on the cluster, and the
//! query is planned with their values as literals.
//!
//! `WHERE d_month_seq = (SELECT DISTINCT d_month_seq FROM date_dim WHERE ...)` planned as
//! a join puts the one-row subquery above every other join of the query, so nothing
//! below it is filtered by it. With its value known, the filter reaches the scan of
//! `date_dim`: statistics see a small table, the join with the fact table takes it as the
//! build side, and its key bounds prune the fact table's row groups (see
//! `ember_engine::join_filter`). DataFusion gets there in one process by handing values
//! between operators through shared memory, which Ember's tasks do not share; Ember does
//! what Spark does instead and runs the subqueries before the query that uses them.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{Expr, LogicalPlan, Subquery};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use ember_driver::{Driver, JobDescription};

/// Plans queries like DataFusion's default planner, after running each uncorrelated scalar
/// subquery of the (optimized) logical plan as a job and putting its value in its place.
pub(crate) struct SubqueryFirstPlanner {
    driver: Arc<Driver>,
}

impl SubqueryFirstPlanner {
    pub(crate) fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }

    /// Runs `subquery` on the cluster: its value, a typed null without rows, or an error
    /// with more than one row (as SQL has it).
    async fn value(&self, subquery: &Subquery, state: &dyn Session) -> DfResult<ScalarValue> {
        let logical = state.optimize(subquery.subquery.as_ref())?;
        let field = logical.schema().field(0).clone();
        let plan = self.create_physical_plan(&logical, state).await?;
        let job = self
            .driver
            .plan_job(plan)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let description = JobDescription::new(format!("scalar subquery: {}", logical.display()));
        let (batches, _) = self
            .driver
            .collect(job.root, job.stages, &description)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut value = None;
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            if batch.num_columns() != 1 {
                return Err(DataFusionError::Plan(format!(
                    "a scalar subquery must return one column, not {}: {}",
                    batch.num_columns(),
                    logical.display()
                )));
            }
            if value.is_some() || batch.num_rows() > 1 {
                return Err(DataFusionError::Execution(format!(
                    "scalar subquery returned more than one row: {}",
                    logical.display()
                )));
            }
            value = Some(ScalarValue::try_from_array(batch.column(0), 0)?);
        }
        let value = match value {
            Some(v) => v,
            None => ScalarValue::try_from(field.data_type())?,
        };
        if value.data_type() == *field.data_type() {
            Ok(value)
        } else {
            value.cast_to(field.data_type())
        }
    }
}

impl std::fmt::Debug for SubqueryFirstPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubqueryFirstPlanner")
    }
}

/// The uncorrelated scalar subqueries in the expressions of `plan`'s nodes (not inside
/// other subqueries: those are run when their own query is planned), each once.
fn scalar_subqueries(plan: &LogicalPlan) -> DfResult<Vec<Subquery>> {
    let mut found: Vec<Subquery> = Vec::new();
    plan.apply(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarSubquery(sq) = e {
                    if sq.outer_ref_columns.is_empty() && !found.contains(sq) {
                        found.push(sq.clone());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(found)
}

/// `plan` with every subquery of `values` replaced by its value.
fn with_values(plan: LogicalPlan, values: &[(Subquery, ScalarValue)]) -> DfResult<LogicalPlan> {
    plan.transform_up(|node| {
        node.map_expressions(|expr| {
            expr.transform_up(|e| match &e {
                Expr::ScalarSubquery(sq) => match values.iter().find(|(s, _)| s == sq) {
                    Some((_, value)) => Ok(Transformed::yes(Expr::Literal(value.clone(), None))),
                    None => Ok(Transformed::no(e)),
                },
                _ => Ok(Transformed::no(e)),
            })
        })
    })
    .map(|t| t.data)
}

#[async_trait]
impl QueryPlanner for SubqueryFirstPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // EXPLAIN shows the plan without running anything.
        let subqueries = if matches!(logical_plan, LogicalPlan::Explain(_)) {
            Vec::new()
        } else {
            scalar_subqueries(logical_plan)?
        };
        let planner = DefaultPhysicalPlanner::default();
        if subqueries.is_empty() {
            return planner
                .create_physical_plan(logical_plan, session_state)
                .await;
        }
        let values = futures::future::try_join_all(
            subqueries.iter().map(|sq| self.value(sq, session_state)),
        )
        .await?;
        let values: Vec<(Subquery, ScalarValue)> = subqueries.into_iter().zip(values).collect();
        let rewritten = with_values(logical_plan.clone(), &values)?;
        // Optimized again, so the literals fold and their filters reach the scans.
        let optimized = session_state.optimize(&rewritten)?;
        planner
            .create_physical_plan(&optimized, session_state)
            .await
    }
}
