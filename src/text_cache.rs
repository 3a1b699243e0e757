//! Text embeddings kept across dates, so that a night encodes only the
//! items whose text is new or changed.
//!
//! Where: `<output>/_cache/text_embeddings/<encoder key>/gen=<run id>/part-*.parquet`,
//! columns `text_sha256` (hex of the exact text the encoder read) and
//! `embedding`. The encoder key is a hash of the encoder's identity: its
//! kind, `text.max_tokens`, and the bytes of `config.json`,
//! `tokenizer.json` and `model.safetensors`. So:
//! - another model, tokenizer or truncation length is another folder, and
//!   nothing computed by the old one is reused;
//! - an item whose text changed has another hash and is encoded again;
//! - each run that encodes something adds one generation with the new
//!   entries only; once the entries no night used outnumber the used ones
//!   (or there are more than [`MAX_GENERATIONS`]), the cache is rewritten as
//!   one generation holding exactly this night's entries.
//!
//! A generation is written before any other is deleted, and every file is
//! written whole, so a crash leaves at worst a duplicate entry (identical
//! key, read once). Deleting the folder only costs one full encoding.
//! The hashing encoder needs no cache (it is cheaper than reading one).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

use crate::arrays;
use crate::config::hex;
use crate::error::{DfContext, Error, Result};
use crate::job::Job;

/// Generations kept before the cache is compacted into one.
pub(crate) const MAX_GENERATIONS: usize = 8;

/// The folder, relative to the output root, of one encoder's cache.
pub(crate) fn folder(encoder_key: &str) -> String {
    crate::layout::text_cache(encoder_key)
}

/// The identity of a model-file encoder: what it is, how it truncates, and
/// the exact bytes of its files.
pub(crate) fn encoder_key(kind: &str, max_tokens: usize, dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update(max_tokens.to_le_bytes());
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        let p = dir.join(f);
        let bytes = std::fs::read(&p).map_err(|e| Error::io(p.display(), e))?;
        h.update(f.as_bytes());
        h.update(Sha256::digest(&bytes));
    }
    Ok(hex(&h.finalize())[..16].to_string())
}

/// The cache key of one text.
pub(crate) fn text_key(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// What the cache held, by text key: row-major vectors of one width.
pub(crate) struct Cached {
    /// Text key → row in `values`.
    pub rows: HashMap<String, usize>,
    /// Row-major vectors.
    pub values: Vec<f32>,
    /// Their width (0 when empty).
    pub dim: usize,
    /// Generation folders found.
    pub generations: Vec<String>,
}

impl Cached {
    /// The vector of a text key.
    pub(crate) fn get(&self, key: &str) -> Option<&[f32]> {
        self.rows.get(key).map(|r| &self.values[r * self.dim..(r + 1) * self.dim])
    }
}

/// Read every generation of an encoder's cache. A file that cannot be read
/// is skipped with a warning (its texts are encoded again), never fatal.
pub(crate) async fn load(job: &Job, encoder_key: &str) -> Result<Cached> {
    let base = folder(encoder_key);
    // What a killed write left (the text stage of one output runs one at a time).
    job.output.remove_staging_leftovers(&base)?;
    let mut cached = Cached { rows: HashMap::new(), values: Vec::new(), dim: 0, generations: Vec::new() };
    cached.generations = job.output.subfolders(&base).await?;
    for meta in job.output.list(&base).await? {
        if !meta.location.as_ref().ends_with(".parquet") {
            continue;
        }
        let url = job.output.object_url(&meta.location);
        let bytes = job.output.get(&meta.location).await?;
        match read_file(bytes) {
            Ok((keys, values, dim)) if cached.dim == 0 || dim == cached.dim => {
                cached.dim = dim;
                for (i, k) in keys.into_iter().enumerate() {
                    if !cached.rows.contains_key(&k) {
                        cached.rows.insert(k, cached.values.len() / dim.max(1));
                        cached.values.extend_from_slice(&values[i * dim..(i + 1) * dim]);
                    }
                }
            }
            Ok((_, _, dim)) => {
                tracing::warn!(file = %url, dim, want = cached.dim, "text cache file of another width; ignored")
            }
            Err(e) => tracing::warn!(file = %url, error = %e, "unreadable text cache file; ignored"),
        }
    }
    Ok(cached)
}

fn read_file(bytes: Bytes) -> Result<(Vec<String>, Vec<f32>, usize)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .ctx("reading a text cache file")?
        .build()
        .ctx("reading a text cache file")?;
    let batches: Vec<RecordBatch> =
        reader.collect::<std::result::Result<_, _>>().map_err(|e| Error::Internal(format!("text cache: {e}")))?;
    let keys = arrays::strings_required(&batches, "text_sha256")?;
    let (values, dim) = arrays::vectors(&batches, "embedding")?;
    if values.len() != keys.len() * dim {
        return Err(Error::Internal("text cache: keys and vectors disagree".into()));
    }
    Ok((keys, values, dim))
}

/// Write one generation holding these entries (row-major `values`).
async fn write_generation(job: &Job, encoder_key: &str, keys: &[&str], values: Vec<f32>, dim: usize) -> Result<String> {
    let generation = format!("gen={}", job.run_id);
    let schema = Arc::new(Schema::new(vec![
        Field::new("text_sha256", DataType::Utf8, false),
        Field::new("embedding", arrays::vector_type(dim), false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from_iter_values(keys.iter().copied())), arrays::vector_array(values, dim)?],
    )
    .ctx("building a text cache generation")?;
    let rel = format!("{}/{generation}", folder(encoder_key));
    crate::parquet_io::write_batches(
        &job.output,
        &rel,
        "text_embedding_cache",
        schema,
        &[batch],
        &job.lineage,
        job.cfg.runtime.max_rows_per_file,
    )
    .await?;
    Ok(generation)
}

/// How a night used the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CacheUse {
    /// Distinct texts found in the cache.
    pub hits: usize,
    /// Distinct texts encoded now.
    pub encoded: usize,
    /// Whether the cache was rewritten as one generation.
    pub compacted: bool,
}

/// Embed `texts` (row-major result, empty texts → zero vectors), encoding
/// only those the cache lacks with `encode`, and update the cache.
pub(crate) async fn embed(
    job: &Job,
    encoder_key: &str,
    texts: &[&str],
    encode: impl FnOnce(&[&str]) -> Result<(Vec<f32>, usize)>,
) -> Result<(Vec<f32>, usize, CacheUse)> {
    let cached = load(job, encoder_key).await?;
    let keys: Vec<String> = texts.iter().map(|t| text_key(t)).collect();
    // Distinct non-empty texts the cache lacks, in first-seen order.
    let mut missing: Vec<usize> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, t) in texts.iter().enumerate() {
        if !t.trim().is_empty() && cached.get(&keys[i]).is_none() && seen.insert(keys[i].as_str()) {
            missing.push(i);
        }
    }
    let to_encode: Vec<&str> = missing.iter().map(|i| texts[*i]).collect();
    // Nothing to encode and no cache to tell the width (an ids-only
    // catalogue: every text empty): the encoder is asked with no texts, for
    // its width, so empty texts still get zero vectors of the right size.
    let (fresh, fresh_dim) =
        if to_encode.is_empty() && cached.dim > 0 { (Vec::new(), cached.dim) } else { encode(&to_encode)? };
    let dim = if cached.dim == 0 || fresh_dim == cached.dim {
        fresh_dim
    } else {
        return Err(Error::Internal(format!("text cache width {} but the encoder gives {fresh_dim}", cached.dim)));
    };
    let fresh_rows: HashMap<&str, usize> = missing.iter().enumerate().map(|(r, i)| (keys[*i].as_str(), r)).collect();
    let mut out = vec![0f32; texts.len() * dim];
    let mut used: HashSet<&str> = HashSet::new();
    let mut hits = 0;
    for (i, t) in texts.iter().enumerate() {
        if t.trim().is_empty() {
            continue;
        }
        let k = keys[i].as_str();
        let v = match cached.get(k) {
            Some(v) => v,
            None => {
                let r = fresh_rows
                    .get(k)
                    .copied()
                    .ok_or_else(|| Error::Internal("text cache: an entry went missing".into()))?;
                &fresh[r * dim..(r + 1) * dim]
            }
        };
        out[i * dim..(i + 1) * dim].copy_from_slice(v);
        if used.insert(k) && cached.rows.contains_key(k) {
            hits += 1;
        }
    }
    let stale = cached.rows.keys().filter(|k| !used.contains(k.as_str())).count();
    let compact = stale > used.len() || cached.generations.len() + usize::from(!missing.is_empty()) > MAX_GENERATIONS;
    if compact {
        // One generation with exactly this night's entries, then the rest goes.
        let mut ks: Vec<&str> = Vec::with_capacity(used.len());
        let mut vals = Vec::with_capacity(used.len() * dim);
        for (i, k) in keys.iter().enumerate() {
            if used.remove(k.as_str()) {
                ks.push(k);
                vals.extend_from_slice(&out[i * dim..(i + 1) * dim]);
            }
        }
        let kept = write_generation(job, encoder_key, &ks, vals, dim).await?;
        for g in cached.generations.iter().filter(|g| **g != kept) {
            job.output.delete_folder(&format!("{}/{g}", folder(encoder_key))).await?;
        }
    } else if !missing.is_empty() {
        let ks: Vec<&str> = missing.iter().map(|i| keys[*i].as_str()).collect();
        write_generation(job, encoder_key, &ks, fresh, dim).await?;
    }
    Ok((out, dim, CacheUse { hits, encoded: missing.len(), compacted: compact }))
}
