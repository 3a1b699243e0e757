//! `nightrec sql` and `nightrec tables`: analysts' read-only SQL over the
//! raw inputs (`raw_events`, `raw_items`, `raw_users`), the work tables of a
//! date, and its published tables — the files its manifest lists
//! (published wins over work when both exist), with results as a table, CSV, JSON lines or a Parquet file.

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::config::{Config, RunDate};
use crate::error::{DfContext, Error, Result};
use crate::ingest::{self, DATASETS};
use crate::job::Job;
use crate::layout;
use crate::published::{is_published, read_manifest, register_files};

/// A registered table and where its data lives.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    /// SQL name.
    pub name: String,
    /// `raw`, `work` or `published`.
    pub kind: &'static str,
    /// URL of its folder.
    pub location: String,
}

/// Output formats of `nightrec sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header.
    Csv,
    /// One JSON object per line.
    Json,
    /// Parquet (needs `--save`).
    Parquet,
}

/// The latest date with a `_SUCCESS` marker, if any.
pub(crate) async fn latest_published(job_output: &crate::storage::Root) -> Result<Option<RunDate>> {
    for d in layout::dates(job_output, layout::RUNS).await?.into_iter().rev() {
        if is_published(job_output, d).await? {
            return Ok(Some(d));
        }
    }
    Ok(None)
}

/// A session with every table of a date registered.
pub(crate) async fn session(cfg: Config, date: Option<RunDate>) -> Result<(SessionContext, Vec<TableInfo>, RunDate)> {
    let output = crate::storage::Root::open(&cfg.storage.output)?;
    let date = match date {
        Some(d) => d,
        None => latest_published(&output).await?.ok_or_else(|| {
            Error::Usage(format!("nothing is published under {} yet; pass --date", output.folder_url("")))
        })?,
    };
    let job = Job::new(cfg, date, false)?;
    let ctx = job.session()?;
    let mut infos = Vec::new();
    let mapper = ingest::id_mapper(&job.cfg)?;
    // The files the date's night read, when it pinned them; else a listing.
    let pinned: Option<ingest::pin::InputPin> =
        crate::state::read(&job.output, &crate::layout::input_pin(job.date)).await?;
    for ds in DATASETS {
        let files = match &pinned {
            Some(p) => p.files_of(&job.input, ds.name),
            None => ingest::list_files(&job.input, ds, Some(job.window)).await?.files,
        };
        if files.is_empty() {
            continue;
        }
        ingest::register(&ctx, &job.input, ds, &files, mapper.clone(), &ingest::ReadCounts::default())?;
        infos.push(TableInfo {
            name: format!("raw_{}", ds.name),
            kind: "raw",
            location: job.input.folder_url(ds.name),
        });
    }
    let work = job.work("");
    for name in job.output.subfolders(&work).await? {
        if name.starts_with('_') || name == layout::CHECKPOINT {
            continue;
        }
        let location = job.output.folder_url(&job.work(&name));
        ctx.register_parquet(name.as_str(), &location, ParquetReadOptions::default())
            .await
            .ctx(format!("registering {name}"))?;
        infos.push(TableInfo { name, kind: "work", location });
    }
    // Published tables are exactly the files the date's manifest lists.
    if let Some(manifest) = read_manifest(&job.output, job.date).await? {
        for t in &manifest.tables {
            let files: Vec<String> = t.files.iter().map(|f| f.path.clone()).collect();
            register_files(&ctx, &t.name, &job.output, &files).await?;
            infos.retain(|i| i.name != t.name);
            let location = job.output.folder_url(&layout::published(&t.name, job.date));
            infos.push(TableInfo { name: t.name.clone(), kind: "published", location });
        }
    }
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((ctx, infos, date))
}

/// Run one statement; writes are refused unless `allow_writes`.
pub(crate) async fn query(ctx: &SessionContext, sql: &str, allow_writes: bool) -> Result<Vec<RecordBatch>> {
    let opts =
        SQLOptions::new().with_allow_ddl(allow_writes).with_allow_dml(allow_writes).with_allow_statements(allow_writes);
    let df = ctx.sql_with_options(sql, opts).await.map_err(|e| {
        let msg = e.to_string();
        if !allow_writes && (msg.contains("not supported") || msg.contains("DDL") || msg.contains("DML")) {
            Error::Usage(format!("{msg}\nnightrec sql is read-only; pass --allow-writes to run statements that write"))
        } else {
            Error::query("in your query", e)
        }
    })?;
    df.collect().await.map_err(|e| Error::query("running your query", e))
}

/// Write results in a format.
pub(crate) fn write(out: &mut dyn Write, batches: &[RecordBatch], format: Format) -> Result<()> {
    let io = |e: std::io::Error| Error::io("stdout", e);
    match format {
        Format::Table => {
            let s = datafusion::arrow::util::pretty::pretty_format_batches(batches).ctx("formatting results")?;
            writeln!(out, "{s}").map_err(io)?;
        }
        Format::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
            for b in batches {
                w.write(b).ctx("writing CSV")?;
            }
        }
        Format::Json => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            for b in batches {
                w.write(b).ctx("writing JSON")?;
            }
            w.finish().ctx("writing JSON")?;
        }
        Format::Parquet => {
            return Err(Error::Usage("--format parquet needs --save FILE".into()));
        }
    }
    Ok(())
}

/// Save results as a Parquet file (any format name other than parquet saves CSV/JSON/table text).
pub(crate) fn save(path: &std::path::Path, batches: &[RecordBatch], format: Format) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(|e| Error::io(path.display(), e))?;
    if format == Format::Parquet {
        let schema =
            batches.first().map(|b| b.schema()).ok_or_else(|| Error::Usage("the query returned no schema".into()))?;
        let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).ctx("writing Parquet")?;
        for b in batches {
            w.write(b).ctx("writing Parquet")?;
        }
        w.close().ctx("writing Parquet")?;
        Ok(())
    } else {
        write(&mut file, batches, format)
    }
}
