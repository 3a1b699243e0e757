//! Stage `publish`: work tables → `<table>/dt=YYYY-MM-DD/part-NNNNN.parquet`,
//! `_runs/dt=YYYY-MM-DD/manifest.json`, then `_SUCCESS`.
//!
//! The work folder is the staging prefix: tables there are validated
//! (files present with the recorded sizes, row counts, candidate checks),
//! then the date's old manifest and `_SUCCESS` are removed (so a manifest
//! reader sees the date as unpublished while files change), the files are
//! copied to their published paths, and the manifest — every file with its
//! row count and sha256 — is written, `_SUCCESS` last. No step relies on
//! rename being atomic, so this works the same on S3.
//!
//! Safe to re-run: a rerun replaces the date with the same contents.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::arrays;
use crate::error::{DfContext, Error, Result};
use crate::job::{Job, Stage};
use crate::parquet_io::{FileInfo, Lineage, WrittenTable};

/// Tables published each day, and the stage that writes each.
pub const PUBLISHED: &[(&str, Stage)] = &[
    ("user_candidates", Stage::Candidates),
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

async fn check_candidates(job: &Job) -> Result<()> {
    let ctx = job.session()?;
    job.register_work(&ctx, &["user_candidates", "interactions", "item_index", "user_embeddings"]).await?;
    let types = StringArray::from_iter_values(job.cfg.candidates.exclude_event_types.iter().map(|e| e.as_str()));
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
        Ok(())
    } else {
        Err(Error::DataQuality(format!(
            "user_candidates failed validation ({}); nothing was published",
            failed.join(", ")
        )))
    }
}

/// Run the stage.
pub async fn run(job: &Job) -> Result<(Manifest, Vec<(String, String)>)> {
    let tables = staged(job).await?;
    check_candidates(job).await?;
    let date = job.date.to_string();
    job.output.delete(&job.output.path(&success_path(&date))).await?;
    job.output.delete(&job.output.path(&manifest_path(&date))).await?;
    let mut manifest_tables = Vec::new();
    for t in &tables {
        let folder = format!("{}/{}", t.name, job.date.partition());
        job.output.delete_folder(&folder).await?;
        let mut files = Vec::new();
        for (i, f) in t.files.iter().enumerate() {
            let dest = format!("{folder}/part-{i:05}.parquet");
            job.output.copy(&job.output.path(&f.path), &job.output.path(&dest)).await?;
            files.push(FileInfo { path: dest, ..f.clone() });
        }
        manifest_tables.push(ManifestTable { name: t.name.clone(), rows: t.rows(), files });
    }
    let manifest = Manifest {
        date: date.clone(),
        published_at: chrono::Utc::now().to_rfc3339(),
        lineage: job.lineage.clone(),
        tables: manifest_tables,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Internal(format!("manifest: {e}")))?;
    job.output.put(&job.output.path(&manifest_path(&date)), Bytes::from(json)).await?;
    job.output.put(&job.output.path(&success_path(&date)), Bytes::from(job.run_id.clone())).await?;
    let facts = vec![("published".into(), job.output.object_url(&job.output.path(&manifest_path(&date))))];
    Ok((manifest, facts))
}
