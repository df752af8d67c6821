//! Ember: a Spark-like in-memory dataflow engine. This facade crate is what applications
//! use: a [`Session`] on a cluster of executors, lazy [`DataFrame`]s and SQL, and the
//! executor entry point.
//!
//! # Layout
//!
//! - [`session`]: starting a cluster (in-process, local processes or standalone) and
//!   planning SQL and DataFrames onto it.
//! - [`dataframe`]: the lazy DataFrame API and its actions.
//! - [`executor_main`]: the `ember-executor` command line and the self-exec hook.
//! - `local_cluster`: executor child processes and their cleanup.
//! - `cached_table`: how cached DataFrames appear to the planner.
//! - [`ml`]: mllib's pipelines, features, models and evaluators on [`DataFrame`]s.
//! - [`cli`]: the `ember` command line (`ember sql`, `ember server`, `ember tpch`).
//! - [`connect`]: the Spark Connect endpoint `ember server` serves PySpark on.
//! - [`tpch`]: TPC-H queries, data generation and the benchmark against DataFusion.
//! - [`prelude`]: everything an application imports.
//!
//! ```no_run
//! use ember::prelude::*;
//!
//! #[tokio::main]
//! async fn main() -> ember::Result<()> {
//!     ember::run_executor_if_requested();
//!     let session = Session::local_cluster(2).await?;
//!     let df = session.read_parquet("data/events").await?.cache().await?;
//!     println!("{} rows", df.count().await?);
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]

mod cached_table;
/// The `ember` command line.
pub mod cli;
/// `ember server`: the Spark Connect endpoint.
pub mod connect;
/// The lazy DataFrame API.
pub mod dataframe;
/// The facade's error type.
pub mod error;
/// Executor entry points.
pub mod executor_main;
mod local_cluster;
mod memory_plan;
/// Machine learning.
pub mod ml;
/// What applications import.
pub mod prelude;
mod progress;
/// Security options shared by the commands (secret, TLS, `--insecure`).
pub mod security;
/// `ember serve`: saved ML pipelines answered over HTTP.
pub mod serve;
/// Sessions and clusters.
pub mod session;
/// `ember sql`'s statement splitting and interactive shell.
pub mod shell;
/// Uncorrelated scalar subqueries run as jobs of their own before the query that uses them.
mod subquery;
/// Benchmark suites: data generation, registration, answer comparison and the bench.
pub mod suite;
/// TPC-DS queries and data.
pub mod tpcds;
/// TPC-H queries and data.
pub mod tpch;
/// The web UI, its REST API and `/metrics`; `ember history`.
pub mod ui;

pub use dataframe::{DataFrame, ResultStream};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;
pub use error::{Error, Result};
pub use executor_main::run_executor_if_requested;
pub use session::{Session, SessionBuilder};

pub use ember_driver as driver;
pub use ember_engine as engine;
pub use ember_executor as executor;
pub use ember_mllib as mllib;

/// Registers the plan extensions this binary ships (mllib's nodes and functions) in this
/// process. Sessions and executors call it themselves; it is idempotent.
pub fn register_extensions() {
    ember_mllib::register();
}

/// Sets up logging to stderr, filtered by `RUST_LOG` (default `default_level`). Safe to
/// call more than once.
pub fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
