//! A SASRec-style transformer sequence recommender.
//!
//! An item's input representation is a learned ID embedding plus a learned
//! projection of its text embedding (and α × a projection of its image
//! embedding when the catalog has one), so items without interactions
//! still land near similar items. A user is encoded from their recent items
//! with self-attention: causal for next-item prediction (fine-tuning,
//! serving), bidirectional with a learned `[MASK]` item for masked-item
//! pretraining. The hidden state at a position scores every item by inner
//! product with the item table (weights are shared between input and
//! output, so user and item embeddings live in one space).
//!
//! Sequences are left-padded with item 0; padded positions attend only to
//! themselves (so no row of the attention matrix is empty) and their outputs
//! are zeroed.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn, nn::Module};

fn yes() -> bool {
    true
}

/// Shape of the model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeqRecConfig {
    /// Rows in the item table, including the padding row 0.
    pub n_items: i64,
    /// Hidden dimension.
    pub dim: i64,
    /// Attention heads.
    pub heads: i64,
    /// Transformer blocks.
    pub layers: usize,
    /// Longest input sequence (positional embeddings).
    pub max_len: i64,
    /// Dropout probability in training.
    pub dropout: f64,
    /// Dimension of the item text embeddings fed in.
    pub text_dim: i64,
    /// Whether text embeddings are part of the item representation.
    #[serde(default = "yes")]
    pub text_fusion: bool,
    /// Dimension of the catalog's image embeddings (0: none).
    #[serde(default)]
    pub image_dim: i64,
    /// Weight of the image projection in the item representation.
    #[serde(default)]
    pub image_alpha: f64,
}

/// The fixed per-item features the item table is built from.
#[derive(Debug)]
pub struct ItemFeatures {
    /// [n_items, text_dim] text embeddings (row 0, padding, is zero).
    pub text: Tensor,
    /// [n_items, image_dim] image embeddings, zero rows for items without one.
    pub image: Option<Tensor>,
}

#[derive(Debug)]
struct Block {
    ln1: nn::LayerNorm,
    qkv: nn::Linear,
    out: nn::Linear,
    ln2: nn::LayerNorm,
    ff1: nn::Linear,
    ff2: nn::Linear,
    heads: i64,
    dropout: f64,
}

impl Block {
    fn new(p: nn::Path, cfg: &SeqRecConfig) -> Block {
        let d = cfg.dim;
        Block {
            ln1: nn::layer_norm(&p / "ln1", vec![d], Default::default()),
            qkv: nn::linear(&p / "qkv", d, 3 * d, Default::default()),
            out: nn::linear(&p / "out", d, d, Default::default()),
            ln2: nn::layer_norm(&p / "ln2", vec![d], Default::default()),
            ff1: nn::linear(&p / "ff1", d, 4 * d, Default::default()),
            ff2: nn::linear(&p / "ff2", 4 * d, d, Default::default()),
            heads: cfg.heads,
            dropout: cfg.dropout,
        }
    }

    /// x: [B, L, D]; blocked: [B, 1, L, L], true where attention is not allowed.
    fn forward(&self, x: &Tensor, blocked: &Tensor, train: bool) -> Tensor {
        let (b, l, d) = x.size3().unwrap_or((0, 0, 0));
        let dh = d / self.heads;
        let h = x.apply(&self.ln1).apply(&self.qkv);
        let parts = h.view([b, l, 3, self.heads, dh]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (parts.get(0), parts.get(1), parts.get(2));
        let att = (q.matmul(&k.transpose(-2, -1)) / (dh as f64).sqrt())
            .masked_fill(blocked, -1e9)
            .softmax(-1, Kind::Float)
            .dropout(self.dropout, train);
        let y = att.matmul(&v).transpose(1, 2).contiguous().view([b, l, d]).apply(&self.out);
        let x = x + y.dropout(self.dropout, train);
        let f = x.apply(&self.ln2).apply(&self.ff1).gelu("none").apply(&self.ff2);
        &x + f.dropout(self.dropout, train)
    }
}

/// The sequence recommender.
#[derive(Debug)]
pub struct SeqRec {
    item_id: nn::Embedding,
    mask: Tensor,
    pos: nn::Embedding,
    text_proj: nn::Linear,
    image_proj: Option<nn::Linear>,
    emb_ln: nn::LayerNorm,
    blocks: Vec<Block>,
    final_ln: nn::LayerNorm,
    cfg: SeqRecConfig,
}

impl SeqRec {
    /// Create the variables under `p`.
    pub fn new(p: &nn::Path, cfg: &SeqRecConfig) -> SeqRec {
        let init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let emb_cfg = nn::EmbeddingConfig { ws_init: init, ..Default::default() };
        SeqRec {
            item_id: nn::embedding(p / "item_id", cfg.n_items, cfg.dim, emb_cfg),
            mask: p.var("mask_item", &[1, cfg.dim], init),
            pos: nn::embedding(p / "pos", cfg.max_len, cfg.dim, emb_cfg),
            text_proj: nn::linear(p / "text_proj", cfg.text_dim, cfg.dim, Default::default()),
            image_proj: (cfg.image_dim > 0)
                .then(|| nn::linear(p / "image_proj", cfg.image_dim, cfg.dim, Default::default())),
            emb_ln: nn::layer_norm(p / "emb_ln", vec![cfg.dim], Default::default()),
            blocks: (0..cfg.layers).map(|i| Block::new(p / format!("block{i}"), cfg)).collect(),
            final_ln: nn::layer_norm(p / "final_ln", vec![cfg.dim], Default::default()),
            cfg: cfg.clone(),
        }
    }

    /// The model's shape.
    pub fn config(&self) -> &SeqRecConfig {
        &self.cfg
    }

    /// The index of the `[MASK]` item in [`SeqRec::with_mask`]'s table.
    pub fn mask_index(&self) -> i64 {
        self.cfg.n_items
    }

    /// Every item's representation, [n_items, dim].
    pub fn item_table(&self, f: &ItemFeatures) -> Tensor {
        // Sums of new tensors: `+=` would add in place into the ID weights.
        let text = self.cfg.text_fusion.then(|| f.text.apply(&self.text_proj));
        let image = match (&self.image_proj, &f.image) {
            (Some(proj), Some(img)) => Some(img.apply(proj) * self.cfg.image_alpha),
            _ => None,
        };
        text.into_iter().chain(image).fold(self.item_id.ws.shallow_clone(), |acc, t| acc + t)
    }

    /// The representations of some items only, [ids, dim]; `ids` may hold
    /// [`SeqRec::mask_index`]. Row `r` equals `with_mask(item_table(f))[ids[r]]`,
    /// at the cost of the rows asked for instead of the whole catalog.
    pub fn item_rows(&self, f: &ItemFeatures, ids: &Tensor) -> Tensor {
        let is_item = ids.ne(self.cfg.n_items);
        let safe = ids.where_scalarother(&is_item, 0);
        let text = self.cfg.text_fusion.then(|| f.text.index_select(0, &safe).apply(&self.text_proj));
        let image = match (&self.image_proj, &f.image) {
            (Some(proj), Some(img)) => Some(img.index_select(0, &safe).apply(proj) * self.cfg.image_alpha),
            _ => None,
        };
        let rows = text.into_iter().chain(image).fold(self.item_id.ws.index_select(0, &safe), |acc, t| acc + t);
        rows.where_self(&is_item.unsqueeze(-1), &self.mask.expand_as(&rows))
    }

    /// The item table with the `[MASK]` item appended (for masked inputs).
    pub fn with_mask(&self, items: &Tensor) -> Tensor {
        Tensor::cat(&[items, &self.mask], 0)
    }

    /// Encode left-padded sequences [B, L] (L ≤ max_len) into hidden states
    /// [B, L, dim], given an item table from [`SeqRec::item_table`] (or
    /// [`SeqRec::with_mask`] when inputs hold `[MASK]`). `causal` lets each
    /// position see only itself and earlier positions.
    pub fn encode(&self, seq: &Tensor, items: &Tensor, train: bool, causal: bool) -> Tensor {
        let (b, l) = seq.size2().unwrap_or((0, 0));
        let dev = seq.device();
        let x = items.index_select(0, &seq.flatten(0, 1)).view([b, l, self.cfg.dim]);
        // Positions count back from the most recent item so that the last
        // position always has the same embedding whatever the length.
        let positions = Tensor::arange(l, (Kind::Int64, dev)).flip([0]);
        let x = (x + self.pos.forward(&positions).unsqueeze(0)).apply(&self.emb_ln).dropout(self.cfg.dropout, train);
        let pad = seq.eq(0);
        let eye = Tensor::eye(l, (Kind::Bool, dev));
        let key_ok = pad.logical_not().unsqueeze(1).logical_or(&eye.unsqueeze(0));
        let allowed = if causal {
            Tensor::ones([l, l], (Kind::Bool, dev)).tril(0).unsqueeze(0).logical_and(&key_ok)
        } else {
            key_ok
        };
        let blocked = allowed.logical_not().unsqueeze(1);
        let mut h = x;
        for blk in &self.blocks {
            h = blk.forward(&h, &blocked, train);
        }
        h.apply(&self.final_ln) * pad.logical_not().unsqueeze(-1).to_kind(Kind::Float)
    }

    /// The user representation: the causal hidden state at the last position.
    pub fn encode_last(&self, seq: &Tensor, items: &Tensor) -> Tensor {
        let h = self.encode(seq, items, false, true);
        let l = h.size()[1];
        h.select(1, l - 1)
    }
}

/// A one-layer, 8-wide model with text fusion over `n_items` item rows and
/// random 4-wide text features, for tests (seed libtorch first).
#[cfg(test)]
pub(crate) fn tiny_model(n_items: i64, max_len: i64) -> (nn::VarStore, SeqRec, ItemFeatures) {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let cfg = SeqRecConfig {
        n_items,
        dim: 8,
        heads: 2,
        layers: 1,
        max_len,
        dropout: 0.0,
        text_dim: 4,
        text_fusion: true,
        image_dim: 0,
        image_alpha: 0.0,
    };
    let m = SeqRec::new(&vs.root(), &cfg);
    let f = ItemFeatures { text: Tensor::randn([n_items, 4], (Kind::Float, tch::Device::Cpu)), image: None };
    (vs, m, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn tiny() -> (nn::VarStore, SeqRec, ItemFeatures) {
        tch::manual_seed(0);
        tiny_model(11, 6)
    }

    #[test]
    fn padding_does_not_change_the_last_state() {
        let _rng = crate::device::rng_lock();
        let (_vs, m, f) = tiny();
        let items = m.item_table(&f);
        let short = Tensor::from_slice(&[3i64, 5, 7]).view([1, 3]);
        let padded = Tensor::from_slice(&[0i64, 0, 3, 5, 7]).view([1, 5]);
        let a = m.encode_last(&short, &items);
        let b = m.encode_last(&padded, &items);
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "left padding changed the output by {diff}");
    }

    #[test]
    fn the_future_does_not_leak_into_the_past_unless_bidirectional() {
        let _rng = crate::device::rng_lock();
        let (_vs, m, f) = tiny();
        let items = m.with_mask(&m.item_table(&f));
        let a = Tensor::from_slice(&[1i64, 11, 3]).view([1, 3]);
        let b = Tensor::from_slice(&[1i64, 11, 9]).view([1, 3]);
        let diff = |causal| {
            let x = m.encode(&a, &items, false, causal).select(1, 1);
            let y = m.encode(&b, &items, false, causal).select(1, 1);
            (x - y).abs().max().double_value(&[])
        };
        assert!(diff(true) < 1e-6, "position 1 saw position 2 under the causal mask");
        assert!(diff(false) > 1e-4, "the masked position cannot see its right context");
    }

    #[test]
    fn item_rows_equal_the_rows_of_the_whole_table() {
        let _rng = crate::device::rng_lock();
        let (_vs, m, f) = tiny();
        let table = m.with_mask(&m.item_table(&f));
        let ids = Tensor::from_slice(&[0i64, 3, 11, 10, 3]);
        let diff = (m.item_rows(&f, &ids) - table.index_select(0, &ids)).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "item_rows differs from the table by {diff}");
    }

    #[test]
    fn text_fusion_off_ignores_text() {
        let _rng = crate::device::rng_lock();
        let (_vs, mut m, f) = tiny();
        let with = m.item_table(&f);
        m.cfg.text_fusion = false;
        let without = m.item_table(&f);
        assert!((with - &without).abs().max().double_value(&[]) > 1e-4);
        let other = ItemFeatures { text: Tensor::randn([11, 4], (Kind::Float, Device::Cpu)), image: None };
        assert!((m.item_table(&other) - without).abs().max().double_value(&[]) < 1e-9);
    }
}
