//! k-means: k-means|| initialisation (Bahmani et al.) and Lloyd iterations, each pass one
//! tree aggregation on the executors.

use std::path::Path;
use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::aggregate::{tree_aggregate, uniform, Aggregation, DEFAULT_FAN_IN};
use crate::classification::setters;
use crate::error::{MlError, Result};
use crate::feature::column;
use crate::frame::Frame;
use crate::kernel::nearest;
use crate::persist::{self, read_arrays, read_metadata, save_stage};
use crate::pipeline::{Estimator, PredictedColumns, Transformer};
use crate::train::{pack, Packed, RunReport, TrainingSummary, FEATURES};
use crate::udf;

/// How the first centres are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum InitMode {
    /// k-means||: `init_steps` rounds of oversampled distributed k-means++ (default).
    #[default]
    #[serde(rename = "k-means||")]
    Parallel,
    /// k rows chosen at random.
    #[serde(rename = "random")]
    Random,
}

/// Parameters of [`KMeans`], with Spark ML's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KMeansParams {
    /// Vector column.
    pub features_col: String,
    /// Cluster index column (Int32).
    pub prediction_col: String,
    /// Number of clusters (default 2).
    pub k: usize,
    /// Lloyd iteration limit (default 20).
    pub max_iter: usize,
    /// Stop when no centre moves farther than this (default 1e-4).
    pub tol: f64,
    /// Random seed.
    pub seed: u64,
    /// Initialisation (default k-means||).
    pub init_mode: InitMode,
    /// Rounds of k-means|| (default 2).
    pub init_steps: usize,
    /// Tree reduction fan-in (default 8).
    pub fan_in: usize,
}

impl Default for KMeansParams {
    fn default() -> Self {
        Self {
            features_col: "features".into(),
            prediction_col: "prediction".into(),
            k: 2,
            max_iter: 20,
            tol: 1e-4,
            seed: 42,
            init_mode: InitMode::Parallel,
            init_steps: 2,
            fan_in: DEFAULT_FAN_IN,
        }
    }
}

/// k-means clustering (Spark ML's `KMeans`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KMeans {
    /// The parameters.
    pub params: KMeansParams,
}

impl KMeans {
    /// An estimator with the default parameters.
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// Sets the features column.
        features_col: String,
        /// Sets the prediction column.
        prediction_col: String,
        /// Sets k.
        k: usize,
        /// Sets the iteration limit.
        max_iter: usize,
        /// Sets the tolerance.
        tol: f64,
        /// Sets the seed.
        seed: u64,
        /// Sets the initialisation.
        init_mode: InitMode,
        /// Sets the k-means|| rounds.
        init_steps: usize,
        /// Sets the fan-in.
        fan_in: usize,
    }

    fn validate(&self) -> Result<()> {
        let p = &self.params;
        if p.k < 2 {
            return Err(MlError::param(
                "KMeans",
                "k",
                format!("must be at least 2, got {}", p.k),
            ));
        }
        if p.max_iter == 0 {
            return Err(MlError::param("KMeans", "max_iter", "must be at least 1"));
        }
        if !(p.tol >= 0.0 && p.tol.is_finite()) {
            return Err(MlError::param(
                "KMeans",
                "tol",
                format!("must be >= 0, got {}", p.tol),
            ));
        }
        if p.fan_in < 2 {
            return Err(MlError::param("KMeans", "fan_in", "must be at least 2"));
        }
        if p.init_steps == 0 {
            return Err(MlError::param("KMeans", "init_steps", "must be at least 1"));
        }
        Ok(())
    }
}

#[async_trait]
impl<F: Frame> Estimator<F> for KMeans {
    type Model = KMeansModel;

    async fn fit(&self, df: &F) -> Result<KMeansModel> {
        self.validate()?;
        let packed = pack(df, &self.params.features_col, None, "KMeans").await?;
        let result = fit_packed(&self.params, &packed).await;
        let _ = packed.frame.clone().uncache().await;
        result
    }
}

/// One tree-aggregated pass of `agg`, counted in `summary`.
async fn pass<F: Frame>(
    packed: &Packed<F>,
    agg: Aggregation,
    fan_in: usize,
    summary: &mut TrainingSummary,
) -> Result<Vec<f64>> {
    let started = Instant::now();
    let (partial, metrics) = tree_aggregate(&packed.frame, agg, fan_in).await?;
    summary.pass_time += started.elapsed();
    summary.passes += 1;
    summary.tree_levels = metrics.tree_levels;
    summary.partitions_recomputed += metrics.partitions_recomputed;
    Ok(partial)
}

async fn fit_packed<F: Frame>(p: &KMeansParams, packed: &Packed<F>) -> Result<KMeansModel> {
    let d = packed.dimension;
    let rows = packed.summary.count as usize;
    if p.k > rows {
        return Err(MlError::data(format!(
            "KMeans: k = {} is larger than the {rows} rows of column '{}'",
            p.k, p.features_col
        )));
    }
    let mut summary = TrainingSummary {
        rows,
        ..TrainingSummary::default()
    };
    let mut centres = initial_centres(p, packed, d, &mut summary).await?;
    let report = RunReport::new("KMeans");
    let k = p.k;
    let mut cost = f64::INFINITY;
    for _ in 0..p.max_iter {
        let partial = pass(
            packed,
            Aggregation::KMeans {
                features: FEATURES.into(),
                centres: centres.clone(),
                k,
            },
            p.fan_in,
            &mut summary,
        )
        .await?;
        cost = partial[k * d + k];
        summary.objective_history.push(cost);
        report.pass(&packed.frame, cost, &summary);
        let mut moved = false;
        for c in 0..k {
            let count = partial[k * d + c];
            if count == 0.0 {
                continue;
            }
            let mut shift = 0.0;
            for j in 0..d {
                let new = partial[c * d + j] / count;
                let diff = new - centres[c * d + j];
                shift += diff * diff;
                centres[c * d + j] = new;
            }
            moved |= shift > p.tol * p.tol;
        }
        summary.iterations += 1;
        if !moved {
            summary.converged = true;
            break;
        }
    }
    summary.total_time = packed.started.elapsed();
    report.ended(&packed.frame, &summary);
    Ok(KMeansModel {
        params: p.clone(),
        dimension: d,
        centres,
        training_cost: cost,
        summary,
    })
}

/// The first `k` centres (row-major).
async fn initial_centres<F: Frame>(
    p: &KMeansParams,
    packed: &Packed<F>,
    d: usize,
    summary: &mut TrainingSummary,
) -> Result<Vec<f64>> {
    let k = p.k;
    let pick = |seed: u64| Aggregation::PickOne {
        features: FEATURES.into(),
        seed,
    };
    let first = pass(packed, pick(p.seed), p.fan_in, summary).await?;
    let mut candidates: Vec<f64> = first.get(1..).unwrap_or_default().to_vec();
    if p.init_mode == InitMode::Random {
        let mut seed = p.seed;
        while candidates.len() < k * d {
            seed = seed.wrapping_add(0x9E37_79B9);
            let row = pass(packed, pick(seed), p.fan_in, summary).await?;
            candidates.extend_from_slice(row.get(1..).unwrap_or_default());
        }
        return Ok(candidates);
    }
    for step in 0..p.init_steps {
        let n = candidates.len() / d;
        let costs = pass(
            packed,
            Aggregation::KMeans {
                features: FEATURES.into(),
                centres: candidates.clone(),
                k: n,
            },
            p.fan_in,
            summary,
        )
        .await?;
        let phi = costs[n * d + n];
        if phi <= 0.0 {
            break;
        }
        let sampled = pass(
            packed,
            Aggregation::Sample {
                features: FEATURES.into(),
                centres: candidates.clone(),
                k: n,
                factor: 2.0 * k as f64 / phi,
                seed: p.seed.wrapping_add(step as u64 + 1),
            },
            p.fan_in,
            summary,
        )
        .await?;
        candidates.extend_from_slice(&sampled);
    }
    let n = candidates.len() / d;
    if n <= k {
        // Too few distinct candidates (tiny or duplicated data): top up with random rows.
        let mut seed = p.seed;
        while candidates.len() < k * d {
            seed = seed.wrapping_add(0x9E37_79B9);
            let row = pass(packed, pick(seed), p.fan_in, summary).await?;
            candidates.extend_from_slice(row.get(1..).unwrap_or_default());
        }
        return Ok(candidates[..k * d].to_vec());
    }
    // Weight each candidate by the rows nearest to it, then cluster the candidates locally.
    let weights = pass(
        packed,
        Aggregation::KMeans {
            features: FEATURES.into(),
            centres: candidates.clone(),
            k: n,
        },
        p.fan_in,
        summary,
    )
    .await?;
    let weights = &weights[n * d..n * d + n];
    Ok(local_kmeans_pp(&candidates, weights, n, d, k, p.seed))
}

/// How many times the driver clusters the k-means|| candidates, keeping the cheapest
/// result: each run is a few milliseconds on a few dozen weighted candidates, and one
/// unlucky run would otherwise fix the start of every Lloyd iteration over the data.
const LOCAL_RUNS: u64 = 10;

/// The best of [`LOCAL_RUNS`] runs of [`local_kmeans_pp_once`], by weighted cost.
fn local_kmeans_pp(
    points: &[f64],
    weights: &[f64],
    n: usize,
    d: usize,
    k: usize,
    seed: u64,
) -> Vec<f64> {
    // Converted once for every run's cost, not once per run.
    let points32: Vec<f32> = points.iter().map(|v| *v as f32).collect();
    let cost = |centres: &[f64]| -> f64 {
        (0..n)
            .map(|i| weights[i] * nearest(&points32[i * d..(i + 1) * d], centres, k, d).1)
            .sum()
    };
    (0..LOCAL_RUNS)
        .map(|run| local_kmeans_pp_once(points, weights, n, d, k, seed.wrapping_add(run)))
        .map(|centres| (cost(&centres), centres))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, centres)| centres)
        .unwrap_or_default()
}

/// Weighted greedy k-means++ then Lloyd on the driver's candidate set.
///
/// Greedy: each next centre is the best of `2 + ln k` draws (the one that lowers the
/// weighted cost most), not the first draw. With one draw, well-separated clusters still
/// leave a fair chance of a second centre inside a cluster already covered (its weight
/// times a small distance against the uncovered ones' weight times a large one), and
/// Lloyd's iterations cannot move a centre out of such a local minimum.
fn local_kmeans_pp_once(
    points: &[f64],
    weights: &[f64],
    n: usize,
    d: usize,
    k: usize,
    seed: u64,
) -> Vec<f64> {
    let point = |i: usize| &points[i * d..(i + 1) * d];
    let dist = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>();
    let mut draw = 0u64;
    let mut next = || {
        draw += 1;
        uniform(seed, u64::MAX, draw)
    };
    let total: f64 = weights.iter().sum();
    let pick = |target: f64, w: &dyn Fn(usize) -> f64| {
        let mut acc = 0.0;
        for i in 0..n {
            acc += w(i);
            if acc >= target {
                return i;
            }
        }
        n - 1
    };
    let mut centres: Vec<f64> = point(pick(next() * total, &|i| weights[i])).to_vec();
    let mut best: Vec<f64> = (0..n).map(|i| dist(point(i), &centres[..d])).collect();
    let trials = 2 + (k as f64).ln() as usize;
    while centres.len() < k * d {
        let mass: f64 = (0..n).map(|i| weights[i] * best[i]).sum();
        let chosen = if mass > 0.0 {
            // The draw whose addition leaves the smallest weighted cost.
            let cost_with = |c: usize| -> f64 {
                (0..n)
                    .map(|i| weights[i] * best[i].min(dist(point(i), point(c))))
                    .sum()
            };
            (0..trials)
                .map(|_| pick(next() * mass, &|i| weights[i] * best[i]))
                .map(|c| (cost_with(c), c))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map_or(0, |(_, c)| c)
        } else {
            (0..n).find(|i| best[*i] > 0.0).unwrap_or(0)
        };
        let c = point(chosen).to_vec();
        for (i, b) in best.iter_mut().enumerate() {
            *b = b.min(dist(point(i), &c));
        }
        centres.extend(c);
    }
    // Lloyd on the weighted candidates.
    for _ in 0..30 {
        let mut sums = vec![0.0; k * d];
        let mut counts = vec![0.0; k];
        for (i, w) in weights.iter().enumerate().take(n) {
            let x: Vec<f32> = point(i).iter().map(|v| *v as f32).collect();
            let (c, _) = nearest(&x, &centres, k, d);
            for (s, v) in sums[c * d..(c + 1) * d].iter_mut().zip(point(i)) {
                *s += w * v;
            }
            counts[c] += w;
        }
        for c in 0..k {
            if counts[c] > 0.0 {
                for j in 0..d {
                    centres[c * d + j] = sums[c * d + j] / counts[c];
                }
            }
        }
    }
    centres
}

/// A fitted k-means model.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansModel {
    /// The parameters it was fitted with.
    pub params: KMeansParams,
    /// Number of features.
    pub dimension: usize,
    /// Row-major `k x d` centres.
    pub centres: Vec<f64>,
    /// Sum of squared distances of the training rows to their centres (before the last
    /// update).
    pub training_cost: f64,
    /// How training went (empty for a loaded model).
    pub summary: TrainingSummary,
}

impl KMeansModel {
    /// The centres, one vector each.
    pub fn cluster_centers(&self) -> Vec<Vec<f64>> {
        self.centres
            .chunks(self.dimension.max(1))
            .map(<[f64]>::to_vec)
            .collect()
    }

    /// Reads a model written by [`Transformer::save`].
    ///
    /// # Errors
    ///
    /// The directory is missing or holds something else.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = read_metadata(path)?;
        persist::check_class(path, &meta.class, &["KMeansModel"])?;
        let arrays = read_arrays(path)?;
        Ok(Self {
            params: persist::param(&meta, path, "params")?,
            dimension: persist::param(&meta, path, "dimension")?,
            training_cost: persist::param(&meta, path, "training_cost")?,
            centres: persist::array(&arrays, path, "centres")?,
            summary: TrainingSummary::default(),
        })
    }
}

impl Transformer for KMeansModel {
    fn class(&self) -> &'static str {
        "KMeansModel"
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
        let prediction = udf::nearest_centre(
            column(&p.features_col),
            &udf::NearestParams {
                centres: self.centres.clone(),
                k: p.k,
            },
        );
        Ok(df.with_column(&p.prediction_col, prediction)?)
    }

    fn predicts(&self) -> Option<PredictedColumns> {
        Some(PredictedColumns {
            prediction: self.params.prediction_col.clone(),
            label: None,
        })
    }

    fn save(&self, path: &Path) -> Result<()> {
        save_stage(
            path,
            self.class(),
            serde_json::json!({
                "params": self.params,
                "dimension": self.dimension,
                "training_cost": self.training_cost,
            }),
            &[("centres", &self.centres)],
            |_| Ok(()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Candidates as k-means|| leaves them on well-separated clusters (a few per cluster,
    /// each weighted by the rows nearest to it): the local step puts exactly one centre in
    /// every cluster, for every seed tried (one plain weighted k-means++ run, without
    /// the greedy draws and the restarts, misses a cluster for 19 of these 40 seeds).
    #[test]
    fn the_local_step_covers_every_separated_cluster_once() {
        let (k, d) = (16, 32);
        let draw = |seed: u64, i: u64| uniform(0xC0FFEE, seed, i);
        let truth: Vec<f64> = (0..k * d)
            .map(|i| draw(1, i as u64) * 20.0 - 10.0)
            .collect();
        for seed in 0..40u64 {
            let mut points = Vec::new();
            let mut weights = Vec::new();
            let mut i = 0u64;
            for c in 0..k {
                let count = 1 + (draw(seed + 100, c as u64) * 5.0) as usize;
                for _ in 0..count {
                    for j in 0..d {
                        // Box-Muller: unit normal noise around the cluster's centre.
                        let (u, v) = (draw(seed + 200, i), draw(seed + 300, i));
                        i += 1;
                        let z = (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                        points.push(truth[c * d + j] + z);
                    }
                    weights.push(62_500.0 / count as f64);
                }
            }
            let n = weights.len();
            let centres = local_kmeans_pp(&points, &weights, n, d, k, seed);
            let mut covered = vec![0; k];
            for c in 0..k {
                let x: Vec<f32> = centres[c * d..(c + 1) * d]
                    .iter()
                    .map(|v| *v as f32)
                    .collect();
                let (nearest_truth, _) = nearest(&x, &truth, k, d);
                covered[nearest_truth] += 1;
            }
            assert!(
                covered.iter().all(|c| *c == 1),
                "seed {seed}: centres per cluster {covered:?}"
            );
        }
    }
}
