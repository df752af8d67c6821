//! Co-partitioned scans: tables whose files hold disjoint ranges of a join key are joined
//! without a shuffle (the files read grouped by range), tables whose files overlap are
//! shuffled as before, and both give single-process DataFusion's answers.

use std::path::Path;

use arrow::util::pretty::pretty_format_batches;
use ember::prelude::*;

use crate::common::{self, Mode};

/// `orders` (10,000 orders in key order, 4 files), `lines` (3 lines per order, 8 files:
/// each orders file's keys are those of two lines files) and `lines_3` (the same lines in
/// 3 files, whose key ranges straddle the orders files' boundaries).
fn write_tables(dir: &Path) {
    let orders: Vec<i64> = (0..10_000).collect();
    common::write_int64_table(
        &dir.join("orders"),
        4,
        &[
            ("o_id", orders.clone()),
            ("o_price", orders.iter().map(|i| i % 1_000).collect()),
        ],
    );
    let lines: Vec<i64> = (0..30_000).collect();
    for (name, files) in [("lines", 8), ("lines_3", 3)] {
        common::write_int64_table(
            &dir.join(name),
            files,
            &[
                ("l_order", lines.iter().map(|i| i / 3).collect()),
                ("l_qty", lines.iter().map(|i| i % 7).collect()),
            ],
        );
    }
}

async fn run(session: &Session, sql: &str) -> (String, ember::driver::JobMetrics) {
    let batches = session
        .sql(sql)
        .await
        .expect("plans")
        .collect()
        .await
        .expect("runs");
    let metrics = session.last_job_metrics().expect("metrics");
    (
        pretty_format_batches(&batches).expect("format").to_string(),
        metrics,
    )
}

/// DataFusion's answer to `sql`, formatted as [`run`] formats Ember's.
async fn reference_rows(reference: &datafusion::prelude::SessionContext, sql: &str) -> String {
    let batches = reference
        .sql(sql)
        .await
        .expect("plans")
        .collect()
        .await
        .expect("runs");
    pretty_format_batches(&batches).expect("format").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_of_disjoint_key_ranges_run_without_a_shuffle() {
    let dir = tempfile::tempdir().expect("tmp");
    write_tables(dir.path());
    let tables = ["orders", "lines", "lines_3"];
    // Both sides are far above the broadcast threshold: the join is partitioned.
    let builder = || {
        common::builder(2)
            .broadcast_join_threshold(1 << 10)
            .runtime_broadcast(false)
    };
    let session = common::start(Mode::Processes, builder().key_range_scans(true)).await;
    let shuffling = common::start(Mode::Processes, builder().key_range_scans(false)).await;
    let reference = datafusion::prelude::SessionContext::new();
    for table in tables {
        let path = dir.path().join(table);
        for s in [&session, &shuffling] {
            s.register_parquet(table, &path).await.expect("register");
        }
        reference
            .register_parquet(
                table,
                path.to_str().expect("utf8"),
                datafusion::prelude::ParquetReadOptions::default(),
            )
            .await
            .expect("register");
    }
    let queries = |lines: &str| {
        [
            format!(
                "SELECT count(*) AS n, sum(l_qty * o_price) AS total FROM {lines} \
                 JOIN orders ON l_order = o_id WHERE l_qty > 1"
            ),
            format!(
                "SELECT o_id, sum(l_qty) AS qty FROM orders JOIN {lines} ON o_id = l_order \
                 GROUP BY o_id HAVING sum(l_qty) > 15 ORDER BY o_id"
            ),
            format!(
                "SELECT count(*) AS n FROM orders WHERE NOT EXISTS \
                 (SELECT 1 FROM {lines} WHERE l_order = o_id AND l_qty = 6)"
            ),
        ]
    };
    for sql in queries("lines") {
        let explained = session
            .sql(&sql)
            .await
            .expect("plans")
            .explain()
            .await
            .expect("explains");
        assert!(
            explained.contains("output_partitioning=Range("),
            "{sql}:\n{explained}"
        );
        let (ours, metrics) = run(&session, &sql).await;
        let (shuffled, shuffled_metrics) = run(&shuffling, &sql).await;
        let theirs = reference_rows(&reference, &sql).await;
        assert_eq!(ours, theirs, "{sql}");
        assert_eq!(shuffled, theirs, "{sql}");
        // The join (and an aggregate on its key) reads both sides where they lie.
        assert_eq!(metrics.shuffle_bytes_written, 0, "{sql}: {metrics:?}");
        assert!(
            shuffled_metrics.shuffle_bytes_written > 0,
            "{sql}: {shuffled_metrics:?}"
        );
        assert!(metrics.stages_run < shuffled_metrics.stages_run, "{sql}");
    }
    // Files whose key ranges straddle the other side's: both sides are shuffled.
    for sql in queries("lines_3") {
        let (ours, metrics) = run(&session, &sql).await;
        let theirs = reference_rows(&reference, &sql).await;
        assert_eq!(ours, theirs, "{sql}");
        assert!(metrics.shuffle_bytes_written > 0, "{sql}: {metrics:?}");
    }
    common::assert_executors_hold_nothing(&session).await;
}
