//! Column statistics of a vector column and a label: what fitting checks and scalers use.

#[allow(unused_imports)]
use super::*;

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

pub(super) const SUMMARY_LABEL_FIELDS: usize = 7;

impl Summary {
    pub(super) fn len(d: usize) -> usize {
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

pub(super) fn summary_partial(
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
