//! Uncorrelated scalar subqueries run as jobs of their own first, and the query that uses
//! them is planned with their values: answers agree with DataFusion, the value reaches the
//! scan as a literal, and SQL's row-count rules hold.

use crate::common::{session, write_orders, Mode};
use arrow::util::pretty::pretty_format_batches;

/// The rows of `batches`, one formatted line each, sorted.
fn rows(batches: &[arrow::record_batch::RecordBatch]) -> Vec<String> {
    let text = pretty_format_batches(batches).expect("format").to_string();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// A two-executor cluster with `files` x `rows` orders under `dir` as table `orders`.
async fn orders_on_a_cluster(
    dir: &std::path::Path,
    files: usize,
    rows: usize,
) -> (ember::session::Session, std::path::PathBuf) {
    let orders = dir.join("orders");
    write_orders(&orders, files, rows);
    let session = session(Mode::Processes, 2).await;
    session
        .register_parquet("orders", &orders)
        .await
        .expect("register");
    (session, orders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scalar_subqueries_run_first_and_their_values_reach_the_scan() {
    let dir = tempfile::tempdir().expect("tmp");
    let (session, orders) = orders_on_a_cluster(dir.path(), 4, 2_500).await;
    let reference = datafusion::prelude::SessionContext::new();
    reference
        .register_parquet(
            "orders",
            orders.to_str().expect("utf8"),
            datafusion::prelude::ParquetReadOptions::default(),
        )
        .await
        .expect("register");

    let queries = [
        // In a filter: the last 100 ids.
        "SELECT count(*) AS n, sum(amount) AS total FROM orders \
         WHERE id >= (SELECT max(id) - 99 FROM orders)",
        // Nested, and in a projection.
        "SELECT region, count(*) AS n, (SELECT count(*) FROM orders WHERE amount > 20) AS big \
         FROM orders WHERE id > (SELECT avg(id) FROM orders \
                                 WHERE amount > (SELECT avg(amount) FROM orders)) \
         GROUP BY region",
        // No row: the value is NULL, so nothing compares true.
        "SELECT count(*) AS n FROM orders WHERE amount > (SELECT max(amount) FROM orders WHERE id < 0)",
    ];
    let mut answers = Vec::new();
    for query in queries {
        let ours = session
            .sql(query)
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs");
        let theirs = reference
            .sql(query)
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs");
        assert_eq!(rows(&ours), rows(&theirs), "{query}");
        answers.push(rows(&ours));
    }

    // The first query's answer, by hand: ids 9,900-9,999, amounts (id % 100) / 4.
    assert_eq!(answers[0], vec!["| 100 | 1237.5 |".to_string()]);

    // The stages read the value as a literal filter on the scan; no join carries it.
    let explained = session
        .sql(queries[0])
        .await
        .expect("plans")
        .explain()
        .await
        .expect("explains");
    let stages = &explained[explained.find("Stage 1").expect("stages")..];
    assert!(stages.contains("id@0 >= 9900"), "{stages}");
    assert!(!stages.contains("JoinExec"), "{stages}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scalar_subquery_with_two_rows_is_an_error_and_the_session_goes_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let (session, _) = orders_on_a_cluster(dir.path(), 2, 100).await;
    let err = async {
        session
            .sql("SELECT count(*) FROM orders WHERE id = (SELECT id FROM orders WHERE id < 3)")
            .await?
            .collect()
            .await
    }
    .await
    .expect_err("two rows");
    assert!(err.to_string().contains("more than one row"), "{err}");
    let count = session
        .sql("SELECT * FROM orders WHERE id = (SELECT min(id) FROM orders)")
        .await
        .expect("plans")
        .count()
        .await
        .expect("runs");
    assert_eq!(count, 1);
}
