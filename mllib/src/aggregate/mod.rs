//! Distributed aggregations over a DataFrame's partitions: the partial each partition
//! computes (gradients, k-means sums, column statistics, ...) and how partials merge. The
//! plan node that runs either step on the executors is in `exec`, column statistics in
//! `summary`.

mod exec;
mod summary;

pub use exec::{tree_aggregate, MlExtension, TreeAggregateExec};
pub use summary::Summary;
use summary::{summary_partial, SUMMARY_LABEL_FIELDS};

use std::fmt;
use std::sync::Arc;

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
