//! `ember-executor --driver ADDR`: an executor process for an Ember driver.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ember::init_tracing("info");
    let args = ember::executor_main::ExecutorArgs::parse();
    match ember::executor_main::run_executor(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ember-executor: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
