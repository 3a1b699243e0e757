//! Stage `candidates`: embeddings → `user_candidates`, `cross_category`,
//! `item_similar`, `popular_items`, `user_segments`, `query_candidates`.
//!
//! Every top-K is exact (maximum inner product or cosine, [`crate::topk`])
//! and computed in blocks sized from `candidates.memory_budget_mb`, on the
//! run's device. Items a user must not see again
//! (`candidates.exclude_event_types`) and out-of-stock items are never
//! returned; items with no interactions are placed through their text
//! embeddings (part of every item embedding) and can be recommended.
//!
//! Sharding (`--shard I/N`): a shard run computes the per-user tables for
//! the users whose id hash ([`shard_of`]) is I modulo N, under
//! `_work/dt=…/_shards/N/I/`. A later run without `--shard` finds a complete
//! set of shards with this stage's fingerprint and assembles them instead
//! of computing the per-user tables again; item tables, segments and
//! queries are computed there.
//!
//! Safe to re-run: every output folder is replaced whole.

pub(crate) mod inputs;
pub(crate) mod kmeans;
pub(crate) mod segments;
pub(crate) mod users;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Float32Array, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::arrays;
use crate::error::{DfContext, Error, Result};
use crate::job::Job;
use crate::parquet_io::{FileInfo, PartWriter, WrittenTable};
use crate::resources::MemoryBudget;
use crate::sql::ts_param;
use crate::topk::{self, Masks};
use crate::{layout, state};

pub(crate) use inputs::{Catalog, Inputs};

/// Per-user tables, the ones shards compute.
pub(crate) const USER_TABLES: [&str; 2] = ["user_candidates", "cross_category"];

/// One of N slices of the users (`--shard I/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This slice, 0..count.
    pub index: u32,
    /// Number of slices.
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Shard> {
        let bad = || Error::Usage(format!("--shard {s}: expected I/N with 0 <= I < N, for example 0/4"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse::<u32>().map_err(|_| bad())?, n.trim().parse::<u32>().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard of a user id among `count`: the first 8 bytes of the id's
/// sha256 as a big-endian integer, modulo `count`. Stable across runs,
/// machines and versions.
pub(crate) fn shard_of(user_id: &str, count: u32) -> u32 {
    let h = Sha256::digest(user_id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    (u64::from_be_bytes(b) % u64::from(count.max(1))) as u32
}

/// `popular_items` (written when `write`) and its `(all)` list as
/// (item index, score).
async fn popular(job: &Job, ctx: &SessionContext, write: bool) -> Result<(Option<WrittenTable>, Vec<(i64, f32)>)> {
    let c = &job.cfg.candidates;
    job.register_work(ctx, &["clean_events", "item_index"]).await?;
    if !ctx.table_exist("event_weights").ctx("looking up event_weights")? {
        ctx.register_batch("event_weights", crate::tables::event_weights::batch(&job.cfg)?)
            .ctx("registering event_weights")?;
    }
    let params = vec![
        ("start", ts_param(job.date.minus_days(c.trending_days.saturating_sub(1)).start_millis())),
        ("end_seconds", ScalarValue::Int64(Some(job.date.plus_days(1).start_millis() / 1000))),
        ("half_life_days", ScalarValue::Float64(Some(c.trending_half_life_days))),
        ("k", ScalarValue::Int64(Some(c.popular_k as i64))),
    ];
    let file = crate::sql::file("candidates", "popular_items")?;
    let table = if write {
        let df = file.plan(ctx, params.clone()).await?;
        Some(job.write_work(df, "popular_items").await?)
    } else {
        None
    };
    let all = file
        .plan(ctx, params)
        .await?
        .filter(datafusion::prelude::col("category").eq(datafusion::prelude::lit("(all)")))
        .ctx("selecting (all)")?;
    let batches = all.collect().await.ctx("running sql/candidates/popular_items.sql")?;
    let ids = arrays::strings_required(&batches, "item_id")?;
    let scores = arrays::floats(&batches, "score")?;
    let index_b = job.read_work(ctx, "item_index", crate::sql::read("item_ids")?).await?;
    let idx: HashMap<String, i64> =
        arrays::strings_required(&index_b, "item_id")?.into_iter().zip(arrays::ints(&index_b, "item_idx")?).collect();
    let list =
        ids.iter().zip(scores).filter_map(|(id, s)| idx.get(id).map(|i| (*i, s.unwrap_or(0.0) as f32))).collect();
    Ok((table, list))
}

/// A table of (key, rank, item, score) rows written from top-K blocks.
struct Ranked<'a> {
    w: PartWriter<'a>,
    schema: Arc<Schema>,
    table: &'static str,
}

impl<'a> Ranked<'a> {
    async fn create(job: &'a Job, table: &'static str, key: &str, item: &str) -> Result<Ranked<'a>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new(key, DataType::Utf8, false),
            Field::new("rank", DataType::Int32, false),
            Field::new(item, DataType::Utf8, false),
            Field::new("score", DataType::Float32, false),
        ]));
        let w = PartWriter::create(
            &job.output,
            &job.work(table),
            table,
            schema.clone(),
            &job.lineage,
            job.cfg.runtime.max_rows_per_file,
        )
        .await?;
        Ok(Ranked { w, schema, table })
    }

    /// Rows of a block: `keys[r]` for row r; item index i is `item_ids[i - 1]`.
    async fn write(&mut self, keys: &[&str], top: &topk::TopK, item_ids: &[String]) -> Result<()> {
        let (mut a, mut r, mut b, mut s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (row, key) in keys.iter().enumerate() {
            for (j, (score, i)) in top.row(row).enumerate() {
                a.push(*key);
                r.push(j as i32 + 1);
                b.push(item_ids[(i - 1) as usize].as_str());
                s.push(score);
            }
        }
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(a)),
                Arc::new(Int32Array::from(r)),
                Arc::new(StringArray::from_iter_values(b)),
                Arc::new(Float32Array::from(s)),
            ],
        )
        .ctx(format!("building {}", self.table))?;
        self.w.write(&batch).await
    }

    async fn finish(self) -> Result<WrittenTable> {
        self.w.finish().await
    }
}

/// `item_similar`: every item's most similar in-stock items (cosine).
async fn item_similar(job: &Job, inp: &Catalog) -> Result<WrittenTable> {
    let c = &job.cfg.candidates;
    let mut w = Ranked::create(job, "item_similar", "item_id", "similar_item_id").await?;
    let unit_host = normalised(&inp.item_host, inp.dim);
    // Queries: the items themselves (row 0, padding, gives no row).
    let d = inp.dim;
    let search = topk::Search::new(&unit_host[d..], &unit_host, &inp.unit, d, budget(job)).reduced_precision();
    for rows in search.blocks() {
        // Query row r is item r + 1: never its own neighbour.
        let pairs: Vec<(i64, i64)> = rows.clone().map(|r| ((r - rows.start) as i64, r as i64 + 1)).collect();
        let masks = Masks { all: Some(&inp.blocked), pairs: &pairs, per_row: None };
        let top = search.top_k(rows.clone(), &masks, c.similar_k)?;
        let keys: Vec<&str> = rows.map(|r| inp.item_ids[r].as_str()).collect();
        w.write(&keys, &top, &inp.item_ids).await?;
    }
    w.finish().await
}

/// `query_candidates`: the window's most frequent searches against item
/// text embeddings (cosine), in-stock items with text only.
async fn query_candidates(
    job: &Job,
    ctx: &SessionContext,
    inp: &Catalog,
    device: tch::Device,
) -> Result<(WrittenTable, usize)> {
    let c = &job.cfg.candidates;
    let params = vec![
        ("start", ts_param(job.date.minus_days(c.trending_days.saturating_sub(1)).start_millis())),
        ("min_count", ScalarValue::Int64(Some(c.query_min_count as i64))),
        ("limit", ScalarValue::Int64(Some(c.top_queries as i64))),
    ];
    let qb = crate::sql::file("candidates", "top_queries")?.collect(ctx, params).await?;
    let queries = arrays::strings_required(&qb, "query")?;
    let tb = job.read_work(ctx, "item_text_embeddings", crate::sql::read("item_text_vectors")?).await?;
    let (text_vals, tdim) = arrays::vectors(&tb, "embedding")?;
    let mut w = Ranked::create(job, "query_candidates", "query", "item_id").await?;
    if !queries.is_empty() && tdim > 0 {
        let n1 = inp.item_ids.len() as i64 + 1;
        let mut padded = vec![0f32; tdim];
        padded.extend(text_vals);
        let items_host = normalised(&padded, tdim);
        let items = Tensor::from_slice(&padded).view([n1, tdim as i64]).to_device(device);
        let norms = items.norm_scalaropt_dim(2, [1], false);
        let blocked = inp.blocked.logical_or(&norms.le(1e-12));
        let items = &items / norms.clamp_min(1e-12).unsqueeze(1);
        let texts: Vec<&str> = queries.iter().map(String::as_str).collect();
        let (qv, qdim) = crate::encoders::embed_texts(&job.cfg, &texts, device)?;
        if qdim != tdim {
            return Err(Error::Internal(format!("query embeddings have {qdim} dims, item text embeddings {tdim}")));
        }
        let q_host = normalised(&qv, qdim);
        let search = topk::Search::new(&q_host, &items_host, &items, qdim, budget(job)).reduced_precision();
        let masks = Masks { all: Some(&blocked), pairs: &[], per_row: None };
        for rows in search.blocks() {
            let top = search.top_k(rows.clone(), &masks, c.query_k)?;
            let keys: Vec<&str> = queries[rows].iter().map(String::as_str).collect();
            w.write(&keys, &top, &inp.item_ids).await?;
        }
    }
    Ok((w.finish().await?, queries.len()))
}

/// The memory budget of one block of scores.
fn budget(job: &Job) -> MemoryBudget {
    MemoryBudget::mib(job.cfg.candidates.memory_budget_mb)
}

/// Rows of a row-major matrix scaled to unit length (zero rows stay zero).
fn normalised(vals: &[f32], dim: usize) -> Vec<f32> {
    vals.chunks(dim.max(1))
        .flat_map(|row| {
            let norm = topk::dot(row, row).sqrt();
            row.iter().map(move |x| if norm > 1e-12 { (f64::from(*x) / norm) as f32 } else { 0.0 })
        })
        .collect()
}

/// A finished shard's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ShardMarker {
    /// This slice, 0..count.
    pub index: u32,
    /// Number of slices.
    pub count: u32,
    /// The candidates stage's fingerprint it was computed for.
    pub fingerprint: String,
    /// The run that computed it.
    pub run_id: String,
    /// Its per-user tables.
    pub tables: Vec<WrittenTable>,
}

/// A shard's marker, if it finished (an unreadable one is absent: the
/// shard is recomputed; see [`crate::state`]).
async fn shard_marker(job: &Job, count: u32, index: u32) -> Result<Option<ShardMarker>> {
    state::read(&job.output, &layout::shard_marker(job.date, count, index)).await
}

/// The complete set of shard markers for this fingerprint, if one exists
/// (the largest N when several do).
async fn complete_shards(job: &Job, fingerprint: &str) -> Result<Option<Vec<ShardMarker>>> {
    let mut counts: Vec<u32> =
        job.output.subfolders(&layout::shards(job.date)).await?.iter().filter_map(|s| s.parse().ok()).collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    'count: for n in counts {
        let mut markers = Vec::new();
        for i in 0..n {
            match shard_marker(job, n, i).await? {
                Some(m) if m.fingerprint == fingerprint => markers.push(m),
                _ => continue 'count,
            }
        }
        return Ok(Some(markers));
    }
    Ok(None)
}

/// Copy the shards' files into the per-user work tables.
async fn assemble(job: &Job, shards: &[ShardMarker]) -> Result<Vec<WrittenTable>> {
    let mut out = Vec::new();
    for table in USER_TABLES {
        let folder = job.work(table);
        job.output.delete_folder(&folder).await?;
        let mut files = Vec::new();
        for m in shards {
            let t = m
                .tables
                .iter()
                .find(|t| t.name == table)
                .ok_or_else(|| Error::Internal(format!("shard {}/{} recorded no {table}", m.index, m.count)))?;
            for f in &t.files {
                let dest = format!("{folder}/part-{:05}.parquet", files.len());
                job.output.copy(&job.output.path(&f.path), &job.output.path(&dest)).await?;
                files.push(FileInfo { path: dest, ..f.clone() });
            }
        }
        out.push(WrittenTable { name: table.to_string(), folder, files });
    }
    Ok(out)
}

fn user_facts(counts: &users::Counts) -> Vec<(String, String)> {
    let mut by: Vec<_> = counts.by_source.iter().map(|(s, n)| format!("{s} {n}")).collect();
    by.sort();
    vec![
        ("users with model lists".into(), format!("{} (cold-start blend {})", counts.warm, counts.cold_start)),
        ("users with popular lists".into(), counts.popular.to_string()),
        ("candidate rows by source".into(), by.join(", ")),
        ("users per block".into(), counts.block.to_string()),
    ]
}

/// Run the stage for every user (or assemble finished shards).
pub(crate) async fn run(
    job: &Job,
    device: tch::Device,
    fingerprint: &str,
) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let ctx = job.session()?;
    let catalog = inputs::load_catalog(job, &ctx, device).await?;
    let (pop_table, popular_all) = popular(job, &ctx, true).await?;
    let seg = segments::ensure(job, &ctx, &catalog, device, fingerprint).await?;
    let mut tables = Vec::new();
    let mut facts = Vec::new();
    let catalog = match complete_shards(job, fingerprint).await? {
        // Assembling reads the shards' files: no user is loaded here.
        Some(shards) => {
            facts.push(("assembled from shards".into(), shards.len().to_string()));
            tables.extend(assemble(job, &shards).await?);
            catalog
        }
        None => {
            let all = |_: &str| true;
            let inp = inputs::load(job, &ctx, catalog, &all).await?;
            let target = users::Target {
                candidates_folder: job.work(USER_TABLES[0]),
                cross_folder: job.work(USER_TABLES[1]),
                select: &all,
            };
            let (t, counts) = write_users(job, &ctx, &inp, &seg, &popular_all, &target, device).await?;
            tables.extend(t);
            facts.extend(user_facts(&counts));
            inp.catalog
        }
    };
    tables.push(item_similar(job, &catalog).await?);
    tables.extend(pop_table);
    tables.push(seg.copy_to_work(job).await?);
    let (q, nq) = query_candidates(job, &ctx, &catalog, device).await?;
    tables.push(q);
    facts.push(("queries with candidates".into(), nq.to_string()));
    facts.extend(seg.facts.iter().cloned());
    segments::sweep(job).await?;
    Ok((tables, facts))
}

/// The per-user tables of the users in `inp`, blended with the stored segments.
async fn write_users(
    job: &Job,
    ctx: &SessionContext,
    inp: &Inputs,
    seg: &segments::Segments,
    popular_all: &[(i64, f32)],
    target: &users::Target<'_>,
    device: tch::Device,
) -> Result<(Vec<WrittenTable>, users::Counts)> {
    let clusters = seg.clusters_of(job, ctx, &inp.user_ids).await?;
    let shares = seg.shares(job, ctx, inp.catalog.item_ids.len() + 1).await?;
    users::write(job, inp, &clusters, &shares, popular_all, target, device).await
}

/// Run one shard: the per-user tables for its users, and its marker.
/// Skipped when the shard already finished with this fingerprint, unless
/// `force`.
pub(crate) async fn run_shard(
    job: &Job,
    device: tch::Device,
    shard: Shard,
    fingerprint: &str,
) -> Result<(Vec<WrittenTable>, Vec<(String, String)>, bool)> {
    if let Some(m) = shard_marker(job, shard.count, shard.index).await?
        && m.fingerprint == fingerprint
        && !job.force
    {
        return Ok((
            m.tables,
            vec![("shard".into(), format!("{}/{} unchanged since run {}", shard.index, shard.count, m.run_id))],
            false,
        ));
    }
    let folder = layout::shard(job.date, shard.count, shard.index);
    job.output.delete(&job.output.path(&layout::shard_marker(job.date, shard.count, shard.index))).await?;
    let ctx = job.session()?;
    let catalog = inputs::load_catalog(job, &ctx, device).await?;
    let seg = segments::ensure(job, &ctx, &catalog, device, fingerprint).await?;
    let select = |u: &str| shard_of(u, shard.count) == shard.index;
    let inp = inputs::load(job, &ctx, catalog, &select).await?;
    let (_, popular_all) = popular(job, &ctx, false).await?;
    let target = users::Target {
        candidates_folder: format!("{folder}/{}", USER_TABLES[0]),
        cross_folder: format!("{folder}/{}", USER_TABLES[1]),
        select: &select,
    };
    let (tables, counts) = write_users(job, &ctx, &inp, &seg, &popular_all, &target, device).await?;
    let marker = ShardMarker {
        index: shard.index,
        count: shard.count,
        fingerprint: fingerprint.to_string(),
        run_id: job.run_id.clone(),
        tables: tables.clone(),
    };
    state::write(&job.output, &layout::shard_marker(job.date, shard.count, shard.index), &marker).await?;
    let mut facts = vec![("shard".into(), format!("{}/{}", shard.index, shard.count))];
    facts.extend(user_facts(&counts));
    Ok((tables, facts, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_users_evenly() {
        assert_eq!("2/4".parse::<Shard>().ok(), Some(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let mut per = [0usize; 4];
        for u in 0..4000 {
            per[shard_of(&format!("u{u}"), 4) as usize] += 1;
        }
        assert!(per.iter().all(|n| (900..1100).contains(n)), "{per:?}");
        assert_eq!(shard_of("u1", 1), 0);
        // Stable: a fixed user lands in a fixed shard forever.
        assert_eq!(shard_of("user-42", 8), shard_of("user-42", 8));
    }

    #[test]
    fn category_ids_cut_paths_at_the_level() {
        let cats = vec![Some("Home > Kitchen > Pans".to_string()), None, Some("Home > Light".into()), Some(" ".into())];
        let (ids, names) = users::category_ids(&cats, 1);
        assert_eq!(ids, vec![0, 1, 0, 1, 0]);
        assert_eq!(names, vec!["".to_string(), "Home".into()]);
        let (ids, names) = users::category_ids(&cats, 2);
        assert_eq!(ids, vec![0, 1, 0, 2, 0]);
        assert_eq!(names[2], "Home > Light");
    }
}
