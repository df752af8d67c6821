//! Training on executors whose mllib kernels run on a GPU adapter (`--device gpu`): the
//! models match those of CPU executors, the device (adapter, backend, limits) is reported
//! by the executors and in the job's metrics, executors open the adapter or backend they
//! are told to, and one that names no adapter fails with a clear error. Skipped without
//! an adapter, except in CI (`CI=true`).

use crate::common;

use ember::ml::*;
use ember::mllib::gpu::{shared_gpu, shared_gpu_for, AdapterChoice, Device, GpuBackend};
use ember::prelude::*;

fn adapter_or_skip() -> bool {
    match shared_gpu() {
        Ok(gpu) => {
            eprintln!("adapter: {}", gpu.adapter());
            true
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and no GPU adapter (install mesa-vulkan-drivers): {e}")
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            false
        }
    }
}

async fn features(session: &Session) -> DataFrame {
    let df = session
        .read_csv(format!(
            "{}/tests/data/breast_cancer.csv",
            env!("CARGO_MANIFEST_DIR")
        ))
        .await
        .expect("read");
    let names: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != "diagnosis")
        .collect();
    let indexed = StringIndexer::new("diagnosis", "label")
        .fit(&df)
        .await
        .expect("index")
        .transform(&df)
        .expect("transform");
    let assembled = VectorAssembler::new(names)
        .output_col("raw")
        .transform(&indexed)
        .expect("assemble");
    StandardScaler::new()
        .with_mean(true)
        .input_col("raw")
        .output_col("features")
        .fit(&assembled)
        .await
        .expect("scaler")
        .transform(&assembled)
        .expect("scale")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_on_gpu_executors_gives_the_cpu_model() {
    if !adapter_or_skip() {
        return;
    }
    let cpu_session = common::start(
        common::Mode::Processes,
        common::builder(2).device(Device::Cpu),
    )
    .await;
    let gpu_session = common::start(
        common::Mode::Processes,
        common::builder(2).device(Device::Gpu),
    )
    .await;
    for e in gpu_session.executors() {
        assert!(
            e.device.starts_with("gpu: "),
            "executor {} reports {}",
            e.id,
            e.device
        );
    }
    let lr = LogisticRegression::new()
        .reg_param(0.05)
        .tol(1e-9)
        .max_iter(200);
    let on_cpu = lr
        .fit(&features(&cpu_session).await)
        .await
        .expect("cpu fit");
    let gpu_df = features(&gpu_session).await;
    let on_gpu = lr.fit(&gpu_df).await.expect("gpu fit");
    let metrics = gpu_session.last_job_metrics().expect("metrics");
    assert!(
        metrics.devices.iter().any(|d| d.starts_with("gpu: ")),
        "job metrics name the GPU: {:?}",
        metrics.devices
    );
    for (g, c) in on_gpu.coefficients.iter().zip(&on_cpu.coefficients) {
        assert!(
            (g - c).abs() < 1e-3 * c.abs().max(1.0),
            "{:?} vs {:?}",
            on_gpu.coefficients,
            on_cpu.coefficients
        );
    }
    assert!((on_gpu.intercepts[0] - on_cpu.intercepts[0]).abs() < 1e-3);

    let km = KMeans::new().k(2).seed(3).tol(1e-6);
    let cpu_km = km
        .fit(&features(&cpu_session).await)
        .await
        .expect("cpu k-means");
    let gpu_km = km.fit(&gpu_df).await.expect("gpu k-means");
    for (g, c) in gpu_km.centres.iter().zip(&cpu_km.centres) {
        assert!(
            (g - c).abs() < 1e-3,
            "{:?} vs {:?}",
            gpu_km.centres,
            cpu_km.centres
        );
    }
    let cpu_metrics = cpu_session.last_job_metrics().expect("metrics");
    assert_eq!(cpu_metrics.devices, vec!["cpu".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_open_the_backend_they_are_told_to() {
    let gl = AdapterChoice::backend(GpuBackend::Gl);
    match shared_gpu_for(&gl) {
        Ok(gpu) => eprintln!("GL adapter: {}", gpu.describe()),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") && cfg!(target_os = "linux") => {
            panic!("CI=true and no GL adapter (install libegl-mesa0 and libgl1-mesa-dri): {e}")
        }
        Err(e) => return eprintln!("skipping: {e}"),
    }
    let session = common::start(
        common::Mode::Processes,
        common::builder(1).device(Device::Gpu).adapter(gl),
    )
    .await;
    for e in session.executors() {
        assert!(
            e.device.starts_with("gpu: ")
                && e.device.contains("(gl, ")
                && e.device.contains("max storage binding"),
            "executor {} reports {}",
            e.id,
            e.device
        );
    }
    let lr = LogisticRegression::new().max_iter(30);
    let on_gl = lr.fit(&features(&session).await).await.expect("GL fit");
    let cpu_session = common::start(
        common::Mode::InProcess,
        common::builder(1).device(Device::Cpu),
    )
    .await;
    let on_cpu = lr
        .fit(&features(&cpu_session).await)
        .await
        .expect("cpu fit");
    for (g, c) in on_gl.coefficients.iter().zip(&on_cpu.coefficients) {
        assert!((g - c).abs() < 1e-3 * c.abs().max(1.0), "{g} vs {c}");
    }
}

#[test]
fn an_executor_told_an_adapter_that_is_not_there_says_what_there_is() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ember-executor"))
        .args([
            "--driver",
            "127.0.0.1:1",
            "--device",
            "gpu",
            "--adapter",
            "no-such-gpu",
        ])
        .env("RUST_LOG", "error")
        .output()
        .expect("run ember-executor");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no GPU adapter named like 'no-such-gpu'"),
        "stderr: {stderr}"
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ember-executor"))
        .args(["--driver", "127.0.0.1:1", "--gpu-backend", "vulkan,cuda"])
        .output()
        .expect("run ember-executor");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown GPU backend 'cuda'"),
        "stderr: {stderr}"
    );
}
