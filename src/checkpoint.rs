//! Model checkpoints: safetensors weights plus a JSON file with the model
//! config and the item id map, under `_work/dt=…/checkpoint/`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Tensor, nn};

use crate::config::{RunDate, hex};
use crate::error::{DfContext, Error, Result};
use crate::job::Job;
use crate::model::{SeqRec, SeqRecConfig};

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
}

fn local_tmp(job: &Job) -> Result<std::path::PathBuf> {
    let dir = crate::engine::spill_dir(&job.cfg).join(format!("ckpt-{}", job.run_id));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
    Ok(dir)
}

/// Save weights and metadata; returns the model version.
pub async fn save(job: &Job, vs: &nn::VarStore, mut meta: CheckpointMeta) -> Result<CheckpointMeta> {
    let dir = local_tmp(job)?;
    let file = dir.join("model.safetensors");
    vs.save(&file).ctx(format!("saving weights to {}", file.display()))?;
    let data = std::fs::read(&file).map_err(|e| Error::io(file.display(), e))?;
    let _ = std::fs::remove_dir_all(&dir);
    meta.version = hex(&Sha256::digest(&data))[..16].to_string();
    job.output.put(&job.output.path(&job.work("checkpoint/model.safetensors")), Bytes::from(data)).await?;
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Internal(format!("checkpoint meta: {e}")))?;
    job.output.put(&job.output.path(&job.work("checkpoint/model.json")), Bytes::from(json)).await?;
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

/// Folder of a date's checkpoint, relative to the output root.
fn folder(date: RunDate) -> String {
    format!("_work/{}/checkpoint", date.partition())
}

/// The most recent checkpoint of a date before this run's, at most
/// `model.warm_start_max_age_days` old, if any: its date and metadata.
pub async fn previous_meta(job: &Job) -> Result<Option<(RunDate, CheckpointMeta)>> {
    let oldest = job.date.minus_days(job.cfg.model.warm_start_max_age_days);
    let mut dates: Vec<RunDate> = job
        .output
        .subfolders("_work")
        .await?
        .iter()
        .filter_map(|d| d.strip_prefix("dt=").and_then(|d| d.parse().ok()))
        .filter(|d| *d < job.date && *d >= oldest)
        .collect();
    dates.sort();
    for date in dates.into_iter().rev() {
        if let Some(bytes) = job.output.get_opt(&job.output.path(&format!("{}/model.json", folder(date)))).await? {
            let meta: CheckpointMeta = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Data(format!("unreadable checkpoint metadata of {date}: {e}")))?;
            return Ok(Some((date, meta)));
        }
    }
    Ok(None)
}

/// The warm start for this run: the previous checkpoint with its weights.
pub async fn previous(job: &Job) -> Result<Option<WarmStart>> {
    let Some((date, meta)) = previous_meta(job).await? else { return Ok(None) };
    let weights = job.output.get(&job.output.path(&format!("{}/model.safetensors", folder(date)))).await?;
    let dir = local_tmp(job)?;
    let file = dir.join("previous.safetensors");
    std::fs::write(&file, &weights).map_err(|e| Error::io(file.display(), e))?;
    let tensors = Tensor::read_safetensors(&file).ctx(format!("reading the checkpoint of {date}"));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Some(WarmStart { date, meta, tensors: tensors? }))
}

/// Load the checkpoint of this run's date onto `device`.
pub async fn load(job: &Job, device: tch::Device) -> Result<(nn::VarStore, SeqRec, CheckpointMeta)> {
    let meta_bytes = job.output.get(&job.output.path(&job.work("checkpoint/model.json"))).await?;
    let meta: CheckpointMeta =
        serde_json::from_slice(&meta_bytes).map_err(|e| Error::Data(format!("unreadable checkpoint metadata: {e}")))?;
    let weights = job.output.get(&job.output.path(&job.work("checkpoint/model.safetensors"))).await?;
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
