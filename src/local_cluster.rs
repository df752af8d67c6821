//! Local cluster: executor processes on loopback, started and stopped by a session; owns
//! the child processes and guarantees none outlives it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::executor_main::{self_exec_ready, RUN_AS_EXECUTOR_ENV};

/// How long a stopping executor gets to finish on its own (and remove its spill directory)
/// before it is killed.
const GRACEFUL_STOP: Duration = Duration::from_secs(2);

/// An executor process, stopped and reaped when dropped (also when a test panics).
#[derive(Debug)]
pub(crate) struct ChildGuard {
    pub(crate) child: Child,
    pub(crate) id: String,
    /// Whether its exit was already reported (so a dead executor that cannot be replaced
    /// is logged once).
    reported: bool,
}

impl ChildGuard {
    /// Kills the process at once (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop by closing its stdin (which it watches), waits up to
    /// [`GRACEFUL_STOP`] for it to exit, which removes its spill directory, and kills it
    /// after that.
    pub(crate) fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + GRACEFUL_STOP;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
    }

    /// Whether the process has exited, and how.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How to start executor processes.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) binary: PathBuf,
    /// Whether the binary is the application itself, run in executor mode.
    pub(crate) self_exec: bool,
}

/// Finds the program to start executors from: an explicit binary, else this program
/// itself when it called `run_executor_if_requested`, else an `ember-executor` binary
/// beside this program (or one directory up, where Cargo puts binaries for tests).
pub(crate) fn find_launch(explicit: Option<&Path>) -> Result<Launch> {
    if let Some(binary) = explicit {
        return Ok(Launch {
            binary: binary.to_path_buf(),
            self_exec: false,
        });
    }
    if let Some(binary) = std::env::var_os("EMBER_EXECUTOR_BIN") {
        return Ok(Launch {
            binary: binary.into(),
            self_exec: false,
        });
    }
    let me = std::env::current_exe()
        .map_err(|e| Error::Cluster(format!("cannot locate the running program: {e}")))?;
    if self_exec_ready() {
        return Ok(Launch {
            binary: me,
            self_exec: true,
        });
    }
    let name = format!("ember-executor{}", std::env::consts::EXE_SUFFIX);
    let mut dir = me.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join(&name);
        if candidate.is_file() {
            return Ok(Launch {
                binary: candidate,
                self_exec: false,
            });
        }
        dir = d.parent();
    }
    Err(Error::Cluster(format!(
        "cannot find the `{name}` binary beside {}: build it (cargo build --bin ember-executor), \
         set EMBER_EXECUTOR_BIN, or call ember::run_executor_if_requested() at the start of main",
        me.display()
    )))
}

/// What every executor process of a local cluster is started with.
#[derive(Debug, Clone)]
pub(crate) struct ExecutorSettings {
    pub(crate) cores: usize,
    pub(crate) memory: usize,
    pub(crate) device: ember_mllib::gpu::Device,
    pub(crate) adapter: ember_mllib::gpu::AdapterChoice,
    /// The cluster's secret and TLS (the secret goes in the child's environment).
    pub(crate) security: ember_engine::security::Security,
    /// The directory the executors share block files through (removed with the last
    /// holder of the settings, after the executors).
    pub(crate) share: Option<std::sync::Arc<tempfile::TempDir>>,
}

/// Prefix of the share directories local clusters make in `/dev/shm`, followed by the
/// driver's process id.
const SHARE_DIR_PREFIX: &str = "ember-blocks-";

/// A fresh directory on the host's memory file system (`/dev/shm`) for a local cluster's
/// executors to share block files through, readable by this user only; `None` where there
/// is none (the executors then send each other blocks over loopback). Directories left by
/// drivers that died (their process is gone) are removed first: their pages are memory.
pub(crate) fn host_share_dir() -> Option<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return None;
    }
    remove_stale_share_dirs(shm);
    match tempfile::Builder::new()
        .prefix(&format!("{SHARE_DIR_PREFIX}{}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(shm)
    {
        Ok(dir) => Some(dir),
        Err(e) => {
            tracing::warn!(error = %e, "no share directory in /dev/shm; executors send blocks");
            None
        }
    }
}

/// Removes the share directories under `shm` whose driver process no longer runs (a
/// driver killed outright cannot remove its own).
fn remove_stale_share_dirs(shm: &Path) {
    ember_executor::remove_dirs_of_dead_processes(shm, SHARE_DIR_PREFIX);
}

/// Removes what the executor process `pid` left in the share directory `root` (it writes
/// into `root/{pid}-{id}`), once the process is gone.
fn remove_share_of(root: &Path, pid: u32) {
    let prefix = format!("{pid}-");
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Starts one executor process that registers with `driver`.
pub(crate) fn spawn_executor(
    launch: &Launch,
    driver: &str,
    id: &str,
    settings: &ExecutorSettings,
    task_delay: Option<std::time::Duration>,
) -> Result<ChildGuard> {
    let mut cmd = Command::new(&launch.binary);
    if let Some(delay) = task_delay {
        cmd.args(["--inject-task-delay-ms", &delay.as_millis().to_string()]);
    }
    cmd.args([
        "--driver",
        driver,
        "--bind",
        "127.0.0.1:0",
        "--cores",
        &settings.cores.to_string(),
        "--memory",
        &settings.memory.to_string(),
        "--id",
        id,
        "--device",
        &settings.device.to_string(),
        "--exit-on-stdin-close",
    ])
    .args(settings.adapter.to_args());
    if let Some(share) = &settings.share {
        cmd.arg("--share-dir").arg(share.path());
    }
    crate::security::pass_to_child(&settings.security, &mut cmd);
    cmd
        // The executor watches its stdin: when this process dies, even by SIGKILL, the pipe
        // closes and the executor exits.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // Executors get their own process group: Ctrl-C at a terminal signals the foreground
    // group, and it is the driver's to handle (it cancels the running query); executors
    // end with the driver through their stdin instead.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if launch.self_exec {
        cmd.env(RUN_AS_EXECUTOR_ENV, "1");
    }
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let child = cmd.spawn().map_err(|e| {
        Error::Cluster(format!(
            "cannot start executor {}: {e}",
            launch.binary.display()
        ))
    })?;
    Ok(ChildGuard {
        child,
        id: id.to_string(),
        reported: false,
    })
}

/// How a local cluster replaces executor processes that die, as a standalone worker
/// relaunches its executor: the same binary and settings under a new id (the driver
/// treats it as a new executor; the dead one's blocks are recomputed where needed).
#[derive(Debug)]
pub(crate) struct Healer {
    pub(crate) launch: Launch,
    pub(crate) driver: String,
    pub(crate) settings: ExecutorSettings,
    /// Fault injection carried over to a slot's replacements: (slot, delay).
    pub(crate) task_delays: Vec<(usize, std::time::Duration)>,
    /// Replacements allowed over the session's life.
    pub(crate) limit: usize,
    /// Replacements started so far.
    pub(crate) replaced: std::sync::atomic::AtomicUsize,
}

impl Healer {
    /// Starts a replacement for every process in `children` that has exited, while the
    /// limit allows; returns how many were started.
    pub(crate) fn heal(&self, children: &mut [ChildGuard]) -> usize {
        use std::sync::atomic::Ordering;
        let mut started = 0;
        for (slot, child) in children.iter_mut().enumerate() {
            let Some(status) = child.exited() else {
                continue;
            };
            if child.reported {
                continue;
            }
            // The dead executor's block files: the driver recomputes its blocks anyway.
            if let Some(share) = &self.settings.share {
                remove_share_of(share.path(), child.child.id());
            }
            let done = self.replaced.load(Ordering::Relaxed);
            if done >= self.limit {
                child.reported = true;
                tracing::error!(executor = %child.id, %status, limit = self.limit,
                    "executor process exited; not replaced (replacement limit reached)");
                continue;
            }
            let id = format!("exec-{slot}-r{}", done + 1);
            let delay = self
                .task_delays
                .iter()
                .find(|(i, _)| *i == slot)
                .map(|(_, d)| *d);
            match spawn_executor(&self.launch, &self.driver, &id, &self.settings, delay) {
                Ok(replacement) => {
                    self.replaced.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(executor = %child.id, %status, replacement = %id,
                        "executor process exited; started a replacement");
                    // The dead process was reaped; dropping its guard is harmless.
                    *child = replacement;
                    started += 1;
                }
                Err(e) => {
                    child.reported = true;
                    tracing::error!(executor = %child.id, error = %e,
                        "executor process exited; its replacement did not start");
                }
            }
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dead executor's directory goes, and only its own: another process whose id
    /// starts with the same digits keeps its files.
    #[test]
    fn a_dead_executors_share_directory_is_removed_alone() {
        let root = tempfile::tempdir().expect("tempdir");
        for name in ["41-exec-0", "411-exec-1", "42-exec-2"] {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).expect("mkdir");
            std::fs::write(dir.join("1-0-0-0.arrow"), b"block").expect("write");
        }
        remove_share_of(root.path(), 41);
        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["411-exec-1", "42-exec-2"]);
    }

    /// A share directory whose driver is gone is removed when the next one is made; a live
    /// driver's stays, and the new one is this user's alone.
    #[test]
    fn share_directories_of_dead_drivers_are_swept() {
        use std::os::unix::fs::PermissionsExt;
        if !Path::new("/dev/shm").is_dir() {
            return;
        }
        // Process ids are below 2^22 on Linux: this one cannot run.
        let dead = Path::new("/dev/shm").join(format!("{SHARE_DIR_PREFIX}4294967294-test"));
        std::fs::create_dir_all(dead.join("7-exec-0")).expect("mkdir");
        let live = tempfile::Builder::new()
            .prefix(&format!("{SHARE_DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in("/dev/shm")
            .expect("live dir");
        let fresh = host_share_dir().expect("share dir");
        assert!(!dead.exists(), "a dead driver's directory is swept");
        assert!(live.path().exists(), "a live driver's directory stays");
        let mode = std::fs::metadata(fresh.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
