//! The WGSL kernels: every shader validates (no adapter needed), and on every backend with
//! an adapter (in CI: Vulkan on Mesa's lavapipe and GL on Mesa's llvmpipe through EGL)
//! every kernel matches the CPU kernel within 1e-4 relative, on odd sizes and across
//! chunks forced by a tiny device limit; a kernel the device cannot build runs on the CPU.
//! Without adapters these comparisons are skipped, except in CI (`CI=true`), where a
//! missing Vulkan or GL adapter on Linux fails.

use std::sync::Arc;

use crate::gpu::{
    shader_sources, shared_gpu, shared_gpu_for, AdapterChoice, GpuBackend, GpuKernel,
};
use crate::kernel::{gradient_len, kmeans_len, CpuKernel, Kernel, Loss};
use crate::vector::DenseBlock;

#[test]
fn every_shader_validates() {
    let copy = ("copy", crate::gpu::COPY_SHADER.to_string());
    for (name, source) in shader_sources().into_iter().chain([copy]) {
        let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
            panic!("{name}.wgsl does not parse:\n{}", e.emit_to_string(&source))
        });
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}.wgsl does not validate: {e:?}"));
        assert!(
            module.entry_points.iter().any(|e| e.name == "main"),
            "{name}.wgsl has a main entry point"
        );
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The backends CI must have an adapter on: Vulkan (lavapipe) and GL (llvmpipe) on Linux.
fn required_in_ci(backend: GpuBackend) -> bool {
    cfg!(target_os = "linux") && matches!(backend, GpuBackend::Vulkan | GpuBackend::Gl)
}

/// The shared GPU kernel of every backend with an adapter (skipping those without one,
/// except in CI for the backends CI installs).
fn gpus() -> Vec<(GpuBackend, Arc<GpuKernel>)> {
    let mut found = Vec::new();
    for backend in GpuBackend::ALL.into_iter().filter(|b| b.compiled_in()) {
        match shared_gpu_for(&AdapterChoice::backend(backend)) {
            Ok(gpu) => {
                eprintln!("{backend}: {}", gpu.describe());
                assert_eq!(gpu.backend(), Some(backend));
                found.push((backend, gpu));
            }
            Err(e) if in_ci() && required_in_ci(backend) => {
                panic!("CI=true and no {backend} adapter (.ci/run installs Mesa's): {e}")
            }
            Err(e) => eprintln!("skipping {backend}: {e}"),
        }
    }
    found
}

/// A kernel of its own on the first backend with an adapter, opened with `choice`'s caps.
fn own_kernel(caps: AdapterChoice) -> Option<GpuKernel> {
    let (backend, _) = gpus().into_iter().next()?;
    Some(
        GpuKernel::open(&AdapterChoice {
            backends: vec![backend],
            ..caps
        })
        .expect("a second device on the same adapter"),
    )
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn data(rows: usize, d: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<f64>) {
    let mut rng = Rng(seed);
    let x = (0..rows * d)
        .map(|_| (rng.next() * 4.0 - 2.0) as f32)
        .collect();
    let y = (0..rows)
        .map(|_| ((rng.next() * classes as f64) as usize).min(classes - 1) as f64)
        .collect();
    (x, y)
}

fn block<'a>(x: &'a [f32], y: &'a [f64], d: usize) -> DenseBlock<'a> {
    DenseBlock {
        features: x,
        labels: y,
        rows: y.len(),
        dimension: d,
        owner: None,
    }
}

/// ||a - b|| / max(||b||, 1e-12) over the whole partial.
fn relative(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm.max(1e-12)
}

const SIZES: [(usize, usize); 6] = [(1, 1), (1, 5), (255, 3), (257, 4), (1000, 7), (4099, 33)];

#[test]
fn gradient_kernels_match_the_cpu() {
    for (backend, gpu) in gpus() {
        assert!(
            gpu.unavailable().is_empty(),
            "{backend}: {:?}",
            gpu.unavailable()
        );
        gradients_match(&gpu, &format!("{backend}"));
    }
}

fn gradients_match(gpu: &GpuKernel, label: &str) {
    for (rows, d) in SIZES {
        for (loss, classes) in [
            (Loss::Logistic, 2),
            (Loss::Squared, 2),
            (Loss::Multinomial { classes: 3 }, 3),
            (Loss::Multinomial { classes: 5 }, 5),
        ] {
            let (x, y) = data(rows, d, classes, (rows * 31 + d) as u64);
            let b = block(&x, &y, d);
            let mut rng = Rng(7);
            let params: Vec<f64> = (0..loss.parameters(d)).map(|_| rng.next() - 0.5).collect();
            let mut cpu = vec![0.0; gradient_len(loss, d)];
            CpuKernel.gradient(loss, &[b], &params, &mut cpu);
            let mut on_gpu = vec![0.0; gradient_len(loss, d)];
            gpu.gradient(loss, &[b], &params, &mut on_gpu);
            let err = relative(&on_gpu, &cpu);
            assert!(
                err < 1e-4,
                "{label} {loss:?} rows={rows} d={d}: relative error {err}\n{on_gpu:?}\n{cpu:?}"
            );
            assert_eq!(on_gpu[on_gpu.len() - 1], rows as f64, "row count");
        }
    }
}

#[test]
fn kmeans_kernel_matches_the_cpu() {
    for (backend, gpu) in gpus() {
        kmeans_match(&gpu, &format!("{backend}"));
    }
}

fn kmeans_match(gpu: &GpuKernel, label: &str) {
    for (rows, d) in SIZES {
        for k in [1, 3, 7] {
            let (x, _) = data(rows, d, 2, (rows + d * 17 + k) as u64);
            let b = DenseBlock {
                labels: &[],
                ..block(&x, &[], d)
            };
            let b = DenseBlock { rows, ..b };
            // Centres well apart from each other so no row is near a tie.
            let centres: Vec<f64> = (0..k * d)
                .map(|i| ((i / d) as f64 * 1.3 - 2.0) + (i % d) as f64 * 0.01)
                .collect();
            let mut cpu = vec![0.0; kmeans_len(k, d)];
            CpuKernel.kmeans(&[b], &centres, k, &mut cpu);
            let mut on_gpu = vec![0.0; kmeans_len(k, d)];
            gpu.kmeans(&[b], &centres, k, &mut on_gpu);
            let err = relative(&on_gpu, &cpu);
            assert!(
                err < 1e-4,
                "{label} k={k} rows={rows} d={d}: relative error {err}"
            );
            let counts: f64 = on_gpu[k * d..k * d + k].iter().sum();
            assert_eq!(counts, rows as f64);
        }
    }
}

#[test]
fn partitions_larger_than_a_binding_are_chunked_and_stay_resident() {
    // A device that may bind only 16 KiB: 6 features x 4 bytes is 682 rows, so 512-row
    // chunks for the 256-row workgroups of the gradient and k-means kernels.
    let Some(gpu) = own_kernel(AdapterChoice {
        max_binding_bytes: Some(16 << 10),
        ..AdapterChoice::default()
    }) else {
        return;
    };
    assert!(
        gpu.limits().contains("max storage binding 16 KiB"),
        "{}",
        gpu.limits()
    );
    let (rows, d) = (3000, 6);
    let (x, y) = data(rows, d, 3, 99);
    let owner = arrow::buffer::Buffer::from_slice_ref(&x);
    let values: &[f32] = owner.typed_data();
    let b = DenseBlock {
        owner: Some(&owner),
        ..block(values, &y, d)
    };
    for loss in [Loss::Logistic, Loss::Multinomial { classes: 3 }] {
        let params: Vec<f64> = (0..loss.parameters(d))
            .map(|i| i as f64 * 0.05 - 0.2)
            .collect();
        let mut cpu = vec![0.0; gradient_len(loss, d)];
        CpuKernel.gradient(loss, &[b], &params, &mut cpu);
        for pass in 0..2 {
            let mut on_gpu = vec![0.0; gradient_len(loss, d)];
            gpu.gradient(loss, &[b], &params, &mut on_gpu);
            let err = relative(&on_gpu, &cpu);
            assert!(err < 1e-4, "{loss:?} pass {pass}: relative error {err}");
        }
    }
    let unlabelled = DenseBlock { labels: &[], ..b };
    let centres: Vec<f64> = (0..4 * d).map(|i| (i / d) as f64 - 1.5).collect();
    let mut cpu = vec![0.0; kmeans_len(4, d)];
    CpuKernel.kmeans(&[unlabelled], &centres, 4, &mut cpu);
    let mut on_gpu = vec![0.0; kmeans_len(4, d)];
    gpu.kmeans(&[unlabelled], &centres, 4, &mut on_gpu);
    assert!(relative(&on_gpu, &cpu) < 1e-4, "k-means across chunks");
    // The benches' copy kernel cuts its buffers the same way.
    let copy = gpu
        .copy_bandwidth(100_000, 1)
        .expect("copy kernel in 7 bindings");
    assert!(copy.is_finite() && copy > 0.0, "{copy}");
    // Every pass ran on the device: a binding over the limit would have failed it.
    assert!(gpu.is_usable(), "no pass fell back to the CPU");
    // The labelled chunks stay on the device between passes (the gradient kernel's and the
    // multinomial kernel's, whose workgroups are smaller, are cut alike here).
    assert!(gpu.resident_bytes() >= (rows * d * 4 + rows * 4) as u64);
}

#[test]
fn a_kernel_the_device_cannot_build_runs_on_the_cpu() {
    // GLES 3.1 promises only 128 invocations per workgroup: the gradient and k-means
    // kernels (256) cannot be built there, the multinomial one (64) can.
    let Some(gpu) = own_kernel(AdapterChoice {
        max_workgroup_invocations: Some(128),
        ..AdapterChoice::default()
    }) else {
        return;
    };
    let missing: Vec<&str> = gpu
        .unavailable()
        .iter()
        .map(|u| u.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(missing, ["gradient", "kmeans"], "{:?}", gpu.unavailable());
    assert!(
        gpu.describe().contains("on the CPU: gradient"),
        "{}",
        gpu.describe()
    );
    let (rows, d) = (700, 5);
    let (x, y) = data(rows, d, 3, 3);
    let b = block(&x, &y, d);
    let params = vec![0.1; d + 1];
    let mut cpu = vec![0.0; gradient_len(Loss::Logistic, d)];
    CpuKernel.gradient(Loss::Logistic, &[b], &params, &mut cpu);
    let mut out = vec![0.0; gradient_len(Loss::Logistic, d)];
    gpu.gradient(Loss::Logistic, &[b], &params, &mut out);
    assert_eq!(out, cpu, "the logistic pass ran on the CPU kernel");
    // The kernel it could build still runs on the device, and the device stays in use.
    let loss = Loss::Multinomial { classes: 3 };
    let params = vec![0.05; loss.parameters(d)];
    let mut cpu = vec![0.0; gradient_len(loss, d)];
    CpuKernel.gradient(loss, &[b], &params, &mut cpu);
    let mut on_gpu = vec![0.0; gradient_len(loss, d)];
    gpu.gradient(loss, &[b], &params, &mut on_gpu);
    assert!(relative(&on_gpu, &cpu) < 1e-4);
    assert_ne!(
        on_gpu, cpu,
        "f32 on the device differs from f64 in the last bits"
    );
    assert!(gpu.is_usable());
}

#[test]
fn a_lost_device_falls_back_to_the_cpu() {
    let Some(gpu) = own_kernel(AdapterChoice::default()) else {
        return;
    };
    let (rows, d) = (500, 4);
    let (x, y) = data(rows, d, 2, 5);
    let b = block(&x, &y, d);
    let params = vec![0.1; d + 1];
    let mut cpu = vec![0.0; gradient_len(Loss::Squared, d)];
    CpuKernel.gradient(Loss::Squared, &[b], &params, &mut cpu);
    gpu.destroy_device();
    for _ in 0..2 {
        let mut out = vec![0.0; gradient_len(Loss::Squared, d)];
        gpu.gradient(Loss::Squared, &[b], &params, &mut out);
        assert_eq!(out, cpu, "the pass ran on the CPU kernel");
    }
    assert!(!gpu.is_usable());
}

#[test]
fn auto_uses_a_hardware_adapter_only() {
    let auto = crate::gpu::AutoKernel::default();
    assert!(
        auto.device().starts_with("auto"),
        "undecided before the first pass"
    );
    let (x, y) = data(10, 2, 2, 1);
    let mut out = vec![0.0; gradient_len(Loss::Logistic, 2)];
    auto.gradient(Loss::Logistic, &[block(&x, &y, 2)], &[0.0; 3], &mut out);
    assert_eq!(out[out.len() - 1], 10.0);
    match shared_gpu() {
        Ok(gpu) if !gpu.is_software() => assert!(auto.device().starts_with("gpu: ")),
        _ => assert_eq!(auto.device(), "cpu", "no adapter, or only a software one"),
    }
}
