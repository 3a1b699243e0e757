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
    /// Users counted.
    pub users: usize,
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
        self.ndcg += (&hit / (&rank + 2.0).log2()).sum(Kind::Double).double_value(&[]);
        self.mrr += (&hit / (&rank + 1.0)).sum(Kind::Double).double_value(&[]);
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
}
