//! Choosing a GPU adapter: every wgpu backend compiled in for the platform is searched, the
//! adapters that can run compute shaders are ranked (discrete > integrated > virtual >
//! other > software, then Vulkan > Metal > DX12 > GL), and `--adapter` / `--gpu-backend`
//! narrow the choice.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A wgpu backend Ember can open an adapter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuBackend {
    /// Vulkan (Linux, Windows, Android; Mesa's lavapipe in CI).
    Vulkan,
    /// Metal (macOS, iOS).
    Metal,
    /// Direct3D 12 (Windows).
    Dx12,
    /// OpenGL ES 3.1+ / desktop GL through EGL or WGL (Mesa's llvmpipe in CI).
    Gl,
}

impl GpuBackend {
    /// Every backend, in the order the ranking prefers them.
    pub const ALL: [GpuBackend; 4] = [
        GpuBackend::Vulkan,
        GpuBackend::Metal,
        GpuBackend::Dx12,
        GpuBackend::Gl,
    ];

    fn flag(self) -> wgpu::Backends {
        match self {
            GpuBackend::Vulkan => wgpu::Backends::VULKAN,
            GpuBackend::Metal => wgpu::Backends::METAL,
            GpuBackend::Dx12 => wgpu::Backends::DX12,
            GpuBackend::Gl => wgpu::Backends::GL,
        }
    }

    pub(super) fn of(backend: wgpu::Backend) -> Option<GpuBackend> {
        match backend {
            wgpu::Backend::Vulkan => Some(GpuBackend::Vulkan),
            wgpu::Backend::Metal => Some(GpuBackend::Metal),
            wgpu::Backend::Dx12 => Some(GpuBackend::Dx12),
            wgpu::Backend::Gl => Some(GpuBackend::Gl),
            _ => None,
        }
    }

    /// Whether this build of Ember carries the backend (the `vulkan`, `metal`, `dx12` and
    /// `gles` cargo features, each compiled only on its platforms).
    pub fn compiled_in(self) -> bool {
        wgpu::Instance::enabled_backend_features().contains(self.flag())
    }
}

impl FromStr for GpuBackend {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(GpuBackend::Vulkan),
            "metal" | "mtl" => Ok(GpuBackend::Metal),
            "dx12" | "d3d12" => Ok(GpuBackend::Dx12),
            "gl" | "gles" | "opengl" => Ok(GpuBackend::Gl),
            other => Err(format!(
                "unknown GPU backend '{other}' (expected vulkan, metal, dx12 or gl)"
            )),
        }
    }
}

impl fmt::Display for GpuBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GpuBackend::Vulkan => "vulkan",
            GpuBackend::Metal => "metal",
            GpuBackend::Dx12 => "dx12",
            GpuBackend::Gl => "gl",
        })
    }
}

/// Which adapter a GPU kernel opens. The default takes the best-ranked adapter on any
/// compiled-in backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AdapterChoice {
    /// Only adapters whose name contains this (case-insensitive), e.g. `llvmpipe` or
    /// `RTX 4090` (`--adapter`).
    pub name: Option<String>,
    /// Only these backends (`--gpu-backend vulkan,gl`); empty: every compiled-in one.
    pub backends: Vec<GpuBackend>,
    /// Ask the device for at most this many bytes per storage binding (and buffer), below
    /// what the adapter allows: larger partitions are processed in more chunks. For tests
    /// of chunking, or to leave room for other users of the GPU.
    pub max_binding_bytes: Option<u64>,
    /// Ask the device for at most this many invocations per workgroup, below what the
    /// adapter allows (GLES 3.1 guarantees only 128): kernels whose workgroups are larger
    /// cannot be built and run on the CPU. For tests of that fallback.
    pub max_workgroup_invocations: Option<u32>,
}

impl AdapterChoice {
    /// The choice naming `backend` only.
    pub fn backend(backend: GpuBackend) -> Self {
        Self {
            backends: vec![backend],
            ..Self::default()
        }
    }

    /// Parses a comma-separated list of backends (`vulkan,gl`).
    ///
    /// # Errors
    ///
    /// An unknown backend name.
    pub fn parse_backends(list: &str) -> std::result::Result<Vec<GpuBackend>, String> {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect()
    }

    /// The executor command-line flags that make the same choice (`--adapter`,
    /// `--gpu-backend`).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(name) = &self.name {
            args.extend(["--adapter".to_string(), name.clone()]);
        }
        if !self.backends.is_empty() {
            let list: Vec<String> = self.backends.iter().map(ToString::to_string).collect();
            args.extend(["--gpu-backend".to_string(), list.join(",")]);
        }
        args
    }

    fn wgpu_backends(&self) -> wgpu::Backends {
        if self.backends.is_empty() {
            // WGPU_BACKEND still narrows the default, as for any wgpu program.
            wgpu::Backends::all().with_env()
        } else {
            self.backends
                .iter()
                .fold(wgpu::Backends::empty(), |all, b| all | b.flag())
        }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(name) = &self.name {
            parts.push(format!("named like '{name}'"));
        }
        if !self.backends.is_empty() {
            let list: Vec<String> = self.backends.iter().map(ToString::to_string).collect();
            parts.push(format!("on {}", list.join(" or ")));
        }
        if parts.is_empty() {
            "on any backend".into()
        } else {
            parts.join(" ")
        }
    }
}

/// One adapter wgpu found, as Ember ranks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AdapterSummary {
    /// The adapter's name.
    pub name: String,
    /// Its backend.
    pub backend: GpuBackend,
    /// wgpu's device type: `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Other` or `Cpu`.
    pub device_type: String,
    /// Whether it runs compute shaders (GL adapters below GLES 3.1 do not).
    pub compute: bool,
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}, {}", self.name, self.backend, self.device_type)?;
        if !self.compute {
            f.write_str(", no compute shaders")?;
        }
        f.write_str("]")
    }
}

/// Rank of a device type: lower is preferred.
fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn summary(adapter: &wgpu::Adapter) -> Option<AdapterSummary> {
    let info = adapter.get_info();
    Some(AdapterSummary {
        name: info.name.clone(),
        backend: GpuBackend::of(info.backend)?,
        device_type: format!("{:?}", info.device_type),
        compute: adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS),
    })
}

/// The adapters `choice` allows, best first, and every adapter found (for error messages).
pub(super) fn candidates(choice: &AdapterChoice) -> (Vec<wgpu::Adapter>, Vec<AdapterSummary>) {
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    descriptor.backends = choice.wgpu_backends();
    let instance = wgpu::Instance::new(descriptor);
    let adapters = futures::executor::block_on(instance.enumerate_adapters(choice.wgpu_backends()));
    let wanted = choice.name.as_ref().map(|n| n.to_lowercase());
    let mut found = Vec::new();
    let mut usable: Vec<(u8, GpuBackend, wgpu::Adapter)> = Vec::new();
    for adapter in adapters {
        let Some(s) = summary(&adapter) else { continue };
        let matches = wanted
            .as_ref()
            .is_none_or(|w| s.name.to_lowercase().contains(w));
        if matches && s.compute {
            usable.push((
                type_rank(adapter.get_info().device_type),
                s.backend,
                adapter,
            ));
        }
        found.push(s);
    }
    usable.sort_by_key(|(rank, backend, _)| (*rank, *backend));
    (usable.into_iter().map(|(_, _, a)| a).collect(), found)
}

/// The error when no adapter fits `choice`, naming what was found.
pub(super) fn none_found(choice: &AdapterChoice, found: &[AdapterSummary]) -> String {
    let compiled: Vec<String> = GpuBackend::ALL
        .iter()
        .filter(|b| b.compiled_in())
        .map(ToString::to_string)
        .collect();
    if found.is_empty() {
        format!(
            "no GPU adapter {} (backends in this build: {}; on Linux install Mesa's \
             mesa-vulkan-drivers or libegl-mesa0 for a software adapter)",
            choice.describe(),
            compiled.join(", ")
        )
    } else {
        let list: Vec<String> = found.iter().map(ToString::to_string).collect();
        format!(
            "no GPU adapter {} that runs compute shaders; found: {}",
            choice.describe(),
            list.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_and_print() {
        assert_eq!(
            AdapterChoice::parse_backends("Vulkan, gles").unwrap(),
            vec![GpuBackend::Vulkan, GpuBackend::Gl]
        );
        let err = AdapterChoice::parse_backends("vulkan,cuda").unwrap_err();
        assert!(err.contains("'cuda'"), "{err}");
        let choice = AdapterChoice {
            name: Some("llvmpipe".into()),
            backends: vec![GpuBackend::Gl],
            ..AdapterChoice::default()
        };
        assert_eq!(
            choice.to_args(),
            ["--adapter", "llvmpipe", "--gpu-backend", "gl"]
        );
        assert!(none_found(&choice, &[]).contains("named like 'llvmpipe' on gl"));
    }

    #[test]
    fn vulkan_and_gl_are_compiled_in_on_linux() {
        if cfg!(all(
            target_os = "linux",
            feature = "vulkan",
            feature = "gles"
        )) {
            assert!(GpuBackend::Vulkan.compiled_in());
            assert!(GpuBackend::Gl.compiled_in());
        }
    }
}
