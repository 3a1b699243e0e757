//! The training loop: the phases of a training run (masked-item
//! pretraining, next-item fine-tuning with early stopping on validation
//! NDCG@10, the refits of the published and the holdout model) over the
//! epochs of [`super::loss::Ctx`].

use tch::{Tensor, nn, nn::OptimizerConfig};

use super::EpochStats;
use super::loss::{Ctx, Objective};
use super::warm::{ITEM_ROWS, fill_unseen_rows, restore, seen_items};
use super::windows::{Part, windows};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::metrics::RankSums;
use crate::model::SeqRec;
use crate::model::seqrec::ItemFeatures;
use crate::rng::Rng;
use crate::seqdata::{SeqData, left_pad};

/// Mean validation NDCG@10 of a model (history masked).
pub(crate) fn validate(
    model: &SeqRec,
    data: &SeqData,
    feats: &ItemFeatures,
    users: &[usize],
    device: tch::Device,
) -> RankSums {
    let max_len = model.config().max_len as usize;
    let mut sums = RankSums::default();
    tch::no_grad(|| {
        let items = model.item_table(feats);
        for chunk in users.chunks(256) {
            let inputs: Vec<&[i64]> = chunk.iter().map(|u| data.split(*u).train).collect();
            let targets: Vec<i64> = chunk.iter().filter_map(|u| data.split(*u).valid.first().copied()).collect();
            if targets.len() != inputs.len() {
                continue;
            }
            let x = left_pad(&inputs, max_len, device);
            let scores = model.encode_last(&x, &items).matmul(&items.tr());
            let hist = left_pad(&inputs, usize::MAX, device);
            sums.add(&scores, &Tensor::from_slice(&targets).to_device(device), &hist, 10);
        }
    });
    sums
}

/// Early stopping's patience for a validation NDCG with standard error
/// `se`: `patience` while `se` is at most `noise`, proportionally more for
/// a noisier (smaller) validation sample, at most `max` (and never less
/// than `patience`).
pub(crate) fn noisy_patience(patience: usize, max: usize, se: f64, noise: f64) -> usize {
    let scaled = (patience as f64 * (se / noise).max(1.0)).round();
    if scaled.is_finite() { (scaled as usize).clamp(patience, max.max(patience)) } else { patience }
}

/// A model's weights by variable name.
pub(super) type Weights = Vec<(String, Tensor)>;

/// A fresh AdamW optimiser over `vs` with the configured settings.
pub(super) fn optimiser(vs: &nn::VarStore, cfg: &ModelConfig) -> Result<nn::Optimizer> {
    nn::AdamW { wd: cfg.weight_decay, ..Default::default() }
        .build(vs, cfg.learning_rate)
        .map_err(|e| Error::torch("creating the optimiser", e))
}

/// Masked-item pretraining: `epochs` epochs.
pub(super) fn pretrain(
    ctx: &Ctx,
    opt: &mut nn::Optimizer,
    rng: &mut Rng,
    samples: &[&[i64]],
    (cfg, epochs): (&ModelConfig, usize),
    objective: Objective,
) -> Result<Vec<EpochStats>> {
    let mut pretrain = Vec::new();
    for epoch in 1..=epochs {
        let stats = ctx.epoch(opt, rng, samples, cfg.grad_clip, objective, "pretrain")?;
        tracing::info!(
            epoch,
            loss = stats.loss,
            seqs_per_s = stats.seqs_per_s as u64,
            seconds = stats.seconds,
            "pretraining epoch (masked items)"
        );
        pretrain.push(stats);
    }
    Ok(pretrain)
}

/// How fine-tuning went: every epoch, the best (validation NDCG@10, 1-based
/// epoch) and that epoch's weights (empty when no epoch ran).
pub(super) struct FineTuned {
    pub(super) epochs: Vec<EpochStats>,
    pub(super) best: (f64, usize),
    pub(super) best_weights: Vec<(String, Tensor)>,
}

/// What fine-tuning reads besides the loss context.
pub(super) struct Validation<'a> {
    pub(super) data: &'a SeqData,
    pub(super) users: &'a [usize],
    /// The patience rule: fixed (warm start) or grown with the noise.
    pub(super) warm: bool,
}

/// Next-item fine-tuning, at most `max_epochs` epochs, stopped early when
/// validation NDCG@10 stops improving; the best epoch's weights are kept.
#[allow(clippy::too_many_arguments)]
pub(super) fn finetune(
    ctx: &Ctx,
    vs: &nn::VarStore,
    opt: &mut nn::Optimizer,
    rng: &mut Rng,
    samples: &[&[i64]],
    cfg: &ModelConfig,
    objective: Objective,
    max_epochs: usize,
    v: &Validation,
) -> Result<FineTuned> {
    let mut best = (f64::NEG_INFINITY, 0usize);
    let mut best_weights: Vec<(String, Tensor)> = Vec::new();
    let mut finetune = Vec::new();
    for epoch in 1..=max_epochs {
        let mut stats = ctx.epoch(opt, rng, samples, cfg.grad_clip, objective, "fine-tune")?;
        let valid = validate(ctx.model, v.data, ctx.feats, v.users, ctx.device);
        stats.valid_ndcg = valid.ndcg();
        let patience = if v.warm {
            cfg.warm_start_patience
        } else {
            noisy_patience(cfg.patience, cfg.max_patience, valid.ci95().0 / 1.96, cfg.patience_noise)
        };
        tracing::info!(
            epoch,
            loss = stats.loss,
            valid_ndcg10 = stats.valid_ndcg,
            seqs_per_s = stats.seqs_per_s as u64,
            seconds = stats.seconds,
            "fine-tuning epoch (next item)"
        );
        finetune.push(stats);
        if stats.valid_ndcg > best.0 {
            best = (stats.valid_ndcg, epoch);
            best_weights = vs.variables().into_iter().map(|(k, t)| (k, t.detach().copy())).collect();
        } else if epoch - best.1 >= patience {
            tracing::info!(epoch, best_epoch = best.1, patience, "early stop: validation NDCG@10 stopped improving");
            break;
        }
    }
    Ok(FineTuned { epochs: finetune, best, best_weights })
}

/// The refits from the best weights (`cfg.refit_epochs` each, fresh
/// optimisers): first on every step but the test ones (the holdout model,
/// whose weights are returned), then on every step (left in `vs`: the
/// published model). Returns the published refit's epochs and the holdout
/// weights.
#[allow(clippy::too_many_arguments)]
pub(super) fn refit(
    ctx: &Ctx,
    vs: &nn::VarStore,
    rng: &mut Rng,
    data: &SeqData,
    cfg: &ModelConfig,
    objective: Objective,
    max_len: usize,
    best_weights: &[(String, Tensor)],
) -> Result<(Vec<EpochStats>, Option<Weights>)> {
    let (mut refit, mut holdout) = (Vec::new(), None);
    let all: Vec<usize> = (0..data.seqs.len()).collect();
    for part in [Part::BeforeTest, Part::All] {
        let samples = windows(data, &all, part, max_len);
        let mut opt = optimiser(vs, cfg)?;
        let label = if part == Part::All { "refit" } else { "refit (holdout)" };
        for epoch in 1..=cfg.refit_epochs {
            let stats = ctx.epoch(&mut opt, rng, &samples, cfg.grad_clip, objective, label)?;
            tracing::info!(
                epoch,
                loss = stats.loss,
                seqs_per_s = stats.seqs_per_s as u64,
                seconds = stats.seconds,
                held_out_test = part == Part::BeforeTest,
                "refit epoch (next item, latest steps included)"
            );
            if part == Part::All {
                refit.push(stats);
            }
        }
        if part == Part::BeforeTest {
            let weights: Vec<(String, Tensor)> =
                vs.variables().into_iter().map(|(k, t)| (k, t.detach().copy())).collect();
            if let Some((_, ids)) = weights.iter().find(|(k, _)| k == ITEM_ROWS) {
                fill_unseen_rows(ids, &seen_items(data, part));
            }
            holdout = Some(weights);
            restore(vs, best_weights);
        }
    }
    Ok((refit, holdout))
}
