//! Model checkpoints: safetensors weights plus a JSON file with the model
//! config and the item id map, under `_work/dt=…/checkpoint/`. With a
//! refit (`model.refit_epochs`) a second set of weights sits beside the
//! published model's: the holdout model, trained on every step but the test
//! ones, which the offline evaluation scores and the next date's warm start
//! continues from (see `crate::stages::train`).
//!
//! The three objects are written separately, weights first and metadata
//! last, and the metadata records each weights file's size and sha256. A
//! checkpoint whose files do not match its metadata (a retrain killed after
//! writing new weights, before their metadata) is no checkpoint: the date's
//! train stage runs again, and the next date does not warm-start from it.

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
pub(crate) struct CheckpointMeta {
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
    /// Each weights file written with this metadata: its size and sha256.
    /// Metadata without them (an older nightrec) is not trusted.
    #[serde(default)]
    pub files: Vec<CheckpointFile>,
}

/// One weights file of a checkpoint, as its metadata records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckpointFile {
    /// `model.safetensors` or `holdout.safetensors`.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// sha256, hex.
    pub sha256: String,
}

/// Which of a checkpoint's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Weights {
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
pub(crate) async fn save(
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
    let sha = hex(&Sha256::digest(&data));
    meta.version = sha[..16].to_string();
    meta.holdout = held.is_some();
    meta.files = vec![CheckpointFile { name: WEIGHTS.into(), bytes: data.len() as u64, sha256: sha }];
    // The metadata goes first, so that a kill between the writes below
    // leaves files that do not match the metadata left from before.
    job.output.delete(&job.output.path(&layout::checkpoint_meta(job.date))).await?;
    job.output.put(&job.output.path(&layout::checkpoint_weights(job.date)), Bytes::from(data)).await?;
    if let Some(h) = held {
        let h = h?;
        let sha256 = hex(&Sha256::digest(&h));
        meta.files.push(CheckpointFile { name: HOLDOUT.into(), bytes: h.len() as u64, sha256 });
        job.output.put(&job.output.path(&layout::checkpoint_holdout_weights(job.date)), Bytes::from(h)).await?;
    }
    if let Some(hook) = std::env::var_os(KILL_HOOK) {
        // Tests only: stand still between the weights and the metadata, to be killed there.
        tracing::warn!("{KILL_HOOK} set: waiting before the checkpoint metadata is written");
        std::thread::sleep(std::time::Duration::from_secs(hook.to_string_lossy().parse().unwrap_or(60)));
    }
    state::write(&job.output, &layout::checkpoint_meta(job.date), &meta).await?;
    Ok(meta)
}

/// Tests set this to a number of seconds to wait after the weights are
/// written and before the metadata is, so that a kill lands between them.
pub(crate) const KILL_HOOK: &str = "NIGHTREC_TEST_PAUSE_BEFORE_CHECKPOINT_META";

const WEIGHTS: &str = "model.safetensors";
const HOLDOUT: &str = "holdout.safetensors";

/// The metadata of a date's checkpoint when its weights files are exactly
/// the ones it records (sizes and sha256); None, with a warning, when they
/// are not, or when it records none.
async fn verified(root: &crate::storage::Root, date: RunDate) -> Result<Option<CheckpointMeta>> {
    let Some(meta) = state::read::<CheckpointMeta>(root, &layout::checkpoint_meta(date)).await? else {
        return Ok(None);
    };
    let mut wanted = vec![WEIGHTS];
    if meta.holdout {
        wanted.push(HOLDOUT);
    }
    let at = root.object_url(&root.path(&layout::checkpoint(date)));
    for name in wanted {
        let ok = match meta.files.iter().find(|f| f.name == name) {
            None => false,
            Some(f) => {
                let path = root.path(&format!("{}/{name}", layout::checkpoint(date)));
                match root.head_opt(&path).await? {
                    Some(m) if m.size == f.bytes => file_sha256(root, &path, &m).await? == f.sha256,
                    _ => false,
                }
            }
        };
        if !ok {
            tracing::warn!(
                checkpoint = %at,
                "{name} does not match the checkpoint's metadata (a retrain killed between its writes?): \
                 the checkpoint is treated as absent"
            );
            return Ok(None);
        }
    }
    Ok(Some(meta))
}

/// The sha256 of an object, hashed once per process for each version of it.
async fn file_sha256(
    root: &crate::storage::Root,
    path: &object_store::path::Path,
    m: &object_store::ObjectMeta,
) -> Result<String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Seen = HashMap<(String, u64, i64, Option<String>), String>;
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    let key = (root.object_url(path), m.size, m.last_modified.timestamp_micros(), m.e_tag.clone());
    let seen = SEEN.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(s) = seen.lock().ok().and_then(|s| s.get(&key).cloned()) {
        return Ok(s);
    }
    let sha = hex(&Sha256::digest(root.get(path).await?));
    if let Ok(mut s) = seen.lock() {
        s.insert(key, sha.clone());
    }
    Ok(sha)
}

/// An earlier date's checkpoint to start training from.
pub(crate) struct WarmStart {
    /// The date it was trained for.
    pub date: RunDate,
    /// Its metadata (shape, item id map).
    pub meta: CheckpointMeta,
    /// Its weights by variable name, on the CPU.
    pub tensors: Vec<(String, Tensor)>,
}

/// The most recent checkpoint of a date before this run's, at most
/// `model.warm_start_max_age_days` old, if any: its date and metadata.
pub(crate) async fn previous_meta(job: &Job) -> Result<Option<(RunDate, CheckpointMeta)>> {
    let oldest = job.date.minus_days(job.cfg.model.warm_start_max_age_days);
    let dates = layout::dates(&job.output, layout::WORK).await?;
    for date in dates.into_iter().rev().filter(|d| *d < job.date && *d >= oldest) {
        // Unreadable metadata, or weights that do not match it, is no
        // checkpoint (crate::state): an older one may serve.
        if let Some(meta) = verified(&job.output, date).await? {
            return Ok(Some((date, meta)));
        }
    }
    Ok(None)
}

/// The metadata of the checkpoint trained for this run's date, if any (and
/// if its weights match it).
pub(crate) async fn meta(job: &Job) -> Result<Option<CheckpointMeta>> {
    verified(&job.output, job.date).await
}

/// The warm start for this run: the previous checkpoint with its weights
/// (the holdout model's, when it has one).
pub(crate) async fn previous(job: &Job) -> Result<Option<WarmStart>> {
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
pub(crate) async fn load(
    job: &Job,
    device: tch::Device,
    which: Weights,
) -> Result<(nn::VarStore, SeqRec, CheckpointMeta)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DEFAULT_CONFIG_TOML};

    fn meta_of() -> CheckpointMeta {
        CheckpointMeta {
            model: SeqRecConfig {
                n_items: 3,
                dim: 4,
                heads: 1,
                layers: 1,
                max_len: 8,
                dropout: 0.0,
                text_dim: 0,
                text_fusion: false,
                delta_max_norm: 0.0,
                id_dropout: 0.0,
                image_dim: 0,
                image_alpha: 0.0,
                scale_input: false,
            },
            item_ids: vec!["a".into(), "b".into()],
            epochs: 1,
            best_valid_ndcg10: 0.0,
            version: String::new(),
            holdout: false,
            files: Vec::new(),
        }
    }

    /// Regression: the three objects of a checkpoint were never checked
    /// against each other, so a retrain killed after writing new weights
    /// left them paired with the old metadata, and the next date
    /// warm-started from that mix.
    #[tokio::test]
    async fn weights_that_do_not_match_their_metadata_are_no_checkpoint() {
        let mut cfg = Config::from_toml_with_env(DEFAULT_CONFIG_TOML, "t", &[]).unwrap();
        cfg.storage.output = "memory://checkpoint-test/out".into();
        cfg.storage.input = "memory://checkpoint-test/in".into();
        let date: RunDate = "2026-11-21".parse().unwrap();
        let job = Job::new(cfg.clone(), date, false).unwrap();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _w = vs.root().zeros("w", &[3, 4]);
        let saved = save(&job, &vs, None, meta_of()).await.unwrap();
        assert_eq!(saved.files.len(), 1);
        assert_eq!(meta(&job).await.unwrap().map(|m| m.version), Some(saved.version.clone()));
        // The next date warm-starts from it.
        let next = Job::new(cfg.clone(), date.plus_days(1), false).unwrap();
        assert_eq!(previous_meta(&next).await.unwrap().map(|m| m.0), Some(date));
        // A retrain writes other weights and is killed before their metadata.
        let other = nn::VarStore::new(tch::Device::Cpu);
        let _w = other.root().ones("w", &[3, 4]);
        let file = std::env::temp_dir().join(format!("nightrec-ckpt-test-{}.safetensors", std::process::id()));
        other.save(&file).unwrap();
        let bytes = std::fs::read(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        job.output.put(&job.output.path(&layout::checkpoint_weights(date)), Bytes::from(bytes)).await.unwrap();
        assert!(meta(&job).await.unwrap().is_none(), "new weights were paired with old metadata");
        assert!(previous_meta(&next).await.unwrap().is_none(), "the next date warm-started from the mix");
        // Metadata without checksums (an older nightrec) is not trusted either.
        let mut old = saved.clone();
        old.files.clear();
        state::write(&job.output, &layout::checkpoint_meta(date), &old).await.unwrap();
        assert!(meta(&job).await.unwrap().is_none());
    }
}
