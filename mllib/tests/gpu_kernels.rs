//! The WGSL kernels: every shader validates (no adapter needed), and on a real wgpu adapter
//! (Mesa's lavapipe in CI) every kernel matches the CPU kernel within 1e-4 relative, on odd
//! sizes and across chunks. Without an adapter these comparisons are skipped, except in CI
//! (`CI=true`), where a missing adapter fails.

use ember_mllib::gpu::{shader_sources, shared_gpu, GpuKernel};
use ember_mllib::kernel::{gradient_len, kmeans_len, CpuKernel, Kernel, Loss};
use ember_mllib::vector::DenseBlock;

#[test]
fn every_shader_validates() {
    for (name, source) in shader_sources() {
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

/// The shared GPU kernel, or `None` (skip) outside CI when no adapter exists.
fn gpu() -> Option<std::sync::Arc<GpuKernel>> {
    match shared_gpu() {
        Ok(gpu) => {
            eprintln!("adapter: {}", gpu.adapter());
            Some(gpu)
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and no GPU adapter (install mesa-vulkan-drivers): {e}")
        }
        Err(e) => {
            eprintln!("skipping GPU comparisons: {e}");
            None
        }
    }
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
    let Some(gpu) = gpu() else { return };
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
                "{loss:?} rows={rows} d={d}: relative error {err}\n{on_gpu:?}\n{cpu:?}"
            );
            assert_eq!(on_gpu[on_gpu.len() - 1], rows as f64, "row count");
        }
    }
}

#[test]
fn kmeans_kernel_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
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
            assert!(err < 1e-4, "k={k} rows={rows} d={d}: relative error {err}");
            let counts: f64 = on_gpu[k * d..k * d + k].iter().sum();
            assert_eq!(counts, rows as f64);
        }
    }
}

#[test]
fn blocks_larger_than_a_chunk_are_split_and_stay_resident() {
    let Some(_) = gpu() else { return };
    // A kernel of its own, so capping its chunks does not affect the other tests.
    let gpu = GpuKernel::new().expect("second device on the same adapter");
    gpu.set_max_chunk_rows(256);
    let (rows, d) = (3000, 6);
    let (x, y) = data(rows, d, 2, 99);
    let owner = arrow::buffer::Buffer::from_slice_ref(&x);
    let values: &[f32] = owner.typed_data();
    let b = DenseBlock {
        owner: Some(&owner),
        ..block(values, &y, d)
    };
    let params: Vec<f64> = (0..=d).map(|i| i as f64 * 0.1 - 0.2).collect();
    let mut cpu = vec![0.0; gradient_len(Loss::Logistic, d)];
    CpuKernel.gradient(Loss::Logistic, &[b], &params, &mut cpu);
    for pass in 0..2 {
        let mut on_gpu = vec![0.0; gradient_len(Loss::Logistic, d)];
        gpu.gradient(Loss::Logistic, &[b], &params, &mut on_gpu);
        assert!(relative(&on_gpu, &cpu) < 1e-4, "pass {pass}");
    }
    // Features and labels of all 12 chunks stay on the device between passes.
    assert_eq!(gpu.resident_bytes(), (rows * d * 4 + rows * 4) as u64);
}

#[test]
fn a_lost_device_falls_back_to_the_cpu() {
    let Some(_) = gpu() else { return };
    let gpu = GpuKernel::new().expect("a device of its own");
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
    let auto = ember_mllib::gpu::AutoKernel::default();
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
