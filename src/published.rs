//! What is published, read back: a date's manifest (its tables' files,
//! the day's figures, the gate's checks, the summary and the report),
//! whether a date is published, the publication before a date, registering
//! a table made of exactly a manifest's files, and the day-over-day overlap
//! of the candidate lists. Read by the pipeline, `nightrec sql`, the
//! evaluation, the report and the publish stage; writes nothing (writing
//! is the publish stage's).

use std::sync::Arc;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::arrays;
use crate::config::RunDate;
use crate::error::{DfContext, Result};
use crate::parquet_io::{FileInfo, Lineage};
use crate::storage::Root;
use crate::{layout, state};

/// The manifest of a published date.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
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
    /// The run summary (`_runs/dt=D/summary.json`) as of this publication:
    /// the stages before publish. `rows` is the number of stages.
    #[serde(default)]
    pub summary: Option<FileInfo>,
    /// The night's report (`_runs/dt=D/report.html`, see
    /// [`crate::report`]); `rows` is 0.
    #[serde(default)]
    pub report: Option<FileInfo>,
}

/// Figures of a published date (sql/publish/day_stats.sql).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct DayStats {
    /// Distinct recommended items / in-stock items.
    pub coverage: f64,
    /// Share of users whose list comes from cold start or popularity.
    pub cold_share: f64,
    /// The model's NDCG@10 on the held-out split.
    pub ndcg: Option<f64>,
    /// Users with candidates.
    pub users: u64,
    /// The model's Recall@10 on the held-out split.
    #[serde(default)]
    pub recall: Option<f64>,
    /// Popularity's NDCG@10 on the held-out split.
    #[serde(default)]
    pub popularity_ndcg: Option<f64>,
    /// Novelty (bits) of the first 10 candidates.
    #[serde(default)]
    pub novelty: Option<f64>,
    /// Category diversity of the first 10 candidates.
    #[serde(default)]
    pub diversity: Option<f64>,
}

/// One day-over-day check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct GateCheck {
    /// What is compared.
    pub check: String,
    /// Today's value.
    pub value: f64,
    /// The configured limit.
    pub threshold: f64,
    /// Whether it held.
    pub passed: bool,
}

impl Manifest {
    /// Every file the manifest lists: table files, the summary, the report.
    pub(crate) fn files(&self) -> impl Iterator<Item = &str> {
        self.tables
            .iter()
            .flat_map(|t| t.files.iter())
            .chain(self.summary.iter())
            .chain(self.report.iter())
            .map(|f| f.path.as_str())
    }
}

/// One table in a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ManifestTable {
    /// Table name.
    pub name: String,
    /// Total rows.
    pub rows: u64,
    /// Files, paths relative to the output root.
    pub files: Vec<FileInfo>,
}

/// Register a table made of exactly these files (paths relative to `root`).
pub(crate) async fn register_files(ctx: &SessionContext, name: &str, root: &Root, files: &[String]) -> Result<()> {
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

/// A date's manifest, when it is published (`_SUCCESS` and a readable
/// manifest; an unreadable one is no publication, see [`crate::state`]).
pub(crate) async fn read_manifest(root: &Root, date: RunDate) -> Result<Option<Manifest>> {
    if !is_published(root, date).await? {
        return Ok(None);
    }
    state::read(root, &layout::manifest(date)).await
}

/// Whether a date's `_SUCCESS` exists.
pub(crate) async fn is_published(root: &Root, date: RunDate) -> Result<bool> {
    root.exists(&root.path(&layout::success(date))).await
}

/// The latest date published before `date`, with its manifest.
pub(crate) async fn previous_publication(root: &Root, date: RunDate) -> Result<Option<Manifest>> {
    for d in layout::dates(root, layout::RUNS).await?.into_iter().rev().filter(|d| *d < date) {
        if let Some(m) = read_manifest(root, d).await? {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// The overlap of `user_candidates` with `previous_candidates` per user
/// (`sql/publish/candidate_overlap.sql`): (bucket 0..=10, users, sum of
/// their shares).
pub(crate) async fn overlap(ctx: &SessionContext) -> Result<Vec<(i64, u64, f64)>> {
    let b = crate::sql::file("publish", "candidate_overlap")?.collect(ctx, vec![]).await?;
    let (bucket, users, sum) =
        (arrays::ints(&b, "bucket")?, arrays::ints(&b, "users")?, arrays::floats(&b, "overlap_sum")?);
    Ok(bucket.into_iter().zip(users).zip(sum).map(|((b, u), s)| (b, u.max(0) as u64, s.unwrap_or(0.0))).collect())
}
