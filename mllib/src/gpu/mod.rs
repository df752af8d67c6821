//! The GPU kernel: mllib's per-partition math as WGSL compute shaders (`shaders/`) run
//! through wgpu on any adapter it finds (every backend compiled in for the platform:
//! Vulkan, Metal, DX12, GL), with resident feature buffers and the choice of device and
//! adapter per executor.
//!
//! - The adapter is the best-ranked one [`AdapterChoice`] allows (discrete > integrated >
//!   virtual > software, then Vulkan > Metal > DX12 > GL), or one picked by name.
//! - A kernel the adapter cannot build (a GL driver without a large enough workgroup, a
//!   backend that cannot translate it) runs on the CPU, said once in the log and in the
//!   kernel's description; the other kernels still run on the device.
//! - Pipelines are built once per process, when the kernel is created.
//! - A block's features (and labels) are uploaded the first time a pass reads them and stay
//!   resident across iterations: a pass sends only the weights and reads back one partial
//!   per workgroup. A resident entry holds a reference to the Arrow buffer it was uploaded
//!   from, so its address cannot be reused for other data while the entry lives; entries
//!   whose block the executor dropped, and the least recently used beyond the budget
//!   ([`RESIDENT_BUDGET_ENV`], default 2 GiB), are released.
//! - Blocks larger than the adapter's buffer limits are cut into chunks of rows.
//! - Sums: a workgroup tree reduction in the shader, then the workgroups' partials added in
//!   f64 on the host, then across partitions and executors by mllib's tree aggregation.
//! - A device error or a lost device makes the kernel fall back to the CPU kernel, with a
//!   warning, instead of failing the job.

mod adapter;
mod device;
#[cfg(test)]
mod kernel_tests;

pub use adapter::{AdapterChoice, GpuBackend};
use device::gpu_error;
pub use device::GpuKernel;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::kernel::{CpuKernel, Kernel, Loss};
use crate::vector::DenseBlock;

/// Environment variable: bytes of features a GPU kernel keeps resident (default 2 GiB).
pub const RESIDENT_BUDGET_ENV: &str = "EMBER_GPU_RESIDENT_BYTES";

/// Most classes the multinomial shader handles (its workgroup memory); more run on the CPU.
pub const MAX_GPU_CLASSES: usize = 32;

const REDUCE: &str = include_str!("../../../shaders/reduce.wgsl");
const GRADIENT: &str = include_str!("../../../shaders/gradient.wgsl");
const MULTINOMIAL: &str = include_str!("../../../shaders/multinomial.wgsl");
const KMEANS: &str = include_str!("../../../shaders/kmeans.wgsl");
/// The copy kernel the benches time for the device's copy bandwidth.
pub const COPY_SHADER: &str = include_str!("../../../shaders/copy.wgsl");

/// Rows per workgroup of each shader (its `WG`).
const GRADIENT_ROWS: usize = 256;
const MULTINOMIAL_ROWS: usize = 64;
const KMEANS_ROWS: usize = 256;
/// 16-byte elements per workgroup of the copy kernel.
const COPY_ROWS: usize = 128;

/// Each kernel's full WGSL source: the shared reduction followed by the kernel.
pub fn shader_sources() -> [(&'static str, String); 3] {
    [
        ("gradient", format!("{GRADIENT}\n{REDUCE}")),
        ("multinomial", format!("{MULTINOMIAL}\n{REDUCE}")),
        ("kmeans", format!("{KMEANS}\n{REDUCE}")),
    ]
}

/// Which kernel an executor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// A hardware GPU adapter when one exists, else the CPU (default).
    #[default]
    Auto,
    /// A GPU adapter; failing to find one is an error.
    Gpu,
    /// The CPU kernel on rayon.
    Cpu,
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "gpu" => Ok(Device::Gpu),
            "cpu" => Ok(Device::Cpu),
            other => Err(format!(
                "unknown device '{other}' (expected auto, gpu or cpu)"
            )),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Auto => "auto",
            Device::Gpu => "gpu",
            Device::Cpu => "cpu",
        })
    }
}

/// This process's GPU kernel on the default adapter (see [`shared_gpu_for`]).
///
/// # Errors
///
/// No usable adapter (the same error every time).
pub fn shared_gpu() -> Result<Arc<GpuKernel>> {
    shared_gpu_for(&AdapterChoice::default())
}

/// This process's GPU kernel for `choice`, opened on first use and shared by every
/// executor of the process that makes the same choice (one device, one set of pipelines).
///
/// # Errors
///
/// No usable adapter fits `choice` (the same error every time).
pub fn shared_gpu_for(choice: &AdapterChoice) -> Result<Arc<GpuKernel>> {
    type Opened = std::result::Result<Arc<GpuKernel>, String>;
    static GPUS: OnceLock<Mutex<HashMap<AdapterChoice, Opened>>> = OnceLock::new();
    let mut gpus = GPUS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    gpus.entry(choice.clone())
        .or_insert_with(|| {
            GpuKernel::open(choice)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(gpu_error)
}

/// The kernel for `device`: the CPU kernel, the shared GPU kernel for `choice` (opened
/// now, so a missing adapter is an error at once), or for `auto` a kernel that picks on
/// its first pass (so processes that never train open no device) and says once when it
/// settles on the CPU.
///
/// # Errors
///
/// `Device::Gpu` and no usable adapter fits `choice`.
pub fn kernel_for(device: Device, choice: &AdapterChoice) -> Result<Arc<dyn Kernel>> {
    Ok(match device {
        Device::Cpu => Arc::new(CpuKernel),
        Device::Gpu => shared_gpu_for(choice)?,
        Device::Auto => Arc::new(AutoKernel::new(choice.clone())),
    })
}

/// The `auto` device: the GPU when a hardware adapter opens on the first pass, else the
/// CPU (a software adapter such as lavapipe runs the shaders slower than the CPU kernel).
#[derive(Debug, Default)]
pub struct AutoKernel {
    choice: AdapterChoice,
    chosen: OnceLock<Arc<dyn Kernel>>,
}

impl AutoKernel {
    /// An `auto` kernel that looks among the adapters `choice` allows.
    pub fn new(choice: AdapterChoice) -> Self {
        Self {
            choice,
            chosen: OnceLock::new(),
        }
    }

    fn chosen(&self) -> &Arc<dyn Kernel> {
        self.chosen
            .get_or_init(|| match shared_gpu_for(&self.choice) {
                Ok(gpu) if gpu.is_software() => {
                    tracing::warn!(
                        adapter = gpu.adapter(),
                        "only a software GPU adapter was found; mllib kernels run on the CPU \
                     (--device gpu uses it anyway)"
                    );
                    Arc::new(CpuKernel)
                }
                Ok(gpu) => gpu,
                Err(e) => {
                    tracing::warn!("{e}; mllib kernels run on the CPU");
                    Arc::new(CpuKernel)
                }
            })
    }
}

impl Kernel for AutoKernel {
    fn device(&self) -> String {
        match self.chosen.get() {
            Some(k) => k.device(),
            None => "auto (GPU if an adapter opens at the first pass, else cpu)".into(),
        }
    }

    fn gradient(&self, loss: Loss, blocks: &[DenseBlock<'_>], params: &[f64], out: &mut [f64]) {
        self.chosen().gradient(loss, blocks, params, out);
    }

    fn kmeans(&self, blocks: &[DenseBlock<'_>], centres: &[f64], k: usize, out: &mut [f64]) {
        self.chosen().kmeans(blocks, centres, k, out);
    }
}

/// The kernel of an executor's tasks, carried in its session configuration (so executors
/// of one process may use different devices).
#[derive(Debug, Clone)]
pub struct KernelExtension(pub Arc<dyn Kernel>);
