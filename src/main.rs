//! Binary entry point: parse the command line, set up logging, hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use streamgate::cli::Cli;

mod commands;

/// jemalloc instead of glibc's malloc. The gateway allocates many small, short-lived buffers
/// on several threads at once, where glibc's arena locks cost about a tenth of its CPU per
/// request; pipelines and backfills free and reallocate batch buffers every few milliseconds,
/// which jemalloc keeps for reuse (returning them to the system after its decay time) instead
/// of mapping fresh pages. The comparison with glibc and mimalloc is in the README's
/// dependency table.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
