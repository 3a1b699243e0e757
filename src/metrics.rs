//! Ranking metrics. Every accuracy figure is per user, then averaged, with
//! a normal 95% confidence interval over users:
//! - Recall@k: share of the user's relevant (held-out) items in the top k;
//! - NDCG@k: binary gains, normalised by the best possible list
//!   (min(relevant, k) hits on top);
//! - HR@k: at least one relevant item in the top k;
//! - MRR@k: 1 / (1 + position of the first relevant item), 0 beyond k.
//!
//! Two ways in: the positions of the relevant items in a full-catalog
//! ranking ([`target_positions`], with the user's history masked), or a
//! ranked list ([`Accuracy::add_list`]). A relevant item's position is the
//! number of items ranked above it; items scoring the same as it take half
//! a place each (the expected position under a random tie-break), so an
//! item that every model scores 0 does not rank first by luck.

use tch::{Kind, Tensor};

/// The cut-offs every accuracy metric is reported at.
pub(crate) const KS: [usize; 3] = [10, 20, 50];

/// The accuracy metrics, in the order of [`Accuracy::user`]'s values.
pub(crate) const ACCURACY: [&str; 4] = ["recall", "ndcg", "hr", "mrr"];

/// Sum and sum of squares of per-user values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Moments {
    /// Σ value.
    pub sum: f64,
    /// Σ value².
    pub sum_sq: f64,
    /// Values.
    pub n: usize,
}

impl Moments {
    /// Add one value.
    pub(crate) fn push(&mut self, v: f64) {
        self.sum += v;
        self.sum_sq += v * v;
        self.n += 1;
    }
    /// The mean (0 without values).
    pub(crate) fn mean(&self) -> f64 {
        self.sum / self.n.max(1) as f64
    }
    /// Half-width of the 95% confidence interval of the mean.
    pub(crate) fn ci95(&self) -> f64 {
        ci95(self.sum, self.sum_sq, self.n)
    }
}

/// Recall, NDCG, HR and MRR at each of [`KS`], per user.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Accuracy {
    /// `m[k][metric]`: k indexes [`KS`], metric [`ACCURACY`].
    pub m: [[Moments; 4]; 3],
}

impl Accuracy {
    /// Users counted.
    pub(crate) fn users(&self) -> usize {
        self.m[0][0].n
    }

    /// The moments of `metric` (a name of [`ACCURACY`]) at `k` (one of [`KS`]).
    pub(crate) fn get(&self, metric: &str, k: usize) -> Moments {
        let (Some(ki), Some(mi)) = (KS.iter().position(|x| *x == k), ACCURACY.iter().position(|x| *x == metric)) else {
            return Moments::default();
        };
        self.m[ki][mi]
    }

    /// The mean of `metric` at `k` (0 for an unknown metric or cut-off).
    pub(crate) fn mean(&self, metric: &str, k: usize) -> f64 {
        self.get(metric, k).mean()
    }

    /// One user's (recall, ndcg, hr, mrr) at `k`: `positions` are those of
    /// the relevant items found in the ranking (0 = first; fractional for
    /// ties), `relevant` how many relevant items the user has.
    pub(crate) fn user(positions: &[f64], relevant: usize, k: usize) -> [f64; 4] {
        if relevant == 0 {
            return [0.0; 4];
        }
        let within: Vec<f64> = positions.iter().copied().filter(|p| *p < k as f64).collect();
        let dcg: f64 = within.iter().map(|p| 1.0 / (p + 2.0).log2()).sum();
        let idcg: f64 = (0..relevant.min(k)).map(|r| 1.0 / (r as f64 + 2.0).log2()).sum();
        let first = within.iter().copied().fold(f64::INFINITY, f64::min);
        [
            within.len() as f64 / relevant as f64,
            dcg / idcg,
            f64::from(u8::from(!within.is_empty())),
            if first.is_finite() { 1.0 / (first + 1.0) } else { 0.0 },
        ]
    }

    /// Add one user from the positions of their relevant items (see
    /// [`Accuracy::user`]); a user without relevant items is no case.
    pub(crate) fn add_positions(&mut self, positions: &[f64], relevant: usize) {
        if relevant == 0 {
            return;
        }
        for (ki, k) in KS.iter().enumerate() {
            for (mi, v) in Self::user(positions, relevant, *k).into_iter().enumerate() {
                self.m[ki][mi].push(v);
            }
        }
    }

    /// Add one user from a ranked list (best first; an item listed twice
    /// counts at its first place) and their relevant items (duplicates
    /// count once). A user without relevant items is no case.
    pub(crate) fn add_list(&mut self, ranked: &[i64], relevant: &[i64]) {
        let (positions, n) = list_positions(ranked, relevant);
        self.add_positions(&positions, n);
    }
}

/// The positions in `ranked` (first places of distinct items) of the
/// distinct items of `relevant` it holds, and how many distinct relevant
/// items there are.
pub(crate) fn list_positions(ranked: &[i64], relevant: &[i64]) -> (Vec<f64>, usize) {
    let mut rel = relevant.to_vec();
    rel.sort_unstable();
    rel.dedup();
    let mut seen: Vec<i64> = Vec::new();
    let mut positions = Vec::new();
    for item in ranked {
        if seen.contains(item) {
            continue;
        }
        if rel.binary_search(item).is_ok() {
            positions.push(seen.len() as f64);
        }
        seen.push(*item);
    }
    (positions, rel.len())
}

/// Position of each row's target among that row's items: `scores` [B, N]
/// (column 0 is padding), `targets` [B], `history` [B, H] item indices
/// padded with 0, whose items cannot take a place (the target keeps its
/// own score even when it is in the history). Items scoring strictly
/// higher count 1, other items scoring the same count ½. Returns [B]
/// doubles on the scores' device.
pub(crate) fn target_positions(scores: &Tensor, targets: &Tensor, history: &Tensor) -> Tensor {
    if scores.device() == tch::Device::Cpu {
        host_target_positions(scores, targets, history)
    } else {
        tensor_target_positions(scores, targets, history)
    }
}

/// [`target_positions`] on the host in one read of the scores: each row's
/// items above and level with its target are counted over the whole row,
/// then the row's distinct history items (and the target itself) are taken
/// back out. The tensor form copies the scores and makes five more passes
/// over them; in the training's validation that was most of its time.
fn host_target_positions(scores: &Tensor, targets: &Tensor, history: &Tensor) -> Tensor {
    use rayon::prelude::*;
    let scores = scores.to_kind(Kind::Float).contiguous();
    let targets = targets.to_kind(Kind::Int64).contiguous();
    let history = history.to_kind(Kind::Int64).contiguous();
    let (b, n) = (scores.size()[0] as usize, scores.size()[1] as usize);
    let h = history.size()[1] as usize;
    // SAFETY: the three tensors are contiguous host tensors of the kinds
    // read (float32 [b, n], int64 [b] and [b, h]), owned here and not
    // written while the slices live.
    let (flat, tgt, hist) = unsafe {
        (
            std::slice::from_raw_parts(scores.data_ptr() as *const f32, b * n),
            std::slice::from_raw_parts(targets.data_ptr() as *const i64, b),
            std::slice::from_raw_parts(history.data_ptr() as *const i64, b * h),
        )
    };
    let positions: Vec<f64> = (0..b)
        .into_par_iter()
        .map(|r| row_position(&flat[r * n..(r + 1) * n], tgt[r], &hist[r * h..(r + 1) * h]))
        .collect();
    Tensor::from_slice(&positions)
}

/// One row's [`target_positions`]: `row` holds every item's score (index 0
/// is padding and never counts), `seen` the items that cannot take a place.
fn row_position(row: &[f32], target: i64, seen: &[i64]) -> f64 {
    let Some(&t) = usize::try_from(target).ok().and_then(|i| row.get(i)) else {
        return 0.0;
    };
    let count = |s: f32| ((s > t) as i64, (s == t) as i64);
    // Counted in u32 lanes (a row is far below 2^32 items) so the loop
    // vectorises.
    let (above, tied) =
        row[1.min(row.len())..].iter().fold((0u32, 0u32), |(a, e), &s| (a + (s > t) as u32, e + (s == t) as u32));
    let (mut above, mut tied) = (i64::from(above), i64::from(tied));
    // The target and its history, each once: none of them takes a place.
    let mut masked: Vec<i64> = seen.iter().copied().chain([target]).filter(|&i| i > 0).collect();
    masked.sort_unstable();
    masked.dedup();
    for s in masked.iter().filter_map(|&i| row.get(i as usize)) {
        let (a, e) = count(*s);
        above -= a;
        tied -= e;
    }
    above as f64 + tied as f64 * 0.5
}

/// [`target_positions`] as tensor operations (on an accelerator).
fn tensor_target_positions(scores: &Tensor, targets: &Tensor, history: &Tensor) -> Tensor {
    let scores = scores.to_kind(Kind::Float);
    let t = scores.gather(1, &targets.unsqueeze(1), false);
    let mut masked = scores.copy();
    let _ = masked.scatter_value_(1, history, f64::NEG_INFINITY);
    let _ = masked.select(1, 0).fill_(f64::NEG_INFINITY);
    let _ = masked.scatter_value_(1, &targets.unsqueeze(1), f64::NEG_INFINITY);
    let above = masked.gt_tensor(&t).sum_dim_intlist(1, false, Kind::Double);
    let tied = masked.eq_tensor(&t).sum_dim_intlist(1, false, Kind::Double);
    above + tied * 0.5
}

/// Sums of per-row NDCG@k, HR@k and MRR@k with one target per row (the
/// training's validation).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct RankSums {
    /// Σ NDCG@k.
    pub ndcg: f64,
    /// Σ HR@k.
    pub hr: f64,
    /// Σ MRR@k.
    pub mrr: f64,
    /// Σ NDCG@k², for the confidence interval (HR's square is HR itself).
    pub ndcg_sq: f64,
    /// Σ MRR@k².
    pub mrr_sq: f64,
    /// Users counted.
    pub users: usize,
}

/// Half-width of the normal 95% confidence interval of a mean, from the
/// sum and sum of squares of `n` values (0 for fewer than two values).
pub(crate) fn ci95(sum: f64, sum_sq: f64, n: usize) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let n = n as f64;
    let mean = sum / n;
    let var = ((sum_sq - n * mean * mean) / (n - 1.0)).max(0.0);
    1.96 * (var / n).sqrt()
}

impl RankSums {
    /// Mean NDCG@k.
    pub(crate) fn ndcg(&self) -> f64 {
        self.ndcg / self.users.max(1) as f64
    }
    /// Mean HR@k.
    #[cfg(test)]
    pub(crate) fn hr(&self) -> f64 {
        self.hr / self.users.max(1) as f64
    }
    /// Mean MRR@k.
    #[cfg(test)]
    pub(crate) fn mrr(&self) -> f64 {
        self.mrr / self.users.max(1) as f64
    }
    /// 95% confidence half-widths of (NDCG, HR, MRR).
    pub(crate) fn ci95(&self) -> (f64, f64, f64) {
        (
            ci95(self.ndcg, self.ndcg_sq, self.users),
            ci95(self.hr, self.hr, self.users),
            ci95(self.mrr, self.mrr_sq, self.users),
        )
    }

    /// Add a batch: `scores` [B, N] (column 0 is padding), `targets` [B],
    /// `history` [B, H] item indices padded with 0 ([`target_positions`]).
    pub(crate) fn add(&mut self, scores: &Tensor, targets: &Tensor, history: &Tensor, k: i64) {
        let rank = target_positions(scores, targets, history);
        let hit = rank.lt(k as f64).to_kind(Kind::Double);
        self.hr += hit.sum(Kind::Double).double_value(&[]);
        let ndcg = &hit / (&rank + 2.0).log2();
        let mrr = &hit / (&rank + 1.0);
        self.ndcg += ndcg.sum(Kind::Double).double_value(&[]);
        self.mrr += mrr.sum(Kind::Double).double_value(&[]);
        self.ndcg_sq += (&ndcg * &ndcg).sum(Kind::Double).double_value(&[]);
        self.mrr_sq += (&mrr * &mrr).sum(Kind::Double).double_value(&[]);
        self.users += targets.size()[0] as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn list_metrics_by_hand() {
        // Relevant {3, 5, 9}; list 5, 1, 9, 2, ...: hits at positions 0 and 2.
        let mut a = Accuracy::default();
        a.add_list(&[5, 1, 9, 2], &[9, 3, 5, 5]);
        let idcg = 1.0 + 1.0 / 3f64.log2() + 0.5;
        assert!(close(a.mean("recall", 10), 2.0 / 3.0));
        assert!(close(a.mean("ndcg", 10), 1.5 / idcg), "{}", a.mean("ndcg", 10));
        assert_eq!((a.mean("hr", 10), a.mean("mrr", 10)), (1.0, 1.0));
        assert_eq!(a.users(), 1);
        // The same user at k = 2 (via the per-user function): one hit.
        let (pos, n) = list_positions(&[5, 1, 9, 2], &[9, 3, 5, 5]);
        assert_eq!((pos.as_slice(), n), (&[0.0, 2.0][..], 3));
        let [recall, ndcg, hr, mrr] = Accuracy::user(&pos, n, 2);
        assert!(close(recall, 1.0 / 3.0) && close(ndcg, 1.0 / (1.0 + 1.0 / 3f64.log2())), "{ndcg}");
        assert_eq!((hr, mrr), (1.0, 1.0));
        // Fewer relevant items than k: one item found first is perfect.
        let mut one = Accuracy::default();
        one.add_list(&[7, 1, 2], &[7]);
        for k in KS {
            assert_eq!(ACCURACY.map(|m| one.mean(m, k)), [1.0; 4]);
        }
        // Found at position 11: a miss at 10, a hit at 20 and 50.
        let list: Vec<i64> = (100..150).collect();
        let mut late = Accuracy::default();
        late.add_list(&list, &[111]);
        assert_eq!(late.mean("hr", 10), 0.0);
        assert_eq!(late.mean("mrr", 10), 0.0);
        assert!(close(late.mean("ndcg", 20), 1.0 / 13f64.log2()));
        assert!(close(late.mean("mrr", 50), 1.0 / 12.0));
        // A repeated item counts at its first place; an empty list is all
        // misses; a user without relevant items is no case.
        let mut rep = Accuracy::default();
        rep.add_list(&[4, 4, 8], &[8]);
        assert!(close(rep.mean("mrr", 10), 0.5), "the repeat took a place");
        rep.add_list(&[], &[4]);
        assert_eq!(rep.users(), 2);
        assert!(close(rep.mean("recall", 10), 0.5) && close(rep.mean("hr", 50), 0.5));
        rep.add_list(&[4], &[]);
        assert_eq!(rep.users(), 2);
        assert_eq!(Accuracy::default().mean("ndcg", 10), 0.0);
        assert_eq!(rep.mean("ndcg", 15), 0.0, "not a reported cut-off");
    }

    #[test]
    fn positions_count_only_unseen_items_and_split_ties() {
        // Items 1..=4; target 3 scores third-highest but item 4 is history.
        let scores = Tensor::from_slice(&[0f32, 0.9, 0.1, 0.5, 0.8]).view([1, 5]);
        let history = Tensor::from_slice(&[4i64]).view([1, 1]);
        let p = target_positions(&scores, &Tensor::from_slice(&[3i64]), &history);
        assert_eq!(p.double_value(&[0]), 1.0);
        let mut s = RankSums::default();
        s.add(&scores, &Tensor::from_slice(&[3i64]), &history, 10);
        // Only item 1 beats it: NDCG = 1/log2(3), MRR = 1/2.
        assert!((s.ndcg() - 1.0 / 3f64.log2()).abs() < 1e-9);
        assert!((s.mrr() - 0.5).abs() < 1e-9);
        assert_eq!(s.hr(), 1.0);
        let mut s1 = RankSums::default();
        s1.add(&scores, &Tensor::from_slice(&[3i64]), &history, 1);
        assert_eq!(s1.hr(), 0.0);
        // Ties: every item scores 0. The target has 6 other items level
        // with it: expected position 3, not 0; with item 2 seen, 2.5.
        let flat = Tensor::zeros([1, 8], (Kind::Float, tch::Device::Cpu));
        let none = Tensor::zeros([1, 1], (Kind::Int64, tch::Device::Cpu));
        let hist2 = Tensor::from_slice(&[2i64, 0]).view([1, 2]);
        assert_eq!(target_positions(&flat, &Tensor::from_slice(&[5i64]), &none).double_value(&[0]), 3.0);
        assert_eq!(target_positions(&flat, &Tensor::from_slice(&[5i64]), &hist2).double_value(&[0]), 2.5);
        // A target in the history keeps its score.
        let own = Tensor::from_slice(&[4i64]).view([1, 1]);
        assert_eq!(target_positions(&scores, &Tensor::from_slice(&[4i64]), &own).double_value(&[0]), 1.0);
        // Fractional positions feed the per-user metrics as they are.
        let [_, ndcg, hr, mrr] = Accuracy::user(&[2.5], 1, 10);
        assert!(close(ndcg, 1.0 / 4.5f64.log2()) && hr == 1.0 && close(mrr, 1.0 / 3.5));
    }

    #[test]
    fn the_host_count_matches_the_tensor_form() {
        // Scores rounded to tenths so that many items tie, histories with
        // repeats, padding, the target itself and items past the catalogue.
        let (b, n, h) = (64i64, 301i64, 12i64);
        tch::manual_seed(7);
        let scores = (Tensor::rand([b, n], (Kind::Float, tch::Device::Cpu)) * 10.0).round() / 10.0;
        let targets = Tensor::randint_low(1, n, [b], (Kind::Int64, tch::Device::Cpu));
        let history = Tensor::randint_low(0, n, [b, h], (Kind::Int64, tch::Device::Cpu));
        history.narrow(1, 0, 1).copy_(&targets.unsqueeze(1));
        history.narrow(1, 1, 1).copy_(&history.narrow(1, 2, 1));
        let host = host_target_positions(&scores, &targets, &history);
        let tensor = tensor_target_positions(&scores, &targets, &history);
        assert_eq!(Vec::<f64>::try_from(&host).ok(), Vec::<f64>::try_from(&tensor).ok());
        assert!(host.sum(Kind::Double).double_value(&[]) > 0.0);
        // bf16 scores are counted as their float32 values.
        let half = scores.to_kind(Kind::BFloat16);
        assert_eq!(
            Vec::<f64>::try_from(&target_positions(&half, &targets, &history)).ok(),
            Vec::<f64>::try_from(&tensor_target_positions(&half, &targets, &history)).ok()
        );
    }

    #[test]
    fn confidence_interval_of_a_mean() {
        // Values 0, 1, 0, 1: mean 0.5, sample variance 1/3, n = 4.
        let half = ci95(2.0, 2.0, 4);
        assert!((half - 1.96 * (1.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12, "{half}");
        assert_eq!(ci95(1.0, 1.0, 1), 0.0);
        assert_eq!(ci95(3.0, 3.0, 3), 0.0, "no spread, no interval");
        let mut m = Moments::default();
        for v in [0.0, 1.0, 0.0, 1.0] {
            m.push(v);
        }
        assert_eq!((m.mean(), m.ci95()), (0.5, half));
        // Two users, both hit at rank 0: NDCG 1 each, no spread.
        let scores = Tensor::from_slice(&[0f32, 0.9, 0.1, 0.2, 0.3, 0.0, 0.9, 0.1, 0.2, 0.3]).view([2, 5]);
        let history = Tensor::zeros([2, 1], (Kind::Int64, tch::Device::Cpu));
        let mut s = RankSums::default();
        s.add(&scores, &Tensor::from_slice(&[1i64, 1]), &history, 10);
        assert_eq!(s.ci95(), (0.0, 0.0, 0.0));
    }
}
