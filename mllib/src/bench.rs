//! What the benches measure about a kernel in one run: seconds per pass over data already
//! where the kernel reads it, the bytes a pass reads per second, and the copy bandwidth of
//! the same device over the same bytes, so the fraction of bandwidth a kernel reaches is a
//! ratio of two measurements from the same sitting.

use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use crate::error::Result;
use crate::gpu::{shared_gpu_for, AdapterChoice, GpuKernel};
use crate::kernel::{gradient_len, kmeans_len, CpuKernel, Kernel, Loss};
use crate::vector::DenseBlock;

/// A device under measurement: its kernel and its copy bandwidth.
#[derive(Debug, Clone)]
pub struct BenchDevice {
    /// `cpu`, or the GPU adapter with its backend.
    pub name: String,
    /// The kernel the passes run.
    pub kernel: Arc<dyn Kernel>,
    /// Bytes per second the device copies over a buffer as large as the data.
    pub copy_bytes_per_second: f64,
    /// Bytes a label takes where the kernel reads it (f64 on the CPU, f32 on a GPU).
    pub label_bytes: usize,
}

impl BenchDevice {
    /// The CPU kernel on rayon's pool, with the pool's copy bandwidth over `bytes`.
    pub fn cpu(bytes: usize) -> Self {
        Self {
            name: "cpu".into(),
            kernel: Arc::new(CpuKernel),
            copy_bytes_per_second: cpu_copy_bandwidth(bytes, 5),
            label_bytes: 8,
        }
    }

    /// The GPU kernel `choice` opens, with its copy kernel's bandwidth over `bytes`.
    ///
    /// # Errors
    ///
    /// No adapter fits `choice`, or the copy kernel fails on it.
    pub fn gpu(choice: &AdapterChoice, bytes: usize) -> Result<Self> {
        let gpu: Arc<GpuKernel> = shared_gpu_for(choice)?;
        Ok(Self {
            name: gpu.adapter().to_string(),
            copy_bytes_per_second: gpu.copy_bandwidth(bytes as u64, 5)?,
            kernel: gpu,
            label_bytes: 4,
        })
    }

    /// Times gradient passes of `loss` over `block` (a warm-up first, which also puts the
    /// data on a GPU).
    pub fn gradient(&self, loss: Loss, block: &DenseBlock<'_>, passes: usize) -> PassFigures {
        let d = block.dimension;
        let params: Vec<f64> = (0..loss.parameters(d))
            .map(|i| ((i % 7) as f64 - 3.0) * 0.01)
            .collect();
        let seconds = seconds_per_pass(passes, || {
            let mut out = vec![0.0; gradient_len(loss, d)];
            self.kernel.gradient(loss, &[*block], &params, &mut out);
            std::hint::black_box(out);
        });
        let name = match loss {
            Loss::Logistic => "logistic gradient".to_string(),
            Loss::Squared => "squared-error gradient".to_string(),
            Loss::Multinomial { classes } => format!("multinomial gradient, {classes} classes"),
        };
        self.figures(name, block, true, seconds)
    }

    /// Times k-means assignment passes with `k` centres over `block`.
    pub fn kmeans(&self, block: &DenseBlock<'_>, k: usize, passes: usize) -> PassFigures {
        let d = block.dimension;
        // Centres on rows spread over the block, as k-means|| would start near.
        let centres: Vec<f64> = (0..k)
            .flat_map(|c| block.row(c * block.rows / k).iter().map(|v| f64::from(*v)))
            .collect();
        let seconds = seconds_per_pass(passes, || {
            let mut out = vec![0.0; kmeans_len(k, d)];
            self.kernel.kmeans(&[*block], &centres, k, &mut out);
            std::hint::black_box(out);
        });
        self.figures(
            format!("k-means assignment, k = {k}"),
            block,
            false,
            seconds,
        )
    }

    fn figures(
        &self,
        kernel: String,
        block: &DenseBlock<'_>,
        labels: bool,
        seconds: f64,
    ) -> PassFigures {
        let label_bytes = if labels { self.label_bytes } else { 0 };
        PassFigures {
            kernel,
            device: self.name.clone(),
            seconds_per_pass: seconds,
            bytes_per_pass: (block.rows * (block.dimension * 4 + label_bytes)) as u64,
            copy_bytes_per_second: self.copy_bytes_per_second,
        }
    }
}

/// One kernel's passes on one device.
#[derive(Debug, Clone)]
pub struct PassFigures {
    /// Which computation.
    pub kernel: String,
    /// On what.
    pub device: String,
    /// Median seconds of a pass.
    pub seconds_per_pass: f64,
    /// Bytes a pass reads (features as f32, and labels).
    pub bytes_per_pass: u64,
    /// The device's copy bandwidth over as many bytes, same run.
    pub copy_bytes_per_second: f64,
}

impl PassFigures {
    /// Bytes read per second.
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes_per_pass as f64 / self.seconds_per_pass
    }

    /// The fraction of the device's copy bandwidth a pass reaches.
    pub fn fraction_of_copy(&self) -> f64 {
        self.bytes_per_second() / self.copy_bytes_per_second
    }
}

/// Prints `figures` as a table: device, kernel, seconds per pass, GB/s read, the device's
/// copy GB/s and the fraction.
pub fn print_table(figures: &[PassFigures]) {
    println!(
        "{:<44} {:<36} {:>10} {:>9} {:>9} {:>8}",
        "device", "kernel", "s/pass", "GB/s", "copy GB/s", "fraction"
    );
    for f in figures {
        println!(
            "{:<44} {:<36} {:>10.5} {:>9.2} {:>9.2} {:>8.2}",
            f.device,
            f.kernel,
            f.seconds_per_pass,
            f.bytes_per_second() / 1e9,
            f.copy_bytes_per_second / 1e9,
            f.fraction_of_copy()
        );
    }
}

/// Median seconds of `passes` calls of `pass`, after one call that is not timed.
pub fn seconds_per_pass(passes: usize, mut pass: impl FnMut()) -> f64 {
    pass();
    let mut times: Vec<f64> = (0..passes.max(1))
        .map(|_| {
            let started = Instant::now();
            pass();
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Bytes per second rayon's pool (the CPU kernel's threads) copies between two buffers of
/// `bytes`, each thread its own slices; the median of `reps` after a warm-up that also
/// faults the destination's pages in.
pub fn cpu_copy_bandwidth(bytes: usize, reps: usize) -> f64 {
    const SLICE: usize = 1 << 20;
    let words = bytes.max(8) / 8;
    let src: Vec<u64> = (0..words as u64).collect();
    let mut dst = vec![0u64; words];
    let seconds = seconds_per_pass(reps, || {
        dst.par_chunks_mut(SLICE / 8)
            .zip(src.par_chunks(SLICE / 8))
            .for_each(|(d, s)| d.copy_from_slice(s));
        std::hint::black_box(&dst);
    });
    (words * 8) as f64 / seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_ratios_of_what_was_measured() {
        let (rows, d) = (20_000, 8);
        let x: Vec<f32> = (0..rows * d).map(|i| (i % 13) as f32 * 0.1).collect();
        let y: Vec<f64> = (0..rows).map(|i| (i % 2) as f64).collect();
        let block = DenseBlock {
            features: &x,
            labels: &y,
            rows,
            dimension: d,
            owner: None,
        };
        let cpu = BenchDevice::cpu(rows * d * 4);
        assert!(cpu.copy_bytes_per_second > 0.0);
        let f = cpu.gradient(Loss::Logistic, &block, 2);
        assert_eq!(f.bytes_per_pass, (rows * (d * 4 + 8)) as u64);
        assert!(f.seconds_per_pass > 0.0);
        let ratio = f.bytes_per_second() / f.copy_bytes_per_second;
        assert!((f.fraction_of_copy() - ratio).abs() < 1e-12);
        let k = cpu.kmeans(&block, 4, 2);
        assert_eq!(k.bytes_per_pass, (rows * d * 4) as u64);
    }
}
