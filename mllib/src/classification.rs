//! Logistic regression, binary and multinomial, with L2 and elastic-net penalties, trained
//! on the executors (see [`crate::train`]).

use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::aggregate::DEFAULT_FAN_IN;
use crate::error::{MlError, Result};
use crate::feature::column;
use crate::frame::Frame;
use crate::kernel::Loss;
use crate::optim::OptimConfig;
use crate::persist::{self, read_arrays, read_metadata, save_stage};
use crate::pipeline::{Estimator, PredictedColumns, Transformer};
use crate::train::{pack, train_linear, LinearProblem, TrainingSummary};
use crate::udf;

/// Which logistic model to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Binomial when the labels are 0 and 1, multinomial otherwise.
    #[default]
    Auto,
    /// Binary: labels 0 and 1.
    Binomial,
    /// Softmax over labels 0..K.
    Multinomial,
}

/// The optimizer of a linear model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    /// L-BFGS, or OWL-QN when there is an L1 penalty.
    #[default]
    Lbfgs,
    /// Gradient descent with a fixed step size (`step_size`).
    GradientDescent,
}

/// Parameters of [`LogisticRegression`], with Spark ML's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticRegressionParams {
    /// Vector column of features.
    pub features_col: String,
    /// Label column (0 and 1, or 0..K).
    pub label_col: String,
    /// Predicted class column.
    pub prediction_col: String,
    /// Class probabilities column.
    pub probability_col: String,
    /// Raw prediction (margins) column.
    pub raw_prediction_col: String,
    /// Iteration limit (default 100).
    pub max_iter: usize,
    /// Regularization strength λ (default 0).
    pub reg_param: f64,
    /// Elastic-net mixing α: 0 is L2, 1 is L1 (default 0).
    pub elastic_net_param: f64,
    /// Convergence tolerance on the objective's relative change (default 1e-6).
    pub tol: f64,
    /// Fit an intercept (default true).
    pub fit_intercept: bool,
    /// Penalize standardized coefficients (default true); the model's coefficients are
    /// always on the original scale.
    pub standardization: bool,
    /// Binomial, multinomial or auto (default).
    pub family: Family,
    /// Binary prediction threshold on P(1) (default 0.5).
    pub threshold: f64,
    /// Optimizer (default L-BFGS).
    pub solver: Solver,
    /// Step size of gradient descent (default 1.0).
    pub step_size: f64,
    /// Most partials one merge reads in the tree reduction (default 8, at least 2).
    pub fan_in: usize,
}

impl Default for LogisticRegressionParams {
    fn default() -> Self {
        Self {
            features_col: "features".into(),
            label_col: "label".into(),
            prediction_col: "prediction".into(),
            probability_col: "probability".into(),
            raw_prediction_col: "rawPrediction".into(),
            max_iter: 100,
            reg_param: 0.0,
            elastic_net_param: 0.0,
            tol: 1e-6,
            fit_intercept: true,
            standardization: true,
            family: Family::Auto,
            threshold: 0.5,
            solver: Solver::Lbfgs,
            step_size: 1.0,
            fan_in: DEFAULT_FAN_IN,
        }
    }
}

/// Validates parameters shared by the linear models.
pub(crate) fn validate_linear(
    stage: &'static str,
    max_iter: usize,
    reg_param: f64,
    elastic_net: f64,
    tol: f64,
    fan_in: usize,
) -> Result<()> {
    if max_iter == 0 {
        return Err(MlError::param(stage, "max_iter", "must be at least 1"));
    }
    if !(reg_param >= 0.0 && reg_param.is_finite()) {
        return Err(MlError::param(
            stage,
            "reg_param",
            format!("must be >= 0, got {reg_param}"),
        ));
    }
    if !(0.0..=1.0).contains(&elastic_net) {
        return Err(MlError::param(
            stage,
            "elastic_net_param",
            format!("must be in [0, 1], got {elastic_net}"),
        ));
    }
    if !(tol >= 0.0 && tol.is_finite()) {
        return Err(MlError::param(
            stage,
            "tol",
            format!("must be >= 0, got {tol}"),
        ));
    }
    if fan_in < 2 {
        return Err(MlError::param(stage, "fan_in", "must be at least 2"));
    }
    Ok(())
}

/// Logistic regression (Spark ML's `LogisticRegression`): minimizes the mean log loss plus
/// `reg_param * (elastic_net_param * |w|_1 + (1 - elastic_net_param) / 2 * |w|_2^2)`, the
/// intercept unpenalized.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogisticRegression {
    /// The parameters.
    pub params: LogisticRegressionParams,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident : $ty:tt),* $(,)?) => {
        $( setters!(@one $(#[$doc])* $name : $ty); )*
    };
    (@one $(#[$doc:meta])* $name:ident : String) => {
        $(#[$doc])*
        pub fn $name(mut self, value: impl Into<String>) -> Self {
            self.params.$name = value.into();
            self
        }
    };
    (@one $(#[$doc:meta])* $name:ident : $ty:tt) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.params.$name = value;
            self
        }
    };
}
pub(crate) use setters;

impl LogisticRegression {
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
        /// Sets the probability column.
        probability_col: String,
        /// Sets the raw prediction column.
        raw_prediction_col: String,
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
        /// Sets the family.
        family: Family,
        /// Sets the binary threshold.
        threshold: f64,
        /// Sets the optimizer.
        solver: Solver,
        /// Sets the gradient-descent step size.
        step_size: f64,
        /// Sets the tree reduction's fan-in.
        fan_in: usize,
    }

    fn validate(&self) -> Result<()> {
        let p = &self.params;
        validate_linear(
            "LogisticRegression",
            p.max_iter,
            p.reg_param,
            p.elastic_net_param,
            p.tol,
            p.fan_in,
        )?;
        if !(0.0..=1.0).contains(&p.threshold) {
            return Err(MlError::param(
                "LogisticRegression",
                "threshold",
                format!("must be in [0, 1], got {}", p.threshold),
            ));
        }
        if !(p.step_size > 0.0 && p.step_size.is_finite()) {
            return Err(MlError::param(
                "LogisticRegression",
                "step_size",
                format!("must be > 0, got {}", p.step_size),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl<F: Frame> Estimator<F> for LogisticRegression {
    type Model = LogisticRegressionModel;

    async fn fit(&self, df: &F) -> Result<LogisticRegressionModel> {
        self.validate()?;
        let p = &self.params;
        let packed = pack(
            df,
            &p.features_col,
            Some(&p.label_col),
            "LogisticRegression",
        )
        .await?;
        let result = fit_packed(self, &packed).await;
        let _ = packed.frame.clone().uncache().await;
        result
    }
}

async fn fit_packed<F: Frame>(
    lr: &LogisticRegression,
    packed: &crate::train::Packed<F>,
) -> Result<LogisticRegressionModel> {
    let p = &lr.params;
    let s = &packed.summary;
    let (lo, hi) = s.label_range;
    if lo < 0.0 || s.fractional_labels > 0.0 {
        return Err(MlError::data(format!(
            "LogisticRegression: column '{}' must hold class labels 0, 1, 2, ...; found {} \
             (smallest {lo}, {} not whole numbers)",
            p.label_col,
            if lo < 0.0 {
                "negative labels"
            } else {
                "fractional labels"
            },
            s.fractional_labels
        )));
    }
    let classes = (hi as usize + 1).max(2);
    let multinomial = match p.family {
        Family::Binomial if classes > 2 => {
            return Err(MlError::data(format!(
                "LogisticRegression: binary logistic regression needs labels 0 and 1, but \
                 column '{}' has label {hi} (use family multinomial)",
                p.label_col
            )))
        }
        Family::Binomial => false,
        Family::Multinomial => true,
        Family::Auto => classes > 2,
    };
    let d = packed.dimension;
    let loss = if multinomial {
        Loss::Multinomial { classes }
    } else {
        Loss::Logistic
    };
    let scale = if p.standardization {
        s.std.clone()
    } else {
        vec![1.0; d]
    };
    let problem = LinearProblem {
        loss,
        dimension: d,
        reg_param: p.reg_param,
        elastic_net: p.elastic_net_param,
        fit_intercept: p.fit_intercept,
        scale,
        config: OptimConfig {
            max_iterations: p.max_iter,
            tolerance: p.tol,
            step_size: p.step_size,
            ..OptimConfig::default()
        },
        gradient_descent: p.solver == Solver::GradientDescent,
        fan_in: p.fan_in,
    };
    let mut start = vec![0.0; loss.parameters(d)];
    // Start binary models at the intercept of the label frequency, as Spark does.
    let mean = s.label_mean_std.0;
    if !multinomial && p.fit_intercept && mean > 0.0 && mean < 1.0 {
        start[d] = (mean / (1.0 - mean)).ln();
    }
    let (w, summary) = train_linear(packed, &problem, start).await?;
    let k = if multinomial { classes } else { 1 };
    let mut intercepts = w[k * d..].to_vec();
    if multinomial && p.fit_intercept {
        // Softmax is unchanged by a common shift: report centred intercepts.
        let mean = intercepts.iter().sum::<f64>() / k as f64;
        intercepts.iter_mut().for_each(|b| *b -= mean);
    }
    Ok(LogisticRegressionModel {
        params: p.clone(),
        classes,
        dimension: d,
        coefficients: w[..k * d].to_vec(),
        intercepts,
        summary,
    })
}

/// A fitted logistic regression.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticRegressionModel {
    /// The parameters it was fitted with (column names, threshold).
    pub params: LogisticRegressionParams,
    /// Number of classes (2 for binary).
    pub classes: usize,
    /// Number of features.
    pub dimension: usize,
    /// Coefficients: `d` values for a binary model, row-major `K x d` for a multinomial one.
    pub coefficients: Vec<f64>,
    /// One intercept (binary) or one per class.
    pub intercepts: Vec<f64>,
    /// How training went (empty for a loaded model).
    pub summary: TrainingSummary,
}

impl LogisticRegressionModel {
    /// Whether the model is binary.
    pub fn is_binary(&self) -> bool {
        self.intercepts.len() == 1
    }

    /// Reads a model written by [`Transformer::save`].
    ///
    /// # Errors
    ///
    /// The directory is missing or holds something else.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = read_metadata(path)?;
        persist::check_class(path, &meta.class, &["LogisticRegressionModel"])?;
        let arrays = read_arrays(path)?;
        Ok(Self {
            params: persist::param(&meta, path, "params")?,
            classes: persist::param(&meta, path, "classes")?,
            dimension: persist::param(&meta, path, "dimension")?,
            coefficients: persist::array(&arrays, path, "coefficients")?,
            intercepts: persist::array(&arrays, path, "intercepts")?,
            summary: TrainingSummary::default(),
        })
    }
}

impl Transformer for LogisticRegressionModel {
    fn class(&self) -> &'static str {
        "LogisticRegressionModel"
    }

    fn transform_logical(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<datafusion::dataframe::DataFrame> {
        let p = &self.params;
        crate::vector::check_fitted_dimension(
            df.schema().as_arrow(),
            &p.features_col,
            self.dimension,
        )?;
        let binary = self.is_binary();
        let raw = udf::linear(
            column(&p.features_col),
            &udf::LinearParams {
                coefficients: self.coefficients.clone(),
                intercepts: self.intercepts.clone(),
                binary,
                scalar: false,
            },
        );
        let df = df.with_column(&p.raw_prediction_col, raw)?;
        let prob = udf::probability(
            column(&p.raw_prediction_col),
            &udf::ProbabilityParams { binary },
        );
        let df = df.with_column(&p.probability_col, prob)?;
        let prediction = udf::predict(
            column(&p.probability_col),
            &udf::PredictParams {
                threshold: binary.then_some(p.threshold),
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
            serde_json::json!({
                "params": self.params,
                "classes": self.classes,
                "dimension": self.dimension,
            }),
            &[
                ("coefficients", &self.coefficients),
                ("intercepts", &self.intercepts),
            ],
            |_| Ok(()),
        )
    }
}
