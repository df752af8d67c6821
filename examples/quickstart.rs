//! Quickstart: Ember's main job on a local cluster, end to end.
//!
//! 1. generate a small sales data set as Parquet files,
//! 2. start a local cluster of 2 executor processes,
//! 3. cache a filtered DataFrame in the executors' memory and aggregate it,
//! 4. kill one executor with SIGKILL,
//! 5. run the aggregate again: only the partitions that lived on the dead executor are
//!    recomputed from lineage, and the answer is the same.
//!
//! Run it with `cargo run --release --example quickstart`. It serves the web UI while it
//! runs (the URL is printed); at a terminal it keeps the cluster and the UI up at the end
//! until Enter is pressed.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use ember::prelude::*;
use parquet::arrow::ArrowWriter;
use rand::{Rng, SeedableRng};

const FILES: usize = 8;
const ROWS_PER_FILE: usize = 250_000;
const REGIONS: [&str; 5] = ["north", "south", "east", "west", "central"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Lets this program serve as its own executor binary.
    ember::run_executor_if_requested();
    ember::init_tracing("warn");

    let data = tempfile::tempdir()?;
    generate_sales(data.path())?;
    println!(
        "generated {} rows in {FILES} Parquet files under {}",
        FILES * ROWS_PER_FILE,
        data.path().display()
    );

    // Two executor processes with two task slots each: the data is read as 4 partitions.
    let session = Session::builder()
        .executors(2)
        .cores_per_executor(2)
        .ui(ember::ui::UiConfig::default())
        .local_cluster()
        .await?;
    if let Some(url) = session.ui_url() {
        println!("web UI at {url}");
    }
    for e in session.executors() {
        println!(
            "executor {} at {} (pid {}, {} task slots)",
            e.id.0, e.address, e.pid, e.cores
        );
    }

    // Cache the big orders in executor memory.
    let big_orders = session
        .read_parquet(data.path())
        .await?
        .filter(col("amount").gt(lit(50.0)))?
        .cache()
        .await?;
    let n = big_orders.count().await?;
    let m = session.last_job_metrics().unwrap_or_default();
    println!(
        "\ncached {n} big orders: {} tasks, {} source partitions read",
        m.tasks_run, m.source_partitions_read
    );

    let by_region = || async {
        big_orders
            .clone()
            .aggregate(
                vec![col("region")],
                vec![
                    sum(col("amount")).alias("revenue"),
                    count(lit(1)).alias("orders"),
                ],
            )?
            .sort(vec![col("region").sort(true, false)])?
            .collect()
            .await
    };
    let before = by_region().await?;
    let m = session.last_job_metrics().unwrap_or_default();
    println!(
        "\nrevenue by region (from cache: {} cached blocks used, {} source partitions read):",
        m.cached_blocks_used, m.source_partitions_read
    );
    println!("{}", arrow::util::pretty::pretty_format_batches(&before)?);

    let killed = session.kill_executor(0)?;
    println!("\nkilled {killed} with SIGKILL; its cached blocks are gone");

    let after = by_region().await?;
    let m = session.last_job_metrics().unwrap_or_default();
    println!(
        "\nsame query again: {} partitions recomputed from lineage, {} cached blocks still used, {} executor(s) lost, {} tasks",
        m.partitions_recomputed, m.cached_blocks_used, m.executors_lost, m.tasks_run
    );
    println!("{}", arrow::util::pretty::pretty_format_batches(&after)?);
    if before != after {
        anyhow::bail!("answer changed after recovery")
    }
    println!("answer unchanged after losing an executor");
    use std::io::IsTerminal;
    if let (Some(url), true) = (session.ui_url(), std::io::stdin().is_terminal()) {
        println!("the web UI at {url} shows the jobs, stages and executors; press Enter to stop");
        let mut line = String::new();
        tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await??;
    }
    Ok(())
}

/// Writes `FILES` Parquet files of synthetic orders (seeded, so every run is the same).
fn generate_sales(dir: &std::path::Path) -> anyhow::Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for f in 0..FILES {
        let start = (f * ROWS_PER_FILE) as i64;
        let ids = Int64Array::from_iter_values(start..start + ROWS_PER_FILE as i64);
        let regions = StringArray::from_iter_values(
            (0..ROWS_PER_FILE).map(|_| REGIONS[rng.random_range(0..REGIONS.len())]),
        );
        let amounts = Float64Array::from_iter_values(
            (0..ROWS_PER_FILE).map(|_| (rng.random::<f64>() * 10_000.0).round() / 100.0),
        );
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(ids), Arc::new(regions), Arc::new(amounts)],
        )?;
        let file = std::fs::File::create(dir.join(format!("sales-{f:02}.parquet")))?;
        let mut writer = ArrowWriter::try_new(file, schema.clone(), None)?;
        writer.write(&batch)?;
        writer.close()?;
    }
    Ok(())
}
