//! The held-out users: those with a test step, and the sample of them the
//! evaluation scores (the same every night and on every machine). Used by
//! the evaluation and by the next-basket scoring that chooses the explore
//! weight.

use sha2::{Digest, Sha256};

use crate::job::Job;
use crate::seqdata::SeqData;

/// The users with a test step, and the sample of them that is scored.
pub(crate) fn test_users(job: &Job, data: &SeqData) -> (Vec<usize>, Vec<usize>) {
    let eligible: Vec<usize> = (0..data.seqs.len()).filter(|u| !data.split(*u).test.is_empty()).collect();
    let chosen = sample(&eligible, &data.users, job.cfg.evaluate.sample_users, job.cfg.run.seed);
    (eligible, chosen)
}

/// At most `n` of `users` (indices into `ids`; 0 = all): those whose id
/// has the smallest keyed hash under `seed`, in their original order.
pub(crate) fn sample(users: &[usize], ids: &[String], n: usize, seed: u64) -> Vec<usize> {
    if n == 0 || users.len() <= n {
        return users.to_vec();
    }
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
}
