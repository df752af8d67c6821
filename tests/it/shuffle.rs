//! Shuffle between executors: hash-partitioned aggregates, joins and windows agree with
//! single-process DataFusion, EXPLAIN shows the stages, and a killed executor's map outputs
//! are recomputed mid-query.

use crate::common;

use crate::common::{datafusion_answer, sorted_rows, write_orders, Mode};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{ExprFunctionExt, JoinType};
use ember::driver::SchedulerEvent;
use ember::prelude::*;

/// A session of 2 single-core executors that shuffles every join (no broadcast).
async fn shuffling_session(mode: Mode) -> Session {
    common::start(mode, common::builder(2).broadcast_join_threshold(0)).await
}

/// Runs `sql` on Ember and asserts single-process DataFusion over `dir` gives the same
/// non-empty set of rows.
async fn assert_same_as_datafusion(session: &Session, dir: &std::path::Path, sql: &str) {
    let ours = session
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let expected = datafusion_answer(dir, sql).await;
    assert!(!expected.is_empty(), "{sql}");
    assert_eq!(sorted_rows(&ours), sorted_rows(&expected), "{sql}");
}

const QUERIES: [&str; 5] = [
    "SELECT region, count(*) AS n, sum(amount) AS total FROM orders GROUP BY region",
    "SELECT a.region, count(*) AS n, sum(b.amount) AS total \
     FROM orders a JOIN orders b ON a.id = b.id + 1 GROUP BY a.region",
    "SELECT id % 97 AS k, count(DISTINCT region) AS regions FROM orders GROUP BY id % 97",
    "SELECT id, region, row_number() OVER (PARTITION BY region ORDER BY id) AS rn \
     FROM orders WHERE id % 7 = 0",
    "SELECT region FROM orders WHERE id < 10 UNION SELECT region FROM orders WHERE id > 20 \
     EXCEPT SELECT 'r3'",
];

async fn queries_through_a_shuffle_match_datafusion(mode: Mode) {
    let builder = common::builder(2).broadcast_join_threshold(0);
    let (dir, session) = common::orders_session(mode, builder, 3, 2_000).await;
    let mut mapped = 0;
    for sql in QUERIES {
        assert_same_as_datafusion(&session, dir.path(), sql).await;
        let metrics = session.last_job_metrics().expect("metrics");
        assert!(
            metrics.stages.iter().any(|s| s.shuffle),
            "{sql} ran without a shuffle: {metrics:?}"
        );
        assert!(metrics.shuffle_bytes_written > 0, "{sql}");
        assert!(metrics.bytes_mapped <= metrics.bytes_fetched, "{metrics:?}");
        mapped += metrics.bytes_mapped;
    }
    // Executor processes on one host hand each other shuffle blocks through files they
    // map (where the host has a memory file system); executors inside one process fetch
    // over loopback.
    match mode {
        Mode::Processes if std::path::Path::new("/dev/shm").is_dir() => {
            assert!(mapped > 0, "no block was read through a shared file")
        }
        _ => assert_eq!(mapped, 0),
    }
    // The shared files went with their blocks at each job's end.
    common::assert_executors_hold_nothing(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_through_a_shuffle_match_datafusion_in_process() {
    queries_through_a_shuffle_match_datafusion(Mode::InProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_through_a_shuffle_match_datafusion_on_processes() {
    queries_through_a_shuffle_match_datafusion(Mode::Processes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataframe_join_distinct_union_and_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_orders(dir.path(), 2, 500);
    let session = shuffling_session(Mode::InProcess).await;
    let orders = session.read_parquet(dir.path()).await.expect("read");
    let small = orders
        .clone()
        .filter(col("id").lt(lit(100)))
        .expect("filter")
        .select(vec![col("id").alias("sid"), col("amount").alias("samount")])
        .expect("select");
    let joined = orders
        .clone()
        .join(small, JoinType::Inner, &["id"], &["sid"])
        .expect("join");
    assert_eq!(joined.count().await.expect("count"), 100);

    let regions = orders
        .clone()
        .select_columns(&["region"])
        .expect("select")
        .distinct()
        .expect("distinct");
    assert_eq!(regions.count().await.expect("count"), 5);

    let doubled = orders.clone().union(orders.clone()).expect("union");
    assert_eq!(doubled.count().await.expect("count"), 2_000);
    let once = orders
        .clone()
        .union_distinct(orders.clone())
        .expect("union distinct");
    assert_eq!(once.count().await.expect("count"), 1_000);

    let ranked = orders
        .clone()
        .window(vec![row_number()
            .partition_by(vec![col("region")])
            .order_by(vec![col("id").sort(true, false)])
            .build()
            .expect("window expr")
            .alias("rn")])
        .expect("window")
        .filter(col("rn").eq(lit(1u64)))
        .expect("filter");
    let firsts = ranked.collect().await.expect("collect");
    let expected = datafusion_answer(
        dir.path(),
        "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY region ORDER BY id) AS rn \
         FROM orders) WHERE rn = 1",
    )
    .await;
    assert_eq!(sorted_rows(&firsts), sorted_rows(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_shuffle_stages() {
    let builder = common::builder(2).broadcast_join_threshold(0);
    let (_data, session) = common::orders_session(Mode::InProcess, builder, 2, 100).await;
    let sql = "SELECT region, sum(amount) FROM orders GROUP BY region";
    let text = session
        .sql(sql)
        .await
        .expect("plan")
        .explain()
        .await
        .expect("explain");
    assert!(text.contains("Ember stages"), "{text}");
    assert!(text.contains("shuffle write into 2 partitions"), "{text}");
    assert!(text.contains("ShuffleReadExec"), "{text}");
    // SQL EXPLAIN gives the same description as a one-row result.
    let rows = session
        .sql(&format!("EXPLAIN {sql}"))
        .await
        .expect("explain statement")
        .collect()
        .await
        .expect("collect");
    let shown = arrow::util::pretty::pretty_format_batches(&rows)
        .expect("format")
        .to_string();
    assert!(shown.contains("shuffle write into 2 partitions"), "{shown}");
    let analyze = session.sql(&format!("EXPLAIN ANALYZE {sql}")).await;
    assert!(analyze.is_err());
}

/// Kills an executor process right after the first shuffle map stage of a multi-stage
/// query: the reduce side's fetches fail, the failure travels typed to the scheduler, and
/// only the lost map outputs (plus tasks that were in flight) are computed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_executor_mid_query_reruns_only_its_map_outputs() {
    let builder = common::builder(2).broadcast_join_threshold(0);
    let (dir, session) = common::orders_session(Mode::Processes, builder, 4, 5_000).await;
    let sql = "SELECT a.region, count(*) AS n, sum(b.amount) AS total \
               FROM orders a JOIN orders b ON a.id = b.id GROUP BY a.region";
    let expected = datafusion_answer(dir.path(), sql).await;

    let mut events = session.driver().subscribe();
    let victim = ember::engine::ExecutorId("exec-0".into());
    let watcher = {
        let session = session.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(SchedulerEvent::StageCompleted { shuffle: true, .. }) => {
                        let held = session.driver().locations().held_by(&victim).len();
                        session.kill_executor(0).expect("kill");
                        return held;
                    }
                    Ok(_) => {}
                    Err(e) => panic!("events: {e}"),
                }
            }
        })
    };
    let ours = session
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("the query survives the loss of an executor");
    let lost = watcher.await.expect("watcher");
    assert_eq!(sorted_rows(&ours), sorted_rows(&expected));
    let metrics = session.last_job_metrics().expect("metrics");
    assert!(lost > 0, "the killed executor held no map output");
    assert_eq!(metrics.executors_lost, 1, "{metrics:?}");
    assert!(
        metrics.partitions_recomputed >= 1,
        "lost map outputs must be recomputed: {metrics:?}"
    );
    // In flight at the kill: at most one task per slot of the two executors.
    let in_flight = 2;
    assert!(
        metrics.partitions_recomputed <= lost + in_flight,
        "recomputed {} partitions, but only {lost} were lost: {metrics:?}",
        metrics.partitions_recomputed
    );
    assert_eq!(session.executors().len(), 1);
}

/// With a block store far smaller than the shuffle, map outputs spill to disk: the answer
/// is still right, the spill is reported, and the spill files are gone after the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffle_outputs_beyond_the_memory_limit_spill_to_disk() {
    let builder = common::builder(2)
        .broadcast_join_threshold(0)
        .memory_per_executor(1_000_000);
    let (dir, session) = common::orders_session(Mode::InProcess, builder, 4, 20_000).await;
    let sql = "SELECT a.region, count(*) AS n, sum(b.amount) AS total \
               FROM orders a JOIN orders b ON a.id = b.id GROUP BY a.region";
    assert_same_as_datafusion(&session, dir.path(), sql).await;
    let metrics = session.last_job_metrics().expect("metrics");
    assert!(metrics.spilled_bytes > 0, "{metrics:?}");
    // Four stages: both join sides' shuffles go once the join stage has read them, the
    // aggregate's shuffle once the final aggregate stage has; only that stage's output
    // waits for the job's end.
    assert_eq!(metrics.stages_run, 4, "{metrics:?}");
    assert_eq!(metrics.datasets_released_early, 3, "{metrics:?}");
    // The job's blocks, spilled ones included, are removed when it ends.
    common::assert_executors_hold_nothing(&session).await;
}

/// Joins that collect a small build side and emit build rows at the end (left, semi, anti,
/// `NOT IN`) and scalar subqueries stay right when each probe partition is its own task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_side_emitting_joins_and_scalar_subqueries_match_datafusion() {
    // The default broadcast threshold: the small sides below are collected.
    let (dir, session) =
        common::orders_session(Mode::Processes, common::builder(2), 4, 1_000).await;
    let queries = [
        "SELECT s.id, o.amount FROM (SELECT id FROM orders WHERE id % 500 = 0 \
         UNION ALL SELECT 100000) s LEFT JOIN orders o ON s.id = o.id",
        "SELECT s.id FROM (SELECT id FROM orders WHERE id % 300 = 0) s \
         WHERE EXISTS (SELECT 1 FROM orders o WHERE o.id = s.id + 1)",
        "SELECT s.id FROM (SELECT id FROM orders WHERE id % 300 = 0 UNION ALL SELECT -5) s \
         WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = s.id)",
        "SELECT s.id FROM (SELECT id FROM orders WHERE id % 300 = 0 UNION ALL SELECT -5) s \
         WHERE s.id NOT IN (SELECT id FROM orders WHERE region = 'r1')",
        "SELECT region, count(*) FROM orders \
         WHERE amount > (SELECT avg(amount) FROM orders) GROUP BY region",
    ];
    for sql in queries {
        assert_same_as_datafusion(&session, dir.path(), sql).await;
    }
}

/// `CREATE EXTERNAL TABLE` registers files for SQL; `COPY (query) TO 'dir'` is written by
/// the executors, one Parquet file per partition, and reads back to the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_external_table_and_copy_to_parquet() {
    let (dir, session) =
        common::orders_session(Mode::Processes, common::builder(2), 3, 1_000).await;
    let _ddl = session
        .sql(&format!(
            "CREATE EXTERNAL TABLE ext STORED AS PARQUET LOCATION '{}/'",
            dir.path().display()
        ))
        .await
        .expect("create external table");
    let out = tempfile::tempdir().expect("tempdir");
    let target = out.path().join("by_region");
    let sql = "SELECT region, count(*) AS n FROM ext GROUP BY region";
    let copied = session
        .sql(&format!(
            "COPY ({sql}) TO '{}' STORED AS PARQUET",
            target.display()
        ))
        .await
        .expect("copy")
        .collect()
        .await
        .expect("count");
    let count = copied[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::UInt64Array>()
        .expect("count column")
        .value(0);
    assert_eq!(count, 5);
    let files = std::fs::read_dir(&target).expect("output dir").count();
    assert_eq!(files, 2, "one file per partition");
    let back = session
        .read_parquet(&target)
        .await
        .expect("read back")
        .collect()
        .await
        .expect("collect");
    let expected = datafusion_answer(
        dir.path(),
        "SELECT region, count(*) AS n FROM orders GROUP BY region",
    )
    .await;
    assert_eq!(sorted_rows(&back), sorted_rows(&expected));
}
