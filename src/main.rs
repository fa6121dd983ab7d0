//! Binary entry point: parse the command line, set up logging, hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use streamgate::cli::Cli;

mod commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    streamgate::telemetry::logging::init(cli.log_format, &cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::execute(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
