//! `ember serve`: fitted pipelines saved by [`crate::ml`] answered over HTTP, in this
//! process and without a cluster (the pipeline's own transform on each request's rows,
//! through [`ember_mllib::serving::Predictor`]), speaking the Open Inference Protocol v2
//! and TensorFlow Serving's REST API, with request batching, model versions picked up
//! while running, and Prometheus metrics.

mod batch;
mod error;
mod http;
mod json;
mod metrics;
mod repo;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

pub use batch::BatchConfig;

/// Arguments of `ember serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A model to serve, NAME=DIR: a pipeline model saved by `PipelineModel::save`, or a
    /// directory of numbered version directories (the newest is served by default; new
    /// ones are picked up while running).
    #[arg(long = "model", value_name = "NAME=DIR", required = true)]
    pub models: Vec<String>,
    /// Port to listen on (0 picks a free one; the URL printed says which).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// How long a batch waits for more requests after its first (e.g. 2ms). With 0,
    /// requests merge only when they queue behind a batch being evaluated.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub batch_window: Duration,
    /// Most rows in a merged batch; 1 turns batching off.
    #[arg(long, default_value_t = 256)]
    pub max_batch: usize,
    /// How often model directories are scanned for new or removed versions.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub poll: Duration,
    /// Largest request body accepted (larger ones get 413).
    #[arg(long, default_value = "4MiB", value_parser = crate::executor_main::parse_bytes)]
    pub max_body: usize,
}

/// Parses a duration such as `2ms`, `500us`, `1.5s` or `0`.
///
/// # Errors
///
/// Not a number followed by `ns`, `us`, `ms`, `s` or `m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 2ms, 500us or 1s"))?;
    let seconds = match unit.trim() {
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "" if value == 0.0 => 0.0,
        _ => return Err(format!("'{text}': give a unit: ns, us, ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("'{text}': {e}"))
}

/// `ember serve`: loads the models, serves them until SIGINT or SIGTERM, then finishes
/// the requests in flight.
///
/// # Errors
///
/// A `--model` is malformed, a model has no version that loads, or the address is taken.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::default());
    let batching = BatchConfig {
        window: args.batch_window,
        max_rows: args.max_batch,
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let mut models = BTreeMap::new();
    for spec in &args.models {
        let (name, dir) = spec
            .split_once('=')
            .filter(|(n, d)| !n.is_empty() && !d.is_empty())
            .with_context(|| format!("--model '{spec}': expected NAME=DIR"))?;
        if models.contains_key(name) {
            bail!("--model '{spec}': model '{name}' given twice");
        }
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!("--model '{spec}': {} is not a directory", dir.display());
        }
        let model = Arc::new(repo::Model::new(
            name.to_string(),
            dir.clone(),
            batching,
            Arc::clone(&metrics),
        ));
        if model.refresh().await == 0 {
            let why: Vec<String> = model
                .failures()
                .into_iter()
                .map(|(v, f)| format!("version {v}: {}", f.error))
                .collect();
            if why.is_empty() {
                bail!(
                    "model '{name}': {} holds no saved model (metadata.json) and no numbered \
                     version directories",
                    dir.display()
                );
            }
            bail!("model '{name}': no version loads: {}", why.join("; "));
        }
        models.insert(name.to_string(), model);
    }
    let listener = tokio::net::TcpListener::bind((args.bind, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.bind, args.port))?;
    let addr = listener.local_addr()?;

    let watched: Vec<Arc<repo::Model>> = models.values().cloned().collect();
    let poll = args.poll;
    let poller = tokio::spawn(async move {
        loop {
            tokio::time::sleep(poll).await;
            for model in &watched {
                model.refresh().await;
            }
        }
    });

    let summary: Vec<String> = models
        .values()
        .map(|m| {
            let versions: Vec<String> = m.versions().iter().map(u64::to_string).collect();
            format!("{} (versions {})", m.name, versions.join(", "))
        })
        .collect();
    let state = Arc::new(http::AppState {
        models,
        metrics,
        max_body: args.max_body,
    });
    tracing::info!(%addr, "ember serve started");
    println!(
        "ember serve listening on http://{addr} serving {}",
        summary.join(", ")
    );
    use std::io::Write;
    std::io::stdout().flush()?;

    let signal = crate::cli::shutdown_signal()?;
    let shutdown = async move {
        signal.await;
        eprintln!("shutting down: finishing the requests in flight");
    };
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    poller.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("2ms"), Ok(Duration::from_millis(2)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
