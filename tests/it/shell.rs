//! `ember sql` as an interactive shell, driven in a pseudo-terminal: multi-line statements,
//! timing, `;` inside literals and comments, catalog statements answered by the driver,
//! errors that leave the shell running, Ctrl-C cancelling a running query (and only it),
//! and history kept across runs. Scripts with comments and literals holding `;` run from
//! files.

use std::process::Command;

use crate::common::{write_orders, ConnectServer};
use rexpect::session::{spawn_with_options, Options, PtySession};

/// `ember sql` on one executor over the `orders` table, in a terminal.
fn shell(home: &std::path::Path, data: &std::path::Path) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ember"));
    cmd.args(["sql", "--executors", "1", "--table"])
        .arg(format!("orders={}", data.display()))
        .env("HOME", home)
        .env("RUST_LOG", "error")
        .env("TERM", "xterm")
        .env("EMBER_EXECUTOR_BIN", env!("CARGO_BIN_EXE_ember-executor"));
    let options = Options::new()
        .timeout_ms(Some(60_000))
        .strip_ansi_escape_codes(true);
    spawn_with_options(cmd, options).expect("ember sql starts in a pty")
}

#[test]
fn the_shell_edits_times_cancels_and_remembers() {
    let home = tempfile::tempdir().expect("tmp");
    let data = tempfile::tempdir().expect("tmp");
    write_orders(data.path(), 1, 500);
    let mut sh = shell(home.path(), data.path());
    sh.exp_string("ember> ").expect("the prompt");

    // A statement over two lines: the second prompt says it continues.
    sh.send_line("SELECT region, count(*) AS n FROM orders")
        .unwrap();
    sh.exp_string("    -> ").expect("a continuation prompt");
    sh.send_line("GROUP BY region ORDER BY region;").unwrap();
    sh.exp_string("r4").expect("the last group");
    sh.exp_regex(r"5 rows in [0-9]+\.[0-9]{3} s")
        .expect("rows and time");
    sh.exp_string("ember> ").unwrap();

    // `;` inside a literal and a comment, two statements on one line.
    sh.send_line("SELECT 'a;b' AS x; SELECT 2 AS y /* ; */;")
        .unwrap();
    sh.exp_string("a;b").expect("the literal kept whole");
    sh.exp_string("1 row in").unwrap();
    sh.exp_string("| 2 |").expect("the second statement ran");
    sh.exp_string("ember> ").unwrap();

    // Catalog statements run on the driver.
    sh.send_line("SHOW TABLES;").unwrap();
    sh.exp_string("orders").expect("SHOW TABLES lists orders");
    sh.exp_string("ember> ").unwrap();
    sh.send_line("DESCRIBE orders;").unwrap();
    sh.exp_string("amount").expect("DESCRIBE lists columns");
    sh.exp_string("ember> ").unwrap();
    sh.send_line(
        "SELECT count(*) AS c FROM information_schema.columns WHERE table_name = 'orders';",
    )
    .unwrap();
    sh.exp_string("| 3 |").expect("three columns");
    sh.exp_string("ember> ").unwrap();

    // An error names the problem and the shell goes on.
    sh.send_line("SELEC nonsense;").unwrap();
    sh.exp_string("error:").expect("an error");
    sh.exp_string("ember> ").unwrap();

    // Ctrl-C cancels the running query and returns to the prompt; the cluster is intact.
    sh.send_line("SELECT count(*) FROM generate_series(1, 100000000000) WHERE value % 7 = 3;")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    sh.send_control('c').unwrap();
    sh.exp_string("cancelled").expect("the query is cancelled");
    sh.exp_string("ember> ").expect("back at the prompt");
    sh.send_line("SELECT sum(n) AS total FROM (SELECT count(*) AS n FROM orders);")
        .unwrap();
    sh.exp_string("| 500 ").expect("the executor still answers");
    sh.exp_string("ember> ").unwrap();

    // Ctrl-C while typing drops the line.
    sh.send("SELECT 'never run'").unwrap();
    sh.send_control('c').unwrap();
    sh.exp_string("ember> ").unwrap();
    sh.send_line("\\q").unwrap();
    sh.exp_eof().expect("the shell ends");

    // The history file has the statements, and a new shell reads it back (Up arrow).
    let history = std::fs::read_to_string(home.path().join(".ember_history")).expect("history");
    assert!(history.contains("SHOW TABLES;"), "{history}");
    assert!(!history.contains("never run"), "{history}");
    let mut sh = shell(home.path(), data.path());
    sh.exp_string("ember> ").unwrap();
    // Up recalls the last statement run.
    sh.send("\x1b[A").unwrap();
    sh.send_line("").unwrap();
    sh.exp_string("| 500 ").expect("the recalled statement ran");
    sh.exp_string("ember> ").unwrap();
    sh.send_control('d').unwrap();
    sh.exp_eof().expect("Ctrl-D ends the shell");
}

#[test]
fn scripts_with_semicolons_in_comments_and_literals_run_from_files() {
    let data = tempfile::tempdir().expect("tmp");
    write_orders(data.path(), 1, 100);
    let script = data.path().join("q.sql");
    std::fs::write(
        &script,
        "-- TPC-H Q1 (Pricing Summary Report); the first line is a comment\n\
         SELECT count(*) AS n FROM orders WHERE region LIKE '%;%';\n\
         /* a block; comment */ SELECT 'x;y' AS s",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["sql", "--executors", "1", "--format", "csv", "--table"])
        .arg(format!(
            "orders={}",
            data.path().join("orders-000.parquet").display()
        ))
        .arg("-f")
        .arg(&script)
        .env("RUST_LOG", "error")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "n\n0\ns\nx;y\n");

    // An unterminated string says where; a --table path that does not exist says so.
    std::fs::write(&script, "SELECT 1;\nSELECT 'oops").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["sql", "-f"])
        .arg(&script)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("q.sql") && stderr.contains("Line: 2"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["sql", "--table", "t=/no/such/dir", "SELECT 1"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/no/such/dir: no such file or directory"),
        "{stderr}"
    );
}

#[test]
fn connect_runs_statements_on_a_running_server() {
    let data = tempfile::tempdir().expect("tmp");
    write_orders(data.path(), 1, 100);
    let table = format!("orders={}", data.path().display());
    let server = ConnectServer::start(&["--no-ui", "--table", &table], &[]);
    let url = server.url.clone();
    let sql = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ember"))
            .args(["sql", "--connect", &url, "--format", "csv"])
            .args(args)
            .env("RUST_LOG", "error")
            .output()
            .expect("runs")
    };
    let out = sql(&[
        "SELECT region, count(*) AS n FROM orders GROUP BY region ORDER BY region; SHOW TABLES",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("region,n\nr0,20\nr1,20\n"), "{stdout}");
    assert!(
        stdout.contains("orders"),
        "SHOW TABLES on the server: {stdout}"
    );

    let out = sql(&["SELEC 1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("SELEC"),
        "the server's parse error: {stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["sql", "--connect", "sc://127.0.0.1:1", "SELECT 1"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot reach the Spark Connect server at 127.0.0.1:1"),
        "{stderr}"
    );
}
