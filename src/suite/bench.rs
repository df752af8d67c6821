//! `ember tpch bench` and `ember tpcds bench`: time a suite's queries on an Ember cluster and
//! on single-process DataFusion over the same Parquet files, print both with Ember's job
//! metrics and whether the answers agree; generate the data first if needed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use arrow::record_batch::RecordBatch;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use ember_driver::JobMetrics;

use super::{compare, Suite, DEFAULT_PARTS};
use crate::session::Session;

/// How many of the slowest Ember queries get a metrics breakdown.
const SLOWEST_SHOWN: usize = 3;

/// Arguments of `ember tpch bench` and `ember tpcds bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Scale factor of the data (generated into target/<suite>-sf<SF> unless --data is
    /// given).
    #[arg(long, default_value_t = 1.0, value_parser = super::parse_scale_factor,
          allow_hyphen_values = true)]
    pub sf: f64,
    /// Executor processes to start.
    #[arg(long, default_value_t = 2)]
    pub executors: usize,
    /// Memory limit per executor (half for blocks, half for operators; both spill).
    #[arg(long, default_value = "2GiB", value_parser = crate::executor_main::parse_bytes)]
    pub memory: usize,
    /// A data directory written by `ember <suite> gen` (default: target/<suite>-sf<SF>,
    /// generated if it is missing a table).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Files per big table when the data has to be generated.
    #[arg(long, default_value_t = DEFAULT_PARTS, value_parser = super::parse_parts)]
    pub parts: usize,
    /// Queries to run, such as 1,3,5 (default: all).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub queries: Vec<usize>,
    /// Timed runs per query and engine, after one warm-up run each; the median is shown.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Seconds one run of one query may take before it counts as failed, so a stuck query
    /// does not stall the rest.
    #[arg(long, value_name = "SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// A DataFusion setting for the baseline only, KEY=VALUE (repeatable), such as
    /// `datafusion.optimizer.enable_dynamic_filter_pushdown=false` to see what one
    /// optimization is worth.
    #[arg(long = "baseline-option", value_name = "KEY=VALUE", value_parser = parse_option)]
    pub baseline_options: Vec<(String, String)>,
    /// Executors send each other every block over loopback gRPC, as between hosts,
    /// instead of sharing block files on /dev/shm (to measure what those files save).
    #[arg(long)]
    pub no_host_files: bool,
    /// Joins run as planned: no small-looking side is run first to be broadcast when it
    /// turns out small (to measure what that saves).
    #[arg(long)]
    pub no_runtime_broadcast: bool,
    /// A stage's independent inputs are computed one after the other instead of at once
    /// (to measure what running them together saves).
    #[arg(long)]
    pub one_branch_at_a_time: bool,
    /// Scans are co-partitioned by the key ranges of their files, so joins of tables
    /// stored in key order need no shuffle (off by default, to measure what it saves).
    #[arg(long)]
    pub key_ranges: bool,
}

fn parse_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// One engine's answer to one query: the median time and the answer of the last run.
#[derive(Debug, Clone)]
struct Timing {
    median: Duration,
    answer: Vec<RecordBatch>,
}

impl Timing {
    fn rows(&self) -> usize {
        row_count(&self.answer)
    }
}

/// Both engines' results for one query.
struct QueryResult {
    n: usize,
    ember: anyhow::Result<Timing>,
    metrics: Option<JobMetrics>,
    /// Each executor's peak resident set over the query's Ember runs, in bytes.
    peak_rss: Vec<u64>,
    datafusion: anyhow::Result<Timing>,
    /// Why Ember's answer differs from DataFusion's, when both answered and they differ.
    difference: Option<String>,
}

impl QueryResult {
    /// Why this query counts as failed, if it does.
    fn failure(&self) -> Option<String> {
        match (&self.ember, &self.datafusion, &self.difference) {
            (Err(_), _, _) => Some(format!("q{} (ember error)", self.n)),
            (_, Err(_), _) => Some(format!("q{} (datafusion error)", self.n)),
            (_, _, Some(why)) => Some(format!("q{} (answers differ: {why})", self.n)),
            _ => None,
        }
    }
}

/// Runs `ember <suite> bench`: prepares the data, starts an Ember cluster of `executors`
/// processes and a DataFusion context with one partition per core, runs each query once to
/// warm up and then `runs` times on each (a run past `timeout` seconds fails the query on
/// that engine), and prints one row per query as it finishes,
/// the slowest Ember queries with their job metrics, and a last line
/// `total ember=<s> datafusion=<s> ratio=<x>` over the queries both engines answered.
///
/// # Errors
///
/// If a query number is not one of the suite's, the data cannot be found or generated or
/// the cluster cannot start; after printing everything, if any query failed on either
/// engine or the engines' answers differ.
pub async fn bench(suite: &'static Suite, args: &BenchArgs) -> anyhow::Result<()> {
    let count = suite.queries.len();
    let queries: Vec<usize> = if args.queries.is_empty() {
        (1..=count).collect()
    } else {
        args.queries.clone()
    };
    if let Some(n) = queries.iter().find(|n| suite.query(**n).is_none()) {
        bail!("{n} is not a {} query number (1 to {count})", suite.name);
    }
    let dir = prepare_data(suite, args).await?;

    let session = Session::builder()
        .executors(args.executors)
        .memory_per_executor(args.memory)
        .same_host_files(!args.no_host_files)
        .runtime_broadcast(!args.no_runtime_broadcast)
        .key_range_scans(args.key_ranges)
        .driver_config(ember_driver::DriverConfig {
            branches_together: !args.one_branch_at_a_time,
            ..ember_driver::DriverConfig::default()
        })
        .local_cluster()
        .await
        .context("starting the Ember cluster")?;
    suite
        .register(&session, &dir)
        .await
        .with_context(|| format!("registering the tables of {} with Ember", dir.display()))?;
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    // The baseline gets the cluster's total memory as its operator pool, spilling to disk.
    let total_memory = args.memory.saturating_mul(args.executors);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(total_memory)))
        .build_arc()
        .context("DataFusion runtime")?;
    let mut config = SessionConfig::new().with_target_partitions(cores);
    for (key, value) in &args.baseline_options {
        config
            .options_mut()
            .set(key, value)
            .with_context(|| format!("--baseline-option {key}={value}"))?;
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    suite
        .register_datafusion(&ctx, &dir)
        .await
        .with_context(|| {
            format!(
                "registering the tables of {} with DataFusion",
                dir.display()
            )
        })?;

    println!(
        "{} from {}: Ember with {} executor processes of {} MiB, DataFusion with {cores} \
         partitions and a {} MiB pool; median of {} runs after 1 warm-up",
        suite.name,
        dir.display(),
        args.executors,
        args.memory >> 20,
        total_memory >> 20,
        args.runs
    );
    println!(
        "{:<5} {:>9} {:>12} {:>7} {:>8} {:>6} {:>7} {:>7} {:>11} {:>11} {:>15}",
        "query",
        "ember_s",
        "datafusion_s",
        "ratio",
        "rows",
        "agree",
        "stages",
        "tasks",
        "MB_fetched",
        "MB_spilled",
        "peak_rss_MiB"
    );
    let limit = Duration::from_secs(args.timeout);
    let mut results = Vec::with_capacity(queries.len());
    for n in queries {
        let text = suite
            .query(n)
            .with_context(|| format!("no {} query {n}", suite.name))?;
        executor_peaks(&session, true).await;
        let ember = time_runs(args.runs, limit, || async {
            Ok(session.sql(text).await?.collect().await?)
        })
        .await;
        let metrics = ember.as_ref().ok().and_then(|_| session.last_job_metrics());
        let peak_rss = executor_peaks(&session, false).await;
        let datafusion = time_runs(args.runs, limit, || async {
            Ok(ctx.sql(text).await?.collect().await?)
        })
        .await;
        let difference = match (&ember, &datafusion) {
            (Ok(e), Ok(d)) => compare::difference(&e.answer, &d.answer),
            _ => None,
        };
        let result = QueryResult {
            n,
            ember,
            metrics,
            peak_rss,
            datafusion,
            difference,
        };
        println!("{}", row(&result));
        results.push(result);
    }

    print_slowest(&results);
    let answered = results
        .iter()
        .filter_map(|r| Some((r.ember.as_ref().ok()?, r.datafusion.as_ref().ok()?)));
    let (ember_total, datafusion_total) = answered.fold((0.0, 0.0), |(e, d), (te, td)| {
        (e + te.median.as_secs_f64(), d + td.median.as_secs_f64())
    });
    println!(
        "total ember={ember_total:.3} datafusion={datafusion_total:.3} ratio={:.2}",
        ember_total / datafusion_total
    );

    let failures: Vec<String> = results.iter().filter_map(QueryResult::failure).collect();
    if !failures.is_empty() {
        bail!(
            "{} of {} queries failed: {}",
            failures.len(),
            results.len(),
            failures.join(", ")
        );
    }
    Ok(())
}

/// Each live executor's peak resident set since the last reset, in bytes (0 for one that
/// does not answer); with `reset`, a new measurement starts.
async fn executor_peaks(session: &Session, reset: bool) -> Vec<u64> {
    let mut peaks = Vec::new();
    for e in session.executors() {
        let status = if reset {
            session.driver().reset_executor_peak_rss(&e.id).await
        } else {
            session.driver().executor_status(&e.id).await
        };
        peaks.push(status.map_or(0, |s| s.peak_rss_bytes));
    }
    peaks
}

/// The data directory to use: `--data` if given (it must be complete), otherwise
/// `target/<suite>-sf<SF>`, generated unless all the suite's tables are already there.
async fn prepare_data(suite: &'static Suite, args: &BenchArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.data {
        let missing = suite.missing_tables(dir);
        if !missing.is_empty() {
            bail!(
                "{}: not a {} data directory, no table {} (write one with \
                 `ember {} gen --sf SF --out {}`)",
                dir.display(),
                suite.name,
                missing.join(", "),
                suite.command,
                dir.display()
            );
        }
        return Ok(dir.clone());
    }
    let dir = Path::new("target").join(format!("{}-sf{}", suite.command, args.sf));
    if suite.missing_tables(&dir).is_empty() {
        return Ok(dir);
    }
    println!(
        "generating {} SF {} into {}",
        suite.name,
        args.sf,
        dir.display()
    );
    let (sf, parts, out) = (args.sf, args.parts, dir.clone());
    let summary = tokio::task::spawn_blocking(move || suite.generate(sf, &out, parts))
        .await
        .with_context(|| format!("the {} generator task panicked", suite.name))??;
    print!("{summary}");
    Ok(dir)
}

/// Runs `run` once to warm up and `runs` times timed, each within `limit`; returns the
/// median time and the answer of the last run, or the first error.
async fn time_runs<F, Fut>(runs: u32, limit: Duration, mut run: F) -> anyhow::Result<Timing>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<RecordBatch>>>,
{
    let mut within_limit = || {
        let run = run();
        async move {
            tokio::time::timeout(limit, run)
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {limit:?}"))?
        }
    };
    within_limit().await?;
    let mut times = Vec::with_capacity(runs as usize);
    let mut answer = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        answer = within_limit().await?;
        times.push(started.elapsed());
    }
    Ok(Timing {
        median: median(&mut times),
        answer,
    })
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    match times.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2,
    }
}

fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// An error on one line, so the table stays a table.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table row of one query.
fn row(r: &QueryResult) -> String {
    let name = format!("q{}", r.n);
    match (&r.ember, &r.datafusion) {
        (Err(e), _) => format!("{name:<5} ember error: {}", one_line(e)),
        (Ok(_), Err(e)) => format!("{name:<5} datafusion error: {}", one_line(e)),
        (Ok(e), Ok(d)) => {
            let (stages, tasks, fetched, spilled) = match &r.metrics {
                Some(m) => (
                    m.stages_run.to_string(),
                    m.tasks_run.to_string(),
                    format!("{:.2}", megabytes(m.bytes_fetched)),
                    format!("{:.2}", megabytes(m.spilled_bytes)),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            let peaks = r
                .peak_rss
                .iter()
                .map(|b| (b >> 20).to_string())
                .collect::<Vec<_>>()
                .join("/");
            let rows = if e.rows() == d.rows() {
                e.rows().to_string()
            } else {
                format!("{}!={}", e.rows(), d.rows())
            };
            let agree = if r.difference.is_none() { "yes" } else { "NO" };
            format!(
                "{name:<5} {:>9.3} {:>12.3} {:>7.2} {rows:>8} {agree:>6} {stages:>7} {tasks:>7} \
                 {fetched:>11} {spilled:>11} {peaks:>15}",
                e.median.as_secs_f64(),
                d.median.as_secs_f64(),
                e.median.as_secs_f64() / d.median.as_secs_f64()
            )
        }
    }
}

/// Prints the slowest Ember queries with every counter and timing of their last job.
fn print_slowest(results: &[QueryResult]) {
    let mut timed: Vec<(&QueryResult, &Timing)> = results
        .iter()
        .filter_map(|r| Some((r, r.ember.as_ref().ok()?)))
        .collect();
    if timed.is_empty() {
        return;
    }
    timed.sort_by_key(|(_, t)| std::cmp::Reverse(t.median));
    println!("slowest on Ember:");
    for (r, t) in timed.into_iter().take(SLOWEST_SHOWN) {
        println!("  q{:<3} {:>9.3}s", r.n, t.median.as_secs_f64());
        match &r.metrics {
            Some(m) => {
                for line in breakdown(m) {
                    println!("       {line}");
                }
            }
            None => println!("       no job metrics"),
        }
    }
}

/// The lines of one job's breakdown: counters, times, then each stage run.
fn breakdown(m: &JobMetrics) -> Vec<String> {
    let secs = |d: Duration| d.as_secs_f64();
    let mut lines = vec![
        format!(
            "stages={} tasks={} task_failures={} source_partitions={} blocks_local={} \
             blocks_remote={} MB_fetched={:.2} MB_mapped={:.2} MB_shuffled={:.2} MB_spilled={:.2} \
             cached_blocks_used={} recomputed={} executors_lost={} executors_replaced={} \
             join_filters_filled={} sides_broadcast={} sides_restricting={} replanned=[{}]",
            m.stages_run,
            m.tasks_run,
            m.task_failures,
            m.source_partitions_read,
            m.blocks_read_local,
            m.blocks_read_remote,
            megabytes(m.bytes_fetched),
            megabytes(m.bytes_mapped),
            megabytes(m.shuffle_bytes_written),
            megabytes(m.spilled_bytes),
            m.cached_blocks_used,
            m.partitions_recomputed,
            m.executors_lost,
            m.executors_replaced,
            m.join_filters_filled,
            m.sides_broadcast,
            m.sides_restricting,
            m.replanned.join(", ")
        ),
        format!(
            "job={:.3}s planning={:.3}s task_time={:.3}s fetch_time={:.3}s \
             shuffle_write_time={:.3}s plan_decode_time={:.3}s driver_time={:.3}s \
             launch_KB={:.1}",
            secs(m.duration),
            secs(m.planning),
            secs(m.task_time),
            secs(m.fetch_time),
            secs(m.shuffle_write_time),
            secs(m.plan_decode_time),
            secs(m.driver_time),
            m.launch_bytes as f64 / 1e3
        ),
    ];
    for stage in &m.stages {
        lines.push(format!(
            "{}{}: {} tasks in {:.3}s",
            stage.dataset,
            if stage.shuffle { " (shuffle map)" } else { "" },
            stage.tasks,
            secs(stage.wall)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(
            median(&mut [ms(4), ms(1), ms(2), ms(3)]),
            Duration::from_micros(2_500)
        );
        assert_eq!(median(&mut []), Duration::ZERO);
    }
}
