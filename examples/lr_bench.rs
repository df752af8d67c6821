//! Logistic regression benchmark: seeded synthetic data (as in ANCHORS.md: X ~ N(0, 1),
//! w ~ N(0, 1) * 2 / sqrt(d), intercept 0.25, label ~ Bernoulli(sigmoid(Xw + 0.25))),
//! binary LogisticRegression trained on a local cluster of 2 executor processes.
//!
//! Prints seconds per iteration and per pass over the data and the training AUC of the
//! fit on the cluster; then, in this process on the same data, a table of every kernel
//! (binary logistic, multinomial logistic, squared error for linear regression) on every
//! device asked for: seconds per pass, bytes read per second, and the same device's copy
//! bandwidth over as many bytes measured in the same run, with the fraction of it a pass
//! reaches. Spark's figures (ANCHORS.md) are printed beside, labelled as measured
//! elsewhere; no ratio is taken against them.
//!
//! `--device cpu|gpu|auto|both` picks what the executors' kernels run on (`both` runs the
//! fit on CPU executors and on GPU executors, one after the other, over the same data);
//! `--adapter NAME` and `--gpu-backend vulkan,gl` choose the GPU adapter.
//!
//! `cargo run --release --example lr_bench -- --rows 1000000 --features 32 --iterations 20`

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, Float64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use clap::Parser;
use ember::ml::kernel::{gradient_f32, gradient_len, gradient_serial, Loss};
use ember::ml::*;
use ember::mllib::bench::{print_table, BenchDevice};
use ember::mllib::gpu::Device;
use ember::mllib::vector::DenseBlock;
use ember::prelude::*;
use parquet::arrow::ArrowWriter;

#[path = "common/bench.rs"]
mod common;
use common::{median, sklearn_baseline, DeviceArgs, Rng, RunArgs};

/// Spark MLlib in local[2] on data from the same generator, measured elsewhere (ANCHORS.md):
/// printed beside Ember's figures, never divided by.
const SPARK_SECONDS_PER_ITERATION: f64 = 0.56;
const SPARK_AUC: f64 = 0.851134;

/// Logistic regression on a local cluster, its kernels against bandwidth, and scikit-learn
/// on the same rows.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    gpu: DeviceArgs,
    /// Classes of the multinomial kernel in the kernel table.
    #[arg(long, default_value_t = 4)]
    classes: usize,
    /// Keep the generated Parquet data in this directory (for the PySpark bench,
    /// `bench/connect_lr.sh`) instead of a temporary one.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

/// Row-major features and labels.
fn generate(args: &Args) -> (Vec<f32>, Vec<f64>) {
    let d = args.run.features;
    let mut rng = Rng(args.run.seed);
    let w: Vec<f64> = (0..d)
        .map(|_| rng.normal() * 2.0 / (d as f64).sqrt())
        .collect();
    let mut x = Vec::with_capacity(args.run.rows * d);
    let mut y = Vec::with_capacity(args.run.rows);
    for _ in 0..args.run.rows {
        let mut m = 0.25;
        for wj in &w {
            let v = rng.normal() as f32;
            m += f64::from(v) * wj;
            x.push(v);
        }
        y.push(f64::from(rng.uniform() < 1.0 / (1.0 + (-m).exp())));
    }
    (x, y)
}

fn write_parquet(dir: &std::path::Path, args: &Args, x: &[f32], y: &[f64]) -> anyhow::Result<()> {
    let d = args.run.features;
    let mut fields: Vec<Field> = (0..d)
        .map(|j| Field::new(format!("x{j}"), DataType::Float32, false))
        .collect();
    fields.push(Field::new("label", DataType::Float64, false));
    let schema = Arc::new(Schema::new(fields));
    let per_file = args.run.rows.div_ceil(args.run.files);
    for f in 0..args.run.files {
        let start = f * per_file;
        let end = ((f + 1) * per_file).min(args.run.rows);
        if start >= end {
            break;
        }
        let mut columns: Vec<Arc<dyn Array>> = (0..d)
            .map(|j| {
                Arc::new(arrow::array::Float32Array::from_iter_values(
                    (start..end).map(|r| x[r * d + j]),
                )) as Arc<dyn Array>
            })
            .collect();
        columns.push(Arc::new(Float64Array::from_iter_values(
            y[start..end].iter().copied(),
        )));
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let file = std::fs::File::create(dir.join(format!("part-{f:03}.parquet")))?;
        let mut writer = ArrowWriter::try_new(file, schema.clone(), None)?;
        writer.write(&batch)?;
        writer.close()?;
    }
    Ok(())
}

/// What one device's run measured.
struct Figures {
    device: Device,
    adapter: String,
    fit: f64,
    iterations: usize,
    passes: usize,
    converged: bool,
    tree_levels: Vec<usize>,
    per_iteration: f64,
    per_pass: f64,
    auc: f64,
    model: LogisticRegressionModel,
}

/// Starts a cluster whose executors compute on `device`, caches the assembled data and
/// times the fit.
async fn fit_on(device: Device, args: &Args, data: &std::path::Path) -> anyhow::Result<Figures> {
    let d = args.run.features;
    let session = Session::builder()
        .executors(args.run.executors)
        .device(device)
        .adapter(args.gpu.choice())
        .local_cluster()
        .await?;
    let started = Instant::now();
    let raw = session.read_parquet(data).await?;
    let names: Vec<String> = (0..d).map(|j| format!("x{j}")).collect();
    let df = VectorAssembler::new(names)
        .transform(&raw)?
        .select_columns(&["features", "label"])?
        .cache()
        .await?;
    let rows = df.count().await?;
    println!(
        "{device}: {} executor processes; load + assemble + cache: {:.2} s ({rows} rows)",
        session.executors().len(),
        started.elapsed().as_secs_f64()
    );
    let lr = LogisticRegression::new().max_iter(args.run.iterations);
    let _warm = lr.fit(&df).await?;
    let adapter = session
        .executors()
        .first()
        .map(|e| e.device.clone())
        .unwrap_or_default();
    let mut fits = Vec::new();
    let mut model = None;
    for _ in 0..args.run.runs.max(1) {
        let started = Instant::now();
        let m = lr.fit(&df).await?;
        fits.push(started.elapsed().as_secs_f64());
        model = Some(m);
    }
    let model = model.ok_or_else(|| anyhow::anyhow!("no fit ran"))?;
    let fit = median(fits);
    let s = model.summary.clone();
    let auc = BinaryClassificationEvaluator::new()
        .evaluate(&model.transform(&df)?)
        .await?;
    Ok(Figures {
        device,
        adapter: adapter.trim_start_matches("gpu: ").to_string(),
        fit,
        iterations: s.iterations,
        passes: s.passes,
        converged: s.converged,
        tree_levels: s.tree_levels.clone(),
        per_iteration: fit / s.iterations.max(1) as f64,
        per_pass: s.seconds_per_pass(),
        auc,
        model,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ember::run_executor_if_requested();
    ember::init_tracing("warn");
    let args = Args::parse();
    let d = args.run.features;

    let started = Instant::now();
    let (x, y) = generate(&args);
    let temporary = tempfile::tempdir()?;
    let data = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => temporary.path().to_path_buf(),
    };
    write_parquet(&data, &args, &x, &y)?;
    println!(
        "data: {} rows x {d} features, seed {}, {} Parquet files ({:.1} s to generate)",
        args.run.rows,
        args.run.seed,
        args.run.files,
        started.elapsed().as_secs_f64()
    );

    let devices = args.gpu.devices()?;
    let mut figures = Vec::new();
    for device in devices {
        figures.push(fit_on(device, &args, &data).await?);
    }
    let Some(model) = figures.last().map(|f| f.model.clone()) else {
        anyhow::bail!("no device to run on");
    };

    // One single-threaded pass of the same kernel over the same data, in this process.
    let block = DenseBlock {
        features: &x,
        labels: &y,
        rows: args.run.rows,
        dimension: d,
        owner: None,
    };
    let mut params = model.coefficients.clone();
    params.extend(&model.intercepts);
    let time_one = |pass: fn(Loss, &DenseBlock<'_>, &[f64], &mut [f64])| {
        let mut times = Vec::new();
        for _ in 0..3 {
            let mut out = vec![0.0; gradient_len(Loss::Logistic, d)];
            let started = Instant::now();
            pass(Loss::Logistic, &block, &params, &mut out);
            times.push(started.elapsed().as_secs_f64());
            std::hint::black_box(&out);
        }
        median(times)
    };
    let single = time_one(gradient_f32);
    let reference = time_one(gradient_serial);
    let bytes = (args.run.rows * d * 4) as f64;
    // The bandwidth floor: one thread summing the same bytes, no arithmetic to speak of.
    let floor = median(
        (0..3)
            .map(|_| {
                let started = Instant::now();
                let mut lanes = [0.0f32; 8];
                for chunk in x.chunks_exact(8) {
                    for (l, v) in lanes.iter_mut().zip(chunk) {
                        *l += v;
                    }
                }
                std::hint::black_box(lanes);
                started.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let scratch = tempfile::tempdir()?;
    let baseline = sklearn_baseline(
        "logistic",
        scratch.path(),
        &x,
        Some(&y),
        (args.run.rows, d),
        &[args.run.iterations.to_string()],
    );

    println!();
    println!(
        "single-threaded pass:  {single:.4} s, the CPU kernel on one thread in this process \
         ({:.2} GB/s of features)",
        bytes / single / 1e9
    );
    println!(
        "f64 reference pass:    {reference:.4} s, the all-f64 reference on one thread ({:.2} GB/s)",
        bytes / reference / 1e9
    );
    println!(
        "plain sum, one thread:  {floor:.4} s over the same bytes ({:.2} GB/s, the bandwidth floor)",
        bytes / floor / 1e9
    );
    println!("cached features/pass:  {} bytes", bytes as u64);
    for f in &figures {
        println!();
        println!("device: {}", f.device);
        if f.device == Device::Gpu {
            println!("adapter: {}", f.adapter);
        }
        println!(
            "fit (warm, median of {}): {:.3} s, {} iterations, {} passes, converged: {}, tree levels {:?}",
            args.run.runs, f.fit, f.iterations, f.passes, f.converged, f.tree_levels
        );
        println!(
            "seconds per iteration: {:.4} (fit time / iterations)",
            f.per_iteration
        );
        println!(
            "seconds per pass:      {:.4} ({:.2} GB/s of feature reads)",
            f.per_pass,
            bytes / f.per_pass / 1e9
        );
        println!("training AUC:          {:.6}", f.auc);
    }
    if let Some(b) = &baseline {
        println!();
        println!(
            "scikit-learn, same rows, this run (lbfgs, no penalty, 1 process): fit {:.3} s, {} \
             iterations, {:.4} s/iteration",
            b.fit, b.iterations, b.per_iteration
        );
        for f in &figures {
            println!(
                "  {} executors: {:.2}x scikit-learn's time per iteration",
                f.device,
                f.per_iteration / b.per_iteration
            );
        }
    }
    println!();
    println!(
        "Spark MLlib local[2], measured elsewhere (ANCHORS.md, same generator): \
         {SPARK_SECONDS_PER_ITERATION} s/iteration, AUC {SPARK_AUC}"
    );

    // Every kernel on every device asked for, in this process over the same rows: the
    // bandwidth a pass reaches beside the device's own copy bandwidth.
    let owner = arrow::buffer::Buffer::from_slice_ref(&x);
    let resident = DenseBlock {
        features: owner.typed_data(),
        owner: Some(&owner),
        ..block
    };
    let mut devices = Vec::new();
    for f in &figures {
        devices.push(match f.device {
            Device::Cpu => BenchDevice::cpu(x.len() * 4),
            _ => match BenchDevice::gpu(&args.gpu.choice(), x.len() * 4) {
                Ok(gpu) => gpu,
                Err(e) => {
                    println!("kernel table: no GPU in this process ({e})");
                    continue;
                }
            },
        });
    }
    let mut table = Vec::new();
    for device in &devices {
        for loss in [
            Loss::Logistic,
            Loss::Multinomial {
                classes: args.classes,
            },
            Loss::Squared,
        ] {
            table.push(device.gradient(loss, &resident, args.run.kernel_passes));
        }
    }
    println!();
    println!(
        "kernel passes in this process, {} rows x {d} (median of {}):",
        args.run.rows, args.run.kernel_passes
    );
    print_table(&table);
    Ok(())
}
