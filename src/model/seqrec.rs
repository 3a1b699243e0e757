//! A SASRec-style transformer sequence recommender.
//!
//! An item's input representation is a learned projection of its text
//! embedding plus a learned per-item delta (and α × a projection of its
//! image embedding when the catalog has one). With `delta_max_norm` > 0 the
//! delta of every item that has text is kept within that norm (projected
//! back after each optimiser step, the rows the step reached, and at the end
//! of each epoch, every row): text-based initialisation with a bounded
//! trainable delta. The text projection has to carry the catalog's
//! structure, so items without interactions land where items like them do.
//! Items without text, or any item with `delta_max_norm` = 0, have a free
//! ID embedding. A user is encoded from their recent items
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

use crate::rng::Rng;

fn yes() -> bool {
    true
}

/// Shape of the model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct SeqRecConfig {
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
    /// Largest norm of the per-item delta of items with text (0: no bound,
    /// a free ID embedding added to the text projection).
    #[serde(default)]
    pub delta_max_norm: f64,
    /// In training, the share of items with text whose delta is left out of
    /// a step's item table (their text projection alone stands for them,
    /// as it does for items nobody has interacted with).
    #[serde(default)]
    pub id_dropout: f64,
    /// Dimension of the catalog's image embeddings (0: none).
    #[serde(default)]
    pub image_dim: i64,
    /// Weight of the image projection in the item representation.
    #[serde(default)]
    pub image_alpha: f64,
    /// The input of the first block: item rows × √dim plus the position
    /// embedding (as SASRec), instead of their sum layer-normalised.
    #[serde(default)]
    pub scale_input: bool,
}

/// The fixed per-item features the item table is built from.
#[derive(Debug)]
pub(crate) struct ItemFeatures {
    /// [n_items, text_dim] text embeddings (row 0, padding, is zero).
    pub text: Tensor,
    /// [n_items, image_dim] image embeddings, zero rows for items without one.
    pub image: Option<Tensor>,
    /// Whether any item has text (a non-zero row of `text`). Without, the
    /// text projection of every item is its bias, and no product is computed.
    pub any_text: bool,
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

    /// x: [B, L, D]; blocked: [B, 1, L, L], true where attention is not
    /// allowed; `bf16`: the projections' products in bf16 (training only).
    fn forward(&self, x: &Tensor, blocked: &Tensor, train: bool, bf16: bool) -> Tensor {
        let (b, l, d) = x.size3().unwrap_or((0, 0, 0));
        let dh = d / self.heads;
        let h = linear(&self.qkv, &x.apply(&self.ln1), bf16);
        let parts = h.view([b, l, 3, self.heads, dh]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (parts.get(0), parts.get(1), parts.get(2));
        let att =
            (q.matmul(&k.transpose(-2, -1)) / (dh as f64).sqrt()).masked_fill(blocked, -1e9).softmax(-1, Kind::Float);
        let att = dropout(&att, self.dropout, train);
        let y = linear(&self.out, &att.matmul(&v).transpose(1, 2).contiguous().view([b, l, d]), bf16);
        let x = x + dropout(&y, self.dropout, train);
        let f = linear(&self.ff2, &linear(&self.ff1, &x.apply(&self.ln2), bf16).gelu("none"), bf16);
        &x + dropout(&f, self.dropout, train)
    }
}

/// Rows of the bf16 products are padded to a multiple of this: oneDNN
/// compiles a kernel per shape, and batches vary in length (zero rows add
/// nothing to a product).
pub(crate) const BF16_ROW_BLOCK: i64 = 64;

/// `rows` rounded up to the bf16 products' row block.
pub(crate) fn bf16_padded_rows(rows: i64) -> i64 {
    (rows + BF16_ROW_BLOCK - 1) / BF16_ROW_BLOCK * BF16_ROW_BLOCK
}

/// `a` [.., K] · `b` [K, N] with both rounded to bf16 and the result in
/// f32 (autograd differentiates through the roundings, so gradients reach
/// the f32 inputs). On CPUs with AVX512-BF16 oneDNN runs these about 4x
/// faster than the f32 product; the caller decides when that applies
/// ([`bf16_is_fast`]).
fn matmul_bf16(a: &Tensor, b: &Tensor) -> Tensor {
    let mut shape = a.size();
    let k = shape.pop().unwrap_or(0);
    let flat = a.reshape([-1, k]);
    let rows = flat.size()[0];
    let padded = bf16_padded_rows(rows);
    let mut x = flat.to_kind(Kind::BFloat16);
    if padded > rows {
        x = x.constant_pad_nd([0, 0, 0, padded - rows]);
    }
    shape.push(b.size()[1]);
    x.mm(&b.to_kind(Kind::BFloat16)).narrow(0, 0, rows).to_kind(Kind::Float).view(shape.as_slice())
}

/// Whether bf16 products are faster than f32 ones here: on a CPU with
/// AVX512-BF16 (oneDNN's native bf16 kernels; without it bf16 is emulated
/// and slower).
pub(crate) fn bf16_is_fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A linear layer, its product in bf16 when `bf16`.
fn linear(l: &nn::Linear, x: &Tensor, bf16: bool) -> Tensor {
    if !bf16 {
        return x.apply(l);
    }
    let y = matmul_bf16(x, &l.ws.tr());
    match &l.bs {
        Some(b) => y + b,
        None => y,
    }
}

/// Inverted dropout: in training, each element is zeroed with probability
/// `p` and the rest scaled by 1 / (1 − p), as `Tensor::dropout` does.
///
/// On the CPU the keep mask comes from a SplitMix64 stream (seeded by one
/// draw from libtorch's generator, so runs stay reproducible under
/// `tch::manual_seed`), about 1 ns per element on the calling thread:
/// libtorch's CPU `bernoulli_` draws one element at a time under a lock
/// except on Intel CPUs with MKL, 5.6 ns per element here, which made
/// dropout 15% of a pretraining step. (Filling the mask on rayon's threads
/// was slower: they compete with libtorch's OpenMP workers, which spin
/// between operations.) Elsewhere libtorch's own.
pub(crate) fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    if x.device() != tch::Device::Cpu || p >= 1.0 {
        return x.dropout(p, train);
    }
    let mut rng = Rng::new(Tensor::randint(i64::MAX, [1], (Kind::Int64, tch::Device::Cpu)).int64_value(&[0]) as u64);
    // Keep when a 16-bit draw is at least p · 2¹⁶: P(keep) = 1 − p to 2⁻¹⁷.
    let cut = (p * 65_536.0).round() as u64;
    let keep = (1.0 / (1.0 - p)) as f32;
    let mut mask = vec![0f32; x.numel()];
    for quad in mask.chunks_mut(4) {
        let z = rng.next_u64();
        for (i, v) in quad.iter_mut().enumerate() {
            *v = if (z >> (16 * i)) & 0xffff >= cut { keep } else { 0.0 };
        }
    }
    x * Tensor::from_slice(&mask).view(x.size().as_slice()).to_kind(x.kind())
}

/// The sequence recommender.
#[derive(Debug)]
pub(crate) struct SeqRec {
    item_id: nn::Embedding,
    mask: Tensor,
    pos: nn::Embedding,
    text_proj: nn::Linear,
    image_proj: Option<nn::Linear>,
    emb_ln: nn::LayerNorm,
    blocks: Vec<Block>,
    final_ln: nn::LayerNorm,
    cfg: SeqRecConfig,
    bf16: bool,
    delta_bounds: Option<Tensor>,
}

impl SeqRec {
    /// Create the variables under `p`.
    pub(crate) fn new(p: &nn::Path, cfg: &SeqRecConfig) -> SeqRec {
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
            bf16: false,
            delta_bounds: None,
        }
    }

    /// Train with bf16 products (mixed precision: f32 weights, gradients
    /// and optimiser state; the projections' and text projection's matrix
    /// products in bf16). Inference (`train = false`) stays in f32.
    pub(crate) fn train_in_bf16(&mut self, on: bool) {
        self.bf16 = on;
    }

    /// Whether training uses bf16 products.
    pub(crate) fn trains_in_bf16(&self) -> bool {
        self.bf16
    }

    /// The model's shape.
    pub(crate) fn config(&self) -> &SeqRecConfig {
        &self.cfg
    }

    /// The index of the `[MASK]` item in [`SeqRec::with_mask`]'s table.
    pub(crate) fn mask_index(&self) -> i64 {
        self.cfg.n_items
    }

    /// Every item's representation, [n_items, dim].
    pub(crate) fn item_table(&self, f: &ItemFeatures) -> Tensor {
        self.table(f, false, false)
    }

    /// [`SeqRec::item_table`] for a training step: the text projection's
    /// product in bf16 when training in bf16, and `id_dropout` applied.
    pub(crate) fn training_item_table(&self, f: &ItemFeatures) -> Tensor {
        self.table(f, self.bf16, true)
    }

    fn table(&self, f: &ItemFeatures, bf16: bool, train: bool) -> Tensor {
        // Sums of new tensors: `+=` would add in place into the ID weights.
        let text = self.text_part(f, &f.text, bf16);
        let image = match (&self.image_proj, &f.image) {
            (Some(proj), Some(img)) => Some(img.apply(proj) * self.cfg.image_alpha),
            _ => None,
        };
        let ids = self.dropped_ids(&self.item_id.ws, &f.text, train);
        text.into_iter().chain(image).fold(ids, |acc, t| acc + t)
    }

    /// The text projection of `rows` (rows of `f.text`), when text fusion is
    /// on. An ids-only catalog (no item has text) projects every item to the
    /// bias: that row alone, added by broadcasting, with no product over the
    /// catalog (the same values).
    fn text_part(&self, f: &ItemFeatures, rows: &Tensor, bf16: bool) -> Option<Tensor> {
        if !self.cfg.text_fusion {
            None
        } else if f.any_text {
            Some(linear(&self.text_proj, rows, bf16))
        } else {
            self.text_proj.bs.as_ref().map(Tensor::shallow_clone)
        }
    }

    /// ID (delta) rows with `id_dropout` applied in training: each row of an
    /// item with text (non-zero `text` row) is zeroed with that probability.
    fn dropped_ids(&self, ids: &Tensor, text: &Tensor, train: bool) -> Tensor {
        let p = self.cfg.id_dropout;
        if !train || !self.cfg.text_fusion || p <= 0.0 {
            return ids.shallow_clone();
        }
        let no_text = tch::no_grad(|| text.abs().sum_dim_intlist(-1, true, Kind::Float).eq(0.0));
        let keep = Tensor::rand([ids.size()[0], 1], (Kind::Float, ids.device())).ge(p).logical_or(&no_text);
        ids * keep.to_kind(ids.kind())
    }

    /// The representations of some items only, in training, [ids, dim];
    /// `ids` may hold [`SeqRec::mask_index`]. Row `r` equals
    /// `with_mask(training_item_table(f))[ids[r]]` (the same table in f32
    /// when not training in bf16; without `id_dropout`, whose draws differ),
    /// at the cost of the rows asked for instead of the whole catalog.
    pub(crate) fn item_rows(&self, f: &ItemFeatures, ids: &Tensor) -> Tensor {
        let is_item = ids.ne(self.cfg.n_items);
        let safe = ids.where_scalarother(&is_item, 0);
        let text_rows = f.text.index_select(0, &safe);
        let text = self.text_part(f, &text_rows, self.bf16);
        let image = match (&self.image_proj, &f.image) {
            (Some(proj), Some(img)) => Some(img.index_select(0, &safe).apply(proj) * self.cfg.image_alpha),
            _ => None,
        };
        let ids = self.dropped_ids(&self.item_id.ws.index_select(0, &safe), &text_rows, true);
        let rows = text.into_iter().chain(image).fold(ids, |acc, t| acc + t);
        rows.where_self(&is_item.unsqueeze(-1), &self.mask.expand_as(&rows))
    }

    /// The rows of items that have text (a non-zero text embedding): those
    /// whose delta is bounded, or None when no delta is bounded (text off,
    /// `delta_max_norm` = 0, or no item has text).
    pub(crate) fn bounded_rows(&self, f: &ItemFeatures) -> Option<Tensor> {
        if !self.cfg.text_fusion || self.cfg.delta_max_norm <= 0.0 {
            return None;
        }
        let rows =
            tch::no_grad(|| f.text.abs().sum_dim_intlist(-1, false, Kind::Float).gt(0.0).nonzero().squeeze_dim(1));
        (rows.numel() > 0).then_some(rows)
    }

    /// Give each item its own bound (a [n_items] tensor, in place of
    /// `delta_max_norm` for every item): items with more evidence may move
    /// further from their text.
    pub(crate) fn set_delta_bounds(&mut self, bounds: Tensor) {
        self.delta_bounds = Some(bounds);
    }

    /// Project the deltas of `rows` (a subset of [`SeqRec::bounded_rows`])
    /// back within their bound (`delta_max_norm`, or the item's own from
    /// [`SeqRec::set_delta_bounds`]): rows over it are scaled down to it,
    /// the others are left alone. Vectorised: libtorch's
    /// `embedding_renorm_` loops over rows one at a time (15 ms for 10,000
    /// rows here, against 0.2 ms for this).
    pub(crate) fn bound_deltas(&self, rows: &Tensor) {
        tch::no_grad(|| {
            let mut ws = self.item_id.ws.shallow_clone();
            let sel = ws.index_select(0, rows);
            let norms = sel.norm_scalaropt_dim(2.0, [1], true);
            let limit = match &self.delta_bounds {
                Some(b) => b.index_select(0, rows).unsqueeze(1),
                None => Tensor::from(self.cfg.delta_max_norm as f32).to_device(ws.device()),
            };
            let scale = (norms.clamp_min(1e-12).reciprocal() * limit).clamp_max(1.0);
            let _ = ws.index_copy_(0, rows, &(sel * scale));
        });
    }

    /// The item table with the `[MASK]` item appended (for masked inputs).
    pub(crate) fn with_mask(&self, items: &Tensor) -> Tensor {
        Tensor::cat(&[items, &self.mask], 0)
    }

    /// Encode left-padded sequences [B, L] (L ≤ max_len) into hidden states
    /// [B, L, dim], given an item table from [`SeqRec::item_table`] (or
    /// [`SeqRec::with_mask`] when inputs hold `[MASK]`). `causal` lets each
    /// position see only itself and earlier positions.
    pub(crate) fn encode(&self, seq: &Tensor, items: &Tensor, train: bool, causal: bool) -> Tensor {
        let (b, l) = seq.size2().unwrap_or((0, 0));
        let dev = seq.device();
        let x = items.index_select(0, &seq.flatten(0, 1)).view([b, l, self.cfg.dim]);
        // Positions count back from the most recent item so that the last
        // position always has the same embedding whatever the length.
        let positions = Tensor::arange(l, (Kind::Int64, dev)).flip([0]);
        let pos = self.pos.forward(&positions).unsqueeze(0);
        let x =
            if self.cfg.scale_input { x * (self.cfg.dim as f64).sqrt() + pos } else { (x + pos).apply(&self.emb_ln) };
        let x = dropout(&x, self.cfg.dropout, train);
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
            h = blk.forward(&h, &blocked, train, train && self.bf16);
        }
        h.apply(&self.final_ln) * pad.logical_not().unsqueeze(-1).to_kind(Kind::Float)
    }

    /// The user representation: the causal hidden state at the last position.
    pub(crate) fn encode_last(&self, seq: &Tensor, items: &Tensor) -> Tensor {
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
        delta_max_norm: 0.0,
        id_dropout: 0.0,
        scale_input: false,
        image_dim: 0,
        image_alpha: 0.0,
    };
    let m = SeqRec::new(&vs.root(), &cfg);
    let f = ItemFeatures {
        text: Tensor::randn([n_items, 4], (Kind::Float, tch::Device::Cpu)),
        image: None,
        any_text: true,
    };
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
    fn an_ids_only_catalog_skips_the_text_product_with_the_same_item_rows() {
        let (_vs, mut m, f) = tiny_model(12, 5);
        let zero = |any_text| ItemFeatures { text: Tensor::zeros_like(&f.text), image: None, any_text };
        let ids = Tensor::from_slice(&[0i64, 3, 11, 12]);
        for bf16 in [false, true] {
            m.train_in_bf16(bf16);
            let (fast, full) = (zero(false), zero(true));
            let d = (m.training_item_table(&fast) - m.training_item_table(&full)).abs().max().double_value(&[]);
            assert!(d == 0.0, "table differs by {d} (bf16 {bf16})");
            let d = (m.item_rows(&fast, &ids) - m.item_rows(&full, &ids)).abs().max().double_value(&[]);
            assert!(d == 0.0, "rows differ by {d} (bf16 {bf16})");
            assert_eq!(m.item_table(&fast).size(), vec![12, m.config().dim]);
        }
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
        let other =
            ItemFeatures { text: Tensor::randn([11, 4], (Kind::Float, Device::Cpu)), image: None, any_text: true };
        assert!((m.item_table(&other) - without).abs().max().double_value(&[]) < 1e-9);
    }

    #[test]
    fn sasrec_input_scaling_changes_the_encoding_and_old_checkpoints_read_as_layer_norm() {
        let _rng = crate::device::rng_lock();
        let (_vs, mut m, f) = tiny();
        let items = m.item_table(&f);
        let seq = Tensor::from_slice(&[0i64, 3, 5, 2]).view([1, 4]);
        let normed = m.encode_last(&seq, &items);
        m.cfg.scale_input = true;
        let scaled = m.encode_last(&seq, &items);
        assert!((normed - &scaled).abs().max().double_value(&[]) > 1e-4, "the setting is not used");
        // Checkpoint metadata written before the setting existed.
        let mut old = serde_json::to_value(m.config()).unwrap();
        old.as_object_mut().unwrap().remove("scale_input");
        let read: SeqRecConfig = serde_json::from_value(old).unwrap();
        assert!(!read.scale_input);
    }

    #[test]
    fn bounded_deltas_stay_within_the_norm_for_items_with_text_only() {
        let _rng = crate::device::rng_lock();
        let (_vs, mut m, f) = tiny();
        // Item 5 has no text (nor has row 0, padding): their ID embeddings stay free.
        let _ = f.text.get(5).zero_();
        let _ = f.text.get(0).zero_();
        let grow = |m: &SeqRec| {
            tch::no_grad(|| {
                let _ = m.item_id.ws.shallow_clone().g_mul_scalar_(100.0);
            })
        };
        let norms = |m: &SeqRec| -> Vec<f64> {
            Vec::try_from(m.item_id.ws.norm_scalaropt_dim(2.0, [1], false).to_kind(Kind::Double)).unwrap()
        };
        assert!(m.bounded_rows(&f).is_none(), "delta_max_norm = 0 bounds nothing");
        m.cfg.delta_max_norm = 0.5;
        let rows = m.bounded_rows(&f).unwrap();
        let mut ids: Vec<i64> = Vec::try_from(&rows).unwrap();
        ids.sort_unstable();
        // Row 0 (padding) and item 5 have zero text.
        assert_eq!(ids, vec![1, 2, 3, 4, 6, 7, 8, 9, 10]);
        grow(&m);
        m.bound_deltas(&rows);
        let n = norms(&m);
        for (i, v) in n.iter().enumerate() {
            if i == 0 || i == 5 {
                assert!(*v > 1.0, "row {i} was bounded: {v}");
            } else {
                assert!(*v <= 0.5 + 1e-5 && *v > 0.45, "row {i} has norm {v}");
            }
        }
        // Per-item bounds replace the common one.
        let bounds: Vec<f32> = (0..11).map(|i| 0.1 * (i + 1) as f32).collect();
        m.set_delta_bounds(Tensor::from_slice(&bounds));
        grow(&m);
        m.bound_deltas(&rows);
        let n = norms(&m);
        for i in [1usize, 4, 10] {
            assert!((n[i] - bounds[i] as f64).abs() < 1e-4, "row {i} has norm {} for bound {}", n[i], bounds[i]);
        }
        m.cfg.text_fusion = false;
        assert!(m.bounded_rows(&f).is_none(), "without text nothing is bounded");
    }

    #[test]
    fn id_dropout_leaves_out_deltas_of_items_with_text_in_training_only() {
        let _rng = crate::device::rng_lock();
        tch::manual_seed(5);
        let (_vs, mut m, f) = tiny_model(2001, 6);
        let _ = f.text.narrow(0, 0, 1001).zero_();
        m.cfg.id_dropout = 0.3;
        let text_part = linear(&m.text_proj, &f.text, false);
        let ids_left = (m.training_item_table(&f) - &text_part).abs().sum_dim_intlist(-1, false, Kind::Float).gt(0.0);
        let kept =
            |from: i64, n: i64| ids_left.narrow(0, from, n).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        assert_eq!(kept(0, 1001), 1.0, "items without text lost their ID embedding");
        let share = kept(1001, 1000);
        assert!((share - 0.7).abs() < 0.05, "kept {share} of the deltas of items with text, want 0.7");
        let full = m.item_table(&f) - text_part - &m.item_id.ws;
        assert!(full.abs().max().double_value(&[]) < 1e-6, "id_dropout applied outside training");
    }

    #[test]
    fn dropout_zeroes_a_share_p_scales_the_rest_and_is_reproducible() {
        let _rng = crate::device::rng_lock();
        let x = Tensor::ones([1000, 1000], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let draw = |seed| {
            tch::manual_seed(seed);
            dropout(&x, 0.2, true)
        };
        let y = draw(7);
        let zeroed = y.eq(0.0).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        // 1e6 Bernoulli(0.2) draws: the share is 0.2 ± 0.0004 (1 sd).
        assert!((zeroed - 0.2).abs() < 0.002, "zeroed share {zeroed}");
        let kept = y.masked_select(&y.ne(0.0));
        assert!((kept - 1.25).abs().max().double_value(&[]) < 1e-6, "kept elements are not scaled by 1/(1-p)");
        assert!(y.equal(&draw(7)), "the same seed gave another mask");
        assert!(!y.equal(&draw(8)), "another seed gave the same mask");
        // Neighbouring elements, and the two halves of each draw, are independent.
        let z = y.eq(0.0).to_kind(Kind::Double).view([-1]);
        let both = (z.narrow(0, 0, 999_999) * z.narrow(0, 1, 999_999)).mean(Kind::Double).double_value(&[]);
        assert!((both - 0.04).abs() < 0.002, "adjacent elements both zeroed in {both} of pairs");
        y.sum(Kind::Float).backward();
        let g = x.grad();
        assert!(g.equal(&(y.detach() / 1.0)), "the gradient is not the mask");
        assert!(dropout(&x, 0.2, false).equal(&x) && dropout(&x, 0.0, true).equal(&x));
    }
}
