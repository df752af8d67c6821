//! Bad input gets a clear error that says what and where, never a panic, and cached data
//! stays intact.

use std::io::Write;

use crate::common::{session, write_orders, Mode};
use ember::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_path_names_the_path() {
    let session = session(Mode::InProcess, 1).await;
    let missing = "/definitely/not/here/orders.parquet";
    let err = session
        .read_parquet(missing)
        .await
        .expect_err("missing file");
    assert!(err.to_string().contains(missing), "{err}");
    assert!(err.is_user_error());
    let err = session
        .register_csv("t", "/no/such/dir")
        .await
        .expect_err("missing dir");
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_csv_row_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("people.csv");
    let mut f = std::fs::File::create(&path).expect("create");
    writeln!(f, "id,name,age").expect("write");
    for i in 0..20 {
        writeln!(f, "{i},person{i},{}", 20 + i).expect("write");
    }
    writeln!(f, "20,broken").expect("write");
    drop(f);
    let session = session(Mode::Processes, 2).await;
    // Schema inference may already meet the bad row; otherwise the executors do.
    let outcome = async { session.read_csv(&path).await?.collect().await }.await;
    let err = outcome.expect_err("bad row");
    let text = err.to_string();
    assert!(text.contains("people.csv"), "names the file: {text}");
    assert!(text.contains("line 22"), "names the line: {text}");
    assert!(err.is_user_error(), "{err:?}");

    // With the schema given, inference reads nothing and the executor meets the row.
    let schema = arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("name", arrow::datatypes::DataType::Utf8, true),
        arrow::datatypes::Field::new("age", arrow::datatypes::DataType::Int64, true),
    ]);
    let df = session
        .context()
        .read_csv(
            path.to_str().expect("utf8"),
            datafusion::prelude::CsvReadOptions::new().schema(&schema),
        )
        .await
        .expect("no inference needed");
    let plan = df.create_physical_plan().await.expect("plan");
    let err = session
        .collect_plan(plan)
        .await
        .expect_err("bad row on an executor");
    let text = err.to_string();
    assert!(text.contains("people.csv"), "names the file: {text}");
    assert!(text.contains("line"), "names the line: {text}");
    assert!(
        text.contains("partition") && text.contains("exec-"),
        "names partition and executor: {text}"
    );
    assert!(err.is_user_error(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_mismatch_between_files_is_an_error() {
    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), 1, 100);
    // A second file whose `amount` is a string.
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new("amount", arrow::datatypes::DataType::Utf8, false),
    ]));
    let batch = arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        vec![
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2])),
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["x", "y"])),
        ],
    )
    .expect("batch");
    let file = std::fs::File::create(dir.path().join("zz-other.parquet")).expect("create");
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");

    let session = session(Mode::InProcess, 2).await;
    let outcome = async {
        let df = session.read_parquet(dir.path()).await?;
        df.collect().await
    }
    .await;
    let err = outcome.expect_err("mismatched files cannot be summed");
    assert!(
        err.to_string().to_lowercase().contains("amount"),
        "names the column: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_column_and_bad_sql_are_plan_errors_and_cache_survives() {
    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), 2, 500);
    let session = session(Mode::Processes, 2).await;
    let cached = session
        .read_parquet(dir.path())
        .await
        .expect("read")
        .cache()
        .await
        .expect("cache");
    assert_eq!(cached.count().await.expect("count"), 1000);

    let err = cached
        .clone()
        .select(vec![col("no_such_column")])
        .expect_err("unknown column");
    assert!(err.to_string().contains("no_such_column"), "{err}");
    assert!(err.is_user_error());

    session
        .register_dataframe("orders", &cached)
        .expect("register");
    let err = session
        .sql("SELEKT * FROM orders")
        .await
        .expect_err("bad sql");
    assert!(err.to_string().contains("SELEKT"), "{err}");
    assert!(err.is_user_error());
    let err = session
        .sql("SELECT nope FROM orders")
        .await
        .expect_err("unknown column");
    assert!(err.to_string().contains("nope"), "{err}");
    let err = session
        .sql("SELECT * FROM no_table")
        .await
        .expect_err("unknown table");
    assert!(err.to_string().contains("no_table"), "{err}");

    // A runtime failure on the executors (an impossible cast) fails the job with the stage,
    // partition and executor named, and is not retried as if the cluster were at fault.
    let err = session
        .sql("SELECT CAST(region AS INT) FROM orders")
        .await
        .expect("plans")
        .collect()
        .await
        .expect_err("cast fails");
    let text = err.to_string();
    assert!(
        text.contains("partition") && text.contains("exec-"),
        "{text}"
    );

    // Nothing cached was lost.
    assert_eq!(cached.count().await.expect("count"), 1000);
    let m = session.last_job_metrics().expect("metrics");
    assert_eq!(
        (m.source_partitions_read, m.cached_blocks_used),
        (0, 2),
        "{m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_executor_is_dropped_and_the_job_still_finishes() {
    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), 4, 500);
    let session = session(Mode::InProcess, 2).await;
    let df = session.read_parquet(dir.path()).await.expect("read");
    // Stop executor 0 abruptly; the driver still believes it is alive until a call fails.
    session.kill_executor(0).expect("kill");
    assert_eq!(df.count().await.expect("count on the survivor"), 2000);
    let m = session.last_job_metrics().expect("metrics");
    assert_eq!(m.executors_lost, 1, "{m:?}");
    assert_eq!(session.executors().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_that_cannot_reach_its_driver_fails_to_start_with_the_address() {
    let err = ember::executor::start(ember::executor::ExecutorConfig {
        driver: "127.0.0.1:9".into(),
        bind: "127.0.0.1:0".parse().expect("addr"),
        memory_bytes: 1 << 20,
        cores: 1,
        id: None,
        register_timeout: std::time::Duration::from_millis(300),
        hooks: Default::default(),
        driver_timeout: ember::executor::DEFAULT_DRIVER_TIMEOUT,
        task_delay: None,
        advertise: None,
        security: Default::default(),
        share_dir: None,
    })
    .await
    .expect_err("no driver there");
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
}
