//! The driver's side of iterative training: packs the training columns into a cached
//! dataset of dense `f32` blocks, checks them, and runs an optimizer whose every
//! evaluation is one tree-aggregated gradient pass on the executors.

use std::time::{Duration, Instant};

use arrow::datatypes::DataType;
use datafusion::prelude::cast as cast_expr;
use serde::{Deserialize, Serialize};

use crate::aggregate::{tree_aggregate, Aggregation, Summary};
use crate::error::{MlError, Result};
use crate::frame::Frame;
use crate::kernel::Loss;
use crate::optim::{Minimizer, OptimConfig, Step};
use crate::vector::{check_numeric_column, check_vector_column};

/// Column names of packed training data.
pub(crate) const FEATURES: &str = "features";
pub(crate) const LABEL: &str = "label";

/// What training reports besides the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Objective value after each iteration (the first is at the starting point).
    pub objective_history: Vec<f64>,
    /// Iterations (accepted optimizer steps, or Lloyd iterations for k-means).
    pub iterations: usize,
    /// Passes over the data (gradient or assignment evaluations).
    pub passes: usize,
    /// Whether the tolerance was met before the iteration limit.
    pub converged: bool,
    /// Partials per level of the last pass's tree reduction, from one per partition to
    /// the driver's one.
    pub tree_levels: Vec<usize>,
    /// Wall time of all passes.
    pub pass_time: Duration,
    /// Wall time of the whole fit (packing and checks included).
    pub total_time: Duration,
    /// Partitions recomputed from lineage during training (lost or evicted blocks).
    pub partitions_recomputed: usize,
    /// Rows trained on.
    pub rows: usize,
}

impl TrainingSummary {
    /// Mean wall time of one pass over the data.
    pub fn seconds_per_pass(&self) -> f64 {
        self.pass_time.as_secs_f64() / self.passes.max(1) as f64
    }
}

/// Numbers training runs within the process (the UI tells runs apart by it).
static NEXT_RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Reports training progress of one run to its frame's session: a pass, then its end.
pub(crate) struct RunReport {
    run: u64,
    algorithm: &'static str,
}

impl RunReport {
    /// A new run of `algorithm`.
    pub(crate) fn new(algorithm: &'static str) -> Self {
        Self {
            run: NEXT_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            algorithm,
        }
    }

    /// One pass over the data ended with `objective`.
    pub(crate) fn pass<F: Frame>(&self, frame: &F, objective: f64, summary: &TrainingSummary) {
        frame.record_training(ember_driver::SchedulerEvent::TrainingPass {
            run: self.run,
            algorithm: self.algorithm.to_string(),
            pass: summary.passes as u32,
            objective,
            tree_levels: summary.tree_levels.clone(),
            rows: summary.rows as u64,
            time_ms: ember_driver::events::now_ms(),
        });
    }

    /// The run ended.
    pub(crate) fn ended<F: Frame>(&self, frame: &F, summary: &TrainingSummary) {
        frame.record_training(ember_driver::SchedulerEvent::TrainingEnded {
            run: self.run,
            iterations: summary.iterations as u32,
            converged: summary.converged,
            objective_history: summary.objective_history.clone(),
            time_ms: ember_driver::events::now_ms(),
        });
    }
}

/// The training data packed and cached: a vector column and (optionally) a Float64 label.
pub(crate) struct Packed<F: Frame> {
    pub frame: F,
    pub summary: Summary,
    pub dimension: usize,
    pub started: Instant,
}

/// Selects `features` (and `label` as Float64) into a cached frame and checks them: an
/// empty data set, NaN or infinite values, and a label column that is not numeric are
/// errors naming the column.
pub(crate) async fn pack<F: Frame>(
    df: &F,
    features: &str,
    label: Option<&str>,
    stage: &str,
) -> Result<Packed<F>> {
    let started = Instant::now();
    let schema = df.schema();
    let dimension = check_vector_column(&schema, features)?;
    let mut columns = vec![crate::feature::column(features).alias(FEATURES)];
    if let Some(label) = label {
        check_numeric_column(&schema, label)?;
        columns.push(cast_expr(crate::feature::column(label), DataType::Float64).alias(LABEL));
    }
    let selected = df.derive(df.logical().clone().select(columns)?);
    let frame = selected.cached().await?;
    let checked = async {
        let summary =
            crate::feature::feature_summary(&frame, FEATURES, label.map(|_| LABEL), stage)
                .await
                .map_err(|e| rename_column(e, FEATURES, features))?;
        if let Some(label) = label {
            if summary.non_finite_labels > 0.0 {
                return Err(MlError::data(format!(
                    "{stage}: column '{label}' has {} NaN, infinite or null labels",
                    summary.non_finite_labels
                )));
            }
        }
        Ok(summary)
    }
    .await;
    match checked {
        Ok(summary) => Ok(Packed {
            frame,
            summary,
            dimension,
            started,
        }),
        Err(e) => {
            let _ = frame.uncache().await;
            Err(e)
        }
    }
}

/// Errors about the packed column name the user's column instead.
fn rename_column(e: MlError, packed: &str, user: &str) -> MlError {
    match e {
        MlError::InvalidData { message } => MlError::InvalidData {
            message: message.replace(&format!("'{packed}'"), &format!("'{user}'")),
        },
        other => other,
    }
}

/// A linear model's training problem, in the optimizer's coordinates: coefficient `j` is
/// multiplied by `scale[j]` (the feature's standard deviation when standardizing), so the
/// penalty applies to standardized coefficients, as in Spark ML.
pub(crate) struct LinearProblem {
    pub loss: Loss,
    pub dimension: usize,
    pub reg_param: f64,
    pub elastic_net: f64,
    pub fit_intercept: bool,
    pub scale: Vec<f64>,
    pub config: OptimConfig,
    pub gradient_descent: bool,
    pub fan_in: usize,
}

impl LinearProblem {
    fn classes(&self) -> usize {
        match self.loss {
            Loss::Multinomial { classes } => classes,
            _ => 1,
        }
    }

    /// Optimizer coordinates to model parameters.
    pub fn to_model(&self, beta: &[f64]) -> Vec<f64> {
        let d = self.dimension;
        let k = self.classes();
        let mut w = beta.to_vec();
        for c in 0..k {
            for j in 0..d {
                let s = self.scale[j];
                w[c * d + j] = if s > 0.0 { beta[c * d + j] / s } else { 0.0 };
            }
        }
        if !self.fit_intercept {
            w[k * d..].fill(0.0);
        }
        w
    }

    /// Model parameters to optimizer coordinates.
    pub fn to_optimizer(&self, w: &[f64]) -> Vec<f64> {
        let d = self.dimension;
        let mut beta = w.to_vec();
        for c in 0..self.classes() {
            for j in 0..d {
                beta[c * d + j] = w[c * d + j] * self.scale[j];
            }
        }
        beta
    }

    fn l1(&self) -> Vec<f64> {
        let d = self.dimension;
        let k = self.classes();
        let mut l1 = vec![0.0; k * (d + 1)];
        l1[..k * d].fill(self.reg_param * self.elastic_net);
        l1
    }

    fn l2(&self) -> f64 {
        self.reg_param * (1.0 - self.elastic_net)
    }
}

/// Minimizes `problem` over `packed` from model parameters `start`; returns the model
/// parameters and the training summary.
pub(crate) async fn train_linear<F: Frame>(
    packed: &Packed<F>,
    problem: &LinearProblem,
    start: Vec<f64>,
) -> Result<(Vec<f64>, TrainingSummary)> {
    let d = problem.dimension;
    let k = problem.classes();
    let l1 = problem.l1();
    let x0 = problem.to_optimizer(&start);
    let mut minimizer = if problem.gradient_descent {
        if l1.iter().any(|v| *v > 0.0) {
            return Err(MlError::param(
                "LogisticRegression",
                "solver",
                "gradient descent does not take an L1 penalty; use L-BFGS",
            ));
        }
        Minimizer::gradient_descent(x0, problem.config)
    } else if l1.iter().any(|v| *v > 0.0) {
        Minimizer::owlqn(x0, l1, problem.config)
    } else {
        Minimizer::lbfgs(x0, problem.config)
    }
    .map_err(|e| MlError::param("optimizer", "config", e.to_string()))?;
    let mut summary = TrainingSummary {
        rows: packed.summary.count as usize,
        ..TrainingSummary::default()
    };
    let report = RunReport::new(match problem.loss {
        Loss::Squared => "LinearRegression",
        Loss::Logistic | Loss::Multinomial { .. } => "LogisticRegression",
    });
    let result = loop {
        match minimizer.next_step() {
            Step::Evaluate(beta) => {
                let w = problem.to_model(&beta);
                let started = Instant::now();
                let (partial, metrics) = tree_aggregate(
                    &packed.frame,
                    Aggregation::Gradient {
                        loss: problem.loss,
                        features: FEATURES.into(),
                        label: LABEL.into(),
                        params: w,
                    },
                    problem.fan_in,
                )
                .await?;
                summary.pass_time += started.elapsed();
                summary.passes += 1;
                summary.tree_levels = metrics.tree_levels;
                summary.partitions_recomputed += metrics.partitions_recomputed;
                let n_params = problem.loss.parameters(d);
                if partial.len() != n_params + 2 || partial[n_params + 1] <= 0.0 {
                    return Err(MlError::data("the training data set is empty"));
                }
                let n = partial[n_params + 1];
                let l2 = problem.l2();
                let mut loss = partial[n_params] / n;
                let mut grad = vec![0.0; n_params];
                for c in 0..k {
                    for j in 0..d {
                        let i = c * d + j;
                        let s = problem.scale[j];
                        grad[i] = if s > 0.0 { partial[i] / n / s } else { 0.0 };
                        grad[i] += l2 * beta[i];
                        loss += 0.5 * l2 * beta[i] * beta[i];
                    }
                    if problem.fit_intercept {
                        grad[k * d + c] = partial[k * d + c] / n;
                    }
                }
                report.pass(&packed.frame, loss, &summary);
                minimizer
                    .tell(loss, grad)
                    .map_err(|e| MlError::data(format!("optimizer: {e}")))?;
            }
            Step::Done(result) => break result,
        }
    };
    summary.objective_history = result.loss_history.clone();
    summary.iterations = result.iterations;
    summary.converged = result.converged;
    summary.total_time = packed.started.elapsed();
    report.ended(&packed.frame, &summary);
    Ok((problem.to_model(&result.x), summary))
}
