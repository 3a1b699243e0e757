//! Loading what the model stages share: user sequences, the item id map and
//! the item text embeddings, from the `trainset` and `text` work tables.

use tch::{Kind, Tensor};

use crate::arrays;
use crate::error::{Error, Result};
use crate::job::Job;

/// Sequences and item features.
pub struct SeqData {
    /// User ids, parallel to `seqs`.
    pub users: Vec<String>,
    /// Item index sequences (oldest first; the last step is the test item).
    pub seqs: Vec<Vec<i64>>,
    /// `item_ids[i]` is item index `i + 1`.
    pub item_ids: Vec<String>,
    /// Row-major [n_items + 1, text_dim] text embeddings (row 0 is zero).
    pub text: Vec<f32>,
    /// Text embedding width.
    pub text_dim: usize,
}

impl SeqData {
    /// Rows of the item table, padding included.
    pub fn n_items(&self) -> i64 {
        self.item_ids.len() as i64 + 1
    }

    /// The text embeddings as a tensor on `device`.
    pub fn text_tensor(&self, device: tch::Device) -> Tensor {
        Tensor::from_slice(&self.text)
            .view([self.n_items(), self.text_dim as i64])
            .to_kind(Kind::Float)
            .to_device(device)
    }
}

/// Load sequences and item features of this run's date.
pub async fn load(job: &Job) -> Result<SeqData> {
    let ctx = job.session()?;
    let seq = job.read_work(&ctx, "sequences", "SELECT user_id, item_idxs FROM sequences ORDER BY user_id").await?;
    let text = job
        .read_work(&ctx, "item_text_embeddings", "SELECT item_idx, item_id, embedding FROM item_text_embeddings ORDER BY item_idx")
        .await?;
    let idx = arrays::ints(&text, "item_idx")?;
    if idx.iter().enumerate().any(|(i, v)| *v != i as i64 + 1) {
        return Err(Error::Internal("item_text_embeddings is not densely indexed from 1".into()));
    }
    let (vals, dim) = arrays::vectors(&text, "embedding")?;
    let mut full = vec![0f32; dim];
    full.extend(vals);
    Ok(SeqData {
        users: arrays::strings_required(&seq, "user_id")?,
        seqs: arrays::int_lists(&seq, "item_idxs")?,
        item_ids: arrays::strings_required(&text, "item_id")?,
        text: full,
        text_dim: dim,
    })
}

/// Left-pad sequences (keeping each one's last `max_len` items) into [B, L].
pub fn left_pad(seqs: &[&[i64]], max_len: usize, device: tch::Device) -> Tensor {
    let l = seqs.iter().map(|s| s.len().min(max_len)).max().unwrap_or(1).max(1);
    let mut flat = vec![0i64; seqs.len() * l];
    for (r, s) in seqs.iter().enumerate() {
        let tail = &s[s.len().saturating_sub(max_len)..];
        let row = &mut flat[r * l..(r + 1) * l];
        row[l - tail.len()..].copy_from_slice(tail);
    }
    Tensor::from_slice(&flat).view([seqs.len() as i64, l as i64]).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_pad_keeps_the_most_recent_items() {
        let a = [1i64, 2, 3, 4];
        let b = [7i64];
        let t = left_pad(&[&a, &b], 3, tch::Device::Cpu);
        let v: Vec<i64> = Vec::try_from(t.flatten(0, 1)).unwrap();
        assert_eq!(v, vec![2, 3, 4, 0, 0, 7]);
    }
}

/// Leave-one-out split of a user's sequence: (training part, validation
/// item, test item). The test item is the last step, validation the one
/// before; users with fewer steps give up the holdouts first.
pub fn split(seq: &[i64]) -> (&[i64], Option<i64>, Option<i64>) {
    match seq.len() {
        0 | 1 => (seq, None, None),
        2 => (&seq[..1], None, Some(seq[1])),
        n => (&seq[..n - 2], Some(seq[n - 2]), Some(seq[n - 1])),
    }
}
