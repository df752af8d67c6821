//! The operators `pyspark.ml` names, as Ember's mllib stages: estimators fitted into
//! [`Fitted`] models, the stateless `VectorAssembler`, the evaluators, and the model
//! attributes and training summaries a client reads.

use std::path::Path;

use datafusion::dataframe::DataFrame as DFrame;
use ember_mllib::pipeline::{Estimator, Transformer};

use super::literal;
use super::params::{self, Params, Value};
use crate::connect::error::{ConnectError, ConnectResult};
use crate::connect::proto::expression::Literal;
use crate::ml::{
    BinaryClassificationEvaluator, BinaryMetric, ClusteringEvaluator, Family, HandleInvalid,
    Imputer, ImputerModel, ImputerStrategy, InitMode, KMeans, KMeansModel, LinearRegression,
    LinearRegressionModel, LogisticRegression, LogisticRegressionModel, MinMaxScaler,
    MulticlassClassificationEvaluator, MulticlassMetric, OneHotEncoder, OneHotEncoderModel,
    RegressionEvaluator, RegressionMetric, RegressionSolver, ScalerModel, StandardScaler,
    StringIndexer, StringIndexerModel, VectorAssembler,
};
use crate::DataFrame;

/// What an operator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Fitted into a model.
    Estimator,
    /// Applied as it is.
    Transformer,
    /// Scores predictions.
    Evaluator,
    /// A fitted model.
    Model,
}

/// An operator class Ember serves: its Spark short name, role and params.
#[derive(Debug, Clone, Copy)]
pub struct Operator {
    /// The class's simple name (`LogisticRegression`).
    pub name: &'static str,
    /// The Spark package it lives in (`classification`).
    pub package: &'static str,
    /// Estimator, transformer, evaluator or model.
    pub role: Role,
    /// Its params with Spark's defaults.
    pub spec: &'static [(&'static str, params::Spec)],
}

impl Operator {
    /// The fully qualified Spark class name.
    pub fn spark_class(&self) -> String {
        format!("org.apache.spark.ml.{}.{}", self.package, self.name)
    }
}

const fn op(
    name: &'static str,
    package: &'static str,
    role: Role,
    spec: &'static [(&'static str, params::Spec)],
) -> Operator {
    Operator {
        name,
        package,
        role,
        spec,
    }
}

/// Every operator Ember serves.
pub const OPERATORS: &[Operator] = &[
    op(
        "LogisticRegression",
        "classification",
        Role::Estimator,
        params::LOGISTIC_REGRESSION,
    ),
    op(
        "LogisticRegressionModel",
        "classification",
        Role::Model,
        params::LOGISTIC_REGRESSION,
    ),
    op(
        "LinearRegression",
        "regression",
        Role::Estimator,
        params::LINEAR_REGRESSION,
    ),
    op(
        "LinearRegressionModel",
        "regression",
        Role::Model,
        params::LINEAR_REGRESSION,
    ),
    op("KMeans", "clustering", Role::Estimator, params::KMEANS),
    op("KMeansModel", "clustering", Role::Model, params::KMEANS),
    op(
        "VectorAssembler",
        "feature",
        Role::Transformer,
        params::VECTOR_ASSEMBLER,
    ),
    op(
        "StandardScaler",
        "feature",
        Role::Estimator,
        params::STANDARD_SCALER,
    ),
    op(
        "StandardScalerModel",
        "feature",
        Role::Model,
        params::STANDARD_SCALER,
    ),
    op(
        "MinMaxScaler",
        "feature",
        Role::Estimator,
        params::MIN_MAX_SCALER,
    ),
    op(
        "MinMaxScalerModel",
        "feature",
        Role::Model,
        params::MIN_MAX_SCALER,
    ),
    op(
        "StringIndexer",
        "feature",
        Role::Estimator,
        params::STRING_INDEXER,
    ),
    op(
        "StringIndexerModel",
        "feature",
        Role::Model,
        params::STRING_INDEXER,
    ),
    op(
        "OneHotEncoder",
        "feature",
        Role::Estimator,
        params::ONE_HOT_ENCODER,
    ),
    op(
        "OneHotEncoderModel",
        "feature",
        Role::Model,
        params::ONE_HOT_ENCODER,
    ),
    op("Imputer", "feature", Role::Estimator, params::IMPUTER),
    op("ImputerModel", "feature", Role::Model, params::IMPUTER),
    op(
        "BinaryClassificationEvaluator",
        "evaluation",
        Role::Evaluator,
        params::BINARY_EVALUATOR,
    ),
    op(
        "MulticlassClassificationEvaluator",
        "evaluation",
        Role::Evaluator,
        params::MULTICLASS_EVALUATOR,
    ),
    op(
        "RegressionEvaluator",
        "evaluation",
        Role::Evaluator,
        params::REGRESSION_EVALUATOR,
    ),
    op(
        "ClusteringEvaluator",
        "evaluation",
        Role::Evaluator,
        params::CLUSTERING_EVALUATOR,
    ),
];

/// The operator a client names by its Spark class (`org.apache.spark.ml....`).
pub fn operator(class: &str) -> ConnectResult<Operator> {
    let simple = class.rsplit('.').next().unwrap_or(class);
    OPERATORS
        .iter()
        .find(|o| o.name == simple && (class == simple || class == o.spark_class()))
        .copied()
        .ok_or_else(|| ConnectError::unimplemented(format!("ML operator {class}")))
}

/// The operator of a model class's estimator's model (`LogisticRegression` ->
/// `LogisticRegressionModel`).
fn model_of(estimator: &str) -> ConnectResult<Operator> {
    operator(&format!("{estimator}Model"))
}

fn ml(e: ember_mllib::MlError) -> ConnectError {
    ConnectError::Ember(crate::Error::Ml(e))
}

fn handle_invalid(p: &Params, allowed: &[&'static str]) -> ConnectResult<HandleInvalid> {
    Ok(match p.choice("handleInvalid", allowed)? {
        "skip" => HandleInvalid::Skip,
        "keep" => HandleInvalid::Keep,
        _ => HandleInvalid::Error,
    })
}

/// Input and output columns of a stage that takes one (`inputCol`) or several
/// (`inputCols`).
fn column_pairs(p: &Params) -> ConnectResult<Vec<(String, String)>> {
    let class = p.class();
    if let Some(inputs) = p.opt_strings("inputCols")? {
        let outputs = p.opt_strings("outputCols")?.ok_or_else(|| {
            ConnectError::invalid(format!("{class}: inputCols is set but outputCols is not"))
        })?;
        if inputs.len() != outputs.len() {
            return Err(ConnectError::invalid(format!(
                "{class}: {} inputCols but {} outputCols",
                inputs.len(),
                outputs.len()
            )));
        }
        return Ok(inputs.into_iter().zip(outputs).collect());
    }
    let input = p.str("inputCol")?;
    let output = p.str("outputCol")?;
    Ok(vec![(input, output)])
}

/// A model fitted by an estimator (or read back).
#[derive(Debug, Clone)]
pub enum Fitted {
    /// `LogisticRegressionModel`.
    Logistic(LogisticRegressionModel),
    /// `LinearRegressionModel`.
    Linear(LinearRegressionModel),
    /// `KMeansModel`.
    KMeans(KMeansModel),
    /// `StandardScalerModel` / `MinMaxScalerModel`.
    Scaler(ScalerModel),
    /// `StringIndexerModel`: one per input column.
    Indexer(Vec<StringIndexerModel>),
    /// `OneHotEncoderModel`: one per input column.
    OneHot(Vec<OneHotEncoderModel>),
    /// `ImputerModel`.
    Imputer(ImputerModel),
}

/// Sets the params logistic and linear regression share, read by their Spark names.
macro_rules! linear_params {
    ($q:ident, $p:ident) => {
        $q.features_col = $p.str("featuresCol")?;
        $q.label_col = $p.str("labelCol")?;
        $q.prediction_col = $p.str("predictionCol")?;
        $q.max_iter = $p.usize("maxIter")?;
        $q.reg_param = $p.f64("regParam")?;
        $q.elastic_net_param = $p.f64("elasticNetParam")?;
        $q.tol = $p.f64("tol")?;
        $q.fit_intercept = $p.bool("fitIntercept")?;
        $q.standardization = $p.bool("standardization")?;
    };
}

/// Fits estimator `op` with `p` on `df`.
pub async fn fit(op: &Operator, p: &Params, df: &DataFrame) -> ConnectResult<(Operator, Fitted)> {
    let fitted = match op.name {
        "LogisticRegression" => {
            let mut e = LogisticRegression::new();
            let q = &mut e.params;
            linear_params!(q, p);
            q.probability_col = p.str("probabilityCol")?;
            q.raw_prediction_col = p.str("rawPredictionCol")?;
            q.threshold = p.f64("threshold")?;
            q.family = match p.choice("family", &["auto", "binomial", "multinomial"])? {
                "binomial" => Family::Binomial,
                "multinomial" => Family::Multinomial,
                _ => Family::Auto,
            };
            Fitted::Logistic(e.fit(df).await.map_err(ml)?)
        }
        "LinearRegression" => {
            p.only("loss", "squaredError")?;
            let mut e = LinearRegression::new();
            let q = &mut e.params;
            linear_params!(q, p);
            q.solver = match p.choice("solver", &["auto", "normal", "l-bfgs"])? {
                "normal" => RegressionSolver::Normal,
                "l-bfgs" => RegressionSolver::Lbfgs,
                _ => RegressionSolver::Auto,
            };
            Fitted::Linear(e.fit(df).await.map_err(ml)?)
        }
        "KMeans" => {
            p.only("distanceMeasure", "euclidean")?;
            let mut e = KMeans::new();
            let q = &mut e.params;
            q.features_col = p.str("featuresCol")?;
            q.prediction_col = p.str("predictionCol")?;
            q.k = p.usize("k")?;
            q.max_iter = p.usize("maxIter")?;
            q.tol = p.f64("tol")?;
            q.init_steps = p.usize("initSteps")?;
            if p.is_set("seed") {
                q.seed = p.i64("seed")? as u64;
            }
            q.init_mode = match p.choice("initMode", &["k-means||", "random"])? {
                "random" => InitMode::Random,
                _ => InitMode::Parallel,
            };
            Fitted::KMeans(e.fit(df).await.map_err(ml)?)
        }
        "StandardScaler" => {
            let e = StandardScaler::new()
                .input_col(p.str("inputCol")?)
                .output_col(p.str("outputCol")?)
                .with_mean(p.bool("withMean")?)
                .with_std(p.bool("withStd")?);
            Fitted::Scaler(e.fit(df).await.map_err(ml)?)
        }
        "MinMaxScaler" => {
            let e = MinMaxScaler::new()
                .input_col(p.str("inputCol")?)
                .output_col(p.str("outputCol")?)
                .range(p.f64("min")?, p.f64("max")?);
            Fitted::Scaler(e.fit(df).await.map_err(ml)?)
        }
        "StringIndexer" => {
            p.only("stringOrderType", "frequencyDesc")?;
            let mode = handle_invalid(p, &["error", "skip", "keep"])?;
            let mut models = Vec::new();
            for (input, output) in column_pairs(p)? {
                let e = StringIndexer::new(input, output).handle_invalid(mode);
                models.push(e.fit(df).await.map_err(ml)?);
            }
            Fitted::Indexer(models)
        }
        "OneHotEncoder" => {
            let mode = handle_invalid(p, &["error", "keep"])?;
            let drop_last = p.bool("dropLast")?;
            let mut models = Vec::new();
            for (input, output) in column_pairs(p)? {
                let e = OneHotEncoder::new(input, output)
                    .drop_last(drop_last)
                    .handle_invalid(mode);
                models.push(e.fit(df).await.map_err(ml)?);
            }
            Fitted::OneHot(models)
        }
        "Imputer" => {
            if !p.f64("missingValue")?.is_nan() {
                return Err(ConnectError::unimplemented(
                    "param 'missingValue' of Imputer other than NaN (Ember imputes nulls and NaN)",
                ));
            }
            let (inputs, outputs): (Vec<String>, Vec<String>) =
                column_pairs(p)?.into_iter().unzip();
            let strategy = match p.choice("strategy", &["mean", "median"])? {
                "median" => ImputerStrategy::Median,
                _ => ImputerStrategy::Mean,
            };
            let e = Imputer::new(inputs).output_cols(outputs).strategy(strategy);
            Fitted::Imputer(e.fit(df).await.map_err(ml)?)
        }
        other => {
            return Err(ConnectError::invalid(format!(
                "{other} is not an estimator"
            )))
        }
    };
    Ok((model_of(op.name)?, fitted))
}

/// The stateless transformer `op` (`VectorAssembler`) with `p`; `uid` names its default
/// output column as Spark does.
pub fn transformer(op: &Operator, p: &Params, uid: &str) -> ConnectResult<VectorAssembler> {
    match op.name {
        "VectorAssembler" => {
            let inputs = p.opt_strings("inputCols")?.ok_or_else(|| {
                ConnectError::invalid("VectorAssembler needs param 'inputCols' to be set")
            })?;
            let output = p
                .opt_str("outputCol")?
                .unwrap_or_else(|| format!("{uid}__output"));
            Ok(VectorAssembler::new(inputs)
                .output_col(output)
                .handle_invalid(handle_invalid(p, &["error", "skip", "keep"])?))
        }
        other => Err(ConnectError::invalid(format!(
            "{other} is not a transformer"
        ))),
    }
}

/// Runs evaluator `op` with `p` on `df`.
pub async fn evaluate(op: &Operator, p: &Params, df: &DataFrame) -> ConnectResult<f64> {
    match op.name {
        "BinaryClassificationEvaluator" => BinaryClassificationEvaluator {
            raw_prediction_col: p.str("rawPredictionCol")?,
            label_col: p.str("labelCol")?,
            metric: match p.choice("metricName", &["areaUnderROC", "areaUnderPR"])? {
                "areaUnderPR" => BinaryMetric::AreaUnderPr,
                _ => BinaryMetric::AreaUnderRoc,
            },
        }
        .evaluate(df)
        .await
        .map_err(ml),
        "MulticlassClassificationEvaluator" => {
            let metric = p.str("metricName")?;
            let metric = match metric.as_str() {
                "f1" => MulticlassMetric::F1,
                "accuracy" => MulticlassMetric::Accuracy,
                "weightedPrecision" => MulticlassMetric::WeightedPrecision,
                "weightedRecall" => MulticlassMetric::WeightedRecall,
                other => {
                    return Err(ConnectError::unimplemented(format!(
                        "metricName '{other}' of MulticlassClassificationEvaluator (Ember has f1, accuracy, weightedPrecision, weightedRecall)"
                    )))
                }
            };
            MulticlassClassificationEvaluator {
                prediction_col: p.str("predictionCol")?,
                label_col: p.str("labelCol")?,
                metric,
            }
            .evaluate(df)
            .await
            .map_err(ml)
        }
        "RegressionEvaluator" => {
            if p.bool("throughOrigin")? {
                return Err(ConnectError::unimplemented(
                    "param 'throughOrigin' = true of RegressionEvaluator",
                ));
            }
            RegressionEvaluator {
                prediction_col: p.str("predictionCol")?,
                label_col: p.str("labelCol")?,
                metric: match p.choice("metricName", &["rmse", "mse", "mae", "r2"])? {
                    "mse" => RegressionMetric::Mse,
                    "mae" => RegressionMetric::Mae,
                    "r2" => RegressionMetric::R2,
                    _ => RegressionMetric::Rmse,
                },
            }
            .evaluate(df)
            .await
            .map_err(ml)
        }
        "ClusteringEvaluator" => {
            p.only("metricName", "silhouette")?;
            p.only("distanceMeasure", "squaredEuclidean")?;
            ClusteringEvaluator::new()
                .features_col(p.str("featuresCol")?)
                .prediction_col(p.str("predictionCol")?)
                .evaluate(df)
                .await
                .map_err(ml)
        }
        other => Err(ConnectError::invalid(format!(
            "{other} is not an evaluator"
        ))),
    }
}

/// The kind of training summary a model has (named in errors).
fn summary_metric(fitted: &Fitted) -> &'static str {
    match fitted {
        Fitted::Logistic(_) => "classification",
        Fitted::Linear(_) => "regression",
        Fitted::KMeans(_) => "clustering",
        _ => "none",
    }
}

impl Fitted {
    /// The same model with the column names and threshold a client set on it.
    pub fn with_params(&self, p: &Params) -> ConnectResult<Fitted> {
        let mut out = self.clone();
        let set = |name: &str, slot: &mut String| -> ConnectResult<()> {
            if p.is_set(name) {
                *slot = p.str(name)?;
            }
            Ok(())
        };
        match &mut out {
            Fitted::Logistic(m) => {
                let q = &mut m.params;
                set("featuresCol", &mut q.features_col)?;
                set("predictionCol", &mut q.prediction_col)?;
                set("probabilityCol", &mut q.probability_col)?;
                set("rawPredictionCol", &mut q.raw_prediction_col)?;
                if p.is_set("threshold") {
                    q.threshold = p.f64("threshold")?;
                }
            }
            Fitted::Linear(m) => {
                set("featuresCol", &mut m.params.features_col)?;
                set("predictionCol", &mut m.params.prediction_col)?;
            }
            Fitted::KMeans(m) => {
                set("featuresCol", &mut m.params.features_col)?;
                set("predictionCol", &mut m.params.prediction_col)?;
            }
            Fitted::Scaler(m) => {
                set("inputCol", &mut m.input_col)?;
                set("outputCol", &mut m.output_col)?;
            }
            Fitted::Indexer(models) if models.len() == 1 => {
                set("inputCol", &mut models[0].input_col)?;
                set("outputCol", &mut models[0].output_col)?;
            }
            Fitted::OneHot(models) if models.len() == 1 => {
                set("inputCol", &mut models[0].input_col)?;
                set("outputCol", &mut models[0].output_col)?;
            }
            _ => {}
        }
        Ok(out)
    }

    /// The model's transformation of `df` (lazy).
    pub fn transform(&self, mut df: DFrame) -> ConnectResult<DFrame> {
        let apply = |t: &dyn Transformer, df: DFrame| t.transform_logical(df).map_err(ml);
        match self {
            Fitted::Logistic(m) => apply(m, df),
            Fitted::Linear(m) => apply(m, df),
            Fitted::KMeans(m) => apply(m, df),
            Fitted::Scaler(m) => apply(m, df),
            Fitted::Imputer(m) => apply(m, df),
            Fitted::Indexer(models) => {
                for m in models {
                    df = apply(m, df)?;
                }
                Ok(df)
            }
            Fitted::OneHot(models) => {
                for m in models {
                    df = apply(m, df)?;
                }
                Ok(df)
            }
        }
    }

    /// Writes the model in Ember's model directory format (a multi-column indexer or
    /// encoder as a pipeline of one stage per column).
    pub fn save(&self, path: &Path) -> ConnectResult<()> {
        let stages = |ts: Vec<std::sync::Arc<dyn Transformer>>| {
            crate::ml::PipelineModel::new(ts).save(path).map_err(ml)
        };
        match self {
            Fitted::Logistic(m) => m.save(path).map_err(ml),
            Fitted::Linear(m) => m.save(path).map_err(ml),
            Fitted::KMeans(m) => m.save(path).map_err(ml),
            Fitted::Scaler(m) => m.save(path).map_err(ml),
            Fitted::Imputer(m) => m.save(path).map_err(ml),
            Fitted::Indexer(models) if models.len() == 1 => models[0].save(path).map_err(ml),
            Fitted::OneHot(models) if models.len() == 1 => models[0].save(path).map_err(ml),
            Fitted::Indexer(models) => stages(
                models
                    .iter()
                    .map(|m| std::sync::Arc::new(m.clone()) as std::sync::Arc<dyn Transformer>)
                    .collect(),
            ),
            Fitted::OneHot(models) => stages(
                models
                    .iter()
                    .map(|m| std::sync::Arc::new(m.clone()) as std::sync::Arc<dyn Transformer>)
                    .collect(),
            ),
        }
    }

    /// Reads a model of Spark class `name` written by [`Fitted::save`].
    pub fn load(name: &str, path: &Path) -> ConnectResult<Fitted> {
        let meta = ember_mllib::persist::read_metadata(path).map_err(ml)?;
        let per_column = |path: &Path| -> ConnectResult<Vec<std::path::PathBuf>> {
            if meta.class != "PipelineModel" {
                return Ok(vec![path.to_path_buf()]);
            }
            let n = meta
                .params
                .get("stages")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            Ok((0..n)
                .map(|i| path.join("stages").join(format!("{i:03}")))
                .collect())
        };
        Ok(match name {
            "LogisticRegressionModel" => {
                Fitted::Logistic(LogisticRegressionModel::load(path).map_err(ml)?)
            }
            "LinearRegressionModel" => {
                Fitted::Linear(LinearRegressionModel::load(path).map_err(ml)?)
            }
            "KMeansModel" => Fitted::KMeans(KMeansModel::load(path).map_err(ml)?),
            "StandardScalerModel" | "MinMaxScalerModel" => {
                let m = ScalerModel::load(path).map_err(ml)?;
                if m.class() != name {
                    return Err(ConnectError::invalid(format!(
                        "{} holds a {}, not a {name}",
                        path.display(),
                        m.class()
                    )));
                }
                Fitted::Scaler(m)
            }
            "ImputerModel" => Fitted::Imputer(ImputerModel::load(path).map_err(ml)?),
            "StringIndexerModel" => Fitted::Indexer(
                per_column(path)?
                    .iter()
                    .map(|p| StringIndexerModel::load(p).map_err(ml))
                    .collect::<ConnectResult<_>>()?,
            ),
            "OneHotEncoderModel" => Fitted::OneHot(
                per_column(path)?
                    .iter()
                    .map(|p| OneHotEncoderModel::load(p).map_err(ml))
                    .collect::<ConnectResult<_>>()?,
            ),
            other => return Err(ConnectError::unimplemented(format!("reading a {other}"))),
        })
    }

    /// `model.predict(v)` / `predictRaw(v)` / `predictProbability(v)` of one feature
    /// vector: the model's own transform of a one-row batch, run in the server's process
    /// (no cluster job for one row).
    pub async fn predict_one(
        &self,
        class: &str,
        method: &str,
        features: &[f64],
        ctx: &datafusion::prelude::SessionContext,
    ) -> ConnectResult<Literal> {
        let (input, output) = match (self, method) {
            (Fitted::Logistic(m), "predict") => (&m.params.features_col, &m.params.prediction_col),
            (Fitted::Logistic(m), "predictRaw") => {
                (&m.params.features_col, &m.params.raw_prediction_col)
            }
            (Fitted::Logistic(m), "predictProbability") => {
                (&m.params.features_col, &m.params.probability_col)
            }
            (Fitted::Linear(m), "predict") => (&m.params.features_col, &m.params.prediction_col),
            (Fitted::KMeans(m), "predict") => (&m.params.features_col, &m.params.prediction_col),
            _ => {
                return Err(ConnectError::unimplemented(format!(
                    "method {method} of {class}"
                )))
            }
        };
        let values: Vec<f32> = features.iter().map(|v| *v as f32).collect();
        let vectors =
            ember_mllib::vector::vectors_from_dense(values, features.len()).map_err(ml)?;
        let batch = arrow::array::RecordBatch::try_from_iter([(input.as_str(), vectors)])
            .map_err(|e| ConnectError::internal(e.to_string()))?;
        let out = self.transform(ctx.read_batch(batch)?)?.collect().await?;
        let column = out
            .first()
            .and_then(|b| b.column_by_name(output))
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ConnectError::internal(format!("{method} produced no {output}")))?;
        use arrow::array::{Array, AsArray};
        Ok(match column.data_type() {
            arrow::datatypes::DataType::FixedSizeList(..) => {
                let row = column.as_fixed_size_list().value(0);
                let row = arrow::compute::cast(&row, &arrow::datatypes::DataType::Float64)
                    .map_err(|e| ConnectError::internal(e.to_string()))?;
                literal::vector(row.as_primitive::<arrow::datatypes::Float64Type>().values())
            }
            arrow::datatypes::DataType::Int32 => literal::int(
                column
                    .as_primitive::<arrow::datatypes::Int32Type>()
                    .value(0),
            ),
            _ => {
                let v = arrow::compute::cast(column, &arrow::datatypes::DataType::Float64)
                    .map_err(|e| ConnectError::internal(e.to_string()))?;
                literal::double(v.as_primitive::<arrow::datatypes::Float64Type>().value(0))
            }
        })
    }

    /// Bytes the model's fitted values take (Spark's `GetModelSize`).
    pub fn size_in_bytes(&self) -> usize {
        let f = std::mem::size_of::<f64>();
        match self {
            Fitted::Logistic(m) => (m.coefficients.len() + m.intercepts.len()) * f,
            Fitted::Linear(m) => (m.coefficients.len() + 1) * f,
            Fitted::KMeans(m) => m.centres.len() * f,
            Fitted::Scaler(m) => (m.scale.len() + m.offset.len()) * f,
            Fitted::Imputer(m) => m.surrogates.len() * f,
            Fitted::Indexer(models) => models
                .iter()
                .flat_map(|m| m.labels.iter())
                .map(String::len)
                .sum(),
            Fitted::OneHot(models) => models.len() * f,
        }
    }

    /// Model attribute `method` (`coefficients`, `numClasses`, ...) as a literal.
    pub fn attribute(&self, class: &str, method: &str) -> ConnectResult<Literal> {
        let unknown = || ConnectError::unimplemented(format!("attribute {method} of {class}"));
        Ok(match (self, method) {
            (Fitted::Logistic(m), "coefficients") if m.is_binary() => {
                literal::vector(&m.coefficients)
            }
            (Fitted::Logistic(m), "intercept") if m.is_binary() => literal::double(m.intercepts[0]),
            (Fitted::Logistic(_), "coefficients" | "intercept") => {
                return Err(ConnectError::invalid(format!(
                    "Multinomial models contain a matrix of coefficients, use coefficientMatrix and interceptVector instead (asked for {method})"
                )))
            }
            (Fitted::Logistic(m), "coefficientMatrix") => {
                literal::matrix(m.intercepts.len(), m.dimension, &m.coefficients)
            }
            (Fitted::Logistic(m), "interceptVector") => literal::vector(&m.intercepts),
            (Fitted::Logistic(m), "numClasses") => literal::int(m.classes as i32),
            (Fitted::Logistic(m), "numFeatures") => literal::int(m.dimension as i32),
            (Fitted::Linear(m), "coefficients") => literal::vector(&m.coefficients),
            (Fitted::Linear(m), "intercept") => literal::double(m.intercept),
            (Fitted::Linear(_), "scale") => literal::double(1.0),
            (Fitted::Linear(m), "numFeatures") => literal::int(m.coefficients.len() as i32),
            (Fitted::KMeans(m), "clusterCenterMatrix") => {
                literal::matrix(m.params.k.min(m.centres.len() / m.dimension.max(1)), m.dimension, &m.centres)
            }
            (Fitted::KMeans(m), "clusterCenters") => literal::array(
                literal::double_type(),
                m.cluster_centers().iter().map(|c| literal::vector(c)).collect(),
            ),
            (Fitted::KMeans(m), "numFeatures") => literal::int(m.dimension as i32),
            (Fitted::Scaler(m), "mean" | "originalMin") if !m.measured[0].is_empty() => {
                literal::vector(&m.measured[0])
            }
            (Fitted::Scaler(m), "std" | "originalMax") if !m.measured[1].is_empty() => {
                literal::vector(&m.measured[1])
            }
            (Fitted::Scaler(m), "numFeatures") => literal::int(m.scale.len() as i32),
            (Fitted::Indexer(models), "labels") if models.len() == 1 => {
                literal::strings(&models[0].labels)
            }
            (Fitted::Indexer(models), "labelsArray") => literal::array(
                literal::string_type(),
                models.iter().map(|m| literal::strings(&m.labels)).collect(),
            ),
            (Fitted::OneHot(models), "categorySizes") => literal::array(
                literal::int_type(),
                models
                    .iter()
                    .map(|m| literal::int(m.categories as i32))
                    .collect(),
            ),
            _ => return Err(unknown()),
        })
    }

    /// A model attribute that is a DataFrame (`surrogateDF`).
    pub fn frame_attribute(
        &self,
        class: &str,
        method: &str,
        ctx: &datafusion::prelude::SessionContext,
    ) -> ConnectResult<DFrame> {
        match (self, method) {
            (Fitted::Imputer(m), "surrogateDF") => {
                let columns: Vec<(&str, arrow::array::ArrayRef)> = m
                    .input_cols
                    .iter()
                    .zip(&m.surrogates)
                    .map(|(c, s)| {
                        (
                            c.as_str(),
                            std::sync::Arc::new(arrow::array::Float64Array::from(vec![*s]))
                                as arrow::array::ArrayRef,
                        )
                    })
                    .collect();
                let batch = arrow::array::RecordBatch::try_from_iter(columns)
                    .map_err(|e| ConnectError::internal(e.to_string()))?;
                Ok(ctx.read_batch(batch)?)
            }
            _ => Err(ConnectError::unimplemented(format!(
                "DataFrame attribute {method} of {class}"
            ))),
        }
    }

    /// Training summary value `method`, from the training summary and (for metrics) the
    /// model's predictions on its training data `training`.
    pub async fn summary(
        &self,
        class: &str,
        method: &str,
        training: Option<&DataFrame>,
    ) -> ConnectResult<Summary> {
        let summary = match self {
            Fitted::Logistic(m) => &m.summary,
            Fitted::Linear(m) => &m.summary,
            Fitted::KMeans(m) => &m.summary,
            _ => {
                return Err(ConnectError::invalid(format!(
                    "{class} has no training summary"
                )))
            }
        };
        match method {
            "objectiveHistory" => {
                return Ok(Summary::Value(literal::doubles(&summary.objective_history)))
            }
            "totalIterations" | "numIter" => {
                return Ok(Summary::Value(literal::int(summary.iterations as i32)))
            }
            _ => {}
        }
        let columns = |name: &str| -> Option<String> {
            match (self, name) {
                (Fitted::Logistic(m), "predictionCol") => Some(m.params.prediction_col.clone()),
                (Fitted::Logistic(m), "labelCol") => Some(m.params.label_col.clone()),
                (Fitted::Logistic(m), "featuresCol") => Some(m.params.features_col.clone()),
                (Fitted::Logistic(m), "probabilityCol") => Some(m.params.probability_col.clone()),
                (Fitted::Logistic(m), "scoreCol") => Some(m.params.probability_col.clone()),
                (Fitted::Linear(m), "predictionCol") => Some(m.params.prediction_col.clone()),
                (Fitted::Linear(m), "labelCol") => Some(m.params.label_col.clone()),
                (Fitted::Linear(m), "featuresCol") => Some(m.params.features_col.clone()),
                (Fitted::KMeans(m), "predictionCol") => Some(m.params.prediction_col.clone()),
                (Fitted::KMeans(m), "featuresCol") => Some(m.params.features_col.clone()),
                _ => None,
            }
        };
        if let Some(c) = columns(method) {
            return Ok(Summary::Value(literal::string(&c)));
        }
        if let (Fitted::KMeans(m), "trainingCost") = (self, method) {
            return Ok(Summary::Value(literal::double(m.training_cost)));
        }
        if let (Fitted::KMeans(m), "k") = (self, method) {
            return Ok(Summary::Value(literal::int(
                (m.centres.len() / m.dimension.max(1)) as i32,
            )));
        }
        let training = training.ok_or_else(|| {
            ConnectError::analysis(
                "CONNECT_ML.MODEL_SUMMARY_LOST",
                format!("the training data of this {class} is not known (a model read from disk has no summary)"),
            )
        })?;
        let predictions = frame(training, self.transform(training.inner().clone())?);
        let value = |v: f64| Ok(Summary::Value(literal::double(v)));
        match (self, method) {
            (_, "predictions") => Ok(Summary::Frame(predictions.inner().clone())),
            (Fitted::Logistic(m), "areaUnderROC") => value(
                BinaryClassificationEvaluator {
                    raw_prediction_col: m.params.raw_prediction_col.clone(),
                    label_col: m.params.label_col.clone(),
                    metric: BinaryMetric::AreaUnderRoc,
                }
                .evaluate(&predictions)
                .await
                .map_err(ml)?,
            ),
            (
                Fitted::Logistic(m),
                "accuracy" | "weightedPrecision" | "weightedRecall" | "weightedFMeasure",
            ) => value(
                MulticlassClassificationEvaluator {
                    prediction_col: m.params.prediction_col.clone(),
                    label_col: m.params.label_col.clone(),
                    metric: match method {
                        "accuracy" => MulticlassMetric::Accuracy,
                        "weightedPrecision" => MulticlassMetric::WeightedPrecision,
                        "weightedRecall" => MulticlassMetric::WeightedRecall,
                        _ => MulticlassMetric::F1,
                    },
                }
                .evaluate(&predictions)
                .await
                .map_err(ml)?,
            ),
            (
                Fitted::Linear(m),
                "rootMeanSquaredError" | "meanSquaredError" | "meanAbsoluteError" | "r2",
            ) => value(
                RegressionEvaluator {
                    prediction_col: m.params.prediction_col.clone(),
                    label_col: m.params.label_col.clone(),
                    metric: match method {
                        "meanSquaredError" => RegressionMetric::Mse,
                        "meanAbsoluteError" => RegressionMetric::Mae,
                        "r2" => RegressionMetric::R2,
                        _ => RegressionMetric::Rmse,
                    },
                }
                .evaluate(&predictions)
                .await
                .map_err(ml)?,
            ),
            (_, "numInstances") => Ok(Summary::Value(literal::long(
                training.count().await.map_err(ConnectError::from)? as i64,
            ))),
            (Fitted::KMeans(m), "clusterSizes") => {
                let k = m.centres.len() / m.dimension.max(1);
                let col = datafusion::prelude::ident(&m.params.prediction_col);
                let counts = frame(
                    &predictions,
                    predictions.inner().clone().aggregate(
                        vec![col.clone()],
                        vec![datafusion::functions_aggregate::expr_fn::count(
                            datafusion::prelude::lit(1),
                        )
                        .alias("n")],
                    )?,
                )
                .collect()
                .await?;
                let mut sizes = vec![0i64; k];
                for b in &counts {
                    let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64)
                        .map_err(|e| ConnectError::internal(e.to_string()))?;
                    let ids =
                        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(&ids);
                    let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
                        b.column(1),
                    );
                    for i in 0..b.num_rows() {
                        if let Some(slot) = usize::try_from(ids.value(i))
                            .ok()
                            .and_then(|i| sizes.get_mut(i))
                        {
                            *slot = n.value(i);
                        }
                    }
                }
                Ok(Summary::Value(literal::array(
                    literal::long_type(),
                    sizes.into_iter().map(literal::long).collect(),
                )))
            }
            (Fitted::KMeans(m), "cluster") => {
                Ok(Summary::Frame(predictions.inner().clone().select(vec![
                    datafusion::prelude::ident(&m.params.prediction_col),
                ])?))
            }
            _ => Err(ConnectError::unimplemented(format!(
                "summary attribute {method} of {class} ({} summaries)",
                summary_metric(self)
            ))),
        }
    }
}

fn frame(like: &DataFrame, df: DFrame) -> DataFrame {
    DataFrame::new(like.session().clone(), df)
}

/// A summary value: a literal, or a DataFrame (`predictions`).
pub enum Summary {
    /// A value.
    Value(Literal),
    /// A DataFrame.
    Frame(DFrame),
}

/// The params a saved operator's Spark metadata lists, as values.
pub fn params_from_json(map: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, Value)> {
    map.iter()
        .map(|(k, v)| (k.clone(), Value::from_json(v)))
        .collect()
}
