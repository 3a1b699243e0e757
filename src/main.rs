//! The `nightrec` binary: parse the command line, set up logging and the
//! process's pools, run the command ([`nightrec::commands`]), and map errors
//! to the exit codes of the operational contract.
#![allow(clippy::print_stderr)]

use std::io::IsTerminal;

use clap::Parser;
use nightrec::cli::{Cli, LogFormat};
use nightrec::commands;
use nightrec::error::{Error, ExitCode};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NIGHTREC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: never in a captured log,
    // never in JSON, never with NO_COLOR set (https://no-color.org).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_target(false).with_ansi(colour).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_ansi(false).init(),
    }
}

/// libtorch allocates and frees large tensors (catalog-wide logits) every
/// training step; above glibc's default 32 MiB mmap threshold each one is
/// a fresh mmap whose pages the kernel must zero, which cost a fifth of the
/// training time on MovieLens-100k. Serve them from the heap instead.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets an allocator parameter; it is called
    // before any other thread exists.
    // The trim threshold goes up with it: glibc would otherwise shrink the
    // heap after every freed batch and fault the pages back in next step.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) + libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) };
    if ok != 2 {
        eprintln!("warning: could not raise the malloc mmap threshold; training may be slower");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let fail = |e: Error| {
        eprintln!("error: {e:#}");
        std::process::ExitCode::from(e.exit_code() as u8)
    };
    let cfg = match commands::load_config(&cli) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // One thread count for every pool of the process, set before any of
    // them starts (see nightrec::resources).
    let threads = cfg.run.threads;
    if let Err(e) = nightrec::resources::apply_threads(threads) {
        return fail(e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(ExitCode::Retry as u8);
        }
    };
    // libtorch reports shape and device bugs by panicking inside tch: treat
    // them as internal errors (exit 1), like any other bug.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(commands::run(cli, cfg))));
    match outcome {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(e)) => fail(e),
        Err(_) => {
            eprintln!("error: internal error (a bug in nightrec): a panic ended the run; see the message above");
            std::process::ExitCode::from(ExitCode::Retry as u8)
        }
    }
}
