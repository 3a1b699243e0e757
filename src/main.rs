//! The `nightrec` binary: parse the command line, set up logging, run, and
//! map errors to the exit codes of the operational contract.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::Parser;
use nightrec::cli::{Cli, Command, EvalFormat, LogFormat};
use nightrec::config::Config;
use nightrec::error::{Error, ExitCode, Result};
use nightrec::job::Job;
use nightrec::ledger::RunSummary;
use nightrec::pipeline::{self, RunOptions};
use nightrec::stages::evaluate;
use nightrec::{datagen, sqlcmd, storage};

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

fn load_config(cli: &Cli) -> Result<Config> {
    let default = PathBuf::from("jobs/nightly.toml");
    let path: Option<&Path> = match &cli.config {
        Some(p) => Some(p.as_path()),
        None if default.exists() => Some(default.as_path()),
        None => None,
    };
    let mut cfg = Config::load(path)?;
    if let Some(i) = &cli.input {
        cfg.storage.input = i.clone();
    }
    if let Some(o) = &cli.output {
        cfg.storage.output = o.clone();
    }
    Ok(cfg)
}

fn print_summary(s: &RunSummary) {
    println!("nightrec run {} for {} on {}", s.run_id, s.date, s.device);
    println!("threads: {}", s.threads);
    println!("{:<12} {:>8} {:>9} {:>9} {:>9}  tables (rows) / facts", "stage", "status", "seconds", "cpu_s", "rss_mb");
    for st in &s.stages {
        let status = if st.ran { "ran" } else { "skipped" };
        let tables: Vec<String> = st.tables.iter().map(|(n, r)| format!("{n} ({r})")).collect();
        println!(
            "{:<12} {:>8} {:>9.2} {:>9.2} {:>9.0}  {}",
            format!("{:?}", st.stage).to_lowercase(),
            status,
            st.seconds,
            st.cpu_seconds,
            st.peak_rss_mb,
            tables.join(", ")
        );
        for (k, v) in &st.facts {
            println!("{:<32} {k}: {v}", "");
        }
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }
    println!("outputs: {}", s.output);
    if let Some(r) = &s.report {
        println!("report: {r}");
    }
}

async fn run(cli: Cli, mut cfg: Config) -> Result<()> {
    match cli.command {
        Command::Run(a) => {
            let shard = a.shard.as_deref().map(str::parse::<nightrec::stages::candidates::Shard>).transpose()?;
            if let Some(n) = a.lookback_days {
                cfg.run.lookback_days = n;
            }
            if a.repeat_purchases {
                cfg.candidates.repeat_purchases = true;
            }
            cfg.validate()?;
            let opts = RunOptions {
                date: a.date.or(a.from).ok_or_else(|| Error::Usage("--date or --from is required".into()))?,
                stages: a.stages,
                force: a.force,
                device: a.device,
                full_retrain: a.full_retrain,
                shard,
            };
            match a.to {
                Some(to) => {
                    pipeline::backfill(cfg, opts, to, print_summary).await?;
                }
                None => print_summary(&pipeline::run(cfg, opts).await?),
            }
        }
        Command::Sql(a) => {
            let (ctx, _tables, _date) = sqlcmd::session(cfg, a.date).await?;
            let batches = sqlcmd::query(&ctx, &a.sql, a.allow_writes).await?;
            match &a.save {
                Some(path) => sqlcmd::save(path, &batches, a.format)?,
                None => sqlcmd::write(&mut std::io::stdout().lock(), &batches, a.format)?,
            }
        }
        Command::Tables(a) => {
            let (ctx, tables, date) = sqlcmd::session(cfg, a.date).await?;
            let mut out = std::io::stdout().lock();
            let io = |e: std::io::Error| Error::io("stdout", e);
            writeln!(out, "tables for {date}:").map_err(io)?;
            for t in tables {
                writeln!(out, "\n{} ({}) {}", t.name, t.kind, t.location).map_err(io)?;
                let provider = ctx.table_provider(t.name.as_str()).await.map_err(|e| Error::datafusion(&t.name, e))?;
                for f in provider.schema().fields() {
                    writeln!(out, "  {:<24} {}", f.name(), f.data_type()).map_err(io)?;
                }
            }
        }
        Command::Gen(a) => {
            let out = storage::Root::open(&a.out)?;
            let opts = datagen::GenOptions {
                users: a.users,
                items: a.items,
                events: a.events,
                days: a.days,
                seed: a.seed,
                end_date: a.end_date,
            };
            let written = datagen::generate(&out, &opts).await?;
            let rows: usize = written.iter().map(|w| w.1).sum();
            println!("wrote {} files ({rows} rows) under {}", written.len(), out.folder_url(""));
        }
        Command::Report(a) => {
            let job = Job::new(cfg, a.date, false)?;
            let url = nightrec::stages::publish::rebuild_report(&job).await?;
            println!("report: {url}");
        }
        Command::Eval(a) => {
            let device = nightrec::device::choose(a.device.unwrap_or(cfg.run.device))?;
            nightrec::device::init(cfg.run.seed, nightrec::engine::threads(&cfg));
            let job = Job::new(cfg, a.date, false)?;
            let e = evaluate::compute(&job, device, true).await?;
            let version = nightrec::checkpoint::meta(&job).await?.map(|m| m.version).unwrap_or_default();
            let mut out = std::io::stdout().lock();
            match a.format {
                EvalFormat::Table => {
                    sqlcmd::write(&mut out, &[nightrec::tables::evaluation::batch(&e.rows)?], sqlcmd::Format::Table)?
                }
                EvalFormat::Json => {
                    let doc = serde_json::json!({
                        "date": a.date.to_string(),
                        "model_version": version,
                        "facts": e.facts.iter().map(|(k, v)| serde_json::json!({"fact": k, "value": v})).collect::<Vec<_>>(),
                        "rows": e.rows,
                    });
                    let text = serde_json::to_string_pretty(&doc)
                        .map_err(|e| Error::Internal(format!("eval as JSON: {e}")))?;
                    writeln!(out, "{text}").map_err(|e| Error::io("stdout", e))?;
                }
            }
        }
        Command::Topk(a) => {
            let device = nightrec::device::choose(cfg.run.device)?;
            nightrec::device::init(cfg.run.seed, nightrec::engine::threads(&cfg));
            let started = std::time::Instant::now();
            let (n, m) = nightrec::topk::npy_top_k(&a.queries, &a.items, a.k, a.memory_budget_mb, &a.out, device)?;
            let secs = started.elapsed().as_secs_f64();
            println!("{{\"queries\": {n}, \"items\": {m}, \"k\": {}, \"seconds\": {secs:.3}}}", a.k);
        }
    }
    Ok(())
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
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // One thread count for every pool of the process, set before any of
    // them starts (see nightrec::resources).
    let threads = nightrec::engine::threads(&cfg);
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
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(run(cli, cfg))));
    match outcome {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(e)) => fail(e),
        Err(_) => {
            eprintln!("error: internal error (a bug in nightrec): a panic ended the run; see the message above");
            std::process::ExitCode::from(ExitCode::Retry as u8)
        }
    }
}
