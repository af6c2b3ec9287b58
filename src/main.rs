//! The `riskflow` binary: parse the command line, run, map the result to an exit code.

use clap::Parser;
use riskflow::cli::{self, Cli, LogFormat};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    // Profile settings fill in what neither the environment nor a flag sets.
    let args: Vec<String> = std::env::args().collect();
    if let Err(error) = riskflow::profile::apply(&args) {
        eprintln!("error: {error}");
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
