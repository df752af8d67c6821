//! Join filters across stages: a broadcast join's key bounds reach a scan that runs in an
//! earlier stage (below a shuffle), filled in by the driver before that stage runs; the
//! scan prunes row groups, the shuffle moves less, and answers agree with DataFusion.

use std::path::Path;

use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;

use crate::common::{self, Mode};

/// `sales` (200,000 rows in day order), `stock` (5,000 rows) and `days` / `days_split`
/// (200 days, 20 a year) under `dir`.
fn write_tables(dir: &Path) {
    let sales: Vec<i64> = (0..200_000).collect();
    common::write_int64_table(
        &dir.join("sales"),
        2,
        &[
            ("day", sales.iter().map(|i| i / 1_000).collect()),
            ("item", sales.iter().map(|i| i % 997).collect()),
            ("qty", sales.iter().map(|i| i % 100).collect()),
        ],
    );
    let stock: Vec<i64> = (0..5_000).collect();
    common::write_int64_table(
        &dir.join("stock"),
        1,
        &[
            ("item", stock.iter().map(|i| i % 997).collect()),
            ("on_hand", stock.iter().map(|i| i % 50).collect()),
        ],
    );
    // The same days twice: in one file (read by the join's own stage) and in two files
    // (read by a stage of its own, whose blocks the join reads).
    let days: Vec<i64> = (0..200).collect();
    for (name, files) in [("days", 1), ("days_split", 2)] {
        common::write_int64_table(
            &dir.join(name),
            files,
            &[
                ("day", days.clone()),
                ("year", days.iter().map(|d| d / 20).collect()),
            ],
        );
    }
}

fn rows(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).expect("format").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_joins_bounds_prune_a_scan_below_a_shuffle() {
    let dir = tempfile::tempdir().expect("tmp");
    write_tables(dir.path());
    // `stock` is above the broadcast threshold, so `sales x stock` shuffles both sides (it
    // is not run first to be broadcast: its join is the one this test needs partitioned);
    // `days` is below it, so its join is a broadcast join in the stage after the shuffle.
    let session = common::start(
        Mode::Processes,
        common::builder(2)
            .broadcast_join_threshold(16 << 10)
            .runtime_broadcast(false),
    )
    .await;
    let reference = datafusion::prelude::SessionContext::new();
    for table in ["sales", "stock", "days", "days_split"] {
        let path = dir.path().join(table);
        session
            .register_parquet(table, &path)
            .await
            .expect("register");
        reference
            .register_parquet(
                table,
                path.to_str().expect("utf8"),
                datafusion::prelude::ParquetReadOptions::default(),
            )
            .await
            .expect("register");
    }
    let query = |days: &str, years: &str| {
        format!(
            "SELECT count(*) AS n, sum(qty) AS total FROM sales \
             JOIN stock ON sales.item = stock.item \
             JOIN {days} AS days ON sales.day = days.day \
             WHERE {years} AND stock.on_hand < sales.qty"
        )
    };
    let mut shuffled = Vec::new();
    let runs = [
        ("days", "days.year = 3", "(from files)"),
        ("days", "days.year >= 0", "(from files)"),
        ("days_split", "days.year = 3", "(from datasets"),
    ];
    for (days, years, source) in runs {
        let sql = query(days, years);
        let df = session.sql(&sql).await.expect("plans");
        let explained = df.explain().await.expect("explains");
        assert!(
            explained.contains(&format!("1 join filter(s) filled first {source}")),
            "{sql}:\n{explained}"
        );
        let ours = df.collect().await.expect("runs");
        let theirs = reference
            .sql(&sql)
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs");
        assert_eq!(rows(&ours), rows(&theirs), "{sql}");
        let metrics = session.last_job_metrics().expect("metrics");
        assert_eq!(metrics.join_filters_filled, 1, "{sql}: {metrics:?}");
        shuffled.push(metrics.shuffle_bytes_written);
    }
    // One year in ten: the sales scan skips the other years' row groups before the shuffle,
    // whether the driver read the days from their file or from a stage's blocks.
    let (one_year, all_years, one_year_from_blocks) = (shuffled[0], shuffled[1], shuffled[2]);
    assert!(
        one_year * 3 < all_years,
        "one year shuffled {one_year} bytes, all years {all_years}"
    );
    assert!(
        one_year_from_blocks * 3 < all_years,
        "one year (days from blocks) shuffled {one_year_from_blocks} bytes, all years {all_years}"
    );
    common::assert_executors_hold_nothing(&session).await;
}
