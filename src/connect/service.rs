//! The `SparkConnectService` gRPC service: sessions by id, ExecutePlan as a reattachable
//! stream of Arrow batches, AnalyzePlan, Config, Interrupt, Release and their errors.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::TableReference;
use datafusion::dataframe::DataFrame as DFrame;
use futures::StreamExt;
use prost::Message;
use tonic::{Request, Response, Status};

use super::error::{ConnectError, ConnectResult};
use super::operation::{Operation, ResponseStream};
use super::plan::{is_query, Planner};
use super::progress;
use super::proto::{
    self, execute_plan_response as epr, spark_connect_service_server::SparkConnectService,
};
use super::session::{ConnectSession, SPARK_VERSION};
use super::types::{client_schema, spark_schema, to_client_batch, tree_string};
use crate::Session;

/// Rows per Arrow batch sent to a client (larger result batches are sliced).
const ROWS_PER_RESPONSE: usize = 8192;

/// Ember's Spark Connect endpoint over one cluster.
pub struct ConnectService {
    ember: Session,
    sessions: dashmap::DashMap<String, Arc<ConnectSession>>,
    /// The `global_temp` schema every session shares (`createGlobalTempView`).
    global_temp: Arc<dyn SchemaProvider>,
}

impl std::fmt::Debug for ConnectService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectService")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

fn status(e: ConnectError) -> Status {
    if !matches!(e, ConnectError::Cancelled(_)) {
        tracing::debug!(error = %e, "Spark Connect request failed");
    }
    e.to_status()
}

fn handle_error(class: &'static str, message: String) -> Status {
    status(ConnectError::analysis(class, message))
}

impl ConnectService {
    /// A service whose sessions run on `ember`'s cluster (and see its tables).
    pub fn new(ember: Session) -> Self {
        let global_temp: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
        register_global_temp(&ember, &global_temp);
        Self {
            ember,
            sessions: dashmap::DashMap::new(),
            global_temp,
        }
    }

    /// Sessions open now.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Closes every session (their operations stop and their cached blocks go).
    pub async fn close_all(&self) {
        let ids: Vec<String> = self.sessions.iter().map(|s| s.key().clone()).collect();
        for id in ids {
            if let Some((_, session)) = self.sessions.remove(&id) {
                session.close().await;
            }
        }
    }

    /// The session `id`, created on first use; a client that observed another incarnation
    /// of it is told its server-side state is gone.
    async fn session(
        &self,
        id: &str,
        observed: Option<&str>,
    ) -> Result<Arc<ConnectSession>, Status> {
        if id.is_empty() {
            return Err(handle_error(
                "INVALID_HANDLE.FORMAT",
                "the request has no session id".into(),
            ));
        }
        let session = match self.sessions.get(id) {
            Some(s) => Arc::clone(&s),
            None => {
                let created = Arc::new(ConnectSession::new(id.to_string(), &self.ember));
                share_tables(&self.ember, &created.ember).await;
                register_global_temp(&created.ember, &self.global_temp);
                Arc::clone(&self.sessions.entry(id.to_string()).or_insert(created))
            }
        };
        if let Some(observed) = observed.filter(|o| !o.is_empty()) {
            if observed != session.server_side_id {
                return Err(handle_error(
                    "INVALID_HANDLE.SESSION_CHANGED",
                    format!("The handle {id} is invalid: the existing session changed unexpectedly (the server restarted or released it)."),
                ));
            }
        }
        Ok(session)
    }

    /// The session a request names (see [`ConnectService::session`]).
    async fn session_of(&self, req: &impl SessionRequest) -> Result<Arc<ConnectSession>, Status> {
        let (id, observed) = req.ids();
        self.session(id, observed).await
    }

    fn existing_session(&self, id: &str) -> Result<Arc<ConnectSession>, Status> {
        self.sessions
            .get(id)
            .map(|s| Arc::clone(&s))
            .ok_or_else(|| {
                handle_error(
                    "INVALID_HANDLE.SESSION_NOT_FOUND",
                    format!("The handle {id} is invalid: session not found."),
                )
            })
    }
}

/// A request that names its session and the server-side session id the client last saw.
trait SessionRequest {
    fn ids(&self) -> (&str, Option<&str>);
}

macro_rules! session_requests {
    ($($request:ty),*) => {
        $(impl SessionRequest for $request {
            fn ids(&self) -> (&str, Option<&str>) {
                (&self.session_id, self.client_observed_server_side_session_id.as_deref())
            }
        })*
    };
}

session_requests!(
    proto::ExecutePlanRequest,
    proto::AnalyzePlanRequest,
    proto::ConfigRequest,
    proto::InterruptRequest
);

/// The schema global temporary views live in, shared by every session of a server, as
/// Spark names it (`SELECT * FROM global_temp.v`).
pub const GLOBAL_TEMP: &str = "global_temp";

/// Makes `schema` the `global_temp` schema of `session`'s default catalog.
fn register_global_temp(session: &Session, schema: &Arc<dyn SchemaProvider>) {
    let ctx = session.context();
    let catalog = ctx
        .copied_config()
        .options()
        .catalog
        .default_catalog
        .clone();
    if let Some(catalog) = ctx.catalog(&catalog) {
        if let Err(e) = catalog.register_schema(GLOBAL_TEMP, Arc::clone(schema)) {
            tracing::warn!(error = %e, "could not register the global_temp schema");
        }
    }
}

/// Registers the tables of the server's own session (`ember server --table`) in a new
/// client session, so every client sees them.
async fn share_tables(from: &Session, to: &Session) {
    let ctx = from.context();
    let state = ctx.state();
    let options = state.config().options();
    let Some(schema) = ctx
        .catalog(&options.catalog.default_catalog)
        .and_then(|c| c.schema(&options.catalog.default_schema))
    else {
        return;
    };
    for name in schema.table_names() {
        if let Ok(Some(table)) = schema.table(&name).await {
            let _ = to.context().register_table(name.as_str(), table);
        }
    }
}

/// Builds the responses of one operation.
#[derive(Clone)]
struct Responder {
    session: Arc<ConnectSession>,
    op: Arc<Operation>,
}

impl Responder {
    fn response(&self, kind: epr::ResponseType) -> proto::ExecutePlanResponse {
        proto::ExecutePlanResponse {
            session_id: self.session.id.clone(),
            server_side_session_id: self.session.server_side_id.clone(),
            operation_id: self.op.id.clone(),
            response_id: uuid::Uuid::new_v4().to_string(),
            response_type: Some(kind),
            schema: None,
        }
    }

    /// Hands `response` to the client; an error once the operation is over (interrupted,
    /// or given up by its client), which stops the producer.
    async fn send(&self, response: proto::ExecutePlanResponse) -> ConnectResult<()> {
        if self.op.push(response).await {
            Ok(())
        } else {
            Err(ConnectError::Cancelled(self.op.id.clone()))
        }
    }

    /// Sends `df`'s rows as Arrow batches, the schema first.
    async fn send_rows(&self, df: DFrame) -> ConnectResult<()> {
        let schema = client_schema(df.schema().as_arrow());
        let df = crate::DataFrame::new(self.session.ember.clone(), df);
        let mut stream = df.execute_stream().await?;
        let mut sent_schema = false;
        let mut offset = 0i64;
        let mut any = false;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            let batch = to_client_batch(&batch, &schema)?;
            let mut start = 0;
            while start < batch.num_rows() {
                let len = ROWS_PER_RESPONSE.min(batch.num_rows() - start);
                self.send_batch(&batch.slice(start, len), &mut sent_schema, &mut offset)
                    .await?;
                start += len;
            }
            any = true;
        }
        if !any {
            self.send_batch(
                &RecordBatch::new_empty(schema),
                &mut sent_schema,
                &mut offset,
            )
            .await?;
        }
        Ok(())
    }

    async fn send_batch(
        &self,
        batch: &RecordBatch,
        sent_schema: &mut bool,
        offset: &mut i64,
    ) -> ConnectResult<()> {
        let data = ipc_stream(std::slice::from_ref(batch))?;
        let mut response = self.response(epr::ResponseType::ArrowBatch(epr::ArrowBatch {
            row_count: batch.num_rows() as i64,
            data: data.into(),
            start_offset: Some(*offset),
        }));
        if !*sent_schema {
            response.schema = Some(spark_schema(batch.schema().as_ref()));
            *sent_schema = true;
        }
        *offset += batch.num_rows() as i64;
        self.send(response).await
    }

    /// Reports the stages of this operation's jobs while it runs.
    fn progress_reporter(&self) -> progress::Reporter {
        let interval = progress::interval(
            self.session
                .config
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(progress::INTERVAL_KEY)
                .map(String::as_str),
        );
        let responder = self.clone();
        progress::Reporter::start(
            self.session.ember.driver().subscribe(),
            progress::operation_tag(&self.op.id),
            interval,
            move |report| {
                let responder = responder.clone();
                async move {
                    let response = responder.response(epr::ResponseType::ExecutionProgress(report));
                    responder.send(response).await.is_ok()
                }
            },
        )
    }

    /// Runs the operation's plan, its jobs tagged with the operation's tag and the
    /// client's tags.
    async fn run_tagged(&self, plan: proto::Plan) -> ConnectResult<()> {
        let mut tags = vec![progress::operation_tag(&self.op.id)];
        tags.extend(self.op.tags.iter().cloned());
        ember_driver::with_job_tags(tags, self.run(plan)).await
    }

    async fn run(&self, plan: proto::Plan) -> ConnectResult<()> {
        use proto::command::CommandType;
        use proto::plan::OpType;
        let reporter = self.progress_reporter();
        match plan.op_type {
            Some(OpType::Root(rel)) => {
                let df = Planner::new(&self.session).relation(&rel).await?;
                self.send_rows(df).await?;
            }
            Some(OpType::Command(cmd)) => match cmd.command_type {
                Some(CommandType::SqlCommand(c)) => self.sql_command(c).await?,
                Some(CommandType::WriteOperation(w)) => self.write(w).await?,
                Some(CommandType::CreateDataframeView(v)) => self.create_view(v).await?,
                Some(CommandType::CheckpointCommand(c)) => self.checkpoint(c).await?,
                Some(CommandType::MlCommand(c)) => {
                    let result = super::ml::command(&self.session, c).await?;
                    self.send(self.response(epr::ResponseType::MlCommandResult(result)))
                        .await?;
                }
                Some(CommandType::RemoveCachedRemoteRelationCommand(r)) => {
                    let id = r.relation.map(|r| r.relation_id).unwrap_or_default();
                    let removed = self
                        .session
                        .checkpoints
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    if let Some(df) = removed {
                        let _ = df.unpersist().await?;
                    }
                }
                Some(other) => {
                    return Err(ConnectError::unimplemented(format!(
                        "command {}",
                        command_name(&other)
                    )))
                }
                None => return Err(ConnectError::invalid("a command without a type")),
            },
            Some(OpType::CompressedOperation(_)) => {
                return Err(ConnectError::unimplemented("compressed plans"))
            }
            None => {
                return Err(ConnectError::invalid(
                    "an ExecutePlan request without a plan",
                ))
            }
        }
        // The stages as they ended, so that the client's progress handlers see them done.
        let seen = reporter.finish().await;
        if !seen.is_empty() {
            self.send(self.response(epr::ResponseType::ExecutionProgress(seen.report())))
                .await?;
        }
        self.send(self.response(epr::ResponseType::ResultComplete(epr::ResultComplete {})))
            .await
    }

    /// `spark.sql(text)`: a query comes back as a relation to run later; a command (DDL,
    /// SET, EXPLAIN, COPY) runs now and its result comes back as a local relation.
    async fn sql_command(&self, c: proto::SqlCommand) -> ConnectResult<()> {
        // Newer clients send the statement as a SQL relation in `input`.
        let sql = match c.input.map(|i| i.rel_type) {
            Some(Some(proto::relation::RelType::Sql(sql))) => sql,
            Some(_) => {
                return Err(ConnectError::invalid(
                    "a SQL command whose input is not SQL",
                ))
            }
            None => proto::Sql {
                query: c.sql,
                args: c.args,
                pos_args: c.pos_args,
                named_arguments: c.named_arguments,
                pos_arguments: c.pos_arguments,
            },
        };
        let state = self.session.ember.context().state();
        let (args, pos_args) = super::plan::literal_arguments(&sql)?;
        let (text, _) = super::plan::sql_parameters(&sql.query, &args, &pos_args)?;
        let plan = state.create_logical_plan(&text).await?;
        let relation = if is_query(&plan) {
            proto::Relation {
                common: None,
                rel_type: Some(proto::relation::RelType::Sql(sql)),
            }
        } else {
            let df = self.session.ember.sql(&text).await?;
            let batches = df.collect().await?;
            let schema = client_schema(df.schema().as_ref());
            let batches = batches
                .iter()
                .map(|b| to_client_batch(b, &schema))
                .collect::<ConnectResult<Vec<_>>>()?;
            let data = if batches.is_empty() {
                ipc_stream(&[RecordBatch::new_empty(schema)])?
            } else {
                ipc_stream(&batches)?
            };
            proto::Relation {
                common: None,
                rel_type: Some(proto::relation::RelType::LocalRelation(
                    proto::LocalRelation {
                        data: Some(data),
                        schema: None,
                    },
                )),
            }
        };
        self.send(
            self.response(epr::ResponseType::SqlCommandResult(epr::SqlCommandResult {
                relation: Some(relation),
            })),
        )
        .await
    }

    /// `df.checkpoint()` / `localCheckpoint()`: the DataFrame cached on the executors
    /// (computed now when `eager`), named by a relation id the client refers to it by.
    /// Lost partitions are recomputed from lineage: Ember keeps no checkpoint files.
    async fn checkpoint(&self, c: proto::CheckpointCommand) -> ConnectResult<()> {
        let rel = c
            .relation
            .ok_or_else(|| ConnectError::invalid("a checkpoint without a relation"))?;
        let df = Planner::new(&self.session).relation(&rel).await?;
        let cached = crate::DataFrame::new(self.session.ember.clone(), df)
            .cache()
            .await?;
        if c.eager {
            cached.count().await?;
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.session
            .checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), cached);
        self.send(self.response(epr::ResponseType::CheckpointCommandResult(
            proto::CheckpointCommandResult {
                relation: Some(proto::CachedRemoteRelation { relation_id: id }),
            },
        )))
        .await
    }

    /// `createTempView` and friends: a view of this session, or with `is_global` one in
    /// the `global_temp` schema every session of the server sees.
    async fn create_view(&self, v: proto::CreateDataFrameViewCommand) -> ConnectResult<()> {
        let input = v
            .input
            .ok_or_else(|| ConnectError::invalid("a view without a relation"))?;
        let df = Planner::new(&self.session).relation(&input).await?;
        let ctx = self.session.ember.context();
        let (name, shown) = if v.is_global {
            (
                TableReference::partial(GLOBAL_TEMP, v.name.as_str()),
                format!("{GLOBAL_TEMP}.{}", v.name),
            )
        } else {
            (TableReference::bare(v.name.as_str()), v.name.clone())
        };
        if ctx.table_exist(name.clone()).unwrap_or(false) {
            if !v.replace {
                return Err(ConnectError::analysis(
                    "TEMP_TABLE_OR_VIEW_ALREADY_EXISTS",
                    format!(
                        "Cannot create the temporary view `{shown}` because it already exists."
                    ),
                ));
            }
            Planner::new(&self.session).uncache_table(&shown).await?;
            ctx.deregister_table(name.clone())?;
        }
        ctx.register_table(name, df.into_view())?;
        Ok(())
    }

    /// `df.write...save(path)`: Parquet without partition columns is written by the
    /// executors (one file per partition); other formats and `partitionBy` are written by
    /// the server from the collected rows.
    async fn write(&self, w: proto::WriteOperation) -> ConnectResult<()> {
        use proto::write_operation::{SaveMode, SaveType};
        let input = w
            .input
            .as_ref()
            .ok_or_else(|| ConnectError::invalid("a write without a relation"))?;
        let path = match &w.save_type {
            Some(SaveType::Path(p)) => p.strip_prefix("file:").unwrap_or(p).to_string(),
            Some(SaveType::Table(_)) => {
                return Err(ConnectError::unimplemented("saveAsTable / insertInto"))
            }
            None => match w.options.get("path") {
                Some(p) => p.clone(),
                None => return Err(ConnectError::invalid("a write without a path")),
            },
        };
        if w.bucket_by.is_some() || !w.sort_column_names.is_empty() {
            return Err(ConnectError::unimplemented("bucketBy / sortBy"));
        }
        let format = w
            .source
            .clone()
            .unwrap_or_else(|| "parquet".into())
            .to_ascii_lowercase();
        let dir = std::path::PathBuf::from(&path);
        let exists = dir.exists()
            && (dir.is_file()
                || std::fs::read_dir(&dir)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true));
        match w.mode() {
            SaveMode::Unspecified | SaveMode::ErrorIfExists if exists => {
                return Err(ConnectError::analysis("PATH_ALREADY_EXISTS", format!("Path file:{path} already exists. Set mode as \"overwrite\" to overwrite the existing path.")));
            }
            SaveMode::Ignore if exists => return Ok(()),
            _ => {}
        }
        let df = Planner::new(&self.session).relation(input).await?;
        let ember_df = crate::DataFrame::new(self.session.ember.clone(), df);
        // Overwrite: the new output is complete before the old one is removed.
        let staging = super::staging_path(&dir);
        let written = if format == "parquet" && w.partitioning_columns.is_empty() {
            ember_df
                .write_parquet(&staging)
                .await
                .map(|_| ())
                .map_err(ConnectError::from)
        } else {
            self.write_local(ember_df, &staging, &format, &w).await
        };
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        // Renames and removals of a whole output tree: off the async workers.
        let overwrite = w.mode() == SaveMode::Overwrite;
        let target = dir.clone();
        let moved = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = target;
            if overwrite && dir.exists() {
                if dir.is_dir() {
                    std::fs::remove_dir_all(&dir)?;
                } else {
                    std::fs::remove_file(&dir)?;
                }
            }
            if !dir.exists() {
                return std::fs::rename(&staging, &dir);
            }
            // Append: the new files join the old ones under names of their own.
            let tag = uuid::Uuid::new_v4().simple().to_string();
            move_tree(&staging, &dir, &tag[..8])?;
            std::fs::remove_dir_all(&staging)
        })
        .await
        .map_err(|e| ConnectError::internal(format!("moving the written files: {e}")))?;
        moved.map_err(|e| ConnectError::from(ember_engine::EngineError::io(&dir, e)))
    }

    async fn write_local(
        &self,
        df: crate::DataFrame,
        dir: &std::path::Path,
        format: &str,
        w: &proto::WriteOperation,
    ) -> ConnectResult<()> {
        use datafusion::dataframe::DataFrameWriteOptions;
        let schema = df.schema();
        let batches = df.collect().await?;
        let ctx = self.session.ember.context();
        let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
        let local = ctx.read_table(Arc::new(table))?;
        let options =
            DataFrameWriteOptions::new().with_partition_by(w.partitioning_columns.clone());
        std::fs::create_dir_all(dir).map_err(|e| ember_engine::EngineError::io(dir, e))?;
        let target = format!("{}/", dir.display());
        match format {
            "csv" => {
                let header = w
                    .options
                    .get("header")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                let mut csv =
                    datafusion::common::config::CsvOptions::default().with_has_header(header);
                if let Some(sep) = w.options.get("sep").or_else(|| w.options.get("delimiter")) {
                    csv = csv.with_delimiter(*sep.as_bytes().first().unwrap_or(&b','));
                }
                local.write_csv(&target, options, Some(csv)).await?;
            }
            "json" => {
                local.write_json(&target, options, None).await?;
            }
            "parquet" => {
                local.write_parquet(&target, options, None).await?;
            }
            "text" => {
                if !w.partitioning_columns.is_empty() {
                    return Err(ConnectError::unimplemented("partitionBy of a text write"));
                }
                let batches = local.collect().await?;
                let dir = dir.to_path_buf();
                tokio::task::spawn_blocking(move || write_text(&dir, &batches))
                    .await
                    .map_err(|e| ConnectError::internal(format!("writing text: {e}")))??;
            }
            other => {
                return Err(ConnectError::unimplemented(format!(
                    "data source format {other}"
                )))
            }
        }
        Ok(())
    }
}

/// `df.write.text(path)`: one file of lines, from the one string column.
fn write_text(dir: &std::path::Path, batches: &[RecordBatch]) -> ConnectResult<()> {
    use arrow::array::{Array, AsArray};
    use std::io::Write;
    let file = dir.join("part-00000.txt");
    let io = |e: std::io::Error| ConnectError::from(ember_engine::EngineError::io(&file, e));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).map_err(io)?);
    for b in batches {
        if b.num_columns() != 1 {
            return Err(ConnectError::analysis(
                "UNSUPPORTED_DATA_TYPE",
                format!(
                    "Text data source supports only a single column, and you have {} columns.",
                    b.num_columns()
                ),
            ));
        }
        let column = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
            .map_err(|e| ConnectError::invalid(format!("text data source: {e}")))?;
        let lines = column.as_string::<i32>();
        for i in 0..lines.len() {
            if lines.is_valid(i) {
                out.write_all(lines.value(i).as_bytes()).map_err(io)?;
            }
            out.write_all(b"\n").map_err(io)?;
        }
    }
    out.flush().map_err(io)
}

/// Moves the files under `from` into `to`, prefixing file names with `tag`.
fn move_tree(from: &std::path::Path, to: &std::path::Path, tag: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            move_tree(&entry.path(), &target, tag)?;
        } else {
            let name = format!("{tag}-{}", entry.file_name().to_string_lossy());
            std::fs::rename(entry.path(), to.join(name))?;
        }
    }
    Ok(())
}

/// Batches as one Arrow IPC stream.
fn ipc_stream(batches: &[RecordBatch]) -> ConnectResult<Vec<u8>> {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| ConnectError::internal("no batch to encode"))?;
    let encode = || -> Result<Vec<u8>, arrow::error::ArrowError> {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema)?;
        for b in batches {
            writer.write(b)?;
        }
        writer.finish()?;
        writer.into_inner()
    };
    encode().map_err(|e| ConnectError::internal(format!("encoding Arrow IPC: {e}")))
}

fn command_name(c: &proto::command::CommandType) -> &'static str {
    use proto::command::CommandType as C;
    match c {
        C::RegisterFunction(_) => "RegisterFunction (Python UDFs)",
        C::WriteOperationV2(_) => "WriteOperationV2 (writeTo)",
        C::WriteStreamOperationStart(_) => "WriteStreamOperationStart (streaming)",
        C::StreamingQueryCommand(_)
        | C::StreamingQueryManagerCommand(_)
        | C::StreamingQueryListenerBusCommand(_) => "streaming queries",
        C::GetResourcesCommand(_) => "GetResourcesCommand",
        C::RegisterTableFunction(_) => "RegisterTableFunction (Python UDTFs)",
        C::RegisterDataSource(_) => "RegisterDataSource (Python data sources)",
        C::CreateResourceProfileCommand(_) => "CreateResourceProfileCommand",
        C::MergeIntoTableCommand(_) => "MergeIntoTableCommand",
        C::MlCommand(_) => "MlCommand (pyspark.ml)",
        C::ExecuteExternalCommand(_) => "ExecuteExternalCommand",
        C::PipelineCommand(_) => "PipelineCommand",
        C::Extension(_) => "command extension",
        C::WriteOperation(_) => "WriteOperation",
        C::CreateDataframeView(_) => "CreateDataFrameViewCommand",
        C::SqlCommand(_) => "SqlCommand",
        C::CheckpointCommand(_) => "CheckpointCommand",
        C::RemoveCachedRemoteRelationCommand(_) => "RemoveCachedRemoteRelationCommand",
    }
}

fn plan_relation(plan: Option<proto::Plan>) -> ConnectResult<proto::Relation> {
    match plan.and_then(|p| p.op_type) {
        Some(proto::plan::OpType::Root(rel)) => Ok(rel),
        Some(_) => Err(ConnectError::unimplemented("analyzing a command")),
        None => Err(ConnectError::invalid(
            "an AnalyzePlan request without a plan",
        )),
    }
}

#[tonic::async_trait]
impl SparkConnectService for ConnectService {
    type ExecutePlanStream = ResponseStream;
    type ReattachExecuteStream = ResponseStream;

    async fn execute_plan(
        &self,
        request: Request<proto::ExecutePlanRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        let req = request.into_inner();
        let session = self.session_of(&req).await?;
        let op_id = req
            .operation_id
            .clone()
            .filter(|o| !o.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if session.operations.contains_key(&op_id) {
            return Err(handle_error(
                "INVALID_HANDLE.OPERATION_ALREADY_EXISTS",
                format!("The handle {op_id} is invalid: operation already exists."),
            ));
        }
        let reattachable = req.request_options.iter().any(|o| {
            matches!(&o.request_option, Some(proto::execute_plan_request::request_option::RequestOption::ReattachOptions(r)) if r.reattachable)
        });
        let op = Operation::new(op_id.clone(), req.tags.clone(), reattachable);
        session.operations.insert(op_id.clone(), Arc::clone(&op));
        let plan = req.plan.unwrap_or_default();
        let responder = Responder {
            session: Arc::clone(&session),
            op: Arc::clone(&op),
        };
        let task = tokio::spawn(async move {
            let result = responder.run_tagged(plan).await.map_err(status);
            responder.op.finish(result);
            if !responder.op.reattachable {
                responder.session.operations.remove(&responder.op.id);
            }
        });
        op.set_task(task.abort_handle());
        Ok(Response::new(op.stream_from(0)))
    }

    async fn analyze_plan(
        &self,
        request: Request<proto::AnalyzePlanRequest>,
    ) -> Result<Response<proto::AnalyzePlanResponse>, Status> {
        use proto::analyze_plan_request::Analyze;
        use proto::analyze_plan_response as out;
        let req = request.into_inner();
        let session = self.session_of(&req).await?;
        let analyze = req.analyze.ok_or_else(|| {
            status(ConnectError::invalid(
                "an AnalyzePlan request without a question",
            ))
        })?;
        let result: ConnectResult<out::Result> = async {
            Ok(match analyze {
                Analyze::Schema(s) => {
                    let df = Planner::new(&session)
                        .relation(&plan_relation(s.plan)?)
                        .await?;
                    out::Result::Schema(out::Schema {
                        schema: Some(spark_schema(df.schema().as_arrow())),
                    })
                }
                Analyze::Explain(e) => {
                    let df = Planner::new(&session)
                        .relation(&plan_relation(e.plan)?)
                        .await?;
                    let text = crate::DataFrame::new(session.ember.clone(), df)
                        .explain()
                        .await?;
                    out::Result::Explain(out::Explain {
                        explain_string: text,
                    })
                }
                Analyze::TreeString(t) => {
                    let df = Planner::new(&session)
                        .relation(&plan_relation(t.plan)?)
                        .await?;
                    out::Result::TreeString(out::TreeString {
                        tree_string: tree_string(df.schema().as_arrow(), t.level),
                    })
                }
                Analyze::IsLocal(l) => {
                    let rel = plan_relation(l.plan)?;
                    let local = matches!(
                        rel.rel_type,
                        Some(proto::relation::RelType::LocalRelation(_))
                    );
                    out::Result::IsLocal(out::IsLocal { is_local: local })
                }
                Analyze::IsStreaming(_) => out::Result::IsStreaming(out::IsStreaming {
                    is_streaming: false,
                }),
                Analyze::InputFiles(i) => {
                    let df = Planner::new(&session)
                        .relation(&plan_relation(i.plan)?)
                        .await?;
                    out::Result::InputFiles(out::InputFiles {
                        files: input_files(df).await?,
                    })
                }
                Analyze::SparkVersion(_) => out::Result::SparkVersion(out::SparkVersion {
                    version: SPARK_VERSION.into(),
                }),
                Analyze::DdlParse(d) => {
                    let schema = super::types::parse_schema(&d.ddl_string)?;
                    out::Result::DdlParse(out::DdlParse {
                        parsed: Some(spark_schema(&schema)),
                    })
                }
                Analyze::SameSemantics(s) => {
                    let a = Planner::new(&session)
                        .relation(&plan_relation(s.target_plan)?)
                        .await?;
                    let b = Planner::new(&session)
                        .relation(&plan_relation(s.other_plan)?)
                        .await?;
                    let same = a.logical_plan().display_indent().to_string()
                        == b.logical_plan().display_indent().to_string();
                    out::Result::SameSemantics(out::SameSemantics { result: same })
                }
                Analyze::SemanticHash(s) => {
                    let df = Planner::new(&session)
                        .relation(&plan_relation(s.plan)?)
                        .await?;
                    let text = df.logical_plan().display_indent().to_string();
                    let hash = text
                        .bytes()
                        .fold(0i32, |h, b| h.wrapping_mul(31).wrapping_add(i32::from(b)));
                    out::Result::SemanticHash(out::SemanticHash { result: hash })
                }
                Analyze::Persist(p) => {
                    let rel = p
                        .relation
                        .ok_or_else(|| ConnectError::invalid("persist without a relation"))?;
                    persist(&session, &rel).await?;
                    out::Result::Persist(out::Persist {})
                }
                Analyze::Unpersist(u) => {
                    let rel = u
                        .relation
                        .ok_or_else(|| ConnectError::invalid("unpersist without a relation"))?;
                    let cached = session
                        .cached
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&rel.encode_to_vec());
                    if let Some(df) = cached {
                        let _ = df.unpersist().await?;
                    }
                    out::Result::Unpersist(out::Unpersist {})
                }
                Analyze::GetStorageLevel(g) => {
                    let rel = g.relation.ok_or_else(|| {
                        ConnectError::invalid("getStorageLevel without a relation")
                    })?;
                    let cached = session
                        .cached
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains_key(&rel.encode_to_vec());
                    out::Result::GetStorageLevel(out::GetStorageLevel {
                        storage_level: Some(proto::StorageLevel {
                            use_disk: cached,
                            use_memory: cached,
                            use_off_heap: false,
                            deserialized: cached,
                            replication: 1,
                        }),
                    })
                }
                Analyze::JsonToDdl(_) => return Err(ConnectError::unimplemented("JsonToDDL")),
            })
        }
        .await;
        Ok(Response::new(proto::AnalyzePlanResponse {
            session_id: session.id.clone(),
            server_side_session_id: session.server_side_id.clone(),
            result: Some(result.map_err(status)?),
        }))
    }

    async fn config(
        &self,
        request: Request<proto::ConfigRequest>,
    ) -> Result<Response<proto::ConfigResponse>, Status> {
        use proto::config_request::operation::OpType;
        let req = request.into_inner();
        let session = self.session_of(&req).await?;
        let op = req.operation.and_then(|o| o.op_type).ok_or_else(|| {
            status(ConnectError::invalid(
                "a Config request without an operation",
            ))
        })?;
        let mut pairs = Vec::new();
        let mut warnings = Vec::new();
        {
            let kv = |k: &str, v: Option<String>| proto::KeyValue {
                key: k.to_string(),
                value: v,
            };
            match op {
                OpType::Set(set) => {
                    for p in set.pairs {
                        let value = p.value.unwrap_or_default();
                        if p.key.starts_with("datafusion.") {
                            let ctx = session.ember.context();
                            let state = ctx.state_ref();
                            let mut state = state.write();
                            state
                                .config_mut()
                                .options_mut()
                                .set(&p.key, &value)
                                .map_err(|e| status(ConnectError::from(e)))?;
                        } else if !p.key.starts_with("spark.") {
                            warnings.push(format!(
                                "{} is not a Spark or DataFusion key; kept as is",
                                p.key
                            ));
                        }
                        session
                            .config
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(p.key, value);
                    }
                }
                OpType::Get(get) => {
                    let config = session.config.lock().unwrap_or_else(|e| e.into_inner());
                    for k in get.keys {
                        let v = config
                            .get(&k)
                            .cloned()
                            .ok_or_else(|| status(ConnectError::ConfNotFound(k.clone())))?;
                        pairs.push(kv(&k, Some(v)));
                    }
                }
                OpType::GetWithDefault(get) => {
                    let config = session.config.lock().unwrap_or_else(|e| e.into_inner());
                    for p in get.pairs {
                        let v = config.get(&p.key).cloned().or(p.value);
                        pairs.push(kv(&p.key, v));
                    }
                }
                OpType::GetOption(get) => {
                    let config = session.config.lock().unwrap_or_else(|e| e.into_inner());
                    for k in get.keys {
                        pairs.push(kv(&k, config.get(&k).cloned()));
                    }
                }
                OpType::GetAll(all) => {
                    let config = session.config.lock().unwrap_or_else(|e| e.into_inner());
                    let prefix = all.prefix.unwrap_or_default();
                    for (k, v) in config.iter().filter(|(k, _)| k.starts_with(&prefix)) {
                        pairs.push(kv(k, Some(v.clone())));
                    }
                }
                OpType::Unset(unset) => {
                    let defaults = super::session::default_config();
                    let mut config = session.config.lock().unwrap_or_else(|e| e.into_inner());
                    for k in unset.keys {
                        match defaults.get(&k) {
                            Some(d) => config.insert(k, d.clone()),
                            None => config.remove(&k),
                        };
                    }
                }
                OpType::IsModifiable(m) => {
                    for k in m.keys {
                        pairs.push(kv(&k, Some("true".into())));
                    }
                }
            }
        }
        Ok(Response::new(proto::ConfigResponse {
            session_id: session.id.clone(),
            server_side_session_id: session.server_side_id.clone(),
            pairs,
            warnings,
        }))
    }

    async fn add_artifacts(
        &self,
        _request: Request<tonic::Streaming<proto::AddArtifactsRequest>>,
    ) -> Result<Response<proto::AddArtifactsResponse>, Status> {
        Err(status(ConnectError::unimplemented(
            "AddArtifacts (Python files, jars and cached local relations)",
        )))
    }

    async fn artifact_status(
        &self,
        _request: Request<proto::ArtifactStatusesRequest>,
    ) -> Result<Response<proto::ArtifactStatusesResponse>, Status> {
        Err(status(ConnectError::unimplemented("ArtifactStatus")))
    }

    async fn interrupt(
        &self,
        request: Request<proto::InterruptRequest>,
    ) -> Result<Response<proto::InterruptResponse>, Status> {
        use proto::interrupt_request::{Interrupt, InterruptType};
        let req = request.into_inner();
        let session = self.session_of(&req).await?;
        let kind = req.interrupt_type();
        let selected: Vec<Arc<Operation>> = session
            .operations
            .iter()
            .filter(|op| match (kind, &req.interrupt) {
                (InterruptType::All, _) => true,
                (InterruptType::Tag, Some(Interrupt::OperationTag(tag))) => op.tags.contains(tag),
                (InterruptType::OperationId, Some(Interrupt::OperationId(id))) => &op.id == id,
                _ => false,
            })
            .map(|op| Arc::clone(&op))
            .collect();
        let mut interrupted_ids = Vec::new();
        for op in selected {
            if op.interrupt() {
                interrupted_ids.push(op.id.clone());
            }
        }
        Ok(Response::new(proto::InterruptResponse {
            session_id: session.id.clone(),
            server_side_session_id: session.server_side_id.clone(),
            interrupted_ids,
        }))
    }

    async fn reattach_execute(
        &self,
        request: Request<proto::ReattachExecuteRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        let req = request.into_inner();
        let session = self.existing_session(&req.session_id)?;
        let op = session
            .operations
            .get(&req.operation_id)
            .map(|o| Arc::clone(&o))
            .ok_or_else(|| {
                handle_error(
                    "INVALID_HANDLE.OPERATION_NOT_FOUND",
                    format!(
                        "The handle {} is invalid: operation not found.",
                        req.operation_id
                    ),
                )
            })?;
        let from = op.position_after(req.last_response_id.as_deref()).ok_or_else(|| {
            handle_error("INVALID_CURSOR.POSITION_NOT_AVAILABLE", format!("The cursor position of operation {} after response {:?} is no longer available.", op.id, req.last_response_id))
        })?;
        Ok(Response::new(op.stream_from(from)))
    }

    async fn release_execute(
        &self,
        request: Request<proto::ReleaseExecuteRequest>,
    ) -> Result<Response<proto::ReleaseExecuteResponse>, Status> {
        use proto::release_execute_request::Release;
        let req = request.into_inner();
        let session = self.existing_session(&req.session_id)?;
        match &req.release {
            Some(Release::ReleaseUntil(until)) => {
                if let Some(op) = session.operations.get(&req.operation_id) {
                    op.release_until(&until.response_id);
                }
            }
            Some(Release::ReleaseAll(_)) | None => {
                if let Some((_, op)) = session.operations.remove(&req.operation_id) {
                    op.interrupt();
                }
            }
        }
        Ok(Response::new(proto::ReleaseExecuteResponse {
            session_id: session.id.clone(),
            server_side_session_id: session.server_side_id.clone(),
            operation_id: Some(req.operation_id),
        }))
    }

    async fn release_session(
        &self,
        request: Request<proto::ReleaseSessionRequest>,
    ) -> Result<Response<proto::ReleaseSessionResponse>, Status> {
        let req = request.into_inner();
        let server_side_session_id = match self.sessions.remove(&req.session_id) {
            Some((_, session)) => {
                session.close().await;
                session.server_side_id.clone()
            }
            None => String::new(),
        };
        Ok(Response::new(proto::ReleaseSessionResponse {
            session_id: req.session_id,
            server_side_session_id,
        }))
    }

    async fn fetch_error_details(
        &self,
        request: Request<proto::FetchErrorDetailsRequest>,
    ) -> Result<Response<proto::FetchErrorDetailsResponse>, Status> {
        // Errors carry their details in the status itself; there is nothing more to fetch.
        let req = request.into_inner();
        Ok(Response::new(proto::FetchErrorDetailsResponse {
            server_side_session_id: String::new(),
            session_id: req.session_id,
        }))
    }

    async fn clone_session(
        &self,
        _request: Request<proto::CloneSessionRequest>,
    ) -> Result<Response<proto::CloneSessionResponse>, Status> {
        Err(status(ConnectError::unimplemented("CloneSession")))
    }

    async fn get_status(
        &self,
        _request: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::GetStatusResponse>, Status> {
        Err(status(ConnectError::unimplemented("GetStatus")))
    }
}

/// `df.cache()` / `persist()`: the DataFrame's partitions kept on the executors once
/// computed, and every later plan containing this relation reading them.
async fn persist(session: &ConnectSession, rel: &proto::Relation) -> ConnectResult<()> {
    let key = rel.encode_to_vec();
    if session
        .cached
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&key)
    {
        return Ok(());
    }
    let df = Planner::new(session).relation(rel).await?;
    let cached = crate::DataFrame::new(session.ember.clone(), df)
        .cache()
        .await?;
    session
        .cached
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, cached);
    Ok(())
}

/// The files a DataFrame reads (`df.inputFiles()`).
async fn input_files(df: DFrame) -> ConnectResult<Vec<String>> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    let plan = df.create_physical_plan().await?;
    let mut files = Vec::new();
    plan.apply(|node| {
        if let Some(source) = node.downcast_ref::<DataSourceExec>() {
            if let Some(config) = source.data_source().downcast_ref::<FileScanConfig>() {
                for group in &config.file_groups {
                    for f in group.files() {
                        files.push(format!("file:///{}", f.object_meta.location));
                    }
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    files.sort();
    files.dedup();
    Ok(files)
}
