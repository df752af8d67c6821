//! The `ember` command line: `ember sql` runs a query on a local cluster and prints it;
//! `ember server` serves the Spark Connect protocol for PySpark clients; `ember serve`
//! answers predictions of saved ML pipelines over HTTP;
//! `ember tpch` and `ember tpcds` (`gen`, `bench`) write a benchmark's data and time its
//! queries.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use arrow::record_batch::RecordBatch;
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;

use crate::session::Session;

/// Ember: a Spark-like in-memory dataflow engine.
#[derive(Debug, Parser)]
#[command(name = "ember", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `ember` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run SQL on a local cluster and print the result.
    Sql(SqlArgs),
    /// Serve the Spark Connect protocol: PySpark (`sc://host:port`) runs on an Ember cluster.
    Server(ServerArgs),
    /// Serve saved ML pipelines over HTTP (Open Inference Protocol v2, TensorFlow
    /// Serving's REST API), in this process.
    Serve(crate::serve::ServeArgs),
    /// Run an executor (same as the `ember-executor` binary).
    Executor(crate::executor_main::ExecutorArgs),
    /// Generate TPC-H data or benchmark the 22 TPC-H queries.
    Tpch(SuiteArgs),
    /// Generate TPC-DS data or benchmark the 99 TPC-DS queries.
    Tpcds(SuiteArgs),
    /// Serve the web UI and REST API of finished applications from their event logs.
    History(crate::ui::HistoryArgs),
}

/// Arguments of `ember tpch` and `ember tpcds`.
#[derive(Debug, clap::Args)]
pub struct SuiteArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SuiteCommand,
}

/// `ember tpch` and `ember tpcds` subcommands.
#[derive(Debug, Subcommand)]
pub enum SuiteCommand {
    /// Write the tables as directories of Parquet files.
    Gen(GenArgs),
    /// Time the queries on an Ember cluster and on single-process DataFusion, and compare
    /// the answers.
    Bench(crate::suite::BenchArgs),
}

/// Arguments of `ember tpch gen` and `ember tpcds gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Scale factor (1 is about 1 GB of raw data; 0.01 is small).
    #[arg(long, value_parser = crate::suite::parse_scale_factor, allow_hyphen_values = true)]
    pub sf: f64,
    /// Directory to write into; each table becomes a directory `<DIR>/<table>/`.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Parquet files for each of the big tables (the fact tables and the largest
    /// dimensions).
    #[arg(long, default_value_t = crate::suite::DEFAULT_PARTS,
          value_parser = crate::suite::parse_parts)]
    pub parts: usize,
}

/// Output formats of `ember sql`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// Web UI and event-log options of `ember sql` and `ember server`.
#[derive(Debug, Clone, clap::Args)]
pub struct UiArgs {
    /// Port of the web UI and its REST API (the next free one when taken; 0 picks any).
    #[arg(long, value_name = "PORT")]
    pub ui_port: Option<u16>,
    /// Address the web UI listens on (it has no login: keep it on loopback unless the
    /// network is trusted).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub ui_bind: std::net::IpAddr,
    /// Append the scheduler's events to `DIR/<application id>.jsonl`, for `ember history`.
    #[arg(long, value_name = "DIR")]
    pub event_log: Option<PathBuf>,
}

impl UiArgs {
    /// `builder` with the UI on `default_port` (or `--ui-port`; none when both are unset)
    /// and the event log.
    fn apply(
        &self,
        builder: crate::session::SessionBuilder,
        default_port: Option<u16>,
    ) -> crate::session::SessionBuilder {
        let builder = match self.ui_port.or(default_port) {
            Some(port) => builder.ui(crate::ui::UiConfig {
                bind: self.ui_bind,
                port,
            }),
            None => builder,
        };
        match &self.event_log {
            Some(dir) => builder.event_log(dir),
            None => builder,
        }
    }
}

/// Arguments of `ember sql`.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// Executor processes to start.
    #[arg(long, default_value_t = 2)]
    pub executors: usize,
    /// Memory limit per executor (half for blocks, half for operators; both spill).
    #[arg(long, default_value = "2GiB", value_parser = crate::executor_main::parse_bytes)]
    pub memory: usize,
    /// A table to register, NAME=PATH; PATH is a Parquet, CSV, JSON or Arrow IPC file, or a
    /// directory of them (the format follows the extension).
    #[arg(long = "table", value_name = "NAME=PATH")]
    pub tables: Vec<String>,
    /// Read the SQL from this file (statements end with `;`; comments and literals may
    /// hold `;`). With neither a query nor a file, `ember sql` opens an interactive shell
    /// (or reads a script from standard input when it is not a terminal).
    #[arg(short = 'f', long = "file", conflicts_with = "query")]
    pub file: Option<PathBuf>,
    /// The SQL to run.
    pub query: Option<String>,
    /// How to print results.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Serve the web UI while the shell or the statements run (on `--ui-port`, default
    /// 4040).
    #[arg(long)]
    pub ui: bool,
    /// Run the statements on a running `ember server` (`sc://HOST:PORT[/;token=SECRET]`)
    /// instead of starting a local cluster.
    #[arg(long, value_name = "URL", conflicts_with_all = ["tables", "ui", "ui_port"])]
    pub connect: Option<String>,
    /// Web UI and event log.
    #[command(flatten)]
    pub ui_args: UiArgs,
}

/// Arguments of `ember server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Port of the Spark Connect endpoint (0 picks a free one; the URL printed says which).
    #[arg(long, default_value_t = 15002)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Executor processes to start.
    #[arg(long, default_value_t = 2)]
    pub executors: usize,
    /// Memory limit per executor (half for blocks, half for operators; both spill).
    #[arg(long, default_value = "2GiB", value_parser = crate::executor_main::parse_bytes)]
    pub memory: usize,
    /// Start no executors: wait for `ember-executor --driver ADDR` processes started
    /// elsewhere to register with the driver on `--driver-port`.
    #[arg(long)]
    pub standalone: bool,
    /// Driver port executors register with in `--standalone` mode (on the --bind
    /// address).
    #[arg(long, default_value_t = 7077)]
    pub driver_port: u16,
    /// The address executors and clients are told to dial, HOST or HOST:PORT (default:
    /// the bound address; for a wildcard bind, this host's address on its default route).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub advertise: Option<String>,
    /// A table every client session sees, NAME=PATH (as `ember sql --table`).
    #[arg(long = "table", value_name = "NAME=PATH")]
    pub tables: Vec<String>,
    /// Serve no web UI.
    #[arg(long, conflicts_with = "ui_port")]
    pub no_ui: bool,
    /// Web UI (default port 4040) and event log.
    #[command(flatten)]
    pub ui_args: UiArgs,
    /// Secret and TLS. With a secret, Spark Connect clients give it as the token of their
    /// URL: `sc://HOST:PORT/;token=SECRET` (PySpark sends tokens over TLS, or in plain
    /// text to localhost only).
    #[command(flatten)]
    pub security: crate::security::SecurityArgs,
}

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sql(args) => run_sql(args).await,
        Command::Server(args) => run_server(args).await,
        Command::Serve(args) => crate::serve::run(args).await,
        Command::Executor(args) => crate::executor_main::run_executor(args).await,
        Command::Tpch(args) => run_suite(&crate::tpch::SUITE, args).await,
        Command::Tpcds(args) => run_suite(&crate::tpcds::SUITE, args).await,
        Command::History(args) => run_history(args).await,
    }
}

async fn run_suite(suite: &'static crate::suite::Suite, args: SuiteArgs) -> anyhow::Result<()> {
    match args.command {
        SuiteCommand::Gen(GenArgs { sf, out, parts }) => {
            let summary = tokio::task::spawn_blocking(move || suite.generate(sf, &out, parts))
                .await
                .with_context(|| format!("the {} generator task panicked", suite.name))??;
            print!("{summary}");
            Ok(())
        }
        SuiteCommand::Bench(args) => crate::suite::bench(suite, &args).await,
    }
}

/// `ember history`: the UI of the event logs of a directory, until SIGINT or SIGTERM.
async fn run_history(args: crate::ui::HistoryArgs) -> anyhow::Result<()> {
    let config = crate::ui::UiConfig {
        bind: args.bind,
        port: args.port,
    };
    let ui = crate::ui::serve_history(args.event_log.clone(), &config).await?;
    println!(
        "history server for {} at {}",
        args.event_log.display(),
        ui.url()
    );
    shutdown_signal()?.await;
    Ok(())
}

/// `ember server`: a cluster and its Spark Connect endpoint, until SIGINT or SIGTERM.
async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let security = args.security.resolve()?;
    security.check_exposure("the Spark Connect endpoint", args.bind)?;
    let listener = tokio::net::TcpListener::bind((args.bind, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.bind, args.port))?;
    let addr = listener.local_addr()?;
    // The advertised host with the Spark Connect port.
    let advertised = ember_engine::rpc::advertised_address(addr, args.advertise.as_deref(), None)?;
    // PySpark sends a token without TLS only to a host named `localhost`.
    let advertised = match advertised.rsplit_once(':') {
        _ if args.advertise.is_none() && addr.ip().is_loopback() => {
            format!("localhost:{}", addr.port())
        }
        Some((host, _)) => format!("{host}:{}", addr.port()),
        None => advertised,
    };
    let driver_config = crate::driver::DriverConfig {
        advertise: args.advertise.clone(),
        security: security.clone(),
        ..crate::driver::DriverConfig::default()
    };
    let builder = Session::builder()
        .executors(args.executors)
        .memory_per_executor(args.memory)
        .driver_config(driver_config);
    let default_ui = (!args.no_ui).then_some(crate::ui::DEFAULT_UI_PORT);
    let builder = args.ui_args.apply(builder, default_ui);
    let session = if args.standalone {
        let driver = std::net::SocketAddr::new(args.bind, args.driver_port);
        eprintln!("waiting for executors to register with the driver at {driver}");
        builder.standalone(driver).await?
    } else {
        builder.local_cluster().await?
    };
    register_tables(&session, &args.tables).await?;
    let url = crate::connect::connect_url(&advertised);
    tracing::info!(%url, executors = session.executors().len(), "Spark Connect server started");
    // One write, and a reader that went away is no reason to stop serving.
    let mut banner = format!("Spark Connect server listening on {url}\n");
    if security.secret.is_some() {
        banner.push_str(&format!("clients connect with {url}/;token=<the secret>\n"));
    }
    if args.standalone {
        banner.push_str(&format!(
            "executors register with ember-executor --driver {}\n",
            session.driver().advertised_address()
        ));
    }
    if let Some(ui) = session.ui_url() {
        banner.push_str(&format!("web UI at {ui}\n"));
    }
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    let signal = shutdown_signal()?;
    let shutdown = async move {
        signal.await;
        eprintln!("shutting down");
    };
    crate::connect::serve(session.clone(), listener, &security, shutdown).await?;
    // The executors stop (and remove their spill directories) with the last session handle.
    drop(session);
    Ok(())
}

/// Resolves at the first SIGINT or SIGTERM. The handlers are installed before it returns,
/// so a signal that arrives before the future is polled is not lost.
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing a SIGTERM handler")?;
    let interrupt = tokio::signal::ctrl_c();
    Ok(async move {
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    })
}

async fn run_sql(args: SqlArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    // With no query and no file: a shell on a terminal, a script from a pipe.
    let script = match (&args.file, &args.query) {
        (Some(file), _) => Some(
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
        ),
        (None, Some(q)) => Some(q.clone()),
        (None, None) if std::io::stdin().is_terminal() => None,
        (None, None) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading SQL from standard input")?;
            Some(text)
        }
    };
    let statements = match &script {
        Some(text) => {
            let where_ = args
                .file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "the query".into());
            let statements = crate::shell::split_statements(text)
                .map_err(|e| anyhow::anyhow!("{where_}: {e}"))?;
            if statements.is_empty() {
                bail!("{where_}: no SQL statement (only whitespace and comments)");
            }
            Some(statements)
        }
        None => None,
    };
    let mut target = match &args.connect {
        Some(url) => crate::shell::Target::Remote {
            client: Box::new(crate::connect::client::ConnectClient::connect(url).await?),
            url: url.clone(),
        },
        None => {
            let ui_port = args
                .ui_args
                .ui_port
                .or(args.ui.then_some(crate::ui::DEFAULT_UI_PORT));
            let builder = Session::builder()
                .executors(args.executors)
                .memory_per_executor(args.memory);
            let session = args.ui_args.apply(builder, ui_port).local_cluster().await?;
            register_tables(&session, &args.tables).await?;
            crate::shell::Target::Local(session)
        }
    };
    let Some(statements) = statements else {
        return crate::shell::interactive(&mut target, args.format).await;
    };
    if let crate::shell::Target::Local(session) = &target {
        if let Some(url) = session.ui_url() {
            eprintln!("web UI at {url}");
        }
    }
    let timing = std::io::stderr().is_terminal();
    for statement in &statements {
        if !crate::shell::run_statement(&mut target, statement, args.format, timing).await? {
            // Stop the cluster (its executors, its files) before leaving without unwinding.
            drop(target);
            std::process::exit(130);
        }
    }
    Ok(())
}

/// Prints collected result batches and returns how many rows there were.
pub(crate) fn print_batches(batches: Vec<RecordBatch>, format: Format) -> anyhow::Result<usize> {
    let schema = batches
        .first()
        .map(RecordBatch::schema)
        .unwrap_or_else(|| std::sync::Arc::new(arrow::datatypes::Schema::empty()));
    let mut printer = Printer::new(format, schema);
    let mut rows = 0;
    for batch in batches {
        rows += batch.num_rows();
        printer.push(batch)?;
    }
    printer.finish()?;
    Ok(rows)
}

/// Prints `df`'s rows as the driver hands them on and returns how many there were. A
/// query that runs out of operator memory before any row arrived runs again through
/// `collect`, which plans it leaner.
pub(crate) async fn print_as_it_comes(
    df: &crate::DataFrame,
    format: Format,
) -> anyhow::Result<usize> {
    let mut stream = df.execute_stream().await?;
    let mut printer = Printer::new(format, stream.schema());
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        match batch {
            Ok(batch) => {
                rows += batch.num_rows();
                printer.push(batch)?;
            }
            Err(crate::Error::Driver(ember_driver::DriverError::OutOfMemory { .. }))
                if !printer.started() =>
            {
                for batch in df.collect().await? {
                    rows += batch.num_rows();
                    printer.push(batch)?;
                }
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    printer.finish()?;
    Ok(rows)
}

/// Rows a table printed by `ember sql` holds before it is printed and the next begins:
/// aligned columns need every row of a table first.
const TABLE_ROWS: usize = 10_000;

/// Prints result batches in one output format as they arrive.
struct Printer {
    schema: arrow::datatypes::SchemaRef,
    format: Printing,
    started: bool,
}

enum Printing {
    /// Batches waiting to be printed as one aligned table.
    Table(Vec<RecordBatch>),
    Csv(Box<arrow::csv::Writer<std::io::Stdout>>),
    Json(arrow::json::ArrayWriter<std::io::Stdout>),
}

impl Printer {
    fn new(format: Format, schema: arrow::datatypes::SchemaRef) -> Self {
        let format = match format {
            Format::Table => Printing::Table(Vec::new()),
            Format::Csv => Printing::Csv(Box::new(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(std::io::stdout()),
            )),
            Format::Json => Printing::Json(arrow::json::ArrayWriter::new(std::io::stdout())),
        };
        Self {
            schema,
            format,
            started: false,
        }
    }

    /// Whether any row was printed or taken for printing.
    fn started(&self) -> bool {
        self.started
    }

    fn push(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        self.started |= batch.num_rows() > 0;
        match &mut self.format {
            Printing::Table(pending) => {
                pending.push(batch);
                if pending.iter().map(RecordBatch::num_rows).sum::<usize>() >= TABLE_ROWS {
                    print_table(&std::mem::take(pending))?;
                }
            }
            Printing::Csv(writer) => writer.write(&batch)?,
            Printing::Json(writer) => writer.write(&batch)?,
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self.format {
            Printing::Table(pending) if !pending.is_empty() || !self.started => {
                let pending = if pending.is_empty() {
                    vec![RecordBatch::new_empty(self.schema)]
                } else {
                    pending
                };
                print_table(&pending)
            }
            Printing::Table(_) => Ok(()),
            Printing::Csv(writer) => {
                // A result without rows still gets its header.
                if !self.started {
                    let mut writer = writer;
                    writer.write(&RecordBatch::new_empty(self.schema))?;
                }
                Ok(())
            }
            Printing::Json(mut writer) => {
                writer.finish()?;
                println!();
                Ok(())
            }
        }
    }
}

fn print_table(batches: &[RecordBatch]) -> anyhow::Result<()> {
    println!("{}", arrow::util::pretty::pretty_format_batches(batches)?);
    Ok(())
}

/// Registers each `NAME=PATH` of `--table`.
async fn register_tables(session: &Session, tables: &[String]) -> anyhow::Result<()> {
    for table in tables {
        let (name, path) = table
            .split_once('=')
            .with_context(|| format!("--table `{table}`: expected NAME=PATH"))?;
        register(session, name, Path::new(path))
            .await
            .with_context(|| format!("--table {name}"))?;
    }
    Ok(())
}

/// Registers `path` as table `name`, choosing the reader by file extension.
async fn register(session: &Session, name: &str, path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    }
    let format = if path.is_dir() {
        let mut found = None;
        for entry in
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
        {
            let entry = entry?;
            if let Some(ext) = entry.path().extension().and_then(|e| e.to_str()) {
                if matches!(ext, "parquet" | "csv" | "json" | "arrow") {
                    found = Some(ext.to_string());
                    break;
                }
            }
        }
        found.with_context(|| {
            format!(
                "{}: no .parquet, .csv, .json or .arrow files",
                path.display()
            )
        })?
    } else {
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_string)
            .with_context(|| format!("{}: no file extension to tell the format", path.display()))?
    };
    match format.as_str() {
        "parquet" => session.register_parquet(name, path).await?,
        "csv" => session.register_csv(name, path).await?,
        "json" | "ndjson" => session.register_json(name, path).await?,
        "arrow" | "ipc" => session.register_arrow(name, path).await?,
        other => bail!("{}: unsupported format `{other}`", path.display()),
    }
    Ok(())
}
