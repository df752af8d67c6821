//! `ember server`'s Spark Connect endpoint: PySpark and other Spark Connect clients run
//! SQL and DataFrame queries on an Ember cluster unchanged.
//!
//! - [`proto`]: the protocol subset Ember serves (generated from `proto/`).
//! - `service`: the gRPC service (sessions, ExecutePlan, AnalyzePlan, Config, Interrupt,
//!   Reattach/Release).
//! - `plan` and `expr`: relations and expressions as DataFusion plans.
//! - `types`: Spark types and Arrow types; `show`: `df.show()`'s text.
//! - `operation`: reattachable response streams; `progress`: the stages an operation runs,
//!   reported while it runs; `session`: per-client state.
//! - `ml`: `pyspark.ml` (fit, transform, evaluate, model attributes, save and load).
//! - `error`: errors as the exceptions a Spark client raises.

/// `ember sql --connect`: a Spark Connect client for SQL statements.
pub mod client;
mod error;
mod expr;
mod ml;
mod operation;
mod plan;
mod progress;
mod service;
mod session;
mod show;
mod types;

/// Messages and service of the Spark Connect protocol subset (package `spark.connect`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("spark.connect");

    /// The `google.rpc` status details a client decodes from a failed call.
    pub mod google_rpc {
        tonic::include_proto!("google.rpc");
    }
}

use std::future::Future;

pub use error::{ConnectError, ConnectResult};
pub use service::ConnectService;
pub use session::SPARK_VERSION;

use crate::Session;

/// A fresh path next to `path` to write into before renaming over it, so a failed write
/// leaves whatever was at `path` in place.
fn staging_path(path: &std::path::Path) -> std::path::PathBuf {
    path.with_file_name(format!(
        ".{}.ember-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        uuid::Uuid::new_v4()
    ))
}

/// Largest request or response message the endpoint accepts (a `createDataFrame` of a
/// large pandas DataFrame arrives as one local relation).
const MAX_MESSAGE_BYTES: usize = 512 << 20;

/// Client connections the endpoint holds open at once (each PySpark session opens one).
const MAX_CONNECTIONS: usize = 256;

/// Serves the Spark Connect protocol on `listener` for `ember`'s cluster until `shutdown`
/// completes; every client session then is closed (its cached blocks removed).
///
/// # Errors
///
/// The listener failed.
pub async fn serve(
    ember: Session,
    listener: tokio::net::TcpListener,
    security: &ember_engine::security::Security,
    shutdown: impl Future<Output = ()> + Send,
) -> crate::Result<()> {
    let service = std::sync::Arc::new(ConnectService::new(ember));
    let server = proto::spark_connect_service_server::SparkConnectServiceServer::from_arc(
        std::sync::Arc::clone(&service),
    )
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Clients prove they know the secret with the token of their `sc://` URL.
    let server = tonic::service::interceptor::InterceptedService::new(
        server,
        ember_engine::security::ServerAuth::bearer(security.secret.clone()),
    );
    let incoming = ember_engine::rpc::incoming(listener, MAX_CONNECTIONS);
    ember_engine::rpc::server(security)?
        .add_service(server)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| crate::Error::Cluster(format!("Spark Connect endpoint: {e}")))?;
    service.close_all().await;
    Ok(())
}

/// The `sc://` URL a client connects to for a server advertised as `address`
/// (`host:port`), without credentials.
pub fn connect_url(address: &str) -> String {
    format!("sc://{address}")
}
