//! Executor entry point: the command line of `ember-executor`, and the hook that lets any
//! Ember application serve as its own executor binary (so executors run the application's
//! registered functions).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use ember_executor::ExecutorConfig;
use tokio::io::AsyncReadExt;

/// Set in the environment of a process started to be an executor.
pub(crate) const RUN_AS_EXECUTOR_ENV: &str = "EMBER_RUN_AS_EXECUTOR";

/// Whether this process called [`run_executor_if_requested`], so it can be respawned as an
/// executor by `Session::local_cluster`.
static SELF_EXEC_READY: AtomicBool = AtomicBool::new(false);

pub(crate) fn self_exec_ready() -> bool {
    SELF_EXEC_READY.load(Ordering::Relaxed)
}

/// `ember-executor`: runs tasks and keeps blocks for an Ember driver.
#[derive(Debug, Clone, Parser)]
#[command(name = "ember-executor", version, about)]
pub struct ExecutorArgs {
    /// The driver's address, host:port.
    #[arg(long)]
    pub driver: String,
    /// Address to listen on; port 0 picks a free port. A non-loopback address needs a
    /// secret (or --insecure).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
    /// The address the driver and other executors dial, HOST or HOST:PORT (default: the
    /// bound address; for a wildcard bind, this host's address on the route to the
    /// driver).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub advertise: Option<String>,
    /// Serve plain-HTTP health checks on this address (for Kubernetes probes):
    /// `GET /healthz` answers 200 while the executor runs, `GET /readyz` 200 while it is
    /// registered with its driver and not stopping, 503 otherwise. Nothing else is served
    /// there.
    #[arg(long, value_name = "HOST:PORT")]
    pub health_bind: Option<SocketAddr>,
    /// Secret and TLS.
    #[command(flatten)]
    pub security: crate::security::SecurityArgs,
    /// Memory limit, e.g. 2GiB, 512MiB, 1000000: half holds blocks (cached partitions,
    /// shuffle outputs; beyond it shuffle outputs spill to disk), half is the operators' pool.
    #[arg(long, default_value = "2GiB", value_parser = parse_bytes)]
    pub memory: usize,
    /// Task slots (and compute threads); defaults to the machine's cores.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Executor id; defaults to one made from the bound address.
    #[arg(long)]
    pub id: Option<String>,
    /// What mllib kernels run on: auto (a hardware GPU adapter when one opens at the first
    /// training pass, else the CPU), gpu (any adapter; fail at start without one) or cpu.
    #[arg(long, default_value = "auto")]
    pub device: ember_mllib::gpu::Device,
    /// Open only a GPU adapter whose name contains this (case-insensitive), e.g.
    /// `llvmpipe`; by default the best-ranked one: discrete > integrated > virtual >
    /// software, then Vulkan > Metal > DX12 > GL.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Look for GPU adapters on these backends only: a comma-separated list of vulkan,
    /// metal, dx12, gl (default: every backend this build carries).
    #[arg(long, value_delimiter = ',')]
    pub gpu_backend: Vec<ember_mllib::gpu::GpuBackend>,
    /// Exit when standard input closes (set by a parent that wants no orphans).
    #[arg(long)]
    pub exit_on_stdin_close: bool,
    /// Seconds to keep running while the driver does not answer heartbeats; then stop.
    #[arg(long, default_value_t = ember_executor::DEFAULT_DRIVER_TIMEOUT.as_secs_f64(), value_parser = parse_seconds)]
    pub driver_timeout: f64,
    /// Fault injection for tests of straggler handling: every task waits this many
    /// milliseconds before it starts.
    #[arg(long, hide = true)]
    pub inject_task_delay_ms: Option<u64>,
    /// A directory this executor shares with the other processes of its application on
    /// this host, on a memory file system (a local cluster passes one under /dev/shm):
    /// blocks that same-host peers fetch are written there once as Arrow IPC files and
    /// memory-mapped by the reader instead of being sent.
    #[arg(long, value_name = "DIR")]
    pub share_dir: Option<std::path::PathBuf>,
}

/// Parses a positive number of seconds.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().trim_end_matches('s').parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{text}` is not a positive number of seconds")),
    }
}

/// The hooks that give an executor mllib's kernel for `device` and report it.
///
/// # Errors
///
/// `Device::Gpu` and no usable GPU adapter.
pub async fn kernel_hooks(
    device: ember_mllib::gpu::Device,
    adapter: ember_mllib::gpu::AdapterChoice,
) -> crate::Result<ember_executor::ExecutorHooks> {
    // Opening a GPU (adapter request, shader compilation) blocks: not on a runtime worker.
    let kernel =
        tokio::task::spawn_blocking(move || ember_mllib::gpu::kernel_for(device, &adapter))
            .await
            .map_err(|e| crate::Error::Cluster(format!("opening the mllib kernel: {e}")))??;
    let probe = std::sync::Arc::clone(&kernel);
    Ok(ember_executor::ExecutorHooks {
        session: Some(std::sync::Arc::new(
            move |config: datafusion::prelude::SessionConfig| {
                config.with_extension(std::sync::Arc::new(ember_mllib::gpu::KernelExtension(
                    std::sync::Arc::clone(&kernel),
                )))
            },
        )),
        device: Some(std::sync::Arc::new(move || probe.device())),
    })
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `/healthz` and `/readyz` on `bind` until aborted; ready while `stopping` is
/// false (the executor registered before this starts, and stops when the driver is lost).
async fn serve_health(
    bind: SocketAddr,
    stopping: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use axum::http::StatusCode;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("--health-bind {bind}: {e}"))?;
    let ready = stopping.subscribe();
    let router = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let stopping = *ready.borrow();
                async move {
                    if stopping {
                        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
                    } else {
                        (StatusCode::OK, "ready\n")
                    }
                }
            }),
        );
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "health endpoint failed");
        }
    }))
}

/// Parses a byte size such as `2GiB`, `512MiB`, `64KiB`, `1g` or `1000`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 2GiB or 512MiB)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0_f64.powi(4),
        other => return Err(format!("unknown size unit `{other}` in `{text}`")),
    };
    Ok((value * scale) as usize)
}

/// Runs an executor with `args` until it is shut down or loses its driver.
pub async fn run_executor(args: ExecutorArgs) -> anyhow::Result<()> {
    let cores = args.cores.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    ember_executor::process_memory::limit_malloc_arenas(cores);
    crate::register_extensions();
    let handle = ember_executor::start(ExecutorConfig {
        driver: args.driver.clone(),
        bind: args.bind,
        memory_bytes: args.memory,
        cores,
        id: args.id.clone(),
        register_timeout: ember_executor::DEFAULT_REGISTER_TIMEOUT,
        hooks: kernel_hooks(
            args.device,
            ember_mllib::gpu::AdapterChoice {
                name: args.adapter.clone(),
                backends: args.gpu_backend.clone(),
                ..Default::default()
            },
        )
        .await?,
        driver_timeout: std::time::Duration::from_secs_f64(args.driver_timeout),
        task_delay: args
            .inject_task_delay_ms
            .map(std::time::Duration::from_millis),
        advertise: args.advertise.clone(),
        security: args.security.resolve()?,
        share_dir: args.share_dir.clone(),
    })
    .await?;
    let _health = match args.health_bind {
        Some(bind) => Some(AbortOnDrop(
            serve_health(bind, handle.shutdown_signal()).await?,
        )),
        None => None,
    };
    // Aborted on return, so the watcher never outlives the executor.
    let _stdin_watch = args.exit_on_stdin_close.then(|| {
        let stop = handle.shutdown_signal();
        AbortOnDrop(tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            // Returns 0 (EOF) or an error once the parent is gone.
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            stop.send_replace(true);
        }))
    });
    handle.stopped().await;
    Ok(())
}

/// Lets this program double as an Ember executor.
///
/// Call it first thing in `main`. In a normal run it returns at once and marks the program
/// as able to serve as its own executor, so `Session::local_cluster` starts executor
/// processes from this same binary (which therefore know every function the program
/// registers). In a process started as an executor it runs the executor and exits.
pub fn run_executor_if_requested() {
    if std::env::var_os(RUN_AS_EXECUTOR_ENV).is_none() {
        SELF_EXEC_READY.store(true, Ordering::Relaxed);
        return;
    }
    crate::init_tracing("warn");
    let args = ExecutorArgs::parse();
    // `main` may already be inside a tokio runtime (`#[tokio::main]`), where another one
    // cannot be started on the same thread: the executor gets a thread of its own.
    let runner = std::thread::Builder::new()
        .name("ember-executor".into())
        .spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("ember-rpc")
                .enable_all()
                .build()?;
            rt.block_on(run_executor(args))
        });
    let code = match runner.map(|t| t.join()) {
        Ok(Ok(Ok(()))) => 0,
        Ok(Ok(Err(e))) => {
            eprintln!("ember-executor: {e:#}");
            1
        }
        Ok(Err(_)) => {
            eprintln!("ember-executor: executor thread panicked");
            1
        }
        Err(e) => {
            eprintln!("ember-executor: cannot start executor thread: {e}");
            1
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("1.5k"), Ok(1536));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
