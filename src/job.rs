//! One nightly run: its configuration, storage roots, date, and the
//! bookkeeping that makes stages resumable.
//!
//! Work files live under `<output>/_work/dt=YYYY-MM-DD/<table>/`. When a
//! stage finishes it writes `_work/dt=…/_stages/<stage>.json` with a
//! fingerprint of everything it depends on (its config sections, the input
//! snapshot, the fingerprints of the stages before it). A rerun skips a
//! stage whose recorded fingerprint matches, unless `--force`.

use datafusion::dataframe::DataFrame;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use sha2::{Digest, Sha256};

use crate::config::{Config, RunDate, Window, hex};
use crate::error::{DfContext, Error, Result};
use crate::ledger::{Stage, StageMarker};
use crate::parquet_io::{Lineage, WrittenTable, write_batches, write_stream};
use crate::storage::Root;
use crate::{layout, state};

/// Everything a stage needs to run.
pub(crate) struct Job {
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
    pub(crate) fn new(cfg: Config, date: RunDate, force: bool) -> Result<Job> {
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
    pub(crate) fn work(&self, table: &str) -> String {
        layout::work(self.date, table)
    }

    /// The marker a stage left for this date, if any (an unreadable one is
    /// absent: the stage reruns; see [`crate::state`]).
    pub(crate) async fn marker(&self, stage: Stage) -> Result<Option<StageMarker>> {
        state::read(&self.output, &layout::stage_marker(self.date, stage)).await
    }

    /// Remove a stage's marker (before it runs, so a crash leaves none).
    pub(crate) async fn clear_marker(&self, stage: Stage) -> Result<()> {
        self.output.delete(&self.output.path(&layout::stage_marker(self.date, stage))).await
    }

    /// Record a finished stage.
    pub(crate) async fn write_marker(&self, marker: &StageMarker) -> Result<()> {
        state::write(&self.output, &layout::stage_marker(self.date, marker.stage), marker).await.map(|_| ())
    }

    /// The fingerprint a stage would have now.
    pub(crate) async fn fingerprint(&self, stage: Stage, extra: &str) -> Result<String> {
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
    pub(crate) fn session(&self) -> Result<SessionContext> {
        crate::engine::session(&self.cfg, &[&self.input, &self.output])
    }

    /// Register work tables of this date under their names.
    pub(crate) async fn register_work(&self, ctx: &SessionContext, tables: &[&str]) -> Result<()> {
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
    pub(crate) async fn write_work(&self, df: DataFrame, table: &str) -> Result<WrittenTable> {
        let stream = df.execute_stream().await.ctx(format!("running the query for {table}"))?;
        write_stream(&self.output, &self.work(table), table, stream, &self.lineage, self.cfg.runtime.max_rows_per_file)
            .await
    }

    /// Write batches built in memory as a work table.
    pub(crate) async fn write_work_batches(
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
    pub(crate) async fn sql_to_work(
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
    pub(crate) async fn stream_work(
        &self,
        ctx: &SessionContext,
        table: &str,
        query: crate::sql::SqlFile,
        mut each: impl FnMut(&datafusion::arrow::array::RecordBatch) -> Result<()>,
    ) -> Result<()> {
        use futures::StreamExt;
        self.register_work(ctx, &[table]).await?;
        let df = ctx.sql(query.text).await.ctx(format!("reading {table}"))?;
        let mut stream = df.execute_stream().await.ctx(format!("reading {table}"))?;
        while let Some(b) = stream.next().await {
            each(&b.ctx(format!("reading {table}"))?)?;
        }
        Ok(())
    }

    /// Read a whole work table into memory.
    pub(crate) async fn read_work(
        &self,
        ctx: &SessionContext,
        table: &str,
        query: crate::sql::SqlFile,
    ) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        self.register_work(ctx, &[table]).await?;
        ctx.sql(query.text).await.ctx(format!("reading {table}"))?.collect().await.ctx(format!("reading {table}"))
    }
}
