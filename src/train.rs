//! Stage `train`: `sequences` + `item_text_embeddings` → checkpoint.
//!
//! Next-item prediction with softmax cross-entropy over the whole catalog
//! at every position of each user's training sequence (their last two steps
//! are held out for validation and test), AdamW with gradient clipping, and
//! early stopping on validation NDCG@10; the best epoch's weights are kept.
//! Deterministic on CPU for a given `run.seed` and thread count.
//!
//! Safe to re-run: the checkpoint is replaced whole.

use tch::{Tensor, nn, nn::OptimizerConfig};

use crate::checkpoint::{self, CheckpointMeta};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::metrics::RankSums;
use crate::model::{SeqRec, SeqRecConfig};
use crate::rng::Rng;
use crate::seqdata::{self, SeqData, left_pad};

/// Validation users evaluated after each epoch (a fixed sample).
const MAX_VALID_USERS: usize = 5000;

/// Mean validation NDCG@10 of a model (history masked).
pub fn validate(
    model: &SeqRec,
    data: &SeqData,
    text: &Tensor,
    users: &[usize],
    max_len: usize,
    device: tch::Device,
) -> RankSums {
    let mut sums = RankSums::default();
    tch::no_grad(|| {
        let items = model.item_table(text);
        for chunk in users.chunks(256) {
            let inputs: Vec<&[i64]> = chunk.iter().map(|u| data.split(*u).train).collect();
            let targets: Vec<i64> = chunk.iter().filter_map(|u| data.split(*u).valid.first().copied()).collect();
            if targets.len() != inputs.len() {
                continue;
            }
            let x = left_pad(&inputs, max_len, device);
            let h = model.encode_last(&x, &items);
            let scores = h.matmul(&items.tr());
            let hist = left_pad(&inputs, usize::MAX, device);
            sums.add(&scores, &Tensor::from_slice(&targets).to_device(device), &hist, 10);
        }
    });
    sums
}

/// Run the stage.
pub async fn run(job: &Job, device: tch::Device) -> Result<(CheckpointMeta, Vec<(String, String)>)> {
    let data = seqdata::load(job).await?;
    let cfg = &job.cfg.model;
    let max_len = job.cfg.trainset.max_sequence_length;
    let n_items = data.n_items();
    crate::device::init(job.cfg.run.seed, crate::engine::threads(&job.cfg));

    let train_users: Vec<usize> = (0..data.seqs.len()).filter(|u| data.split(*u).train.len() >= 2).collect();
    let mut valid_users: Vec<usize> =
        (0..data.seqs.len()).filter(|u| !data.split(*u).valid.is_empty() && !data.split(*u).train.is_empty()).collect();
    if train_users.is_empty() {
        return Err(Error::DataQuality(format!(
            "no user has enough history to train on ({} users with sequences; need 4+ steps)",
            data.seqs.len()
        )));
    }
    let mut rng = Rng::new(job.cfg.run.seed);
    rng.shuffle(&mut valid_users);
    valid_users.truncate(MAX_VALID_USERS);

    let mcfg = SeqRecConfig {
        n_items,
        dim: cfg.dim,
        heads: cfg.heads,
        layers: cfg.layers,
        max_len: max_len as i64,
        dropout: cfg.dropout,
        text_dim: data.text_dim as i64,
    };
    let mut vs = nn::VarStore::new(device);
    let model = SeqRec::new(&vs.root(), &mcfg);
    let mut opt = nn::AdamW { wd: cfg.weight_decay, ..Default::default() }
        .build(&vs, cfg.learning_rate)
        .map_err(|e| Error::torch("creating the optimiser", e))?;
    let text = data.text_tensor(device);

    // Cap the batch so that the [batch, length, items] logits stay within
    // the memory budget (forward + backward ≈ 3 copies of f32).
    let budget = cfg.memory_budget_mb.saturating_mul(1024 * 1024) as f64;
    let per_seq = (max_len as f64) * (n_items as f64) * 4.0 * 3.0;
    let batch_size = cfg.batch_size.min((budget / per_seq).floor().max(1.0) as usize);

    let mut best = (f64::NEG_INFINITY, 0usize);
    let mut best_weights: Vec<(String, Tensor)> = Vec::new();
    let mut order = train_users.clone();
    let mut epochs_run = 0;
    for epoch in 1..=cfg.epochs {
        let started = std::time::Instant::now();
        rng.shuffle(&mut order);
        let (mut loss_sum, mut batches) = (0f64, 0usize);
        for chunk in order.chunks(batch_size) {
            let parts: Vec<&[i64]> = chunk.iter().map(|u| data.split(*u).train).collect();
            let inputs: Vec<&[i64]> = parts.iter().map(|p| &p[..p.len() - 1]).collect();
            let targets: Vec<&[i64]> = parts.iter().map(|p| &p[1..]).collect();
            let x = left_pad(&inputs, max_len, device);
            let y = left_pad(&targets, max_len, device);
            let items = model.item_table(&text);
            let logits = model.encode(&x, &items, true).matmul(&items.tr());
            let loss = logits.view([-1, n_items]).cross_entropy_loss::<Tensor>(
                &y.view([-1]),
                None,
                tch::Reduction::Mean,
                0,
                0.0,
            );
            opt.backward_step_clip_norm(&loss, cfg.grad_clip);
            loss_sum += loss.double_value(&[]);
            batches += 1;
        }
        epochs_run = epoch;
        let v = validate(&model, &data, &text, &valid_users, max_len, device);
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            epoch,
            loss = loss_sum / batches.max(1) as f64,
            valid_ndcg10 = v.ndcg(),
            seqs_per_s = (order.len() as f64 / secs) as u64,
            seconds = secs,
            "epoch"
        );
        if v.ndcg() > best.0 {
            best = (v.ndcg(), epoch);
            best_weights = vs.variables().into_iter().map(|(k, t)| (k, t.detach().copy())).collect();
        } else if epoch - best.1 >= cfg.patience {
            tracing::info!(epoch, best_epoch = best.1, "early stop: validation NDCG@10 stopped improving");
            break;
        }
    }
    if !best_weights.is_empty() {
        let vars = vs.variables();
        tch::no_grad(|| {
            for (k, t) in &best_weights {
                if let Some(v) = vars.get(k) {
                    let mut v = v.shallow_clone();
                    v.copy_(t);
                }
            }
        });
    }
    vs.freeze();
    let meta = CheckpointMeta {
        model: mcfg,
        item_ids: data.item_ids.clone(),
        epochs: epochs_run,
        best_valid_ndcg10: best.0.max(0.0),
        version: String::new(),
    };
    let meta = checkpoint::save(job, &vs, meta).await?;
    let facts = vec![
        ("training sequences".into(), train_users.len().to_string()),
        ("epochs (best)".into(), format!("{} ({})", epochs_run, best.1)),
        ("valid NDCG@10".into(), format!("{:.4}", meta.best_valid_ndcg10)),
        ("model version".into(), meta.version.clone()),
    ];
    Ok((meta, facts))
}
