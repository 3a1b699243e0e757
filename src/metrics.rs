//! Ranking metrics over full-catalog scores: NDCG@k, HR@k, MRR@k with the
//! user's history masked (except the target itself); and, for next-basket
//! evaluation, Recall@k, NDCG@k and HR@k of a ranked list against a set of
//! relevant items ([`SetSums`]).

use tch::{Kind, Tensor};

/// Sums of per-user metric values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RankSums {
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
pub fn ci95(sum: f64, sum_sq: f64, n: usize) -> f64 {
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
    pub fn ndcg(&self) -> f64 {
        self.ndcg / self.users.max(1) as f64
    }
    /// Mean HR@k.
    pub fn hr(&self) -> f64 {
        self.hr / self.users.max(1) as f64
    }
    /// Mean MRR@k.
    pub fn mrr(&self) -> f64 {
        self.mrr / self.users.max(1) as f64
    }
    /// 95% confidence half-widths of (NDCG, HR, MRR).
    pub fn ci95(&self) -> (f64, f64, f64) {
        (
            ci95(self.ndcg, self.ndcg_sq, self.users),
            ci95(self.hr, self.hr, self.users),
            ci95(self.mrr, self.mrr_sq, self.users),
        )
    }

    /// Add a batch: `scores` [B, N] (column 0 is padding), `targets` [B],
    /// `history` [B, H] item indices padded with 0. The target's rank is the
    /// number of non-history items scoring strictly higher.
    pub fn add(&mut self, scores: &Tensor, targets: &Tensor, history: &Tensor, k: i64) {
        let scores = scores.to_kind(Kind::Float);
        let t = scores.gather(1, &targets.unsqueeze(1), false);
        let mut masked = scores.copy();
        let _ = masked.scatter_value_(1, history, f64::NEG_INFINITY);
        let _ = masked.select(1, 0).fill_(f64::NEG_INFINITY);
        let rank = masked.gt_tensor(&t).sum_dim_intlist(1, false, Kind::Int64).to_kind(Kind::Double);
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

/// Sums of per-user metrics of a ranked list against a set of relevant
/// items (a next basket): Recall@k = hits / relevant items; NDCG@k with
/// binary gains, normalised by the best possible list (min(relevant, k)
/// hits on top); HR@k = at least one hit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SetSums {
    /// Σ Recall@k.
    pub recall: f64,
    /// Σ Recall@k².
    pub recall_sq: f64,
    /// Σ NDCG@k.
    pub ndcg: f64,
    /// Σ NDCG@k².
    pub ndcg_sq: f64,
    /// Σ HR@k.
    pub hr: f64,
    /// Users counted.
    pub users: usize,
}

impl SetSums {
    /// Add one user: `ranked` best first (only the first `k` count; an
    /// item listed twice counts once), `relevant` the held-out items
    /// (duplicates count once). Users without relevant items are skipped.
    pub fn add(&mut self, ranked: &[i64], relevant: &[i64], k: usize) {
        let mut rel = relevant.to_vec();
        rel.sort_unstable();
        rel.dedup();
        if rel.is_empty() {
            return;
        }
        let mut seen: Vec<i64> = Vec::with_capacity(k);
        let (mut hits, mut dcg) = (0usize, 0f64);
        for (r, item) in ranked.iter().take(k).enumerate() {
            if seen.contains(item) {
                continue;
            }
            seen.push(*item);
            if rel.binary_search(item).is_ok() {
                hits += 1;
                dcg += 1.0 / (r as f64 + 2.0).log2();
            }
        }
        let idcg: f64 = (0..rel.len().min(k)).map(|r| 1.0 / (r as f64 + 2.0).log2()).sum();
        let recall = hits as f64 / rel.len() as f64;
        let ndcg = if idcg > 0.0 { dcg / idcg } else { 0.0 };
        self.recall += recall;
        self.recall_sq += recall * recall;
        self.ndcg += ndcg;
        self.ndcg_sq += ndcg * ndcg;
        self.hr += f64::from(u8::from(hits > 0));
        self.users += 1;
    }

    /// Mean Recall@k.
    pub fn recall(&self) -> f64 {
        self.recall / self.users.max(1) as f64
    }
    /// Mean NDCG@k.
    pub fn ndcg(&self) -> f64 {
        self.ndcg / self.users.max(1) as f64
    }
    /// Mean HR@k.
    pub fn hr(&self) -> f64 {
        self.hr / self.users.max(1) as f64
    }
    /// 95% confidence half-widths of (Recall, NDCG, HR).
    pub fn ci95(&self) -> (f64, f64, f64) {
        (
            ci95(self.recall, self.recall_sq, self.users),
            ci95(self.ndcg, self.ndcg_sq, self.users),
            ci95(self.hr, self.hr, self.users),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_metrics_by_hand() {
        // Basket {3, 5, 9}; list 5, 1, 9, 2 at k = 3: hits at ranks 0 and 2.
        let mut s = SetSums::default();
        s.add(&[5, 1, 9, 2], &[9, 3, 5, 5], 3);
        let idcg = 1.0 + 1.0 / 3f64.log2() + 0.5;
        assert!((s.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.ndcg() - (1.0 + 0.5) / idcg).abs() < 1e-12, "{}", s.ndcg());
        assert_eq!(s.hr(), 1.0);
        // Fewer relevant items than k: one item found first is perfect.
        let mut one = SetSums::default();
        one.add(&[7, 1, 2], &[7], 3);
        assert_eq!((one.recall(), one.ndcg(), one.hr()), (1.0, 1.0, 1.0));
        // A repeated item counts once; an empty list and an empty basket.
        let mut rep = SetSums::default();
        rep.add(&[4, 4, 8], &[4, 8], 2);
        assert!((rep.recall() - 0.5).abs() < 1e-12);
        rep.add(&[], &[4], 2);
        assert_eq!(rep.users, 2);
        assert!((rep.recall() - 0.25).abs() < 1e-12 && (rep.hr() - 0.5).abs() < 1e-12);
        rep.add(&[4], &[], 2);
        assert_eq!(rep.users, 2, "a user without a basket is not a case");
    }

    #[test]
    fn rank_counts_only_unseen_items() {
        // Items 1..=4; target 3 scores third-highest but item 4 is history.
        let scores = Tensor::from_slice(&[0f32, 0.9, 0.1, 0.5, 0.8]).view([1, 5]);
        let targets = Tensor::from_slice(&[3i64]);
        let history = Tensor::from_slice(&[4i64]).view([1, 1]);
        let mut s = RankSums::default();
        s.add(&scores, &targets, &history, 10);
        // Only item 1 beats it: rank 1 → NDCG = 1/log2(3), MRR = 1/2.
        assert!((s.ndcg() - 1.0 / 3f64.log2()).abs() < 1e-9);
        assert!((s.mrr() - 0.5).abs() < 1e-9);
        assert_eq!(s.hr(), 1.0);
        let mut s1 = RankSums::default();
        s1.add(&scores, &targets, &history, 1);
        assert_eq!(s1.hr(), 0.0);
    }

    #[test]
    fn confidence_interval_of_a_mean() {
        // Values 0, 1, 0, 1: mean 0.5, sample variance 1/3, n = 4.
        let half = ci95(2.0, 2.0, 4);
        assert!((half - 1.96 * (1.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12, "{half}");
        assert_eq!(ci95(1.0, 1.0, 1), 0.0);
        assert_eq!(ci95(3.0, 3.0, 3), 0.0, "no spread, no interval");
        // Two users, both hit at rank 0: NDCG 1 each, no spread.
        let scores = Tensor::from_slice(&[0f32, 0.9, 0.1, 0.2, 0.3, 0.0, 0.9, 0.1, 0.2, 0.3]).view([2, 5]);
        let history = Tensor::zeros([2, 1], (Kind::Int64, tch::Device::Cpu));
        let mut s = RankSums::default();
        s.add(&scores, &Tensor::from_slice(&[1i64, 1]), &history, 10);
        assert_eq!(s.ci95(), (0.0, 0.0, 0.0));
    }
}
