//! Binary entry point: parse the command line, set up logging, hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use streamgate::cli::Cli;

mod commands;

/// mimalloc instead of glibc's malloc: the gateway and the pipelines allocate many small,
/// short-lived buffers on two or more threads at once, where glibc's arena locks and
/// consolidation showed up as about a sixth of the gateway's CPU (see benches/RESULTS-gateway.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (`mi_option_purge_delay` in mimalloc.h).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Memory freed stays committed for a second (mimalloc's default is 10 ms) before it is
    // returned to the system: a pipeline frees and reallocates its batch buffers every few
    // milliseconds, and returning them each time made the kernel zero fresh pages for every
    // batch (~6% of the fraud pipeline's CPU). Memory stays bounded by the peak in use.
    // SAFETY: sets a plain integer option; mimalloc allows it at any time, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
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
