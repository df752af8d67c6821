//! The prelude: `use ember::prelude::*;` is all an application needs.

pub use crate::dataframe::DataFrame;
pub use crate::error::{Error, Result};
pub use crate::ml::{Estimator, Frame, Pipeline, PipelineModel, Transformer, TransformerExt};
pub use crate::session::{Session, SessionBuilder};
pub use datafusion::functions_aggregate::expr_fn::*;
pub use datafusion::logical_expr::{Expr, SortExpr};
pub use datafusion::prelude::{col, lit, when};
pub use ember_driver::JobMetrics;
pub use ember_driver::{JobStatus, SchedulerEvent, SchedulingMode};
