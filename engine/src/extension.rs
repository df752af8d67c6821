//! Plan extensions: plan nodes and functions that crates above the engine (mllib) add to
//! every Ember process, found by name when a task's plan is decoded.
//!
//! The facade registers each extension once per process, in the driver and in every
//! executor alike, before any plan is encoded or decoded. Executors started from the same
//! binary therefore decode every node the driver can encode.

use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;

/// A family of plan nodes (and the scalar functions they or their users need) that Ember's
/// plan codec sends to executors.
pub trait PlanExtension: Send + Sync + fmt::Debug {
    /// A name unique among the registered extensions; it travels with every encoded node.
    fn name(&self) -> &str;

    /// Encodes `node` if it belongs to this extension (`Ok(None)` otherwise). Its children
    /// are encoded by the codec and handed back to [`PlanExtension::decode`].
    fn encode(&self, node: &Arc<dyn ExecutionPlan>) -> DfResult<Option<Vec<u8>>>;

    /// Rebuilds a node from what [`PlanExtension::encode`] wrote and its decoded children.
    fn decode(
        &self,
        payload: &[u8],
        children: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn ExecutionPlan>>;

    /// Scalar functions every process registers in its session, so plans that call them
    /// decode everywhere.
    fn scalar_functions(&self) -> Vec<Arc<ScalarUDF>> {
        Vec::new()
    }
}

fn registry() -> &'static RwLock<Vec<Arc<dyn PlanExtension>>> {
    static REGISTRY: OnceLock<RwLock<Vec<Arc<dyn PlanExtension>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(Vec::new()))
}

/// Registers `extension` in this process (a second registration under the same name is
/// ignored).
pub fn register(extension: Arc<dyn PlanExtension>) {
    let mut all = registry().write().unwrap_or_else(|p| p.into_inner());
    if all.iter().all(|e| e.name() != extension.name()) {
        all.push(extension);
    }
}

/// Every registered extension.
pub fn extensions() -> Vec<Arc<dyn PlanExtension>> {
    registry().read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The extension registered as `name`.
pub fn extension(name: &str) -> Option<Arc<dyn PlanExtension>> {
    extensions().into_iter().find(|e| e.name() == name)
}

/// The scalar functions of every registered extension.
pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    extensions()
        .iter()
        .flat_map(|e| e.scalar_functions())
        .collect()
}
