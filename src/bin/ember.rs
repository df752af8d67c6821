//! The `ember` command line.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ember::run_executor_if_requested();
    ember::init_tracing("warn");
    let cli = ember::cli::Cli::parse();
    match ember::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
