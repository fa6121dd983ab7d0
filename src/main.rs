//! Binary entry point: parse the command line, set up logging, start the runtime and hand
//! over to [`commands`]. The allocator is set up in [`alloc`].

use std::process::ExitCode;

use clap::Parser;
use streamgate::cli::Cli;

mod alloc;
mod commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    streamgate::telemetry::logging::init(cli.log_format.into(), &cli.log_level);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if matches!(cli.command, streamgate::cli::Command::Backfill { .. }) {
        alloc::allocate_from_first_arena();
        builder.on_thread_start(alloc::allocate_from_first_arena);
    }
    let runtime = match builder.build() {
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
