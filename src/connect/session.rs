//! One Spark Connect session: its own catalog (temporary views) and configuration over the
//! server's shared cluster, the DataFrames it cached, and its running operations.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use datafusion::datasource::TableProvider;

use super::operation::Operation;
use crate::{DataFrame, Session};

/// The Spark version Ember's endpoint reports: the protocol generation it speaks.
pub const SPARK_VERSION: &str = "4.0.0";

/// A table cached by `spark.catalog.cacheTable`: the cached DataFrame now registered
/// under the name, and the table it replaced (registered again by `uncacheTable`).
pub struct CachedTable {
    /// The cached DataFrame.
    pub cached: DataFrame,
    /// The table the name referred to before.
    pub original: Arc<dyn TableProvider>,
}

/// A client's session on `ember server`.
pub struct ConnectSession {
    /// The client's session id.
    pub id: String,
    /// The id the server gives this incarnation of the session (a client that sees it
    /// change knows its server-side state is gone).
    pub server_side_id: String,
    /// Ember's session handle: this session's catalog over the shared cluster.
    pub ember: Session,
    /// Spark configuration set by the client (`spark.conf.set`).
    pub config: Mutex<BTreeMap<String, String>>,
    /// DataFrames cached by `df.cache()` / `persist()`, by their encoded plan.
    pub cached: Mutex<HashMap<Vec<u8>, DataFrame>>,
    /// Checkpointed DataFrames, by the relation id the client refers to them with.
    pub checkpoints: Mutex<HashMap<String, DataFrame>>,
    /// Tables cached by `spark.catalog.cacheTable`, by lower-cased name.
    pub cached_tables: Mutex<HashMap<String, CachedTable>>,
    /// Operations (ExecutePlan calls) of this session that have not been released.
    pub operations: dashmap::DashMap<String, Arc<Operation>>,
    /// Fitted models `pyspark.ml` refers to by id.
    pub ml: super::ml::MlCache,
}

impl std::fmt::Debug for ConnectSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSession")
            .field("id", &self.id)
            .field("server_side_id", &self.server_side_id)
            .finish_non_exhaustive()
    }
}

/// Values of the configuration keys Spark clients read, as Spark sets them by default.
pub fn default_config() -> BTreeMap<String, String> {
    let tz = std::env::var("TZ")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "UTC".to_string());
    [
        ("spark.app.name", "ember"),
        ("spark.sql.session.timeZone", tz.as_str()),
        ("spark.sql.ansi.enabled", "true"),
        ("spark.sql.timestampType", "TIMESTAMP_LTZ"),
        ("spark.sql.repl.eagerEval.enabled", "false"),
        ("spark.sql.repl.eagerEval.maxNumRows", "20"),
        ("spark.sql.repl.eagerEval.truncate", "20"),
        ("spark.sql.pyspark.inferNestedDictAsStruct.enabled", "false"),
        (
            "spark.sql.pyspark.legacy.inferArrayTypeFromFirstElement.enabled",
            "false",
        ),
        (
            "spark.sql.pyspark.legacy.inferMapTypeFromFirstPair.enabled",
            "false",
        ),
        ("spark.sql.pyspark.jvmStacktrace.enabled", "false"),
        ("spark.sql.connect.serverStacktrace.enabled", "false"),
        (
            "spark.sql.execution.pandas.convertToArrowArraySafely",
            "false",
        ),
        ("spark.sql.execution.pandas.inferPandasDictAsMap", "false"),
        ("spark.sql.execution.pandas.structHandlingMode", "legacy"),
        ("spark.sql.execution.arrow.useLargeVarTypes", "false"),
        ("spark.sql.execution.arrow.pyspark.enabled", "true"),
        (
            "spark.sql.execution.arrow.pyspark.selfDestruct.enabled",
            "false",
        ),
        ("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"),
        ("spark.sql.execution.pyspark.binaryAsBytes", "true"),
        ("spark.sql.execution.pythonUDF.arrow.enabled", "false"),
        ("spark.sql.execution.pythonUDTF.arrow.enabled", "false"),
        // Local relations are sent inline up to this size (Ember keeps no artifacts).
        (
            "spark.sql.session.localRelationCacheThreshold",
            "2147483647",
        ),
        ("spark.sql.session.localRelationChunkSizeRows", "10000"),
        ("spark.sql.session.localRelationChunkSizeBytes", "16777216"),
        ("spark.sql.session.localRelationSizeLimit", "2147483647"),
        (
            "spark.sql.session.localRelationBatchOfChunksSizeBytes",
            "134217728",
        ),
        // Plans arrive uncompressed.
        ("spark.connect.session.planCompression.threshold", "-1"),
        (
            "spark.connect.session.planCompression.defaultAlgorithm",
            "NONE",
        ),
        ("spark.sql.leafNodeDefaultParallelism", "2"),
        ("spark.sql.shuffle.partitions", "2"),
        ("spark.sql.artifact.isolation.enabled", "false"),
        (
            "spark.sql.artifact.isolation.alwaysApplyClassloader",
            "false",
        ),
        ("spark.api.mode", "connect"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl ConnectSession {
    /// A new session `id` over `ember`'s cluster, with a catalog of its own.
    pub fn new(id: String, ember: &Session) -> Self {
        let ember = ember.isolated();
        let mut config = default_config();
        let partitions = ember
            .context()
            .copied_config()
            .target_partitions()
            .to_string();
        config.insert("spark.sql.shuffle.partitions".into(), partitions.clone());
        config.insert("spark.sql.leafNodeDefaultParallelism".into(), partitions);
        Self {
            id,
            server_side_id: uuid::Uuid::new_v4().to_string(),
            ember,
            config: Mutex::new(config),
            cached: Mutex::new(HashMap::new()),
            checkpoints: Mutex::new(HashMap::new()),
            cached_tables: Mutex::new(HashMap::new()),
            operations: dashmap::DashMap::new(),
            ml: super::ml::MlCache::default(),
        }
    }

    /// Drops everything the session holds on the cluster: its cached DataFrames and
    /// tables, and its running operations.
    pub async fn close(&self) {
        for op in self.operations.iter() {
            op.interrupt();
        }
        self.operations.clear();
        let cached: Vec<DataFrame> = {
            let mut map = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            map.drain().map(|(_, df)| df).collect()
        };
        let checkpoints: Vec<DataFrame> = {
            let mut map = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
            map.drain().map(|(_, df)| df).collect()
        };
        let tables: Vec<CachedTable> = {
            let mut map = self.cached_tables.lock().unwrap_or_else(|e| e.into_inner());
            map.drain().map(|(_, t)| t).collect()
        };
        for df in cached
            .into_iter()
            .chain(checkpoints)
            .chain(tables.into_iter().map(|t| t.cached))
        {
            if let Err(e) = df.unpersist().await {
                tracing::warn!(session = %self.id, error = %e, "could not drop a cached DataFrame");
            }
        }
    }
}
