//! A real cluster end to end: queries in both modes against single-process DataFusion,
//! caching, eviction, unpersist, writing, and recovery from a killed executor process.

use crate::common;

use crate::common::{datafusion_answer, row_count, session, sorted_rows, write_orders, Mode};
use ember::prelude::*;

const QUERIES: &[&str] = &[
    "SELECT count(*) FROM orders",
    "SELECT id, amount FROM orders WHERE amount > 20 AND region = 'r3'",
    "SELECT region, sum(amount), count(*), min(id), max(id) FROM orders GROUP BY region",
    "SELECT id * 2 AS twice, upper(region) AS r FROM orders WHERE id % 1000 = 7",
    "SELECT * FROM orders ORDER BY amount DESC, id LIMIT 5",
    "SELECT avg(amount) FROM orders WHERE id BETWEEN 100 AND 5000",
    "SELECT 1 + 1 AS two",
];

async fn sql_matches_datafusion(mode: Mode, files: usize) {
    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), files, 3_000);
    let session = session(mode, 2).await;
    session
        .register_parquet("orders", dir.path())
        .await
        .expect("register");
    for q in QUERIES {
        let ours = session
            .sql(q)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let theirs = datafusion_answer(dir.path(), q).await;
        assert_eq!(
            sorted_rows(&ours),
            sorted_rows(&theirs),
            "{mode:?}, {files} files: {q}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_matches_datafusion_in_process() {
    sql_matches_datafusion(Mode::InProcess, 4).await;
    sql_matches_datafusion(Mode::InProcess, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_matches_datafusion_on_processes() {
    sql_matches_datafusion(Mode::Processes, 5).await;
}

async fn dataframe_api(mode: Mode) {
    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), 3, 1_000);
    let session = session(mode, 2).await;
    let df = session
        .read_parquet(dir.path())
        .await
        .expect("read")
        .filter(col("region").eq(lit("r1")))
        .expect("filter")
        .with_column("double", col("amount") * lit(2.0))
        .expect("with_column")
        .select(vec![col("id"), col("double")])
        .expect("select");
    // ids with id % 5 == 1 among 0..3000.
    assert_eq!(df.count().await.expect("count"), 600);
    let limited = df
        .clone()
        .limit(0, Some(7))
        .expect("limit")
        .collect()
        .await
        .expect("collect");
    assert_eq!(row_count(&limited), 7);
    let total = df
        .aggregate(vec![], vec![sum(col("double")).alias("s")])
        .expect("agg")
        .collect()
        .await
        .expect("run");
    let theirs = datafusion_answer(
        dir.path(),
        "SELECT sum(amount * 2) AS s FROM orders WHERE region = 'r1'",
    )
    .await;
    assert_eq!(sorted_rows(&total), sorted_rows(&theirs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataframe_api_in_process() {
    dataframe_api(Mode::InProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataframe_api_on_processes() {
    dataframe_api(Mode::Processes).await;
}

async fn cache_hit_reads_no_source(mode: Mode) {
    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), 4, 2_000);
    let session = session(mode, 2).await;
    let cached = session
        .read_parquet(dir.path())
        .await
        .expect("read")
        .filter(col("amount").gt(lit(10.0)))
        .expect("filter")
        .cache()
        .await
        .expect("cache");
    let first = cached.count().await.expect("count");
    let m1 = session.last_job_metrics().expect("metrics");
    assert!(
        m1.source_partitions_read > 0,
        "first action computes from files: {m1:?}"
    );
    let partitions = m1.source_partitions_read;

    let second = cached.count().await.expect("count again");
    let m2 = session.last_job_metrics().expect("metrics");
    assert_eq!(first, second);
    assert_eq!(
        m2.source_partitions_read, 0,
        "second action reads no source file: {m2:?}"
    );
    assert_eq!(m2.cached_blocks_used, partitions, "{m2:?}");
    assert_eq!(m2.partitions_recomputed, 0);

    // ids whose amount = (id % 100) / 4 > 10, i.e. id % 100 > 40: 59 of every 100.
    assert_eq!(first, 8_000 / 100 * 59);

    let dataset = cached.cached_dataset().expect("cached");
    let uncached = cached.unpersist().await.expect("unpersist");
    assert!(
        session
            .driver()
            .locations()
            .missing(dataset, partitions)
            .len()
            == partitions
    );
    assert_eq!(uncached.count().await.expect("count uncached"), first);
    let m3 = session.last_job_metrics().expect("metrics");
    assert!(
        m3.source_partitions_read > 0,
        "after unpersist the source is read again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hit_reads_no_source_in_process() {
    cache_hit_reads_no_source(Mode::InProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hit_reads_no_source_on_processes() {
    cache_hit_reads_no_source(Mode::Processes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_executor_process_loses_only_its_partitions() {
    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), 6, 2_000);
    // 2 executors x 3 cores: DataFusion plans 6 partitions, one per file.
    let session = common::start(Mode::Processes, common::builder(2).cores_per_executor(3)).await;
    let cached = session
        .read_parquet(dir.path())
        .await
        .expect("read")
        .cache()
        .await
        .expect("cache");
    let dataset = cached.cached_dataset().expect("cached");
    let expected = sorted_rows(
        &datafusion_answer(
            dir.path(),
            "SELECT region, sum(amount) FROM orders GROUP BY region",
        )
        .await,
    );
    let by_region = |df: DataFrame| async move {
        df.aggregate(vec![col("region")], vec![sum(col("amount"))])
            .expect("agg")
            .collect()
            .await
            .expect("run")
    };
    assert_eq!(sorted_rows(&by_region(cached.clone()).await), expected);
    let partitions = session
        .last_job_metrics()
        .expect("metrics")
        .source_partitions_read;
    assert_eq!(partitions, 6, "one partition per file");

    // Which blocks live on executor 0?
    let victim = session.executors()[0].id.clone();
    let on_victim = (0..partitions as u32)
        .filter(|p| {
            session
                .driver()
                .locations()
                .get(ember::engine::BlockId::new(dataset, *p))
                .as_ref()
                == Some(&victim)
        })
        .count();
    assert!(
        on_victim > 0 && on_victim < partitions,
        "blocks spread over both executors"
    );

    let pid = session.executor_pids()[0];
    assert_eq!(session.kill_executor(0).expect("kill"), victim.0);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process is gone"
    );

    assert_eq!(
        sorted_rows(&by_region(cached.clone()).await),
        expected,
        "same answer after the kill"
    );
    let m = session.last_job_metrics().expect("metrics");
    assert_eq!(
        m.partitions_recomputed, on_victim,
        "only the lost partitions are recomputed: {m:?}"
    );
    assert_eq!(m.source_partitions_read, on_victim, "{m:?}");
    assert_eq!(m.cached_blocks_used, partitions - on_victim, "{m:?}");
    assert_eq!(session.executors().len(), 1);

    // And the cache is whole again: the next action reads only cached blocks.
    assert_eq!(sorted_rows(&by_region(cached).await), expected);
    let m = session.last_job_metrics().expect("metrics");
    assert_eq!(
        (m.source_partitions_read, m.cached_blocks_used),
        (0, partitions)
    );
}

/// A cached DataFrame bigger than the executors' block stores is kept on their disks: it
/// is read back from the spill files, again after other cached data has come and been
/// evicted, and never recomputed; unpersisting it removes the files. Memory blocks that
/// newer ones evict are recomputed from lineage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_partitions_beyond_memory_live_on_disk_until_unpersisted() {
    let dir = tempfile::tempdir().expect("tmp");
    // 8 partitions (4 cores x 2 executors, one file each) of 20k rows, ~0.5 MB each in
    // memory; each executor's block store (half its 2.4 MB limit) may keep about 2 of its 4.
    write_orders(dir.path(), 8, 20_000);
    let (block_limit, _) = ember::executor::memory_split(2_400_000);
    assert_eq!(block_limit, 1_200_000);
    let session = common::start(
        Mode::Processes,
        common::builder(2)
            .cores_per_executor(4)
            .memory_per_executor(2_400_000),
    )
    .await;
    let big = session
        .read_parquet(dir.path())
        .await
        .expect("read")
        .cache()
        .await
        .expect("cache");
    let expected = 8 * 20_000;
    assert_eq!(big.count().await.expect("count"), expected);
    // Read back: from memory and from the spill files, nothing recomputed.
    assert_eq!(big.count().await.expect("count"), expected);
    let m = session.last_job_metrics().expect("metrics");
    assert_eq!(m.partitions_recomputed, 0, "{m:?}");
    assert_eq!(m.source_partitions_read, 0, "{m:?}");
    assert_eq!(m.cached_blocks_used, 8, "{m:?}");

    // Other cached data comes and pushes what is in memory out; the spilled blocks stay.
    let small_dir = tempfile::tempdir().expect("tmp");
    write_orders(small_dir.path(), 8, 10_000);
    let small = session
        .read_parquet(small_dir.path())
        .await
        .expect("read")
        .cache()
        .await
        .expect("cache");
    assert_eq!(small.count().await.expect("count"), 8 * 10_000);
    assert_eq!(big.count().await.expect("count"), expected);
    let m = session.last_job_metrics().expect("metrics");
    assert_eq!(m.cached_blocks_used + m.partitions_recomputed, 8, "{m:?}");
    assert!(
        m.partitions_recomputed > 0,
        "the newer cached data evicted some in memory: {m:?}"
    );
    assert!(
        m.partitions_recomputed < 8,
        "the spilled partitions were read, not recomputed: {m:?}"
    );
    for e in session.executors() {
        assert!(
            e.used_bytes <= block_limit as u64,
            "{} holds {} bytes",
            e.id,
            e.used_bytes
        );
    }

    // Unpersisting removes its spill files.
    let disk_before: u64 = common::executor_statuses(&session)
        .await
        .iter()
        .map(|s| s.disk_bytes)
        .sum();
    assert!(disk_before > 0, "nothing was spilled");
    let _uncached = big.unpersist().await.expect("unpersist");
    let _uncached = small.unpersist().await.expect("unpersist");
    common::assert_executors_hold_nothing(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_parquet_writes_one_file_per_partition() {
    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), 3, 1_000);
    let out = tempfile::tempdir().expect("tmp");
    let target = out.path().join("big");
    let session = session(Mode::Processes, 2).await;
    let df = session
        .read_parquet(dir.path())
        .await
        .expect("read")
        .filter(col("amount").gt(lit(20.0)))
        .expect("filter");
    let files = df.write_parquet(&target).await.expect("write");
    // One file per partition: 2 executors x 1 core plan 2 partitions.
    assert_eq!(files.len(), 2);
    for f in &files {
        assert!(f.is_file(), "{} written", f.display());
    }
    let leftovers: Vec<_> = std::fs::read_dir(&target)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with("part-"))
        .collect();
    assert!(leftovers.is_empty(), "no staging files left: {leftovers:?}");
    let back = session
        .read_parquet(&target)
        .await
        .expect("read back")
        .count()
        .await
        .expect("count");
    assert_eq!(back, df.count().await.expect("count"));

    // Writing into a non-empty directory is refused and leaves it intact.
    let err = df.write_parquet(&target).await.expect_err("not empty");
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(std::fs::read_dir(&target).expect("ls").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_session_stops_every_executor_process() {
    let session = session(Mode::Processes, 2).await;
    let pids = session.executor_pids();
    assert_eq!(pids.len(), 2);
    for pid in &pids {
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    drop(session);
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "executor {pid} left behind"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_json_and_arrow_sources_run_on_executors() {
    let dir = tempfile::tempdir().expect("tmp");
    let parquet_dir = dir.path().join("parquet");
    write_orders(&parquet_dir, 2, 700);
    // The same rows in every other format, written by single-process DataFusion.
    let ctx = datafusion::prelude::SessionContext::new();
    let rows = ctx
        .read_parquet(parquet_dir.to_str().expect("utf8"), Default::default())
        .await
        .expect("read")
        .collect()
        .await
        .expect("collect");
    let csv = dir.path().join("orders.csv");
    let mut w = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(std::fs::File::create(&csv).expect("csv"));
    let json = dir.path().join("orders.json");
    let mut j = arrow::json::LineDelimitedWriter::new(std::fs::File::create(&json).expect("json"));
    let ipc = dir.path().join("orders.arrow");
    let mut a = arrow::ipc::writer::FileWriter::try_new(
        std::fs::File::create(&ipc).expect("ipc"),
        &rows[0].schema(),
    )
    .expect("ipc writer");
    for b in &rows {
        w.write(b).expect("csv row");
        j.write(b).expect("json row");
        a.write(b).expect("ipc batch");
    }
    j.finish().expect("json end");
    a.finish().expect("ipc end");
    drop(w);

    let session = session(Mode::Processes, 2).await;
    session.register_csv("c", &csv).await.expect("csv");
    session.register_json("j", &json).await.expect("json");
    session.register_arrow("a", &ipc).await.expect("arrow");
    let expected = sorted_rows(
        &datafusion_answer(
            &parquet_dir,
            "SELECT region, count(*), sum(id) FROM orders GROUP BY region",
        )
        .await,
    );
    for table in ["c", "j", "a"] {
        let q = format!("SELECT region, count(*), sum(id) FROM {table} GROUP BY region");
        let ours = session
            .sql(&q)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        assert_eq!(sorted_rows(&ours), expected, "{table}");
        assert!(
            session
                .last_job_metrics()
                .expect("metrics")
                .source_partitions_read
                > 0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_lands_in_exactly_one_partition() {
    // Partition counts from 1 to 8 against file counts from 1 to 7: each id is counted once.
    for (files, cores) in [(1, 1), (2, 1), (3, 2), (7, 1), (7, 4), (5, 3)] {
        let dir = tempfile::tempdir().expect("tmp");
        let rows = 997;
        write_orders(dir.path(), files, rows);
        let session = common::start(
            Mode::InProcess,
            common::builder(2).cores_per_executor(cores),
        )
        .await;
        session
            .register_parquet("orders", dir.path())
            .await
            .expect("register");
        let batches = session
            .sql("SELECT count(*) AS n, sum(id) AS s, count(DISTINCT id) AS d FROM orders")
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let n = (files * rows) as i64;
        let expected = format!("{n}|{}|{n}", n * (n - 1) / 2);
        assert_eq!(
            sorted_rows(&batches),
            vec![expected],
            "{files} files, {cores} cores"
        );
    }
}

async fn recomputed_partitions_equal_the_originals(mode: Mode) {
    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), 4, 1_500);
    let session = common::start(mode, common::builder(2).cores_per_executor(2)).await;
    let cached = session
        .read_parquet(dir.path())
        .await
        .expect("read")
        .filter(col("amount").lt(lit(15.0)))
        .expect("filter")
        .cache()
        .await
        .expect("cache");
    let before = sorted_rows(&cached.collect().await.expect("collect"));
    session.kill_executor(1).expect("kill");
    let after = sorted_rows(&cached.collect().await.expect("collect after kill"));
    let m = session.last_job_metrics().expect("metrics");
    assert!(m.partitions_recomputed > 0, "{mode:?}: {m:?}");
    assert_eq!(before.len(), after.len());
    assert_eq!(before, after, "{mode:?}: recomputed rows differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recomputed_partitions_equal_the_originals_in_process() {
    recomputed_partitions_equal_the_originals(Mode::InProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recomputed_partitions_equal_the_originals_on_processes() {
    recomputed_partitions_equal_the_originals(Mode::Processes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_exits_when_its_parent_goes_away() {
    // A local-cluster executor watches its stdin; the pipe closes when the parent dies,
    // even by SIGKILL. Closing it here stands in for that death.
    let driver = ember::driver::DriverHandle::start(
        "127.0.0.1:0".parse().expect("addr"),
        common::fast_driver(),
    )
    .await
    .expect("driver");
    let mut child = common::executor_process(&driver, &["--exit-on-stdin-close"]).await;
    drop(child.stdin.take());
    let status = common::exit_within(&mut child, std::time::Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "executor kept running: {status:?}"
    );
}

/// A local-cluster executor process that dies is replaced by a new one in its slot, the
/// replacement is counted and logged, and the next job runs tasks on it; once the limit
/// of replacements is reached, a dead executor stays dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_local_cluster_executor_is_replaced_and_used() {
    let builder = common::builder(2).max_executor_restarts(1);
    let (dir, session) = common::orders_session(Mode::Processes, builder, 4, 5_000).await;
    let sql = "SELECT region, count(*) AS n FROM orders GROUP BY region";
    let expected = sorted_rows(&datafusion_answer(dir.path(), sql).await);
    let victim = session.kill_executor(0).expect("kill");
    let replacement = "exec-0-r1";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !session
        .executors()
        .iter()
        .any(|e| e.id.0 == replacement && e.id.0 != victim)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no replacement registered: {:?}",
            session.executors()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(session.executors_replaced(), 1);
    assert_eq!(session.executor_pids().len(), 2);

    assert_eq!(sorted_rows(&common::run_sql(&session, sql).await), expected);
    let snapshot = session.snapshot().await.expect("snapshot");
    let ran_on_replacement = snapshot
        .executors
        .iter()
        .find(|e| e.executor.0 == replacement)
        .map_or(0, |e| e.succeeded_tasks);
    assert!(
        ran_on_replacement > 0,
        "the replacement ran no task: {:?}",
        snapshot.executors
    );

    // The one replacement allowed is used up: the next death is final.
    session.kill_executor(0).expect("kill");
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(session.executors_replaced(), 1);
    // It runs on the executor left.
    assert_eq!(sorted_rows(&common::run_sql(&session, sql).await), expected);
}

/// A query that reads no data (`SELECT 1`) is answered by the driver without a stage on
/// the executors; one that reads a file still runs its stage there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constant_query_runs_on_the_driver() {
    let session = session(Mode::InProcess, 2).await;
    let rows = session
        .sql("SELECT 1 AS one, 'a' || 'b' AS ab")
        .await
        .expect("plans")
        .collect()
        .await
        .expect("runs");
    assert_eq!(row_count(&rows), 1);
    let metrics = session.last_job_metrics().expect("metrics");
    assert_eq!(metrics.stages_run, 0, "{metrics:?}");
    assert_eq!(metrics.tasks_run, 0, "{metrics:?}");

    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), 2, 10);
    session
        .register_parquet("orders", dir.path())
        .await
        .expect("register");
    let rows = session
        .sql("SELECT * FROM orders WHERE amount >= 0")
        .await
        .expect("plans")
        .collect()
        .await
        .expect("runs");
    assert!(row_count(&rows) > 0);
    let metrics = session.last_job_metrics().expect("metrics");
    assert!(metrics.stages_run >= 1, "{metrics:?}");
}
