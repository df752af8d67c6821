//! Bounded memory: partitions several times an executor's `--memory` complete by spilling,
//! with every executor's peak resident set inside its limit plus the stated overhead, and no
//! spill file left behind.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use ember::driver::JobMetrics;
use ember::prelude::*;
use parquet::arrow::ArrowWriter;

/// Each executor's `--memory` in these tests.
const EXECUTOR_MEMORY: usize = 128 << 20;

/// Writes `files` Parquet files of `rows` rows `(k, v, s)`: `k` is always 7 (so a shuffle
/// by `k` sends every row to one reducer), `v` a scrambled distinct number, `s` one of a
/// thousand 24-character strings. In memory a row takes about 44 bytes.
fn write_wide(dir: &Path, files: usize, rows: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new("s", DataType::Utf8, false),
    ]));
    let words: Vec<String> = (0..1000)
        .map(|i| format!("{i:0>8}-padding-to-24ch"))
        .collect();
    for f in 0..files {
        let file = std::fs::File::create(dir.join(format!("wide-{f:03}.parquet"))).expect("create");
        let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), None).expect("writer");
        for chunk in (0..rows).step_by(100_000) {
            let n = 100_000.min(rows - chunk);
            let base = (f * rows + chunk) as i64;
            let v = Int64Array::from_iter_values(
                (base..base + n as i64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64)),
            );
            let s = StringArray::from_iter_values(
                (0..n).map(|i| words[(base as usize + i) % words.len()].as_str()),
            );
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(vec![7; n])),
                    Arc::new(v),
                    Arc::new(s),
                ],
            )
            .expect("batch");
            writer.write(&batch).expect("write");
        }
        writer.close().expect("close");
    }
}

/// Starts two executors of [`EXECUTOR_MEMORY`] each with `wide` registered.
async fn wide_session(dir: &Path) -> Session {
    let session = common::builder(2)
        .memory_per_executor(EXECUTOR_MEMORY)
        .broadcast_join_threshold(0)
        .local_cluster()
        .await
        .expect("cluster starts");
    session
        .register_parquet("wide", dir.to_str().expect("utf8"))
        .await
        .expect("register");
    session
}

/// Runs `sql` (one row of Int64 columns) with every executor's peak resident set measured
/// from the start of the query; checks each stayed within its `--memory` plus the stated
/// overhead and that no block or spill file is left once the job ended. Returns the row.
async fn run_bounded(session: &Session, sql: &str) -> (Vec<i64>, JobMetrics) {
    let executors = session.executors();
    for e in &executors {
        session
            .driver()
            .reset_executor_peak_rss(&e.id)
            .await
            .expect("status");
    }
    let started = Instant::now();
    let answer = common::run_sql(session, sql).await;
    let ran = started.elapsed();
    let row = answer[0]
        .columns()
        .iter()
        .map(|c| {
            c.as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64")
                .value(0)
        })
        .collect();
    let metrics = session.last_job_metrics().expect("metrics");
    let bound = EXECUTOR_MEMORY as u64 + ember::executor::PROCESS_OVERHEAD_BYTES as u64;
    for e in &executors {
        let status = session
            .driver()
            .executor_status(&e.id)
            .await
            .expect("status");
        eprintln!(
            "{}: peak RSS {:.0} MiB with --memory {:.0} MiB; ran in {ran:?}, spilled {:.0} MiB: {sql}",
            e.id,
            status.peak_rss_bytes as f64 / 1048576.0,
            EXECUTOR_MEMORY as f64 / 1048576.0,
            metrics.spilled_bytes as f64 / 1048576.0,
        );
        assert!(
            status.peak_rss_bytes <= bound,
            "{} peaked at {} bytes, over {bound}: {sql}",
            e.id,
            status.peak_rss_bytes
        );
    }
    common::assert_executors_hold_nothing(session).await;
    (row, metrics)
}

/// Shuffle and operator spilling keep every executor inside its limit on inputs several
/// times larger: one reducer receiving about four times its executor's `--memory` and
/// sorting it for a sort-merge join; a join whose hash-table build side outgrows the
/// operator pool, which is planned again with sort-merge joins instead of failing; an
/// aggregate with a group per row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_several_times_the_executor_memory_complete_by_spilling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (files, rows) = (8, 1_500_000);
    write_wide(dir.path(), files, rows);
    let total = (files * rows) as i64;
    let max_v = (0..total)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64))
        .max()
        .expect("rows");
    let session = wide_session(dir.path()).await;

    // Every row has k = 7: all of them go to one reducer, which sorts them to join.
    common::run_sql(
        &session,
        "SET datafusion.optimizer.prefer_hash_join = false",
    )
    .await;
    let (row, metrics) = run_bounded(
        &session,
        "SELECT count(*), max(a.v), count(DISTINCT a.s) FROM wide a \
         JOIN (SELECT 7 AS k UNION ALL SELECT 8 AS k) b ON a.k = b.k",
    )
    .await;
    assert_eq!(row, vec![total, max_v, 1000]);
    assert!(metrics.spilled_bytes > 0, "{metrics:?}");
    common::run_sql(&session, "SET datafusion.optimizer.prefer_hash_join = true").await;

    // Each hash join partition would have to hold 6M keys (about 96 MiB) in a 64 MiB pool.
    let (row, metrics) = run_bounded(
        &session,
        "SELECT count(*), max(b.v) FROM wide a JOIN (SELECT v FROM wide) b ON a.v = b.v",
    )
    .await;
    assert_eq!(row, vec![total, max_v]);
    assert_eq!(metrics.replanned, vec!["sort-merge joins".to_string()]);

    let (row, metrics) = run_bounded(
        &session,
        "SELECT count(*), max(n) FROM (SELECT v, count(*) AS n FROM wide GROUP BY v)",
    )
    .await;
    assert_eq!(row, vec![total, 1]);
    assert!(metrics.replanned.is_empty(), "{metrics:?}");
}
