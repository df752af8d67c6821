//! TPC-H on a cluster: all 22 queries on two executor processes give single-process
//! DataFusion's answers over the same generated data, and `ember tpch gen` and
//! `ember tpch bench` work from the command line and reject bad input.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use ember::tpch;

/// How long one query may take on Ember at SF 0.01 before it counts as hung (each takes
/// well under a second when it works), so one stuck query cannot stall the whole test.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_22_queries_on_a_cluster_match_datafusion() {
    let started = Instant::now();
    let scratch = tempfile::tempdir().expect("tmp");
    let data = scratch.path().join("sf0.01");
    let out = data.clone();
    let summary = tokio::task::spawn_blocking(move || tpch::generate(0.01, &out, 3))
        .await
        .expect("generator task")
        .expect("generates SF 0.01");
    for (table, expected) in [
        ("customer", 1_500),
        ("nation", 25),
        ("orders", 15_000),
        ("part", 2_000),
        ("partsupp", 8_000),
        ("region", 5),
        ("supplier", 100),
    ] {
        assert_eq!(
            summary.table(table).map(|t| t.rows),
            Some(expected),
            "{table} rows"
        );
    }
    assert_eq!(summary.table("lineitem").map(|t| t.files), Some(3));
    let generated = started.elapsed();

    let session = common::builder(2)
        .local_cluster()
        .await
        .expect("cluster starts");
    assert_eq!(session.executor_pids().len(), 2);
    tpch::register(&session, &data).await.expect("register");
    let ctx = SessionContext::new();
    tpch::register_datafusion(&ctx, &data)
        .await
        .expect("register with datafusion");

    let (answered, failures) =
        common::answers_against_datafusion(&tpch::SUITE, &session, &ctx, 1..=22, QUERY_TIMEOUT)
            .await;
    // Anchor: Q1 groups lineitem into its four (returnflag, linestatus) pairs.
    assert!(
        answered
            .first()
            .is_some_and(|a| a.starts_with("q1: 4 rows")),
        "{answered:?} {failures:?}"
    );
    eprintln!(
        "generated in {:.2}s; queries: {}; total {:.2}s",
        generated.as_secs_f64(),
        answered.join(", "),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of 22 queries matched DataFusion; failed:\n{}",
        22 - failures.len(),
        failures.join("\n")
    );
}

fn ember() -> Command {
    common::ember_command(env!("CARGO_BIN_EXE_ember"))
}

fn parquet_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("table directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .count()
}

#[test]
fn gen_writes_eight_tables_and_bench_runs_on_them() {
    let scratch = tempfile::tempdir().expect("tmp");
    let out = scratch.path().join("tiny");
    let run = ember()
        .args(["tpch", "gen", "--sf", "0.001", "--parts", "2", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut dirs: Vec<String> = std::fs::read_dir(&out)
        .expect("out dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        tpch::TABLES,
        "exactly the eight tables, no staging left"
    );
    assert_eq!(parquet_files(&out.join("lineitem")), 2);
    assert_eq!(parquet_files(&out.join("nation")), 1);
    assert!(stdout.contains("lineitem"), "{stdout}");
    assert!(stdout.contains("wrote 8 tables"), "{stdout}");

    let run = ember()
        .args([
            "tpch",
            "bench",
            "--executors",
            "2",
            "--queries",
            "1,6",
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
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("q1 ")), "{stdout}");
    assert!(lines.iter().any(|l| l.starts_with("q6 ")), "{stdout}");
    assert!(!lines.iter().any(|l| l.starts_with("q3 ")), "{stdout}");
    let last = lines.last().copied().unwrap_or_default();
    let fields: Vec<&str> = last.split(' ').collect();
    assert_eq!(fields.len(), 4, "{last}");
    assert_eq!(fields[0], "total");
    for (field, key) in fields[1..].iter().zip(["ember=", "datafusion=", "ratio="]) {
        let value = field.strip_prefix(key).unwrap_or_else(|| panic!("{last}"));
        assert!(value.parse::<f64>().is_ok(), "{last}");
    }
}

#[test]
fn gen_rejects_a_bad_scale_factor_or_output_path() {
    let scratch = tempfile::tempdir().expect("tmp");
    let out = scratch.path().join("never");
    for sf in ["-1", "0", "lots"] {
        let run = ember()
            .args(["tpch", "gen", "--sf", sf, "--out"])
            .arg(&out)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "--sf {sf} succeeded");
        assert!(stderr.contains(sf), "--sf {sf}: {stderr}");
        assert!(stderr.contains("--sf"), "--sf {sf}: {stderr}");
        assert!(!out.exists(), "--sf {sf} created {}", out.display());
    }

    let file = scratch.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let under_file = file.join("data");
    let run = ember()
        .args(["tpch", "gen", "--sf", "0.001", "--out"])
        .arg(&under_file)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "writing under a file succeeded");
    assert!(
        stderr.contains("creating output directory") && stderr.contains("a-file"),
        "{stderr}"
    );
}

/// Joins broadcast by their size when run (`planner::runtime_broadcast`): with a broadcast
/// threshold low enough that SF 0.01's joins qualify, all 22 queries still give
/// DataFusion's answers; q5's `customer ⋈ orders` is run first and broadcast, so its
/// `lineitem` is not shuffled and the query shuffles far less than on a session that runs
/// every join as planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_broadcast_when_run_keep_every_answer_and_skip_shuffles() {
    let scratch = tempfile::tempdir().expect("tmp");
    let data = scratch.path().join("sf0.01");
    let out = data.clone();
    tokio::task::spawn_blocking(move || tpch::generate(0.01, &out, 3))
        .await
        .expect("generator task")
        .expect("generates SF 0.01");
    // Sides of up to 16 x 4 KiB are broadcast; SF 0.01's lineitem is 60,000 rows.
    let threshold = 4 << 10;
    let session = common::builder(2)
        .broadcast_join_threshold(threshold)
        .local_cluster()
        .await
        .expect("cluster starts");
    tpch::register(&session, &data).await.expect("register");
    let ctx = SessionContext::new();
    tpch::register_datafusion(&ctx, &data)
        .await
        .expect("register with datafusion");
    let (answered, failures) =
        common::answers_against_datafusion(&tpch::SUITE, &session, &ctx, 1..=22, QUERY_TIMEOUT)
            .await;
    assert!(
        failures.is_empty(),
        "{} of 22 queries matched DataFusion; failed:\n{}",
        22 - failures.len(),
        failures.join("\n")
    );
    let mut broadcast = Vec::new();
    for n in 1..=22 {
        let text = tpch::SUITE.query(n).expect("query text");
        session
            .sql(text)
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs");
        let metrics = session.last_job_metrics().expect("metrics");
        if metrics.sides_broadcast > 0 {
            broadcast.push(format!("q{n}: {}", metrics.sides_broadcast));
        }
    }
    eprintln!("answered: {answered:?}; sides broadcast: {broadcast:?}");
    assert!(
        broadcast.len() >= 3,
        "few queries broadcast a side when run: {broadcast:?}"
    );

    let q5 = tpch::SUITE.query(5).expect("q5");
    session
        .sql(q5)
        .await
        .expect("plans")
        .collect()
        .await
        .expect("runs");
    let adaptive = session.last_job_metrics().expect("metrics");
    let planned = common::builder(2)
        .broadcast_join_threshold(threshold)
        .runtime_broadcast(false)
        .local_cluster()
        .await
        .expect("cluster starts");
    tpch::register(&planned, &data).await.expect("register");
    planned
        .sql(q5)
        .await
        .expect("plans")
        .collect()
        .await
        .expect("runs");
    let as_planned = planned.last_job_metrics().expect("metrics");
    assert!(adaptive.sides_broadcast >= 1, "{adaptive:?}");
    assert_eq!(as_planned.sides_broadcast, 0, "{as_planned:?}");
    assert!(
        adaptive.shuffle_bytes_written * 2 < as_planned.shuffle_bytes_written,
        "q5 shuffled {} bytes with the side broadcast, {} as planned",
        adaptive.shuffle_bytes_written,
        as_planned.shuffle_bytes_written
    );
}

/// A side run first restricts the big side to its keys where it is read
/// (`planner::runtime_broadcast`), at SF 0.1 against a session that runs every join as
/// planned (same answers):
/// - TPC-H q18: the side keeping the groups passing a `HAVING` is a few order keys, and
///   `orders` and `lineitem` are cut down to them before they are partitioned;
/// - TPC-H q20: the suppliers its `IN` keeps cannot be broadcast (each task would emit
///   them), but they are run first all the same, and their keys cut `partsupp` and the
///   `lineitem` aggregated against it down before their shuffles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_run_first_restricts_the_big_side_before_its_shuffle() {
    let scratch = tempfile::tempdir().expect("tmp");
    let data = scratch.path().join("sf0.1");
    let out = data.clone();
    tokio::task::spawn_blocking(move || tpch::generate(0.1, &out, 2))
        .await
        .expect("generator task")
        .expect("generates SF 0.1");
    let threshold = 4 << 10;
    // (query, how many times less the restricted run shuffles)
    for (n, factor) in [(18, 10), (20, 2)] {
        let query = tpch::SUITE.query(n).expect("query text");
        let mut runs = Vec::new();
        for runtime_broadcast in [true, false] {
            let session = common::builder(2)
                .broadcast_join_threshold(threshold)
                .runtime_broadcast(runtime_broadcast)
                .local_cluster()
                .await
                .expect("cluster starts");
            tpch::register(&session, &data).await.expect("register");
            let batches = tokio::time::timeout(QUERY_TIMEOUT, async {
                session.sql(query).await.expect("plans").collect().await
            })
            .await
            .unwrap_or_else(|_| panic!("q{n} finishes"))
            .unwrap_or_else(|e| panic!("q{n} runs: {e}"));
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .expect("formats")
                .to_string();
            runs.push((text, session.last_job_metrics().expect("metrics")));
        }
        let ((restricted, adaptive), (planned, as_planned)) = (&runs[0], &runs[1]);
        eprintln!(
            "q{n}: {} bytes shuffled restricted, {} as planned",
            adaptive.shuffle_bytes_written, as_planned.shuffle_bytes_written
        );
        assert_eq!(restricted, planned, "q{n}'s answer changed");
        assert!(
            planned.lines().count() > 4,
            "q{n} answered no rows:\n{planned}"
        );
        assert!(
            adaptive.sides_broadcast + adaptive.sides_restricting >= 1,
            "q{n}: {adaptive:?}"
        );
        assert_eq!(
            as_planned.sides_broadcast + as_planned.sides_restricting,
            0,
            "q{n}: {as_planned:?}"
        );
        assert!(
            adaptive.shuffle_bytes_written * factor < as_planned.shuffle_bytes_written,
            "q{n} shuffled {} bytes with its keys restricting the big side, {} as planned",
            adaptive.shuffle_bytes_written,
            as_planned.shuffle_bytes_written
        );
    }
}
