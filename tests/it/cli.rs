//! The `ember` command line: `ember sql` on a local cluster, output formats, and errors on
//! stderr with a non-zero exit.

use std::process::Command;

use crate::common::write_orders;

fn ember() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ember"));
    cmd.env("RUST_LOG", "error");
    cmd
}

/// Runs `ember` with `args`, checks it failed without printing results, returns stderr.
fn fails(args: &[&str]) -> String {
    let out = ember().args(args).output().expect("runs");
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(out.stdout.is_empty(), "{args:?} printed results");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn sql_prints_results_in_every_format() {
    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), 2, 1_500);
    let table = format!("orders={}", dir.path().display());

    let out = ember()
        .args([
            "sql",
            "--executors",
            "2",
            "--table",
            &table,
            "--format",
            "csv",
        ])
        .arg("SELECT region, count(*) AS n FROM orders GROUP BY region ORDER BY region")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        ["region,n", "r0,600", "r1,600", "r2,600", "r3,600", "r4,600"]
    );

    let out = ember()
        .args([
            "sql",
            "--executors",
            "1",
            "--table",
            &table,
            "--format",
            "json",
        ])
        .arg("SELECT max(id) AS top FROM orders")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid json");
    assert_eq!(json, serde_json::json!([{ "top": 2999 }]));

    let query = dir.path().join("q.sql");
    std::fs::write(
        &query,
        "SELECT count(*) AS total FROM orders WHERE amount > 20;",
    )
    .expect("write");
    let out = ember()
        .args(["sql", "--table", &table, "-f"])
        .arg(&query)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    assert!(stdout.contains("| total |"), "{stdout}");
    // amount = (id % 100) / 4 > 20 means id % 100 > 80: 19 of every 100 ids.
    assert!(stdout.contains("| 570   |"), "{stdout}");
}

#[test]
fn errors_go_to_stderr_with_a_failing_exit_code() {
    let dir = tempfile::tempdir().expect("tmp");
    write_orders(dir.path(), 1, 100);
    let table = format!("orders={}", dir.path().display());

    let stderr = fails(&[
        "sql",
        "--executors",
        "1",
        "--table",
        &table,
        "SELEC * FROM orders",
    ]);
    assert!(stderr.contains("SELEC"), "{stderr}");

    let stderr = fails(&["sql", "--table", "t=/no/such/place.parquet", "SELECT 1"]);
    assert!(stderr.contains("/no/such/place.parquet"), "{stderr}");

    let stderr = fails(&["sql", "--table", "missing-equals-sign", "SELECT 1"]);
    assert!(stderr.contains("NAME=PATH"), "{stderr}");
}

/// Ctrl-C (SIGINT) during a long query cancels it and exits with 130 at once, instead of
/// dying by the signal with the query still running.
#[test]
fn ctrl_c_cancels_the_running_query() {
    let mut child = ember()
        .args(["sql", "--executors", "1"])
        .arg("SELECT count(*) FROM generate_series(1, 100000000000) WHERE value % 7 = 3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    // Long enough for the cluster to start and the query to run on the executor.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ember sql kept running after Ctrl-C");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(130), "{status}: {stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");
}
