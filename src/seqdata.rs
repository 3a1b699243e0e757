//! Loading what the model stages share: user sequences, the item id map and
//! the item text embeddings, from the `trainset` and `text` work tables.

use tch::{Kind, Tensor};

use crate::arrays;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::model::seqrec::ItemFeatures;

/// Sequences and item features.
pub(crate) struct SeqData {
    /// User ids, parallel to `seqs`.
    pub users: Vec<String>,
    /// Item index sequences, oldest first, held-out steps included.
    pub seqs: Vec<Vec<i64>>,
    /// (validation steps, test steps) at the end of each sequence.
    pub holdout: Vec<(usize, usize)>,
    /// `item_ids[i]` is item index `i + 1`.
    pub item_ids: Vec<String>,
    /// Row-major [n_items + 1, text_dim] text embeddings (row 0 is zero).
    pub text: Vec<f32>,
    /// Text embedding width.
    pub text_dim: usize,
    /// Row-major [n_items + 1, image_dim] image embeddings, when the
    /// catalog has any (zero rows for items without one).
    pub image: Option<Vec<f32>>,
    /// Image embedding width (0 without images).
    pub image_dim: usize,
}

/// One user's sequence cut into its time-based split.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Split<'a> {
    /// Steps the model trains on.
    pub train: &'a [i64],
    /// Validation items (predicted from `train`).
    pub valid: &'a [i64],
    /// Test items (predicted from `train` followed by `valid`).
    pub test: &'a [i64],
    /// Everything before the test items.
    pub before_test: &'a [i64],
}

impl SeqData {
    /// The split of user `u`'s sequence.
    pub(crate) fn split(&self, u: usize) -> Split<'_> {
        split(&self.seqs[u], self.holdout[u])
    }

    /// Rows of the item table, padding included.
    pub(crate) fn n_items(&self) -> i64 {
        self.item_ids.len() as i64 + 1
    }

    /// The fixed item features the model's item table is built from.
    pub(crate) fn features(&self, device: tch::Device) -> ItemFeatures {
        let rows = |v: &[f32], dim: usize| {
            Tensor::from_slice(v).view([self.n_items(), dim as i64]).to_kind(Kind::Float).to_device(device)
        };
        ItemFeatures {
            text: rows(&self.text, self.text_dim),
            image: self.image.as_deref().map(|v| rows(v, self.image_dim)),
            any_text: self.text.iter().any(|x| *x != 0.0),
        }
    }
}

/// Load sequences and item features of this run's date.
pub(crate) async fn load(job: &Job) -> Result<SeqData> {
    let ctx = job.session()?;
    let seq = job.read_work(&ctx, "sequences", crate::sql::read("sequences")?).await?;
    let text = job.read_work(&ctx, "item_text_embeddings", crate::sql::read("item_text_embeddings")?).await?;
    let idx = arrays::ints(&text, "item_idx")?;
    if idx.iter().enumerate().any(|(i, v)| *v != i as i64 + 1) {
        return Err(Error::Internal("item_text_embeddings is not densely indexed from 1".into()));
    }
    let (vals, dim) = arrays::vectors(&text, "embedding")?;
    let mut full = vec![0f32; dim];
    full.extend(vals);
    let valid = arrays::ints(&seq, "valid_steps")?;
    let test = arrays::ints(&seq, "test_steps")?;
    let (image, image_dim) = match load_images(job, &ctx, idx.len()).await? {
        Some((v, d)) => (Some(v), d),
        None => (None, 0),
    };
    Ok(SeqData {
        users: arrays::strings_required(&seq, "user_id")?,
        seqs: arrays::int_lists(&seq, "item_idxs")?,
        holdout: valid.iter().zip(&test).map(|(v, t)| (*v as usize, *t as usize)).collect(),
        item_ids: arrays::strings_required(&text, "item_id")?,
        text: full,
        text_dim: dim,
        image,
        image_dim,
    })
}

/// Left-pad sequences (keeping each one's last `max_len` items) into [B, L].
pub(crate) fn left_pad(seqs: &[&[i64]], max_len: usize, device: tch::Device) -> Tensor {
    let l = seqs.iter().map(|s| s.len().min(max_len)).max().unwrap_or(1).max(1);
    let mut flat = vec![0i64; seqs.len() * l];
    for (r, s) in seqs.iter().enumerate() {
        let tail = &s[s.len().saturating_sub(max_len)..];
        let row = &mut flat[r * l..(r + 1) * l];
        row[l - tail.len()..].copy_from_slice(tail);
    }
    Tensor::from_slice(&flat).view([seqs.len() as i64, l as i64]).to_device(device)
}

/// Cut a sequence into training, validation and test steps, given how many
/// of its last steps are held out; counts larger than the sequence are
/// clipped so that the parts always tile it.
pub(crate) fn split(seq: &[i64], (valid, test): (usize, usize)) -> Split<'_> {
    let n = seq.len();
    let t0 = n.saturating_sub(test);
    let v0 = t0.saturating_sub(valid);
    Split { train: &seq[..v0], valid: &seq[v0..t0], test: &seq[t0..], before_test: &seq[..t0] }
}

/// The image embeddings the `text` stage kept (`item_image_embeddings`), as row-major
/// [n_items + 1, dim] (zero rows for items without one), if any.
pub(crate) async fn load_images(
    job: &Job,
    ctx: &datafusion::prelude::SessionContext,
    n_items: usize,
) -> Result<Option<(Vec<f32>, usize)>> {
    let table = "item_image_embeddings";
    if job.output.list(&job.work(table)).await?.is_empty() {
        return Ok(None);
    }
    let b = job.read_work(ctx, table, crate::sql::read("item_image_embeddings")?).await?;
    let idx = arrays::ints(&b, "item_idx")?;
    let (vals, dim) = arrays::vectors(&b, "embedding")?;
    let mut full = vec![0f32; (n_items + 1) * dim];
    for (r, i) in idx.iter().enumerate() {
        let i = *i as usize;
        if i == 0 || i > n_items {
            return Err(Error::Internal(format!("item_image_embeddings has item_idx {i} outside 1..={n_items}")));
        }
        full[i * dim..(i + 1) * dim].copy_from_slice(&vals[r * dim..(r + 1) * dim]);
    }
    Ok(Some((full, dim)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tiles_the_sequence() {
        let s = [1i64, 2, 3, 4, 5];
        let p = split(&s, (1, 1));
        assert_eq!((p.train, p.valid, p.test, p.before_test), (&s[..3], &s[3..4], &s[4..], &s[..4]));
        let p = split(&s[..1], (1, 1));
        assert_eq!((p.train.len(), p.valid.len(), p.test.len()), (0, 0, 1));
    }

    #[test]
    fn left_pad_keeps_the_most_recent_items() {
        let a = [1i64, 2, 3, 4];
        let b = [7i64];
        let t = left_pad(&[&a, &b], 3, tch::Device::Cpu);
        let v: Vec<i64> = Vec::try_from(t.flatten(0, 1)).unwrap();
        assert_eq!(v, vec![2, 3, 4, 0, 0, 7]);
    }
}
