//! The baselines scored beside the model: item-kNN (cosine over
//! `item_cooccurrence`) and recent popularity (the trending score of
//! `popular_items`).

use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use tch::Tensor;

use crate::arrays;
use crate::error::Result;
use crate::job::Job;
use crate::seqdata::SeqData;
use crate::sql::ts_param;

/// Neighbours kept per item by the item-kNN baseline.
pub(crate) const KNN_NEIGHBOURS: usize = 100;

/// Item-kNN: for each item, its most similar items and their cosine.
pub(crate) struct ItemKnn {
    neighbours: Vec<Vec<(i64, f32)>>,
}

impl ItemKnn {
    /// Scores [histories, n_items]: summed similarity to each history item.
    pub(crate) fn scores(&self, histories: &[&[i64]]) -> Tensor {
        let n = self.neighbours.len();
        let mut out = vec![0f32; histories.len() * n];
        for (r, h) in histories.iter().enumerate() {
            let row = &mut out[r * n..(r + 1) * n];
            for item in *h {
                for (j, s) in self.neighbours.get(*item as usize).map(Vec::as_slice).unwrap_or(&[]) {
                    row[*j as usize] += s;
                }
            }
        }
        Tensor::from_slice(&out).view([histories.len() as i64, n as i64])
    }
}

/// Item-kNN built from pairs arriving in batches: each item keeps at most
/// twice `keep` neighbours between batches, so memory stays bounded by the
/// catalog, not by the number of co-occurring pairs.
pub(crate) struct KnnBuilder {
    neighbours: Vec<Vec<(i64, f32)>>,
    keep: usize,
}

impl KnnBuilder {
    /// An empty builder for `n_items` item rows.
    pub(crate) fn new(n_items: usize, keep: usize) -> KnnBuilder {
        KnnBuilder { neighbours: vec![Vec::new(); n_items], keep: keep.max(1) }
    }

    /// Add (item a, item b, users) pairs; `item_users` is users per item.
    pub(crate) fn add(&mut self, pairs: impl IntoIterator<Item = (i64, i64, f64)>, item_users: &[f64]) {
        let n_items = self.neighbours.len();
        for (a, b, users) in pairs {
            let (a, b) = (a as usize, b as usize);
            if a < n_items && b < n_items && item_users[a] > 0.0 && item_users[b] > 0.0 {
                let sim = users / (item_users[a] * item_users[b]).sqrt();
                let n = &mut self.neighbours[a];
                n.push((b as i64, sim as f32));
                if n.len() >= 2 * self.keep {
                    Self::best(n, self.keep);
                }
            }
        }
    }

    fn best(n: &mut Vec<(i64, f32)>, keep: usize) {
        n.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        n.truncate(keep);
    }

    /// Each item's `keep` most similar items.
    pub(crate) fn finish(mut self) -> ItemKnn {
        for n in &mut self.neighbours {
            Self::best(n, self.keep);
        }
        ItemKnn { neighbours: self.neighbours }
    }
}

/// Item-kNN from `item_cooccurrence`, read a batch at a time into bounded
/// neighbour lists (the table can hold far more pairs than the catalog
/// has items).
pub(super) async fn item_knn(job: &Job, ctx: &SessionContext, data: &SeqData) -> Result<ItemKnn> {
    let item_users = train_item_users(data);
    let mut knn = KnnBuilder::new(data.n_items() as usize, KNN_NEIGHBOURS);
    let sql = crate::sql::read("item_cooccurrence")?;
    job.stream_work(ctx, "item_cooccurrence", sql, |b| {
        let b = std::slice::from_ref(b);
        let (a, i, u) = (arrays::ints(b, "item_a")?, arrays::ints(b, "item_b")?, arrays::ints(b, "users")?);
        knn.add(a.into_iter().zip(i).zip(u).map(|((a, b), u)| (a, b, u as f64)), &item_users);
        Ok(())
    })
    .await?;
    Ok(knn.finish())
}

/// The first day of the trending window (`candidates.trending_days`
/// ending on the run date).
pub(super) fn trending_start(job: &Job) -> crate::config::RunDate {
    job.date.minus_days(job.cfg.candidates.trending_days.saturating_sub(1))
}

/// Recent popularity per item index (`sql/evaluate/recent_popularity.sql`).
pub(super) async fn recent_popularity(job: &Job, ctx: &SessionContext, n_items: usize) -> Result<Vec<f32>> {
    let c = &job.cfg.candidates;
    job.register_work(ctx, &["steps"]).await?;
    let params = vec![
        ("start", ts_param(trending_start(job).start_millis())),
        ("end_seconds", ScalarValue::Int64(Some(job.date.plus_days(1).start_millis() / 1000))),
        ("half_life_days", ScalarValue::Float64(Some(c.trending_half_life_days))),
    ];
    let b = crate::sql::file("evaluate", "recent_popularity")?.collect(ctx, params).await?;
    let mut out = vec![0f32; n_items];
    for (i, s) in arrays::ints(&b, "item_idx")?.into_iter().zip(arrays::floats(&b, "score")?) {
        if let Some(slot) = out.get_mut(i.max(0) as usize) {
            *slot = s.unwrap_or(0.0) as f32;
        }
    }
    Ok(out)
}

/// Users whose training steps contain each item (index = item_idx).
pub(super) fn train_item_users(data: &SeqData) -> Vec<f64> {
    let mut n = vec![0f64; data.n_items() as usize];
    for u in 0..data.seqs.len() {
        let mut seen: Vec<i64> = data.split(u).train.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for i in seen {
            n[i as usize] += 1.0;
        }
    }
    n
}
