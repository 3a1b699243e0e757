//! Stage `evaluate`: checkpoint + held-out items → `evaluation`.
//!
//! Leave-one-out by time: each user's test steps (the last, by default) are
//! predicted from everything before them, by the checkpoint's holdout model
//! when training refit the published one on every step (`crate::train`):
//! the model scored never saw a test step; the whole catalog is ranked, and
//! the user's history is masked the same way for every model (an item the
//! user already saw cannot take a rank). Baselines run in the same pass on
//! the same cases: popularity (counted on everything but the test steps) and
//! item-kNN (cosine over `item_cooccurrence`, which counts training steps
//! only; each item's `KNN_NEIGHBOURS` most similar items, scores summed
//! over the user's history). NDCG@10, HR@10 and MRR@10 per model, for all
//! users and by history length, each with its 95% confidence interval.
//!
//! With `--repeat-purchases` the held-out step is the user's last basket,
//! and [`basket`] adds next-basket Recall, NDCG and HR@10 (segment `next
//! basket`, history not masked) for the blend that is published, the model
//! alone, personal top frequency, TIFU-KNN and popularity.
//!
//! At most `evaluate.sample_users` users are scored: those with the
//! smallest keyed hash of their user id ([`sample`]), so the sample is the
//! same every night and on every machine, and every user has the same
//! chance to be in it.
//!
//! Safe to re-run: the output folder is replaced whole.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use tch::{Kind, Tensor};

use crate::arrays;
use crate::basket;
use crate::checkpoint;
use crate::error::{DfContext, Result};
use crate::job::Job;
use crate::metrics::{RankSums, SetSums};
use crate::parquet_io::WrittenTable;
use crate::seqdata::{self, SeqData, left_pad};

/// Metrics are reported at this cut-off.
pub const K: i64 = 10;

/// The segment of the next-basket rows (`--repeat-purchases`, [`basket`]).
pub const BASKET_SEGMENT: &str = "next basket";

/// Neighbours kept per item by the item-kNN baseline.
pub const KNN_NEIGHBOURS: usize = 100;

/// History-length segments: (name, shortest, longest) history in steps.
const SEGMENTS: [(&str, usize, usize); 3] =
    [("history 1-5", 1, 5), ("history 6-20", 6, 20), ("history 21+", 21, usize::MAX)];

/// Item-kNN: for each item, its most similar items and their cosine.
pub struct ItemKnn {
    neighbours: Vec<Vec<(i64, f32)>>,
}

impl ItemKnn {
    /// Scores [histories, n_items]: summed similarity to each history item.
    pub fn scores(&self, histories: &[&[i64]]) -> Tensor {
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
pub struct KnnBuilder {
    neighbours: Vec<Vec<(i64, f32)>>,
    keep: usize,
}

impl KnnBuilder {
    /// An empty builder for `n_items` item rows.
    pub fn new(n_items: usize, keep: usize) -> KnnBuilder {
        KnnBuilder { neighbours: vec![Vec::new(); n_items], keep: keep.max(1) }
    }

    /// Add (item a, item b, users) pairs; `item_users` is users per item.
    pub fn add(&mut self, pairs: impl IntoIterator<Item = (i64, i64, f64)>, item_users: &[f64]) {
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
    pub fn finish(mut self) -> ItemKnn {
        for n in &mut self.neighbours {
            Self::best(n, self.keep);
        }
        ItemKnn { neighbours: self.neighbours }
    }
}

/// Metric sums per segment ("all" first).
#[derive(Default)]
struct Sums(Vec<(String, RankSums)>);

impl Sums {
    fn add(&mut self, segment: &str, scores: &Tensor, targets: &Tensor, history: &Tensor) {
        match self.0.iter_mut().find(|(s, _)| s == segment) {
            Some((_, r)) => r.add(scores, targets, history, K),
            None => {
                let mut r = RankSums::default();
                r.add(scores, targets, history, K);
                self.0.push((segment.to_string(), r));
            }
        }
    }

    fn all(&self) -> RankSums {
        self.0.iter().find(|(s, _)| s == "all").map(|(_, r)| *r).unwrap_or_default()
    }
}

fn segment_of(history: usize) -> &'static str {
    SEGMENTS.iter().find(|(_, lo, hi)| history >= *lo && history <= *hi).map(|s| s.0).unwrap_or("history 21+")
}

/// Run the stage.
pub async fn run(job: &Job, device: tch::Device) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let data = seqdata::load(job).await?;
    let (_vs, model, _meta) = checkpoint::load(job, device, checkpoint::Weights::Holdout).await?;
    let ctx = job.session()?;
    let n_items = data.n_items() as usize;
    // The co-occurrence table can hold far more pairs than the catalog has
    // items: it is read a batch at a time into bounded neighbour lists.
    let item_users = train_item_users(&data);
    let mut knn = KnnBuilder::new(n_items, KNN_NEIGHBOURS);
    let sql = "SELECT item_a, item_b, users FROM item_cooccurrence";
    job.stream_work(&ctx, "item_cooccurrence", sql, |b| {
        let b = std::slice::from_ref(b);
        let (a, i, u) = (arrays::ints(b, "item_a")?, arrays::ints(b, "item_b")?, arrays::ints(b, "users")?);
        knn.add(a.into_iter().zip(i).zip(u).map(|((a, b), u)| (a, b, u as f64)), &item_users);
        Ok(())
    })
    .await?;
    let knn = knn.finish();
    let max_len = model.config().max_len as usize;

    // (user, test item) cases: each test item is predicted from everything
    // before the user's first test step.
    let (eligible, chosen) = test_users(job, &data);
    let cases: Vec<(usize, i64)> = chosen
        .iter()
        .copied()
        .flat_map(|u| {
            let s = data.split(u);
            let ok = !s.before_test.is_empty();
            s.test.iter().filter(move |_| ok).map(move |t| (u, *t))
        })
        .collect();
    let mut counts = vec![0f32; n_items];
    for u in 0..data.seqs.len() {
        for i in data.split(u).before_test {
            counts[*i as usize] += 1.0;
        }
    }
    let pop = Tensor::from_slice(&counts).to_device(device).unsqueeze(0);
    let feats = data.features(device);
    let mut sums: Vec<(&str, Sums)> =
        vec![("nightrec", Sums::default()), ("popularity", Sums::default()), ("item_knn", Sums::default())];
    let items = tch::no_grad(|| model.item_table(&feats));
    tch::no_grad(|| {
        // Cases of one segment together, so each batch updates one row.
        for (segment, _, _) in SEGMENTS {
            let seg_cases: Vec<&(usize, i64)> =
                cases.iter().filter(|(u, _)| segment_of(data.split(*u).before_test.len()) == segment).collect();
            for chunk in seg_cases.chunks(256) {
                let inputs: Vec<&[i64]> = chunk.iter().map(|(u, _)| data.split(*u).before_test).collect();
                let targets =
                    Tensor::from_slice(&chunk.iter().map(|(_, t)| *t).collect::<Vec<i64>>()).to_device(device);
                let hist = left_pad(&inputs, usize::MAX, device);
                let model_scores = model.encode_last(&left_pad(&inputs, max_len, device), &items).matmul(&items.tr());
                let pop_scores = pop.expand([chunk.len() as i64, n_items as i64], false).to_kind(Kind::Float);
                let knn_scores = knn.scores(&inputs).to_device(device);
                for ((_, s), scores) in sums.iter_mut().zip([&model_scores, &pop_scores, &knn_scores]) {
                    s.add("all", scores, &targets, &hist);
                    s.add(segment, scores, &targets, &hist);
                }
            }
        }
    });
    let mut rows: Vec<(&str, String, &str, f64, usize, f64)> = Vec::new();
    for (name, s) in &sums {
        for (segment, r) in &s.0 {
            let (ci_ndcg, ci_hr, ci_mrr) = r.ci95();
            rows.push((name, segment.clone(), "ndcg", r.ndcg(), r.users, ci_ndcg));
            rows.push((name, segment.clone(), "hr", r.hr(), r.users, ci_hr));
            rows.push((name, segment.clone(), "mrr", r.mrr(), r.users, ci_mrr));
        }
    }
    let mut facts = Vec::new();
    if job.cfg.candidates.repeat_purchases {
        let outcome = basket::evaluate(job, &data, &chosen, &model, &items, &counts, true, device).await?;
        let baskets = outcome.sums;
        for (name, s) in &baskets {
            let (ci_recall, ci_ndcg, ci_hr) = s.ci95();
            rows.push((*name, BASKET_SEGMENT.into(), "recall", s.recall(), s.users, ci_recall));
            rows.push((*name, BASKET_SEGMENT.into(), "ndcg", s.ndcg(), s.users, ci_ndcg));
            rows.push((*name, BASKET_SEGMENT.into(), "hr", s.hr(), s.users, ci_hr));
        }
        let fmt = |f: fn(&SetSums) -> f64| {
            baskets.iter().map(|(_, s)| format!("{:.4}", f(s))).collect::<Vec<_>>().join(" / ")
        };
        let names = "nightrec / sequence model / personal top frequency / TIFU-KNN / popularity";
        facts.push(("next-basket users".into(), baskets.first().map(|b| b.1.users).unwrap_or(0).to_string()));
        facts.push((
            "next-basket explore weight (chosen; the blend's row is cross-fitted)".into(),
            format!("{}", outcome.explore_weight),
        ));
        facts.push((format!("next-basket Recall@10 {names}"), fmt(SetSums::recall)));
        facts.push((format!("next-basket NDCG@10 {names}"), fmt(SetSums::ndcg)));
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("k", DataType::Int32, false),
        Field::new("value", DataType::Float64, false),
        Field::new("users", DataType::Int32, false),
        Field::new("ci_low", DataType::Float64, false),
        Field::new("ci_high", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|_| K as i32))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.4 as i32))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| (r.3 - r.5).max(0.0)))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| (r.3 + r.5).min(1.0)))),
        ],
    )
    .ctx("building evaluation")?;
    let t = job.write_work_batches("evaluation", schema, &[batch]).await?;
    let all: HashMap<&str, RankSums> = sums.iter().map(|(n, s)| (*n, s.all())).collect();
    let fmt = |f: fn(&RankSums) -> f64| {
        ["nightrec", "popularity", "item_knn"]
            .iter()
            .map(|n| format!("{:.4}", all.get(n).map(f).unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    facts.splice(
        0..0,
        [
            (
                "test cases (users sampled / with a test step)".into(),
                format!(
                    "{} ({} / {})",
                    all.get("nightrec").map(|r| r.users).unwrap_or(0),
                    chosen.len(),
                    eligible.len()
                ),
            ),
            ("NDCG@10 nightrec / popularity / item-kNN".into(), fmt(RankSums::ndcg)),
            ("HR@10 nightrec / popularity / item-kNN".into(), fmt(RankSums::hr)),
            ("MRR@10 nightrec / popularity / item-kNN".into(), fmt(RankSums::mrr)),
        ],
    );
    Ok((vec![t], facts))
}

/// The users with a test step, and the sample of them that is scored.
pub fn test_users(job: &Job, data: &SeqData) -> (Vec<usize>, Vec<usize>) {
    let eligible: Vec<usize> = (0..data.seqs.len()).filter(|u| !data.split(*u).test.is_empty()).collect();
    let chosen = sample(&eligible, &data.users, job.cfg.evaluate.sample_users, job.cfg.run.seed);
    (eligible, chosen)
}

/// At most `n` of `users` (indices into `ids`; 0 = all): those whose id
/// has the smallest keyed hash under `seed`, in their original order.
pub fn sample(users: &[usize], ids: &[String], n: usize, seed: u64) -> Vec<usize> {
    if n == 0 || users.len() <= n {
        return users.to_vec();
    }
    use sha2::{Digest, Sha256};
    let key = |u: usize| {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(ids[u].as_bytes());
        let d = h.finalize();
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    };
    let mut keyed: Vec<(u64, usize)> = users.iter().map(|u| (key(*u), *u)).collect();
    keyed.select_nth_unstable(n - 1);
    keyed.truncate(n);
    let mut out: Vec<usize> = keyed.into_iter().map(|k| k.1).collect();
    out.sort_unstable();
    out
}

/// Users whose training steps contain each item (index = item_idx).
fn train_item_users(data: &SeqData) -> Vec<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_stable_as_users_come_and_go() {
        let ids: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        let all: Vec<usize> = (0..1000).collect();
        let a = sample(&all, &ids, 100, 42);
        assert_eq!(a.len(), 100);
        assert_eq!(a, sample(&all, &ids, 100, 42), "not deterministic");
        assert_ne!(a, sample(&all, &ids, 100, 43), "the seed is ignored");
        assert_ne!(a, (0..100).collect::<Vec<_>>(), "the first users, not a sample");
        // Removing users outside the sample changes nothing.
        let fewer: Vec<usize> = all.iter().copied().filter(|u| a.contains(u) || u % 2 == 0).collect();
        assert_eq!(sample(&fewer, &ids, 100, 42), a);
        assert_eq!(sample(&all, &ids, 0, 42), all);
    }

    #[test]
    fn knn_sums_cosine_over_history_and_keeps_top_neighbours() {
        // Items 1..=3; 1 and 2 co-occur for 2 users, 1 and 3 for 1.
        let pairs = [(1, 2, 2.0), (2, 1, 2.0), (1, 3, 1.0), (3, 1, 1.0)];
        let users = [0.0, 4.0, 2.0, 1.0];
        let mut all = KnnBuilder::new(4, 1);
        all.add(pairs.iter().copied(), &users);
        let knn = all.finish();
        let s: Vec<f32> = Vec::try_from(knn.scores(&[&[1], &[2, 3]]).view([-1])).unwrap();
        let c12 = (2.0 / (4.0f64 * 2.0).sqrt()) as f32;
        let c31 = (1.0 / (1.0f64 * 4.0).sqrt()) as f32;
        // Item 1 keeps only its top neighbour (2); items 2 and 3 both point at 1.
        assert_eq!(&s[..4], &[0.0, 0.0, c12, 0.0]);
        assert_eq!(&s[4..], &[0.0, c12 + c31, 0.0, 0.0]);
        // Batches of pairs give the same neighbours as all pairs at once.
        let mut b = KnnBuilder::new(4, 1);
        for p in pairs.chunks(1) {
            b.add(p.iter().copied(), &users);
        }
        let batched: Vec<f32> = Vec::try_from(b.finish().scores(&[&[1], &[2, 3]]).view([-1])).unwrap();
        assert_eq!(batched, s);
    }
}
