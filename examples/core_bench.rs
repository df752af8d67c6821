//! Core benchmark: task throughput, concurrent-job throughput, time from cancel to free
//! slots, block fetch bandwidth, and cached-DataFrame actions on a local cluster next to
//! single-process DataFusion over the same in-memory data.
//!
//! `cargo run --release --example core_bench -- [--rows 10000000]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::prelude::SessionContext;
use ember::engine::rpc::{fetch_block_stream, ChannelPool, FetchStats};
use ember::engine::{BlockId, Partition};
use ember::prelude::*;
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Writes `files` Parquet files splitting `rows` rows of (id i64, v f64).
fn write_data(dir: &std::path::Path, rows: usize, files: usize) -> anyhow::Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
    ]));
    let per = rows / files;
    for f in 0..files {
        let file = std::fs::File::create(dir.join(format!("part-{f}.parquet")))?;
        let mut w = ArrowWriter::try_new(file, schema.clone(), None)?;
        let mut start = f * per;
        let end = start + per;
        while start < end {
            let n = (end - start).min(1 << 20);
            let ids = Int64Array::from_iter_values(start as i64..(start + n) as i64);
            let vs =
                Float64Array::from_iter_values((start..start + n).map(|i| (i % 1000) as f64 * 0.5));
            w.write(&RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(ids), Arc::new(vs)],
            )?)?;
            start += n;
        }
        w.close()?;
    }
    Ok(())
}

async fn time<F, Fut, T>(runs: usize, mut f: F) -> anyhow::Result<(Duration, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut out = f().await?; // warm-up
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        out = f().await?;
        times.push(t.elapsed());
    }
    Ok((median(times), out))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ember::run_executor_if_requested();
    ember::init_tracing("warn");
    let rows = arg("--rows", 10_000_000);
    let session = Session::local_cluster(2).await?;
    println!(
        "local_cluster(2), {} cores per executor",
        session.executors()[0].cores
    );

    // 1. Empty-task throughput.
    let tasks = arg("--tasks", 2000);
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let plan = Arc::new(EmptyExec::new(schema).with_partitions(tasks));
    let (t, _) = time(3, || {
        let plan = plan.clone();
        let s = session.clone();
        async move { Ok(s.collect_plan(plan).await?) }
    })
    .await?;
    println!(
        "empty tasks: {tasks} tasks in {:.3}s = {:.0} tasks/s (median of 3)",
        t.as_secs_f64(),
        tasks as f64 / t.as_secs_f64()
    );

    // 1b. Jobs of a small query, 8 at a time from separate tasks vs one after the other.
    let jobs = arg("--jobs", 64);
    let small_schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let small_batch = RecordBatch::try_new(
        small_schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(0..1_000))],
    )?;
    let small = MemTable::try_new(small_schema, vec![vec![small_batch]; 4])?;
    session.context().register_table("small", Arc::new(small))?;
    let small_query = "SELECT count(*), sum(v) FROM small WHERE v % 3 = 0";
    session.sql(small_query).await?.collect().await?;
    let started = Instant::now();
    for _ in 0..jobs {
        session.sql(small_query).await?.collect().await?;
    }
    let sequential = started.elapsed();
    let started = Instant::now();
    let streams: Vec<_> = (0..8)
        .map(|_| {
            let s = session.clone();
            tokio::spawn(async move {
                for _ in 0..jobs / 8 {
                    s.sql(small_query).await?.collect().await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for stream in streams {
        stream.await??;
    }
    let concurrent = started.elapsed();
    println!(
        "small jobs: {jobs} one after the other {:.1} jobs/s; 8 at a time {:.1} jobs/s (x{:.2})",
        jobs as f64 / sequential.as_secs_f64(),
        (jobs / 8 * 8) as f64 / concurrent.as_secs_f64(),
        sequential.as_secs_f64() / concurrent.as_secs_f64() * (jobs / 8 * 8) as f64 / jobs as f64
    );

    // 1c. From cancel to free slots: a job whose tasks wait 10 s (injected) on a second
    // cluster is cancelled while its tasks run; time until every executor runs nothing.
    {
        let slow = Session::builder()
            .executors(2)
            .inject_task_delay(0, Duration::from_secs(10))
            .inject_task_delay(1, Duration::from_secs(10))
            .local_cluster()
            .await?;
        slow.context()
            .register_table("small", session.context().table_provider("small").await?)?;
        let mut events = slow.driver().subscribe();
        let running = {
            let slow = slow.clone();
            tokio::spawn(async move { slow.sql(small_query).await?.collect().await })
        };
        loop {
            if let ember::driver::SchedulerEvent::TaskStarted { .. } = events.recv().await? {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let job = slow.running_jobs().await?[0];
        let started = Instant::now();
        slow.cancel_job(job).await?;
        let answered = started.elapsed();
        loop {
            let mut busy = 0;
            for e in slow.executors() {
                busy += slow.driver().executor_status(&e.id).await?.running_tasks;
            }
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let freed = started.elapsed();
        let _ = running.await?;
        println!(
            "cancel: answered in {:.1} ms, every slot free {:.1} ms after the cancel",
            answered.as_secs_f64() * 1e3,
            freed.as_secs_f64() * 1e3
        );
    }

    // 2. Block fetch over loopback gRPC vs an in-process copy of the same bytes.
    let dir = tempfile::tempdir()?;
    let fetch_rows = 6_250_000; // 2 x 8 bytes x 6.25M = 100 MB per block
    write_data(dir.path(), fetch_rows * 2, 2)?;
    let big = session.read_parquet(dir.path()).await?.cache().await?;
    big.count().await?;
    let dataset = big.cached_dataset().expect("cached");
    let block = BlockId::new(dataset, 0);
    let holder = session.driver().locations().get(block).expect("block held");
    let address = session
        .driver()
        .registry()
        .get(&holder)
        .expect("executor")
        .address;
    // The driver's channels carry the cluster's credentials.
    let pool: ChannelPool = session.driver().channels().clone();
    let (t_fetch, (partition, bytes)) = time(3, || {
        let pool = pool.clone();
        let address = address.clone();
        async move {
            let stats = Arc::new(FetchStats::default());
            let batches: Vec<_> =
                fetch_block_stream(&pool, &address, block, Arc::clone(&stats), None)
                    .await?
                    .try_collect()
                    .await?;
            let schema = batches[0].schema();
            let bytes = stats.bytes.load(std::sync::atomic::Ordering::Relaxed) as usize;
            Ok((Partition::new(schema, batches), bytes))
        }
    })
    .await?;
    let mem = partition.memory_size();
    let (t_copy, copied) = time(3, || {
        let p = partition.clone();
        async move {
            let mut total = 0usize;
            for b in p.batches() {
                for c in b.columns() {
                    for buf in c.to_data().buffers() {
                        let v: Vec<u8> = std::hint::black_box(buf.as_slice()).to_vec();
                        total += std::hint::black_box(v).len();
                    }
                }
            }
            Ok(total)
        }
    })
    .await?;
    println!(
        "block fetch: {:.1} MB block ({:.1} MB on the wire) in {:.3}s = {:.0} MB/s; in-process copy {:.0} MB/s (x{:.1})",
        mem as f64 / 1e6,
        bytes as f64 / 1e6,
        t_fetch.as_secs_f64(),
        mem as f64 / 1e6 / t_fetch.as_secs_f64(),
        copied as f64 / 1e6 / t_copy.as_secs_f64(),
        t_fetch.as_secs_f64() / t_copy.as_secs_f64()
    );
    drop(big.unpersist().await?);

    // 3. Actions over a cached DataFrame vs single-process DataFusion on the same data.
    let dir = tempfile::tempdir()?;
    write_data(dir.path(), rows, 4)?;
    let cached = session.read_parquet(dir.path()).await?.cache().await?;
    cached.count().await?;
    let (t_count, n) = time(5, || {
        let df = cached.clone();
        async move { Ok(df.count().await?) }
    })
    .await?;
    let sum_query = || {
        let df = cached.clone();
        async move {
            Ok(df
                .filter(col("v").gt(lit(250.0)))?
                .aggregate(vec![], vec![sum(col("v"))])?
                .collect()
                .await?)
        }
    };
    let (t_sum, _) = time(5, sum_query).await?;

    let ctx = SessionContext::new();
    let batches = ctx
        .read_parquet(dir.path().to_str().unwrap_or_default(), Default::default())
        .await?
        .collect()
        .await?;
    let schema = batches[0].schema();
    let half = batches.len() / 2;
    let table = MemTable::try_new(
        schema,
        vec![batches[..half].to_vec(), batches[half..].to_vec()],
    )?;
    ctx.register_table("t", Arc::new(table))?;
    let (t_df_count, _) = time(5, || {
        let ctx = ctx.clone();
        async move { Ok(ctx.sql("SELECT count(*) FROM t").await?.collect().await?) }
    })
    .await?;
    let (t_df_sum, _) = time(5, || {
        let ctx = ctx.clone();
        async move {
            Ok(ctx
                .sql("SELECT sum(v) FROM t WHERE v > 250")
                .await?
                .collect()
                .await?)
        }
    })
    .await?;
    println!("cached {n} rows:");
    println!(
        "  count():      ember {:.4}s  datafusion {:.4}s  ratio {:.2}",
        t_count.as_secs_f64(),
        t_df_count.as_secs_f64(),
        t_count.as_secs_f64() / t_df_count.as_secs_f64()
    );
    println!(
        "  filter+sum:   ember {:.4}s  datafusion {:.4}s  ratio {:.2}",
        t_sum.as_secs_f64(),
        t_df_sum.as_secs_f64(),
        t_sum.as_secs_f64() / t_df_sum.as_secs_f64()
    );
    Ok(())
}
