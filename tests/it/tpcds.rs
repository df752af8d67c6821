//! TPC-DS on a cluster: all 99 queries on two executor processes give single-process
//! DataFusion's answers over the same generated data; every stage of every TPC-H and
//! TPC-DS plan keeps DataFusion's physical-plan invariants as an executor decodes it; q72
//! completes by spilling inside a small memory limit and leaves no spill file (nor spill
//! directory once the cluster stops); and
//! `ember tpcds gen` / `ember tpcds bench` work from the command line.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::Mode;
use datafusion::prelude::SessionContext;
use ember::prelude::*;
use ember::{tpcds, tpch};

/// How long one query may take on Ember at SF 0.1 before it counts as hung (the slowest
/// takes about a second when it works), so one stuck query cannot stall the whole test.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes TPC-DS at `sf` (two files per big table) into a new temporary directory.
fn tpcds_data(sf: f64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let summary = tpcds::SUITE
        .generate(sf, dir.path(), 2)
        .expect("generates TPC-DS");
    for table in tpcds::TABLES {
        let rows = summary.table(table).map_or(0, |t| t.rows);
        assert!(rows > 0, "{table} is empty at SF {sf}");
    }
    dir
}

/// A local cluster from `builder` and single-process DataFusion (the independent engine
/// Ember's answers are compared with), both with the TPC-DS tables of `dir` registered.
async fn cluster_and_datafusion(builder: SessionBuilder, dir: &Path) -> (Session, SessionContext) {
    let session = builder.local_cluster().await.expect("cluster starts");
    tpcds::SUITE
        .register(&session, dir)
        .await
        .expect("register");
    let ctx = SessionContext::new();
    tpcds::SUITE
        .register_datafusion(&ctx, dir)
        .await
        .expect("register with datafusion");
    (session, ctx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_99_queries_on_a_cluster_match_datafusion() {
    let started = Instant::now();
    let data = tpcds_data(0.1);
    let generated = started.elapsed();
    let (session, ctx) = cluster_and_datafusion(common::builder(2), data.path()).await;

    let (answered, failures) =
        common::answers_against_datafusion(&tpcds::SUITE, &session, &ctx, 1..=99, QUERY_TIMEOUT)
            .await;
    eprintln!(
        "generated in {:.2}s; queries: {}; total {:.2}s",
        generated.as_secs_f64(),
        answered.join(", "),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of 99 queries matched DataFusion; failed:\n{}",
        99 - failures.len(),
        failures.join("\n")
    );
    // Anchor: q96 counts store sales in one hour band of one store; never zero at SF 0.1.
    let q96 = answered.iter().find(|a| a.starts_with("q96:"));
    assert!(q96.is_some_and(|a| a.starts_with("q96: 1 rows")), "{q96:?}");
    common::assert_executors_hold_nothing(&session).await;
}

/// Plans every query of `suite` over `dir` on a session with `broadcast_threshold` and
/// checks every stage; returns one line per query that breaks an invariant.
async fn stage_violations(
    suite: &'static ember::suite::Suite,
    dir: &Path,
    broadcast_threshold: usize,
) -> Vec<String> {
    let session = common::start(
        Mode::InProcess,
        common::builder(2).broadcast_join_threshold(broadcast_threshold),
    )
    .await;
    suite.register(&session, dir).await.expect("register");
    let mut violations = Vec::new();
    for n in 1..=suite.queries.len() {
        let text = suite.query(n).expect("query");
        let checked = match session.sql(text).await {
            Ok(df) => df.check_stages().await,
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            violations.push(format!(
                "{} q{n} (broadcast threshold {broadcast_threshold}): {e}",
                suite.name
            ));
        }
    }
    violations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_of_every_tpch_and_tpcds_plan_keeps_datafusion_invariants() {
    let tpcds_dir = tpcds_data(0.1);
    let tpch_dir = tempfile::tempdir().expect("tmp");
    tpch::generate(0.01, tpch_dir.path(), 2).expect("generates TPC-H");
    let mut violations = Vec::new();
    // With broadcasts (the default threshold) and with every join shuffled.
    for threshold in [1 << 20, 0] {
        violations.extend(stage_violations(&tpcds::SUITE, tpcds_dir.path(), threshold).await);
        violations.extend(stage_violations(&tpch::SUITE, tpch_dir.path(), threshold).await);
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q72_spills_inside_a_small_memory_limit_and_leaves_no_spill_file() {
    let data = tpcds_data(0.1);
    let (session, ctx) = cluster_and_datafusion(
        // Its joins stream in one stage (build sides chosen by known bounds, so
        // `catalog_sales x inventory` is not collected whole); 16 MiB executors are small
        // enough that the blocks it stores and shuffles must spill.
        // Its stages run one after the other: run side by side, which blocks are held at
        // once (and so whether they spill) depends on which branch finishes first.
        common::builder(2)
            .memory_per_executor(16 << 20)
            .driver_config(ember::driver::DriverConfig {
                branches_together: false,
                ..common::fast_driver()
            }),
        data.path(),
    )
    .await;
    let (answered, failures) =
        common::answers_against_datafusion(&tpcds::SUITE, &session, &ctx, [72], QUERY_TIMEOUT)
            .await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(answered.len(), 1);
    let metrics = session.last_job_metrics().expect("metrics of q72");
    eprintln!(
        "{answered:?}: spilled {} bytes, replanned {:?}",
        metrics.spilled_bytes, metrics.replanned
    );
    assert!(
        metrics.spilled_bytes > 0,
        "q72 did not spill within 16 MiB executors: {metrics:?}"
    );
    common::assert_executors_hold_nothing(&session).await;

    // Stopping the cluster removes every executor's spill directory.
    let dirs: Vec<String> = common::executor_statuses(&session)
        .await
        .into_iter()
        .map(|s| s.spill_dir)
        .collect();
    assert_eq!(dirs.len(), 2);
    for dir in &dirs {
        assert!(Path::new(dir).is_dir(), "{dir} is not a directory");
    }
    drop(session);
    for dir in &dirs {
        assert!(!Path::new(dir).exists(), "{dir} is left behind");
    }
}

#[test]
fn gen_and_bench_from_the_command_line() {
    let scratch = tempfile::tempdir().expect("tmp");
    let out = scratch.path().join("ds");
    let run = common::ember_command(env!("CARGO_BIN_EXE_ember"))
        .args(["tpcds", "gen", "--sf", "0.01", "--parts", "2", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("wrote 24 tables"), "{stdout}");
    assert!(tpcds::SUITE.missing_tables(&out).is_empty());

    let run = common::ember_command(env!("CARGO_BIN_EXE_ember"))
        .args([
            "tpcds",
            "bench",
            "--queries",
            "3,96",
            "--runs",
            "1",
            "--data",
        ])
        .arg(&out)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    for q in ["q3 ", "q96 "] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(q))
            .unwrap_or_else(|| panic!("no {q}line: {stdout}"));
        assert!(line.contains(" yes "), "answers do not agree: {line}");
    }
    assert!(stdout
        .lines()
        .last()
        .is_some_and(|l| l.starts_with("total ember=")));

    let run = common::ember_command(env!("CARGO_BIN_EXE_ember"))
        .args(["tpcds", "bench", "--queries", "100", "--data"])
        .arg(&out)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "query 100 was accepted");
    assert!(
        stderr.contains("100 is not a TPC-DS query number (1 to 99)"),
        "{stderr}"
    );
}
