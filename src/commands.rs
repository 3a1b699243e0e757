//! The commands of the `nightrec` binary, one function each: the binary
//! parses the command line ([`crate::cli`]), loads the configuration once
//! ([`load_config`]), sets up the process's pools, and hands over to
//! [`run`]. What a command prints goes to standard output through a writer,
//! so a closed pipe is an error with context, never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::{Cli, Command, EvalArgs, EvalFormat, GenArgs, ReportArgs, RunArgs, SqlArgs, TablesArgs, TopkArgs};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::ledger::RunSummary;
use crate::pipeline::{self, RunOptions};
use crate::stages::{candidates::Shard, evaluate, publish};
use crate::{checkpoint, datagen, device, sqlcmd, storage, tables, topk};

/// The configuration for a command line: `--config` (or `jobs/nightly.toml`
/// when it exists, else the built-in defaults), `NIGHTREC_*` overrides, then
/// `--input` and `--output`.
pub fn load_config(cli: &Cli) -> Result<Config> {
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

/// Run the command of `cli` with `cfg`.
pub async fn run(cli: Cli, cfg: Config) -> Result<()> {
    match cli.command {
        Command::Run(a) => nightly(a, cfg).await,
        Command::Sql(a) => sql(a, cfg).await,
        Command::Tables(a) => list_tables(a, cfg).await,
        Command::Gen(a) => generate(a).await,
        Command::Report(a) => report(a, cfg).await,
        Command::Eval(a) => eval(a, cfg).await,
        Command::Topk(a) => top_k(a, cfg),
    }
}

fn stdout_error(e: std::io::Error) -> Error {
    Error::io("stdout", e)
}

/// `nightrec run`: one date, or every date of `--from … --to`.
async fn nightly(a: RunArgs, mut cfg: Config) -> Result<()> {
    let shard = a.shard.as_deref().map(str::parse::<Shard>).transpose()?;
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
            let mut unwritten = None;
            pipeline::backfill(cfg, opts, to, |s| {
                if let Err(e) = write_summary(&mut std::io::stdout().lock(), s) {
                    unwritten.get_or_insert(e);
                }
            })
            .await?;
            unwritten.map_or(Ok(()), Err)
        }
        None => write_summary(&mut std::io::stdout().lock(), &pipeline::run(cfg, opts).await?),
    }
}

/// The run summary as a table: one line per stage, its facts below it.
fn write_summary(out: &mut impl Write, s: &RunSummary) -> Result<()> {
    let mut w = || -> std::io::Result<()> {
        writeln!(out, "nightrec run {} for {} on {}", s.run_id, s.date, s.device)?;
        writeln!(out, "threads: {}", s.threads)?;
        writeln!(
            out,
            "{:<12} {:>8} {:>9} {:>9} {:>9}  tables (rows) / facts",
            "stage", "status", "seconds", "cpu_s", "rss_mb"
        )?;
        for st in &s.stages {
            let status = if st.ran { "ran" } else { "skipped" };
            let tables: Vec<String> = st.tables.iter().map(|(n, r)| format!("{n} ({r})")).collect();
            writeln!(
                out,
                "{:<12} {:>8} {:>9.2} {:>9.2} {:>9.0}  {}",
                format!("{:?}", st.stage).to_lowercase(),
                status,
                st.seconds,
                st.cpu_seconds,
                st.peak_rss_mb,
                tables.join(", ")
            )?;
            for (k, v) in &st.facts {
                writeln!(out, "{:<32} {k}: {v}", "")?;
            }
        }
        for w in &s.warnings {
            writeln!(out, "warning: {w}")?;
        }
        writeln!(out, "outputs: {}", s.output)?;
        if let Some(r) = &s.report {
            writeln!(out, "report: {r}")?;
        }
        Ok(())
    };
    w().map_err(stdout_error)
}

/// `nightrec sql`: one statement over the published tables of a date.
async fn sql(a: SqlArgs, cfg: Config) -> Result<()> {
    let (ctx, _tables, _date) = sqlcmd::session(cfg, a.date).await?;
    let batches = sqlcmd::query(&ctx, &a.sql, a.allow_writes).await?;
    match &a.save {
        Some(path) => sqlcmd::save(path, &batches, a.format),
        None => sqlcmd::write(&mut std::io::stdout().lock(), &batches, a.format),
    }
}

/// `nightrec tables`: the tables `sql` sees for a date, with their columns.
async fn list_tables(a: TablesArgs, cfg: Config) -> Result<()> {
    let (ctx, tables, date) = sqlcmd::session(cfg, a.date).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "tables for {date}:").map_err(stdout_error)?;
    for t in tables {
        writeln!(out, "\n{} ({}) {}", t.name, t.kind, t.location).map_err(stdout_error)?;
        let provider = ctx.table_provider(t.name.as_str()).await.map_err(|e| Error::datafusion(&t.name, e))?;
        for f in provider.schema().fields() {
            writeln!(out, "  {:<24} {}", f.name(), f.data_type()).map_err(stdout_error)?;
        }
    }
    Ok(())
}

/// `nightrec gen`: a synthetic shop's logs and catalog.
async fn generate(a: GenArgs) -> Result<()> {
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
    writeln!(std::io::stdout().lock(), "wrote {} files ({rows} rows) under {}", written.len(), out.folder_url(""))
        .map_err(stdout_error)
}

/// `nightrec report`: rebuild and republish a date's HTML report.
async fn report(a: ReportArgs, cfg: Config) -> Result<()> {
    let job = Job::new(cfg, a.date, false)?;
    let url = publish::rebuild_report(&job).await?;
    writeln!(std::io::stdout().lock(), "report: {url}").map_err(stdout_error)
}

/// `nightrec eval`: the offline evaluation of a date's checkpoint, again.
async fn eval(a: EvalArgs, cfg: Config) -> Result<()> {
    let chosen = device::choose(a.device.unwrap_or(cfg.run.device))?;
    device::init(cfg.run.seed, cfg.run.threads);
    let job = Job::new(cfg, a.date, false)?;
    let e = evaluate::compute(&job, chosen, true).await?;
    if let Some(path) = &a.cases {
        let c = &e.cases;
        let batch = tables::evaluation::cases_batch(&c.users, &c.items, &c.positions)?;
        sqlcmd::save(path, &[batch], sqlcmd::Format::Parquet)?;
    }
    let version = checkpoint::meta(&job).await?.map(|m| m.version).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match a.format {
        EvalFormat::Table => sqlcmd::write(&mut out, &[tables::evaluation::batch(&e.rows)?], sqlcmd::Format::Table),
        EvalFormat::Json => {
            let doc = serde_json::json!({
                "date": a.date.to_string(),
                "model_version": version,
                "facts": e.facts.iter().map(|(k, v)| serde_json::json!({"fact": k, "value": v})).collect::<Vec<_>>(),
                "rows": e.rows,
            });
            let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::Internal(format!("eval as JSON: {e}")))?;
            writeln!(out, "{text}").map_err(stdout_error)
        }
    }
}

/// `nightrec topk`: exact top-K of two `.npy` matrices (the benchmark hook).
fn top_k(a: TopkArgs, cfg: Config) -> Result<()> {
    let chosen = device::choose(cfg.run.device)?;
    device::init(cfg.run.seed, cfg.run.threads);
    let started = std::time::Instant::now();
    let budget = crate::resources::MemoryBudget::mib(a.memory_budget_mb);
    let (n, m) = topk::npy_top_k(&a.queries, &a.items, a.k, budget, &a.out, chosen)?;
    let secs = started.elapsed().as_secs_f64();
    writeln!(std::io::stdout().lock(), "{{\"queries\": {n}, \"items\": {m}, \"k\": {}, \"seconds\": {secs:.3}}}", a.k)
        .map_err(stdout_error)
}
