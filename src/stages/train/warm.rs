//! Warm start and the item rows around it: an earlier checkpoint's weights
//! mapped onto today's catalogue by item id, the rows of items training
//! never reached, and saved weights put back.

use std::collections::HashMap;

use tch::{Tensor, nn};

use super::windows::{Part, windows};
use crate::checkpoint::WarmStart;
use crate::error::{Error, Result};
use crate::model::SeqRecConfig;
use crate::seqdata::SeqData;

/// The variable holding the per-item rows (ID embeddings or deltas).
pub(super) const ITEM_ROWS: &str = "item_id.weight";

/// Which item rows the steps of `part` contain (index = item_idx).
pub(super) fn seen_items(data: &SeqData, part: Part) -> Vec<bool> {
    let mut seen = vec![false; data.n_items() as usize];
    let all: Vec<usize> = (0..data.seqs.len()).collect();
    for w in windows(data, &all, part, usize::MAX / 2) {
        for i in w {
            seen[*i as usize] = true;
        }
    }
    seen
}

/// Items the model never trained on keep the row they started with (small
/// noise, shrunk by weight decay), which ranks them below almost every
/// trained item whatever their text says. They get the mean row of the
/// items it trained on instead: the typical delta on top of their own text
/// projection (or, without text, the typical item).
pub(super) fn fill_unseen_rows(ids: &Tensor, seen: &[bool]) {
    let rows = |want: bool| -> Vec<i64> { (1..seen.len()).filter(|i| seen[*i] == want).map(|i| i as i64).collect() };
    let (trained, unseen) = (rows(true), rows(false));
    if trained.is_empty() || unseen.is_empty() {
        return;
    }
    let dev = ids.device();
    tch::no_grad(|| {
        let mean = ids.index_select(0, &Tensor::from_slice(&trained).to_device(dev)).mean_dim(0, true, ids.kind());
        let at = Tensor::from_slice(&unseen).to_device(dev);
        let _ = ids.shallow_clone().index_copy_(0, &at, &mean.expand([unseen.len() as i64, -1], false).contiguous());
    });
}

/// Copy saved weights (by variable name) into `vs`.
pub(super) fn restore(vs: &nn::VarStore, weights: &[(String, Tensor)]) {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (k, t) in weights {
            if let Some(v) = vars.get(k) {
                v.shallow_clone().copy_(t);
            }
        }
    });
}

/// Copy an earlier checkpoint's weights into a fresh model of the same
/// shape, item rows mapped by item id. Returns (kept, new, dropped) item
/// counts, or None (train from scratch) when the shapes differ.
pub(super) fn apply_warm_start(
    vs: &nn::VarStore,
    cfg: &SeqRecConfig,
    item_ids: &[String],
    warm: &WarmStart,
) -> Result<Option<(usize, usize, usize)>> {
    let old = &warm.meta.model;
    let same_shape = SeqRecConfig {
        n_items: cfg.n_items,
        dropout: cfg.dropout,
        image_alpha: cfg.image_alpha,
        delta_max_norm: cfg.delta_max_norm,
        id_dropout: cfg.id_dropout,
        ..old.clone()
    } == *cfg;
    if !same_shape {
        tracing::warn!(from = %warm.date, "the earlier checkpoint has another model shape; training from scratch");
        return Ok(None);
    }
    let old_rows: HashMap<&str, i64> =
        warm.meta.item_ids.iter().enumerate().map(|(i, id)| (id.as_str(), i as i64 + 1)).collect();
    let saved: HashMap<&str, &Tensor> = warm.tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut kept = 0;
    tch::no_grad(|| -> Result<()> {
        for (name, var) in vs.variables() {
            let src = saved
                .get(name.as_str())
                .ok_or_else(|| Error::Data(format!("checkpoint of {} lacks {name}", warm.date)))?;
            let mut var = var.shallow_clone();
            if name == ITEM_ROWS {
                // Row 0 (padding) and every item still in the catalog.
                let (mut to, mut from) = (vec![0i64], vec![0i64]);
                for (i, id) in item_ids.iter().enumerate() {
                    if let Some(r) = old_rows.get(id.as_str()) {
                        to.push(i as i64 + 1);
                        from.push(*r);
                    }
                }
                kept = to.len() - 1;
                let rows =
                    src.to_device(var.device()).index_select(0, &Tensor::from_slice(&from).to_device(var.device()));
                let _ = var.index_copy_(0, &Tensor::from_slice(&to).to_device(var.device()), &rows);
            } else if src.size() == var.size() {
                var.copy_(src);
            } else {
                return Err(Error::Data(format!(
                    "checkpoint of {}: {name} has shape {:?}, want {:?}",
                    warm.date,
                    src.size(),
                    var.size()
                )));
            }
        }
        Ok(())
    })?;
    let new = item_ids.len() - kept;
    let dropped = warm.meta.item_ids.len() - kept;
    tracing::info!(from = %warm.date, kept, new, dropped, "warm start from an earlier checkpoint");
    Ok(Some((kept, new, dropped)))
}
