//! `ember history`: the UI and API of finished applications, replayed from the event logs
//! (`<app id>.jsonl`) that `--event-log DIR` writes. A log is replayed again only when its
//! file changed, so a history server can watch a directory that running drivers write to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::StatusCode;
use ember_driver::{AppSnapshot, SnapshotBuilder};

use super::{ApiError, ApiResult};

/// Arguments of `ember history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Directory of event logs (as written by `--event-log DIR`).
    #[arg(long = "event-log", value_name = "DIR")]
    pub event_log: PathBuf,
    /// Port of the UI (the next free one when taken; 0 picks any).
    #[arg(long, default_value_t = 18080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
}

/// A replayed log and the file state it was replayed from.
struct Replayed {
    modified: SystemTime,
    len: u64,
    snapshot: Arc<AppSnapshot>,
}

/// The event logs of a directory, replayed on demand.
pub(crate) struct EventLogs {
    dir: PathBuf,
    cache: Mutex<HashMap<PathBuf, Replayed>>,
}

impl EventLogs {
    /// Watches `dir`.
    pub(crate) fn open(dir: PathBuf) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            anyhow::bail!(
                "--event-log {}: not a directory (write logs there with `ember server --event-log DIR`)",
                dir.display()
            );
        }
        Ok(Self {
            dir,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn logs(&self) -> ApiResult<Vec<PathBuf>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading {}: {e}", self.dir.display()),
            )
        })?;
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        logs.sort();
        Ok(logs)
    }

    /// Replays `path` unless it is unchanged since the last replay.
    async fn replay(&self, path: PathBuf) -> ApiResult<Arc<AppSnapshot>> {
        let meta = std::fs::metadata(&path)
            .map_err(|e| ApiError::not_found(format!("{}: {e}", path.display())))?;
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = cache.get(&path) {
                if r.modified == modified && r.len == meta.len() {
                    return Ok(Arc::clone(&r.snapshot));
                }
            }
        }
        let file = path.clone();
        let snapshot = tokio::task::spawn_blocking(move || SnapshotBuilder::replay(&file))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        let snapshot = Arc::new(snapshot);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(
            path,
            Replayed {
                modified,
                len: meta.len(),
                snapshot: Arc::clone(&snapshot),
            },
        );
        Ok(snapshot)
    }

    /// Every application, newest first; a log that cannot be read is left out (and
    /// logged), so one bad file does not hide the others.
    pub(crate) async fn all(&self) -> ApiResult<Vec<Arc<AppSnapshot>>> {
        let mut apps = Vec::new();
        for path in self.logs()? {
            match self.replay(path.clone()).await {
                Ok(s) => apps.push(s),
                Err(e) => tracing::warn!(log = %path.display(), error = %e.1, "event log skipped"),
            }
        }
        apps.sort_by_key(|a| std::cmp::Reverse(a.started_ms));
        Ok(apps)
    }

    /// The application `id`.
    pub(crate) async fn get(&self, id: &str) -> ApiResult<Arc<AppSnapshot>> {
        if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
            return Err(ApiError::not_found(format!("no application {id}")));
        }
        let path = self.dir.join(format!("{id}.jsonl"));
        if !path.is_file() {
            return Err(ApiError::not_found(format!(
                "no application {id} in {}",
                self.dir.display()
            )));
        }
        self.replay(path).await
    }
}
