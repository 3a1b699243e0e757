//! Stage `publish`: work tables → `<table>/dt=YYYY-MM-DD/part-NNNNN-<publication>.parquet`,
//! `_runs/dt=YYYY-MM-DD/manifest.json`, then `_SUCCESS`.
//!
//! The work folder is the staging prefix. Its tables are validated (files
//! present with the recorded sizes, the candidate checks of
//! `sql/publish/candidate_checks.sql`) and compared with the latest date
//! published before this one (the day-over-day gate); a failure exits 3 and
//! publishes nothing. Then:
//!
//! 1. every staged file is copied to its published name, which carries the
//!    publication id (a hash of the staged files' checksums), so a date's
//!    earlier publication — and the manifest pointing at it — stays intact;
//! 2. the manifest (every file with rows, bytes and sha256, the day's
//!    figures and the gate's checks) is written in one PUT, which replaces
//!    the previous manifest at once on a local filesystem and on S3 alike;
//! 3. `_SUCCESS` (the run id) is written;
//! 4. files of the date's table folders that the manifest does not list
//!    (earlier publications, leftovers of a killed run) are deleted.
//!
//! A process killed at any point leaves a manifest whose files all exist
//! with their checksums: the old publication before step 2, the new one
//! after. No step relies on rename being atomic. Safe to re-run: a rerun
//! replaces the date with the same contents.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::SessionContext;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::arrays;
use crate::config::RunDate;
use crate::error::{DfContext, Error, Result};
use crate::job::{Job, Stage};
use crate::parquet_io::{FileInfo, Lineage, WrittenTable};
use crate::storage::Root;

/// Tables published each day, and the stage that writes each.
pub const PUBLISHED: &[(&str, Stage)] = &[
    ("user_candidates", Stage::Candidates),
    ("cross_category", Stage::Candidates),
    ("item_similar", Stage::Candidates),
    ("popular_items", Stage::Candidates),
    ("user_segments", Stage::Candidates),
    ("query_candidates", Stage::Candidates),
    ("user_embeddings", Stage::Embed),
    ("item_embeddings", Stage::Embed),
    ("evaluation", Stage::Evaluate),
    ("quarantine", Stage::Clean),
    ("data_quality", Stage::Clean),
];

/// The manifest of a published date.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The date.
    pub date: String,
    /// When it was published (UTC, RFC 3339).
    pub published_at: String,
    /// Lineage of the run that published it.
    pub lineage: Lineage,
    /// Every table with its files.
    pub tables: Vec<ManifestTable>,
    /// Id of this publication (part of every published file name).
    #[serde(default)]
    pub publication: String,
    /// The day's figures the next date's gate compares with.
    #[serde(default)]
    pub stats: Option<DayStats>,
    /// The date the gate compared with, if any.
    #[serde(default)]
    pub compared_with: Option<String>,
    /// The gate's checks.
    #[serde(default)]
    pub gate: Vec<GateCheck>,
}

/// Figures of a published date (sql/publish/day_stats.sql).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DayStats {
    /// Distinct recommended items / in-stock items.
    pub coverage: f64,
    /// Share of users whose list comes from cold start or popularity.
    pub cold_share: f64,
    /// The model's NDCG@10 on the held-out split.
    pub ndcg: Option<f64>,
    /// Users with candidates.
    pub users: u64,
}

/// One day-over-day check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GateCheck {
    /// What is compared.
    pub check: String,
    /// Today's value.
    pub value: f64,
    /// The configured limit.
    pub threshold: f64,
    /// Whether it held.
    pub passed: bool,
}

/// One table in a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestTable {
    /// Table name.
    pub name: String,
    /// Total rows.
    pub rows: u64,
    /// Files, paths relative to the output root.
    pub files: Vec<FileInfo>,
}

/// Path of a date's manifest, relative to the output root.
pub fn manifest_path(date: &str) -> String {
    format!("_runs/dt={date}/manifest.json")
}

/// Path of a date's success marker, relative to the output root.
pub fn success_path(date: &str) -> String {
    format!("_runs/dt={date}/_SUCCESS")
}

async fn staged(job: &Job) -> Result<Vec<WrittenTable>> {
    let mut out = Vec::new();
    for (name, stage) in PUBLISHED {
        let marker = job.marker(*stage).await?.ok_or_else(|| {
            Error::Usage(format!("cannot publish {name}: stage {} has not run for {}", stage.name(), job.date))
        })?;
        let t = marker
            .tables
            .into_iter()
            .find(|t| t.name == *name)
            .ok_or_else(|| Error::Internal(format!("stage {} did not record table {name}", stage.name())))?;
        for f in &t.files {
            let meta =
                job.output.store.head(&job.output.path(&f.path)).await.map_err(|e| Error::storage(&f.path, e))?;
            if meta.size != f.bytes {
                return Err(Error::Internal(format!(
                    "staged file {} has {} bytes, {} were written",
                    f.path, meta.size, f.bytes
                )));
            }
        }
        out.push(t);
    }
    Ok(out)
}

async fn check_candidates(job: &Job) -> Result<SessionContext> {
    let ctx = job.session()?;
    job.register_work(&ctx, &["user_candidates", "interactions", "item_index", "user_embeddings"]).await?;
    let types = StringArray::from_iter_values(job.cfg.candidates.excluded_types().iter().map(|e| e.as_str()));
    let schema = Arc::new(Schema::new(vec![Field::new("event_type", DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(types)]).ctx("listing excluded event types")?;
    ctx.register_batch("excluded_event_types", batch).ctx("registering excluded_event_types")?;
    let params = vec![("k", ScalarValue::Int64(Some(job.cfg.candidates.k as i64)))];
    let res = crate::sql::file("publish", "candidate_checks")?
        .plan(&ctx, params)
        .await?
        .collect()
        .await
        .ctx("checking user_candidates before publishing")?;
    let checks = arrays::strings_required(&res, "check")?;
    let counts = arrays::ints(&res, "violations")?;
    let failed: Vec<String> =
        checks.iter().zip(&counts).filter(|(_, n)| **n > 0).map(|(c, n)| format!("{c}: {n}")).collect();
    if failed.is_empty() {
        Ok(ctx)
    } else {
        Err(Error::DataQuality(format!(
            "user_candidates failed validation ({}); nothing was published",
            failed.join(", ")
        )))
    }
}

/// Register a table made of exactly these files (paths relative to `root`).
pub async fn register_files(ctx: &SessionContext, name: &str, root: &Root, files: &[String]) -> Result<()> {
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(root.object_url(&root.path(f))).ctx(format!("the URL of {f}")))
        .collect::<Result<Vec<_>>>()?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await
        .ctx(format!("reading the schema of {name}"))?;
    let table = ListingTable::try_new(config).ctx(format!("registering {name}"))?;
    let _ = ctx.deregister_table(name);
    ctx.register_table(name, Arc::new(table)).ctx(format!("registering {name}"))?;
    Ok(())
}

/// A date's manifest, when it is published (manifest and `_SUCCESS`).
pub async fn read_manifest(root: &Root, date: RunDate) -> Result<Option<Manifest>> {
    let d = date.to_string();
    if !root.exists(&root.path(&success_path(&d))).await? {
        return Ok(None);
    }
    let Some(bytes) = root.get_opt(&root.path(&manifest_path(&d))).await? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Internal(format!("{}: {e}", manifest_path(&d))))
}

/// The latest date published before `date`, with its manifest.
pub async fn previous_publication(root: &Root, date: RunDate) -> Result<Option<Manifest>> {
    let mut dates: Vec<RunDate> = root
        .subfolders("_runs")
        .await?
        .iter()
        .filter_map(|d| d.strip_prefix("dt=").and_then(|d| d.parse().ok()))
        .filter(|d| *d < date)
        .collect();
    dates.sort();
    for d in dates.into_iter().rev() {
        if let Some(m) = read_manifest(root, d).await? {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

async fn day_stats(job: &Job, ctx: &SessionContext) -> Result<DayStats> {
    job.register_work(ctx, &["evaluation"]).await?;
    let b = crate::sql::file("publish", "day_stats")?.collect(ctx, vec![]).await?;
    let f = |c: &str| arrays::floats(&b, c).map(|v| v.first().copied().flatten());
    Ok(DayStats {
        coverage: f("coverage")?.unwrap_or(0.0),
        cold_share: f("cold_share")?.unwrap_or(0.0),
        ndcg: f("ndcg")?,
        users: arrays::ints(&b, "users")?.first().copied().unwrap_or(0).max(0) as u64,
    })
}

/// Compare today with the latest earlier publication; Err when a check fails.
async fn gate(job: &Job, ctx: &SessionContext, today: &DayStats) -> Result<(Option<String>, Vec<GateCheck>)> {
    let g = &job.cfg.gate;
    if !g.enabled {
        return Ok((None, Vec::new()));
    }
    let Some(prev) = previous_publication(&job.output, job.date).await? else { return Ok((None, Vec::new())) };
    let mut checks = Vec::new();
    if let Some(t) = prev.tables.iter().find(|t| t.name == "user_candidates") {
        let files: Vec<String> = t.files.iter().map(|f| f.path.clone()).collect();
        register_files(ctx, "previous_candidates", &job.output, &files).await?;
        let b = crate::sql::file("publish", "candidate_overlap")?.collect(ctx, vec![]).await?;
        let users = arrays::ints(&b, "users")?.first().copied().unwrap_or(0);
        if users > 0 {
            let overlap = arrays::floats(&b, "overlap")?.first().copied().flatten().unwrap_or(1.0);
            checks.push(("candidate_overlap", overlap, g.min_candidate_overlap, overlap >= g.min_candidate_overlap));
        }
    }
    if let Some(p) = &prev.stats {
        if p.coverage > 0.0 {
            let ratio = today.coverage / p.coverage;
            checks.push(("coverage_ratio", ratio, g.min_coverage_ratio, ratio >= g.min_coverage_ratio));
        }
        let up = today.cold_share - p.cold_share;
        checks.push(("cold_share_increase", up, g.max_cold_share_increase, up <= g.max_cold_share_increase));
        if let (Some(now), Some(before)) = (today.ndcg, p.ndcg)
            && before > 0.0
        {
            let drop = 1.0 - now / before;
            checks.push(("ndcg_drop", drop, g.max_ndcg_drop, drop <= g.max_ndcg_drop));
        }
    }
    let checks: Vec<GateCheck> = checks
        .into_iter()
        .map(|(c, v, t, ok)| GateCheck { check: c.into(), value: v, threshold: t, passed: ok })
        .collect();
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{} = {:.4} (limit {})", c.check, c.value, c.threshold))
        .collect();
    if !failed.is_empty() {
        return Err(Error::DataQuality(format!(
            "day-over-day gate against {} failed: {}; nothing was published (thresholds: [gate] in the config)",
            prev.date,
            failed.join(", ")
        )));
    }
    Ok((Some(prev.date), checks))
}

/// Id of a publication: a hash of the staged files' checksums.
fn publication_id(tables: &[WrittenTable]) -> String {
    let mut h = Sha256::new();
    for t in tables {
        h.update(t.name.as_bytes());
        for f in &t.files {
            h.update(f.sha256.as_bytes());
        }
    }
    crate::config::hex(&h.finalize())[..12].to_string()
}

/// Run the stage.
pub async fn run(job: &Job) -> Result<(Manifest, Vec<(String, String)>)> {
    let tables = staged(job).await?;
    let ctx = check_candidates(job).await?;
    let stats = day_stats(job, &ctx).await?;
    let (compared_with, checks) = gate(job, &ctx, &stats).await?;
    let date = job.date.to_string();
    let publication = publication_id(&tables);
    let mut manifest_tables = Vec::new();
    for t in &tables {
        let folder = format!("{}/{}", t.name, job.date.partition());
        let mut files = Vec::new();
        for (i, f) in t.files.iter().enumerate() {
            let dest = format!("{folder}/part-{i:05}-{publication}.parquet");
            // Same name, same publication id, same bytes: a rerun after a
            // kill finds some files in place (copies are atomic).
            let present = job.output.head_opt(&job.output.path(&dest)).await?.is_some_and(|m| m.size == f.bytes);
            if !present {
                job.output.copy(&job.output.path(&f.path), &job.output.path(&dest)).await?;
            }
            files.push(FileInfo { path: dest, ..f.clone() });
        }
        manifest_tables.push(ManifestTable { name: t.name.clone(), rows: t.rows(), files });
    }
    let manifest = Manifest {
        date: date.clone(),
        published_at: chrono::Utc::now().to_rfc3339(),
        lineage: job.lineage.clone(),
        tables: manifest_tables,
        publication: publication.clone(),
        stats: Some(stats.clone()),
        compared_with: compared_with.clone(),
        gate: checks.clone(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Internal(format!("manifest: {e}")))?;
    job.output.put(&job.output.path(&manifest_path(&date)), Bytes::from(json)).await?;
    job.output.put(&job.output.path(&success_path(&date)), Bytes::from(job.run_id.clone())).await?;
    // Only now may files of earlier publications of this date go.
    let keep: HashSet<&str> = manifest.tables.iter().flat_map(|t| t.files.iter().map(|f| f.path.as_str())).collect();
    let mut removed = 0;
    for t in &manifest.tables {
        removed += job.output.remove_staging_leftovers(&format!("{}/{}", t.name, job.date.partition()))?;
        for meta in job.output.list(&format!("{}/{}", t.name, job.date.partition())).await? {
            let rel = job.output.relative(&meta.location);
            if !keep.contains(rel.as_str()) {
                job.output.delete(&meta.location).await?;
                removed += 1;
            }
        }
    }
    let mut facts = vec![
        ("published".into(), job.output.object_url(&job.output.path(&manifest_path(&date)))),
        ("publication".into(), publication),
        (
            "coverage / cold-start share".into(),
            format!("{:.3} / {:.3} of {} users", stats.coverage, stats.cold_share, stats.users),
        ),
    ];
    match compared_with {
        Some(d) => facts.push((
            format!("gate vs {d}"),
            checks
                .iter()
                .map(|c| format!("{} {:.3} (limit {})", c.check, c.value, c.threshold))
                .collect::<Vec<_>>()
                .join(", "),
        )),
        None => facts.push(("gate".into(), "no earlier publication to compare with".into())),
    }
    if removed > 0 {
        facts.push(("files of earlier publications removed".into(), removed.to_string()));
    }
    Ok((manifest, facts))
}
