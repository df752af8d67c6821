//! What the ML benches share: the device flags, the seeded generator, medians, and
//! scikit-learn on the same rows in the same run (the benches write their data as raw
//! little-endian files and call `bench/sklearn_baseline.py` with `EMBER_BENCH_PYTHON`, or
//! `python3`; without Python or scikit-learn they say so and go on).

// Each bench includes this file and uses part of it.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use ember::mllib::gpu::{AdapterChoice, Device, GpuBackend};

/// The data and the cluster of a bench: shape, seed, executors, files, timed fits.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Rows to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Features per row.
    #[arg(long, default_value_t = 32)]
    pub features: usize,
    /// Iteration limit of the fit.
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// Executor processes.
    #[arg(long, default_value_t = 2)]
    pub executors: usize,
    /// Parquet files (= partitions) the data is written as.
    #[arg(long, default_value_t = 4)]
    pub files: usize,
    /// Timed fits after a warm-up (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seed of the data (and of the fit where it has one).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Timed passes per kernel in the kernel table (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub kernel_passes: usize,
}

/// Where the executors' kernels run and which GPU adapter they open.
#[derive(clap::Args, Debug)]
pub struct DeviceArgs {
    /// What the executors' kernels run on: cpu, gpu, auto or both (a fit on CPU executors,
    /// then one on GPU executors, over the same data).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Open only a GPU adapter whose name contains this.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Look for GPU adapters on these backends only (vulkan, metal, dx12, gl).
    #[arg(long, value_delimiter = ',')]
    pub gpu_backend: Vec<GpuBackend>,
}

impl DeviceArgs {
    /// The devices to fit on, in order.
    pub fn devices(&self) -> anyhow::Result<Vec<Device>> {
        Ok(match self.device.as_str() {
            "both" => vec![Device::Cpu, Device::Gpu],
            other => vec![other.parse().map_err(anyhow::Error::msg)?],
        })
    }

    /// The adapter the flags choose.
    pub fn choice(&self) -> AdapterChoice {
        AdapterChoice {
            name: self.adapter.clone(),
            backends: self.gpu_backend.clone(),
            ..AdapterChoice::default()
        }
    }
}

/// splitmix64, with uniforms and Box-Muller normals.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What scikit-learn measured.
pub struct Baseline {
    /// Seconds of the fit (median of 3 after a warm-up).
    pub fit: f64,
    /// Iterations it ran.
    pub iterations: usize,
    /// Seconds per iteration.
    pub per_iteration: f64,
    /// k-means only: the sum of squared distances to the nearest centre.
    pub inertia: Option<f64>,
}

/// Writes `values` as little-endian bytes to `path`.
fn write_raw<T: Copy>(
    path: &Path,
    values: &[T],
    to_le: impl Fn(T) -> Vec<u8>,
) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for v in values {
        file.write_all(&to_le(*v))?;
    }
    file.flush()
}

/// Runs the baseline script on `rows x d` features `x`: `kind` is `logistic` (labels `y`)
/// or `kmeans`; `args` are the script's arguments after the shape (iterations, and for
/// k-means k and the seed). `None`, with the reason printed, when it cannot run.
pub fn sklearn_baseline(
    kind: &str,
    dir: &Path,
    x: &[f32],
    y: Option<&[f64]>,
    (rows, d): (usize, usize),
    args: &[String],
) -> Option<Baseline> {
    let python = std::env::var("EMBER_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/sklearn_baseline.py");
    let prefix = dir.join("sklearn");
    let written = write_raw(&prefix.with_extension("x.f32"), x, |v: f32| {
        v.to_le_bytes().to_vec()
    })
    .and_then(|()| match y {
        Some(y) => write_raw(&prefix.with_extension("y.f64"), y, |v: f64| {
            v.to_le_bytes().to_vec()
        }),
        None => Ok(()),
    });
    if let Err(e) = written {
        println!("scikit-learn: skipped (writing its input: {e})");
        return None;
    }
    let output = std::process::Command::new(&python)
        .arg(&script)
        .arg(kind)
        .arg(&prefix)
        .args([rows.to_string(), d.to_string()])
        .args(args)
        .output();
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let reason = stderr.lines().last().unwrap_or("no output");
            println!("scikit-learn: skipped ({python}: {reason}; set EMBER_BENCH_PYTHON to a Python with scikit-learn)");
            return None;
        }
        Err(e) => {
            println!("scikit-learn: skipped (cannot run {python}: {e})");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let value: serde_json::Value = match serde_json::from_str(text.trim()) {
        Ok(v) => v,
        Err(e) => {
            println!("scikit-learn: skipped (unreadable answer {text:?}: {e})");
            return None;
        }
    };
    Some(Baseline {
        fit: value["fit_s"].as_f64()?,
        iterations: value["iterations"].as_u64()? as usize,
        per_iteration: value["per_iteration_s"].as_f64()?,
        inertia: value["inertia"].as_f64(),
    })
}
