//! Stage `candidates`: embeddings → `user_candidates`.
//!
//! Exact maximum-inner-product top-K of every user against every item,
//! computed in blocks of users sized from `candidates.memory_budget_mb`, so
//! the full users × items matrix never exists. Items the user must not see
//! again (`candidates.exclude_event_types`) and out-of-stock items are
//! never returned. `reason_item_id` is the item among the user's recent
//! history most similar (cosine) to the candidate. Users with no history
//! get the most popular in-stock items (`source = popular`).
//!
//! Safe to re-run: the output folder is replaced whole.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Float32Array, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use tch::{Kind, Tensor};

use crate::arrays;
use crate::error::{DfContext, Error, Result};
use crate::job::Job;
use crate::parquet_io::{PartWriter, WrittenTable};
use crate::seqdata::left_pad;

/// The output schema of `user_candidates`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("rank", DataType::Int32, false),
        Field::new("item_id", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("reason_item_id", DataType::Utf8, true),
    ]))
}

/// Rows of one output batch, built column by column.
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

/// Exact top-k per row of `users` [B, D] against `items` [N, D], with
/// `blocked` [B, N] marking items that must not be returned. Returns
/// (scores, indices), each [B, k]; blocked slots come back as -inf.
pub fn top_k(users: &Tensor, items: &Tensor, blocked: &Tensor, k: i64) -> (Tensor, Tensor) {
    let scores = users.matmul(&items.tr()).masked_fill(blocked, f64::NEG_INFINITY);
    let k = k.min(items.size()[0]);
    scores.topk(k, 1, true, true)
}

/// Run the stage.
pub async fn run(job: &Job, device: tch::Device) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let ctx = job.session()?;
    let k = job.cfg.candidates.k as i64;
    let items_b = job
        .read_work(
            &ctx,
            "item_embeddings",
            "SELECT item_idx, item_id, embedding FROM item_embeddings ORDER BY item_idx",
        )
        .await?;
    let index_b =
        job.read_work(&ctx, "item_index", "SELECT item_idx, in_stock FROM item_index ORDER BY item_idx").await?;
    let users_b = job.read_work(&ctx, "user_embeddings", "SELECT user_id, embedding FROM user_embeddings").await?;
    let seq_b = job.read_work(&ctx, "sequences", "SELECT user_id, item_idxs FROM sequences").await?;
    let inter_b = job.read_work(&ctx, "interactions", "SELECT user_id, item_idx, event_type FROM interactions").await?;
    let pop_b = job
        .read_work(
            &ctx,
            "item_popularity",
            "SELECT item_idx, users FROM item_popularity ORDER BY users DESC, events DESC, item_idx",
        )
        .await?;
    let all_users_b = job.read_work(&ctx, "users", "SELECT user_id FROM users ORDER BY user_id").await?;

    let item_ids = arrays::strings_required(&items_b, "item_id")?;
    let (item_vals, dim) = arrays::vectors(&items_b, "embedding")?;
    let n = item_ids.len() as i64 + 1;
    let in_stock = arrays::bools(&index_b, "in_stock", true)?;
    if in_stock.len() != item_ids.len() {
        return Err(Error::Internal("item_index and item_embeddings disagree on the catalog".into()));
    }
    // Row 0 is padding: a zero vector, always blocked.
    let mut padded = vec![0f32; dim];
    padded.extend(item_vals);
    let items = Tensor::from_slice(&padded).view([n, dim as i64]).to_device(device);
    let items_unit = &items / items.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    let mut base_block = vec![true];
    base_block.extend(in_stock.iter().map(|s| !s));
    let base_block = Tensor::from_slice(&base_block).to_device(device);

    let excluded_types: HashSet<&str> = job.cfg.candidates.exclude_event_types.iter().map(|e| e.as_str()).collect();
    let mut excluded: HashMap<String, Vec<i64>> = HashMap::new();
    let (iu, ii, it) = (
        arrays::strings_required(&inter_b, "user_id")?,
        arrays::ints(&inter_b, "item_idx")?,
        arrays::strings_required(&inter_b, "event_type")?,
    );
    for ((u, i), t) in iu.into_iter().zip(ii).zip(it) {
        if excluded_types.contains(t.as_str()) {
            excluded.entry(u).or_default().push(i);
        }
    }
    let history: HashMap<String, Vec<i64>> =
        arrays::strings_required(&seq_b, "user_id")?.into_iter().zip(arrays::int_lists(&seq_b, "item_idxs")?).collect();

    let user_ids = arrays::strings_required(&users_b, "user_id")?;
    let (user_vals, _) = arrays::vectors(&users_b, "embedding")?;
    let budget = job.cfg.candidates.memory_budget_mb.saturating_mul(1024 * 1024);
    // Per user in a block: scores, the blocked mask, and topk's scratch.
    let per_user = (n as usize) * (4 + 1 + 4);
    let block = (budget / per_user.max(1)).clamp(1, 65536);
    let reason_len = job.cfg.candidates.reason_history.max(1);
    let mut w = PartWriter::create(
        &job.output,
        &job.work("user_candidates"),
        "user_candidates",
        schema(),
        &job.lineage,
        job.cfg.runtime.max_rows_per_file,
    )
    .await?;
    let mut model_rows = 0u64;
    for start in (0..user_ids.len()).step_by(block) {
        let end = (start + block).min(user_ids.len());
        let b = (end - start) as i64;
        let u = Tensor::from_slice(&user_vals[start * dim..end * dim]).view([b, dim as i64]).to_device(device);
        let blocked = base_block.unsqueeze(0).repeat([b, 1]);
        let mut rows_e: Vec<i64> = Vec::new();
        let mut cols_e: Vec<i64> = Vec::new();
        for (r, uid) in user_ids[start..end].iter().enumerate() {
            for i in excluded.get(uid).map(Vec::as_slice).unwrap_or(&[]) {
                rows_e.push(r as i64);
                cols_e.push(*i);
            }
        }
        if !rows_e.is_empty() {
            let flat = Tensor::from_slice(&rows_e) * n + Tensor::from_slice(&cols_e);
            let _ = blocked.view([-1]).index_fill_(0, &flat.to_device(device), 1);
        }
        let (scores, idx) = tch::no_grad(|| top_k(&u, &items, &blocked, k));
        let hist: Vec<&[i64]> =
            user_ids[start..end].iter().map(|u| history.get(u).map(Vec::as_slice).unwrap_or(&[])).collect();
        let hist = left_pad(&hist, reason_len, device);
        let reason_idx = tch::no_grad(|| {
            let cand = items_unit.index_select(0, &idx.view([-1])).view([b, -1, dim as i64]);
            let h = items_unit.index_select(0, &hist.view([-1])).view([b, -1, dim as i64]);
            let sim = cand.bmm(&h.transpose(1, 2)).masked_fill(&hist.eq(0).unsqueeze(1), f64::NEG_INFINITY);
            hist.unsqueeze(1)
                .expand([b, idx.size()[1], hist.size()[1]], false)
                .gather(2, &sim.argmax(2, true), false)
                .squeeze_dim(2)
        });
        let scores: Vec<f32> = Vec::try_from(scores.to_device(tch::Device::Cpu).to_kind(Kind::Float).view([-1]))
            .map_err(|e| Error::torch("copying scores", e))?;
        let idx: Vec<i64> = Vec::try_from(idx.to_device(tch::Device::Cpu).view([-1]))
            .map_err(|e| Error::torch("copying indices", e))?;
        let reason: Vec<i64> = Vec::try_from(reason_idx.to_device(tch::Device::Cpu).reshape([-1]))
            .map_err(|e| Error::torch("copying reasons", e))?;
        let kk = idx.len() / (b as usize);
        let mut rows = Rows::default();
        for r in 0..b as usize {
            let mut rank = 0;
            for j in 0..kk {
                let p = r * kk + j;
                if !scores[p].is_finite() {
                    break;
                }
                rank += 1;
                rows.user.push(user_ids[start + r].clone());
                rows.rank.push(rank);
                rows.item.push(item_ids[(idx[p] - 1) as usize].clone());
                rows.score.push(scores[p]);
                rows.source.push("model");
                rows.reason.push((reason[p] > 0).then(|| item_ids[(reason[p] - 1) as usize].clone()));
            }
        }
        model_rows += rows.user.len() as u64;
        w.write(&rows.batch()?).await?;
    }

    // Users known from users/ or events but without a sequence: popular items.
    let warm: HashSet<&str> = user_ids.iter().map(String::as_str).collect();
    let pop_idx = arrays::ints(&pop_b, "item_idx")?;
    let pop_users = arrays::ints(&pop_b, "users")?;
    let top_pop = pop_users.first().copied().unwrap_or(1).max(1) as f32;
    let popular: Vec<(i64, f32)> = pop_idx
        .iter()
        .zip(&pop_users)
        .filter(|(i, _)| in_stock.get((**i - 1) as usize).copied().unwrap_or(false))
        .take(k as usize)
        .map(|(i, u)| (*i, *u as f32 / top_pop))
        .collect();
    let mut rows = Rows::default();
    let mut cold = 0u64;
    for uid in arrays::strings_required(&all_users_b, "user_id")? {
        if warm.contains(uid.as_str()) {
            continue;
        }
        cold += 1;
        for (r, (i, s)) in popular.iter().enumerate() {
            rows.user.push(uid.clone());
            rows.rank.push(r as i32 + 1);
            rows.item.push(item_ids[(*i - 1) as usize].clone());
            rows.score.push(*s);
            rows.source.push("popular");
            rows.reason.push(None);
        }
    }
    w.write(&rows.batch()?).await?;
    let t = w.finish().await?;
    let facts = vec![
        ("users with model candidates".into(), user_ids.len().to_string()),
        ("users with popular fallback".into(), cold.to_string()),
        ("candidate rows".into(), format!("{} (model {model_rows})", t.rows())),
        ("users per block".into(), block.to_string()),
    ];
    Ok((vec![t], facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_matches_brute_force_and_respects_blocks() {
        let _rng = crate::device::rng_lock();
        tch::manual_seed(3);
        let users = Tensor::randn([5, 4], (Kind::Float, tch::Device::Cpu));
        let items = Tensor::randn([30, 4], (Kind::Float, tch::Device::Cpu));
        let blocked = Tensor::zeros([5, 30], (Kind::Bool, tch::Device::Cpu));
        let _ = blocked.get(0).get(7).fill_(1);
        let (s, i) = top_k(&users, &items, &blocked, 6);
        let u: Vec<f32> = Vec::try_from(users.view([-1])).unwrap();
        let it: Vec<f32> = Vec::try_from(items.view([-1])).unwrap();
        let got: Vec<i64> = Vec::try_from(i.view([-1])).unwrap();
        let got_s: Vec<f32> = Vec::try_from(s.view([-1])).unwrap();
        for r in 0..5 {
            let mut all: Vec<(f32, i64)> = (0..30)
                .filter(|j| !(r == 0 && *j == 7))
                .map(|j| ((0..4).map(|d| u[r * 4 + d] * it[j * 4 + d]).sum(), j as i64))
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            let want: Vec<i64> = all.iter().take(6).map(|x| x.1).collect();
            assert_eq!(&got[r * 6..r * 6 + 6], want.as_slice(), "row {r}");
            assert!(got_s[r * 6..r * 6 + 6].windows(2).all(|w| w[0] >= w[1]));
        }
        assert!(!got[0..6].contains(&7));
    }
}
