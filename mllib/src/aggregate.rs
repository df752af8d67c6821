//! Distributed aggregations over a DataFrame's partitions: the partial each partition
//! computes (gradients, k-means sums, column statistics, ...), how partials merge, and the
//! plan node ([`TreeAggregateExec`]) that runs either step on the executors.

use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use arrow::array::{Array, Float64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use ember_driver::JobMetrics;
use ember_engine::extension::PlanExtension;
use futures::{stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::frame::Frame;
use crate::kernel::{gradient_len, kmeans_len, nearest, CpuKernel, Kernel, Loss};
use crate::vector::{dense_rows, DenseBlock};

/// Default number of partials one merge task reads (the tree's fan-in).
pub const DEFAULT_FAN_IN: usize = 8;

/// What each partition computes, and how partials merge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Aggregation {
    /// Gradient, loss and row count of `loss` at `params` (see [`gradient_len`]).
    Gradient {
        /// The loss.
        loss: Loss,
        /// Vector column.
        features: String,
        /// Label column (Float64).
        label: String,
        /// Parameters.
        params: Vec<f64>,
    },
    /// Per-centre sums, counts and total cost of assigning rows to the nearest of `k`
    /// `centres` (see [`kmeans_len`]).
    KMeans {
        /// Vector column.
        features: String,
        /// Row-major `k x d` centres.
        centres: Vec<f64>,
        /// Number of centres.
        k: usize,
    },
    /// k-means|| sampling: every row is kept with probability
    /// `min(1, factor * d(x, centres)^2)`, decided by a hash of (`seed`, partition, row).
    /// The partial is the kept rows, concatenated.
    Sample {
        /// Vector column.
        features: String,
        /// Row-major centres chosen so far.
        centres: Vec<f64>,
        /// Number of centres.
        k: usize,
        /// Oversampling factor over the current cost.
        factor: f64,
        /// Random seed of this round.
        seed: u64,
    },
    /// One row chosen uniformly at random (by the smallest hash of (`seed`, partition,
    /// row)): `[key, features...]`.
    PickOne {
        /// Vector column.
        features: String,
        /// Random seed.
        seed: u64,
    },
    /// Column statistics of a vector column and an optional label column
    /// (see [`Summary`]).
    Summary {
        /// Vector column.
        features: String,
        /// Label column (Float64), if any.
        label: Option<String>,
    },
    /// `[XᵀX ((d+1)², an intercept column of ones last), Xᵀy (d+1), yᵀy, n]`.
    Gram {
        /// Vector column.
        features: String,
        /// Label column (Float64).
        label: String,
    },
    /// Per-cluster `[count, coordinate sums (d), sum of squared norms]` of rows whose
    /// cluster is the Int32 column `cluster` (0..k).
    ClusterStats {
        /// Vector column.
        features: String,
        /// Cluster column.
        cluster: String,
        /// Number of clusters.
        k: usize,
    },
    /// `[sum of silhouettes, rows]`, from the per-cluster statistics `stats` (as
    /// [`Aggregation::ClusterStats`] computes them), squared Euclidean distance.
    Silhouette {
        /// Vector column.
        features: String,
        /// Cluster column.
        cluster: String,
        /// Number of clusters.
        k: usize,
        /// Per-cluster statistics.
        stats: Vec<f64>,
    },
}

/// The kernel the executors of this process use (CPU unless another was installed).
pub fn kernel() -> Arc<dyn Kernel> {
    KERNEL
        .get_or_init(|| RwLock::new(Arc::new(CpuKernel)))
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// Installs the kernel this process's tasks use.
pub fn set_kernel(kernel: Arc<dyn Kernel>) {
    *KERNEL
        .get_or_init(|| RwLock::new(Arc::new(CpuKernel)))
        .write()
        .unwrap_or_else(|p| p.into_inner()) = kernel;
}

static KERNEL: OnceLock<RwLock<Arc<dyn Kernel>>> = OnceLock::new();

/// Float64 column `name` of `batch` as a slice.
fn f64_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a [f64]> {
    let array = batch
        .column_by_name(name)
        .ok_or_else(|| crate::vector::missing_column(batch.schema().as_ref(), name))?;
    let values = array
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| {
            MlError::column(
                name,
                format!("expected Float64, found {}", array.data_type()),
            )
        })?;
    Ok(values.values())
}

/// The dense blocks of `batches`' `features` (and `label`) columns.
fn blocks<'a>(
    batches: &'a [RecordBatch],
    features: &str,
    label: Option<&str>,
) -> Result<Vec<DenseBlock<'a>>> {
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let array = batch
            .column_by_name(features)
            .ok_or_else(|| crate::vector::missing_column(batch.schema().as_ref(), features))?;
        let (values, rows, dimension) = dense_rows(array.as_ref(), features)?;
        let labels = match label {
            Some(l) => f64_column(batch, l)?,
            None => &[],
        };
        out.push(DenseBlock {
            features: values,
            labels,
            rows,
            dimension,
            owner: crate::vector::values_buffer(array.as_ref()),
        });
    }
    Ok(out)
}

/// A deterministic uniform number in [0, 1) for (`seed`, `partition`, `row`).
pub fn uniform(seed: u64, partition: u64, row: u64) -> f64 {
    let mut z = seed
        ^ partition.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ row.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Column statistics of a vector column (and optionally a label column), as computed by
/// [`Aggregation::Summary`].
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Rows.
    pub count: f64,
    /// Per-feature mean.
    pub mean: Vec<f64>,
    /// Per-feature unbiased standard deviation.
    pub std: Vec<f64>,
    /// Per-feature minimum.
    pub min: Vec<f64>,
    /// Per-feature maximum.
    pub max: Vec<f64>,
    /// Number of NaN or infinite feature values.
    pub non_finite_features: f64,
    /// Number of NaN or infinite labels.
    pub non_finite_labels: f64,
    /// Smallest and largest finite label.
    pub label_range: (f64, f64),
    /// Number of finite labels that are not whole numbers.
    pub fractional_labels: f64,
    /// Mean and unbiased standard deviation of the finite labels.
    pub label_mean_std: (f64, f64),
}

const SUMMARY_LABEL_FIELDS: usize = 7;

impl Summary {
    fn len(d: usize) -> usize {
        2 + 4 * d + SUMMARY_LABEL_FIELDS
    }

    /// Reads a merged summary partial of `d` features.
    pub fn from_partial(p: &[f64], d: usize) -> Result<Self> {
        if p.len() != Self::len(d) {
            return Err(MlError::data("summary partial has the wrong length"));
        }
        let n = p[0];
        let sums = &p[2..2 + d];
        let sq = &p[2 + d..2 + 2 * d];
        let mean: Vec<f64> = sums.iter().map(|s| s / n.max(1.0)).collect();
        let std = sums
            .iter()
            .zip(sq)
            .map(|(s, q)| {
                if n > 1.0 {
                    ((q - s * s / n) / (n - 1.0)).max(0.0).sqrt()
                } else {
                    0.0
                }
            })
            .collect();
        let l = &p[2 + 4 * d..];
        let finite_labels = l[6];
        let label_mean = l[4] / finite_labels.max(1.0);
        let label_std = if finite_labels > 1.0 {
            ((l[5] - l[4] * l[4] / finite_labels) / (finite_labels - 1.0))
                .max(0.0)
                .sqrt()
        } else {
            0.0
        };
        Ok(Summary {
            count: n,
            mean,
            std,
            min: p[2 + 2 * d..2 + 3 * d].to_vec(),
            max: p[2 + 3 * d..2 + 4 * d].to_vec(),
            non_finite_features: p[1],
            non_finite_labels: l[0],
            label_range: (l[1], l[2]),
            fractional_labels: l[3],
            label_mean_std: (label_mean, label_std),
        })
    }
}

impl Aggregation {
    /// The partial of one partition (`partition` seeds the random choices), with
    /// `kernel` doing the per-row math of gradients and k-means.
    pub fn partial(
        &self,
        batches: &[RecordBatch],
        partition: usize,
        kernel: &dyn Kernel,
    ) -> Result<Vec<f64>> {
        match self {
            Aggregation::Gradient {
                loss,
                features,
                label,
                params,
            } => {
                let blocks = blocks(batches, features, Some(label))?;
                let d = blocks.first().map(|b| b.dimension).unwrap_or(0);
                let d = if d == 0 {
                    dimension_from_params(*loss, params.len())
                } else {
                    d
                };
                let mut out = vec![0.0; gradient_len(*loss, d)];
                if loss.parameters(d) != params.len() {
                    return Err(MlError::data(format!(
                        "column '{features}' has {d} features, the model {} parameters",
                        params.len()
                    )));
                }
                kernel.gradient(*loss, &blocks, params, &mut out);
                Ok(out)
            }
            Aggregation::KMeans {
                features,
                centres,
                k,
            } => {
                let blocks = blocks(batches, features, None)?;
                let d = centres.len() / (*k).max(1);
                let mut out = vec![0.0; kmeans_len(*k, d)];
                if blocks.iter().any(|b| b.dimension != d) {
                    return Err(MlError::data(format!(
                        "column '{features}' does not have the centres' {d} features"
                    )));
                }
                kernel.kmeans(&blocks, centres, *k, &mut out);
                Ok(out)
            }
            Aggregation::Sample {
                features,
                centres,
                k,
                factor,
                seed,
            } => {
                let mut out = Vec::new();
                let mut row_index = 0u64;
                for block in blocks(batches, features, None)? {
                    let d = block.dimension;
                    for i in 0..block.rows {
                        let x = block.row(i);
                        let (_, dist) = nearest(x, centres, *k, d);
                        let u = uniform(*seed, partition as u64, row_index);
                        row_index += 1;
                        if u < factor * dist {
                            out.extend(x.iter().map(|v| f64::from(*v)));
                        }
                    }
                }
                Ok(out)
            }
            Aggregation::PickOne { features, seed } => {
                let mut best: Vec<f64> = Vec::new();
                let mut row_index = 0u64;
                for block in blocks(batches, features, None)? {
                    for i in 0..block.rows {
                        let key = uniform(*seed, partition as u64, row_index);
                        row_index += 1;
                        if best.is_empty() || key < best[0] {
                            best.clear();
                            best.push(key);
                            best.extend(block.row(i).iter().map(|v| f64::from(*v)));
                        }
                    }
                }
                Ok(best)
            }
            Aggregation::Summary { features, label } => {
                summary_partial(batches, features, label.as_deref())
            }
            Aggregation::Gram { features, label } => {
                let blocks = blocks(batches, features, Some(label))?;
                let Some(d) = blocks.first().map(|b| b.dimension) else {
                    return Ok(Vec::new());
                };
                let m = d + 1;
                let mut out = vec![0.0; m * m + m + 2];
                let mut row = vec![0.0; m];
                for block in &blocks {
                    for i in 0..block.rows {
                        for (r, v) in row.iter_mut().zip(block.row(i)) {
                            *r = f64::from(*v);
                        }
                        row[d] = 1.0;
                        let y = block.labels[i];
                        for a in 0..m {
                            let ra = row[a];
                            let line = &mut out[a * m..(a + 1) * m];
                            for b in a..m {
                                line[b] += ra * row[b];
                            }
                            out[m * m + a] += ra * y;
                        }
                        out[m * m + m] += y * y;
                        out[m * m + m + 1] += 1.0;
                    }
                }
                // Only the upper triangle was summed: mirror it.
                for a in 0..m {
                    for b in 0..a {
                        out[a * m + b] = out[b * m + a];
                    }
                }
                Ok(out)
            }
            Aggregation::ClusterStats {
                features,
                cluster,
                k,
            } => {
                let mut out: Vec<f64> = Vec::new();
                for batch in batches.iter().filter(|b| b.num_rows() > 0) {
                    let blocks = blocks(std::slice::from_ref(batch), features, None)?;
                    let block = &blocks[0];
                    let d = block.dimension;
                    if out.is_empty() {
                        out = vec![0.0; k * (d + 2)];
                    }
                    let clusters = crate::vector::numeric_f64(batch, cluster)?;
                    for (i, c) in clusters.iter().enumerate() {
                        let c = cluster_index(*c, *k, cluster)?;
                        let stats = &mut out[c * (d + 2)..(c + 1) * (d + 2)];
                        stats[0] += 1.0;
                        let mut norm = 0.0;
                        for (s, v) in stats[1..=d].iter_mut().zip(block.row(i)) {
                            let v = f64::from(*v);
                            *s += v;
                            norm += v * v;
                        }
                        stats[d + 1] += norm;
                    }
                }
                Ok(out)
            }
            Aggregation::Silhouette {
                features,
                cluster,
                k,
                stats,
            } => {
                let mut total = 0.0;
                let mut rows = 0.0;
                for batch in batches.iter().filter(|b| b.num_rows() > 0) {
                    let blocks = blocks(std::slice::from_ref(batch), features, None)?;
                    let block = &blocks[0];
                    let d = block.dimension;
                    let clusters = crate::vector::numeric_f64(batch, cluster)?;
                    for (i, c) in clusters.iter().enumerate() {
                        let own = cluster_index(*c, *k, cluster)?;
                        total += silhouette_of(block.row(i), own, *k, d, stats);
                        rows += 1.0;
                    }
                }
                Ok(vec![total, rows])
            }
        }
    }

    /// Merges `other` into `acc` (an empty partial is the identity).
    pub fn merge(&self, acc: &mut Vec<f64>, other: &[f64]) {
        if other.is_empty() {
            return;
        }
        if acc.is_empty() {
            acc.extend_from_slice(other);
            return;
        }
        match self {
            Aggregation::Sample { .. } => acc.extend_from_slice(other),
            Aggregation::PickOne { .. } => {
                if other[0] < acc[0] {
                    acc.clear();
                    acc.extend_from_slice(other);
                }
            }
            Aggregation::Summary { .. } => {
                let d = (acc.len() - 2 - SUMMARY_LABEL_FIELDS) / 4;
                for i in 0..2 + 2 * d {
                    acc[i] += other[i];
                }
                for i in 2 + 2 * d..2 + 3 * d {
                    acc[i] = acc[i].min(other[i]);
                }
                for i in 2 + 3 * d..2 + 4 * d {
                    acc[i] = acc[i].max(other[i]);
                }
                let l = 2 + 4 * d;
                acc[l] += other[l];
                acc[l + 1] = acc[l + 1].min(other[l + 1]);
                acc[l + 2] = acc[l + 2].max(other[l + 2]);
                for i in l + 3..l + SUMMARY_LABEL_FIELDS {
                    acc[i] += other[i];
                }
            }
            _ => {
                for (a, o) in acc.iter_mut().zip(other) {
                    *a += o;
                }
            }
        }
    }
}

fn dimension_from_params(loss: Loss, params: usize) -> usize {
    match loss {
        Loss::Logistic | Loss::Squared => params.saturating_sub(1),
        Loss::Multinomial { classes } => (params / classes.max(1)).saturating_sub(1),
    }
}

fn cluster_index(c: f64, k: usize, column: &str) -> Result<usize> {
    if c.is_finite() && c >= 0.0 && (c as usize) < k && c.fract() == 0.0 {
        Ok(c as usize)
    } else {
        Err(MlError::data(format!(
            "column '{column}' has cluster {c}, outside 0..{k}"
        )))
    }
}

/// The silhouette of `x` in cluster `own`: (b - a) / max(a, b) with a, b the mean squared
/// Euclidean distances to its own and to the nearest other cluster, from per-cluster
/// [count, sums, sum of squared norms].
fn silhouette_of(x: &[f32], own: usize, k: usize, d: usize, stats: &[f64]) -> f64 {
    let norm: f64 = x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum();
    let mean_dist = |c: usize| {
        let s = &stats[c * (d + 2)..(c + 1) * (d + 2)];
        let n = s[0];
        let dot: f64 = x
            .iter()
            .zip(&s[1..=d])
            .map(|(v, t)| f64::from(*v) * t)
            .sum();
        (n * norm - 2.0 * dot + s[d + 1], n)
    };
    let (own_sum, own_n) = mean_dist(own);
    if own_n <= 1.0 {
        return 0.0;
    }
    // The point itself contributes 0 to its own cluster's sum, so divide by n - 1.
    let a = own_sum / (own_n - 1.0);
    let b = (0..k)
        .filter(|c| *c != own)
        .filter_map(|c| {
            let (sum, n) = mean_dist(c);
            (n > 0.0).then_some(sum / n)
        })
        .fold(f64::INFINITY, f64::min);
    if !b.is_finite() {
        return 0.0;
    }
    let m = a.max(b);
    if m <= 0.0 {
        0.0
    } else {
        (b - a) / m
    }
}

fn summary_partial(
    batches: &[RecordBatch],
    features: &str,
    label: Option<&str>,
) -> Result<Vec<f64>> {
    let mut out: Vec<f64> = Vec::new();
    let mut d = 0;
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let array = batch
            .column_by_name(features)
            .ok_or_else(|| crate::vector::missing_column(batch.schema().as_ref(), features))?;
        let (values, rows, dim) = dense_rows(array.as_ref(), features)?;
        if out.is_empty() {
            d = dim;
            out = vec![0.0; Summary::len(d)];
            out[2 + 2 * d..2 + 3 * d].fill(f64::INFINITY);
            out[2 + 3 * d..2 + 4 * d].fill(f64::NEG_INFINITY);
            let l = 2 + 4 * d;
            out[l + 1] = f64::INFINITY;
            out[l + 2] = f64::NEG_INFINITY;
        }
        out[0] += rows as f64;
        for r in 0..rows {
            for (j, v) in values[r * d..(r + 1) * d].iter().enumerate() {
                let v = f64::from(*v);
                if !v.is_finite() {
                    out[1] += 1.0;
                    continue;
                }
                out[2 + j] += v;
                out[2 + d + j] += v * v;
                let min = &mut out[2 + 2 * d + j];
                *min = min.min(v);
                let max = &mut out[2 + 3 * d + j];
                *max = max.max(v);
            }
        }
        if let Some(label) = label {
            let l = 2 + 4 * d;
            for y in crate::vector::numeric_f64(batch, label)? {
                if !y.is_finite() {
                    out[l] += 1.0;
                    continue;
                }
                out[l + 1] = out[l + 1].min(y);
                out[l + 2] = out[l + 2].max(y);
                if y.fract() != 0.0 {
                    out[l + 3] += 1.0;
                }
                out[l + 4] += y;
                out[l + 5] += y * y;
                out[l + 6] += 1.0;
            }
        }
    }
    Ok(out)
}

/// Runs `agg` over `frame` on the cluster: one partial per partition, merged by tree
/// reduction with at most `fan_in` partials per merge. Returns the merged partial and the
/// job's metrics.
pub async fn tree_aggregate<F: Frame>(
    frame: &F,
    agg: Aggregation,
    fan_in: usize,
) -> Result<(Vec<f64>, JobMetrics)> {
    let agg = Arc::new(agg);
    let partial_agg = Arc::clone(&agg);
    let partial = move |input: Arc<dyn ExecutionPlan>| -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(TreeAggregateExec::new(
            Arc::clone(&partial_agg),
            false,
            input,
        )))
    };
    let merge_agg = Arc::clone(&agg);
    let merge = move |input: Arc<dyn ExecutionPlan>| -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(TreeAggregateExec::new(
            Arc::clone(&merge_agg),
            true,
            input,
        )))
    };
    let (batches, metrics) = frame.tree_aggregate(&partial, &merge, fan_in).await?;
    let mut acc = Vec::new();
    for batch in &batches {
        agg.merge(&mut acc, &partial_values(batch)?);
    }
    Ok((acc, metrics))
}

/// The partial a batch of [`TreeAggregateExec`] output holds.
fn partial_values(batch: &RecordBatch) -> Result<Vec<f64>> {
    Ok(f64_column(batch, PARTIAL_COLUMN)?.to_vec())
}

const PARTIAL_COLUMN: &str = "partial";

fn partial_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        PARTIAL_COLUMN,
        DataType::Float64,
        false,
    )]))
}

/// Computes (or, with `merge`, merges) partials of an [`Aggregation`]: output partition
/// *i* is one batch holding the partial of input partition *i* as a Float64 column.
#[derive(Debug)]
pub struct TreeAggregateExec {
    agg: Arc<Aggregation>,
    merge: bool,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl TreeAggregateExec {
    /// A partial (`merge == false`) or merge step of `agg` over `input`.
    pub fn new(agg: Arc<Aggregation>, merge: bool, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(partial_schema()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            agg,
            merge,
            input,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for TreeAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let name = match self.agg.as_ref() {
            Aggregation::Gradient { loss, .. } => format!("gradient {loss:?}"),
            Aggregation::KMeans { k, .. } => format!("k-means k={k}"),
            Aggregation::Sample { .. } => "k-means|| sample".into(),
            Aggregation::PickOne { .. } => "pick one".into(),
            Aggregation::Summary { .. } => "summary".into(),
            Aggregation::Gram { .. } => "gram".into(),
            Aggregation::ClusterStats { .. } => "cluster stats".into(),
            Aggregation::Silhouette { .. } => "silhouette".into(),
        };
        write!(
            f,
            "TreeAggregateExec: {name}, {}",
            if self.merge { "merge" } else { "partial" }
        )
    }
}

/// Runs `f` on rayon's pool and waits for it without blocking the async runtime.
async fn on_rayon<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> DfResult<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await
        .map_err(|_| DataFusionError::Internal("mllib computation was dropped".into()))
}

impl ExecutionPlan for TreeAggregateExec {
    fn name(&self) -> &str {
        "TreeAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::new(
                Arc::clone(&self.agg),
                self.merge,
                input,
            ))),
            Err(_) => Err(DataFusionError::Internal(
                "TreeAggregateExec takes one input".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let kernel = context
            .session_config()
            .get_extension::<crate::gpu::KernelExtension>()
            .map(|k| Arc::clone(&k.0))
            .unwrap_or_else(kernel);
        let input = self.input.execute(partition, context)?;
        let agg = Arc::clone(&self.agg);
        let merge = self.merge;
        let schema = partial_schema();
        let out_schema = Arc::clone(&schema);
        let batch = stream::once(async move {
            let batches: Vec<RecordBatch> = input.try_collect().await?;
            let partial = on_rayon(move || -> Result<Vec<f64>> {
                if merge {
                    let mut acc = Vec::new();
                    for b in &batches {
                        agg.merge(&mut acc, &partial_values(b)?);
                    }
                    Ok(acc)
                } else {
                    agg.partial(&batches, partition, kernel.as_ref())
                }
            })
            .await?
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok(RecordBatch::try_new(
                out_schema,
                vec![Arc::new(Float64Array::from(partial))],
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            batch.boxed(),
        )))
    }
}

/// mllib's plan extension: encodes [`TreeAggregateExec`] and provides mllib's scalar
/// functions to every process.
#[derive(Debug, Default)]
pub struct MlExtension;

#[derive(Serialize, Deserialize)]
struct EncodedAggregate {
    agg: Aggregation,
    merge: bool,
}

impl PlanExtension for MlExtension {
    fn name(&self) -> &str {
        "ember-mllib"
    }

    fn encode(&self, node: &Arc<dyn ExecutionPlan>) -> DfResult<Option<Vec<u8>>> {
        let Some(exec) = node.downcast_ref::<TreeAggregateExec>() else {
            return Ok(None);
        };
        let encoded = EncodedAggregate {
            agg: exec.agg.as_ref().clone(),
            merge: exec.merge,
        };
        serde_json::to_vec(&encoded)
            .map(Some)
            .map_err(|e| DataFusionError::Internal(format!("encoding an mllib node: {e}")))
    }

    fn decode(
        &self,
        payload: &[u8],
        children: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let decoded: EncodedAggregate = serde_json::from_slice(payload)
            .map_err(|e| DataFusionError::Internal(format!("decoding an mllib node: {e}")))?;
        let [input] = children else {
            return Err(DataFusionError::Internal(
                "TreeAggregateExec takes one input".into(),
            ));
        };
        Ok(Arc::new(TreeAggregateExec::new(
            Arc::new(decoded.agg),
            decoded.merge,
            Arc::clone(input),
        )))
    }

    fn scalar_functions(&self) -> Vec<Arc<datafusion::logical_expr::ScalarUDF>> {
        crate::udf::all()
    }
}
