//! Stage `publish`: work tables → `<table>/dt=YYYY-MM-DD/part-NNNNN-<publication>.parquet`,
//! `_runs/dt=YYYY-MM-DD/summary-<sha>.json`, `report-<sha>.html`,
//! `manifest.json`, then `_SUCCESS` (paths: [`crate::layout`]).
//!
//! The work folder is the staging prefix. Its tables are validated (files
//! present with the recorded sizes, the candidate checks of
//! `sql/publish/candidate_checks.sql`) and compared with the latest date
//! published before this one (the day-over-day gate); a failure exits 3 and
//! publishes nothing. Then, under the date's lease ([`crate::lease`],
//! checked before step 1, before the manifest and before `_SUCCESS`):
//!
//! 1. `_SUCCESS` is deleted, when the date was published before: from here
//!    on the date reads as "being published";
//! 2. every staged file is copied to its published name, which carries the
//!    publication id (a hash of the staged files' checksums), so the
//!    date's earlier publication — and the manifest pointing at it — stays
//!    intact;
//! 3. the run summary and the report are written under names made of their
//!    own checksums (so never over a file the current manifest lists), then
//!    the manifest (every file with rows, bytes and sha256, the summary, the
//!    report, the day's figures and the gate's checks) in one PUT, which
//!    replaces the previous manifest at once on a local filesystem and on S3
//!    alike;
//! 4. files of the date's table folders and of `_runs/dt=D/` that the
//!    manifest does not list (earlier publications, leftovers of a killed
//!    run) are deleted;
//! 5. `_SUCCESS` (the run id) is written, last.
//!
//! `nightrec report` republishes a rebuilt page through the same steps.
//! Two guarantees follow, for a process killed at any point, with no
//! rename anywhere, while one process at a time writes a date (the lease):
//! - **`_SUCCESS` readers** (Hadoop convention: wait for `_SUCCESS`, then
//!   read `<table>/dt=D/` by glob or as a Hive partition): whenever
//!   `_SUCCESS` exists, the date's table folders hold exactly the files of
//!   the manifest beside it. A reader that checks `_SUCCESS` before and
//!   after its read, with the same content (the run id), read one whole
//!   publication.
//! - **Manifest readers**: every file the manifest lists (tables, summary,
//!   report) exists with its checksum: the old publication's before step
//!   3, the new one's after.
//!
//! Safe to re-run: a rerun replaces the date with the same contents.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use crate::arrays;
use crate::config::RunDate;
use crate::error::{DfContext, Error, Result};
use crate::job::Job;
use crate::lease::Lease;
use crate::ledger::{RunSummary, Stage};
use crate::parquet_io::{FileInfo, WrittenTable};
use crate::published::{
    DayStats, GateCheck, Manifest, ManifestTable, overlap, previous_publication, read_manifest, register_files,
};
use crate::quality::Check;
use crate::storage::Root;
use crate::{layout, report, state};

/// Tables published each day, and the stage that writes each.
pub(crate) const PUBLISHED: &[(&str, Stage)] = &[
    ("user_candidates", Stage::Candidates),
    ("cross_category", Stage::Candidates),
    ("item_similar", Stage::Candidates),
    ("popular_items", Stage::Candidates),
    ("user_segments", Stage::Candidates),
    ("query_candidates", Stage::Candidates),
    ("user_embeddings", Stage::Embed),
    ("item_embeddings", Stage::Embed),
    ("evaluation", Stage::Evaluate),
    ("training_epochs", Stage::Train),
    ("quarantine", Stage::Clean),
    ("data_quality", Stage::Clean),
];

/// Published tables that a stage of an older nightrec did not write: a
/// date staged by one is published without them.
const OPTIONAL: &[&str] = &["training_epochs"];

async fn staged(job: &Job) -> Result<Vec<WrittenTable>> {
    let mut out = Vec::new();
    for (name, stage) in PUBLISHED {
        let marker = job.marker(*stage).await?.ok_or_else(|| {
            Error::Usage(format!("cannot publish {name}: stage {} has not run for {}", stage.name(), job.date))
        })?;
        let Some(t) = marker.tables.into_iter().find(|t| t.name == *name) else {
            if OPTIONAL.contains(name) {
                continue;
            }
            return Err(Error::Internal(format!("stage {} did not record table {name}", stage.name())));
        };
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

async fn day_stats(job: &Job, ctx: &SessionContext) -> Result<DayStats> {
    job.register_work(ctx, &["evaluation"]).await?;
    let b = crate::sql::file("publish", "day_stats")?.collect(ctx, vec![]).await?;
    let f = |c: &str| arrays::floats(&b, c).map(|v| v.first().copied().flatten());
    Ok(DayStats {
        coverage: f("coverage")?.unwrap_or(0.0),
        cold_share: f("cold_share")?.unwrap_or(0.0),
        ndcg: f("ndcg")?,
        users: arrays::ints(&b, "users")?.first().copied().unwrap_or(0).max(0) as u64,
        recall: f("recall")?,
        popularity_ndcg: f("popularity_ndcg")?,
        novelty: f("novelty")?,
        diversity: f("diversity")?,
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
        let (users, sum) = overlap(ctx).await?.iter().fold((0, 0.0), |(n, s), b| (n + b.1, s + b.2));
        if users > 0 {
            let overlap = sum / users as f64;
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

/// Register the `user_candidates` of the latest publication before this
/// date as `previous_candidates`; returns that date.
async fn register_previous(job: &Job, ctx: &SessionContext) -> Result<Option<String>> {
    let Some(prev) = previous_publication(&job.output, job.date).await? else { return Ok(None) };
    let Some(t) = prev.tables.iter().find(|t| t.name == "user_candidates") else { return Ok(None) };
    let files: Vec<String> = t.files.iter().map(|f| f.path.clone()).collect();
    register_files(ctx, "previous_candidates", &job.output, &files).await?;
    Ok(Some(prev.date))
}

/// Write a document of the publication (the summary, the report) under a
/// name made of its own checksum, in one PUT; its manifest entry. A name
/// is never reused for other bytes, so the files an earlier manifest lists
/// stay as they are until that manifest has been replaced.
async fn write_document(out: &Root, date: RunDate, doc: layout::Document, bytes: Bytes, rows: u64) -> Result<FileInfo> {
    let sha256 = crate::config::hex(&Sha256::digest(&bytes));
    let path = layout::document(date, doc, &sha256[..16]);
    let info = FileInfo { path: path.clone(), rows, bytes: bytes.len() as u64, sha256 };
    let present = out.head_opt(&out.path(&path)).await?.is_some_and(|m| m.size == info.bytes);
    if !present {
        out.put(&out.path(&path), bytes).await?;
    }
    Ok(info)
}

/// Steps 1 of the protocol: from here until [`finish`] the date reads as
/// not published. Returns the manifest being replaced, if any.
async fn begin(out: &Root, date: RunDate, lease: &Lease) -> Result<Option<Manifest>> {
    lease.check()?;
    let before: Option<Manifest> = state::read(out, &layout::manifest(date)).await?;
    let success = out.path(&layout::success(date));
    if out.exists(&success).await? {
        tracing::info!(%date, "re-publishing: _SUCCESS removed until the new publication is complete");
        out.delete(&success).await?;
    }
    Ok(before)
}

/// Steps 3 (the manifest, in one PUT), 4 (files of the date that the
/// manifest does not list go) and 5 (`_SUCCESS`, last). Returns how many
/// files were removed.
async fn finish(out: &Root, m: &Manifest, before: Option<&Manifest>, run_id: &str, lease: &Lease) -> Result<usize> {
    let date: RunDate = m.date.parse()?;
    lease.check()?;
    state::write(out, &layout::manifest(date), m).await?;
    // Only now may files of earlier publications of this date go, in the
    // folders of today's tables and of any the last publication had.
    let keep: HashSet<&str> = m.files().collect();
    let mut names: Vec<&str> = m.tables.iter().map(|t| t.name.as_str()).collect();
    names.extend(before.iter().flat_map(|m| m.tables.iter().map(|t| t.name.as_str())));
    names.sort_unstable();
    names.dedup();
    let mut removed = 0;
    let mut folders: Vec<String> = names.into_iter().map(|n| layout::published(n, date)).collect();
    folders.push(layout::runs(date));
    for folder in folders {
        removed += out.remove_staging_leftovers(&folder)?;
        for meta in out.list(&folder).await? {
            let rel = out.relative(&meta.location);
            if !keep.contains(rel.as_str()) && layout::is_publication_file(date, &rel) {
                out.delete(&meta.location).await?;
                removed += 1;
            }
        }
    }
    // 5. Last: the folders now hold exactly the manifest's files.
    lease.check()?;
    out.put(&out.path(&layout::success(date)), Bytes::from(run_id.to_string())).await?;
    Ok(removed)
}

/// `nightrec report`: rebuild the report of a published date from its
/// published tables and manifests (nothing reruns). When its bytes changed,
/// publish it through the same protocol as the publish stage, under the
/// date's lease: `_SUCCESS` goes, the new page is written under a new name,
/// the manifest is replaced, the old page goes, `_SUCCESS` comes back.
/// Returns the report's URL.
pub(crate) async fn rebuild_report(job: &Job) -> Result<String> {
    let (date, out) = (job.date, &job.output);
    let ttl = std::time::Duration::from_secs(job.cfg.run.lease_seconds);
    let lease = crate::lease::acquire_date(out, date, &job.run_id, "report", ttl).await?;
    let mut m = read_manifest(out, date).await?.ok_or_else(|| {
        Error::Usage(format!("{date} is not published (no _SUCCESS and manifest): nothing to report"))
    })?;
    let ctx = job.session()?;
    for name in ["evaluation", "user_candidates", "data_quality", "training_epochs"] {
        match m.tables.iter().find(|t| t.name == name) {
            Some(t) => {
                let files: Vec<String> = t.files.iter().map(|f| f.path.clone()).collect();
                register_files(&ctx, name, out, &files).await?;
            }
            None if OPTIONAL.contains(&name) => {}
            None => return Err(Error::Internal(format!("the manifest of {date} lists no table {name}"))),
        }
    }
    let previous = register_previous(job, &ctx).await?;
    let summary: Option<RunSummary> = match &m.summary {
        Some(f) => state::read(out, &f.path).await?,
        None => None,
    };
    let html = report::build(job, &ctx, &report::About::of(&m, summary), previous.as_deref()).await?;
    let sha = crate::config::hex(&Sha256::digest(html.as_bytes()));
    if m.report.as_ref().is_some_and(|r| r.sha256 == sha) {
        // The same page: put it back if it went missing (same name, same bytes).
        let info = write_document(out, date, layout::Document::Report, Bytes::from(html), 0).await?;
        return Ok(out.object_url(&out.path(&info.path)));
    }
    let before = begin(out, date, &lease).await?;
    let info = write_document(out, date, layout::Document::Report, Bytes::from(html), 0).await?;
    let url = out.object_url(&out.path(&info.path));
    m.report = Some(info);
    finish(out, &m, before.as_ref(), &job.run_id, &lease).await?;
    Ok(url)
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

/// Add the checks this run made after clean (input files that arrived or
/// changed after the pin) to `data_quality`, as a file of their own.
async fn add_run_checks(job: &Job, tables: &mut [WrittenTable], checks: &[Check]) -> Result<()> {
    let folder = job.work(RUN_CHECKS);
    if checks.is_empty() {
        return job.output.delete_folder(&folder).await;
    }
    let batch = crate::quality::batch(checks)?;
    let written = job.write_work_batches(RUN_CHECKS, batch.schema(), &[batch]).await?;
    let dq = tables
        .iter_mut()
        .find(|t| t.name == "data_quality")
        .ok_or_else(|| Error::Internal("no data_quality table staged".into()))?;
    dq.files.extend(written.files);
    Ok(())
}

/// The work table of the checks a run adds to `data_quality` at publish.
const RUN_CHECKS: &str = "data_quality_run";

/// Run the stage; `summary` is the run summary so far (the stages before
/// publish), written beside the manifest; `run_checks` go into
/// `data_quality` beside clean's.
pub(crate) async fn run(
    job: &Job,
    summary: &RunSummary,
    run_checks: &[Check],
    lease: &Lease,
) -> Result<(Manifest, Vec<(String, String)>)> {
    let mut tables = staged(job).await?;
    add_run_checks(job, &mut tables, run_checks).await?;
    let ctx = check_candidates(job).await?;
    let stats = day_stats(job, &ctx).await?;
    let (compared_with, checks) = gate(job, &ctx, &stats).await?;
    let (date, out) = (job.date, &job.output);
    let publication = publication_id(&tables);
    // The report, built before anything changes: when it cannot be built,
    // nothing is published.
    let about = report::About {
        run_id: job.lineage.run_id.clone(),
        model_version: job.lineage.model_version.clone(),
        publication: publication.clone(),
        compared_with: compared_with.clone(),
        gate: checks.clone(),
        stats: stats.clone(),
        summary: Some(summary.clone()),
    };
    let report_html = staged_report(job, &ctx, &tables, &about).await?;
    // 1. From here until step 5 the date reads as not published.
    let before = begin(out, date, lease).await?;
    // 2. Copy the staged files to their published names.
    let manifest_tables = copy_to_published(out, date, &tables, &publication).await?;
    // 3. The summary and the report under names of their own bytes, then
    // the manifest, each in one PUT.
    let summary_bytes = state::to_bytes("summary", summary)?;
    let stages = summary.stages.len() as u64;
    let summary_info = write_document(out, date, layout::Document::Summary, summary_bytes, stages).await?;
    let report_info = write_document(out, date, layout::Document::Report, Bytes::from(report_html), 0).await?;
    let report_url = out.object_url(&out.path(&report_info.path));
    let manifest = Manifest {
        date: date.to_string(),
        published_at: chrono::Utc::now().to_rfc3339(),
        lineage: job.lineage.clone(),
        tables: manifest_tables,
        publication: publication.clone(),
        stats: Some(stats.clone()),
        compared_with: compared_with.clone(),
        gate: checks.clone(),
        summary: Some(summary_info),
        report: Some(report_info),
    };
    // 3-5. The manifest, then what it does not list goes, then _SUCCESS.
    let removed = finish(out, &manifest, before.as_ref(), &job.run_id, lease).await?;
    let facts = publish_facts(&manifest, date, out, report_url, removed, run_checks.len());
    Ok((manifest, facts))
}

/// The page of the staged tables (built before anything changes: when it
/// cannot be built, nothing is published).
async fn staged_report(
    job: &Job,
    ctx: &SessionContext,
    tables: &[WrittenTable],
    about: &report::About,
) -> Result<String> {
    let staged: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let mut names = vec!["evaluation", "user_candidates"];
    if staged.contains(&"training_epochs") {
        names.push("training_epochs");
    }
    job.register_work(ctx, &names).await?;
    let dq: Vec<String> = tables
        .iter()
        .filter(|t| t.name == "data_quality")
        .flat_map(|t| t.files.iter().map(|f| f.path.clone()))
        .collect();
    register_files(ctx, "data_quality", &job.output, &dq).await?;
    let previous = register_previous(job, ctx).await?;
    report::build(job, ctx, about, previous.as_deref()).await
}

/// Copy every staged file to its published name (step 2); the manifest's
/// tables.
async fn copy_to_published(
    out: &Root,
    date: RunDate,
    tables: &[WrittenTable],
    publication: &str,
) -> Result<Vec<ManifestTable>> {
    let mut manifest_tables = Vec::new();
    for t in tables {
        let mut files = Vec::new();
        for (i, f) in t.files.iter().enumerate() {
            let dest = layout::published_file(&t.name, date, i, publication);
            // Same name, same publication id, same bytes: a rerun after a
            // kill finds some files in place (copies are atomic).
            let present = out.head_opt(&out.path(&dest)).await?.is_some_and(|m| m.size == f.bytes);
            if !present {
                out.copy(&out.path(&f.path), &out.path(&dest)).await?;
            }
            files.push(FileInfo { path: dest, ..f.clone() });
        }
        manifest_tables.push(ManifestTable { name: t.name.clone(), rows: t.rows(), files });
    }
    Ok(manifest_tables)
}

/// The publish stage's facts for the run summary.
fn publish_facts(
    manifest: &Manifest,
    date: RunDate,
    out: &Root,
    report_url: String,
    removed: usize,
    input_warnings: usize,
) -> Vec<(String, String)> {
    let mut facts = vec![
        ("published".into(), out.object_url(&out.path(&layout::manifest(date)))),
        ("report".into(), report_url),
        ("publication".into(), manifest.publication.clone()),
    ];
    if let Some(stats) = &manifest.stats {
        facts.push((
            "coverage / cold-start share".into(),
            format!("{:.3} / {:.3} of {} users", stats.coverage, stats.cold_share, stats.users),
        ));
    }
    let checks = &manifest.gate;
    match &manifest.compared_with {
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
        facts.push(("files removed (earlier publications, leftovers of killed runs)".into(), removed.to_string()));
    }
    if input_warnings > 0 {
        facts.push(("input warnings (data_quality)".into(), input_warnings.to_string()));
    }
    facts
}
