//! The web UI, its REST API (in the shape of Spark's monitoring API) and `/metrics`, served
//! by a running driver (live) or by `ember history` from event logs (finished
//! applications). Both read the same [`AppSnapshot`]s, so a replayed log shows what the live
//! UI showed.

mod api;
mod chart;
mod dag;
mod history;
mod metrics;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ember_driver::{AppSnapshot, Driver};

pub use history::HistoryArgs;

/// Port the UI listens on unless told otherwise (Spark's).
pub const DEFAULT_UI_PORT: u16 = 4040;

/// Ports tried after a taken one before giving up.
const PORT_TRIES: u16 = 16;

/// Where the UI listens.
#[derive(Debug, Clone)]
pub struct UiConfig {
    /// Address to listen on (loopback by default: the UI has no login).
    pub bind: IpAddr,
    /// Port; 0 picks a free one. A taken port is followed by the next free one.
    pub port: u16,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_UI_PORT,
        }
    }
}

impl UiConfig {
    /// The UI on `port` of loopback.
    pub fn port(port: u16) -> Self {
        Self {
            port,
            ..Self::default()
        }
    }
}

/// A running UI server; it stops when this is dropped.
#[derive(Debug)]
pub struct UiHandle {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UiHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UiHandle {
    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The URL to open in a browser.
    pub fn url(&self) -> String {
        let host = match self.address.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => "localhost".to_string(),
            IpAddr::V6(ip) if ip.is_loopback() => "localhost".to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        format!("http://{host}:{}/", self.address.port())
    }
}

/// What the UI shows: one live application, or the finished ones of an event-log
/// directory.
pub(crate) enum Source {
    /// The driver of this process.
    Live {
        /// The driver (not its handle: the UI does not keep the cluster running).
        driver: Arc<Driver>,
        /// Settings shown under Environment.
        environment: Vec<(String, String)>,
    },
    /// `ember history`: every `*.jsonl` log of a directory.
    History(history::EventLogs),
}

/// Shared by the handlers.
pub(crate) struct UiState {
    source: Source,
    metrics: metrics::EventMetrics,
}

/// Errors the API answers with: a status and a message.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    fn not_found(what: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, what.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.1),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

impl UiState {
    /// Every application this UI shows, newest first.
    async fn apps(&self) -> ApiResult<Vec<Arc<AppSnapshot>>> {
        match &self.source {
            Source::Live { driver, .. } => Ok(vec![Arc::new(live_snapshot(driver).await?)]),
            Source::History(logs) => logs.all().await,
        }
    }

    /// One application by id.
    async fn app(&self, id: &str) -> ApiResult<Arc<AppSnapshot>> {
        match &self.source {
            Source::Live { driver, .. } => {
                if id != driver.app_id() {
                    return Err(ApiError::not_found(format!("no application {id}")));
                }
                Ok(Arc::new(live_snapshot(driver).await?))
            }
            Source::History(logs) => logs.get(id).await,
        }
    }

    fn environment(&self) -> Vec<(String, String)> {
        match &self.source {
            Source::Live { environment, .. } => environment.clone(),
            Source::History(logs) => vec![(
                "ember.history.eventLog.dir".into(),
                logs.dir().display().to_string(),
            )],
        }
    }
}

async fn live_snapshot(driver: &Driver) -> ApiResult<AppSnapshot> {
    driver.snapshot().await.map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the driver is not answering: {e}"),
        )
    })
}

/// Serves the UI of the live driver `driver`; `environment` is shown under Environment.
///
/// # Errors
///
/// No port could be bound.
pub async fn serve_live(
    driver: Arc<Driver>,
    environment: Vec<(String, String)>,
    config: &UiConfig,
) -> anyhow::Result<UiHandle> {
    let metrics = metrics::EventMetrics::default();
    metrics.follow(driver.subscribe());
    let state = UiState {
        source: Source::Live {
            driver,
            environment,
        },
        metrics,
    };
    start(state, config).await
}

/// Serves the UI of the finished applications whose event logs are in `dir`.
///
/// # Errors
///
/// `dir` is not a readable directory, or no port could be bound.
pub async fn serve_history(dir: PathBuf, config: &UiConfig) -> anyhow::Result<UiHandle> {
    let logs = history::EventLogs::open(dir)?;
    let state = UiState {
        source: Source::History(logs),
        metrics: metrics::EventMetrics::default(),
    };
    start(state, config).await
}

async fn start(state: UiState, config: &UiConfig) -> anyhow::Result<UiHandle> {
    if !config.bind.is_loopback() {
        tracing::warn!(
            bind = %config.bind,
            "the web UI has no login: anyone who reaches this address sees jobs, SQL text and plans"
        );
    }
    let listener = bind(config).await?;
    let address = listener.local_addr()?;
    let app = router(Arc::new(state));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the web UI stopped");
        }
    });
    Ok(UiHandle { address, task })
}

/// Binds `config.port`, or the next free port after it when it is taken, or (when the next
/// few are all taken) any free port: a busy machine still gets its UI, at the URL printed.
async fn bind(config: &UiConfig) -> anyhow::Result<tokio::net::TcpListener> {
    let tries = if config.port == 0 { 1 } else { PORT_TRIES };
    for i in 0..tries {
        let Some(port) = config.port.checked_add(i) else {
            break;
        };
        match tokio::net::TcpListener::bind((config.bind, port)).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "web UI: cannot listen on {}:{port}: {e}",
                    config.bind
                ))
            }
        }
    }
    tracing::warn!(
        first = config.port,
        tries,
        "web UI: the ports tried are all taken; listening on a free one"
    );
    tokio::net::TcpListener::bind((config.bind, 0))
        .await
        .map_err(|e| anyhow::anyhow!("web UI: cannot listen on {}: {e}", config.bind))
}

fn router(state: Arc<UiState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/assets/app.js", get(script))
        .route("/assets/style.css", get(style))
        .route("/metrics", get(prometheus))
        .route("/api/v1/version", get(api::version))
        .route("/api/v1/applications", get(api::applications))
        .route("/api/v1/applications/{app}", get(api::application))
        .route("/api/v1/applications/{app}/jobs", get(api::jobs))
        .route("/api/v1/applications/{app}/jobs/{job}", get(api::job))
        .route(
            "/api/v1/applications/{app}/jobs/{job}/dag.svg",
            get(dag_svg),
        )
        .route("/api/v1/applications/{app}/stages", get(api::stages))
        .route("/api/v1/applications/{app}/stages/{stage}", get(api::stage))
        .route(
            "/api/v1/applications/{app}/stages/{stage}/{attempt}",
            get(api::stage_attempt),
        )
        .route(
            "/api/v1/applications/{app}/stages/{stage}/{attempt}/taskSummary",
            get(api::task_summary),
        )
        .route(
            "/api/v1/applications/{app}/stages/{stage}/{attempt}/taskList",
            get(api::task_list),
        )
        .route("/api/v1/applications/{app}/executors", get(api::executors))
        .route(
            "/api/v1/applications/{app}/allexecutors",
            get(api::all_executors),
        )
        .route("/api/v1/applications/{app}/storage/rdd", get(api::storage))
        .route(
            "/api/v1/applications/{app}/storage/rdd/{dataset}",
            get(api::storage_one),
        )
        .route("/api/v1/applications/{app}/sql", get(api::sql))
        .route("/api/v1/applications/{app}/sql/{job}", get(api::sql_one))
        .route(
            "/api/v1/applications/{app}/environment",
            get(api::environment),
        )
        .route("/api/v1/applications/{app}/ml", get(api::ml))
        .route(
            "/api/v1/applications/{app}/ml/{run}/objective.svg",
            get(objective_svg),
        )
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such page or API endpoint (the API is under /api/v1/)")
}

async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("assets/index.html"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/style.css"),
    )
}

async fn dag_svg(
    State(state): State<Arc<UiState>>,
    Path((app, job)): Path<(String, u64)>,
) -> ApiResult<Response> {
    let snapshot = state.app(&app).await?;
    let job = api::find_job(&snapshot, job)?;
    let svg = dag::job_svg(job).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

async fn objective_svg(
    State(state): State<Arc<UiState>>,
    Path((app, run)): Path<(String, u64)>,
) -> ApiResult<Response> {
    let snapshot = state.app(&app).await?;
    let run = api::find_run(&snapshot, run)?;
    let svg =
        chart::objective_svg(run).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

async fn prometheus(State(state): State<Arc<UiState>>) -> ApiResult<Response> {
    let apps = state.apps().await?;
    let text = state.metrics.render(apps.first().map(|a| a.as_ref()));
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `?quantiles=0.05,0.5,0.95` (Spark's default set when absent).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct QuantileQuery {
    quantiles: Option<String>,
}

/// `?status=...` filters of the job and stage lists.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct StatusQuery {
    status: Option<String>,
}
