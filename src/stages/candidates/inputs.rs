//! What the candidate tables are computed from, held compactly: item
//! vectors and user embeddings in flat arrays, and each served user's
//! history, excluded items, weighted interactions and buy-again weights as
//! flat per-user lists ([`PerUser`]) indexed by the user's place in the
//! sorted list of served users — no map keyed by user id.
//!
//! A `--shard` process serves only its own users: it holds their
//! embeddings, sequences and interactions only, reading the others' without
//! keeping them (the segments, which need every user, are computed once per
//! date: [`super::segments`]).

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::SessionContext;
use tch::Tensor;

use crate::arrays;
use crate::error::{Error, Result};
use crate::job::Job;

/// Lists per user held flat: user `u`'s values are
/// `values[offsets[u]..offsets[u + 1]]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct PerUser<T> {
    offsets: Vec<usize>,
    values: Vec<T>,
}

impl<T: Copy> PerUser<T> {
    /// From (user, value) pairs in any order, for users `0..n`; each user's
    /// values keep the order they came in (the sort is stable).
    pub(crate) fn from_pairs(n: usize, mut pairs: Vec<(u32, T)>) -> PerUser<T> {
        pairs.sort_by_key(|p| p.0);
        let mut offsets = vec![0usize; n + 1];
        for (u, _) in &pairs {
            offsets[*u as usize + 1] += 1;
        }
        for u in 0..n {
            offsets[u + 1] += offsets[u];
        }
        PerUser { offsets, values: pairs.into_iter().map(|p| p.1).collect() }
    }

    /// User `u`'s values (empty past the end).
    pub(crate) fn get(&self, u: usize) -> &[T] {
        match (self.offsets.get(u), self.offsets.get(u + 1)) {
            (Some(a), Some(b)) => &self.values[*a..*b],
            _ => &[],
        }
    }
}

/// The item side: what the item tables are computed from, and what every
/// user's list is scored against.
pub(crate) struct Catalog {
    /// Item ids; item index i is `item_ids[i - 1]` (0 is padding).
    pub item_ids: Vec<String>,
    /// Category path, by item index − 1.
    pub categories: Vec<Option<String>>,
    /// Item embeddings `[N + 1, D]` on the device, row 0 zero.
    pub items: Tensor,
    /// The same on the host, row-major.
    pub item_host: Vec<f32>,
    /// The same, L2-normalised.
    pub unit: Tensor,
    /// Items nobody may get `[N + 1]`: padding and out of stock.
    pub blocked: Tensor,
    /// Embedding width.
    pub dim: usize,
}

/// What the per-user tables are computed from, for the users a process
/// serves.
pub(crate) struct Inputs {
    /// The items.
    pub catalog: Catalog,
    /// The served users with an embedding, sorted.
    pub user_ids: Vec<String>,
    /// Their embeddings, row-major.
    pub user_vals: Vec<f32>,
    /// The known users this process serves (from users/ and events), sorted.
    pub served: Vec<String>,
    /// Each served user's training sequence (item indices, oldest first).
    pub history: PerUser<i64>,
    /// Items each served user must not get again.
    pub excluded: PerUser<i64>,
    /// Each served user's items with their event-weighted interaction counts.
    pub weighted: PerUser<(i64, f64)>,
    /// Repeat mode: each served user's bought items with the chance that
    /// the next basket holds them again ([`crate::basket::repeat_chance`]).
    pub buy_again: PerUser<(i64, f32)>,
    /// Repeat mode: each served user's mean distinct items per basket.
    pub basket_size: Vec<f32>,
}

impl Inputs {
    /// A served user's place in [`Inputs::served`].
    pub(crate) fn served_index(&self, user_id: &str) -> Option<usize> {
        self.served.binary_search_by(|u| u.as_str().cmp(user_id)).ok()
    }
}

pub(crate) fn text_column(b: &RecordBatch, name: &str) -> Result<datafusion::arrow::array::ArrayRef> {
    let c = b.column_by_name(name).ok_or_else(|| Error::Internal(format!("column {name} missing")))?;
    datafusion::arrow::compute::cast(c, &DataType::Utf8).map_err(|e| Error::Internal(format!("column {name}: {e}")))
}

pub(crate) fn int_column(b: &RecordBatch, name: &str) -> Result<datafusion::arrow::array::ArrayRef> {
    let c = b.column_by_name(name).ok_or_else(|| Error::Internal(format!("column {name} missing")))?;
    datafusion::arrow::compute::cast(c, &DataType::Int64).map_err(|e| Error::Internal(format!("column {name}: {e}")))
}

/// Every row of `interactions` as (user id, item index, event type,
/// events), streamed one batch at a time.
pub(crate) async fn for_each_interaction(
    job: &Job,
    ctx: &SessionContext,
    mut each: impl FnMut(&str, i64, &str, f64),
) -> Result<()> {
    let sql = crate::sql::read("interactions")?;
    job.stream_work(ctx, "interactions", sql, |b| {
        let (ids, types) = (text_column(b, "user_id")?, text_column(b, "event_type")?);
        let (ids, types) = (ids.as_string::<i32>(), types.as_string::<i32>());
        let (items, events) = (int_column(b, "item_idx")?, int_column(b, "events")?);
        let (items, events) = (items.as_primitive::<Int64Type>(), events.as_primitive::<Int64Type>());
        for r in 0..b.num_rows() {
            each(ids.value(r), items.value(r), types.value(r), events.value(r) as f64);
        }
        Ok(())
    })
    .await
}

/// Load the item side.
pub(crate) async fn load_catalog(job: &Job, ctx: &SessionContext, device: tch::Device) -> Result<Catalog> {
    let items_b = job.read_work(ctx, "item_embeddings", crate::sql::read("item_embeddings")?).await?;
    let index_b = job.read_work(ctx, "item_index", crate::sql::read("item_stock")?).await?;
    let item_ids = arrays::strings_required(&items_b, "item_id")?;
    let (item_vals, dim) = arrays::vectors(&items_b, "embedding")?;
    let in_stock = arrays::bools(&index_b, "in_stock", true)?;
    let categories = arrays::strings(&index_b, "category")?;
    if in_stock.len() != item_ids.len() {
        return Err(Error::Internal("item_index and item_embeddings disagree on the catalog".into()));
    }
    let n1 = item_ids.len() as i64 + 1;
    let mut padded = vec![0f32; dim];
    padded.extend(item_vals);
    let items = Tensor::from_slice(&padded).view([n1, dim as i64]).to_device(device);
    let unit = &items / items.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    let item_host = padded;
    let mut blocked = vec![true];
    blocked.extend(in_stock.iter().map(|s| !s));
    let blocked = Tensor::from_slice(&blocked).to_device(device);
    Ok(Catalog { item_ids, categories, items, item_host, unit, blocked, dim })
}

/// Every user's embedding, or those `select` accepts: (ids sorted, vectors
/// row-major).
pub(crate) async fn user_embeddings(
    job: &Job,
    ctx: &SessionContext,
    dim: usize,
    select: &dyn Fn(&str) -> bool,
) -> Result<(Vec<String>, Vec<f32>)> {
    let (mut ids, mut vals) = (Vec::new(), Vec::new());
    let sql = crate::sql::read("user_embeddings")?;
    job.stream_work(ctx, "user_embeddings", sql, |b| {
        let batch_ids = arrays::strings_required(std::slice::from_ref(b), "user_id")?;
        let (v, udim) = arrays::vectors(std::slice::from_ref(b), "embedding")?;
        if !batch_ids.is_empty() && udim != dim {
            return Err(Error::Internal(format!("user embeddings have {udim} dims, item embeddings {dim}")));
        }
        for (r, id) in batch_ids.into_iter().enumerate() {
            if select(&id) {
                vals.extend_from_slice(&v[r * dim..(r + 1) * dim]);
                ids.push(id);
            }
        }
        Ok(())
    })
    .await?;
    Ok((ids, vals))
}

/// Load the inputs of the users `select` accepts.
pub(crate) async fn load(
    job: &Job,
    ctx: &SessionContext,
    catalog: Catalog,
    select: &dyn Fn(&str) -> bool,
) -> Result<Inputs> {
    let (user_ids, user_vals) = user_embeddings(job, ctx, catalog.dim, select).await?;

    // The served users: every known user (users/ and events) that `select` takes.
    let mut served: Vec<String> = Vec::new();
    job.stream_work(ctx, "users", crate::sql::read("user_ids")?, |b| {
        let ids = text_column(b, "user_id")?;
        let ids = ids.as_string::<i32>();
        served.extend(
            (0..ids.len()).filter(|r| ids.is_valid(*r) && select(ids.value(*r))).map(|r| ids.value(r).to_string()),
        );
        Ok(())
    })
    .await?;
    served.extend(user_ids.iter().filter(|u| select(u)).cloned());
    served.sort_unstable();
    served.dedup();
    let find = |u: &str| served.binary_search_by(|s| s.as_str().cmp(u)).ok().map(|i| i as u32);

    let mut hist_pairs: Vec<(u32, i64)> = Vec::new();
    job.stream_work(ctx, "sequences", crate::sql::read("histories")?, |b| {
        let ids = text_column(b, "user_id")?;
        let ids = ids.as_string::<i32>();
        let lists = arrays::int_lists(std::slice::from_ref(b), "item_idxs")?;
        for (r, list) in lists.into_iter().enumerate() {
            if let Some(u) = find(ids.value(r)) {
                hist_pairs.extend(list.into_iter().map(|i| (u, i)));
            }
        }
        Ok(())
    })
    .await?;
    let history = PerUser::from_pairs(served.len(), hist_pairs);
    let end = job.date.plus_days(1).start_millis();

    let c = &job.cfg.candidates;
    let excluded_types: Vec<&str> = c.excluded_types().iter().map(|e| e.as_str()).collect();
    let weights: HashMap<&str, f64> =
        job.cfg.trainset.event_weights.pairs().iter().map(|(e, w)| (e.as_str(), *w)).collect();
    let end = (end / 1000) as f64;
    let (mut excl, mut weighted) = (Vec::new(), Vec::new());
    for_each_interaction(job, ctx, |user, i, t, n| {
        let Some(u) = find(user) else { return };
        if excluded_types.contains(&t) {
            excl.push((u, i));
        }
        weighted.push((u, (i, n * weights.get(t).copied().unwrap_or(0.0))));
    })
    .await?;
    // Repeat mode: each served user's baskets (every step, the last
    // basket too) give the "buy again" chances and the basket size.
    let mut buy = Vec::new();
    let mut basket_size = vec![1f32; served.len()];
    if c.repeat_purchases {
        let want: HashMap<&str, usize> = served.iter().enumerate().map(|(r, u)| (u.as_str(), r)).collect();
        for (r, h) in crate::basket::histories(job, &want, false).await? {
            basket_size[r] = h.basket_size() as f32;
            let shares = h.repeat_shares(end, c.buy_again_half_life_days, c.buy_again_basket_decay);
            buy.extend(
                shares.into_iter().map(|(i, w)| (r as u32, (i, crate::basket::repeat_chance(w, c.buy_again_weight)))),
            );
        }
    }
    let buy_again = PerUser::from_pairs(served.len(), buy);
    Ok(Inputs {
        catalog,
        user_ids,
        user_vals,
        history,
        excluded: PerUser::from_pairs(served.len(), excl),
        weighted: PerUser::from_pairs(served.len(), weighted),
        buy_again,
        basket_size,
        served,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_lists_keep_order_and_empty_users() {
        let p = PerUser::from_pairs(4, vec![(2, 'a'), (0, 'b'), (2, 'c'), (0, 'd')]);
        assert_eq!(p.get(0), &['b', 'd']);
        assert!(p.get(1).is_empty());
        assert_eq!(p.get(2), &['a', 'c']);
        assert!(p.get(3).is_empty() && p.get(99).is_empty());
    }
}
