//! The item-text encoders: the pretrained MiniLM sentence encoder and the
//! `hashing` fallback, where their files are, and the identity that keys
//! the text cache and the text stage's fingerprint. Used by the text stage
//! (item text) and by the query candidates (search queries).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tch::{Kind, Tensor, nn};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::config::{Config, TextEncoderKind};
use crate::error::{DfContext, Error, Result};
use crate::model::bert::{Bert, BertConfig};

/// The MiniLM model folder: `text.model_dir`, or the cache `make setup` fills.
pub fn model_dir(cfg: &Config) -> PathBuf {
    if !cfg.text.model_dir.is_empty() {
        return PathBuf::from(&cfg.text.model_dir);
    }
    let cache = std::env::var_os("NIGHTREC_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".cache").join("nightrec")
    });
    cache.join("models").join("all-minilm-l6-v2")
}

/// A pretrained sentence encoder: tokenizer plus BERT, on one device.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    model: Bert,
    _vs: nn::VarStore,
    device: tch::Device,
    dim: usize,
}

impl TextEncoder {
    /// Load `model.safetensors`, `tokenizer.json` and `config.json` from `dir`.
    pub fn load(dir: &Path, max_tokens: usize, device: tch::Device) -> Result<TextEncoder> {
        let missing = |f: &str| {
            Error::Config(format!(
                "the text encoder's {f} is missing from {} (run `make setup`, or set text.model_dir, \
                 or text.encoder = \"hashing\")",
                dir.display()
            ))
        };
        let file = |f: &str| {
            let p = dir.join(f);
            if p.is_file() { Ok(p) } else { Err(missing(f)) }
        };
        let cfg_text = std::fs::read_to_string(file("config.json")?)
            .map_err(|e| Error::io(dir.join("config.json").display(), e))?;
        let cfg: BertConfig = serde_json::from_str(&cfg_text)
            .map_err(|e| Error::Config(format!("{}: not a BERT config: {e}", dir.join("config.json").display())))?;
        let mut tokenizer = Tokenizer::from_file(file("tokenizer.json")?)
            .map_err(|e| Error::Config(format!("{}: {e}", dir.join("tokenizer.json").display())))?;
        let max_tokens = max_tokens.min(cfg.max_position_embeddings as usize);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| Error::Internal(format!("configuring truncation: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));
        let mut vs = nn::VarStore::new(device);
        let model = Bert::new(&vs.root(), &cfg);
        let weights = file("model.safetensors")?;
        vs.load(&weights).ctx(format!("loading {}", weights.display()))?;
        vs.freeze();
        Ok(TextEncoder { tokenizer, model, _vs: vs, device, dim: cfg.hidden_size as usize })
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Embed texts, `batch` at a time; row-major [texts, dim]. Empty texts
    /// get the zero vector.
    pub fn embed(&self, texts: &[&str], batch: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; texts.len() * self.dim];
        // Similar lengths share a batch, so padding costs little.
        let mut order: Vec<usize> = (0..texts.len()).filter(|i| !texts[*i].trim().is_empty()).collect();
        order.sort_by_key(|i| (texts[*i].len(), *i));
        for chunk in order.chunks(batch.max(1)) {
            let batch_texts: Vec<&str> = chunk.iter().map(|i| texts[*i]).collect();
            let enc = self
                .tokenizer
                .encode_batch(batch_texts, true)
                .map_err(|e| Error::Internal(format!("tokenizing item texts: {e}")))?;
            let l = enc.first().map(|e| e.get_ids().len()).unwrap_or(0) as i64;
            let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Tensor {
                let v: Vec<i64> = enc.iter().flat_map(|e| f(e).iter().map(|x| i64::from(*x))).collect();
                Tensor::from_slice(&v).view([chunk.len() as i64, l]).to_device(self.device)
            };
            let ids = flat(&|e| e.get_ids());
            let mask = flat(&|e| e.get_attention_mask());
            let types = flat(&|e| e.get_type_ids());
            let emb = tch::no_grad(|| self.model.embed(&ids, &mask, &types));
            let vals: Vec<f32> = Vec::try_from(emb.to_device(tch::Device::Cpu).to_kind(Kind::Float).view([-1]))
                .map_err(|e| Error::torch("copying text embeddings", e))?;
            for (r, i) in chunk.iter().enumerate() {
                out[i * self.dim..(i + 1) * self.dim].copy_from_slice(&vals[r * self.dim..(r + 1) * self.dim]);
            }
        }
        Ok(out)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn add(v: &mut [f32], token: &str, weight: f32) {
    let h = fnv1a(token.as_bytes());
    let idx = (h % v.len() as u64) as usize;
    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
    v[idx] += sign * weight;
}

/// The hashing encoder: one item text (`title . category . brand . description`).
pub(crate) fn hashing_embed(text: &str, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    if dim == 0 {
        return v;
    }
    for segment in text.split(" . ") {
        if segment.contains(" > ") {
            // A category path: each prefix is a token ("Home", "Home > Kitchen", ...).
            let mut prefix = String::new();
            for part in segment.split(" > ") {
                if !prefix.is_empty() {
                    prefix.push_str(" > ");
                }
                prefix.push_str(&part.trim().to_lowercase());
                add(&mut v, &format!("cat:{prefix}"), 1.5);
            }
        }
        let words: Vec<String> =
            segment.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
        for w in &words {
            add(&mut v, &format!("w:{w}"), 1.0);
        }
        for pair in words.windows(2) {
            add(&mut v, &format!("b:{} {}", pair[0], pair[1]), 0.5);
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Embed texts with the configured encoder; row-major values and width.
pub(crate) fn embed_texts(cfg: &Config, texts: &[&str], device: tch::Device) -> Result<(Vec<f32>, usize)> {
    match cfg.text.encoder {
        TextEncoderKind::Minilm => {
            let enc = TextEncoder::load(&model_dir(cfg), cfg.text.max_tokens, device)?;
            Ok((enc.embed(texts, cfg.text.batch_size)?, enc.dim()))
        }
        TextEncoderKind::Hashing => {
            let dim = cfg.text.hashing_dim;
            Ok((texts.par_iter().flat_map_iter(|t| hashing_embed(t, dim)).collect(), dim))
        }
    }
}

/// The identity of the configured encoder: for MiniLM, a hash of its files
/// and truncation (the text cache's key, [`crate::text_cache::encoder_key`]);
/// for the hashing encoder, its width. Part of the text stage's
/// fingerprint, so that new weights under the same `[text]` settings encode
/// the catalogue again.
pub(crate) fn encoder_identity(cfg: &Config) -> Result<String> {
    match cfg.text.encoder {
        TextEncoderKind::Minilm => {
            let dir = model_dir(cfg);
            crate::text_cache::encoder_key("minilm", cfg.text.max_tokens, &dir).map_err(|e| {
                Error::Config(format!("the text encoder's files under {} cannot be read: {e}", dir.display()))
            })
        }
        TextEncoderKind::Hashing => Ok(format!("hashing-{}", cfg.text.hashing_dim)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn shared_words_and_categories_are_closer() {
        let a = hashing_embed("Steel Frying Pan . Home > Kitchen > Pans . Acme", 64);
        let b = hashing_embed("Nonstick Frying Pan . Home > Kitchen > Pans . Brio", 64);
        let c = hashing_embed("Trail Running Shoe . Sports > Running > Shoes . Zoom", 64);
        assert!(cos(&a, &b) > cos(&a, &c) + 0.2, "{} vs {}", cos(&a, &b), cos(&a, &c));
    }

    #[test]
    fn empty_text_is_the_zero_vector_and_others_are_unit() {
        assert!(hashing_embed("", 16).iter().all(|x| *x == 0.0));
        let v = hashing_embed("x", 16);
        assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
