//! Next-basket evaluation (`--repeat-purchases`): each user's last session
//! (basket) is held out by `sql/trainset/steps.sql`, and the models rank
//! the whole catalog from everything before it. Items the user had before
//! are *not* masked: buying them again is the point. Per user, Recall, NDCG,
//! HR and MRR at 10, 20 and 50 against the basket's distinct items, for
//! - `nightrec`: what `user_candidates` ranks by in this mode
//!   ([`model_chances`], [`add_repeat`]): the chance that the next basket holds the item,
//!   as a noisy-or of the repeat chance ([`History::repeat_shares`]: the
//!   decayed share of the user's baskets that bought it) and the model's
//!   chance ([`model_chance`]), taken at the start of the held-out basket;
//! - `sequence_model`: the model's score alone;
//! - `personal_top_frequency`: the items in most of the user's baskets,
//!   ties by the most recent basket, then by popularity;
//! - `tifu_knn`: TIFU-KNN (Hu et al., SIGIR 2020) with the settings of
//!   [`Tifu::default`], neighbours among up to [`NEIGHBOUR_POOL`] users (a
//!   fixed hash sample of the users with a history);
//! - `popularity`: the most frequent items of every history.
//!
//! Lists shorter than 50 (a user who bought few items, with the frequency
//! baselines) are filled with the most popular items not in them, so no
//! baseline is handicapped by an empty slot.

use std::collections::HashMap;

use rayon::prelude::*;
use tch::{Kind, Tensor};

use crate::arrays;
use crate::error::Result;
use crate::job::Job;
use crate::metrics::{Accuracy, KS, list_positions};
use crate::model::seqrec::SeqRec;
use crate::seqdata::{SeqData, left_pad};
use crate::tables::evaluation::BASKET_MODELS;

/// Length of every ranked list: the largest cut-off reported ([`KS`]).
pub(crate) const K: usize = KS[KS.len() - 1];

/// The cut-off the explore weight is chosen at.
pub(crate) const CHOICE_K: usize = 10;

/// Most users whose histories TIFU-KNN takes neighbours from.
pub(crate) const NEIGHBOUR_POOL: usize = 20_000;

/// TIFU-KNN's settings: the group size, decay rates, neighbours and blend
/// the paper reports for its grocery data (Dunnhumby, Instacart).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tifu {
    /// Baskets per group (m).
    pub group_size: usize,
    /// Decay between consecutive baskets of a group (r_b).
    pub within_decay: f64,
    /// Decay between consecutive groups (r_g).
    pub group_decay: f64,
    /// Neighbours (k).
    pub neighbours: usize,
    /// Weight of the user's own vector against the neighbours' mean (α).
    pub alpha: f64,
}

impl Default for Tifu {
    fn default() -> Self {
        Tifu { group_size: 7, within_decay: 0.9, group_decay: 0.7, neighbours: 300, alpha: 0.7 }
    }
}

/// One user's steps before the held-out basket.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct History {
    /// Distinct items of each basket, sorted, oldest basket first.
    pub baskets: Vec<Vec<i64>>,
    /// Distinct items bought in each basket, sorted.
    pub bought: Vec<Vec<i64>>,
    /// Seconds of each basket's first step.
    pub times: Vec<f64>,
    /// Seconds at which the held-out basket starts (after the last basket
    /// when nothing is held out).
    pub test_start: f64,
}

/// One row of `steps`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepRow {
    /// Position in the user's sequence.
    pub step: i64,
    /// Item index.
    pub item: i64,
    /// Session number (1 = oldest).
    pub basket: i64,
    /// The step's strongest event is a purchase.
    pub purchase: bool,
    /// Seconds since the epoch.
    pub ts: f64,
    /// The step is in the held-out basket.
    pub test: bool,
}

impl History {
    /// Group one user's `steps` rows (any order) into baskets.
    pub(crate) fn from_rows(mut rows: Vec<StepRow>) -> History {
        rows.sort_by_key(|r| r.step);
        let mut h = History {
            test_start: rows.iter().filter(|r| r.test).map(|r| r.ts).fold(f64::INFINITY, f64::min),
            ..History::default()
        };
        if !h.test_start.is_finite() {
            h.test_start = rows.iter().map(|r| r.ts).fold(0.0, f64::max);
        }
        let mut current = None;
        for r in rows.iter().filter(|r| !r.test) {
            if current != Some(r.basket) {
                h.baskets.push(Vec::new());
                h.bought.push(Vec::new());
                h.times.push(r.ts);
                current = Some(r.basket);
            }
            if let (Some(b), Some(p)) = (h.baskets.last_mut(), h.bought.last_mut()) {
                b.push(r.item);
                if r.purchase {
                    p.push(r.item);
                }
            }
        }
        for b in h.baskets.iter_mut().chain(h.bought.iter_mut()) {
            b.sort_unstable();
            b.dedup();
        }
        h
    }

    /// Mean distinct items per basket (at least 1).
    pub(crate) fn basket_size(&self) -> f64 {
        let n = self.baskets.len().max(1) as f64;
        (self.baskets.iter().map(Vec::len).sum::<usize>() as f64 / n).max(1.0)
    }

    /// Personal top frequency: baskets holding the item, plus a fraction
    /// below one for how recent its last basket is (ties go to the recent).
    pub(crate) fn frequency_scores(&self) -> Vec<(i64, f32)> {
        let n = self.baskets.len() as f64;
        let mut per: HashMap<i64, (f64, usize)> = HashMap::new();
        for (b, items) in self.baskets.iter().enumerate() {
            for i in items {
                let e = per.entry(*i).or_insert((0.0, 0));
                e.0 += 1.0;
                e.1 = b;
            }
        }
        let mut v: Vec<(i64, f32)> =
            per.into_iter().map(|(i, (c, last))| (i, (c + (last as f64 + 1.0) / (n + 1.0)) as f32)).collect();
        v.sort_by_key(|x| x.0);
        v
    }

    /// "Buy again": per item bought before, the share of the user's
    /// baskets with a purchase that bought it, each basket weighted by
    /// `basket_decay`^(baskets with a purchase after it) × 0.5^(its age at
    /// `now` / `half_life_days`): an estimate of the chance that the next
    /// basket holds the item again, recent habits counting most.
    pub(crate) fn repeat_shares(&self, now: f64, half_life_days: f64, basket_decay: f64) -> Vec<(i64, f32)> {
        let mut per: HashMap<i64, f64> = HashMap::new();
        let mut total = 0.0;
        let with_purchase: Vec<(&Vec<i64>, f64)> =
            self.bought.iter().zip(self.times.iter().copied()).filter(|(b, _)| !b.is_empty()).collect();
        for (k, (items, t)) in with_purchase.iter().enumerate() {
            let later = (with_purchase.len() - 1 - k) as i32;
            let w = basket_decay.powi(later) * 0.5f64.powf(((now - t) / 86_400.0).max(0.0) / half_life_days);
            total += w;
            for i in *items {
                *per.entry(*i).or_default() += w;
            }
        }
        let mut v: Vec<(i64, f32)> =
            per.into_iter().map(|(i, w)| (i, (w / total.max(f64::MIN_POSITIVE)) as f32)).collect();
        v.sort_by_key(|x| x.0);
        v
    }

    /// TIFU's user vector, sorted by item: the baskets in groups of
    /// `group_size` counted from the newest (the oldest group may be
    /// smaller); a group is the mean of its baskets' one-hot vectors, each
    /// `within_decay`^(baskets after it in the group); the user vector is
    /// the mean of the groups, each `group_decay`^(groups after it).
    pub(crate) fn tifu_vector(&self, t: &Tifu) -> Vec<(i64, f32)> {
        let m = t.group_size.max(1);
        let n = self.baskets.len();
        let groups = n.div_ceil(m);
        let mut v: HashMap<i64, f64> = HashMap::new();
        for g in 0..groups {
            // Group g counts from the newest (0).
            let end = n - g * m;
            let start = end.saturating_sub(m);
            let size = (end - start) as f64;
            let gw = t.group_decay.powi(g as i32) / groups as f64;
            for (j, basket) in self.baskets[start..end].iter().enumerate() {
                let w = gw * t.within_decay.powi((end - start - 1 - j) as i32) / size;
                for i in basket {
                    *v.entry(*i).or_default() += w;
                }
            }
        }
        let mut out: Vec<(i64, f32)> = v.into_iter().map(|(i, w)| (i, w as f32)).collect();
        out.sort_by_key(|x| x.0);
        out
    }
}

/// The chance that the next basket holds an item again, from its repeat
/// share ([`History::repeat_shares`]) and `buy_again_weight`.
pub(crate) fn repeat_chance(share: f32, weight: f64) -> f32 {
    (share * weight as f32).clamp(0.0, 1.0)
}

/// The chance that the next basket holds an item by the model: the
/// model's next-step probability (softmax over the catalog, `log_norm` its
/// log normaliser) × the user's usual basket size × `explore_weight`, at
/// most 1.
pub(crate) fn model_chance(score: f64, log_norm: f64, basket_size: f64, explore_weight: f64) -> f64 {
    (explore_weight * basket_size * (score - log_norm).exp()).min(1.0)
}

/// [`model_chance`] of every item for a block of users: `raw` [B, N + 1]
/// model scores (column 0 is padding, chance 0) and each row's basket
/// size; with each row's log normaliser.
pub(crate) fn model_chances(raw: &Tensor, sizes: &[f32], explore_weight: f64) -> (Tensor, Tensor) {
    let n1 = raw.size()[1];
    let logits = raw.to_kind(Kind::Float);
    let log_norm = logits.narrow(1, 1, n1 - 1).logsumexp([1], true);
    let sizes = Tensor::from_slice(sizes).to_device(raw.device()).unsqueeze(1) * explore_weight;
    let mut p = (&logits - &log_norm).exp() * sizes;
    let _ = p.clamp_max_(1.0);
    let _ = p.select(1, 0).fill_(0.0);
    (p, log_norm.squeeze_dim(1))
}

/// Turn `scores` [B, N + 1] (chances) into [`repeat_blend`] with the
/// (row, item, repeat chance) triples, in place.
pub(crate) fn add_repeat(scores: &Tensor, repeat: &[(i64, i64, f32)]) {
    if repeat.is_empty() {
        return;
    }
    let device = scores.device();
    let n1 = scores.size()[1];
    let at = Tensor::from_slice(&repeat.iter().map(|(r, i, _)| r * n1 + i).collect::<Vec<i64>>()).to_device(device);
    let chance = Tensor::from_slice(&repeat.iter().map(|x| x.2).collect::<Vec<f32>>()).to_device(device);
    let mut flat = scores.view([-1]);
    let base = flat.index_select(0, &at);
    let room = base.neg() + 1.0;
    let _ = flat.index_copy_(0, &at, &(&base + chance * room).to_kind(scores.kind()));
}

/// What `user_candidates` ranks by in repeat mode: the chance that the next
/// basket holds the item, either way (noisy-or of the two chances).
pub(crate) fn repeat_blend(model: f64, repeat: f64) -> f64 {
    model + repeat * (1.0 - model)
}

/// TIFU-KNN's neighbour search over a pool of user vectors (Euclidean
/// distance, as in the paper), through an inverted index so a query costs
/// the postings of its own items.
pub(crate) struct Neighbours {
    vectors: Vec<Vec<(i64, f32)>>,
    norms: Vec<f32>,
    index: HashMap<i64, Vec<(u32, f32)>>,
}

impl Neighbours {
    /// Index the pool's vectors.
    pub(crate) fn new(vectors: Vec<Vec<(i64, f32)>>) -> Neighbours {
        let mut index: HashMap<i64, Vec<(u32, f32)>> = HashMap::new();
        for (p, v) in vectors.iter().enumerate() {
            for (i, w) in v {
                index.entry(*i).or_default().push((p as u32, *w));
            }
        }
        let norms = vectors.iter().map(|v| v.iter().map(|x| x.1 * x.1).sum()).collect();
        Neighbours { vectors, norms, index }
    }

    /// TIFU-KNN's scores for a user with vector `v`: α v + (1 − α) × the
    /// mean vector of its `neighbours` nearest pool users (`me`, the user's
    /// own slot in the pool, excluded), sorted by item.
    pub(crate) fn predict(&self, v: &[(i64, f32)], me: Option<usize>, t: &Tifu) -> Vec<(i64, f32)> {
        let mut dots = vec![0f32; self.vectors.len()];
        for (i, w) in v {
            for (p, x) in self.index.get(i).map(Vec::as_slice).unwrap_or(&[]) {
                dots[*p as usize] += w * x;
            }
        }
        let mine: f32 = v.iter().map(|x| x.1 * x.1).sum();
        let mut dist: Vec<(f32, u32)> = (0..self.vectors.len())
            .filter(|p| Some(*p) != me)
            .map(|p| (mine + self.norms[p] - 2.0 * dots[p], p as u32))
            .collect();
        let k = t.neighbours.min(dist.len());
        let mut out: HashMap<i64, f64> = v.iter().map(|(i, w)| (*i, t.alpha * f64::from(*w))).collect();
        if k > 0 {
            dist.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let share = (1.0 - t.alpha) / k as f64;
            for (_, p) in &dist[..k] {
                for (i, w) in &self.vectors[*p as usize] {
                    *out.entry(*i).or_default() += share * f64::from(*w);
                }
            }
        }
        let mut s: Vec<(i64, f32)> = out.into_iter().map(|(i, w)| (i, w as f32)).collect();
        s.sort_by_key(|x| x.0);
        s
    }
}

/// Items by popularity (most popular first, then by index) and each item's
/// place in that order; `counts[0]` is padding and never listed.
pub(crate) fn popularity_order(counts: &[f32]) -> (Vec<i64>, Vec<u32>) {
    let mut order: Vec<i64> = (1..counts.len() as i64).collect();
    order.sort_by(|a, b| counts[*b as usize].total_cmp(&counts[*a as usize]).then(a.cmp(b)));
    let mut place = vec![u32::MAX; counts.len()];
    for (r, i) in order.iter().enumerate() {
        place[*i as usize] = r as u32;
    }
    (order, place)
}

/// The `k` best of sparse scores (ties by popularity), filled up with the
/// most popular items not among them.
pub(crate) fn rank_sparse(scores: &[(i64, f32)], order: &[i64], place: &[u32], k: usize) -> Vec<i64> {
    let rank = |i: i64| place.get(i as usize).copied().unwrap_or(u32::MAX);
    let mut s: Vec<(i64, f32)> = scores.iter().filter(|x| x.1 > 0.0 && x.0 > 0).copied().collect();
    s.sort_by(|a, b| b.1.total_cmp(&a.1).then(rank(a.0).cmp(&rank(b.0))).then(a.0.cmp(&b.0)));
    let mut out: Vec<i64> = s.into_iter().take(k).map(|x| x.0).collect();
    for i in order {
        if out.len() >= k {
            break;
        }
        if !out.contains(i) {
            out.push(*i);
        }
    }
    out
}

/// Read the `steps` of the users in `want` (user id → key) as histories;
/// without `hold_out` the test basket is history too (tomorrow's lists).
pub(crate) async fn histories(
    job: &Job,
    want: &HashMap<&str, usize>,
    hold_out: bool,
) -> Result<HashMap<usize, History>> {
    let mut rows: HashMap<usize, Vec<StepRow>> = HashMap::new();
    let ctx = job.session()?;
    let sql = crate::sql::read("basket_steps")?;
    job.stream_work(&ctx, "steps", sql, |b| {
        let b = std::slice::from_ref(b);
        let ids = arrays::strings_required(b, "user_id")?;
        let (step, item, basket, ts) = (
            arrays::ints(b, "step")?,
            arrays::ints(b, "item_idx")?,
            arrays::ints(b, "basket")?,
            arrays::ints(b, "ts_s")?,
        );
        let (purchase, test) = (arrays::bools(b, "purchase", false)?, arrays::bools(b, "test", false)?);
        for (r, id) in ids.iter().enumerate() {
            if let Some(u) = want.get(id.as_str()) {
                rows.entry(*u).or_default().push(StepRow {
                    step: step[r],
                    item: item[r],
                    basket: basket[r],
                    purchase: purchase[r],
                    ts: ts[r] as f64,
                    test: hold_out && test[r],
                });
            }
        }
        Ok(())
    })
    .await?;
    Ok(rows.into_iter().map(|(u, r)| (u, History::from_rows(r))).collect())
}

/// What the next-basket evaluation of a night found.
pub(crate) struct Outcome {
    /// Each model of [`BASKET_MODELS`] with its sums (empty without baselines).
    pub sums: Vec<(&'static str, Accuracy)>,
    /// The explore weight the blend does best with over every scored user:
    /// what tomorrow's lists use.
    pub explore_weight: f64,
}

/// The index of the weight with the highest Recall@10 + NDCG@10 summed
/// over `users` (ties: the smaller weight); `metrics[u][g]` is user u's
/// (recall, ndcg) with weight g.
pub(crate) fn best_weight(metrics: &[Vec<(f64, f64)>], users: impl Iterator<Item = usize> + Clone) -> usize {
    let g = metrics.first().map(Vec::len).unwrap_or(0);
    let total = |w: usize| users.clone().map(|u| metrics[u][w].0 + metrics[u][w].1).sum::<f64>();
    let mut best = 0;
    for w in 1..g {
        if total(w) > total(best) + 1e-12 {
            best = w;
        }
    }
    best
}

/// Cross-fitting: users alternate between two folds, and each fold is
/// scored with the weight the other fold does best with, so the reported
/// blend never chose its weight on the users it is scored on. Returns the
/// weight index used for each user.
pub(crate) fn cross_fitted(metrics: &[Vec<(f64, f64)>]) -> Vec<usize> {
    let fold = |f: usize| (0..metrics.len()).filter(move |u| u % 2 == f);
    let (on0, on1) = (best_weight(metrics, fold(0)), best_weight(metrics, fold(1)));
    (0..metrics.len()).map(|u| if u % 2 == 0 { on1 } else { on0 }).collect()
}

/// Score the held-out baskets of `chosen` users (indices into `data`): the
/// blend with every weight of `candidates.explore_weights`, and with
/// `baselines` every other model of [`BASKET_MODELS`]; `counts` are the items'
/// popularity (steps before each user's test basket, index = item).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn evaluate(
    job: &Job,
    data: &SeqData,
    chosen: &[usize],
    model: &SeqRec,
    items: &Tensor,
    counts: &[f32],
    baselines: bool,
    device: tch::Device,
) -> Result<Outcome> {
    let c = &job.cfg.candidates;
    let weights = &c.explore_weights;
    let cases: Vec<usize> = chosen
        .iter()
        .copied()
        .filter(|u| {
            let s = data.split(*u);
            !s.test.is_empty() && !s.before_test.is_empty()
        })
        .collect();
    let with_history: Vec<usize> = (0..data.seqs.len()).filter(|u| !data.split(*u).before_test.is_empty()).collect();
    let pool = if baselines {
        crate::holdout::sample(&with_history, &data.users, NEIGHBOUR_POOL, job.cfg.run.seed)
    } else {
        Vec::new()
    };
    let mut wanted: Vec<usize> = cases.iter().chain(pool.iter()).copied().collect();
    wanted.sort_unstable();
    wanted.dedup();
    let want: HashMap<&str, usize> = wanted.iter().map(|u| (data.users[*u].as_str(), *u)).collect();
    let hist = histories(job, &want, true).await?;
    let empty = History::default();
    let of = |u: &usize| hist.get(u).unwrap_or(&empty);

    let (order, place) = popularity_order(counts);
    let t = Tifu::default();
    let slot: HashMap<usize, usize> = pool.iter().enumerate().map(|(s, u)| (*u, s)).collect();
    let knn = Neighbours::new(pool.iter().map(|u| of(u).tifu_vector(&t)).collect());
    let sparse: Vec<(Vec<i64>, Vec<i64>)> = if baselines {
        cases
            .par_iter()
            .map(|u| {
                let h = of(u);
                let tifu = knn.predict(&h.tifu_vector(&t), slot.get(u).copied(), &t);
                (rank_sparse(&h.frequency_scores(), &order, &place, K), rank_sparse(&tifu, &order, &place, K))
            })
            .collect()
    } else {
        Vec::new()
    };

    let mut sums = [Accuracy::default(); BASKET_MODELS.len()];
    // Per user: the blend's list and (recall, ndcg) with each weight.
    let mut lists: Vec<Vec<Vec<i64>>> = Vec::with_capacity(cases.len());
    let mut metrics: Vec<Vec<(f64, f64)>> = Vec::with_capacity(cases.len());
    let blend = Blend { model, items, c, n1: counts.len() as i64, device };
    for (b, chunk) in cases.chunks(256).enumerate() {
        let inputs: Vec<&[i64]> = chunk.iter().map(|u| data.split(*u).before_test).collect();
        let histories: Vec<&History> = chunk.iter().map(of).collect();
        let (model_top, blend_tops) = blend.tops(&inputs, &histories)?;
        let k = model_top.len() / chunk.len().max(1);
        for (r, u) in chunk.iter().enumerate() {
            let basket = data.split(*u).test;
            let mine: Vec<Vec<i64>> = blend_tops.iter().map(|t| t[r * k..(r + 1) * k].to_vec()).collect();
            metrics.push(
                mine.iter()
                    .map(|l| {
                        let (positions, n) = list_positions(l, basket);
                        let [recall, ndcg, _, _] = Accuracy::user(&positions, n, CHOICE_K);
                        (recall, ndcg)
                    })
                    .collect(),
            );
            lists.push(mine);
            if baselines {
                let (ptf, tifu) = &sparse[b * 256 + r];
                sums[1].add_list(&model_top[r * k..(r + 1) * k], basket);
                sums[2].add_list(ptf, basket);
                sums[3].add_list(tifu, basket);
                sums[4].add_list(&order[..K.min(order.len())], basket);
            }
        }
    }
    for (u, w) in cross_fitted(&metrics).into_iter().enumerate() {
        sums[0].add_list(&lists[u][w], data.split(cases[u]).test);
    }
    let chosen_weight = weights.get(best_weight(&metrics, 0..metrics.len())).copied().unwrap_or(0.0);
    Ok(Outcome {
        sums: if baselines { BASKET_MODELS.iter().copied().zip(sums).collect() } else { Vec::new() },
        explore_weight: chosen_weight,
    })
}

/// The model's scores and the blend's with each explore weight, for
/// blocks of users.
struct Blend<'a> {
    model: &'a SeqRec,
    items: &'a Tensor,
    c: &'a crate::config::CandidatesConfig,
    n1: i64,
    device: tch::Device,
}

impl Blend<'_> {
    /// The model's top [`K`] and the blend's top [`K`] with each weight of
    /// `candidates.explore_weights`, row-major, for users with these inputs
    /// and histories.
    fn tops(&self, inputs: &[&[i64]], histories: &[&History]) -> Result<(Vec<i64>, Vec<Vec<i64>>)> {
        let c = self.c;
        let max_len = self.model.config().max_len as usize;
        tch::no_grad(|| -> Result<(Vec<i64>, Vec<Vec<i64>>)> {
            let raw =
                self.model.encode_last(&left_pad(inputs, max_len, self.device), self.items).matmul(&self.items.tr());
            let _ = raw.select(1, 0).fill_(f64::NEG_INFINITY);
            let sizes: Vec<f32> = histories.iter().map(|h| h.basket_size() as f32).collect();
            let mut repeat = Vec::new();
            for (r, h) in histories.iter().enumerate() {
                let shares = h.repeat_shares(h.test_start, c.buy_again_half_life_days, c.buy_again_basket_decay);
                repeat.extend(shares.into_iter().map(|(i, w)| (r as i64, i, repeat_chance(w, c.buy_again_weight))));
            }
            let top = |s: &Tensor| -> Result<Vec<i64>> {
                let k = (K as i64).min(self.n1 - 1);
                crate::topk::host_i64(&s.to_kind(Kind::Float).topk(k, 1, true, true).1)
            };
            let mut blends = Vec::with_capacity(c.explore_weights.len());
            for w in &c.explore_weights {
                let (blend, _) = model_chances(&raw, &sizes, *w);
                add_repeat(&blend, &repeat);
                blends.push(top(&blend)?);
            }
            Ok((top(&raw)?, blends))
        })
    }
}

/// What the explore weight depends on beside the checkpoint, for the embed
/// stage's fingerprint: nothing unless buy-again mode is on.
pub(crate) fn explore_inputs(cfg: &crate::config::Config) -> String {
    if !cfg.candidates.repeat_purchases {
        return String::new();
    }
    let mut keys = crate::config::BUY_AGAIN_KEYS.to_vec();
    keys.push("evaluate.sample_users");
    cfg.hash_of(&keys)
}

/// The explore weight chosen for a date, as recorded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ExploreWeight {
    /// The weight tomorrow's lists use.
    pub weight: f64,
    /// The weights it was chosen from (`candidates.explore_weights`).
    pub weights: Vec<f64>,
}

/// Choose the explore weight tomorrow's lists use and record it for the
/// candidates stage: the only one configured, or the one the blend does
/// best with on the held-out baskets of the users the evaluation scores
/// (scored with the checkpoint's holdout model, as `evaluate` does). Run
/// by the embed stage, so that writing candidates evaluates nothing.
pub(crate) async fn choose_explore_weight(job: &Job, data: &SeqData, device: tch::Device) -> Result<f64> {
    let weights = &job.cfg.candidates.explore_weights;
    let weight = if weights.len() == 1 {
        weights[0]
    } else {
        let (_vs, model, _meta) = crate::checkpoint::load(job, device, crate::checkpoint::Weights::Holdout).await?;
        let items = tch::no_grad(|| model.item_table(&data.features(device)));
        let (_, chosen) = crate::holdout::test_users(job, data);
        let counts = vec![0f32; data.n_items() as usize];
        evaluate(job, data, &chosen, &model, &items, &counts, false, device).await?.explore_weight
    };
    let record = ExploreWeight { weight, weights: weights.clone() };
    crate::state::write(&job.output, &crate::layout::explore_weight(job.date), &record).await?;
    Ok(weight)
}

/// The explore weight the embed stage chose for the job's date.
pub(crate) async fn explore_weight(job: &Job) -> Result<f64> {
    let path = crate::layout::explore_weight(job.date);
    match crate::state::read::<ExploreWeight>(&job.output, &path).await? {
        Some(r) if r.weights == job.cfg.candidates.explore_weights => Ok(r.weight),
        _ => Err(crate::Error::Usage(format!(
            "no explore weight for {} chosen from candidates.explore_weights {:?}: rerun the embed stage",
            job.date, job.cfg.candidates.explore_weights
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: i64, item: i64, basket: i64, ts: f64, test: bool) -> StepRow {
        StepRow { step, item, basket, purchase: true, ts, test }
    }

    #[test]
    fn histories_group_baskets_and_count_purchases() {
        let day = 86_400.0;
        // Baskets 1: {1, 2}, 2: {2}, 3 (held out): {1, 3}; rows out of order.
        let h = History::from_rows(vec![
            row(3, 2, 2, 7.0 * day, false),
            row(1, 1, 1, 0.0, false),
            row(4, 1, 3, 14.0 * day, true),
            row(2, 2, 1, 0.0, false),
            row(5, 3, 3, 14.0 * day, true),
        ]);
        assert_eq!(h.baskets, vec![vec![1, 2], vec![2]]);
        assert_eq!(h.bought, h.baskets);
        assert_eq!(h.times, vec![0.0, 7.0 * day]);
        assert_eq!(h.basket_size(), 1.5);
        assert_eq!(h.test_start, 14.0 * day);
        // Item 2: in both baskets, the latest; item 1 in one.
        let f = h.frequency_scores();
        assert_eq!(f, vec![(1, (1.0 + 1.0 / 3.0) as f32), (2, (2.0 + 2.0 / 3.0) as f32)]);
        // Repeat shares at a 7-day half-life: baskets weigh 0.25 and 0.5;
        // item 1 is in the first only, item 2 in both.
        let ba = h.repeat_shares(h.test_start, 7.0, 1.0);
        assert_eq!(ba, vec![(1, (0.25f64 / 0.75) as f32), (2, 1.0)]);
        // A basket without a purchase does not count.
        let mut viewed = h.clone();
        viewed.bought[1].clear();
        assert_eq!(viewed.repeat_shares(h.test_start, 7.0, 1.0), vec![(1, 1.0), (2, 1.0)]);
        assert_eq!(History::default().repeat_shares(0.0, 7.0, 1.0), vec![]);
        // Basket decay 0.5 with no time decay: weights 0.5 and 1.
        let by_basket = h.repeat_shares(h.test_start, f64::INFINITY, 0.5);
        assert_eq!(by_basket, vec![(1, (0.5f64 / 1.5) as f32), (2, 1.0)]);
    }

    #[test]
    fn block_scores_equal_the_host_formula() {
        // Two users, four items (column 0 is padding).
        let raw = Tensor::from_slice(&[9.0f32, 1.0, 2.0, 0.5, -1.0, 9.0, 0.0, 3.0, 1.0, 1.0]).view([2, 5]);
        let sizes = [2.0f32, 6.0];
        let repeat = [(0i64, 2i64, 0.5f32), (1, 4, 1.0)];
        let (scores, norm) = model_chances(&raw, &sizes, 0.3);
        add_repeat(&scores, &repeat);
        let got: Vec<f64> = Vec::try_from(scores.to_kind(Kind::Double).view([-1])).unwrap();
        let norm: Vec<f64> = Vec::try_from(norm.to_kind(Kind::Double)).unwrap();
        let raw: Vec<f64> = Vec::try_from(raw.to_kind(Kind::Double).view([-1])).unwrap();
        for r in 0..2 {
            let want_norm = raw[r * 5 + 1..(r + 1) * 5].iter().map(|x| x.exp()).sum::<f64>().ln();
            assert!((norm[r] - want_norm).abs() < 1e-5, "the padding column is not normalised over");
            assert_eq!(got[r * 5], 0.0);
            for i in 1..5 {
                let m = model_chance(raw[r * 5 + i], norm[r], f64::from(sizes[r]), 0.3);
                let want = match repeat.iter().find(|x| x.0 == r as i64 && x.1 == i as i64) {
                    Some(x) => repeat_blend(m, f64::from(x.2)),
                    None => m,
                };
                assert!((got[r * 5 + i] - want).abs() < 1e-6, "row {r} item {i}: {} vs {want}", got[r * 5 + i]);
            }
        }
        // An item bought in every basket is certain; chances stay within 0..=1.
        assert!((got[9] - 1.0).abs() < 1e-6);
        assert!(got.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    #[test]
    fn weights_are_chosen_on_the_other_fold() {
        // Four users, two weights. Even users (fold 0) do best with weight 1,
        // odd users (fold 1) with weight 0 (equal recall, NDCG decides).
        let m = vec![
            vec![(0.1, 0.1), (0.9, 0.9)],
            vec![(0.5, 0.6), (0.5, 0.4)],
            vec![(0.2, 0.2), (0.3, 0.3)],
            vec![(0.5, 0.9), (0.5, 0.1)],
        ];
        assert_eq!(best_weight(&m, [0, 2].into_iter()), 1);
        assert_eq!(best_weight(&m, [1, 3].into_iter()), 0);
        // Each fold is scored with the other fold's choice.
        assert_eq!(cross_fitted(&m), vec![0, 1, 0, 1]);
        // Over everyone: 3.9 (weight 1) against 3.1.
        assert_eq!(best_weight(&m, 0..4), 1);
        assert_eq!(best_weight(&[vec![(0.5, 0.5), (0.5, 0.5)]], 0..1), 0, "a full tie keeps the smaller weight");
    }

    #[test]
    fn tifu_vector_by_hand() {
        // Three baskets, groups of two from the newest: {b1} and {b2, b3}.
        let h = History { baskets: vec![vec![1], vec![2], vec![2, 3]], ..History::default() };
        let t = Tifu { group_size: 2, within_decay: 0.5, group_decay: 0.25, neighbours: 1, alpha: 0.5 };
        let v = h.tifu_vector(&t);
        // Newest group (weight 1/2 groups): b2 × 0.5 / 2, b3 × 1 / 2.
        // Oldest group (weight 0.25 / 2): b1 × 1 / 1.
        let want = [(1, 0.25 * 0.5), (2, 0.5 * (0.25 + 0.5)), (3, 0.5 * 0.5)];
        for ((i, w), (wi, ww)) in v.iter().zip(want) {
            assert_eq!(*i, wi);
            assert!((f64::from(*w) - ww).abs() < 1e-7, "{v:?}");
        }
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn neighbours_are_the_nearest_other_users() {
        let t = Tifu { neighbours: 1, alpha: 0.5, ..Tifu::default() };
        let pool = vec![vec![(1, 1.0)], vec![(1, 1.0), (2, 1.0)], vec![(3, 1.0)]];
        let knn = Neighbours::new(pool);
        // User 0 itself is excluded; its nearest other is user 1.
        let p = knn.predict(&[(1, 1.0)], Some(0), &t);
        assert_eq!(p, vec![(1, 1.0), (2, 0.5)]);
        // From outside the pool, user 0 is the nearest (distance 0).
        assert_eq!(knn.predict(&[(1, 1.0)], None, &t), vec![(1, 1.0)]);
    }

    #[test]
    fn sparse_lists_break_ties_by_popularity_and_fill_up() {
        let counts = [0.0, 5.0, 9.0, 1.0, 7.0];
        let (order, place) = popularity_order(&counts);
        assert_eq!(order, vec![2, 4, 1, 3]);
        // Items 3 and 1 tie: 1 is more popular; then the top items not listed.
        assert_eq!(rank_sparse(&[(3, 2.0), (1, 2.0)], &order, &place, 4), vec![1, 3, 2, 4]);
        assert_eq!(rank_sparse(&[], &order, &place, 2), vec![2, 4]);
    }
}
