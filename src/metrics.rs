//! Ranking metrics over full-catalog scores: NDCG@k, HR@k, MRR@k with the
//! user's history masked (except the target itself).

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

#[cfg(test)]
mod tests {
    use super::*;

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
