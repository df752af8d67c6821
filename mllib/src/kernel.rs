//! Per-partition math behind one trait: the gradient of a loss and the k-means assignment
//! over a dense block of rows. [`CpuKernel`] runs it on rayon; a GPU kernel implements the
//! same trait.
//!
//! The CPU kernel reads the f32 features as they are cached and does the per-feature
//! arithmetic in f32 (dot products with eight running sums, gradient and centre sums over
//! blocks of [`BLOCK_ROWS`] rows), flushing each block's sums into f64: loops the compiler
//! vectorizes, compiled a second time for AVX2 and chosen at run time. Binary logistic
//! regression's sigmoid and loss run in f32 too, over a block's rows at once, with a
//! branch-free exponential and logarithm that vectorize; softmax stays in f64.
//! [`gradient_serial`] and [`kmeans_serial`] are the all-f64 references it is tested
//! against.
//!
//! Partial results are flat `f64` vectors with a fixed layout, so that merging them is an
//! element-wise sum:
//!
//! - gradient: `[gradient of every parameter..., loss sum, row count]`;
//! - k-means: `[per-centre coordinate sums (k x d)..., per-centre counts (k)..., cost]`.

use std::fmt;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::vector::DenseBlock;

/// Rows one rayon job handles: big enough to amortise scheduling, small enough to spread
/// a partition over every core.
const ROWS_PER_JOB: usize = 4096;

/// Rows whose f32 sums are flushed into the f64 partial together: short enough that an f32
/// sum of this many terms keeps about six significant digits.
pub const BLOCK_ROWS: usize = 64;

/// The loss whose gradient a pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loss {
    /// Binary logistic loss; labels 0 or 1; parameters `[w (d), b]`.
    Logistic,
    /// Softmax cross-entropy over `classes`; labels 0..classes; parameters
    /// `[w_0 (d), ..., w_{K-1} (d), b_0, ..., b_{K-1}]`.
    Multinomial {
        /// Number of classes K.
        classes: usize,
    },
    /// Half the squared error; parameters `[w (d), b]`.
    Squared,
}

impl Loss {
    /// Number of parameters for `dimension` features (intercepts included).
    pub fn parameters(&self, dimension: usize) -> usize {
        match self {
            Loss::Logistic | Loss::Squared => dimension + 1,
            Loss::Multinomial { classes } => classes * (dimension + 1),
        }
    }
}

/// Length of a gradient partial for `loss` over `dimension` features.
pub fn gradient_len(loss: Loss, dimension: usize) -> usize {
    loss.parameters(dimension) + 2
}

/// Length of a k-means partial for `k` centres of `dimension` features.
pub fn kmeans_len(k: usize, dimension: usize) -> usize {
    k * dimension + k + 1
}

/// The per-partition computations of mllib's iterative algorithms.
pub trait Kernel: Send + Sync + fmt::Debug {
    /// The device, as reported in metrics (`cpu`, or an adapter's name).
    fn device(&self) -> String;

    /// Adds to `out` (laid out as [`gradient_len`]) the gradient and loss of `loss` over
    /// the rows of `blocks` at `params`, and the row count.
    fn gradient(&self, loss: Loss, blocks: &[DenseBlock<'_>], params: &[f64], out: &mut [f64]);

    /// Adds to `out` (laid out as [`kmeans_len`]) the sums and counts of the rows nearest
    /// each of the `k` `centres` (row-major `k x d`), and the summed squared distances.
    fn kmeans(&self, blocks: &[DenseBlock<'_>], centres: &[f64], k: usize, out: &mut [f64]);
}

/// The CPU kernel: rows split over rayon's pool, each job summing into its own partial.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuKernel;

impl Kernel for CpuKernel {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn gradient(&self, loss: Loss, blocks: &[DenseBlock<'_>], params: &[f64], out: &mut [f64]) {
        let total = parallel_sum(blocks, out.len(), |chunk, acc| {
            gradient_f32(loss, chunk, params, acc)
        });
        add(out, &total);
    }

    fn kmeans(&self, blocks: &[DenseBlock<'_>], centres: &[f64], k: usize, out: &mut [f64]) {
        let total = parallel_sum(blocks, out.len(), |chunk, acc| {
            kmeans_f32(chunk, centres, k, acc)
        });
        add(out, &total);
    }
}

fn add(out: &mut [f64], partial: &[f64]) {
    for (o, p) in out.iter_mut().zip(partial) {
        *o += p;
    }
}

/// Runs `f` over row chunks of `blocks` on rayon and sums the partials.
fn parallel_sum<F>(blocks: &[DenseBlock<'_>], len: usize, f: F) -> Vec<f64>
where
    F: Fn(&DenseBlock<'_>, &mut [f64]) + Sync,
{
    let jobs: Vec<(usize, usize, usize)> = blocks
        .iter()
        .enumerate()
        .flat_map(|(b, block)| {
            (0..block.rows)
                .step_by(ROWS_PER_JOB)
                .map(move |start| (b, start, (start + ROWS_PER_JOB).min(block.rows)))
        })
        .collect();
    if jobs.len() <= 1 {
        let mut acc = vec![0.0; len];
        for block in blocks {
            f(block, &mut acc);
        }
        return acc;
    }
    jobs.into_par_iter()
        .fold(
            || vec![0.0; len],
            |mut acc, (b, start, end)| {
                f(&blocks[b].slice(start, end), &mut acc);
                acc
            },
        )
        .reduce(
            || vec![0.0; len],
            |mut a, b| {
                add(&mut a, &b);
                a
            },
        )
}

/// The CPU kernel's gradient over `block` on one thread: f32 arithmetic per feature,
/// flushed to f64 every [`BLOCK_ROWS`] rows (see the module documentation); same layout
/// as [`gradient_serial`].
pub fn gradient_f32(loss: Loss, block: &DenseBlock<'_>, params: &[f64], out: &mut [f64]) {
    let params32: Vec<f32> = params.iter().map(|v| *v as f32).collect();
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU was just found to have AVX2 and FMA.
        return unsafe { simd::gradient_avx2(loss, block, params, &params32, out) };
    }
    gradient_blocks(loss, block, params, &params32, out)
}

/// The CPU kernel's k-means assignment over `block` on one thread (f32 distances and
/// sums, flushed to f64 every [`BLOCK_ROWS`] rows); same layout as [`kmeans_serial`].
pub fn kmeans_f32(block: &DenseBlock<'_>, centres: &[f64], k: usize, out: &mut [f64]) {
    let centres32: Vec<f32> = centres.iter().map(|v| *v as f32).collect();
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU was just found to have AVX2 and FMA.
        return unsafe { simd::kmeans_avx2(block, &centres32, k, out) };
    }
    kmeans_blocks(block, &centres32, k, out)
}

/// The same loops compiled for AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gradient_avx2(
        loss: Loss,
        block: &DenseBlock<'_>,
        params: &[f64],
        params32: &[f32],
        out: &mut [f64],
    ) {
        gradient_blocks(loss, block, params, params32, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kmeans_avx2(
        block: &DenseBlock<'_>,
        centres32: &[f32],
        k: usize,
        out: &mut [f64],
    ) {
        kmeans_blocks(block, centres32, k, out)
    }
}

/// `x . w` in f32 with eight running sums (one vector register's worth).
#[inline(always)]
fn dot32(x: &[f32], w: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (xs, ws) = (x.chunks_exact(8), w.chunks_exact(8));
    let tail: f32 = xs
        .remainder()
        .iter()
        .zip(ws.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xs.zip(ws) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `acc += scale * x` in f32.
#[inline(always)]
fn axpy32(acc: &mut [f32], scale: f32, x: &[f32]) {
    for (a, v) in acc.iter_mut().zip(x) {
        *a += scale * v;
    }
}

/// Squared distance in f32 with eight running sums.
#[inline(always)]
fn distance32(x: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (xs, cs) = (x.chunks_exact(8), c.chunks_exact(8));
    let tail: f32 = xs
        .remainder()
        .iter()
        .zip(cs.remainder())
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    for (a, b) in xs.zip(cs) {
        for l in 0..8 {
            let diff = a[l] - b[l];
            acc[l] += diff * diff;
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Adds the f32 sums into the f64 ones and clears them.
#[inline(always)]
fn flush(out: &mut [f64], sums: &mut [f32]) {
    for (o, s) in out.iter_mut().zip(sums.iter_mut()) {
        *o += f64::from(*s);
        *s = 0.0;
    }
}

/// Residual (`sigmoid(m) - y`) and loss (`softplus(m) - y m`) of each row of binary
/// logistic regression, from one exponential of `-|m|` and one `ln(1 + e)` in f32.
#[inline(always)]
fn logistic_rows(margins: &[f32], labels: &[f32], residuals: &mut [f32], losses: &mut [f32]) {
    for (((m, y), r), l) in margins.iter().zip(labels).zip(residuals).zip(losses) {
        let e = exp32(-m.abs());
        let inverse = 1.0 / (1.0 + e);
        let sigmoid = if *m >= 0.0 { inverse } else { e * inverse };
        *r = sigmoid - y;
        *l = m.max(0.0) + ln_1p_unit32(e) - y * m;
    }
}

/// `exp(x)` for `x <= 0` in f32, branch-free (so it vectorizes): `x = n ln 2 + r`, a
/// degree-7 Taylor polynomial for `exp(r)` on |r| <= ln(2)/2 and `2^n` put in the exponent bits.
/// Relative error within a few f32 ulps (tested at 4e-7); 0 below -87.
#[inline(always)]
fn exp32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `ln(1 + e)` for `e` in [0, 1] in f32, branch-free: `2 atanh(s)` with `s = e / (2 + e)`
/// (at most 1/3) as its odd series to `s^13`. Relative error within a few f32 ulps (tested
/// at 4e-7).
#[inline(always)]
fn ln_1p_unit32(e: f32) -> f32 {
    let s = e / (2.0 + e);
    let s2 = s * s;
    let series = 1.0
        + s2 * (1.0 / 3.0
            + s2 * (1.0 / 5.0
                + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 * (1.0 / 13.0))))));
    2.0 * s * series
}

#[inline(always)]
fn gradient_blocks(
    loss: Loss,
    block: &DenseBlock<'_>,
    params: &[f64],
    params32: &[f32],
    out: &mut [f64],
) {
    let d = block.dimension;
    let n_params = loss.parameters(d);
    let (grad, rest) = out.split_at_mut(n_params);
    let mut loss_sum = 0.0;
    let mut residuals = [0.0f32; BLOCK_ROWS];
    match loss {
        Loss::Logistic | Loss::Squared => {
            let (w, b) = (&params32[..d], params32[d]);
            let (gw, gb) = grad.split_at_mut(d);
            let mut sums = vec![0.0f32; d];
            let mut margins = [0.0f32; BLOCK_ROWS];
            let mut labels = [0.0f32; BLOCK_ROWS];
            let mut losses = [0.0f32; BLOCK_ROWS];
            for start in (0..block.rows).step_by(BLOCK_ROWS) {
                let n = (start + BLOCK_ROWS).min(block.rows) - start;
                for (j, i) in (start..start + n).enumerate() {
                    margins[j] = dot32(block.row(i), w) + b;
                    labels[j] = block.labels[i] as f32;
                }
                // Residuals and losses of the block's rows: no sums inside, so the loop
                // (exponential and logarithm included) runs on vector lanes.
                if loss == Loss::Logistic {
                    logistic_rows(
                        &margins[..n],
                        &labels[..n],
                        &mut residuals[..n],
                        &mut losses[..n],
                    );
                } else {
                    for j in 0..n {
                        let r = margins[j] - labels[j];
                        residuals[j] = r;
                        losses[j] = 0.5 * r * r;
                    }
                }
                gb[0] += residuals[..n].iter().map(|r| f64::from(*r)).sum::<f64>();
                loss_sum += losses[..n].iter().map(|l| f64::from(*l)).sum::<f64>();
                for (r, i) in residuals.iter().zip(start..start + n) {
                    axpy32(&mut sums, *r, block.row(i));
                }
                flush(gw, &mut sums);
            }
        }
        Loss::Multinomial { classes } => {
            let (w, b) = (&params32[..classes * d], &params[classes * d..]);
            let mut sums = vec![0.0f32; classes * d];
            let mut margins = vec![0.0f64; classes];
            for start in (0..block.rows).step_by(BLOCK_ROWS) {
                let end = (start + BLOCK_ROWS).min(block.rows);
                for i in start..end {
                    let x = block.row(i);
                    let y = (block.labels[i] as usize).min(classes - 1);
                    let mut max = f64::NEG_INFINITY;
                    for (c, m) in margins.iter_mut().enumerate() {
                        *m = f64::from(dot32(x, &w[c * d..(c + 1) * d])) + b[c];
                        max = max.max(*m);
                    }
                    let total = softmax_terms(&mut margins, max, y, &mut loss_sum);
                    for (c, e) in margins.iter().enumerate() {
                        let residual = e / total - if c == y { 1.0 } else { 0.0 };
                        axpy32(&mut sums[c * d..(c + 1) * d], residual as f32, x);
                        grad[classes * d + c] += residual;
                    }
                }
                flush(&mut grad[..classes * d], &mut sums);
            }
        }
    }
    rest[0] += loss_sum;
    rest[1] += block.rows as f64;
}

#[inline(always)]
fn kmeans_blocks(block: &DenseBlock<'_>, centres32: &[f32], k: usize, out: &mut [f64]) {
    let d = block.dimension;
    let mut sums = vec![0.0f32; k * d];
    let mut counts = vec![0u64; k];
    let mut cost = 0.0;
    for start in (0..block.rows).step_by(BLOCK_ROWS) {
        let end = (start + BLOCK_ROWS).min(block.rows);
        for i in start..end {
            let x = block.row(i);
            let mut best = (0, f32::INFINITY);
            for c in 0..k {
                let dist = distance32(x, &centres32[c * d..(c + 1) * d]);
                if dist < best.1 {
                    best = (c, dist);
                }
            }
            axpy32(&mut sums[best.0 * d..(best.0 + 1) * d], 1.0, x);
            counts[best.0] += 1;
            cost += f64::from(best.1);
        }
        flush(&mut out[..k * d], &mut sums);
    }
    for (o, n) in out[k * d..k * d + k].iter_mut().zip(&counts) {
        *o += *n as f64;
    }
    out[k * d + k] += cost;
}

/// Turns a row's class `margins` (largest `max`) into `exp(m - max)`, adds the row's
/// cross-entropy (log-sum-exp minus the true class `y`'s margin) to `loss`, and returns
/// the sum of the exponentials.
#[inline(always)]
fn softmax_terms(margins: &mut [f64], max: f64, y: usize, loss: &mut f64) -> f64 {
    let true_margin = margins[y];
    let mut sum = 0.0;
    for m in margins.iter_mut() {
        *m = (*m - max).exp();
        sum += *m;
    }
    *loss += sum.ln() + max - true_margin;
    sum
}

/// `x . w` with `x` in f32 and `w` in f64, four running sums.
#[inline]
fn dot(x: &[f32], w: &[f64]) -> f64 {
    let mut s = [0.0f64; 4];
    let mut xc = x.chunks_exact(4);
    let mut wc = w.chunks_exact(4);
    for (a, b) in (&mut xc).zip(&mut wc) {
        s[0] += f64::from(a[0]) * b[0];
        s[1] += f64::from(a[1]) * b[1];
        s[2] += f64::from(a[2]) * b[2];
        s[3] += f64::from(a[3]) * b[3];
    }
    let mut tail = 0.0;
    for (a, b) in xc.remainder().iter().zip(wc.remainder()) {
        tail += f64::from(*a) * b;
    }
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

/// `acc += scale * x`.
#[inline]
fn axpy(acc: &mut [f64], scale: f64, x: &[f32]) {
    for (a, v) in acc.iter_mut().zip(x) {
        *a += scale * f64::from(*v);
    }
}

/// `log(1 + exp(m))` without overflow.
#[inline]
pub fn softplus(m: f64) -> f64 {
    if m > 0.0 {
        m + (-m).exp().ln_1p()
    } else {
        m.exp().ln_1p()
    }
}

/// The logistic function.
#[inline]
pub fn sigmoid(m: f64) -> f64 {
    if m >= 0.0 {
        1.0 / (1.0 + (-m).exp())
    } else {
        let e = m.exp();
        e / (1.0 + e)
    }
}

/// The gradient of `loss` over `block`, one row after the other (the reference every
/// other kernel is tested against).
pub fn gradient_serial(loss: Loss, block: &DenseBlock<'_>, params: &[f64], out: &mut [f64]) {
    let d = block.dimension;
    let n_params = loss.parameters(d);
    let (grad, rest) = out.split_at_mut(n_params);
    let mut loss_sum = 0.0;
    match loss {
        Loss::Logistic | Loss::Squared => {
            let (w, b) = (&params[..d], params[d]);
            let (gw, gb) = grad.split_at_mut(d);
            for i in 0..block.rows {
                let x = block.row(i);
                let y = block.labels[i];
                let m = dot(x, w) + b;
                let r = if loss == Loss::Logistic {
                    loss_sum += softplus(m) - y * m;
                    sigmoid(m) - y
                } else {
                    let r = m - y;
                    loss_sum += 0.5 * r * r;
                    r
                };
                axpy(gw, r, x);
                gb[0] += r;
            }
        }
        Loss::Multinomial { classes } => {
            let (w, b) = params.split_at(classes * d);
            let mut margins = vec![0.0; classes];
            for i in 0..block.rows {
                let x = block.row(i);
                let y = (block.labels[i] as usize).min(classes - 1);
                let mut max = f64::NEG_INFINITY;
                for (k, m) in margins.iter_mut().enumerate() {
                    *m = dot(x, &w[k * d..(k + 1) * d]) + b[k];
                    max = max.max(*m);
                }
                let sum = softmax_terms(&mut margins, max, y, &mut loss_sum);
                for (k, e) in margins.iter().enumerate() {
                    let r = e / sum - if k == y { 1.0 } else { 0.0 };
                    axpy(&mut grad[k * d..(k + 1) * d], r, x);
                    grad[classes * d + k] += r;
                }
            }
        }
    }
    rest[0] += loss_sum;
    rest[1] += block.rows as f64;
}

/// The k-means assignment over `block`, one row after the other.
pub fn kmeans_serial(block: &DenseBlock<'_>, centres: &[f64], k: usize, out: &mut [f64]) {
    let d = block.dimension;
    let mut cost = 0.0;
    for i in 0..block.rows {
        let x = block.row(i);
        let (best, dist) = nearest(x, centres, k, d);
        axpy(&mut out[best * d..(best + 1) * d], 1.0, x);
        out[k * d + best] += 1.0;
        cost += dist;
    }
    out[k * d + k] += cost;
}

/// The nearest of `k` centres to `x` and its squared distance (ties go to the lower index).
#[inline]
pub fn nearest(x: &[f32], centres: &[f64], k: usize, d: usize) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for c in 0..k {
        let centre = &centres[c * d..(c + 1) * d];
        let mut dist = 0.0;
        for (a, b) in x.iter().zip(centre) {
            let diff = f64::from(*a) - b;
            dist += diff * diff;
        }
        if dist < best.1 {
            best = (c, dist);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<'a>(features: &'a [f32], labels: &'a [f64], d: usize) -> DenseBlock<'a> {
        DenseBlock {
            features,
            labels,
            rows: labels.len(),
            dimension: d,
            owner: None,
        }
    }

    /// ||a - b|| / ||b|| over a whole partial.
    fn relative(a: &[f64], b: &[f64]) -> f64 {
        let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let norm: f64 = b.iter().map(|y| y * y).sum();
        (diff / norm.max(1e-300)).sqrt()
    }

    #[test]
    fn parallel_cpu_kernel_matches_serial_sums() {
        let d = 5;
        let n = 10_007;
        let features: Vec<f32> = (0..n * d)
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        let labels: Vec<f64> = (0..n).map(|i| (i % 3) as f64).collect();
        let b = block(&features, &labels, d);
        for loss in [Loss::Squared, Loss::Multinomial { classes: 3 }] {
            let params: Vec<f64> = (0..loss.parameters(d)).map(|i| i as f64 * 0.01).collect();
            let mut serial = vec![0.0; gradient_len(loss, d)];
            gradient_serial(loss, &b, &params, &mut serial);
            let mut parallel = vec![0.0; gradient_len(loss, d)];
            let halves = [b.slice(0, 5000), b.slice(5000, n)];
            CpuKernel.gradient(loss, &halves, &params, &mut parallel);
            // f32 arithmetic in short blocks against the all-f64 reference.
            let error = relative(&parallel, &serial);
            assert!(error <= 1e-5, "{loss:?}: relative error {error}");
            assert_eq!(parallel[parallel.len() - 1], n as f64);
        }
    }

    #[test]
    fn f32_kernels_agree_with_the_f64_references() {
        // 33 features: four 8-wide chunks and a remainder; 1000 rows: 15 full blocks and
        // a partial one.
        let (d, n) = (33, 1000);
        let features: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919 % 1009) as f32) / 250.0 - 2.0)
            .collect();
        let labels: Vec<f64> = (0..n).map(|i| (i * 13 % 4) as f64).collect();
        let b = block(&features, &labels, d);
        let close = |what: &str, a: &[f64], e: &[f64]| {
            let error = relative(a, e);
            assert!(
                error <= 1e-5,
                "{what}: relative error {error}\n{a:?}\n{e:?}"
            );
        };
        for loss in [
            Loss::Logistic,
            Loss::Squared,
            Loss::Multinomial { classes: 4 },
        ] {
            let params: Vec<f64> = (0..loss.parameters(d))
                .map(|i| ((i % 11) as f64 - 5.0) * 0.02)
                .collect();
            let binary: Vec<f64> = labels.iter().map(|y| f64::from(*y >= 2.0)).collect();
            let b = if loss == Loss::Logistic {
                block(&features, &binary, d)
            } else {
                b
            };
            let mut reference = vec![0.0; gradient_len(loss, d)];
            gradient_serial(loss, &b, &params, &mut reference);
            let params32: Vec<f32> = params.iter().map(|v| *v as f32).collect();
            let mut generic = vec![0.0; gradient_len(loss, d)];
            gradient_blocks(loss, &b, &params, &params32, &mut generic);
            close(&format!("{loss:?} generic"), &generic, &reference);
            let mut dispatched = vec![0.0; gradient_len(loss, d)];
            gradient_f32(loss, &b, &params, &mut dispatched);
            close(&format!("{loss:?} dispatched"), &dispatched, &reference);
        }
        let k = 5;
        let centres: Vec<f64> = (0..k * d).map(|i| (i / d) as f64 * 0.7 - 1.4).collect();
        let mut reference = vec![0.0; kmeans_len(k, d)];
        kmeans_serial(&b, &centres, k, &mut reference);
        let mut fast = vec![0.0; kmeans_len(k, d)];
        kmeans_f32(&b, &centres, k, &mut fast);
        close("k-means", &fast, &reference);
        assert_eq!(fast[k * d..k * d + k].iter().sum::<f64>(), n as f64);
    }

    #[test]
    fn f32_exp_and_log_are_accurate() {
        for i in 0..=20_000 {
            let x = -(i as f32) * 0.005; // 0 down to -100
            let exact = f64::from(x).exp();
            let fast = f64::from(exp32(x));
            if x >= -87.0 {
                assert!(
                    (fast - exact).abs() <= 3e-7 * exact,
                    "exp({x}): {fast} vs {exact}"
                );
            } else {
                assert!(fast < 1e-37, "exp({x}) underflows: {fast}");
            }
            let e = (i as f32) / 20_000.0;
            let exact = f64::from(e).ln_1p();
            let fast = f64::from(ln_1p_unit32(e));
            assert!(
                (fast - exact).abs() <= 4e-7 * exact.max(1e-30),
                "ln_1p({e}): {fast} vs {exact}"
            );
        }
    }

    #[test]
    fn logistic_gradient_matches_finite_differences() {
        let d = 3;
        let features = [0.5f32, -1.0, 2.0, 1.5, 0.25, -0.5, -2.0, 1.0, 0.0];
        let labels = [1.0, 0.0, 1.0];
        let b = block(&features, &labels, d);
        let params = [0.3, -0.2, 0.1, 0.05];
        let mut out = vec![0.0; gradient_len(Loss::Logistic, d)];
        gradient_serial(Loss::Logistic, &b, &params, &mut out);
        let loss_at = |p: &[f64]| {
            let mut o = vec![0.0; gradient_len(Loss::Logistic, d)];
            gradient_serial(Loss::Logistic, &b, p, &mut o);
            o[d + 1]
        };
        for j in 0..=d {
            let mut up = params;
            let mut down = params;
            up[j] += 1e-6;
            down[j] -= 1e-6;
            let numeric = (loss_at(&up) - loss_at(&down)) / 2e-6;
            assert!(
                (numeric - out[j]).abs() < 1e-6,
                "param {j}: {numeric} vs {}",
                out[j]
            );
        }
    }

    #[test]
    fn kmeans_assigns_rows_to_nearest_centre() {
        let features = [0.0f32, 0.0, 0.2, 0.0, 10.0, 10.0];
        let b = block(&features, &[], 2);
        let b = DenseBlock { rows: 3, ..b };
        let centres = [0.0, 0.0, 9.0, 9.0];
        let mut out = vec![0.0; kmeans_len(2, 2)];
        CpuKernel.kmeans(&[b], &centres, 2, &mut out);
        assert_eq!(&out[..4], &[f64::from(0.2f32), 0.0, 10.0, 10.0]);
        assert_eq!(&out[4..6], &[2.0, 1.0]);
        assert!((out[6] - (0.04 + 2.0)).abs() < 1e-6, "{out:?}");
    }
}
