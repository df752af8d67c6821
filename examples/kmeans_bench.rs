//! k-means benchmark: seeded synthetic data (k blobs: centres uniform in [-10, 10]^d, rows
//! at a centre plus N(0, 1) noise), KMeans trained on a local cluster of executor
//! processes.
//!
//! Prints the fit's seconds per iteration and per pass and its cost; then, in this process
//! on the same data, the k-means assignment kernel on every device asked for: seconds per
//! pass, bytes read per second, and the same device's copy bandwidth over as many bytes
//! measured in the same run, with the fraction of it a pass reaches.
//!
//! `--device cpu|gpu|auto|both` picks what the executors' kernels run on; `--adapter NAME`
//! and `--gpu-backend vulkan,gl` choose the GPU adapter.
//!
//! `cargo run --release --example kmeans_bench -- --rows 1000000 --features 32 --k 16`

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, Float32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use clap::Parser;
use ember::ml::*;
use ember::mllib::bench::{print_table, BenchDevice};
use ember::mllib::gpu::Device;
use ember::mllib::vector::DenseBlock;
use ember::prelude::*;
use parquet::arrow::ArrowWriter;

#[path = "common/bench.rs"]
mod common;
use common::{median, sklearn_baseline, DeviceArgs, Rng, RunArgs};

/// k-means on a local cluster, its kernel against bandwidth, and scikit-learn on the same
/// rows.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Clusters generated and centres fitted.
    #[arg(long, default_value_t = 16)]
    k: usize,
    #[command(flatten)]
    gpu: DeviceArgs,
}

/// Row-major features around `k` random centres.
fn generate(args: &Args) -> Vec<f32> {
    let (d, k) = (args.run.features, args.k.max(1));
    let mut rng = Rng(args.run.seed);
    let centres: Vec<f64> = (0..k * d).map(|_| rng.uniform() * 20.0 - 10.0).collect();
    let mut x = Vec::with_capacity(args.run.rows * d);
    for _ in 0..args.run.rows {
        let c = (rng.next_u64() % k as u64) as usize;
        for j in 0..d {
            x.push((centres[c * d + j] + rng.normal()) as f32);
        }
    }
    x
}

fn write_parquet(dir: &std::path::Path, args: &Args, x: &[f32]) -> anyhow::Result<()> {
    let d = args.run.features;
    let fields: Vec<Field> = (0..d)
        .map(|j| Field::new(format!("x{j}"), DataType::Float32, false))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let per_file = args.run.rows.div_ceil(args.run.files.max(1));
    for (f, start) in (0..args.run.rows).step_by(per_file.max(1)).enumerate() {
        let end = (start + per_file).min(args.run.rows);
        let columns: Vec<Arc<dyn Array>> = (0..d)
            .map(|j| {
                Arc::new(Float32Array::from_iter_values(
                    (start..end).map(|r| x[r * d + j]),
                )) as Arc<dyn Array>
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let file = std::fs::File::create(dir.join(format!("part-{f:03}.parquet")))?;
        let mut writer = ArrowWriter::try_new(file, schema.clone(), None)?;
        writer.write(&batch)?;
        writer.close()?;
    }
    Ok(())
}

/// What one device's fit measured.
struct Fit {
    device: Device,
    seconds: f64,
    iterations: usize,
    cost: f64,
}

/// Fits k-means on a cluster whose executors compute on `device`; prints its figures.
async fn fit_on(device: Device, args: &Args, data: &std::path::Path) -> anyhow::Result<Fit> {
    let session = Session::builder()
        .executors(args.run.executors)
        .device(device)
        .adapter(args.gpu.choice())
        .local_cluster()
        .await?;
    let started = Instant::now();
    let raw = session.read_parquet(data).await?;
    let names: Vec<String> = (0..args.run.features).map(|j| format!("x{j}")).collect();
    let df = VectorAssembler::new(names)
        .transform(&raw)?
        .select_columns(&["features"])?
        .cache()
        .await?;
    let rows = df.count().await?;
    println!(
        "{device}: {} executor processes; load + assemble + cache: {:.2} s ({rows} rows)",
        session.executors().len(),
        started.elapsed().as_secs_f64()
    );
    let km = KMeans::new()
        .k(args.k)
        .max_iter(args.run.iterations)
        .seed(args.run.seed);
    let _warm = km.fit(&df).await?;
    let mut fits = Vec::new();
    let mut model = None;
    for _ in 0..args.run.runs.max(1) {
        let started = Instant::now();
        let m = km.fit(&df).await?;
        fits.push(started.elapsed().as_secs_f64());
        model = Some(m);
    }
    let model = model.ok_or_else(|| anyhow::anyhow!("no fit ran"))?;
    let fit = median(fits);
    let s = &model.summary;
    if let Some(e) = session.executors().first() {
        println!("executors' kernel: {}", e.device);
    }
    println!(
        "fit (warm, median of {}): {fit:.3} s, {} iterations, {} passes, converged: {}",
        args.run.runs, s.iterations, s.passes, s.converged
    );
    println!(
        "seconds per iteration: {:.4}; per pass: {:.4}; training cost {:.6e}",
        fit / s.iterations.max(1) as f64,
        s.seconds_per_pass(),
        model.training_cost
    );
    Ok(Fit {
        device,
        seconds: fit,
        iterations: s.iterations,
        cost: model.training_cost,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ember::run_executor_if_requested();
    ember::init_tracing("warn");
    let args = Args::parse();
    let d = args.run.features;
    let started = Instant::now();
    let x = generate(&args);
    let data = tempfile::tempdir()?;
    write_parquet(data.path(), &args, &x)?;
    println!(
        "data: {} rows x {d} features around {} centres, seed {}, {} Parquet files ({:.1} s)",
        args.run.rows,
        args.k,
        args.run.seed,
        args.run.files,
        started.elapsed().as_secs_f64()
    );
    let devices = args.gpu.devices()?;
    let mut fits = Vec::new();
    for device in &devices {
        println!();
        fits.push(fit_on(*device, &args, data.path()).await?);
    }
    let scratch = tempfile::tempdir()?;
    println!();
    if let Some(b) = sklearn_baseline(
        "kmeans",
        scratch.path(),
        &x,
        None,
        (args.run.rows, d),
        &[
            args.run.iterations.to_string(),
            args.k.to_string(),
            args.run.seed.to_string(),
        ],
    ) {
        println!(
            "scikit-learn, same rows, this run (KMeans lloyd, k-means++, n_init 1): fit {:.3} \
             s, {} iterations, {:.4} s/iteration (initialisation included), inertia {:.6e}",
            b.fit,
            b.iterations,
            b.per_iteration,
            b.inertia.unwrap_or(f64::NAN)
        );
        for f in &fits {
            let per_iteration = f.seconds / f.iterations.max(1) as f64;
            println!(
                "  {} executors: fit {:.3} s ({:.2}x scikit-learn's), {} iterations, \
                 {per_iteration:.4} s/iteration ({:.2}x), cost {:.6e} ({:.2}x its inertia)",
                f.device,
                f.seconds,
                f.seconds / b.fit,
                f.iterations,
                per_iteration / b.per_iteration,
                f.cost,
                f.cost / b.inertia.unwrap_or(f64::NAN)
            );
        }
    }

    // The assignment kernel on every device asked for, in this process over the same rows.
    let owner = arrow::buffer::Buffer::from_slice_ref(&x);
    let block = DenseBlock {
        features: owner.typed_data(),
        labels: &[],
        rows: args.run.rows,
        dimension: d,
        owner: Some(&owner),
    };
    let mut table = Vec::new();
    for device in &devices {
        let bench = match device {
            Device::Cpu => BenchDevice::cpu(x.len() * 4),
            _ => match BenchDevice::gpu(&args.gpu.choice(), x.len() * 4) {
                Ok(gpu) => gpu,
                Err(e) => {
                    println!("kernel table: no GPU in this process ({e})");
                    continue;
                }
            },
        };
        table.push(bench.kmeans(&block, args.k, args.run.kernel_passes));
    }
    println!();
    println!(
        "kernel passes in this process, {} rows x {d} (median of {}):",
        args.run.rows, args.run.kernel_passes
    );
    print_table(&table);
    Ok(())
}
