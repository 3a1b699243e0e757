//! Command-line arguments (clap). Raw flags are parsed here; [`crate::commands::load_config`] turns
//! them into a validated [`crate::config::Config`] once, early.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{DeviceChoice, RunDate};
use crate::ledger::Stage;

/// Nightly batch job for e-commerce recommendations: behaviour logs and the
/// catalog in, Parquet candidate tables out.
#[derive(Debug, Parser)]
#[command(name = "nightrec", version, about, long_about = None)]
pub struct Cli {
    /// Job configuration (TOML). Default: jobs/nightly.toml when it exists,
    /// else the built-in defaults.
    #[arg(long, global = true, env = "NIGHTREC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Input root: an object_store URL (file://, s3://, gs://, az://) or a path.
    #[arg(long, global = true, env = "NIGHTREC_INPUT")]
    pub input: Option<String>,
    /// Output root: an object_store URL or a path.
    #[arg(long, global = true, env = "NIGHTREC_OUTPUT")]
    pub output: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "NIGHTREC_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line, for schedulers.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the nightly job for a date (exit 0 ok, 2 usage/config, 3 data quality, 1 other).
    Run(RunArgs),
    /// Run read-only SQL over the raw, work and published tables of a date.
    Sql(SqlArgs),
    /// List the tables `nightrec sql` sees, with their schemas.
    Tables(TablesArgs),
    /// Generate a deterministic synthetic dataset in the input format.
    Gen(GenArgs),
    /// Rebuild the report (`_runs/dt=D/report.html`) of a published date
    /// from its published tables, without rerunning anything; prints its URL.
    Report(ReportArgs),
    /// Recompute the offline evaluation of a date from its tables and
    /// checkpoint (no training, nothing written) and print it.
    Eval(EvalArgs),
    /// Benchmark hook: exact top-K of every row of one .npy matrix against
    /// another, the way the candidates stage computes it.
    #[command(hide = true)]
    Topk(TopkArgs),
}

/// `nightrec topk` (hidden; used by `make bench-topk`).
#[derive(Debug, Args)]
pub struct TopkArgs {
    /// Query vectors, float32 .npy [n, d].
    #[arg(long)]
    pub queries: PathBuf,
    /// Item vectors, float32 .npy [m, d].
    #[arg(long)]
    pub items: PathBuf,
    /// Results per query.
    #[arg(long, default_value_t = 100)]
    pub k: usize,
    /// Memory for one block of scores, in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory_budget_mb: usize,
    /// Item indices of the results, int64 .npy [n, k].
    #[arg(long)]
    pub out: PathBuf,
}

/// `nightrec run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The last day of behaviour to read (candidates are for the next day).
    #[arg(long, required_unless_present = "from", conflicts_with_all = ["from", "to"])]
    pub date: Option<RunDate>,
    /// Backfill: run every date from this one to --to, in order, each
    /// warm-started from the one before; dates already published are
    /// skipped, so rerunning the same command resumes where it stopped.
    #[arg(long, requires = "to", conflicts_with_all = ["stages", "shard"])]
    pub from: Option<RunDate>,
    /// The last date of a backfill (inclusive).
    #[arg(long, requires = "from")]
    pub to: Option<RunDate>,
    /// Days of behaviour read, up to and including --date.
    #[arg(long)]
    pub lookback_days: Option<u32>,
    /// Run only these stages (repeatable); their inputs must exist.
    #[arg(long = "stage", value_enum)]
    pub stages: Vec<Stage>,
    /// Rerun stages even when their inputs and config are unchanged.
    #[arg(long)]
    pub force: bool,
    /// Where tensors live.
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    /// Consumables: purchased items may be recommended again.
    #[arg(long)]
    pub repeat_purchases: bool,
    /// Compute the per-user candidates of shard I of N only (users whose id
    /// hash is I modulo N), after the stages before `candidates` ran; a
    /// later run without --shard assembles the N shards and publishes.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Train from scratch (with masked-item pretraining) instead of
    /// warm-starting from the most recent earlier checkpoint (in a
    /// backfill: the first date; the others warm-start from it).
    #[arg(long)]
    pub full_retrain: bool,
}

/// `nightrec sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Date whose tables to query (default: the latest published date).
    #[arg(long)]
    pub date: Option<RunDate>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = crate::sqlcmd::Format::Table)]
    pub format: crate::sqlcmd::Format,
    /// Write results to this file instead of stdout.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Allow statements that write or change anything (DDL, DML, COPY).
    #[arg(long)]
    pub allow_writes: bool,
    /// The SQL statement.
    pub sql: String,
}

/// `nightrec tables`.
#[derive(Debug, Args)]
pub struct TablesArgs {
    /// Date whose tables to list (default: the latest published date).
    #[arg(long)]
    pub date: Option<RunDate>,
}

/// `nightrec gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Where to write (`events/`, `items/`, `users/` are created under it).
    #[arg(long)]
    pub out: String,
    /// Users.
    #[arg(long, default_value_t = 600)]
    pub users: usize,
    /// Catalog items.
    #[arg(long, default_value_t = 500)]
    pub items: usize,
    /// Approximate event rows.
    #[arg(long, default_value_t = 40_000)]
    pub events: usize,
    /// Days of behaviour.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Last day with events.
    #[arg(long, default_value = "2026-11-21")]
    pub end_date: RunDate,
}

/// `nightrec report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The published date whose report to rebuild.
    #[arg(long)]
    pub date: RunDate,
}

/// `nightrec eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The date to evaluate (its model must have been trained).
    #[arg(long)]
    pub date: RunDate,
    /// Output format.
    #[arg(long, value_enum, default_value_t = EvalFormat::Table)]
    pub format: EvalFormat,
    /// Where tensors live.
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    /// Also write every test case (model, user_id, item_id, position,
    /// ndcg_10, hr_10) to this local Parquet file, for paired comparisons.
    #[arg(long)]
    pub cases: Option<std::path::PathBuf>,
}

/// Formats of `nightrec eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalFormat {
    /// An aligned text table, one row per (model, segment, metric, k).
    Table,
    /// One JSON object: the date, the lists evaluated and every row.
    Json,
}
