//! Evaluators: metrics of a DataFrame of predictions, computed on the executors (grouped
//! counts or tree-aggregated sums), with only small results brought to the driver.

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{lit, Expr};
use datafusion::prelude::{abs, cast as cast_expr};
use serde::{Deserialize, Serialize};

use crate::aggregate::{tree_aggregate, Aggregation, DEFAULT_FAN_IN};
use crate::error::{MlError, Result};
use crate::feature::column;
use crate::frame::Frame;
use crate::udf;
use crate::vector::{check_vector_column, missing_column};

/// Float64 values of column `i` of `batches` (nulls are an error).
fn f64_values(batches: &[RecordBatch], i: usize, what: &str) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for b in batches {
        let a = cast(b.column(i), &DataType::Float64)?;
        let a = a.as_primitive::<arrow::datatypes::Float64Type>();
        if a.null_count() > 0 {
            return Err(MlError::data(format!("{what} has null values")));
        }
        out.extend_from_slice(a.values());
    }
    Ok(out)
}

fn f64_col(name: &str) -> Expr {
    cast_expr(column(name), DataType::Float64)
}

/// Binary classification metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum BinaryMetric {
    /// Area under the ROC curve (default).
    #[default]
    AreaUnderRoc,
    /// Area under the precision-recall curve.
    AreaUnderPr,
}

/// Evaluates scores of a binary classifier against 0/1 labels (Spark ML's
/// `BinaryClassificationEvaluator`); exact: rows are grouped by distinct score on the
/// executors.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryClassificationEvaluator {
    /// Score column: a raw prediction or probability vector (element 1 is used) or a
    /// Float64 score (default `rawPrediction`).
    pub raw_prediction_col: String,
    /// Label column (0 or 1).
    pub label_col: String,
    /// The metric.
    pub metric: BinaryMetric,
}

impl Default for BinaryClassificationEvaluator {
    fn default() -> Self {
        Self {
            raw_prediction_col: "rawPrediction".into(),
            label_col: "label".into(),
            metric: BinaryMetric::AreaUnderRoc,
        }
    }
}

impl BinaryClassificationEvaluator {
    /// AUC-ROC of `rawPrediction` against `label`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the score column.
    pub fn raw_prediction_col(mut self, name: impl Into<String>) -> Self {
        self.raw_prediction_col = name.into();
        self
    }

    /// Sets the label column.
    pub fn label_col(mut self, name: impl Into<String>) -> Self {
        self.label_col = name.into();
        self
    }

    /// Sets the metric.
    pub fn metric(mut self, metric: BinaryMetric) -> Self {
        self.metric = metric;
        self
    }

    /// Computes the metric over `df`.
    ///
    /// # Errors
    ///
    /// Missing or mistyped columns, labels other than 0 and 1, no rows, or only one class.
    pub async fn evaluate<F: Frame>(&self, df: &F) -> Result<f64> {
        let schema = df.schema();
        let field = schema
            .field_with_name(&self.raw_prediction_col)
            .map_err(|_| missing_column(&schema, &self.raw_prediction_col))?;
        let score = match field.data_type() {
            DataType::FixedSizeList(..) => udf::element(
                column(&self.raw_prediction_col),
                &udf::ElementParams { index: 1 },
            ),
            t if t.is_numeric() => f64_col(&self.raw_prediction_col),
            other => {
                return Err(MlError::column(
                    &self.raw_prediction_col,
                    format!("expected a score vector or number, found {other}"),
                ))
            }
        };
        crate::vector::check_numeric_column(&schema, &self.label_col)?;
        let label = f64_col(&self.label_col);
        let grouped = df.logical().clone().aggregate(
            vec![score.alias("score")],
            vec![
                sum(label.clone()).alias("positives"),
                count(lit(1)).alias("rows"),
                sum(datafusion::logical_expr::when(
                    label.clone().eq(lit(0.0)).or(label.eq(lit(1.0))),
                    lit(0i64),
                )
                .otherwise(lit(1i64))?)
                .alias("invalid"),
            ],
        )?;
        let batches = df.derive(grouped).collect_batches().await?;
        let scores = f64_values(&batches, 0, "the score column")?;
        let positives = f64_values(&batches, 1, &format!("column '{}'", self.label_col))?;
        let rows = f64_values(&batches, 2, "row counts")?;
        let invalid: f64 = f64_values(&batches, 3, "label checks")?.iter().sum();
        if invalid > 0.0 {
            return Err(MlError::data(format!(
                "BinaryClassificationEvaluator: column '{}' has {invalid} labels other than 0 \
                 and 1",
                self.label_col
            )));
        }
        if scores.iter().any(|s| !s.is_finite()) {
            return Err(MlError::data(format!(
                "BinaryClassificationEvaluator: column '{}' has NaN or infinite scores",
                self.raw_prediction_col
            )));
        }
        let mut points: Vec<(f64, f64, f64)> = scores
            .iter()
            .zip(&positives)
            .zip(&rows)
            .map(|((s, p), n)| (*s, *p, n - p))
            .collect();
        points.sort_by(|a, b| b.0.total_cmp(&a.0));
        let total_pos: f64 = points.iter().map(|p| p.1).sum();
        let total_neg: f64 = points.iter().map(|p| p.2).sum();
        if total_pos == 0.0 || total_neg == 0.0 {
            return Err(MlError::data(format!(
                "BinaryClassificationEvaluator: column '{}' needs both classes (found {total_pos} \
                 positives and {total_neg} negatives)",
                self.label_col
            )));
        }
        Ok(match self.metric {
            BinaryMetric::AreaUnderRoc => area_under_roc(&points, total_pos, total_neg),
            BinaryMetric::AreaUnderPr => area_under_pr(&points, total_pos),
        })
    }
}

/// Trapezoids under (false positive rate, true positive rate), thresholds from the highest
/// score down; `points` are (score, positives, negatives) sorted by descending score.
fn area_under_roc(points: &[(f64, f64, f64)], pos: f64, neg: f64) -> f64 {
    let (mut tp, mut fp, mut area) = (0.0, 0.0, 0.0);
    for (_, p, n) in points {
        let (x0, y0) = (fp / neg, tp / pos);
        tp += p;
        fp += n;
        area += (fp / neg - x0) * (tp / pos + y0) / 2.0;
    }
    area
}

/// Trapezoids under (recall, precision), starting at recall 0 with the first threshold's
/// precision.
fn area_under_pr(points: &[(f64, f64, f64)], pos: f64) -> f64 {
    let (mut tp, mut fp, mut area) = (0.0, 0.0, 0.0);
    let mut last: Option<(f64, f64)> = None;
    for (_, p, n) in points {
        tp += p;
        fp += n;
        let (recall, precision) = (tp / pos, tp / (tp + fp));
        let (r0, p0) = last.unwrap_or((0.0, precision));
        area += (recall - r0) * (precision + p0) / 2.0;
        last = Some((recall, precision));
    }
    area
}

/// Multiclass classification metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MulticlassMetric {
    /// Weighted F1 (default, as in Spark).
    #[default]
    F1,
    /// Fraction of rows predicted right.
    Accuracy,
    /// Precision weighted by class frequency.
    WeightedPrecision,
    /// Recall weighted by class frequency.
    WeightedRecall,
}

/// Evaluates predicted classes against labels from the confusion matrix, counted on the
/// executors (Spark ML's `MulticlassClassificationEvaluator`).
#[derive(Debug, Clone, PartialEq)]
pub struct MulticlassClassificationEvaluator {
    /// Predicted class column.
    pub prediction_col: String,
    /// Label column.
    pub label_col: String,
    /// The metric.
    pub metric: MulticlassMetric,
}

impl Default for MulticlassClassificationEvaluator {
    fn default() -> Self {
        Self {
            prediction_col: "prediction".into(),
            label_col: "label".into(),
            metric: MulticlassMetric::F1,
        }
    }
}

impl MulticlassClassificationEvaluator {
    /// Weighted F1 of `prediction` against `label`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the prediction column.
    pub fn prediction_col(mut self, name: impl Into<String>) -> Self {
        self.prediction_col = name.into();
        self
    }

    /// Sets the label column.
    pub fn label_col(mut self, name: impl Into<String>) -> Self {
        self.label_col = name.into();
        self
    }

    /// Sets the metric.
    pub fn metric(mut self, metric: MulticlassMetric) -> Self {
        self.metric = metric;
        self
    }

    /// Computes the metric over `df`.
    ///
    /// # Errors
    ///
    /// Missing or non-numeric columns, null values, or no rows.
    pub async fn evaluate<F: Frame>(&self, df: &F) -> Result<f64> {
        let schema = df.schema();
        crate::vector::check_numeric_column(&schema, &self.prediction_col)?;
        crate::vector::check_numeric_column(&schema, &self.label_col)?;
        let grouped = df.logical().clone().aggregate(
            vec![
                f64_col(&self.label_col).alias("label"),
                f64_col(&self.prediction_col).alias("prediction"),
            ],
            vec![count(lit(1)).alias("rows")],
        )?;
        let batches = df.derive(grouped).collect_batches().await?;
        let labels = f64_values(&batches, 0, &format!("column '{}'", self.label_col))?;
        let predictions = f64_values(&batches, 1, &format!("column '{}'", self.prediction_col))?;
        let rows = f64_values(&batches, 2, "row counts")?;
        multiclass_metric(self.metric, &labels, &predictions, &rows)
    }
}

fn multiclass_metric(
    metric: MulticlassMetric,
    labels: &[f64],
    predictions: &[f64],
    rows: &[f64],
) -> Result<f64> {
    use std::collections::BTreeMap;
    let n: f64 = rows.iter().sum();
    if n == 0.0 {
        return Err(MlError::data("MulticlassClassificationEvaluator: no rows"));
    }
    let key = |v: f64| v.to_bits();
    let mut per_label: BTreeMap<u64, f64> = BTreeMap::new();
    let mut per_prediction: BTreeMap<u64, f64> = BTreeMap::new();
    let mut correct: BTreeMap<u64, f64> = BTreeMap::new();
    for ((l, p), c) in labels.iter().zip(predictions).zip(rows) {
        *per_label.entry(key(*l)).or_default() += c;
        *per_prediction.entry(key(*p)).or_default() += c;
        if l == p {
            *correct.entry(key(*l)).or_default() += c;
        }
    }
    let tp = |l: u64| correct.get(&l).copied().unwrap_or(0.0);
    let precision = |l: u64| {
        let predicted = per_prediction.get(&l).copied().unwrap_or(0.0);
        if predicted > 0.0 {
            tp(l) / predicted
        } else {
            0.0
        }
    };
    let recall = |l: u64| tp(l) / per_label[&l];
    let weighted =
        |f: &dyn Fn(u64) -> f64| per_label.iter().map(|(l, c)| c / n * f(*l)).sum::<f64>();
    Ok(match metric {
        MulticlassMetric::Accuracy => correct.values().sum::<f64>() / n,
        MulticlassMetric::WeightedPrecision => weighted(&precision),
        MulticlassMetric::WeightedRecall => weighted(&recall),
        MulticlassMetric::F1 => weighted(&|l| {
            let (p, r) = (precision(l), recall(l));
            if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                0.0
            }
        }),
    })
}

/// Regression metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RegressionMetric {
    /// Root mean squared error (default).
    #[default]
    Rmse,
    /// Mean squared error.
    Mse,
    /// Mean absolute error.
    Mae,
    /// Coefficient of determination.
    R2,
}

/// Evaluates predictions against labels from sums computed on the executors (Spark ML's
/// `RegressionEvaluator`).
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionEvaluator {
    /// Prediction column.
    pub prediction_col: String,
    /// Label column.
    pub label_col: String,
    /// The metric.
    pub metric: RegressionMetric,
}

impl Default for RegressionEvaluator {
    fn default() -> Self {
        Self {
            prediction_col: "prediction".into(),
            label_col: "label".into(),
            metric: RegressionMetric::Rmse,
        }
    }
}

impl RegressionEvaluator {
    /// RMSE of `prediction` against `label`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the prediction column.
    pub fn prediction_col(mut self, name: impl Into<String>) -> Self {
        self.prediction_col = name.into();
        self
    }

    /// Sets the label column.
    pub fn label_col(mut self, name: impl Into<String>) -> Self {
        self.label_col = name.into();
        self
    }

    /// Sets the metric.
    pub fn metric(mut self, metric: RegressionMetric) -> Self {
        self.metric = metric;
        self
    }

    /// Computes the metric over `df`.
    ///
    /// # Errors
    ///
    /// Missing or non-numeric columns, null values, or no rows.
    pub async fn evaluate<F: Frame>(&self, df: &F) -> Result<f64> {
        let schema = df.schema();
        crate::vector::check_numeric_column(&schema, &self.prediction_col)?;
        crate::vector::check_numeric_column(&schema, &self.label_col)?;
        let (p, l) = (f64_col(&self.prediction_col), f64_col(&self.label_col));
        let err = p.clone() - l.clone();
        let sums = df.logical().clone().aggregate(
            vec![],
            vec![
                sum(err.clone() * err.clone()).alias("sse"),
                sum(abs(err)).alias("sae"),
                sum(l.clone()).alias("sl"),
                sum(l.clone() * l.clone()).alias("sll"),
                count(l).alias("n"),
                count(p).alias("np"),
            ],
        )?;
        let batches = df.derive(sums).collect_batches().await?;
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        let v = |i: usize| -> Result<f64> {
            Ok(f64_values(&batches, i, "regression sums")?
                .first()
                .copied()
                .unwrap_or_default())
        };
        let (sse, sae, sl, sll, n, np) = (v(0)?, v(1)?, v(2)?, v(3)?, v(4)?, v(5)?);
        if n == 0.0 {
            return Err(MlError::data("RegressionEvaluator: no rows with a label"));
        }
        if np < n {
            return Err(MlError::data(format!(
                "RegressionEvaluator: column '{}' has null predictions",
                self.prediction_col
            )));
        }
        Ok(match self.metric {
            RegressionMetric::Mse => sse / n,
            RegressionMetric::Rmse => (sse / n).sqrt(),
            RegressionMetric::Mae => sae / n,
            RegressionMetric::R2 => {
                let sst = sll - sl * sl / n;
                1.0 - sse / sst
            }
        })
    }
}

/// Evaluates a clustering by its mean silhouette with squared Euclidean distance (Spark
/// ML's `ClusteringEvaluator`), in two tree-aggregated passes: per-cluster statistics,
/// then each row's silhouette from them.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusteringEvaluator {
    /// Vector column.
    pub features_col: String,
    /// Cluster index column.
    pub prediction_col: String,
}

impl Default for ClusteringEvaluator {
    fn default() -> Self {
        Self {
            features_col: "features".into(),
            prediction_col: "prediction".into(),
        }
    }
}

impl ClusteringEvaluator {
    /// Silhouette of `prediction` over `features`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the features column.
    pub fn features_col(mut self, name: impl Into<String>) -> Self {
        self.features_col = name.into();
        self
    }

    /// Sets the prediction column.
    pub fn prediction_col(mut self, name: impl Into<String>) -> Self {
        self.prediction_col = name.into();
        self
    }

    /// Computes the mean silhouette over `df`.
    ///
    /// # Errors
    ///
    /// Missing or mistyped columns, cluster indices that are not whole numbers from 0, no
    /// rows, or fewer than two clusters.
    pub async fn evaluate<F: Frame>(&self, df: &F) -> Result<f64> {
        let schema = df.schema();
        let d = check_vector_column(&schema, &self.features_col)?;
        crate::vector::check_numeric_column(&schema, &self.prediction_col)?;
        let selected = df.derive(df.logical().clone().select(vec![
            column(&self.features_col).alias("features"),
            f64_col(&self.prediction_col).alias("cluster"),
        ])?);
        let max = selected.logical().clone().aggregate(
            vec![],
            vec![datafusion::functions_aggregate::expr_fn::max(column(
                "cluster",
            ))],
        )?;
        let batches = df.derive(max).collect_batches().await?;
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        let k = match f64_values(&batches, 0, "the cluster column") {
            Ok(v) if !v.is_empty() && v[0] >= 1.0 => v[0] as usize + 1,
            Ok(_) => {
                return Err(MlError::data(
                    "ClusteringEvaluator: the silhouette needs at least two clusters",
                ))
            }
            Err(_) => return Err(MlError::data("ClusteringEvaluator: no rows")),
        };
        let (stats, _) = tree_aggregate(
            &selected,
            Aggregation::ClusterStats {
                features: "features".into(),
                cluster: "cluster".into(),
                k,
            },
            DEFAULT_FAN_IN,
        )
        .await
        .map_err(|e| rename(e, &self.prediction_col))?;
        if stats.len() != k * (d + 2) {
            return Err(MlError::data("ClusteringEvaluator: no rows"));
        }
        let (total, _) = tree_aggregate(
            &selected,
            Aggregation::Silhouette {
                features: "features".into(),
                cluster: "cluster".into(),
                k,
                stats,
            },
            DEFAULT_FAN_IN,
        )
        .await
        .map_err(|e| rename(e, &self.prediction_col))?;
        Ok(total[0] / total[1].max(1.0))
    }
}

fn rename(e: MlError, column: &str) -> MlError {
    match e {
        MlError::InvalidData { message } => MlError::InvalidData {
            message: message.replace("'cluster'", &format!("'{column}'")),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_and_pr_areas_of_known_rankings() {
        // Perfect ranking.
        let perfect = [(0.9, 1.0, 0.0), (0.8, 1.0, 0.0), (0.2, 0.0, 1.0)];
        assert!((area_under_roc(&perfect, 2.0, 1.0) - 1.0).abs() < 1e-12);
        assert!((area_under_pr(&perfect, 2.0) - 1.0).abs() < 1e-12);
        // One tie between a positive and a negative counts half.
        let tied = [(0.5, 1.0, 1.0)];
        assert!((area_under_roc(&tied, 1.0, 1.0) - 0.5).abs() < 1e-12);
        // Reversed ranking.
        let reversed = [(0.9, 0.0, 1.0), (0.1, 1.0, 0.0)];
        assert!(area_under_roc(&reversed, 1.0, 1.0).abs() < 1e-12);
    }

    #[test]
    fn multiclass_metrics_from_confusion_counts() {
        // label 0: 3 rows, 2 right; label 1: 1 row, right; one 0 predicted as 1.
        let labels = [0.0, 0.0, 1.0];
        let predictions = [0.0, 1.0, 1.0];
        let rows = [2.0, 1.0, 1.0];
        let acc =
            multiclass_metric(MulticlassMetric::Accuracy, &labels, &predictions, &rows).unwrap();
        assert!((acc - 0.75).abs() < 1e-12);
        let f1 = multiclass_metric(MulticlassMetric::F1, &labels, &predictions, &rows).unwrap();
        // class 0: P=1, R=2/3, F1=0.8; class 1: P=0.5, R=1, F1=2/3; weights 3/4, 1/4.
        assert!((f1 - (0.75 * 0.8 + 0.25 * 2.0 / 3.0)).abs() < 1e-12);
    }
}
