//! One nightly run: its configuration, storage roots, date, and the
//! bookkeeping that makes stages resumable.
//!
//! Work files live under `<output>/_work/dt=YYYY-MM-DD/<table>/`. When a
//! stage finishes it writes `_work/dt=…/_stages/<stage>.json` with a
//! fingerprint of everything it depends on (its config sections, the input
//! snapshot, the fingerprints of the stages before it). A rerun skips a
//! stage whose recorded fingerprint matches, unless `--force`.

use std::time::Instant;

use datafusion::dataframe::DataFrame;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, RunDate, Window, hex};
use crate::error::{DfContext, Error, Result};
use crate::parquet_io::{Lineage, WrittenTable, write_batches, write_stream};
use crate::storage::Root;
use crate::{layout, state};

/// The stages of a nightly run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Raw inputs → clean_events, items, users, quarantine, data_quality.
    Clean,
    /// Clean tables → sequences, interactions, popularity, item text.
    Trainset,
    /// Item text → item_text_embeddings.
    Text,
    /// Sequences → model checkpoint.
    Train,
    /// Checkpoint → user_embeddings, item_embeddings.
    Embed,
    /// Embeddings → user_candidates.
    Candidates,
    /// Checkpoint + held-out items → evaluation.
    Evaluate,
    /// Work tables → published partitions, manifest, _SUCCESS.
    Publish,
}

impl Stage {
    /// Every stage in run order.
    pub const ALL: [Stage; 8] = [
        Stage::Clean,
        Stage::Trainset,
        Stage::Text,
        Stage::Train,
        Stage::Embed,
        Stage::Candidates,
        Stage::Evaluate,
        Stage::Publish,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Clean => "clean",
            Stage::Trainset => "trainset",
            Stage::Text => "text",
            Stage::Train => "train",
            Stage::Embed => "embed",
            Stage::Candidates => "candidates",
            Stage::Evaluate => "evaluate",
            Stage::Publish => "publish",
        }
    }

    /// Stages whose outputs this one reads.
    pub fn upstream(self) -> &'static [Stage] {
        match self {
            Stage::Clean => &[],
            Stage::Trainset => &[Stage::Clean],
            Stage::Text => &[Stage::Trainset],
            Stage::Train => &[Stage::Trainset, Stage::Text],
            Stage::Embed => &[Stage::Train],
            Stage::Candidates => &[Stage::Embed],
            Stage::Evaluate => &[Stage::Train, Stage::Candidates],
            Stage::Publish => &[Stage::Clean, Stage::Candidates, Stage::Evaluate],
        }
    }

    /// Config sections and single keys whose change invalidates this
    /// stage's outputs (and so, through the fingerprints, every stage
    /// downstream). `run.threads`, `run.device`, `[runtime]` (memory pool,
    /// spill folder, file sizes) and the log format change how a stage
    /// runs, not what it produces: they rerun nothing.
    pub fn config_keys(self) -> &'static [&'static str] {
        match self {
            Stage::Clean => &["clean", "run.lookback_days"],
            Stage::Trainset => &["trainset", "candidates.repeat_purchases"],
            Stage::Text => &["text"],
            Stage::Train => &["model", "run.seed"],
            Stage::Embed => &[],
            Stage::Candidates => &["candidates", "run.seed"],
            Stage::Evaluate => &[
                "evaluate",
                "run.seed",
                "candidates.repeat_purchases",
                "candidates.buy_again_weight",
                "candidates.buy_again_half_life_days",
                "candidates.buy_again_basket_decay",
                "candidates.explore_weights",
            ],
            Stage::Publish => &["gate"],
        }
    }
}

/// What a finished stage leaves behind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageMarker {
    /// The stage.
    pub stage: Stage,
    /// Fingerprint of its inputs and config.
    pub fingerprint: String,
    /// The run that produced it.
    pub run_id: String,
    /// Wall time in seconds.
    pub seconds: f64,
    /// CPU seconds (user + system, all threads).
    #[serde(default)]
    pub cpu_seconds: f64,
    /// Peak resident memory of the process during the stage, in MiB.
    #[serde(default)]
    pub peak_rss_mb: f64,
    /// Tables written.
    pub tables: Vec<WrittenTable>,
    /// Free-form facts for the run summary (metric values, sizes).
    pub facts: Vec<(String, String)>,
}

/// How one stage went in this run.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// The stage.
    pub stage: Stage,
    /// False when skipped because nothing changed.
    pub ran: bool,
    /// Wall time in seconds (of the run that produced the outputs).
    pub seconds: f64,
    /// CPU seconds, user + system (of the run that produced the outputs).
    pub cpu_seconds: f64,
    /// Peak resident memory during the stage in MiB (likewise).
    pub peak_rss_mb: f64,
    /// Tables and their row counts.
    pub tables: Vec<(String, u64)>,
    /// Facts for the summary.
    pub facts: Vec<(String, String)>,
}

/// Everything a stage needs to run.
pub struct Job {
    /// Configuration after all overrides.
    pub cfg: Config,
    /// The run date.
    pub date: RunDate,
    /// The days of behaviour the run reads (`run.lookback_days` up to the date).
    pub window: Window,
    /// Input root.
    pub input: Root,
    /// Output root.
    pub output: Root,
    /// Unique id of this run.
    pub run_id: String,
    /// Rerun stages even when nothing changed.
    pub force: bool,
    /// Train from scratch instead of warm-starting from an earlier date.
    pub full_retrain: bool,
    /// Lineage written into every file.
    pub lineage: Lineage,
}

impl Job {
    /// Prepare a run.
    pub fn new(cfg: Config, date: RunDate, force: bool) -> Result<Job> {
        let input = Root::open(&cfg.storage.input)?;
        let output = Root::open(&cfg.storage.output)?;
        let now = chrono::Utc::now();
        let run_id = format!("{}-{}", now.format("%Y%m%dT%H%M%S%.3fZ"), std::process::id());
        let lineage = Lineage {
            run_id: run_id.clone(),
            config_hash: cfg.hash(),
            input_snapshot: String::new(),
            model_version: String::new(),
            date: date.to_string(),
        };
        let window = Window::new(date, cfg.run.lookback_days);
        Ok(Job { cfg, date, window, input, output, run_id, force, full_retrain: false, lineage })
    }

    /// Folder of a work table, relative to the output root.
    pub fn work(&self, table: &str) -> String {
        layout::work(self.date, table)
    }

    /// The marker a stage left for this date, if any (an unreadable one is
    /// absent: the stage reruns; see [`crate::state`]).
    pub async fn marker(&self, stage: Stage) -> Result<Option<StageMarker>> {
        state::read(&self.output, &layout::stage_marker(self.date, stage)).await
    }

    /// Remove a stage's marker (before it runs, so a crash leaves none).
    pub async fn clear_marker(&self, stage: Stage) -> Result<()> {
        self.output.delete(&self.output.path(&layout::stage_marker(self.date, stage))).await
    }

    /// Record a finished stage.
    pub async fn write_marker(&self, marker: &StageMarker) -> Result<()> {
        state::write(&self.output, &layout::stage_marker(self.date, marker.stage), marker).await.map(|_| ())
    }

    /// The fingerprint a stage would have now.
    pub async fn fingerprint(&self, stage: Stage, extra: &str) -> Result<String> {
        let mut h = Sha256::new();
        h.update(stage.name());
        h.update(self.cfg.hash_of(stage.config_keys()));
        h.update(extra);
        for up in stage.upstream() {
            let m = self.marker(*up).await?.ok_or_else(|| {
                Error::Usage(format!(
                    "stage {} needs stage {} for {}; run it first (or run all stages)",
                    stage.name(),
                    up.name(),
                    self.date
                ))
            })?;
            h.update(m.fingerprint);
        }
        Ok(hex(&h.finalize())[..16].to_string())
    }

    /// A query session with this job's stores.
    pub fn session(&self) -> Result<SessionContext> {
        crate::engine::session(&self.cfg, &[&self.input, &self.output])
    }

    /// Register work tables of this date under their names.
    pub async fn register_work(&self, ctx: &SessionContext, tables: &[&str]) -> Result<()> {
        for t in tables {
            let url = self.output.folder_url(&self.work(t));
            // Registering again replaces: the folder may have been rewritten.
            ctx.deregister_table(*t).ctx(format!("replacing work table {t}"))?;
            ctx.register_parquet(*t, &url, ParquetReadOptions::default())
                .await
                .ctx(format!("registering work table {t} at {url}"))?;
        }
        Ok(())
    }

    /// Run a DataFrame and write it as a work table.
    pub async fn write_work(&self, df: DataFrame, table: &str) -> Result<WrittenTable> {
        let stream = df.execute_stream().await.ctx(format!("running the query for {table}"))?;
        write_stream(&self.output, &self.work(table), table, stream, &self.lineage, self.cfg.runtime.max_rows_per_file)
            .await
    }

    /// Write batches built in memory as a work table.
    pub async fn write_work_batches(
        &self,
        table: &str,
        schema: datafusion::arrow::datatypes::SchemaRef,
        batches: &[datafusion::arrow::array::RecordBatch],
    ) -> Result<WrittenTable> {
        write_batches(
            &self.output,
            &self.work(table),
            table,
            schema,
            batches,
            &self.lineage,
            self.cfg.runtime.max_rows_per_file,
        )
        .await
    }

    /// Run one SQL file and write its result as a work table.
    pub async fn sql_to_work(
        &self,
        ctx: &SessionContext,
        stage: &str,
        table: &str,
        params: Vec<(&str, datafusion::common::ScalarValue)>,
    ) -> Result<WrittenTable> {
        let df = crate::sql::file(stage, table)?.plan(ctx, params).await?;
        let t = self.write_work(df, table).await?;
        tracing::info!(stage, table, rows = t.rows(), "wrote work table");
        Ok(t)
    }

    /// Run a query over a work table and hand its result to `each` a batch
    /// at a time: the whole result is never in memory.
    pub async fn stream_work(
        &self,
        ctx: &SessionContext,
        table: &str,
        sql: &str,
        mut each: impl FnMut(&datafusion::arrow::array::RecordBatch) -> Result<()>,
    ) -> Result<()> {
        use futures::StreamExt;
        self.register_work(ctx, &[table]).await?;
        let df = ctx.sql(sql).await.ctx(format!("reading {table}"))?;
        let mut stream = df.execute_stream().await.ctx(format!("reading {table}"))?;
        while let Some(b) = stream.next().await {
            each(&b.ctx(format!("reading {table}"))?)?;
        }
        Ok(())
    }

    /// Read a whole work table into memory.
    pub async fn read_work(
        &self,
        ctx: &SessionContext,
        table: &str,
        sql: &str,
    ) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        self.register_work(ctx, &[table]).await?;
        ctx.sql(sql).await.ctx(format!("reading {table}"))?.collect().await.ctx(format!("reading {table}"))
    }
}

impl StageReport {
    /// The report of a stage from its marker.
    pub fn from_marker(marker: StageMarker, ran: bool) -> StageReport {
        StageReport {
            stage: marker.stage,
            ran,
            seconds: marker.seconds,
            cpu_seconds: marker.cpu_seconds,
            peak_rss_mb: marker.peak_rss_mb,
            tables: marker.tables.iter().map(|t| (t.name.clone(), t.rows())).collect(),
            facts: marker.facts,
        }
    }
}

/// Time a stage body (wall, CPU, peak memory) and build its marker.
pub struct StageTimer {
    stage: Stage,
    start: Instant,
    cpu: f64,
}

impl StageTimer {
    /// Start timing.
    pub fn start(stage: Stage) -> StageTimer {
        crate::resources::reset_peak_rss();
        StageTimer { stage, start: Instant::now(), cpu: crate::resources::cpu_seconds() }
    }

    /// Finish with the tables written and summary facts.
    pub fn finish(
        self,
        job: &Job,
        fingerprint: String,
        tables: Vec<WrittenTable>,
        facts: Vec<(String, String)>,
    ) -> StageMarker {
        StageMarker {
            stage: self.stage,
            fingerprint,
            run_id: job.run_id.clone(),
            seconds: self.start.elapsed().as_secs_f64(),
            cpu_seconds: crate::resources::cpu_seconds() - self.cpu,
            peak_rss_mb: crate::resources::peak_rss_mb(),
            tables,
            facts,
        }
    }
}
