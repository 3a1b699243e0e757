//! Stage `train`: `sequences` + item embeddings → checkpoint.
//!
//! From scratch: masked-item pretraining (`model.pretrain_epochs`, on a log
//! whose users' mean training history reaches `model.pretrain_min_history`;
//! a share of each training sequence's items replaced by a learned `[MASK]`
//! item and predicted with bidirectional attention), then next-item fine-tuning
//! (causal attention, every position predicts the next item) with softmax
//! cross-entropy over the whole catalog, or over shared sampled negatives
//! when the catalog is large. AdamW, gradient clipping, early stopping on
//! validation NDCG@10 with the best epoch's weights kept.
//!
//! Refit (`model.refit_epochs`): validation only chooses how long to train.
//! From the best weights, two continuations of `refit_epochs` next-item
//! epochs each follow, with a fresh optimiser: one on every step of each
//! user, the validation and test steps included, which becomes the
//! published model (it learns from each user's latest behaviour); one on
//! every step but the test ones, the *holdout* model, which the offline
//! evaluation scores (so the test step never reaches the model that is
//! scored, and the evaluation measures what the refit is worth) and which
//! tomorrow's warm start continues from (so tomorrow's test steps, which
//! for users without new events are today's, stay unseen too).
//!
//! Daily warm start: when an earlier date (within
//! `model.warm_start_max_age_days`) left a checkpoint of the same shape, its
//! weights are the starting point (rows of items still in the catalog are
//! kept, new items start fresh, removed items are dropped) and fine-tuning
//! runs at most `model.warm_start_epochs` epochs without pretraining.
//! `--full-retrain` starts over.
//!
//! Deterministic on CPU for a given `run.seed` and thread count.
//! Safe to re-run: the checkpoint is replaced whole.

mod fit;
mod loss;
mod warm;
mod windows;

use tch::{Kind, Tensor, nn};

use crate::checkpoint::{self, CheckpointMeta, WarmStart};
use crate::config::{InputNorm, ModelConfig, NegativeSampling, Precision};
use crate::error::{DfContext, Error, Result};
use crate::job::Job;
use crate::model::{SeqRec, SeqRecConfig};
use crate::parquet_io::WrittenTable;
use crate::rng::Rng;
use crate::seqdata::SeqData;
pub(crate) use loss::full_softmax_chosen;
use loss::{
    Ctx, LogitScratch, Loss, Objective, batches_chosen, delta_bounds, item_counts, logit_chunk_rows,
    popularity_negatives, pretraining_chosen,
};
use warm::{ITEM_ROWS, apply_warm_start, fill_unseen_rows, restore, seen_items};
use windows::{Part, windows};

/// One epoch's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EpochStats {
    /// Mean training loss.
    pub loss: f64,
    /// Validation NDCG@10 after the epoch (pretraining: not measured, NaN).
    pub valid_ndcg: f64,
    /// Training sequences per second.
    pub seqs_per_s: f64,
    /// Wall time.
    pub seconds: f64,
}

/// What training did.
#[derive(Debug, Clone)]
pub(crate) struct TrainReport {
    /// Pretraining epochs.
    pub pretrain: Vec<EpochStats>,
    /// Fine-tuning epochs.
    pub finetune: Vec<EpochStats>,
    /// 1-based fine-tuning epoch whose weights were kept.
    pub best_epoch: usize,
    /// Its validation NDCG@10.
    pub best_valid_ndcg: f64,
    /// Users trained on.
    pub train_users: usize,
    /// Training windows (long histories give several).
    pub train_windows: usize,
    /// Batch size after the memory budget.
    pub batch_size: usize,
    /// Whether the training step's matrix products ran in bf16.
    pub bf16: bool,
    /// Whether the full softmax was used (else sampled).
    pub full_softmax: bool,
    /// Why that softmax.
    pub loss_why: String,
    /// How the batches were formed, and why.
    pub batches_why: String,
    /// Why pretraining ran or did not.
    pub pretrain_why: String,
    /// The date warm-started from, with kept / new / dropped item rows.
    pub warm_start: Option<(String, usize, usize, usize)>,
    /// Refit epochs of the published model (every step).
    pub refit: Vec<EpochStats>,
}

/// A trained model and how it went.
pub(crate) struct Trained {
    /// The weights (of the published model).
    pub vs: nn::VarStore,
    pub model: SeqRec,
    pub report: TrainReport,
    /// With a refit: the holdout model's weights by variable name (trained
    /// on every step but the test ones).
    pub holdout: Option<Vec<(String, Tensor)>>,
}

/// Everything `train` needs besides the data.
#[derive(Debug, Clone)]
pub(crate) struct TrainOptions {
    /// Model and optimisation settings.
    pub model: ModelConfig,
    /// Longest input sequence.
    pub max_len: usize,
    /// Seed for initialisation, shuffles, masking and dropout.
    pub seed: u64,
    /// CPU threads.
    pub threads: usize,
}

/// Train on `data` (optionally from a warm start) on `device`.
pub(crate) fn train(
    data: &SeqData,
    opts: &TrainOptions,
    device: tch::Device,
    warm: Option<&WarmStart>,
) -> Result<Trained> {
    let cfg = &opts.model;
    crate::device::init(opts.seed, opts.threads);
    let n_items = data.n_items();
    let train_users: Vec<usize> = (0..data.seqs.len()).filter(|u| data.split(*u).train.len() >= 2).collect();
    if train_users.is_empty() {
        return Err(Error::DataQuality(format!(
            "no user has enough history to train on ({} users with sequences; need 2 training steps plus the held-out ones)",
            data.seqs.len()
        )));
    }
    let mut rng = Rng::new(opts.seed);
    let valid_users = validation_users(data, cfg.validation_users, &mut rng);
    let mcfg = model_config(data, opts);
    let vs = nn::VarStore::new(device);
    let mut model = SeqRec::new(&vs.root(), &mcfg);
    model.train_in_bf16(match cfg.precision {
        Precision::Fp32 => false,
        Precision::Bf16 => true,
        Precision::Auto => device == tch::Device::Cpu && crate::model::seqrec::bf16_is_fast(),
    });
    let warm_stats = match warm {
        Some(w) => apply_warm_start(&vs, &mcfg, &data.item_ids, w)?,
        None => None,
    };
    let mut opt = fit::optimiser(&vs, cfg)?;
    let feats = data.features(device);
    let bounded = model.bounded_rows(&feats);
    if bounded.is_some() && cfg.text_delta_evidence > 0.0 {
        model.set_delta_bounds(delta_bounds(
            &item_counts(data, &train_users, n_items),
            cfg.text_delta_max_norm,
            cfg.text_delta_evidence,
            device,
        ));
    }
    if let Some(rows) = &bounded {
        model.bound_deltas(rows);
    }

    let samples = windows(data, &train_users, Part::Train, opts.max_len);
    // Next-item positions an epoch trains (the windows tile each user's
    // transitions once).
    let positions: usize = samples.iter().map(|w| w.len() - 1).sum();
    let (full, loss_why) = full_softmax_chosen(cfg, n_items, opts.max_len, positions);
    let mean_history =
        train_users.iter().map(|u| data.split(*u).train.len()).sum::<usize>() as f64 / train_users.len() as f64;
    let (pretrain_epochs, pretrain_why) = pretraining_chosen(cfg, mean_history, warm_stats.is_some());
    let batch_size = batch_size(cfg, opts.max_len, full);
    let (batches, batches_why) = batches_chosen(cfg, full);
    let ctx = Ctx {
        model: &model,
        feats: &feats,
        bounded: bounded.as_ref().map(|r| {
            // One more row for the `[MASK]` item, never bounded.
            (r, Tensor::zeros([n_items + 1], (Kind::Bool, device)).index_fill(0, r, 1))
        }),
        negatives: (cfg.negative_sampling == NegativeSampling::Popularity)
            .then(|| popularity_negatives(data, &train_users, n_items, cfg.sampled_negatives, device)),
        device,
        max_len: opts.max_len,
        batch_size,
        logit_rows: logit_chunk_rows(crate::resources::MemoryBudget::mib(cfg.memory_budget_mb), n_items + 1),
        logits: LogitScratch::default(),
        batches,
        n_items,
    };
    let loss = if full { Loss::Full } else { Loss::Sampled(cfg.sampled_negatives) };

    let pretrain = fit::pretrain(
        &ctx,
        &mut opt,
        &mut rng,
        &samples,
        (cfg, pretrain_epochs),
        Objective::Masked(cfg.mask_prob, loss),
    )?;
    let objective = Objective::Next(loss);
    let max_epochs = if warm_stats.is_some() { cfg.warm_start_epochs } else { cfg.epochs };
    let validation = fit::Validation { data, users: &valid_users, warm: warm_stats.is_some() };
    let tuned = fit::finetune(&ctx, &vs, &mut opt, &mut rng, &samples, cfg, objective, max_epochs, &validation)?;
    restore(&vs, &tuned.best_weights);
    let (refit, holdout) = if cfg.refit_epochs > 0 && !tuned.best_weights.is_empty() {
        fit::refit(&ctx, &vs, &mut rng, data, cfg, objective, opts.max_len, &tuned.best_weights)?
    } else {
        (Vec::new(), None)
    };
    let mut vs = vs;
    if let Some(ids) = vs.variables().get(ITEM_ROWS) {
        fill_unseen_rows(ids, &seen_items(data, if refit.is_empty() { Part::Train } else { Part::All }));
    }
    vs.freeze();
    let report = TrainReport {
        pretrain,
        finetune: tuned.epochs,
        best_epoch: tuned.best.1,
        best_valid_ndcg: tuned.best.0.max(0.0),
        train_users: train_users.len(),
        train_windows: samples.len(),
        batch_size,
        bf16: model.trains_in_bf16(),
        full_softmax: full,
        loss_why,
        batches_why,
        pretrain_why,
        warm_start: warm.zip(warm_stats).map(|(w, (k, n, d))| (w.date.to_string(), k, n, d)),
        refit,
    };
    Ok(Trained { vs, model, report, holdout })
}

/// The users whose validation NDCG@10 decides early stopping: at most `n`
/// of those with a validation step, drawn with `rng`, ordered by history
/// length (batches of similar lengths pad little).
fn validation_users(data: &SeqData, n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut users: Vec<usize> =
        (0..data.seqs.len()).filter(|u| !data.split(*u).valid.is_empty() && !data.split(*u).train.is_empty()).collect();
    rng.shuffle(&mut users);
    users.truncate(n);
    users.sort_by_key(|u| (data.split(*u).train.len(), *u));
    users
}

/// The model's shape and regularisation for `data` under `opts`.
fn model_config(data: &SeqData, opts: &TrainOptions) -> SeqRecConfig {
    let cfg = &opts.model;
    SeqRecConfig {
        n_items: data.n_items(),
        dim: cfg.dim,
        heads: cfg.heads,
        layers: cfg.layers,
        max_len: opts.max_len as i64,
        dropout: cfg.dropout,
        text_dim: data.text_dim as i64,
        text_fusion: cfg.text_fusion,
        delta_max_norm: cfg.text_delta_max_norm,
        id_dropout: cfg.id_dropout,
        image_dim: data.image_dim as i64,
        image_alpha: cfg.image_alpha,
        scale_input: cfg.input_norm == InputNorm::Scale,
    }
}

/// The configured batch size; with the sampled softmax, capped so that the
/// [batch, length, negatives] logits stay within `model.memory_budget_mb`
/// (forward + backward ≈ 3 copies of f32). The full softmax keeps the
/// batch and scores its positions in chunks within the budget instead
/// ([`logit_chunk_rows`]).
fn batch_size(cfg: &ModelConfig, max_len: usize, full: bool) -> usize {
    if full {
        return cfg.batch_size.max(1);
    }
    let per_seq = max_len.saturating_mul(cfg.sampled_negatives + 1).saturating_mul(4 * 3);
    crate::resources::MemoryBudget::mib(cfg.memory_budget_mb).rows(per_seq, cfg.batch_size)
}

/// `training_epochs`: one row per epoch of each phase ([`crate::tables::training_epochs::PHASES`]), with
/// its mean loss and validation NDCG@10 (fine-tuning only). Times are left
/// to the log and the run summary: a rerun writes the same table.
pub(crate) fn epochs_batch(r: &TrainReport) -> Result<datafusion::arrow::array::RecordBatch> {
    use datafusion::arrow::array::{Float64Array, Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let rows: Vec<(&str, usize, &EpochStats)> = crate::tables::training_epochs::PHASES
        .iter()
        .zip([&r.pretrain, &r.finetune, &r.refit])
        .flat_map(|(p, v)| v.iter().enumerate().map(move |(i, e)| (*p, i + 1, e)))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("phase", DataType::Utf8, false),
        Field::new("epoch", DataType::Int32, false),
        Field::new("loss", DataType::Float64, false),
        Field::new("valid_ndcg", DataType::Float64, true),
    ]));
    datafusion::arrow::array::RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1 as i32))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2.loss))),
            Arc::new(Float64Array::from_iter(
                rows.iter().map(|r| r.2.valid_ndcg.is_finite().then_some(r.2.valid_ndcg)),
            )),
        ],
    )
    .ctx("building training_epochs")
}

/// Run the stage: the checkpoint, and `training_epochs`.
pub(crate) async fn run(job: &Job, device: tch::Device) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let data = crate::seqdata::load(job).await?;
    let warm = if job.full_retrain { None } else { checkpoint::previous(job).await? };
    let opts = TrainOptions {
        model: job.cfg.model.clone(),
        max_len: job.cfg.model.max_len,
        seed: job.cfg.run.seed,
        threads: job.cfg.run.threads,
    };
    let trained = train(&data, &opts, device, warm.as_ref())?;
    let r = &trained.report;
    let meta = CheckpointMeta {
        model: trained.model.config().clone(),
        item_ids: data.item_ids.clone(),
        epochs: r.finetune.len(),
        best_valid_ndcg10: r.best_valid_ndcg,
        version: String::new(),
        holdout: false,
        files: Vec::new(),
    };
    let meta = checkpoint::save(job, &trained.vs, trained.holdout.as_deref(), meta).await?;
    let mean = |v: &[EpochStats], f: fn(&EpochStats) -> f64| v.iter().map(f).sum::<f64>() / v.len().max(1) as f64;
    let mut facts = vec![
        ("training users (windows)".into(), format!("{} ({})", r.train_users, r.train_windows)),
        ("pretraining epochs".into(), format!("{}: {}", r.pretrain.len(), r.pretrain_why)),
        ("fine-tuning epochs (best)".into(), format!("{} ({})", r.finetune.len(), r.best_epoch)),
        ("refit epochs (every step)".into(), r.refit.len().to_string()),
        ("loss".into(), format!("{}: {}", if r.full_softmax { "full softmax" } else { "sampled softmax" }, r.loss_why)),
        ("batch size".into(), r.batch_size.to_string()),
        ("batches".into(), r.batches_why.clone()),
        ("precision".into(), if r.bf16 { "bf16 products".into() } else { "fp32".into() }),
        ("valid NDCG@10".into(), format!("{:.4}", r.best_valid_ndcg)),
        (
            "sequences/s, s/epoch".into(),
            format!("{:.0}, {:.2}", mean(&r.finetune, |e| e.seqs_per_s), mean(&r.finetune, |e| e.seconds)),
        ),
        ("model version".into(), meta.version.clone()),
    ];
    if let Some((date, kept, new, dropped)) = &r.warm_start {
        facts.push(("warm start".into(), format!("from {date}: {kept} items kept, {new} new, {dropped} dropped")));
    }
    let batch = epochs_batch(r)?;
    let table = job.write_work_batches("training_epochs", batch.schema(), &[batch]).await?;
    Ok((vec![table], facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::{fit::noisy_patience, loss::*, windows::*};
    use crate::config::LossKind;
    use crate::seqdata::left_pad;

    #[test]
    fn batches_by_length_hold_similar_lengths_and_mixed_ones_do_not() {
        use crate::config::BatchOrder;
        // 64 sequences: lengths 2, 3, ..., 9, eight of each.
        let seqs: Vec<Vec<i64>> = (0..64).map(|i| vec![1; 2 + i % 8]).collect();
        let samples: Vec<&[i64]> = seqs.iter().map(Vec::as_slice).collect();
        let spread =
            |b: &Vec<&[i64]>| b.iter().map(|s| s.len()).max().unwrap() - b.iter().map(|s| s.len()).min().unwrap();
        for order in [BatchOrder::ByLength, BatchOrder::Mixed] {
            let batches = batches_of(&samples, 8, order, &mut Rng::new(3));
            assert_eq!(batches.len(), 8);
            let mut lens: Vec<usize> = batches.iter().flatten().map(|s| s.len()).collect();
            lens.sort_unstable();
            assert_eq!(lens, (0..64).map(|i| 2 + i / 8).collect::<Vec<_>>(), "every sequence once");
            let widest = batches.iter().map(spread).max().unwrap();
            match order {
                BatchOrder::ByLength => assert_eq!(widest, 0, "a batch of one length each"),
                BatchOrder::Mixed | BatchOrder::Auto => assert!(widest >= 5, "random batches mix lengths: {widest}"),
            }
        }
    }

    #[test]
    fn a_mixed_batch_is_encoded_in_length_groups_that_cost_less_padding() {
        // 120 short sequences and 8 long ones: two groups, every sequence once.
        let seqs: Vec<Vec<i64>> = (0..128).map(|i| vec![1; if i % 16 == 0 { 51 } else { 2 + i % 3 }]).collect();
        let batch: Vec<&[i64]> = seqs.iter().map(Vec::as_slice).collect();
        let groups = length_groups(&batch, 50);
        assert_eq!(groups.len(), 2, "{:?}", groups.iter().map(Vec::len).collect::<Vec<_>>());
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 128);
        assert!(groups[1].iter().all(|s| s.len() == 51) && groups[0].iter().all(|s| s.len() <= 4));
        let padded = |g: &Vec<&[i64]>| g.len() * g.iter().map(|s| s.len()).max().unwrap();
        assert!(groups.iter().map(padded).sum::<usize>() * 4 < 128 * 51, "far less padding than one pass");
        // Equal lengths, or a spread too small to pay for a pass: one group.
        assert_eq!(length_groups(&batch[1..8], 50).len(), 1);
        let same: Vec<&[i64]> = seqs.iter().filter(|s| s.len() == 3).map(Vec::as_slice).collect();
        assert_eq!(length_groups(&same, 50).len(), 1);
        assert!(length_groups(&[], 50).is_empty());
    }

    #[test]
    fn a_batch_in_length_groups_has_the_loss_of_the_batch_padded_whole() {
        let _rng = crate::device::rng_lock();
        tch::manual_seed(2);
        let (_vs, m, f) = crate::model::seqrec::tiny_model(30, 8);
        let ctx = Ctx {
            model: &m,
            feats: &f,
            bounded: None,
            negatives: None,
            device: tch::Device::Cpu,
            max_len: 8,
            batch_size: 16,
            logit_rows: 64,
            logits: LogitScratch::default(),
            batches: crate::config::BatchOrder::Mixed,
            n_items: 30,
        };
        let seqs: Vec<Vec<i64>> = (0..16)
            .map(|u| (0..if u % 5 == 0 { 9 } else { 2 + u % 3 }).map(|i| 1 + (u + 3 * i) % 29).collect())
            .collect();
        let batch: Vec<&[i64]> = seqs.iter().map(Vec::as_slice).collect();
        let groups = vec![batch[..5].to_vec(), batch[5..].to_vec()];
        for loss in [Loss::Full, Loss::Sampled(6)] {
            tch::manual_seed(5);
            let whole = ctx.next_item_loss(std::slice::from_ref(&batch), loss).value.double_value(&[]);
            tch::manual_seed(5);
            let parts = ctx.next_item_loss(&groups, loss).value.double_value(&[]);
            assert!(whole.is_finite() && (whole - parts).abs() < 1e-5, "{loss:?}: {whole} vs {parts}");
        }
    }

    #[test]
    fn patience_grows_with_validation_noise_within_bounds() {
        // A large validation sample: the configured patience.
        assert_eq!(noisy_patience(5, 20, 0.0012, 0.0025), 5);
        assert_eq!(noisy_patience(5, 20, 0.0025, 0.0025), 5);
        // MovieLens-100k-sized (943 users, standard error ~0.0085): 17.
        assert_eq!(noisy_patience(5, 20, 0.0085, 0.0025), 17);
        // Very noisy: capped; a patience above the cap is kept.
        assert_eq!(noisy_patience(5, 20, 0.05, 0.0025), 20);
        assert_eq!(noisy_patience(30, 20, 0.05, 0.0025), 30);
        assert_eq!(noisy_patience(5, 20, f64::NAN, 0.0025), 5);
    }
    use crate::config::{Config, DEFAULT_CONFIG_TOML};

    /// Users walk a ring of items: after item i comes item i + 1.
    fn ring(users: usize, items: usize, len: usize) -> SeqData {
        let seqs: Vec<Vec<i64>> =
            (0..users).map(|u| (0..len).map(|s| ((u * 7 + s) % items) as i64 + 1).collect()).collect();
        let text_dim = 4;
        let mut text = vec![0f32; (items + 1) * text_dim];
        for i in 1..=items {
            text[i * text_dim + i % text_dim] = 1.0;
        }
        SeqData {
            users: (0..users).map(|u| format!("u{u}")).collect(),
            holdout: vec![(1, 1); users],
            seqs,
            item_ids: (1..=items).map(|i| format!("i{i}")).collect(),
            text,
            text_dim,
            image: None,
            image_dim: 0,
        }
    }

    #[test]
    fn sampled_loss_over_the_batch_items_equals_the_loss_over_the_whole_table() {
        let _rng = crate::device::rng_lock();
        tch::manual_seed(1);
        let (_vs, m, f) = crate::model::seqrec::tiny_model(30, 5);
        // Padding, a [MASK] (30), and a negative equal to a target (8).
        let x = Tensor::from_slice(&[0i64, 3, 7, 9, 2, 0, 0, 5, 30, 4]).view([2, 5]);
        let y = Tensor::from_slice(&[0i64, 0, 8, 0, 0, 0, 0, 0, 6, 0]).view([2, 5]);
        let neg = Tensor::from_slice(&[1i64, 8, 12, 29]);
        let whole = m.with_mask(&m.item_table(&f));
        let (h, t) = scored_positions(&m.encode(&x, &whole, false, false), &y);
        let a = sampled_softmax_loss(&h, &t, &whole, &neg, None, false).value.double_value(&[]);
        let (table, local, _) = local_table(&m, &f, &[&x, &y, &neg]);
        assert!(table.size()[0] < 31, "the local table holds the whole catalog");
        let (h, t) = scored_positions(&m.encode(&local[0], &table, false, false), &local[1]);
        let b = sampled_softmax_loss(&h, &t, &table, &local[2], None, false).value.double_value(&[]);
        assert!(a.is_finite() && (a - b).abs() < 1e-5, "{a} vs {b}");
    }

    /// The sampled softmax written for autograd (each logit less
    /// `log_draws` when given): asserts that `ours` (whose objective has
    /// been differentiated into `h` and `items`) has its value and
    /// gradients; returns the reference loss and a max-difference measure.
    fn same_as_autograd(
        ours: &StepLoss,
        h: &Tensor,
        items: &Tensor,
        y: &Tensor,
        neg: &Tensor,
        log_draws: Option<&Tensor>,
    ) -> (Tensor, fn(&Tensor, &Tensor) -> f64) {
        let (h2, items2) = (h.detach().copy().set_requires_grad(true), items.detach().copy().set_requires_grad(true));
        let mut pos = (&h2 * items2.index_select(0, y)).sum_dim_intlist(-1, true, Kind::Double);
        let mut negl = h2.matmul(&items2.index_select(0, neg).tr());
        if let Some(c) = log_draws {
            pos -= c.index_select(0, y).unsqueeze(-1);
            negl -= c.index_select(0, neg).unsqueeze(0);
        }
        let negl = negl.masked_fill(&y.unsqueeze(-1).eq_tensor(&neg.unsqueeze(0)), f64::NEG_INFINITY);
        let logits = Tensor::cat(&[pos, negl], -1);
        let zero = Tensor::zeros([y.size()[0]], (Kind::Int64, tch::Device::Cpu));
        let reference = logits.cross_entropy_loss::<Tensor>(&zero, None, tch::Reduction::Mean, -100, 0.0);
        reference.backward();
        fn close(a: &Tensor, b: &Tensor) -> f64 {
            (a - b).abs().max().double_value(&[])
        }
        assert!(close(&ours.value, &reference) < 1e-12, "{} vs {}", ours.value, reference);
        assert!(close(&h.grad(), &h2.grad()) < 1e-12, "state gradients differ");
        assert!(close(&items.grad(), &items2.grad()) < 1e-12, "item gradients differ");
        (reference, close)
    }

    #[test]
    fn the_logq_corrected_sampled_softmax_is_autograds_too() {
        let _rng = crate::device::rng_lock();
        tch::manual_seed(5);
        let opts = (Kind::Double, tch::Device::Cpu);
        let h = Tensor::randn([6, 4], opts).set_requires_grad(true);
        let items = Tensor::randn([10, 4], opts).set_requires_grad(true);
        let y = Tensor::from_slice(&[3i64, 1, 8, 3, 5, 2]);
        let neg = Tensor::from_slice(&[8i64, 4, 6, 9]);
        let log_draws = Tensor::randn([10], opts);
        let ours = sampled_softmax_loss(&h, &y, &items, &neg, Some(&log_draws), false);
        ours.objective.backward();
        let (reference, close) = same_as_autograd(&ours, &h, &items, &y, &neg, Some(&log_draws));
        // Without the correction the loss differs: it is not ignored.
        let plain = sampled_softmax_loss(&h.detach(), &y, &items.detach(), &neg, None, false);
        assert!(close(&plain.value, &reference) > 1e-3);
    }

    #[test]
    fn popularity_negatives_follow_counts() {
        let data = ring(10, 12, 8);
        let users: Vec<usize> = (0..data.seqs.len()).collect();
        let (w, log_draws) = popularity_negatives(&data, &users, data.n_items(), 100, tch::Device::Cpu);
        let w: Vec<f32> = Vec::try_from(&w).unwrap();
        let c: Vec<f32> = Vec::try_from(&log_draws).unwrap();
        assert_eq!(w[0], 0.0, "padding is never drawn");
        assert!(w[1..].iter().all(|x| *x >= 1.0));
        // Expected draws sum to the number of negatives.
        assert_eq!(c.len(), w.len() + 1, "a row for [MASK]");
        let total: f64 = c[1..w.len()].iter().map(|x| f64::from(*x).exp()).sum();
        assert!((total - 100.0).abs() < 1e-3, "{total}");
    }

    #[test]
    fn the_sampled_softmax_gradient_is_autograds() {
        let _rng = crate::device::rng_lock();
        tch::manual_seed(3);
        let opts = (Kind::Double, tch::Device::Cpu);
        let leaves = || {
            (Tensor::randn([7, 5], opts).set_requires_grad(true), Tensor::randn([12, 5], opts).set_requires_grad(true))
        };
        // Targets 4 and 9 are also negatives (9 twice); 4 is the target twice.
        let y = Tensor::from_slice(&[4i64, 1, 9, 4, 11, 2, 6]);
        let neg = Tensor::from_slice(&[9i64, 3, 4, 9, 7, 10]);
        let (h, items) = leaves();
        let ours = sampled_softmax_loss(&h, &y, &items, &neg, None, false);
        ours.objective.backward();
        let (reference, close) = same_as_autograd(&ours, &h, &items, &y, &neg, None);
        assert!(items.grad().abs().sum(Kind::Double).double_value(&[]) > 0.1);
        // bf16 products (rows padded to 64 inside): within bf16 rounding.
        let (hf, itf) = (h.detach().to_kind(Kind::Float).set_requires_grad(true), items.detach().to_kind(Kind::Float));
        let itf = itf.set_requires_grad(true);
        let low = sampled_softmax_loss(&hf, &y, &itf, &neg, None, true);
        low.objective.backward();
        let rel = |a: &Tensor, b: &Tensor| close(&a.to_kind(Kind::Double), b) / b.abs().max().double_value(&[]);
        assert!(rel(&low.value, &reference) < 0.02, "bf16 loss {} vs {}", low.value, reference);
        assert!(rel(&hf.grad(), &h.grad()) < 0.03, "bf16 state gradients off by {}", rel(&hf.grad(), &h.grad()));
        assert!(
            rel(&itf.grad(), &items.grad()) < 0.03,
            "bf16 item gradients off by {}",
            rel(&itf.grad(), &items.grad())
        );
        // As many negatives as padded rows (7 -> 64): shapes must not be confused.
        let neg64 = Tensor::randint_low(1, 12, [64], (Kind::Int64, tch::Device::Cpu));
        let (hf, itf) = (hf.detach().set_requires_grad(true), itf.detach().set_requires_grad(true));
        let low = sampled_softmax_loss(&hf, &y, &itf, &neg64, None, true);
        low.objective.backward();
        let exact = sampled_softmax_loss(&h.detach(), &y, &items.detach(), &neg64, None, false);
        assert!(rel(&low.value, &exact.value) < 0.02, "bf16 loss {} vs {}", low.value, exact.value);
        assert_eq!(hf.grad().size(), [7, 5]);
        assert_eq!(itf.grad().size(), [12, 5]);
    }

    #[test]
    fn the_full_softmax_gradient_is_autograds() {
        let _rng = crate::device::rng_lock();
        tch::manual_seed(4);
        let y = Tensor::from_slice(&[4i64, 1, 9, 4, 11, 2, 6]);
        for bf16 in [false, true] {
            let kind = if bf16 { Kind::Float } else { Kind::Double };
            let h = Tensor::randn([7, 5], (kind, tch::Device::Cpu)).set_requires_grad(true);
            let items = Tensor::randn([12, 5], (kind, tch::Device::Cpu)).set_requires_grad(true);
            let ours = full_softmax_loss(&h, &y, &items, bf16, 64, &LogitScratch::default());
            ours.objective.backward();
            let (h2, items2) = (h.detach().to_kind(Kind::Double), items.detach().to_kind(Kind::Double));
            let (h2, items2) = (h2.set_requires_grad(true), items2.set_requires_grad(true));
            let reference =
                h2.matmul(&items2.tr()).cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0);
            reference.backward();
            let tol = if bf16 { 0.03 } else { 1e-12 };
            let rel = |a: &Tensor, b: &Tensor| {
                (a.to_kind(Kind::Double) - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
            };
            assert!(rel(&ours.value, &reference) < tol, "bf16 {bf16}: loss {} vs {}", ours.value, reference);
            assert!(rel(&h.grad(), &h2.grad()) < tol, "bf16 {bf16}: state gradients differ");
            assert!(rel(&items.grad(), &items2.grad()) < tol, "bf16 {bf16}: item gradients differ");
            // Scored in chunks of 3, 2 and 1 positions: the same loss and gradients.
            let scratch = LogitScratch::default();
            for chunk in [3, 2, 1] {
                let (hc, ic) = (h.detach().set_requires_grad(true), items.detach().set_requires_grad(true));
                let part = full_softmax_loss(&hc, &y, &ic, bf16, chunk, &scratch);
                part.objective.backward();
                // (bf16: each chunk's product is rounded to bf16 on its own.)
                let same = |a: &Tensor, b: &Tensor| rel(a, &b.to_kind(Kind::Double)) < if bf16 { 0.01 } else { 1e-12 };
                assert!(same(&part.value, &ours.value), "chunks of {chunk}: loss differs");
                assert!(same(&hc.grad(), &h.grad()), "chunks of {chunk}: state gradients differ");
                assert!(same(&ic.grad(), &items.grad()), "chunks of {chunk}: item gradients differ");
            }
        }
    }

    #[test]
    fn the_full_softmax_keeps_the_batch_and_chunks_its_logits() {
        let mut m = Config::from_toml_with_env(DEFAULT_CONFIG_TOML, "test", &[]).unwrap().model;
        m.batch_size = 128;
        // A 40k-item catalogue no longer shrinks the batch (it made 44) ...
        assert_eq!(batch_size(&m, 50, true), 128);
        // ... its logits are scored in chunks within the budget, whole bf16 row blocks ...
        let rows = logit_chunk_rows(crate::resources::MemoryBudget::mib(1024), 40_001);
        assert_eq!(rows % 64, 0);
        assert!(rows as usize * 40_001 * 8 <= 1024 * 1024 * 1024 && rows >= 2_048, "{rows}");
        // ... at least one block, however large the catalogue ...
        assert_eq!(logit_chunk_rows(crate::resources::MemoryBudget::mib(1), 10_000_000), 64);
        // ... while the sampled softmax's batch is still capped by its logits.
        m.memory_budget_mb = 64;
        assert_eq!(batch_size(&m, 50, false), 64 * 1024 * 1024 / (50 * 2049 * 12));
    }

    #[test]
    fn auto_loss_is_chosen_by_cost() {
        let mut m = Config::from_toml_with_env(DEFAULT_CONFIG_TOML, "test", &[]).unwrap().model;
        m.loss = LossKind::Auto;
        let big = 9_000_000;
        // MovieLens-sized catalogs are cheap enough for the full softmax ...
        assert!(full_softmax_chosen(&m, 1_683, 50, big).0);
        assert!(full_softmax_chosen(&m, 10_001, 50, big).0);
        // ... a shop's catalog with a shop's log is not, with these dimensions ...
        assert!(!full_softmax_chosen(&m, 100_001, 50, big).0);
        // ... unless the log is small enough for a full epoch to be cheap
        // (300k positions x 55k items x 64 = 1.06e12 multiply-adds) ...
        assert!(full_softmax_chosen(&m, 55_001, 50, 300_000).0);
        assert!(!full_softmax_chosen(&m, 55_001, 50, 3_000_000).0);
        // ... or the transformer is much more expensive per position.
        m.dim = 512;
        m.layers = 4;
        assert!(full_softmax_chosen(&m, 100_001, 50, big).0);
        m.loss = LossKind::Full;
        assert!(full_softmax_chosen(&m, 10_000_000, 50, big).0);
        m.loss = LossKind::Sampled;
        assert!(!full_softmax_chosen(&m, 10, 50, 1).0);
    }

    #[test]
    fn batches_are_random_under_the_full_softmax_and_by_length_under_the_sampled_one() {
        use crate::config::BatchOrder;
        let defaults = Config::from_toml_with_env(DEFAULT_CONFIG_TOML, "t", &[]).map(|c| c.model).unwrap();
        assert_eq!(defaults.batches, BatchOrder::Auto);
        let (order, why) = batches_chosen(&defaults, true);
        assert!(order == BatchOrder::Mixed && why.contains("full softmax"), "{why}");
        let (order, why) = batches_chosen(&defaults, false);
        assert!(order == BatchOrder::ByLength && why.contains("sampled softmax"), "{why}");
        // As configured, whatever the softmax.
        for (set, full) in [(BatchOrder::Mixed, false), (BatchOrder::ByLength, true)] {
            let (order, why) = batches_chosen(&ModelConfig { batches: set, ..defaults.clone() }, full);
            assert!(order == set && why.contains("model.batches"), "{why}");
        }
    }

    #[test]
    fn pretraining_runs_only_from_scratch_on_a_dense_log_and_says_why() {
        let cfg = opts(10, 5).model;
        let dense = ModelConfig { pretrain_min_history: 50.0, ..cfg.clone() };
        let (epochs, why) = pretraining_chosen(&dense, 6.6, false);
        assert_eq!(epochs, 0);
        assert!(why.contains("6.6") && why.contains("sparse"), "{why}");
        let (epochs, why) = pretraining_chosen(&dense, 104.0, false);
        assert_eq!(epochs, 10);
        assert!(why.contains("dense"), "{why}");
        assert_eq!(pretraining_chosen(&dense, 104.0, true), (0, "warm start".into()));
        assert_eq!(pretraining_chosen(&ModelConfig { pretrain_epochs: 0, ..dense }, 104.0, false).0, 0);
        // 0: whenever pretrain_epochs asks for it.
        let (epochs, why) = pretraining_chosen(&cfg, 1.0, false);
        assert!(epochs == 10 && why.contains("always"), "{why}");
        // The defaults: sparse shop logs (Amazon, ~7 steps) are not pretrained, MovieLens (~100) is.
        let defaults = Config::from_toml_with_env(DEFAULT_CONFIG_TOML, "t", &[]).map(|c| c.model).unwrap();
        assert_eq!(pretraining_chosen(&defaults, 6.6, false).0, 0);
        assert_eq!(pretraining_chosen(&defaults, 104.0, false).0, defaults.pretrain_epochs);
    }

    fn opts(pretrain: usize, epochs: usize) -> TrainOptions {
        let mut model = Config::from_toml_with_env(DEFAULT_CONFIG_TOML, "t", &[]).map(|c| c.model).unwrap();
        model.dim = 16;
        model.layers = 1;
        model.heads = 2;
        model.dropout = 0.0;
        model.pretrain_epochs = pretrain;
        model.pretrain_min_history = 0.0;
        model.epochs = epochs;
        model.patience = epochs;
        model.batch_size = 32;
        model.learning_rate = 0.01;
        model.refit_epochs = 0;
        model.text_delta_max_norm = 0.0;
        model.id_dropout = 0.0;
        TrainOptions { model, max_len: 8, seed: 7, threads: 1 }
    }

    #[test]
    fn windows_tile_long_histories_with_one_item_overlap() {
        let _rng = crate::device::rng_lock();
        let mut data = ring(2, 50, 12);
        data.seqs[1] = (1..=3).collect();
        let w = windows(&data, &[0, 1], Part::Train, 4);
        // User 0 trains on 10 steps: [5..10), [1..6) overlapping by one,
        // then [0..2); user 1 has one training step: nothing to predict.
        assert_eq!(w, vec![&data.seqs[0][5..10], &data.seqs[0][1..6], &data.seqs[0][0..2]]);
    }

    #[test]
    fn a_tiny_model_learns_the_ring_deterministically() {
        let _rng = crate::device::rng_lock();
        let data = ring(64, 20, 12);
        let a = train(&data, &opts(2, 30), tch::Device::Cpu, None).unwrap();
        let first = a.report.finetune[0].loss;
        let last = a.report.finetune.last().unwrap().loss;
        assert!(last < 1.0 && last < first / 3.0, "fine-tuning loss {first} -> {last}");
        assert!(a.report.pretrain[1].loss < a.report.pretrain[0].loss, "{:?}", a.report.pretrain);
        assert!(a.report.best_valid_ndcg > 0.9, "valid NDCG@10 {}", a.report.best_valid_ndcg);
        let b = train(&data, &opts(2, 30), tch::Device::Cpu, None).unwrap();
        let losses = |t: &Trained| t.report.finetune.iter().map(|e| e.loss).collect::<Vec<_>>();
        assert_eq!(losses(&a), losses(&b), "same seed, different training");
    }

    #[test]
    fn the_refit_learns_the_latest_steps_and_the_holdout_model_never_sees_a_test_step() {
        let _rng = crate::device::rng_lock();
        // Every user's last step (the test step) is item 21, seen nowhere else.
        let mut data = ring(64, 20, 12);
        for s in &mut data.seqs {
            *s.last_mut().unwrap() = 21;
        }
        data.item_ids.push("i21".into());
        data.text.extend([0.0; 4]);
        let all: Vec<usize> = (0..64).collect();
        let held: Vec<i64> = windows(&data, &all, Part::BeforeTest, 8).concat();
        assert!(!held.contains(&21) && windows(&data, &all, Part::All, 8).concat().contains(&21));
        // Rank of item 21 after each user's steps before the test one.
        let feats = data.features(tch::Device::Cpu);
        let rank_of_21 = |m: &SeqRec| -> f64 {
            tch::no_grad(|| {
                let inputs: Vec<&[i64]> = (0..64).map(|u| data.split(u).before_test).collect();
                let items = m.item_table(&feats);
                let s = m.encode_last(&left_pad(&inputs, 8, tch::Device::Cpu), &items).matmul(&items.tr());
                let target = s.narrow(1, 21, 1);
                s.gt_tensor(&target).sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float).double_value(&[])
            })
        };
        // Regression: one seed against a fixed bound of 2.0 failed on a
        // machine whose kernels gave 2.11 (seeds 1-7 give 1.8-4.1 for the
        // published model, 10-11.6 for the holdout one): compare the two
        // over three seeds, with the margin the spread leaves.
        let (mut published, mut held_out) = (Vec::new(), Vec::new());
        for seed in [7, 1, 2] {
            let mut o = opts(0, 20);
            o.seed = seed;
            o.model.refit_epochs = 3;
            let t = train(&data, &o, tch::Device::Cpu, None).unwrap();
            assert_eq!(t.report.refit.len(), 3);
            let holdout = t.holdout.as_ref().expect("a refit keeps the holdout model");
            published.push(rank_of_21(&t.model));
            restore(&t.vs, holdout);
            held_out.push(rank_of_21(&t.model));
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (p, h) = (mean(&published), mean(&held_out));
        assert!(
            p < h / 3.0 && published.iter().zip(&held_out).all(|(p, h)| p < &(h / 2.0)),
            "the published model did not learn the latest steps: mean rank {published:?} (holdout {held_out:?})"
        );
        assert!(h > 6.0, "the holdout model ranks the never-seen test item at {held_out:?}");
        let none = train(&data, &opts(0, 2), tch::Device::Cpu, None).unwrap();
        assert!(none.holdout.is_none() && none.report.refit.is_empty());
    }

    #[test]
    fn items_never_trained_on_get_the_mean_row_of_those_trained_on() {
        let ids = Tensor::from_slice(&[9f32, 9., 1., 2., 3., 6., 7., 7., 5., 5.]).view([5, 2]);
        fill_unseen_rows(&ids, &[false, true, false, true, false]);
        let got: Vec<f32> = Vec::try_from(ids.view([-1])).unwrap();
        // Row 0 (padding) untouched; rows 2 and 4 get the mean of rows 1 and 3.
        assert_eq!(got, vec![9., 9., 1., 2., 4., 4.5, 7., 7., 4., 4.5]);
        let mut data = ring(4, 10, 6);
        data.item_ids.push("i11".into());
        data.text.extend([0.0; 4]);
        let seen = seen_items(&data, Part::All);
        assert_eq!(seen.len(), 12);
        assert!(!seen[0] && !seen[11] && seen[1..11].iter().filter(|s| **s).count() > 0);
    }

    #[test]
    fn bounded_deltas_hold_after_training_with_either_softmax() {
        let _rng = crate::device::rng_lock();
        let data = ring(64, 20, 12);
        let users: Vec<usize> = (0..64).collect();
        let counts = item_counts(&data, &users, data.n_items());
        for (loss, evidence) in [(LossKind::Full, 0.0), (LossKind::Sampled, 0.0), (LossKind::Full, 4.0)] {
            let mut o = opts(1, 4);
            o.model.loss = loss;
            o.model.sampled_negatives = 4;
            o.model.text_delta_max_norm = 0.05;
            o.model.text_delta_evidence = evidence;
            o.model.refit_epochs = 1;
            let t = train(&data, &o, tch::Device::Cpu, None).unwrap();
            for w in [
                t.vs.variables()[ITEM_ROWS].shallow_clone(),
                t.holdout.as_ref().unwrap().iter().find(|(k, _)| k == ITEM_ROWS).unwrap().1.shallow_clone(),
            ] {
                let norms: Vec<f64> =
                    Vec::try_from(w.norm_scalaropt_dim(2.0, [1], false).to_kind(Kind::Double)).unwrap();
                for i in 1..=20 {
                    // With evidence, an item seen n times may move 0.05 × √(1 + n / 4).
                    let bound = if evidence > 0.0 { 0.05 * (1.0 + counts[i] / evidence).sqrt() } else { 0.05 };
                    assert!(
                        norms[i] <= bound + 1e-5,
                        "{loss:?}, evidence {evidence}: item {i} seen {} times has a delta of norm {} (bound {bound})",
                        counts[i],
                        norms[i]
                    );
                }
                // The deltas reach the common bound, and pass it where evidence allows.
                let max = norms[1..=20].iter().copied().fold(0.0, f64::max);
                let least = if evidence > 0.0 { 0.06 } else { 0.04 };
                assert!(max > least, "{loss:?}, evidence {evidence}: largest delta norm {max}");
            }
        }
    }

    #[test]
    fn sampled_softmax_learns_too() {
        let _rng = crate::device::rng_lock();
        let data = ring(64, 20, 12);
        for precision in [Precision::Fp32, Precision::Bf16] {
            let mut o = opts(0, 60);
            o.model.loss = LossKind::Sampled;
            o.model.sampled_negatives = 8;
            o.model.precision = precision;
            let t = train(&data, &o, tch::Device::Cpu, None).unwrap();
            assert!(!t.report.full_softmax);
            assert_eq!(t.report.bf16, precision == Precision::Bf16);
            assert!(t.report.best_valid_ndcg > 0.8, "{precision:?}: valid NDCG@10 {}", t.report.best_valid_ndcg);
        }
    }

    #[test]
    fn warm_start_maps_item_rows_by_id() {
        let _rng = crate::device::rng_lock();
        let data = ring(32, 10, 10);
        let t = train(&data, &opts(0, 3), tch::Device::Cpu, None).unwrap();
        let meta = CheckpointMeta {
            model: t.model.config().clone(),
            item_ids: data.item_ids.clone(),
            epochs: 3,
            best_valid_ndcg10: 0.0,
            version: String::new(),
            holdout: false,
            files: Vec::new(),
        };
        let tensors: Vec<(String, Tensor)> = t.vs.variables().into_iter().collect();
        let warm = WarmStart { date: "2026-11-20".parse().unwrap(), meta, tensors };
        // Tomorrow: item i1 is gone, i11 is new, the rest keep their ids.
        let mut next = ring(32, 10, 10);
        next.item_ids = (2..=11).map(|i| format!("i{i}")).collect();
        let mut o = opts(0, 1);
        o.model.warm_start_epochs = 1;
        o.model.learning_rate = 1e-9;
        let w = train(&next, &o, tch::Device::Cpu, Some(&warm)).unwrap();
        assert_eq!(w.report.warm_start, Some(("2026-11-20".into(), 9, 1, 1)));
        assert!(w.report.pretrain.is_empty());
        let old = t.vs.variables()["item_id.weight"].shallow_clone();
        let new = w.vs.variables()["item_id.weight"].shallow_clone();
        // Old row 2 (item i2) is new row 1; a learning rate of ~0 keeps it.
        let diff = (old.get(2) - new.get(1)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "item i2's row moved by {diff}");
        // Warm-started training stops at its own, shorter patience.
        let mut o = opts(0, 10);
        o.model.warm_start_epochs = 10;
        o.model.warm_start_patience = 1;
        o.model.learning_rate = 1e-9;
        let w = train(&next, &o, tch::Device::Cpu, Some(&warm)).unwrap();
        assert_eq!(w.report.finetune.len(), w.report.best_epoch + 1, "{:?}", w.report.finetune);
    }
}
