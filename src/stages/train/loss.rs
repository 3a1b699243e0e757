//! The training losses and the epoch that applies them: full softmax
//! cross-entropy over the catalogue, sampled softmax over shared negatives
//! (uniform or by popularity, with the logQ correction), masked-item
//! pretraining and next-item prediction, and the cost rule that chooses
//! between the two softmaxes.

use tch::{Kind, Tensor, nn};

use super::EpochStats;
use crate::config::{BatchOrder, LossKind, ModelConfig};
use crate::error::{Error, Result};
use crate::model::SeqRec;
use crate::model::seqrec::ItemFeatures;
use crate::progress::Progress;
use crate::rng::Rng;
use crate::seqdata::{SeqData, left_pad};

/// Multiply-adds per trained position of (the transformer, the full-softmax
/// output layer, the sampled-softmax output layer); backward passes cost
/// about twice the forward for each, so the ratios hold for a whole step.
pub(crate) fn step_costs(cfg: &ModelConfig, n_items: i64, max_len: usize) -> (f64, f64, f64) {
    let d = cfg.dim as f64;
    // Per layer: q, k, v and output projections (4 d²), the 4x feed-forward
    // (8 d²), attention scores and mixing over the window (2 L d).
    let encoder = cfg.layers as f64 * (12.0 * d * d + 2.0 * max_len as f64 * d);
    (encoder, n_items as f64 * d, (cfg.sampled_negatives + 1) as f64 * d)
}

/// Whether training uses the full softmax, and why: as configured, or with
/// `loss = "auto"` while the catalog-wide output layer costs at most
/// `full_softmax_max_cost` times a whole sampled step, or while one epoch
/// of it (`positions` next-item positions × catalog × dim) costs at most
/// `full_softmax_max_epoch_gmacs` billion multiply-adds: the sampled
/// softmax is for catalogues and logs too large for the full one, not for
/// small logs with a large catalogue, where it loses much of the quality.
/// Deterministic: the same data and config always choose the same loss.
pub(crate) fn full_softmax_chosen(cfg: &ModelConfig, n_items: i64, max_len: usize, positions: usize) -> (bool, String) {
    match cfg.loss {
        LossKind::Full => (true, "model.loss = full".into()),
        LossKind::Sampled => (false, "model.loss = sampled".into()),
        LossKind::Auto => {
            let (encoder, full, sampled) = step_costs(cfg, n_items, max_len);
            let ratio = full / (encoder + sampled);
            let epoch = positions as f64 * full / 1e9;
            let why = format!(
                "its output layer costs {ratio:.1}x a sampled step (limit {}), an epoch of it {epoch:.0} billion \
                 multiply-adds (limit {})",
                cfg.full_softmax_max_cost, cfg.full_softmax_max_epoch_gmacs
            );
            (ratio <= cfg.full_softmax_max_cost || epoch <= cfg.full_softmax_max_epoch_gmacs, why)
        }
    }
}

/// Masked-item pretraining epochs for a log whose training users have
/// `mean_history` training steps on average, and why: none on a warm start,
/// none on a log sparser than `pretrain_min_history` (BERT4Rec-style
/// pretraining trails plain next-item training on short shop histories:
/// bench/results/sparse_factors.md), else `pretrain_epochs`.
pub(crate) fn pretraining_chosen(cfg: &ModelConfig, mean_history: f64, warm: bool) -> (usize, String) {
    let limit = cfg.pretrain_min_history;
    if warm {
        (0, "warm start".into())
    } else if cfg.pretrain_epochs == 0 {
        (0, "model.pretrain_epochs = 0".into())
    } else if limit <= 0.0 {
        (
            cfg.pretrain_epochs,
            format!("mean training history {mean_history:.1} steps; model.pretrain_min_history = 0: always"),
        )
    } else if mean_history < limit {
        (0, format!("mean training history {mean_history:.1} steps < {limit} (a sparse log)"))
    } else {
        (cfg.pretrain_epochs, format!("mean training history {mean_history:.1} steps >= {limit} (a dense log)"))
    }
}

/// How an epoch's batches are formed, and why: as configured, or with
/// `batches = "auto"` random batches ([`BatchOrder::Mixed`]) under the full
/// softmax and length-sorted ones under the sampled softmax. Random batches
/// train better (Amazon Toys: +0.009 NDCG@10, bench/results/sparse_factors.md)
/// but are encoded in several length groups or with more padding: under the
/// full softmax the output layer is most of a step and that costs little;
/// under the sampled softmax the encoder is, and an epoch of generated M
/// took 66 s mixed against 42 s sorted (bench/results/sparse.md).
pub(crate) fn batches_chosen(cfg: &ModelConfig, full_softmax: bool) -> (BatchOrder, String) {
    match (cfg.batches, full_softmax) {
        (BatchOrder::Auto, true) => {
            (BatchOrder::Mixed, "random: the full softmax is chosen, beside which random batches cost little".into())
        }
        (BatchOrder::Auto, false) => (
            BatchOrder::ByLength,
            "by length: with the sampled softmax the encoder is most of a step, and random batches cost more".into(),
        ),
        (BatchOrder::Mixed, _) => (BatchOrder::Mixed, "random: model.batches = mixed".into()),
        (BatchOrder::ByLength, _) => (BatchOrder::ByLength, "by length: model.batches = by_length".into()),
    }
}

/// The softmax a loss is computed over.
#[derive(Debug, Clone, Copy)]
pub(super) enum Loss {
    /// Every item.
    Full,
    /// The target and this many negatives drawn uniformly, shared by the batch.
    Sampled(usize),
}

/// What an epoch optimises.
#[derive(Debug, Clone, Copy)]
pub(super) enum Objective {
    /// Masked-item prediction with this masking probability.
    Masked(f64, Loss),
    /// Next item.
    Next(Loss),
}

pub(super) struct Ctx<'a> {
    pub(super) model: &'a SeqRec,
    pub(super) feats: &'a ItemFeatures,
    /// Item rows whose delta is bounded, and the same as a mask over all rows.
    pub(super) bounded: Option<(&'a Tensor, Tensor)>,
    /// Popularity negatives: the sampling weights and each item's log of
    /// its expected draws per step (row 0, padding, is never drawn).
    pub(super) negatives: Option<(Tensor, Tensor)>,
    pub(super) device: tch::Device,
    pub(super) max_len: usize,
    pub(super) batch_size: usize,
    /// Scored positions per chunk of the full softmax ([`logit_chunk_rows`]).
    pub(super) logit_rows: i64,
    /// The full softmax's buffers, reused by every step.
    pub(super) logits: LogitScratch,
    pub(super) batches: BatchOrder,
    pub(super) n_items: i64,
}

/// An epoch's batches of `size` sequences, in a fresh random order.
/// `by_length`: sequences of similar length together (little padding), users
/// within a length in random order; `mixed`: random, whatever the lengths.
pub(super) fn batches_of<'a>(
    samples: &[&'a [i64]],
    size: usize,
    order: BatchOrder,
    rng: &mut Rng,
) -> Vec<Vec<&'a [i64]>> {
    let mut all = samples.to_vec();
    rng.shuffle(&mut all);
    if order == BatchOrder::ByLength {
        all.sort_by_key(|w| w.len());
    }
    let mut batches: Vec<Vec<&[i64]>> = all.chunks(size.max(1)).map(<[_]>::to_vec).collect();
    rng.shuffle(&mut batches);
    batches
}

impl Ctx<'_> {
    pub(super) fn epoch(
        &self,
        opt: &mut nn::Optimizer,
        rng: &mut Rng,
        samples: &[&[i64]],
        clip: f64,
        objective: Objective,
        label: &str,
    ) -> Result<EpochStats> {
        let started = std::time::Instant::now();
        let batches_in = batches_of(samples, self.batch_size, self.batches, rng);
        let mut bar = Progress::new(label, samples.len());
        let (mut loss_sum, mut batches) = (0f64, 0usize);
        for chunk in &batches_in {
            let groups = length_groups(chunk, self.max_len);
            let loss = match objective {
                Objective::Masked(p, loss) => self.masked_loss(&groups, p, loss),
                Objective::Next(loss) => self.next_item_loss(&groups, loss),
            };
            let value = loss.value.double_value(&[]);
            if !value.is_finite() {
                return Err(Error::Internal(format!("training loss became {value} ({label})")));
            }
            opt.backward_step_clip_norm(&loss.objective, clip);
            // The bounded deltas the step's gradient reached (the sampled
            // softmax touches a few rows, the full one all): rows Adam's
            // momentum moves without a gradient drift little and are
            // projected when next touched and at the end of the epoch.
            if let Some((rows, mask)) = &self.bounded {
                match &loss.touched {
                    Some(ids) => self.model.bound_deltas(&ids.masked_select(&mask.index_select(0, ids))),
                    None => self.model.bound_deltas(rows),
                }
            }
            loss_sum += value;
            batches += 1;
            bar.advance(chunk.len(), || format!("loss {:.4}", loss_sum / batches as f64));
        }
        if let Some((rows, _)) = &self.bounded {
            self.model.bound_deltas(rows);
        }
        let secs = started.elapsed().as_secs_f64();
        bar.finish();
        Ok(EpochStats {
            loss: loss_sum / batches.max(1) as f64,
            valid_ndcg: f64::NAN,
            seqs_per_s: samples.len() as f64 / secs.max(1e-9),
            seconds: secs,
        })
    }

    /// Every position predicts the item after it (causal attention). One
    /// batch, given as groups of similar length (see [`length_groups`]).
    pub(super) fn next_item_loss(&self, groups: &[Vec<&[i64]>], loss: Loss) -> StepLoss {
        let pairs: Vec<(Tensor, Tensor)> = groups
            .iter()
            .map(|parts| {
                let inputs: Vec<&[i64]> = parts.iter().map(|p| &p[..p.len() - 1]).collect();
                let targets: Vec<&[i64]> = parts.iter().map(|p| &p[1..]).collect();
                (left_pad(&inputs, self.max_len, self.device), left_pad(&targets, self.max_len, self.device))
            })
            .collect();
        self.loss(&pairs, true, loss)
    }

    /// A share of positions is replaced by `[MASK]` and predicted from both
    /// sides; every sequence has its last item masked at least.
    pub(super) fn masked_loss(&self, groups: &[Vec<&[i64]>], p: f64, loss: Loss) -> StepLoss {
        let pairs: Vec<(Tensor, Tensor)> = groups
            .iter()
            .map(|parts| {
                let x = left_pad(parts, self.max_len, self.device);
                let real = x.ne(0);
                let last = Tensor::zeros_like(&real).index_fill(
                    1,
                    &Tensor::from_slice(&[x.size()[1] - 1]).to_device(self.device),
                    1,
                );
                let draws = Tensor::rand(x.size(), (Kind::Float, self.device));
                let chosen = draws.lt(p).logical_and(&real).logical_or(&last.to_kind(Kind::Bool));
                let inputs = x.where_scalarother(&chosen.logical_not(), self.model.mask_index());
                (inputs, x.where_scalarother(&chosen, 0))
            })
            .collect();
        self.loss(&pairs, false, loss)
    }

    /// Cross-entropy of encoding each group's inputs `x` [B, L] against its
    /// targets `y` [B, L] (0 = no target at that position): the groups are
    /// encoded apart (each padded to its own longest sequence) and scored
    /// together, as one batch and one mean.
    pub(super) fn loss(&self, pairs: &[(Tensor, Tensor)], causal: bool, loss: Loss) -> StepLoss {
        match loss {
            Loss::Full => {
                let items = self.model.training_item_table(self.feats);
                let table = if causal { items.shallow_clone() } else { self.model.with_mask(&items) };
                let (hs, ys): (Vec<Tensor>, Vec<Tensor>) =
                    pairs.iter().map(|(x, y)| scored_positions(&self.model.encode(x, &table, true, causal), y)).unzip();
                full_softmax_loss(
                    &Tensor::cat(&hs, 0),
                    &Tensor::cat(&ys, 0),
                    &items,
                    self.model.trains_in_bf16(),
                    self.logit_rows,
                    &self.logits,
                )
            }
            Loss::Sampled(negatives) => {
                let neg = match &self.negatives {
                    Some((weights, _)) => weights.multinomial(negatives as i64, true),
                    None => Tensor::randint_low(1, self.n_items, [negatives as i64], (Kind::Int64, self.device)),
                };
                // Only the items this batch touches are represented: the
                // catalog-wide table would cost more than the step itself.
                let mut ids: Vec<&Tensor> = pairs.iter().flat_map(|(x, y)| [x, y]).collect();
                ids.push(&neg);
                let (table, local, uniq) = local_table(self.model, self.feats, &ids);
                let (hs, ys): (Vec<Tensor>, Vec<Tensor>) = local[..local.len() - 1]
                    .chunks(2)
                    .map(|xy| scored_positions(&self.model.encode(&xy[0], &table, true, causal), &xy[1]))
                    .unzip();
                let correction = self.negatives.as_ref().map(|(_, log_draws)| log_draws.index_select(0, &uniq));
                let loss = sampled_softmax_loss(
                    &Tensor::cat(&hs, 0),
                    &Tensor::cat(&ys, 0),
                    &table,
                    &local[local.len() - 1],
                    correction.as_ref(),
                    self.model.trains_in_bf16(),
                );
                StepLoss { touched: Some(uniq), ..loss }
            }
        }
    }
}

/// Positions' worth of work one more encoder pass costs beyond its padded
/// positions (the fixed cost of a pass's few dozen kernels at this size).
const GROUP_OVERHEAD_POSITIONS: usize = 512;

/// One batch cut into groups of similar length, each encoded padded to its
/// own longest sequence: the batch's sequences sorted by length and cut
/// where that saves more padded positions than another encoder pass costs
/// (the cuts minimise padded positions + [`GROUP_OVERHEAD_POSITIONS`] per
/// group, exactly, by dynamic programming over the sorted lengths). The
/// batch's loss, its one mean over every scored position, is unchanged: a
/// random batch trains as a random batch, at nearly the cost of one of
/// equal lengths.
pub(super) fn length_groups<'a>(batch: &[&'a [i64]], max_len: usize) -> Vec<Vec<&'a [i64]>> {
    let mut sorted = batch.to_vec();
    sorted.sort_by_key(|s| s.len());
    let width = |s: &[i64]| s.len().min(max_len + 1);
    let n = sorted.len();
    // best[j]: least cost of the first j sequences; from[j]: where its last group starts.
    let mut best = vec![0usize; n + 1];
    let mut from = vec![0usize; n + 1];
    for j in 1..=n {
        let longest = width(sorted[j - 1]);
        let (cost, i) =
            (0..j).map(|i| (best[i] + (j - i) * longest + GROUP_OVERHEAD_POSITIONS, i)).min().unwrap_or((0, 0));
        best[j] = cost;
        from[j] = i;
    }
    let mut groups = Vec::new();
    let mut j = n;
    while j > 0 {
        groups.push(sorted[from[j]..j].to_vec());
        j = from[j];
    }
    groups.reverse();
    groups
}

/// Each item's occurrences in the training steps of `users` (row 0,
/// padding, stays 0).
pub(super) fn item_counts(data: &SeqData, users: &[usize], n_items: i64) -> Vec<f64> {
    let mut w = vec![0f64; n_items as usize];
    for u in users {
        for i in data.split(*u).train {
            w[*i as usize] += 1.0;
        }
    }
    w
}

/// Each item's delta bound from its training occurrences `n`:
/// `max_norm × √(1 + n / evidence)` (plus a row for the `[MASK]` item,
/// which is never bounded).
pub(super) fn delta_bounds(counts: &[f64], max_norm: f64, evidence: f64, device: tch::Device) -> Tensor {
    let b: Vec<f32> = counts.iter().map(|n| (max_norm * (1.0 + n / evidence).sqrt()) as f32).chain([0.0]).collect();
    Tensor::from_slice(&b).to_device(device)
}

/// Popularity negatives: weights (training occurrences + 1)^0.75 over
/// items 1.., and the log of each item's expected draws among `negatives`
/// (with a last row for the `[MASK]` item).
pub(super) fn popularity_negatives(
    data: &SeqData,
    users: &[usize],
    n_items: i64,
    negatives: usize,
    device: tch::Device,
) -> (Tensor, Tensor) {
    let mut w = item_counts(data, users, n_items);
    for x in w.iter_mut().skip(1) {
        *x = (*x + 1.0).powf(0.75);
    }
    w[0] = 0.0;
    let total: f64 = w.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    // One more row for pretraining's `[MASK]` item (never drawn, never a target).
    let log_draws: Vec<f32> = w
        .iter()
        .map(|x| if *x > 0.0 { (negatives as f64 * x / total).ln() as f32 } else { 0.0 })
        .chain(std::iter::once(0.0))
        .collect();
    let weights: Vec<f32> = w.iter().map(|x| *x as f32).collect();
    (Tensor::from_slice(&weights).to_device(device), Tensor::from_slice(&log_draws).to_device(device))
}

/// The rows of `ids` (any shapes) in a table of just the items they hold:
/// the table and each tensor of ids renumbered into it. Id 0 (padding)
/// stays 0, so padding is still recognised. Also returns the rows' ids.
pub(super) fn local_table(model: &SeqRec, feats: &ItemFeatures, ids: &[&Tensor]) -> (Tensor, Vec<Tensor>, Tensor) {
    let device = ids[0].device();
    let mut flat: Vec<Tensor> = vec![Tensor::zeros([1], (Kind::Int64, device))];
    flat.extend(ids.iter().map(|t| t.flatten(0, -1)));
    let all = Tensor::cat(&flat, 0);
    let (uniq, inverse, _) = all.internal_unique2(true, true, false);
    let mut out = Vec::with_capacity(ids.len());
    let mut at = 1i64;
    for t in ids {
        let n = t.numel() as i64;
        out.push(inverse.narrow(0, at, n).view(t.size().as_slice()));
        at += n;
    }
    (model.item_rows(feats, &uniq), out, uniq)
}

/// The states [P, D] and targets [P] of the positions that have a target
/// (y ≠ 0), so that padding and unmasked positions cost no output logits.
pub(super) fn scored_positions(h: &Tensor, y: &Tensor) -> (Tensor, Tensor) {
    let d = h.size()[2];
    let y = y.view([-1]);
    let at = y.nonzero().squeeze_dim(1);
    (h.view([-1, d]).index_select(0, &at), y.index_select(0, &at))
}

/// Mean cross-entropy of states `h` [P, D] against every item of `items`,
/// its gradient worked out as in [`sampled_softmax_loss`]: with the
/// softmax weights `S` [P, items] and the targets' one-hot `Y`, the logits'
/// gradient is (S − Y) / P, so the states' gradient is (S · items − items[y])
/// / P and the items' is (Sᵀ · h − Yᵀ · h) / P. `S` comes from libtorch's
/// fused softmax, in the products' precision: the [P, items] logits are
/// read and written a few times, not a dozen (they are most of the step's
/// memory traffic on a large catalogue). The positions are scored
/// `chunk_rows` at a time, so a chunk's logits, not the batch's, bound the
/// memory: a batch keeps its size whatever the catalogue.
pub(super) fn full_softmax_loss(
    h: &Tensor,
    y: &Tensor,
    items: &Tensor,
    bf16: bool,
    chunk_rows: i64,
    scratch: &LogitScratch,
) -> StepLoss {
    let rows = h.size()[0];
    let p = rows.max(1) as f64;
    let kind = h.kind();
    let (value, gh, gi) = tch::no_grad(|| {
        let (hd, id) = (h.detach(), items.detach());
        let il = Products::new(bf16, 0).low(&id, false);
        let ilt = il.tr();
        let mut value = Tensor::zeros([], (kind, h.device()));
        let mut gi = Tensor::zeros_like(&id);
        let mut ghs = Vec::new();
        let step = chunk_rows.max(1);
        let mut start = 0;
        while start < rows {
            let n = step.min(rows - start);
            let (hc, yc) = (hd.narrow(0, start, n), y.narrow(0, start, n).unsqueeze(1));
            let products = Products::new(bf16, n);
            // Padding rows (bf16) are zero states: their weights meet zero
            // rows of `hl` in the items' product, and are dropped from the states'.
            let hl = products.low(&hc, true);
            let (logits, weights) = scratch.views(hl.size()[0], &ilt);
            let _ = hl.mm_out(&logits, &ilt);
            let _ = logits.softmax_int_out(&weights, -1, il.kind());
            let target = weights.narrow(0, 0, n).gather(1, &yc, false).to_kind(kind);
            value -= target.clamp_min(f64::MIN_POSITIVE).log().sum(kind);
            ghs.push(products.mm(&weights, &il, kind, true));
            gi += products.mm(&weights.tr(), &hl, kind, false);
            start += n;
        }
        let gh = if ghs.is_empty() { Tensor::zeros_like(&hd) } else { Tensor::cat(&ghs, 0) };
        let gh = (gh - id.index_select(0, y)) / p;
        let gi = gi.index_add(0, y, &hd.neg()) / p;
        (value / p, gh, gi)
    });
    let objective = (h * gh).sum(kind) + (items * gi).sum(kind);
    StepLoss { value, objective, touched: None }
}

/// The full softmax's [rows, items] buffers of logits and weights, kept
/// from step to step and grown when a chunk needs more rows, so that a
/// step does not map and zero fresh pages for them. (Measured at 40,000
/// items: the epoch time did not change beyond noise; the page faults left
/// in `perf` are the validation's scoring blocks.)
#[derive(Default)]
pub(super) struct LogitScratch(std::cell::RefCell<Option<(Tensor, Tensor)>>);

impl LogitScratch {
    /// Views of `rows` rows of the two buffers, shaped as `items_t`'s
    /// product with `rows` states ([rows, items], its kind and device).
    fn views(&self, rows: i64, items_t: &Tensor) -> (Tensor, Tensor) {
        let cols = items_t.size()[1];
        let (kind, device) = (items_t.kind(), items_t.device());
        let mut slot = self.0.borrow_mut();
        let fits = |z: &Tensor| z.size()[0] >= rows && z.size()[1] == cols && z.kind() == kind && z.device() == device;
        let (z, w) = match slot.take() {
            Some((z, w)) if fits(&z) => (z, w),
            _ => (Tensor::empty([rows, cols], (kind, device)), Tensor::empty([rows, cols], (kind, device))),
        };
        let views = (z.narrow(0, 0, rows), w.narrow(0, 0, rows));
        *slot = Some((z, w));
        views
    }
}

/// Scored positions per chunk of the full softmax (see
/// [`full_softmax_loss`]) within `budget`: a chunk's logits and their
/// softmax weights (at most 8 bytes per item and row), in whole blocks of
/// the bf16 products' row padding.
pub(crate) fn logit_chunk_rows(budget: crate::resources::MemoryBudget, n_items: i64) -> i64 {
    let block = crate::model::seqrec::BF16_ROW_BLOCK as usize;
    let rows = budget.rows(8 * n_items.max(1) as usize, usize::MAX);
    ((rows / block).max(1) * block) as i64
}

/// The training loss's matrix products: f32, or bf16 with f32 results and
/// the scored positions' rows padded as in the model's bf16 products
/// (`bf16_padded_rows`) so that oneDNN reuses a compiled kernel across batches.
pub(super) struct Products {
    bf16: bool,
    rows: i64,
    padded: i64,
}

impl Products {
    pub(super) fn new(bf16: bool, rows: i64) -> Products {
        Products { bf16, rows, padded: if bf16 { crate::model::seqrec::bf16_padded_rows(rows) } else { rows } }
    }

    /// `x` in the products' precision; `pad`: `x` has one row per scored
    /// position, padded.
    pub(super) fn low(&self, x: &Tensor, pad: bool) -> Tensor {
        let x = if self.bf16 { x.to_kind(Kind::BFloat16) } else { x.shallow_clone() };
        if pad && self.padded > self.rows { x.constant_pad_nd([0, 0, 0, self.padded - self.rows]) } else { x }
    }

    /// a · b in `kind`; `per_position`: a's rows are the scored positions
    /// (padded), and the padding rows are dropped from the result.
    pub(super) fn mm(&self, a: &Tensor, b: &Tensor, kind: Kind, per_position: bool) -> Tensor {
        let out = a.mm(b);
        let out = if per_position { out.narrow(0, 0, self.rows) } else { out };
        out.to_kind(kind)
    }
}

/// Mean cross-entropy of states `h` [P, D] over the target and the shared
/// negatives `neg` (rows of `items`); a negative that is the target itself
/// is left out of that position's softmax. With `log_draws` (per row of
/// `items`, the log of its expected draws per step) every logit is
/// corrected by it (sampled softmax with the logQ correction).
///
/// The gradient is worked out here rather than by autograd: the [P, K]
/// logits are scored once with no graph, turned into softmax weights in
/// place, and give the gradients of the states, the targets' rows and the
/// negatives' rows by two matrix products. The returned objective is a sum
/// of inner products of those three inputs with their fixed gradients, so
/// its backward pass carries exactly the loss's gradients into the encoder
/// and the item table, without autograd's copies of the logits (the
/// concatenation, the masked copy, log-softmax forward and backward).
pub(super) fn sampled_softmax_loss(
    h: &Tensor,
    y: &Tensor,
    items: &Tensor,
    neg: &Tensor,
    log_draws: Option<&Tensor>,
    bf16: bool,
) -> StepLoss {
    let t = items.index_select(0, y);
    let n = items.index_select(0, neg);
    let rows = h.size()[0];
    let p = rows.max(1) as f64;
    let kind = h.kind();
    let (value, gh, gt, gn) = tch::no_grad(|| {
        let (hd, td, nd) = (h.detach(), t.detach(), n.detach());
        let products = Products::new(bf16, rows);
        let (hl, nl) = (products.low(&hd, true), products.low(&nd, false));
        let mut pos = (&hd * &td).sum_dim_intlist(-1, true, kind);
        let mut z = products.mm(&hl, &nl.tr(), kind, true);
        // logQ: each logit less the log of how often its item is drawn.
        if let Some(c) = log_draws {
            pos -= c.index_select(0, y).unsqueeze(-1).to_kind(kind);
            let _ = z.g_sub_(&c.index_select(0, neg).unsqueeze(0).to_kind(kind));
        }
        // Targets drawn as negatives are rare: mask only the rows that have one.
        let is_neg = Tensor::zeros([items.size()[0]], (Kind::Bool, h.device())).index_fill(0, neg, 1);
        let hit_rows = is_neg.index_select(0, y).nonzero().squeeze_dim(1);
        if hit_rows.numel() > 0 {
            let hit = y.index_select(0, &hit_rows).unsqueeze(-1).eq_tensor(&neg.unsqueeze(0));
            let sub = z.index_select(0, &hit_rows).masked_fill(&hit, f64::NEG_INFINITY);
            let _ = z.index_copy_(0, &hit_rows, &sub);
        }
        let m = z.amax([-1], true).maximum(&pos);
        let _ = z.g_sub_(&m).exp_();
        let e0 = (&pos - &m).exp();
        let s = z.sum_dim_intlist(-1, true, kind) + &e0;
        let value = (s.log() + &m - &pos).mean(kind);
        // d loss / d logit: softmax weight (minus 1 for the target) over P.
        let _ = z.g_div_(&(&s * p));
        let g0 = (e0 / &s - 1.0) / p;
        let zl = products.low(&z, true);
        let gh = products.mm(&zl, &nl, kind, true) + &g0 * &td;
        let gn = products.mm(&zl.tr(), &hl, kind, false);
        let gt = g0 * &hd;
        (value, gh, gt, gn)
    });
    let objective = (h * gh).sum(kind) + (t * gt).sum(kind) + (n * gn).sum(kind);
    StepLoss { value, objective, touched: None }
}

/// A batch's loss: its value, and the tensor to differentiate (whose
/// gradients are the loss's; its own value may differ).
pub(super) struct StepLoss {
    pub(super) value: Tensor,
    pub(super) objective: Tensor,
    /// The item rows the loss reaches (None: every row).
    pub(super) touched: Option<Tensor>,
}
