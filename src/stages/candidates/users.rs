//! Per-user tables: `user_candidates` and `cross_category`.
//!
//! One block of users at a time (sized from the memory budget): the block's
//! scores against every item, masked, reduced to the top K. A user's score
//! for an item is
//! - `model`: the inner product of user and item embeddings;
//! - with `--repeat-purchases`: the chance that the user's next basket
//!   holds the item, a noisy-or of the model's chance (next-step
//!   probability × basket size × the explore weight, [`basket::choose_explore_weight`]) and the chance of buying
//!   it again (the decayed share of the user's baskets that bought it ×
//!   `buy_again_weight`), [`crate::basket`]; items the user bought before
//!   come as `buy_again`;
//! - users with at most `cold_start_max_history` items:
//!   (1 − w) × the share of their segment's users who had the item + w ×
//!   sigmoid(inner product), `w = cold_start_model_weight`; rows where the
//!   segment part is the larger come as `cold_start`.
//!
//! A candidate the user already had in their history (viewed, clicked or
//! carted, not excluded) that would come as `model` comes as
//! `viewed_before`: it is shown again.
//!
//! Users without an embedding (no usable history) get the trending items
//! of `popular_items` (`source = popular`). `reason_item_id` is the item in
//! the user's recent history closest (cosine) to the candidate, never the
//! candidate itself: empty when the history holds no other item.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Float32Array, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use tch::Tensor;

use super::{Inputs, kmeans::Clusters};
use crate::basket;
use crate::config::CandidatesConfig;
use crate::error::{DfContext, Result};
use crate::job::Job;
use crate::parquet_io::{PartWriter, WrittenTable};
use crate::resources::MemoryBudget;
use crate::seqdata::left_pad;
use crate::topk::{self, Masks, TopK, host_i64};

/// The output schema of `user_candidates`.
pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("rank", DataType::Int32, false),
        Field::new("item_id", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("reason_item_id", DataType::Utf8, true),
    ]))
}

/// The output schema of `cross_category`.
pub(crate) fn cross_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("rank", DataType::Int32, false),
        Field::new("item_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, true),
        Field::new("score", DataType::Float32, false),
    ]))
}

#[derive(Default)]
struct Rows {
    user: Vec<String>,
    rank: Vec<i32>,
    item: Vec<String>,
    score: Vec<f32>,
    source: Vec<&'static str>,
    reason: Vec<Option<String>>,
}

impl Rows {
    fn batch(self) -> Result<RecordBatch> {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(self.user)),
                Arc::new(Int32Array::from(self.rank)),
                Arc::new(StringArray::from_iter_values(self.item)),
                Arc::new(Float32Array::from(self.score)),
                Arc::new(StringArray::from_iter_values(self.source)),
                Arc::new(StringArray::from(self.reason)),
            ],
        )
        .ctx("building user_candidates")
    }
}

#[derive(Default)]
struct CrossRows {
    user: Vec<String>,
    rank: Vec<i32>,
    item: Vec<String>,
    category: Vec<Option<String>>,
    score: Vec<f32>,
}

impl CrossRows {
    fn batch(self) -> Result<RecordBatch> {
        RecordBatch::try_new(
            cross_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(self.user)),
                Arc::new(Int32Array::from(self.rank)),
                Arc::new(StringArray::from_iter_values(self.item)),
                Arc::new(StringArray::from(self.category)),
                Arc::new(Float32Array::from(self.score)),
            ],
        )
        .ctx("building cross_category")
    }
}

/// Where the two tables go and which users they cover.
pub(crate) struct Target<'a> {
    /// Folder of `user_candidates`, relative to the output root.
    pub candidates_folder: String,
    /// Folder of `cross_category`.
    pub cross_folder: String,
    /// Users to cover.
    pub select: &'a dyn Fn(&str) -> bool,
}

/// Counts for the run summary.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counts {
    /// Users with model (or blended) lists.
    pub warm: u64,
    /// Of those, users with a cold-start blend.
    pub cold_start: u64,
    /// Users without an embedding, given popular items.
    pub popular: u64,
    /// Rows per source.
    pub by_source: HashMap<&'static str, u64>,
    /// Users per block.
    pub block: usize,
}

/// Category ids at the configured depth: 0 for none, names by id.
pub(crate) fn category_ids(categories: &[Option<String>], level: usize) -> (Vec<i64>, Vec<String>) {
    let mut names: Vec<String> = vec![String::new()];
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut out = vec![0i64];
    for c in categories {
        let Some(name) = c.as_deref().and_then(|c| crate::category::at(c, level)) else {
            out.push(0);
            continue;
        };
        let next = names.len() as i64;
        let id = *ids.entry(name.clone()).or_insert_with(|| {
            names.push(name);
            next
        });
        out.push(id);
    }
    (out, names)
}

/// Write both tables for the selected users. `share_host` is
/// [`super::inputs::segment_shares`] of `clusters`.
pub(crate) async fn write(
    job: &Job,
    inp: &Inputs,
    clusters: &Clusters,
    share_host: &[f32],
    popular: &[(i64, f32)],
    target: &Target<'_>,
    device: tch::Device,
) -> Result<(Vec<WrittenTable>, Counts)> {
    let c = &job.cfg.candidates;
    let n1 = inp.catalog.item_ids.len() as i64 + 1;
    let (item_cat, cat_names) = category_ids(&inp.catalog.categories, c.category_level);
    let k = clusters.sizes.len().max(1) as i64;
    let lists = Lists {
        c,
        inp,
        item_cat_t: Tensor::from_slice(&item_cat).to_device(device),
        item_cat,
        cat_names,
        clusters,
        seg_share: Tensor::from_slice(share_host).view([k, n1]).to_device(device),
        share_host,
        n1,
        device,
        explore: 0.0,
    };
    let mut w = PartWriter::create(
        &job.output,
        &target.candidates_folder,
        "user_candidates",
        schema(),
        &job.lineage,
        job.cfg.runtime.max_rows_per_file,
    )
    .await?;
    let mut wx = PartWriter::create(
        &job.output,
        &target.cross_folder,
        "cross_category",
        cross_schema(),
        &job.lineage,
        job.cfg.runtime.max_rows_per_file,
    )
    .await?;
    let explore = if c.repeat_purchases { basket::explore_weight(job).await? } else { 0.0 };
    let lists = Lists { explore, ..lists };
    let selected: Vec<usize> = (0..inp.user_ids.len()).filter(|u| (target.select)(&inp.user_ids[*u])).collect();
    // The selected users' embeddings as one host matrix (all users: no copy).
    let d = inp.catalog.dim;
    let gathered: Vec<f32>;
    let queries: &[f32] = if selected.len() == inp.user_ids.len() {
        &inp.user_vals
    } else {
        gathered = selected.iter().flat_map(|u| inp.user_vals[u * d..(u + 1) * d].iter().copied()).collect();
        &gathered
    };
    // Half the budget: scores, sigmoid, two masks and topk's scratch per user.
    let budget = MemoryBudget::mib(c.memory_budget_mb).half();
    let search = topk::Search::new(queries, &inp.catalog.item_host, &inp.catalog.items, d, budget);
    let mut counts = Counts { block: search.block(), ..Counts::default() };
    for block in search.blocks() {
        let chunk = &selected[block.clone()];
        let vals = &queries[block.start * d..block.end * d];
        let raw = tch::no_grad(|| search.scores(block.clone()));
        let (rows, xrows) = lists.block(chunk, vals, &raw, &mut counts)?;
        w.write(&rows.batch()?).await?;
        wx.write(&xrows.batch()?).await?;
    }
    let rows = popular_rows(inp, popular, target, c.k, &mut counts);
    w.write(&rows.batch()?).await?;
    Ok((vec![w.finish().await?, wx.finish().await?], counts))
}

/// What every block of users is ranked with.
struct Lists<'a> {
    c: &'a CandidatesConfig,
    inp: &'a Inputs,
    /// Each item's category id at the configured level (0: none), and
    /// the categories' names by id.
    item_cat: Vec<i64>,
    item_cat_t: Tensor,
    cat_names: Vec<String>,
    clusters: &'a Clusters,
    /// Segment shares, `segments × n1`, on the device and on the host.
    seg_share: Tensor,
    share_host: &'a [f32],
    n1: i64,
    device: tch::Device,
    explore: f64,
}

/// One block's users as the scores see them: their ids, rows of the
/// served users, histories, cold-start rows, excluded (row, item) pairs,
/// buy-again chances and basket sizes.
struct Block<'b> {
    ids: Vec<&'b str>,
    rows: Vec<Option<usize>>,
    hist: Vec<&'b [i64]>,
    cold: Vec<i64>,
    pairs: Vec<(i64, i64)>,
    ba_pairs: Vec<(i64, i64, f32)>,
    sizes: Vec<f32>,
}

impl<'a> Lists<'a> {
    /// A user's segment: `clusters.assignment` by embedding row.
    fn seg_of(&self, u: usize) -> usize {
        self.clusters.assignment.get(u).copied().unwrap_or(0) as usize
    }

    /// The block of users `chunk` (embedding rows).
    fn users(&self, chunk: &[usize]) -> Block<'a> {
        let (c, inp) = (self.c, self.inp);
        let ids: Vec<&str> = chunk.iter().map(|u| inp.user_ids[*u].as_str()).collect();
        // Served users are a superset of the selected users with an embedding.
        let rows: Vec<Option<usize>> = ids.iter().map(|u| inp.served_index(u)).collect();
        let hist: Vec<&[i64]> = rows.iter().map(|r| r.map(|r| inp.history.get(r)).unwrap_or(&[])).collect();
        let cold: Vec<i64> =
            (0..ids.len()).filter(|r| distinct(hist[*r]) <= c.cold_start_max_history).map(|r| r as i64).collect();
        let mut pairs: Vec<(i64, i64)> = Vec::new();
        let mut ba_pairs: Vec<(i64, i64, f32)> = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            let Some(row) = *row else { continue };
            for i in inp.excluded.get(row) {
                pairs.push((r as i64, *i));
            }
            if c.repeat_purchases {
                for (i, v) in inp.buy_again.get(row) {
                    ba_pairs.push((r as i64, *i, *v));
                }
            }
        }
        let sizes: Vec<f32> = rows.iter().map(|r| r.map(|r| inp.basket_size[r]).unwrap_or(1.0)).collect();
        Block { ids, rows, hist, cold, pairs, ba_pairs, sizes }
    }

    /// The block's scores from the raw user-item products: the model's
    /// chance with buy-again on, segment shares blended in for cold-start
    /// users, buy-again chances added; and, with buy-again on, each row's
    /// log normaliser.
    fn scores(&self, b: &Block, chunk: &[usize], raw: &Tensor) -> Result<(Tensor, Vec<f64>)> {
        let (c, device) = (self.c, self.device);
        let w_model = c.cold_start_model_weight;
        let (scores, log_norm) = tch::no_grad(|| {
            let (mut scores, log_norm) = if c.repeat_purchases {
                let (p, n) = basket::model_chances(raw, &b.sizes, self.explore);
                (p, Some(n))
            } else {
                (raw.shallow_clone(), None)
            };
            if !b.cold.is_empty() {
                let rows = Tensor::from_slice(&b.cold).to_device(device);
                let segs: Vec<i64> = b.cold.iter().map(|r| self.seg_of(chunk[*r as usize]) as i64).collect();
                let share =
                    self.seg_share.index_select(0, &Tensor::from_slice(&segs).to_device(device)) * (1.0 - w_model);
                let sig = raw.index_select(0, &rows).sigmoid();
                let _ = scores.index_copy_(0, &rows, &(share + sig * w_model).to_kind(scores.kind()));
            }
            basket::add_repeat(&scores, &b.ba_pairs);
            (scores, log_norm)
        });
        let log_norm = match log_norm {
            Some(n) => Vec::<f64>::try_from(n.to_kind(tch::Kind::Double).to_device(tch::Device::Cpu).contiguous())
                .ctx("copying the normalisers to the host")?,
            None => Vec::new(),
        };
        Ok((scores, log_norm))
    }

    /// Both tables' rows for the block of users `chunk` (embedding rows;
    /// `vals` their embeddings, `raw` their products with every item).
    fn block(&self, chunk: &[usize], vals: &[f32], raw: &Tensor, counts: &mut Counts) -> Result<(Rows, CrossRows)> {
        let (c, inp) = (self.c, self.inp);
        let b = self.users(chunk);
        let (mut scores, log_norm) = self.scores(&b, chunk, raw)?;
        let masks = Masks { all: Some(&inp.catalog.blocked), pairs: &b.pairs, per_row: None };
        topk::mask_scores(&mut scores, &masks);
        let scorer = Scorer {
            users: vals,
            items: &inp.catalog.item_host,
            dim: inp.catalog.dim,
            n1: self.n1 as usize,
            repeat: c.repeat_purchases,
            cold: b.cold.iter().map(|r| (*r as usize, self.seg_of(chunk[*r as usize]))).collect(),
            share: self.share_host,
            w_model: c.cold_start_model_weight,
            ba: b.ba_pairs.iter().map(|(r, i, v)| ((*r as usize, *i), f64::from(*v))).collect(),
            log_norm,
            sizes: b.sizes.iter().map(|s| f64::from(*s)).collect(),
            explore: self.explore,
        };
        let top = topk::exact_top_k(&scores, c.k, |r, i| scorer.score(r, i))?;
        // cross_category: the same scores, outside the dominant categories.
        let _ = scores.masked_fill_(&self.dominant_mask(&b), f64::NEG_INFINITY);
        let cross = topk::exact_top_k(&scores, c.cross_category_k, |r, i| scorer.score(r, i))?;
        let seen: Vec<Vec<i64>> = b.hist.iter().map(|h| sorted_distinct(h)).collect();
        let sources: Vec<&'static str> = (0..top.rows)
            .flat_map(|r| (0..top.k).map(move |j| (r, j)))
            .map(|(r, j)| {
                let item = top.items[r * top.k + j];
                match scorer.source(r, item) {
                    "model" if seen[r].binary_search(&item).is_ok() => "viewed_before",
                    s => s,
                }
            })
            .collect();
        let reasons = reasons(inp, &b.hist, &top, c.reason_history.max(1), self.device)?;
        let mut rows = Rows::default();
        for (r, uid) in b.ids.iter().enumerate() {
            counts.warm += 1;
            for (j, (s, i)) in top.row(r).enumerate() {
                let src = sources[r * top.k + j];
                *counts.by_source.entry(src).or_default() += 1;
                rows.user.push(uid.to_string());
                rows.rank.push(j as i32 + 1);
                rows.item.push(inp.catalog.item_ids[(i - 1) as usize].clone());
                rows.score.push(s);
                rows.source.push(src);
                let reason = reasons[r * top.k + j];
                rows.reason.push((reason > 0).then(|| inp.catalog.item_ids[(reason - 1) as usize].clone()));
            }
        }
        counts.cold_start += b.cold.len() as u64;
        let mut xrows = CrossRows::default();
        for (r, uid) in b.ids.iter().enumerate() {
            for (j, (s, i)) in cross.row(r).enumerate() {
                xrows.user.push(uid.to_string());
                xrows.rank.push(j as i32 + 1);
                xrows.item.push(inp.catalog.item_ids[(i - 1) as usize].clone());
                xrows.category.push(Some(self.cat_names[self.item_cat[i as usize] as usize].clone()));
                xrows.score.push(s);
            }
        }
        Ok((rows, xrows))
    }

    /// [rows, items]: whether the item is in one of the user's dominant
    /// categories (or has none: never "another category").
    fn dominant_mask(&self, b: &Block) -> Tensor {
        let n_cats = self.cat_names.len();
        let mut dom = vec![false; b.rows.len() * n_cats];
        for (r, row) in b.rows.iter().enumerate() {
            dom[r * n_cats] = true;
            let weighted = row.map(|row| self.inp.weighted.get(row)).unwrap_or(&[]);
            for id in dominant(weighted, &self.item_cat, &self.cat_names, self.c.dominant_categories) {
                dom[r * n_cats + id as usize] = true;
            }
        }
        let dom = Tensor::from_slice(&dom).view([b.rows.len() as i64, n_cats as i64]).to_device(self.device);
        dom.index_select(1, &self.item_cat_t)
    }
}

/// Users known from users/ but without an embedding: trending items.
fn popular_rows(inp: &Inputs, popular: &[(i64, f32)], target: &Target<'_>, k: usize, counts: &mut Counts) -> Rows {
    let mut rows = Rows::default();
    let warm = |u: &str| inp.user_ids.binary_search_by(|x| x.as_str().cmp(u)).is_ok();
    for (row, uid) in inp.served.iter().enumerate().filter(|(_, u)| !warm(u) && (target.select)(u)) {
        counts.popular += 1;
        let excluded = inp.excluded.get(row);
        for (r, (i, s)) in popular.iter().filter(|(i, _)| !excluded.contains(i)).take(k).enumerate() {
            rows.user.push(uid.clone());
            rows.rank.push(r as i32 + 1);
            rows.item.push(inp.catalog.item_ids[(*i - 1) as usize].clone());
            rows.score.push(*s);
            rows.source.push("popular");
            rows.reason.push(None);
            *counts.by_source.entry("popular").or_default() += 1;
        }
    }
    rows
}

/// A user's `n` heaviest categories (ids), by weighted interactions; ties
/// by name.
fn dominant(weighted: &[(i64, f64)], item_cat: &[i64], names: &[String], n: usize) -> Vec<i64> {
    let mut per: HashMap<i64, f64> = HashMap::new();
    for (i, w) in weighted {
        let cat = item_cat.get(*i as usize).copied().unwrap_or(0);
        if cat > 0 {
            *per.entry(cat).or_default() += w;
        }
    }
    let mut v: Vec<(i64, f64)> = per.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| names[a.0 as usize].cmp(&names[b.0 as usize])));
    v.into_iter().take(n).map(|x| x.0).collect()
}

fn distinct(h: &[i64]) -> usize {
    sorted_distinct(h).len()
}

fn sorted_distinct(h: &[i64]) -> Vec<i64> {
    let mut v = h.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// Exact scores of chosen candidates, computed on the host (see
/// [`topk::refine`]), and which generator each came from.
struct Scorer<'a> {
    users: &'a [f32],
    items: &'a [f32],
    dim: usize,
    n1: usize,
    repeat: bool,
    /// Cold-start rows of the block and their segment.
    cold: HashMap<usize, usize>,
    /// Segment shares, `segments × n1`, already without the model weight.
    share: &'a [f32],
    w_model: f64,
    /// Repeat mode: (row, item) → the chance of buying it again.
    ba: HashMap<(usize, i64), f64>,
    /// Repeat mode: each row's log normaliser of the model's softmax.
    log_norm: Vec<f64>,
    /// Repeat mode: each row's basket size.
    sizes: Vec<f64>,
    explore: f64,
}

impl Scorer<'_> {
    /// (model part, segment part, buy-again part) of a score.
    fn parts(&self, r: usize, i: i64) -> (f64, f64, f64) {
        let d = self.dim;
        let x = topk::dot(&self.users[r * d..(r + 1) * d], &self.items[i as usize * d..(i as usize + 1) * d]);
        let (m, s) = match self.cold.get(&r) {
            Some(s) => {
                let sig = 1.0 / (1.0 + (-x).exp());
                (self.w_model * sig, (1.0 - self.w_model) * f64::from(self.share[s * self.n1 + i as usize]))
            }
            None if self.repeat => {
                let (n, size) =
                    (self.log_norm.get(r).copied().unwrap_or(0.0), self.sizes.get(r).copied().unwrap_or(1.0));
                (basket::model_chance(x, n, size, self.explore), 0.0)
            }
            None => (x, 0.0),
        };
        // Noisy-or: buying again adds its chance where the rest leaves room.
        let b = self.ba.get(&(r, i)).map(|c| basket::repeat_blend(m + s, *c) - (m + s)).unwrap_or(0.0);
        (m, s, b)
    }

    fn score(&self, r: usize, i: i64) -> f64 {
        let (m, s, b) = self.parts(r, i);
        m + s + b
    }

    fn source(&self, r: usize, i: i64) -> &'static str {
        let (m, s, _) = self.parts(r, i);
        if self.ba.contains_key(&(r, i)) {
            "buy_again"
        } else if s > m {
            "cold_start"
        } else {
            "model"
        }
    }
}

/// Per chosen slot, the item among the user's last `len` history items
/// most similar to it, other than the candidate itself (0 for none).
fn reasons(inp: &Inputs, hist: &[&[i64]], top: &TopK, len: usize, device: tch::Device) -> Result<Vec<i64>> {
    if top.k == 0 || top.rows == 0 {
        return Ok(Vec::new());
    }
    let b = top.rows as i64;
    let dim = inp.catalog.dim as i64;
    let idx = Tensor::from_slice(&top.items).to_device(device);
    let hist = left_pad(hist, len, device);
    let r = tch::no_grad(|| {
        let cand = inp.catalog.unit.index_select(0, &idx).view([b, -1, dim]);
        let h = inp.catalog.unit.index_select(0, &hist.view([-1])).view([b, -1, dim]);
        let hist_k = hist.unsqueeze(1).expand([b, top.k as i64, hist.size()[1]], false);
        // Padding, and the candidate itself, cannot explain the candidate.
        let blocked = hist_k.eq(0).logical_or(&hist_k.eq_tensor(&idx.view([b, -1, 1])));
        let sim = cand.bmm(&h.transpose(1, 2)).masked_fill(&blocked, f64::NEG_INFINITY);
        let (best, at) = sim.max_dim(2, true);
        hist_k.gather(2, &at, false).where_scalarother(&best.isfinite(), 0)
    });
    host_i64(&r)
}
