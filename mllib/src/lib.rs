//! Ember mllib: Spark-ML-style pipelines of feature transformers and models, trained on the
//! executors by tree aggregation.
//!
//! # Layout
//!
//! - [`pipeline`]: the [`Estimator`] / [`Transformer`] traits, [`Pipeline`] and
//!   [`PipelineModel`].
//! - [`feature`]: vector assembly, scalers, string indexing, one-hot encoding, imputation,
//!   random splits.
//! - [`classification`], [`regression`], [`clustering`]: the models.
//! - [`evaluation`]: metrics of predictions, computed on the executors.
//! - [`aggregate`]: partial results per partition and the plan node that merges them in a
//!   tree; [`kernel`]: the per-partition math (CPU on rayon), [`gpu`]: the same math as
//!   WGSL compute shaders through wgpu, and the choice of device.
//! - [`optim`]: gradient descent, L-BFGS and OWL-QN on the driver.
//! - [`frame`]: what mllib needs from a DataFrame; [`vector`]: the vector column type.
//! - [`persist`]: the on-disk format of saved stages; [`serving`]: a fitted pipeline
//!   answering requests in-process.
//! - [`bench`]: what the benches measure about a kernel (seconds per pass, bytes per
//!   second, the same device's copy bandwidth).
#![warn(missing_docs)]

pub mod aggregate;
pub mod bench;
pub mod classification;
pub mod clustering;
pub mod error;
pub mod evaluation;
pub mod feature;
pub mod frame;
pub mod gpu;
pub mod kernel;
pub mod optim;
pub mod persist;
pub mod pipeline;
pub mod regression;
pub mod serving;
mod train;
pub use train::TrainingSummary;
mod udf;
pub mod vector;

use std::sync::Arc;

pub use error::{MlError, Result};
pub use frame::Frame;
pub use pipeline::{Estimator, Pipeline, PipelineModel, PipelineStage, Transformer};
pub use udf::HandleInvalid;

/// Registers mllib's plan nodes and functions in this process. The facade calls it in the
/// driver and in every executor, before any plan is encoded or decoded.
pub fn register() {
    ember_engine::extension::register(Arc::new(aggregate::MlExtension));
}
