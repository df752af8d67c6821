//! The models `ember serve` holds: for each name, its directory and the versions loaded
//! from it. A directory is either one saved pipeline model (version 1) or a directory of
//! numbered version directories; it is scanned again every poll interval, so a new
//! version is served without a restart, a removed one is unloaded, and a version that
//! fails to load leaves the others serving (the failure is logged and reported).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use ember_mllib::serving::Predictor;
use ember_mllib::PipelineModel;

use super::batch::{BatchConfig, Batcher};
use super::metrics::{Metrics, ModelLabels};

/// One loaded version of a model.
#[derive(Debug)]
pub struct Version {
    /// The version number (1 for a model directory without versions).
    pub number: u64,
    /// The pipeline, ready to predict.
    pub predictor: Arc<Predictor>,
    /// Its request batching.
    pub batcher: Batcher,
}

/// A version that could not be loaded.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The directory's modification time when it failed (it is tried again once that
    /// changes).
    pub modified: Option<SystemTime>,
    /// Why.
    pub error: String,
}

#[derive(Debug, Default)]
struct State {
    versions: BTreeMap<u64, Arc<Version>>,
    failures: BTreeMap<u64, Failure>,
}

/// A served model: its name, its directory and its versions.
#[derive(Debug)]
pub struct Model {
    /// The name clients ask for.
    pub name: String,
    /// The directory it is loaded from.
    pub dir: PathBuf,
    state: RwLock<State>,
    batching: BatchConfig,
    metrics: Arc<Metrics>,
}

impl Model {
    /// A model named `name` read from `dir` (nothing loaded until [`Model::refresh`]).
    pub fn new(name: String, dir: PathBuf, batching: BatchConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            name,
            dir,
            state: RwLock::new(State::default()),
            batching,
            metrics,
        }
    }

    /// The newest loaded version.
    pub fn latest(&self) -> Option<Arc<Version>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.versions.values().next_back().cloned()
    }

    /// Version `number`, if loaded.
    pub fn version(&self, number: u64) -> Option<Arc<Version>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.versions.get(&number).cloned()
    }

    /// The loaded version numbers, oldest first.
    pub fn versions(&self) -> Vec<u64> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.versions.keys().copied().collect()
    }

    /// The versions that failed to load, and why.
    pub fn failures(&self) -> Vec<(u64, Failure)> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .failures
            .iter()
            .map(|(v, f)| (*v, f.clone()))
            .collect()
    }

    /// Scans the directory: loads versions not loaded yet (and failed ones that changed
    /// since), unloads versions whose directory is gone. Returns how many versions are
    /// loaded.
    pub async fn refresh(&self) -> usize {
        let found = match version_dirs(&self.dir) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(model = %self.name, dir = %self.dir.display(), error = %e,
                    "cannot read the model directory; serving what is loaded");
                return self.versions().len();
            }
        };
        let (loaded, failed) = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            (state.versions.clone(), state.failures.clone())
        };
        for (number, path) in &found {
            if loaded.contains_key(number) {
                continue;
            }
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if failed.get(number).is_some_and(|f| f.modified == modified) {
                continue;
            }
            match self.load(*number, path).await {
                Ok(version) => {
                    tracing::info!(model = %self.name, version = number, dir = %path.display(),
                        inputs = %super::json::names(version.predictor.inputs()),
                        "model version loaded");
                    let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                    state.failures.remove(number);
                    state.versions.insert(*number, Arc::new(version));
                }
                Err(error) => {
                    let serving = self.latest().map(|v| v.number);
                    tracing::warn!(model = %self.name, version = number, dir = %path.display(),
                        %error, still_serving = ?serving, "model version failed to load");
                    self.metrics
                        .load_failures
                        .get_or_create(&self.labels())
                        .inc();
                    let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                    state.failures.insert(*number, Failure { modified, error });
                }
            }
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<u64> = state
            .versions
            .keys()
            .filter(|v| !found.contains_key(v))
            .copied()
            .collect();
        for number in gone {
            tracing::info!(model = %self.name, version = number, "model version removed; unloaded");
            state.versions.remove(&number);
        }
        state.failures.retain(|v, _| found.contains_key(v));
        if let Some(latest) = state.versions.keys().next_back() {
            self.metrics
                .version
                .get_or_create(&self.labels())
                .set(*latest as i64);
        }
        state.versions.len()
    }

    fn labels(&self) -> ModelLabels {
        ModelLabels {
            model: self.name.clone(),
        }
    }

    async fn load(&self, number: u64, path: &Path) -> Result<Version, String> {
        // Reading the files is blocking I/O: off the async workers.
        let dir = path.to_path_buf();
        let model = tokio::task::spawn_blocking(move || PipelineModel::load(&dir))
            .await
            .map_err(|e| format!("loading panicked: {e}"))?
            .map_err(|e| e.to_string())?;
        let predictor = Arc::new(Predictor::new(&model).await.map_err(|e| e.to_string())?);
        let batcher = Batcher::new(
            Arc::clone(&predictor),
            self.batching,
            Arc::clone(&self.metrics),
            self.name.clone(),
        );
        Ok(Version {
            number,
            predictor,
            batcher,
        })
    }
}

/// The versions under `dir`: `{1: dir}` when `dir` is itself a saved model, else its
/// subdirectories named by a number (hidden ones, such as a save in progress, aside).
fn version_dirs(dir: &Path) -> std::io::Result<BTreeMap<u64, PathBuf>> {
    let mut found = BTreeMap::new();
    if dir.join("metadata.json").is_file() {
        found.insert(1, dir.to_path_buf());
        return Ok(found);
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(number) = name.to_str().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        if entry.file_type()?.is_dir() {
            found.insert(number, entry.path());
        }
    }
    Ok(found)
}
