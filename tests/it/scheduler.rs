//! The driver as a shared service on real executors: concurrent jobs, FAIR scheduling,
//! cancellation (by id and by dropping the future), a hung (SIGSTOP) executor, a straggler
//! beaten by its speculative copy, the event log, unpersist with live clones, and a
//! standalone executor that stops when its driver goes away.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{datafusion_answer, sorted_rows, write_orders, Mode};
use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use ember::driver::{JobStatus, SchedulerEvent, SchedulingMode, TaskEndStatus};
use ember::prelude::*;

/// Registers `name`: `partitions` in-memory partitions of `rows` rows (`v` = 0..rows).
fn register_numbers(session: &Session, name: &str, partitions: usize, rows: i64) {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Int64Array::from((0..rows).collect::<Vec<_>>()))],
    )
    .expect("batch");
    let table = MemTable::try_new(schema, vec![vec![batch]; partitions]).expect("table");
    session
        .context()
        .register_table(name, Arc::new(table))
        .expect("register");
}

/// Two executors with one slot each, every task of which waits `delay` (injected).
fn slow_executors(delay: Duration) -> SessionBuilder {
    common::builder(2)
        .inject_task_delay(0, delay)
        .inject_task_delay(1, delay)
}

/// `sql` as a cached DataFrame.
async fn cached(session: &Session, sql: &str) -> DataFrame {
    session
        .sql(sql)
        .await
        .expect("plan")
        .cache()
        .await
        .expect("cache")
}

fn count_of(batches: &[RecordBatch]) -> i64 {
    batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64")
                .value(0)
        })
        .sum()
}

/// Plans and runs `sql`, failing the test with `what` if it does not succeed.
async fn run(session: &Session, sql: &str, what: &str) -> Vec<RecordBatch> {
    run_result(session, sql)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Plans `sql` (which must plan) and runs it.
async fn run_result(session: &Session, sql: &str) -> ember::Result<Vec<RecordBatch>> {
    session.sql(sql).await.expect("plan").collect().await
}

/// Polls every executor until none runs a task and none holds a block, or `within` passes.
async fn wait_until_idle(session: &Session, within: Duration) -> std::result::Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let busy: Vec<String> = common::executor_statuses(session)
            .await
            .iter()
            .filter(|s| s.running_tasks > 0 || s.blocks > 0 || s.disk_bytes > 0)
            .map(|s| {
                format!(
                    "{}: {} running, {} blocks, {} spilled bytes",
                    s.executor_id, s.running_tasks, s.blocks, s.disk_bytes
                )
            })
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(busy.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_sql_jobs_share_the_cluster_and_answer_right() {
    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), 4, 2_000);
    let session = common::session(Mode::Processes, 2).await;
    session
        .register_parquet("orders", dir.path())
        .await
        .expect("register");
    let queries: Vec<String> = (0..8)
        .map(|i| match i % 4 {
            0 => format!("SELECT region, count(*), sum(amount) FROM orders WHERE id % 8 = {i} GROUP BY region"),
            1 => format!("SELECT count(*) FROM orders WHERE amount > {i}"),
            2 => format!("SELECT id FROM orders WHERE id % 997 = {i} ORDER BY id"),
            _ => format!("SELECT a.region, count(*) FROM orders a JOIN orders b ON a.id = b.id + {i} GROUP BY a.region"),
        })
        .collect();
    let runs: Vec<_> = queries
        .iter()
        .map(|q| {
            let session = session.clone();
            let q = q.clone();
            tokio::spawn(async move { run(&session, &q, "concurrent job").await })
        })
        .collect();
    for (q, job) in queries.iter().zip(runs) {
        let ours = job.await.expect("join");
        let theirs = datafusion_answer(dir.path(), q).await;
        assert_eq!(sorted_rows(&ours), sorted_rows(&theirs), "{q}");
    }
    let snapshot = session.snapshot().await.expect("snapshot");
    let succeeded = snapshot
        .jobs
        .iter()
        .filter(|j| j.status == JobStatus::Succeeded)
        .count();
    assert!(succeeded >= 8, "{succeeded} jobs succeeded");
    assert!(snapshot
        .jobs
        .iter()
        .any(|j| j.description.contains("WHERE amount > 1")));
    // Nothing of those jobs is left behind.
    wait_until_idle(&session, Duration::from_secs(2))
        .await
        .expect("idle after the jobs");
}

/// Every task waits 400 ms (injected); the long job has 8 tasks for 2 slots, the short one
/// a single task and is submitted just after. Under FAIR it gets the first slot that frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_scheduling_finishes_a_short_job_behind_a_long_one_first() {
    let builder = slow_executors(Duration::from_millis(400)).scheduling_mode(SchedulingMode::Fair);
    let session = common::start(Mode::InProcess, builder).await;
    register_numbers(&session, "long_t", 8, 1_000);
    register_numbers(&session, "short_t", 1, 10);
    let long = {
        let session = session.with_pool("etl");
        tokio::spawn(async move {
            let batches = run(
                &session,
                "SELECT count(*) FROM long_t WHERE v % 2 = 0",
                "long job",
            )
            .await;
            (count_of(&batches), Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let short = run(
        &session.with_pool("adhoc"),
        "SELECT count(*) FROM short_t WHERE v % 2 = 0",
        "short job",
    )
    .await;
    let short_done = Instant::now();
    let (long_count, long_done) = long.await.expect("join");
    assert_eq!(count_of(&short), 5);
    assert_eq!(long_count, 4_000);
    assert!(
        short_done < long_done,
        "the short job finished {:?} after the long one",
        short_done - long_done
    );
}

/// A query whose tasks take a second each (injected) is cancelled once its first shuffle
/// map stage is done: its caller gets a cancellation error, and within 2 s no executor
/// runs a task of it or holds a block of it. Dropping a job's future does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_query_frees_slots_and_removes_its_blocks() {
    let delay = Duration::from_millis(1_000);
    let builder = slow_executors(delay).broadcast_join_threshold(0);
    let (_dir, session) = common::orders_session(Mode::Processes, builder, 2, 2_000).await;
    let sql =
        "SELECT a.region, count(*) FROM orders a JOIN orders b ON a.id = b.id GROUP BY a.region";

    let mut events = session.driver().subscribe();
    let query = {
        let session = session.clone();
        tokio::spawn(async move { run_result(&session, sql).await })
    };
    let job = loop {
        match events.recv().await.expect("events") {
            SchedulerEvent::StageCompleted {
                job, shuffle: true, ..
            } => break job,
            _ => continue,
        }
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let holding: u32 = common::executor_statuses(&session)
        .await
        .iter()
        .map(|s| s.blocks)
        .sum();
    assert!(holding > 0, "the map stage left shuffle blocks");
    let cancelled_at = Instant::now();
    assert!(session.cancel_job(job).await.expect("cancel"));
    let outcome = query.await.expect("join");
    let err = outcome.expect_err("a cancelled job fails").to_string();
    assert!(err.contains("cancelled"), "{err}");
    wait_until_idle(&session, Duration::from_secs(2))
        .await
        .expect("slots and blocks freed within 2 s of the cancel");
    let freed = cancelled_at.elapsed();
    assert!(freed < Duration::from_secs(2), "{freed:?}");
    let snapshot = session.snapshot().await.expect("snapshot");
    let j = snapshot.jobs.iter().find(|j| j.job == job).expect("job");
    assert_eq!(j.status, JobStatus::Cancelled);

    // Dropping the future of a running job cancels it too.
    let df = session.sql(sql).await.expect("plan");
    let gave_up = tokio::time::timeout(Duration::from_millis(1_500), df.collect()).await;
    assert!(gave_up.is_err(), "the job should still be running");
    wait_until_idle(&session, Duration::from_secs(3))
        .await
        .expect("a dropped job's tasks and blocks go away");
    // The clean-up ends the job once its blocks are gone.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let snapshot = session.snapshot().await.expect("snapshot");
        let last = snapshot.jobs.last().expect("job").clone();
        if last.status != JobStatus::Running {
            assert_eq!(last.status, JobStatus::Cancelled, "{last:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped job never ended: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The cluster still runs jobs.
    let batches = run(
        &session,
        "SELECT count(*) FROM orders",
        "after cancellations",
    )
    .await;
    assert_eq!(count_of(&batches), 4_000);
}

/// An executor process frozen with SIGSTOP mid-stage stops heartbeating: it is declared
/// lost after the heartbeat timeout and its tasks run on the other executor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_executor_is_declared_lost_and_its_work_rerun() {
    let builder = slow_executors(Duration::from_millis(300));
    let (dir, session) = common::orders_session(Mode::Processes, builder, 4, 2_000).await;
    let sql = "SELECT region, count(*), sum(amount) FROM orders GROUP BY region";
    let expected = datafusion_answer(dir.path(), sql).await;
    let pid = session.executor_pids()[1];
    let mut events = session.driver().subscribe();
    let stopper = tokio::spawn(async move {
        loop {
            if let Ok(SchedulerEvent::TaskStarted { executor, .. }) = events.recv().await {
                if executor.0 == "exec-1" {
                    signal(pid, "-STOP");
                    return;
                }
            }
        }
    });
    let started = Instant::now();
    let ours = run(&session, sql, "the job survives a hung executor").await;
    let took = started.elapsed();
    tokio::time::timeout(Duration::from_secs(10), stopper)
        .await
        .expect("exec-1 was given a task")
        .expect("stopper");
    // Read before the frozen executor thaws and registers again.
    let snapshot = session.snapshot().await;
    signal(pid, "-CONT");
    let snapshot = snapshot.expect("snapshot");
    assert_eq!(sorted_rows(&ours), sorted_rows(&expected));
    let metrics = session.last_job_metrics().expect("metrics");
    assert!(metrics.executors_lost >= 1, "{metrics:?}");
    let hung = snapshot
        .executors
        .iter()
        .find(|e| e.executor.0 == "exec-1")
        .expect("exec-1");
    let reason = hung.removed_reason.clone().unwrap_or_default();
    assert!(reason.contains("no heartbeat"), "{hung:?} after {took:?}");

    // Thawed, it registers again with nothing left of its earlier life, and takes work.
    let deadline = Instant::now() + Duration::from_secs(5);
    while session.executors().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the thawed executor never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until_idle(&session, Duration::from_secs(3))
        .await
        .expect("the thawed executor dropped its stale blocks and tasks");
    let again = run(&session, sql, "runs on both executors again").await;
    assert_eq!(sorted_rows(&again), sorted_rows(&expected));
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

/// Executor 1 takes 5 s per task (injected); executor 0 is fast. Once most tasks are done
/// the straggler gets a copy on executor 0, which wins; the original is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_straggler_is_beaten_by_its_speculative_copy() {
    let mut driver = common::fast_driver();
    driver.speculation.min_runtime = Duration::from_millis(300);
    let builder = common::builder(2)
        .driver_config(driver)
        .inject_task_delay(1, Duration::from_secs(5));
    let session = common::start(Mode::Processes, builder).await;
    register_numbers(&session, "numbers", 8, 5_000);
    let started = Instant::now();
    let batches = run(
        &session,
        "SELECT count(*) FROM numbers WHERE v % 2 = 0",
        "job",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(count_of(&batches), 20_000);
    let snapshot = session.snapshot().await.expect("snapshot");
    let stage = &snapshot.jobs.last().expect("job").stages[0];
    let won = stage
        .tasks
        .iter()
        .filter(|t| t.speculative && t.status == Some(TaskEndStatus::Success))
        .count();
    assert!(
        won >= 1,
        "a speculative copy won after {took:?}: {stage:#?}"
    );
    assert!(
        stage
            .tasks
            .iter()
            .any(|t| t.executor.0 == "exec-1" && t.status == Some(TaskEndStatus::Killed)),
        "the straggler was stopped: {stage:#?}"
    );
}

/// A task error (a cast that fails on the executors) fails the job with the cause and
/// leaves every executor alive and taking work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_error_fails_the_job_and_keeps_every_executor() {
    let session = common::session(Mode::Processes, 2).await;
    register_numbers(&session, "numbers", 4, 100);
    let err = run_result(
        &session,
        "SELECT CAST(CASE WHEN v > 50 THEN 'x' ELSE '1' END AS INT) FROM numbers",
    )
    .await
    .expect_err("the cast fails on the executors")
    .to_string();
    assert!(err.contains("'x'") || err.contains("Cast"), "{err}");
    let snapshot = session.snapshot().await.expect("snapshot");
    assert_eq!(snapshot.jobs.last().expect("job").status, JobStatus::Failed);
    assert!(
        snapshot
            .executors
            .iter()
            .all(|e| e.active && e.removed_reason.is_none()),
        "{:?}",
        snapshot.executors
    );
    assert_eq!(session.executors().len(), 2);
    let batches = run(
        &session,
        "SELECT count(*) FROM numbers WHERE v > 50",
        "the cluster still runs jobs",
    )
    .await;
    assert_eq!(count_of(&batches), 4 * 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_replays_to_the_live_snapshot() {
    let logs = tempfile::tempdir().expect("tmp");
    let builder = common::builder(2).event_log(logs.path());
    let session = common::start(Mode::InProcess, builder).await;
    register_numbers(&session, "numbers", 4, 100);
    let cached = cached(&session, "SELECT v, v * 2 AS w FROM numbers").await;
    assert_eq!(cached.count().await.expect("count"), 400);
    assert!(session.sql("SELECT nope FROM numbers").await.is_err());
    let live = session.snapshot().await.expect("snapshot");
    assert_eq!(live.cached.len(), 1);
    assert_eq!(live.cached[0].partitions_cached, live.cached[0].partitions);
    let log = logs
        .path()
        .join(format!("{}.jsonl", session.driver().app_id()));
    let replayed = ember::driver::SnapshotBuilder::replay(&log).expect("replay");
    assert_eq!(replayed, live.without_heartbeat_figures());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpersisting_keeps_clones_and_views_working() {
    let session = common::session(Mode::InProcess, 2).await;
    register_numbers(&session, "numbers", 4, 100);
    let cached = cached(&session, "SELECT v FROM numbers WHERE v % 2 = 0").await;
    assert_eq!(cached.count().await.expect("count"), 200);
    let clone = cached.clone();
    session.register_dataframe("evens", &cached).expect("view");
    let uncached = cached.unpersist().await.expect("unpersist");
    assert_eq!(uncached.count().await.expect("uncached"), 200);
    assert_eq!(clone.count().await.expect("clone of the cached frame"), 200);
    let view = run(
        &session,
        "SELECT count(*) FROM evens",
        "view over the unpersisted frame",
    )
    .await;
    assert_eq!(count_of(&view), 200);
    // Nothing is cached again behind the user's back.
    wait_until_idle(&session, Duration::from_secs(2))
        .await
        .expect("no block left");
}

/// An executor started by hand stops by itself when its driver goes away, after the
/// timeout it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_executor_stops_after_losing_its_driver() {
    let driver = ember::driver::DriverHandle::start(
        "127.0.0.1:0".parse().expect("addr"),
        common::fast_driver(),
    )
    .await
    .expect("driver");
    let mut child = common::executor_process(&driver, &["--driver-timeout", "1"]).await;
    drop(driver);
    let gone = Instant::now();
    let status = common::exit_within(&mut child, Duration::from_secs(10))
        .await
        .expect("the executor outlived its driver");
    assert!(status.success(), "{status}");
    // It waited about its 1 s timeout, not the default 30 s.
    assert!(
        gone.elapsed() < Duration::from_secs(5),
        "{:?}",
        gone.elapsed()
    );
}

/// `execute_stream` hands rows on as the driver produces them and records the job's
/// metrics when it ends; dropping the stream part way cancels the job, whose blocks go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_result_arrives_in_batches_and_dropping_it_cancels_the_job() {
    use futures::StreamExt;
    let (_dir, session) =
        common::orders_session(Mode::Processes, common::builder(2), 4, 20_000).await;
    // Sorted on the executors, merged on the driver: the job has blocks to release.
    let df = session
        .sql("SELECT region, id FROM orders ORDER BY region, id")
        .await
        .expect("plans");
    let mut stream = df.execute_stream().await.expect("starts");
    assert_eq!(stream.schema().fields().len(), 2);
    let (mut rows, mut batches) = (0, 0);
    while let Some(batch) = stream.next().await {
        rows += batch.expect("batch").num_rows();
        batches += 1;
    }
    assert_eq!(rows, 80_000);
    assert!(batches > 1, "the result came in one piece");
    let deadline = Instant::now() + Duration::from_secs(5);
    while session.last_job_metrics().is_none() {
        assert!(Instant::now() < deadline, "no metrics recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut stream = df.execute_stream().await.expect("starts");
    let first = stream.next().await.expect("a batch").expect("rows");
    assert!(first.num_rows() > 0);
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = session.snapshot().await.expect("snapshot");
        let last = snapshot.jobs.last().expect("jobs").clone();
        if last.status == JobStatus::Cancelled {
            assert!(
                last.error.unwrap_or_default().contains("stopped reading"),
                "cancelled for the right reason"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned job did not end: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until_idle(&session, Duration::from_secs(5))
        .await
        .expect("the cancelled job's blocks are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_stages_of_one_job_run_side_by_side() {
    let session = common::start(Mode::InProcess, slow_executors(Duration::from_millis(150))).await;
    register_numbers(&session, "a", 4, 300);
    register_numbers(&session, "b", 4, 500);
    // Two aggregates, each behind a shuffle of its own, meet in one union.
    let sql = "SELECT v % 3 AS k, count(*) AS n FROM a GROUP BY v % 3 \
               UNION ALL SELECT v % 5 AS k, count(*) AS n FROM b GROUP BY v % 5";
    let batches = run(&session, sql, "union of two aggregates").await;
    let mut rows = Vec::new();
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        let col = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64")
                .clone()
        };
        let (k, n) = (col(0), col(1));
        rows.extend((0..b.num_rows()).map(|r| (k.value(r), n.value(r))));
    }
    rows.sort_unstable();
    // Each of a's 4 partitions holds 0..300, each of b's 0..500: every remainder 400 times.
    let mut want: Vec<(i64, i64)> = (0..3).chain(0..5).map(|k| (k, 400)).collect();
    want.sort_unstable();
    assert_eq!(rows, want);
    let snapshot = session.snapshot().await.expect("snapshot");
    let job = snapshot
        .jobs
        .iter()
        .find(|j| j.description.contains("UNION ALL") && j.status == JobStatus::Succeeded)
        .expect("the union's job");
    let maps: Vec<_> = job.stages.iter().filter(|s| s.shuffle).collect();
    assert_eq!(maps.len(), 2, "two map stages: {:?}", job.stages);
    let last_submitted = maps
        .iter()
        .map(|s| s.submitted_ms)
        .max()
        .expect("submitted");
    let first_completed = maps
        .iter()
        .map(|s| s.completed_ms.expect("completed"))
        .min()
        .expect("completed");
    assert!(
        last_submitted < first_completed,
        "both map stages were submitted before either ended: submitted by {last_submitted}, \
         first ended at {first_completed}"
    );
}
