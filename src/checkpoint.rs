//! Model checkpoints: safetensors weights plus a JSON file with the model
//! config and the item id map, under `_work/dt=…/checkpoint/`. With a
//! refit (`model.refit_epochs`) a second set of weights sits beside the
//! published model's: the holdout model, trained on every step but the test
//! ones, which the offline evaluation scores and the next date's warm start
//! continues from (see `crate::train`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Tensor, nn};

use crate::config::{RunDate, hex};
use crate::error::{DfContext, Error, Result};
use crate::job::Job;
use crate::model::{SeqRec, SeqRecConfig};
use crate::{layout, state};

/// What a checkpoint says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Model shape.
    pub model: SeqRecConfig,
    /// `item_ids[i]` is the item with index `i + 1` (0 is padding).
    pub item_ids: Vec<String>,
    /// Epochs trained.
    pub epochs: usize,
    /// Best validation NDCG@10 seen during training.
    pub best_valid_ndcg10: f64,
    /// sha256 prefix of the weights: the model version in lineage.
    pub version: String,
    /// Whether holdout weights were saved beside the published ones.
    #[serde(default)]
    pub holdout: bool,
}

/// Which of a checkpoint's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// The published model's (embed, candidates).
    Published,
    /// The holdout model's when the checkpoint has one, else the published
    /// model's (evaluate, warm start).
    Holdout,
}

fn weights_path(date: RunDate, meta: &CheckpointMeta, which: Weights) -> String {
    if which == Weights::Holdout && meta.holdout {
        layout::checkpoint_holdout_weights(date)
    } else {
        layout::checkpoint_weights(date)
    }
}

fn local_tmp(job: &Job) -> Result<std::path::PathBuf> {
    let dir = crate::engine::spill_dir(&job.cfg).join(format!("ckpt-{}", job.run_id));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
    Ok(dir)
}

/// Save weights (and the holdout model's, when given) and metadata, the
/// metadata last; returns it with the model version.
pub async fn save(
    job: &Job,
    vs: &nn::VarStore,
    holdout: Option<&[(String, Tensor)]>,
    mut meta: CheckpointMeta,
) -> Result<CheckpointMeta> {
    let dir = local_tmp(job)?;
    let file = dir.join("model.safetensors");
    let saved = vs.save(&file).ctx(format!("saving weights to {}", file.display()));
    let data = saved.and_then(|_| std::fs::read(&file).map_err(|e| Error::io(file.display(), e)));
    let held = holdout.map(|h| {
        let file = dir.join("holdout.safetensors");
        Tensor::write_safetensors(h, &file)
            .ctx(format!("saving weights to {}", file.display()))
            .and_then(|_| std::fs::read(&file).map_err(|e| Error::io(file.display(), e)))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let data = data?;
    meta.version = hex(&Sha256::digest(&data))[..16].to_string();
    meta.holdout = held.is_some();
    job.output.put(&job.output.path(&layout::checkpoint_weights(job.date)), Bytes::from(data)).await?;
    if let Some(h) = held {
        job.output.put(&job.output.path(&layout::checkpoint_holdout_weights(job.date)), Bytes::from(h?)).await?;
    }
    state::write(&job.output, &layout::checkpoint_meta(job.date), &meta).await?;
    Ok(meta)
}

/// An earlier date's checkpoint to start training from.
pub struct WarmStart {
    /// The date it was trained for.
    pub date: RunDate,
    /// Its metadata (shape, item id map).
    pub meta: CheckpointMeta,
    /// Its weights by variable name, on the CPU.
    pub tensors: Vec<(String, Tensor)>,
}

/// The most recent checkpoint of a date before this run's, at most
/// `model.warm_start_max_age_days` old, if any: its date and metadata.
pub async fn previous_meta(job: &Job) -> Result<Option<(RunDate, CheckpointMeta)>> {
    let oldest = job.date.minus_days(job.cfg.model.warm_start_max_age_days);
    let dates = layout::dates(&job.output, layout::WORK).await?;
    for date in dates.into_iter().rev().filter(|d| *d < job.date && *d >= oldest) {
        // Unreadable metadata is no checkpoint (crate::state): an older one may serve.
        if let Some(meta) = state::read::<CheckpointMeta>(&job.output, &layout::checkpoint_meta(date)).await? {
            return Ok(Some((date, meta)));
        }
    }
    Ok(None)
}

/// The metadata of the checkpoint trained for this run's date, if any.
pub async fn meta(job: &Job) -> Result<Option<CheckpointMeta>> {
    state::read(&job.output, &layout::checkpoint_meta(job.date)).await
}

/// The warm start for this run: the previous checkpoint with its weights
/// (the holdout model's, when it has one).
pub async fn previous(job: &Job) -> Result<Option<WarmStart>> {
    let Some((date, meta)) = previous_meta(job).await? else { return Ok(None) };
    let weights = job.output.get(&job.output.path(&weights_path(date, &meta, Weights::Holdout))).await?;
    let dir = local_tmp(job)?;
    let file = dir.join("previous.safetensors");
    std::fs::write(&file, &weights).map_err(|e| Error::io(file.display(), e))?;
    let tensors = Tensor::read_safetensors(&file).ctx(format!("reading the checkpoint of {date}"));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Some(WarmStart { date, meta, tensors: tensors? }))
}

/// Load the checkpoint of this run's date onto `device`.
pub async fn load(job: &Job, device: tch::Device, which: Weights) -> Result<(nn::VarStore, SeqRec, CheckpointMeta)> {
    let meta = meta(job).await?.ok_or_else(|| {
        Error::Usage(format!(
            "no readable checkpoint for {} at {}; rerun the train stage (--stage train --force)",
            job.date,
            job.output.object_url(&job.output.path(&layout::checkpoint_meta(job.date)))
        ))
    })?;
    let weights = job.output.get(&job.output.path(&weights_path(job.date, &meta, which))).await?;
    let dir = local_tmp(job)?;
    let file = dir.join("model.safetensors");
    std::fs::write(&file, &weights).map_err(|e| Error::io(file.display(), e))?;
    let mut vs = nn::VarStore::new(device);
    let model = SeqRec::new(&vs.root(), &meta.model);
    let loaded = vs.load(&file).ctx(format!("loading weights from {}", file.display()));
    let _ = std::fs::remove_dir_all(&dir);
    loaded?;
    Ok((vs, model, meta))
}
