//! PySpark on Ember: the real `pyspark-client` package, installed from the package index
//! into a virtual environment, runs the pytest suite in `tests/pyspark/` against an
//! `ember server` started here (its own executor processes, the TPC-H tables at SF 0.01),
//! and the server then stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember::prelude::*;
use ember::tpch;

/// What the suite installs; the environment is rebuilt when this changes.
const REQUIREMENTS: [&str; 6] = [
    "pyspark-client==4.2.0",
    "pandas>=2.2,<3",
    "pyarrow>=18",
    "numpy>=1.26",
    "pytest>=8",
    // The ML tests compare Ember's models with scikit-learn's (1.8 names the elastic
    // net by `l1_ratio` alone).
    "scikit-learn>=1.8",
];

/// How long the server may take to print its URL.
const SERVER_START: Duration = Duration::from_secs(60);

/// A virtual environment with the client installed, kept in the target directory between
/// runs (rebuilt when [`REQUIREMENTS`] change).
fn python_env() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyspark-venv");
    let marker = venv.join("ember-requirements.txt");
    let wanted = REQUIREMENTS.join("\n");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return venv;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap_or_else(|e| panic!("{python} -m venv (Python 3.9+ is needed): {e}"));
    assert!(status.success(), "creating the virtual environment failed");
    let status = Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(REQUIREMENTS)
        .status()
        .expect("runs pip");
    assert!(status.success(), "pip install {REQUIREMENTS:?} failed");
    std::fs::write(&marker, wanted).expect("writes the requirements marker");
    venv
}

/// `ember server`, stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(tables: &[(String, PathBuf)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
        command
            .args([
                "server",
                "--port",
                "0",
                "--executors",
                "2",
                "--memory",
                "1GiB",
            ])
            .env("EMBER_EXECUTOR_BIN", env!("CARGO_BIN_EXE_ember-executor"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, path) in tables {
            command
                .arg("--table")
                .arg(format!("{name}={}", path.display()));
        }
        let mut child = command.spawn().expect("starts ember server");
        let stdout = child.stdout.take().expect("server stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + SERVER_START;
        let mut server = Server {
            child,
            url: String::new(),
        };
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(at) = line.find("sc://") {
                        server.url = line[at..].trim().to_string();
                        return server;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = server.child.try_wait() {
                        panic!("ember server exited before listening: {status}");
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("ember server closed its output before listening")
                }
            }
        }
        panic!("ember server printed no sc:// URL within {SERVER_START:?}");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None))
            && self.terminate(Duration::from_secs(5)).is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Pids of the processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the command name (which is in parentheses): state, ppid, ...
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let ppid = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Writes Ember's own answers to the 22 TPC-H queries (in-process executors) as Parquet
/// files `qNN.parquet`, for the suite to compare the server's answers with.
fn expected_answers(data: &Path, out: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let session = Session::builder()
            .executors(2)
            .cores_per_executor(1)
            .local()
            .await
            .expect("session");
        tpch::register(&session, data)
            .await
            .expect("registers TPC-H");
        std::fs::create_dir_all(out).expect("mkdir");
        for n in 1..=22 {
            let sql = tpch::query(n).expect("query text");
            let df = session.sql(sql).await.expect("plans");
            let batches = df.collect().await.expect("runs");
            let file = std::fs::File::create(out.join(format!("q{n:02}.parquet"))).expect("file");
            let mut writer =
                parquet::arrow::ArrowWriter::try_new(file, df.schema(), None).expect("writer");
            for b in &batches {
                writer.write(b).expect("writes");
            }
            writer.close().expect("closes");
        }
    });
}

#[test]
fn pyspark_client_suite_runs_unchanged_on_ember_server() {
    let venv = python_env();
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("tpch");
    tpch::generate(0.01, &data, 2).expect("generates TPC-H");
    let expected = work.path().join("expected");
    expected_answers(&data, &expected);

    let tables: Vec<(String, PathBuf)> = tpch::TABLES
        .iter()
        .map(|t| (t.to_string(), data.join(t)))
        .collect();
    let mut server = Server::start(&tables);
    let executors = children(server.pid());
    assert_eq!(
        executors.len(),
        2,
        "the server starts two executor processes"
    );

    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pyspark");
    let output = Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::DeprecationWarning",
        ])
        .arg(&suite)
        .env("EMBER_CONNECT_URL", &server.url)
        // test_auth.py starts servers of its own, with a secret.
        .env("EMBER_BIN", env!("CARGO_BIN_EXE_ember"))
        .env("EMBER_EXECUTOR_BIN", env!("CARGO_BIN_EXE_ember-executor"))
        .env("EMBER_SERVER_PID", server.pid().to_string())
        .env("EMBER_TPCH_DIR", &data)
        .env("EMBER_EXPECTED_DIR", &expected)
        .env("EMBER_WORK_DIR", work.path())
        .output()
        .expect("runs pytest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the PySpark suite failed:\n{stdout}\n{stderr}"
    );

    // SIGTERM stops the server and every executor it started (including replacements
    // for the one a test killed).
    let executors = children(server.pid());
    let status = server
        .terminate(Duration::from_secs(20))
        .expect("the server exits on SIGTERM");
    assert!(status.success(), "the server exits cleanly: {status}");
    std::thread::sleep(Duration::from_millis(200));
    for pid in executors {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true),
            "executor {pid} outlived the server"
        );
    }
}
