//! Fixtures shared by the integration tests: sessions in every mode, generated data sets,
//! and an independent single-process DataFusion to compare answers with.
#![allow(dead_code)]

pub mod certs;
pub mod http;
pub mod reference;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use ember::driver::DriverConfig;
use ember::prelude::*;
use parquet::arrow::ArrowWriter;

/// Where a test's executors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Session::local`: in this process.
    InProcess,
    /// `Session::local_cluster`: executor processes.
    Processes,
}

/// Driver settings that notice lost executors within a test's patience.
pub fn fast_driver() -> DriverConfig {
    DriverConfig {
        heartbeat_interval: Duration::from_millis(100),
        executor_timeout: Duration::from_secs(3),
        executor_wait: Duration::from_secs(10),
        ..DriverConfig::default()
    }
}

/// A builder for `n` executors with one core each and the test executor binary. mllib
/// kernels run on the CPU (comparisons with f64 references); `tests/it/gpu.rs` asks for the
/// GPU itself. A killed executor stays dead (tests of recovery count on it); the test of
/// a local cluster's healing asks for replacements.
pub fn builder(n: usize) -> SessionBuilder {
    Session::builder()
        .max_executor_restarts(0)
        .executors(n)
        .cores_per_executor(1)
        .executor_binary(env!("CARGO_BIN_EXE_ember-executor"))
        .driver_config(fast_driver())
        .device(ember::mllib::gpu::Device::Cpu)
}

/// A session of `n` executors in `mode`.
pub async fn session(mode: Mode, n: usize) -> Session {
    start(mode, builder(n)).await
}

/// Starts `builder` in `mode`.
pub async fn start(mode: Mode, builder: SessionBuilder) -> Session {
    match mode {
        Mode::InProcess => builder.local().await,
        Mode::Processes => builder.local_cluster().await,
    }
    .expect("session starts")
}

/// Schema of the generated `orders` data set.
pub fn orders_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]))
}

/// Writes `files` Parquet files of `rows` rows each: ids count up from 0 across files,
/// region is `r{id % 5}`, amount is `(id % 100) as f64 / 4`.
pub fn write_orders(dir: &Path, files: usize, rows: usize) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let schema = orders_schema();
    for f in 0..files {
        let start = (f * rows) as i64;
        let ids: Vec<i64> = (start..start + rows as i64).collect();
        let regions: Vec<String> = ids.iter().map(|i| format!("r{}", i % 5)).collect();
        let amounts: Vec<f64> = ids.iter().map(|i| (i % 100) as f64 / 4.0).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(regions)),
                Arc::new(Float64Array::from(amounts)),
            ],
        )
        .expect("batch");
        let file =
            std::fs::File::create(dir.join(format!("orders-{f:03}.parquet"))).expect("create");
        let mut w = ArrowWriter::try_new(file, schema.clone(), None).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
    }
}

/// Runs `sql` on single-process DataFusion with `orders` registered from `dir`: the
/// independent engine Ember's answers are compared with.
pub async fn datafusion_answer(dir: &Path, sql: &str) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    ctx.register_parquet(
        "orders",
        dir.to_str().expect("utf8 path"),
        ParquetReadOptions::default(),
    )
    .await
    .expect("register");
    ctx.sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run")
}

/// Rows of `batches` as sorted strings, so results compare regardless of row order.
pub fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| {
                arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
                    .expect("fmt")
            })
            .collect();
        for r in 0..b.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    rows.sort();
    rows
}

/// Total rows in `batches`.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Starts an `ember-executor` process (one core, CPU kernels) for `driver` with `extra`
/// arguments, its stdin piped, and waits until the driver sees it registered.
pub async fn executor_process(
    driver: &ember::driver::DriverHandle,
    extra: &[&str],
) -> std::process::Child {
    let address = driver.address().to_string();
    let mut args = vec!["--driver", &address, "--cores", "1", "--device", "cpu"];
    args.extend_from_slice(extra);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ember-executor"))
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("executor starts");
    if driver.registry().wait_for(1, Duration::from_secs(20)).await != 1 {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the executor never registered");
    }
    child
}

/// Waits up to `within` for `child` to exit; kills it (and returns `None`) if it does not.
pub async fn exit_within(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `files` Parquet files of `rows` orders, starts `builder` in `mode` and registers
/// them as `orders`.
pub async fn orders_session(
    mode: Mode,
    builder: SessionBuilder,
    files: usize,
    rows: usize,
) -> (tempfile::TempDir, Session) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_orders(dir.path(), files, rows);
    let session = start(mode, builder).await;
    session
        .register_parquet("orders", dir.path())
        .await
        .expect("register");
    (dir, session)
}

/// Runs `sql` on `session` and returns every row; panics with the query on failure.
pub async fn run_sql(session: &Session, sql: &str) -> Vec<RecordBatch> {
    session
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Asserts that no executor of `session` holds a block, a spill file or block-store bytes
/// (what every job leaves once it ended and cached data was dropped).
pub async fn assert_executors_hold_nothing(session: &Session) {
    for status in executor_statuses(session).await {
        let id = &status.executor_id;
        assert_eq!(status.blocks, 0, "{id} still holds blocks");
        assert_eq!(status.disk_bytes, 0, "{id} still holds spill files");
        assert_eq!(status.used_bytes, 0, "{id} still counts bytes");
    }
}

/// Every live executor's own account of itself (memory, blocks, spill, running tasks).
pub async fn executor_statuses(session: &Session) -> Vec<ember::engine::proto::ExecutorStatus> {
    let mut statuses = Vec::new();
    for e in session.executors() {
        statuses.push(
            session
                .driver()
                .executor_status(&e.id)
                .await
                .expect("executor status"),
        );
    }
    statuses
}

/// Runs queries `numbers` of `suite` on `session` and on single-process DataFusion
/// (`ctx`, the same tables registered) and compares the answers
/// ([`ember::suite::compare::difference`]); a query Ember does not answer within `timeout`
/// counts as failed. Returns one line per answered query (`qN: R rows in S s`) and one per
/// failure.
pub async fn answers_against_datafusion(
    suite: &ember::suite::Suite,
    session: &Session,
    ctx: &SessionContext,
    numbers: impl IntoIterator<Item = usize>,
    timeout: Duration,
) -> (Vec<String>, Vec<String>) {
    let mut answered = Vec::new();
    let mut failures = Vec::new();
    for n in numbers {
        let text = suite.query(n).expect("query text");
        let started = std::time::Instant::now();
        let ember =
            tokio::time::timeout(timeout, async { session.sql(text).await?.collect().await }).await;
        let took = started.elapsed();
        let expected = match ctx.sql(text).await {
            Ok(df) => df.collect().await,
            Err(e) => Err(e),
        };
        match (ember, expected) {
            (Err(_), _) => failures.push(format!("q{n}: no answer from ember within {timeout:?}")),
            (Ok(Err(e)), _) => failures.push(format!("q{n}: ember error: {e}")),
            (_, Err(e)) => failures.push(format!("q{n}: datafusion error: {e}")),
            (Ok(Ok(ember)), Ok(expected)) => {
                match ember::suite::compare::difference(&ember, &expected) {
                    Some(why) => failures.push(format!("q{n}: {why}")),
                    None => answered.push(format!(
                        "q{n}: {} rows in {:.2}s",
                        row_count(&ember),
                        took.as_secs_f64()
                    )),
                }
            }
        }
    }
    (answered, failures)
}

/// The `ember` binary at `path` (a test's `env!("CARGO_BIN_EXE_ember")`), logging errors
/// only.
pub fn ember_command(path: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(path);
    cmd.env("RUST_LOG", "error");
    cmd
}

/// The four measurement columns of `tests/data/iris.csv`.
pub const IRIS_INPUTS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

/// `tests/data/iris.csv` read on `session`.
pub async fn iris(session: &Session) -> DataFrame {
    session
        .read_csv(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/iris.csv"))
        .await
        .expect("read iris")
}

/// `sql`'s rows cached on `session`'s executors (and counted once, so they are held).
pub async fn cached_sql(session: &Session, sql: &str) -> DataFrame {
    let cached = session
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .cache()
        .await
        .unwrap_or_else(|e| panic!("cache {sql}: {e}"));
    assert!(cached.count().await.expect("count") > 0, "{sql} has rows");
    cached
}

/// `ember server` on a free port with one executor and `extra` arguments (and `env`), its
/// stdout read until it prints its Spark Connect URL (and drained after); killed when
/// dropped.
pub struct ConnectServer {
    child: std::process::Child,
    /// The `sc://` URL it printed.
    pub url: String,
}

impl ConnectServer {
    /// Starts the server; panics when it prints no URL within a minute.
    pub fn start(extra: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut child = ember_command(env!("CARGO_BIN_EXE_ember"))
            .args(["server", "--port", "0", "--executors", "1"])
            .args(extra)
            .envs(env.iter().copied())
            .env("EMBER_EXECUTOR_BIN", env!("CARGO_BIN_EXE_ember-executor"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("starts ember server");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut lines = stdout.lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(at) = line.find("sc://") {
                // Keep reading what the server prints after.
                std::thread::spawn(move || lines.for_each(drop));
                return Self {
                    child,
                    url: line[at..].trim().to_string(),
                };
            }
            if std::time::Instant::now() > deadline {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("ember server printed no URL");
    }

    /// `host:port` of the endpoint.
    pub fn authority(&self) -> &str {
        self.url.trim_start_matches("sc://")
    }
}

impl Drop for ConnectServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `columns` (all `Int64`) as `files` Parquet files under `dir`, rows split evenly,
/// with row groups of 10,000 rows.
pub fn write_int64_table(dir: &Path, files: usize, columns: &[(&str, Vec<i64>)]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, _)| Field::new(*name, DataType::Int64, false))
            .collect::<Vec<_>>(),
    ));
    let rows = columns[0].1.len();
    let per_file = rows.div_ceil(files);
    for f in 0..files {
        let range = f * per_file..((f + 1) * per_file).min(rows);
        let arrays = columns
            .iter()
            .map(|(_, values)| Arc::new(Int64Array::from(values[range.clone()].to_vec())) as _)
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).expect("batch");
        let file = std::fs::File::create(dir.join(format!("part-{f}.parquet"))).expect("create");
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(10_000))
            .build();
        let mut writer =
            ArrowWriter::try_new(file, Arc::clone(&schema), Some(props)).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
    }
}
