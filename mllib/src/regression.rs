//! Linear regression with L2 and elastic-net penalties: an exact normal-equation solve for
//! small feature counts (one pass over the data), L-BFGS / OWL-QN otherwise.

use std::path::Path;
use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::aggregate::{tree_aggregate, Aggregation, DEFAULT_FAN_IN};
use crate::classification::{setters, validate_linear};
use crate::error::{MlError, Result};
use crate::feature::column;
use crate::frame::Frame;
use crate::kernel::Loss;
use crate::optim::OptimConfig;
use crate::persist::{self, read_arrays, read_metadata, save_stage};
use crate::pipeline::{Estimator, PredictedColumns, Transformer};
use crate::train::{pack, train_linear, LinearProblem, Packed, TrainingSummary, FEATURES, LABEL};
use crate::udf;

/// Feature counts up to which `auto` solves the normal equations.
pub const NORMAL_EQUATION_MAX_FEATURES: usize = 512;

/// How [`LinearRegression`] solves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegressionSolver {
    /// Normal equations when there is no L1 penalty and at most
    /// [`NORMAL_EQUATION_MAX_FEATURES`] features, else L-BFGS.
    #[default]
    Auto,
    /// The normal equations (exact; no L1 penalty).
    Normal,
    /// L-BFGS (OWL-QN with an L1 penalty).
    Lbfgs,
}

/// Parameters of [`LinearRegression`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearRegressionParams {
    /// Vector column of features.
    pub features_col: String,
    /// Label column.
    pub label_col: String,
    /// Prediction column.
    pub prediction_col: String,
    /// Iteration limit of L-BFGS (default 100).
    pub max_iter: usize,
    /// Regularization strength λ (default 0).
    pub reg_param: f64,
    /// Elastic-net mixing α (default 0: L2).
    pub elastic_net_param: f64,
    /// Convergence tolerance (default 1e-6).
    pub tol: f64,
    /// Fit an intercept (default true).
    pub fit_intercept: bool,
    /// Penalize standardized coefficients (default true).
    pub standardization: bool,
    /// Solver (default auto).
    pub solver: RegressionSolver,
    /// Tree reduction fan-in (default 8).
    pub fan_in: usize,
}

impl Default for LinearRegressionParams {
    fn default() -> Self {
        Self {
            features_col: "features".into(),
            label_col: "label".into(),
            prediction_col: "prediction".into(),
            max_iter: 100,
            reg_param: 0.0,
            elastic_net_param: 0.0,
            tol: 1e-6,
            fit_intercept: true,
            standardization: true,
            solver: RegressionSolver::Auto,
            fan_in: DEFAULT_FAN_IN,
        }
    }
}

/// Linear regression: minimizes `1/(2n) * sum (y - w.x - b)^2 + reg_param *
/// (elastic_net_param * |w|_1 + (1 - elastic_net_param) / 2 * |w|_2^2)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinearRegression {
    /// The parameters.
    pub params: LinearRegressionParams,
}

impl LinearRegression {
    /// An estimator with the default parameters.
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// Sets the features column.
        features_col: String,
        /// Sets the label column.
        label_col: String,
        /// Sets the prediction column.
        prediction_col: String,
        /// Sets the iteration limit.
        max_iter: usize,
        /// Sets λ.
        reg_param: f64,
        /// Sets α.
        elastic_net_param: f64,
        /// Sets the tolerance.
        tol: f64,
        /// Sets whether to fit an intercept.
        fit_intercept: bool,
        /// Sets whether to standardize.
        standardization: bool,
        /// Sets the solver.
        solver: RegressionSolver,
        /// Sets the fan-in.
        fan_in: usize,
    }
}

#[async_trait]
impl<F: Frame> Estimator<F> for LinearRegression {
    type Model = LinearRegressionModel;

    async fn fit(&self, df: &F) -> Result<LinearRegressionModel> {
        let p = &self.params;
        validate_linear(
            "LinearRegression",
            p.max_iter,
            p.reg_param,
            p.elastic_net_param,
            p.tol,
            p.fan_in,
        )?;
        if p.solver == RegressionSolver::Normal && p.elastic_net_param > 0.0 && p.reg_param > 0.0 {
            return Err(MlError::param(
                "LinearRegression",
                "solver",
                "the normal equations take no L1 penalty; use lbfgs",
            ));
        }
        let packed = pack(df, &p.features_col, Some(&p.label_col), "LinearRegression").await?;
        let result = fit_packed(p, &packed).await;
        let _ = packed.frame.clone().uncache().await;
        result
    }
}

async fn fit_packed<F: Frame>(
    p: &LinearRegressionParams,
    packed: &Packed<F>,
) -> Result<LinearRegressionModel> {
    let d = packed.dimension;
    let l1 = p.reg_param * p.elastic_net_param > 0.0;
    let normal = match p.solver {
        RegressionSolver::Normal => true,
        RegressionSolver::Lbfgs => false,
        RegressionSolver::Auto => !l1 && d <= NORMAL_EQUATION_MAX_FEATURES,
    };
    let scale = if p.standardization {
        packed.summary.std.clone()
    } else {
        vec![1.0; d]
    };
    let (w, summary) = if normal {
        solve_normal(p, packed, &scale).await?
    } else {
        let problem = LinearProblem {
            loss: Loss::Squared,
            dimension: d,
            reg_param: p.reg_param,
            elastic_net: p.elastic_net_param,
            fit_intercept: p.fit_intercept,
            scale,
            config: OptimConfig {
                max_iterations: p.max_iter,
                tolerance: p.tol,
                ..OptimConfig::default()
            },
            gradient_descent: false,
            fan_in: p.fan_in,
        };
        let mut start = vec![0.0; d + 1];
        if p.fit_intercept {
            start[d] = packed.summary.label_mean_std.0;
        }
        train_linear(packed, &problem, start).await?
    };
    Ok(LinearRegressionModel {
        params: p.clone(),
        coefficients: w[..d].to_vec(),
        intercept: w[d],
        summary,
    })
}

/// One pass for XᵀX, Xᵀy; then a Cholesky solve on the driver.
async fn solve_normal<F: Frame>(
    p: &LinearRegressionParams,
    packed: &Packed<F>,
    scale: &[f64],
) -> Result<(Vec<f64>, TrainingSummary)> {
    let d = packed.dimension;
    let started = Instant::now();
    let (g, metrics) = tree_aggregate(
        &packed.frame,
        Aggregation::Gram {
            features: FEATURES.into(),
            label: LABEL.into(),
        },
        p.fan_in,
    )
    .await?;
    let m = d + 1;
    if g.len() != m * m + m + 2 || g[m * m + m + 1] <= 0.0 {
        return Err(MlError::data("LinearRegression: the data set is empty"));
    }
    let n = g[m * m + m + 1];
    let size = if p.fit_intercept { m } else { d };
    let l2 = p.reg_param * (1.0 - p.elastic_net_param);
    let mut a = vec![0.0; size * size];
    let mut b = vec![0.0; size];
    for i in 0..size {
        for j in 0..size {
            a[i * size + j] = g[i * m + j] / n;
        }
        b[i] = g[m * m + i] / n;
        if i < d {
            a[i * size + i] += l2 * scale[i] * scale[i];
        }
    }
    let x = cholesky_solve(&mut a, &mut b, size).ok_or_else(|| {
        MlError::data(format!(
            "LinearRegression: the normal equations are singular (column '{}' has collinear \
             or constant features); set reg_param > 0 or use the lbfgs solver",
            p.features_col
        ))
    })?;
    let mut w = vec![0.0; m];
    w[..size].copy_from_slice(&x);
    let summary = TrainingSummary {
        iterations: 1,
        passes: 1,
        converged: true,
        tree_levels: metrics.tree_levels,
        pass_time: started.elapsed(),
        total_time: packed.started.elapsed(),
        partitions_recomputed: metrics.partitions_recomputed,
        rows: n as usize,
        objective_history: Vec::new(),
    };
    Ok((w, summary))
}

/// Solves `a x = b` for symmetric positive definite `a` (overwritten); `None` if it is not
/// positive definite.
pub(crate) fn cholesky_solve(a: &mut [f64], b: &mut [f64], n: usize) -> Option<Vec<f64>> {
    let max_diag = (0..n).map(|i| a[i * n + i].abs()).fold(0.0, f64::max);
    for j in 0..n {
        let mut diag = a[j * n + j];
        for k in 0..j {
            diag -= a[j * n + k] * a[j * n + k];
        }
        if diag <= 1e-12 * max_diag.max(1e-300) {
            return None;
        }
        let diag = diag.sqrt();
        a[j * n + j] = diag;
        for i in j + 1..n {
            let mut v = a[i * n + j];
            for k in 0..j {
                v -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = v / diag;
        }
    }
    for i in 0..n {
        let mut v = b[i];
        for k in 0..i {
            v -= a[i * n + k] * b[k];
        }
        b[i] = v / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut v = b[i];
        for k in i + 1..n {
            v -= a[k * n + i] * b[k];
        }
        b[i] = v / a[i * n + i];
    }
    Some(b.to_vec())
}

/// A fitted linear regression.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearRegressionModel {
    /// The parameters it was fitted with.
    pub params: LinearRegressionParams,
    /// Coefficients, one per feature.
    pub coefficients: Vec<f64>,
    /// The intercept.
    pub intercept: f64,
    /// How training went (empty for a loaded model).
    pub summary: TrainingSummary,
}

impl LinearRegressionModel {
    /// Reads a model written by [`Transformer::save`].
    ///
    /// # Errors
    ///
    /// The directory is missing or holds something else.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = read_metadata(path)?;
        persist::check_class(path, &meta.class, &["LinearRegressionModel"])?;
        let arrays = read_arrays(path)?;
        let intercept = persist::array(&arrays, path, "intercept")?;
        Ok(Self {
            params: persist::param(&meta, path, "params")?,
            coefficients: persist::array(&arrays, path, "coefficients")?,
            intercept: intercept.first().copied().unwrap_or_default(),
            summary: TrainingSummary::default(),
        })
    }
}

impl Transformer for LinearRegressionModel {
    fn class(&self) -> &'static str {
        "LinearRegressionModel"
    }

    fn transform_logical(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<datafusion::dataframe::DataFrame> {
        let p = &self.params;
        crate::vector::check_fitted_dimension(
            df.schema().as_arrow(),
            &p.features_col,
            self.coefficients.len(),
        )?;
        let prediction = udf::linear(
            column(&p.features_col),
            &udf::LinearParams {
                coefficients: self.coefficients.clone(),
                intercepts: vec![self.intercept],
                binary: false,
                scalar: true,
            },
        );
        Ok(df.with_column(&p.prediction_col, prediction)?)
    }

    fn predicts(&self) -> Option<PredictedColumns> {
        Some(PredictedColumns {
            prediction: self.params.prediction_col.clone(),
            label: Some(self.params.label_col.clone()),
        })
    }

    fn save(&self, path: &Path) -> Result<()> {
        save_stage(
            path,
            self.class(),
            serde_json::json!({ "params": self.params }),
            &[
                ("coefficients", &self.coefficients),
                ("intercept", &[self.intercept]),
            ],
            |_| Ok(()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::cholesky_solve;

    #[test]
    fn cholesky_solves_and_rejects_singular() {
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let mut b = vec![2.0, 1.0];
        let x = cholesky_solve(&mut a, &mut b, 2).expect("positive definite");
        assert!((4.0 * x[0] + 2.0 * x[1] - 2.0).abs() < 1e-12);
        assert!((2.0 * x[0] + 3.0 * x[1] - 1.0).abs() < 1e-12);
        let mut s = vec![1.0, 1.0, 1.0, 1.0];
        assert!(cholesky_solve(&mut s, &mut [1.0, 1.0], 2).is_none());
    }
}
