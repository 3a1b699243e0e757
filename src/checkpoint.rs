//! Model checkpoints: safetensors weights plus a JSON file with the model
//! config and the item id map, under `_work/dt=…/checkpoint/`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::nn;

use crate::config::hex;
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
