//! User segments: k-means over every user's embedding, computed once per
//! date and candidates fingerprint by the first task that needs them (the
//! candidates stage, or the first of its shards to get there), and kept
//! under `_work/dt=D/_segments/`; every other task of the date reads them.
//! A shard therefore never needs every user's embedding after the first,
//! and the task that assembles the shards never loads a user at all.
//!
//! What is kept: `user_segments` (every user with an embedding: segment and
//! distance), `segment_shares` (per segment, the share of its users who had
//! each item: the cold-start blend), the segments' sizes and a summary line
//! each (size, top categories). Each writer writes into a folder of its own
//! run, then creates the record `<fingerprint>.json` with create-if-absent:
//! of two shards racing, one record wins and both use it, so every shard
//! blends with the same segments. The candidates stage that finishes the
//! date copies `user_segments` into its work table and removes the folder.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::inputs::{self, Catalog, int_column, text_column};
use super::kmeans::{self, Clusters};
use super::users;
use crate::arrays;
use crate::error::{DfContext, Error, Result};
use crate::job::Job;
use crate::parquet_io::{FileInfo, WrittenTable, write_batches};
use crate::resources::MemoryBudget;
use crate::{state, topk};

/// The segments of a date, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Segments {
    /// The candidates fingerprint they were computed for.
    pub fingerprint: String,
    /// The run that computed them.
    pub run_id: String,
    /// Users per segment.
    pub sizes: Vec<usize>,
    /// `user_segments`: user_id, segment_id, distance.
    pub table: WrittenTable,
    /// `segment_shares`: segment_id, item_idx, share (non-zero only).
    pub shares: WrittenTable,
    /// One line per segment: its size and top categories.
    pub facts: Vec<(String, String)>,
}

fn folder() -> &'static str {
    "_segments"
}

fn record_path(job: &Job, fingerprint: &str) -> String {
    job.work(&format!("{}/{fingerprint}.json", folder()))
}

/// The segments of this fingerprint: the stored ones, or computed now.
pub(crate) async fn ensure(
    job: &Job,
    ctx: &SessionContext,
    catalog: &Catalog,
    device: tch::Device,
    fingerprint: &str,
) -> Result<Segments> {
    let record = record_path(job, fingerprint);
    if let Some(s) = state::read::<Segments>(&job.output, &record).await?
        && files_present(job, &s).await?
    {
        return Ok(s);
    }
    let mine = compute(job, ctx, catalog, device, fingerprint).await?;
    let bytes = state::to_bytes(&record, &mine)?;
    let path = job.output.path(&record);
    let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
    match job.output.store.put_opts(&path, PutPayload::from(bytes.clone()), opts).await {
        Ok(_) => Ok(mine),
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
            // Another task was first, or a record whose files went missing:
            // a readable one with its files wins; else ours replaces it.
            match state::read::<Segments>(&job.output, &record).await? {
                Some(theirs) if files_present(job, &theirs).await? => {
                    job.output.delete_folder(&own_folder(job)).await?;
                    Ok(theirs)
                }
                _ => {
                    job.output.put(&path, bytes).await?;
                    Ok(mine)
                }
            }
        }
        Err(e) => Err(Error::storage(job.output.object_url(&path), e)),
    }
}

/// Remove every stored segmentation of the date (the stage that finishes
/// the date has copied what it published).
pub(crate) async fn sweep(job: &Job) -> Result<()> {
    job.output.delete_folder(&job.work(folder())).await
}

fn own_folder(job: &Job) -> String {
    job.work(&format!("{}/{}", folder(), job.run_id))
}

async fn files_present(job: &Job, s: &Segments) -> Result<bool> {
    for f in s.table.files.iter().chain(&s.shares.files) {
        if job.output.head_opt(&job.output.path(&f.path)).await?.is_none_or(|m| m.size != f.bytes) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// k-means over every user, the shares and the summary, written into this
/// run's own folder.
async fn compute(
    job: &Job,
    ctx: &SessionContext,
    catalog: &Catalog,
    device: tch::Device,
    fingerprint: &str,
) -> Result<Segments> {
    let c = &job.cfg.candidates;
    let (user_ids, user_vals) = inputs::user_embeddings(job, ctx, catalog.dim, &|_| true).await?;
    let clusters = {
        let n = user_ids.len() as i64;
        let x = Tensor::from_slice(&user_vals).view([n, catalog.dim as i64]).to_device(device);
        drop(user_vals);
        let block = topk::block_rows(MemoryBudget::mib(c.memory_budget_mb), c.segments) as i64;
        kmeans::kmeans(&x, c.segments, c.kmeans_iterations, job.cfg.run.seed, block)?
    };
    let n1 = catalog.item_ids.len() + 1;
    let shares = shares_of(job, ctx, &user_ids, &clusters, n1).await?;
    let facts = facts_of(job, ctx, catalog, &user_ids, &clusters).await?;
    let base = own_folder(job);
    let table = write_table(job, &format!("{base}/user_segments"), &user_ids, &clusters).await?;
    let shares = write_shares(job, &format!("{base}/segment_shares"), &shares, n1).await?;
    Ok(Segments {
        fingerprint: fingerprint.to_string(),
        run_id: job.run_id.clone(),
        sizes: clusters.sizes.clone(),
        table,
        shares,
        facts,
    })
}

/// Per segment, the share of its users who had each item, row-major
/// `[segments, N + 1]`, read from `sequences` one batch at a time.
async fn shares_of(
    job: &Job,
    ctx: &SessionContext,
    user_ids: &[String],
    clusters: &Clusters,
    n1: usize,
) -> Result<Vec<f32>> {
    let k = clusters.sizes.len().max(1);
    let mut share = vec![0f32; k * n1];
    job.stream_work(ctx, "sequences", crate::sql::read("histories")?, |b| {
        let ids = text_column(b, "user_id")?;
        let ids = ids.as_string::<i32>();
        for (r, mut items) in arrays::int_lists(std::slice::from_ref(b), "item_idxs")?.into_iter().enumerate() {
            let Ok(u) = user_ids.binary_search_by(|s| s.as_str().cmp(ids.value(r))) else { continue };
            let s = clusters.assignment.get(u).copied().unwrap_or(0) as usize;
            items.sort_unstable();
            items.dedup();
            for i in items {
                if (i as usize) < n1 {
                    share[s * n1 + i as usize] += 1.0;
                }
            }
        }
        Ok(())
    })
    .await?;
    for (s, size) in clusters.sizes.iter().enumerate() {
        let size = (*size).max(1) as f32;
        share[s * n1..(s + 1) * n1].iter_mut().for_each(|x| *x /= size);
    }
    Ok(share)
}

/// Summary lines: each segment's size and its top categories (by
/// event-weighted interactions), streamed from `interactions`.
async fn facts_of(
    job: &Job,
    ctx: &SessionContext,
    catalog: &Catalog,
    user_ids: &[String],
    clusters: &Clusters,
) -> Result<Vec<(String, String)>> {
    let (item_cat, names) = users::category_ids(&catalog.categories, 1);
    let weights: HashMap<&str, f64> =
        job.cfg.trainset.event_weights.pairs().iter().map(|(e, w)| (e.as_str(), *w)).collect();
    let mut per: Vec<HashMap<i64, f64>> = vec![HashMap::new(); clusters.sizes.len()];
    inputs::for_each_interaction(job, ctx, |user, item, event_type, events| {
        let Ok(u) = user_ids.binary_search_by(|s| s.as_str().cmp(user)) else { return };
        let Some(seg) = clusters.assignment.get(u).and_then(|s| per.get_mut(*s as usize)) else { return };
        let cat = item_cat.get(item as usize).copied().unwrap_or(0);
        *seg.entry(cat).or_default() += events * weights.get(event_type).copied().unwrap_or(0.0);
    })
    .await?;
    let mut facts = Vec::new();
    for (s, size) in clusters.sizes.iter().enumerate() {
        let total: f64 = per[s].values().sum::<f64>().max(1e-12);
        let mut cats: Vec<(i64, f64)> = per[s].iter().map(|(c, w)| (*c, *w)).collect();
        cats.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let top: Vec<String> = cats
            .iter()
            .take(3)
            .map(|(c, w)| {
                let name = if *c == 0 { "(none)" } else { names[*c as usize].as_str() };
                format!("{name} {:.0}%", 100.0 * w / total)
            })
            .collect();
        facts.push((format!("segment {s}"), format!("{size} users; {}", top.join(", "))));
    }
    Ok(facts)
}

/// The schema of `user_segments`.
fn table_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("segment_id", DataType::Int32, false),
        Field::new("distance", DataType::Float32, false),
    ]))
}

async fn write_table(job: &Job, folder: &str, user_ids: &[String], cl: &Clusters) -> Result<WrittenTable> {
    let schema = table_schema();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(user_ids.iter())),
            Arc::new(Int32Array::from_iter_values(cl.assignment.iter().map(|s| *s as i32))),
            Arc::new(Float32Array::from(cl.distance.clone())),
        ],
    )
    .ctx("building user_segments")?;
    write(job, folder, "user_segments", schema, batch).await
}

async fn write_shares(job: &Job, folder: &str, shares: &[f32], n1: usize) -> Result<WrittenTable> {
    let (mut seg, mut item, mut share) = (Vec::new(), Vec::new(), Vec::new());
    for (at, v) in shares.iter().enumerate().filter(|(_, v)| **v != 0.0) {
        seg.push((at / n1) as i32);
        item.push((at % n1) as i64);
        share.push(*v);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("segment_id", DataType::Int32, false),
        Field::new("item_idx", DataType::Int64, false),
        Field::new("share", DataType::Float32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int32Array::from(seg)), Arc::new(Int64Array::from(item)), Arc::new(Float32Array::from(share))],
    )
    .ctx("building segment_shares")?;
    write(job, folder, "segment_shares", schema, batch).await
}

async fn write(job: &Job, folder: &str, name: &str, schema: Arc<Schema>, batch: RecordBatch) -> Result<WrittenTable> {
    let max = job.cfg.runtime.max_rows_per_file;
    write_batches(&job.output, folder, name, schema, &[batch], &job.lineage, max).await
}

impl Segments {
    /// Stream one of the stored tables.
    async fn stream(
        &self,
        job: &Job,
        ctx: &SessionContext,
        table: &WrittenTable,
        mut each: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let name = format!("segments_{}", table.name);
        let url = job.output.folder_url(&table.folder);
        ctx.deregister_table(name.as_str()).ctx(format!("replacing {name}"))?;
        ctx.register_parquet(name.as_str(), &url, ParquetReadOptions::default())
            .await
            .ctx(format!("registering {name} at {url}"))?;
        let df = ctx.table(name.as_str()).await.ctx(format!("reading {name}"))?;
        let mut stream = df.execute_stream().await.ctx(format!("reading {name}"))?;
        while let Some(b) = stream.next().await {
            each(&b.ctx(format!("reading {name}"))?)?;
        }
        Ok(())
    }

    /// The segment of each of `user_ids` (sorted), by position; a user not
    /// in the segmentation gets segment 0.
    pub(crate) async fn clusters_of(&self, job: &Job, ctx: &SessionContext, user_ids: &[String]) -> Result<Clusters> {
        let mut assignment = vec![0i64; user_ids.len()];
        self.stream(job, ctx, &self.table, |b| {
            let ids = text_column(b, "user_id")?;
            let ids = ids.as_string::<i32>();
            let segs = int_column(b, "segment_id")?;
            let segs = segs.as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                if let Ok(u) = user_ids.binary_search_by(|s| s.as_str().cmp(ids.value(r))) {
                    assignment[u] = segs.value(r);
                }
            }
            Ok(())
        })
        .await?;
        Ok(Clusters { assignment, distance: Vec::new(), sizes: self.sizes.clone() })
    }

    /// The shares, row-major `[segments, n1]`.
    pub(crate) async fn shares(&self, job: &Job, ctx: &SessionContext, n1: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.sizes.len().max(1) * n1];
        self.stream(job, ctx, &self.shares, |b| {
            let segs = int_column(b, "segment_id")?;
            let items = int_column(b, "item_idx")?;
            let (segs, items) = (segs.as_primitive::<Int64Type>(), items.as_primitive::<Int64Type>());
            let share = b
                .column_by_name("share")
                .and_then(|c| c.as_any().downcast_ref::<Float32Array>())
                .ok_or_else(|| Error::Internal("segment_shares has no f32 share column".into()))?;
            for r in 0..b.num_rows() {
                let at = segs.value(r) as usize * n1 + items.value(r) as usize;
                if let Some(x) = out.get_mut(at)
                    && share.is_valid(r)
                {
                    *x = share.value(r);
                }
            }
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Copy `user_segments` into the date's work table (what publish publishes).
    pub(crate) async fn copy_to_work(&self, job: &Job) -> Result<WrittenTable> {
        let folder = job.work("user_segments");
        job.output.delete_folder(&folder).await?;
        let mut files = Vec::new();
        for (i, f) in self.table.files.iter().enumerate() {
            let dest = format!("{folder}/part-{i:05}.parquet");
            job.output.copy(&job.output.path(&f.path), &job.output.path(&dest)).await?;
            files.push(FileInfo { path: dest, ..f.clone() });
        }
        Ok(WrittenTable { name: "user_segments".into(), folder, files })
    }
}
