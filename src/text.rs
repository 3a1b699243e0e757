//! Stage `text`: `item_text` → `item_text_embeddings`.
//!
//! The encoder here is a deterministic feature-hashing bag of words: word
//! unigrams and bigrams of the title, brand and description, plus every
//! prefix of the category path as one token, hashed (FNV-1a) into `text.dim`
//! signed buckets and L2-normalised. Items that share words or a category
//! land close together, which is what lets items without interactions be
//! placed. An item with no text at all gets the zero vector (documented, and
//! never NaN). The pretrained MiniLM encoder will take over this stage.
//!
//! Safe to re-run: the output folder is replaced whole.

use std::sync::Arc;

use datafusion::arrow::array::{Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use rayon::prelude::*;

use crate::arrays;
use crate::error::{DfContext, Result};
use crate::job::Job;
use crate::parquet_io::{WrittenTable, write_batches};

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn add(v: &mut [f32], token: &str, weight: f32) {
    let h = fnv1a(token.as_bytes());
    let idx = (h % v.len() as u64) as usize;
    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
    v[idx] += sign * weight;
}

/// Embed one item text (`title . category . brand . description`).
pub fn embed(text: &str, dim: usize) -> Vec<f32> {
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

/// Run the stage.
pub async fn run(job: &Job) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let ctx = job.session()?;
    let batches =
        job.read_work(&ctx, "item_text", "SELECT item_idx, item_id, text FROM item_text ORDER BY item_idx").await?;
    let idx = arrays::ints(&batches, "item_idx")?;
    let ids = arrays::strings_required(&batches, "item_id")?;
    let texts = arrays::strings(&batches, "text")?;
    let dim = job.cfg.text.dim;
    let flat: Vec<f32> = texts.par_iter().flat_map_iter(|t| embed(t.as_deref().unwrap_or(""), dim)).collect();
    let empty = texts.iter().filter(|t| t.as_deref().unwrap_or("").trim().is_empty()).count();
    let schema = Arc::new(Schema::new(vec![
        Field::new("item_idx", DataType::Int32, false),
        Field::new("item_id", DataType::Utf8, false),
        Field::new("embedding", arrays::vector_type(dim), false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int32Array::from_iter_values(idx.iter().map(|i| *i as i32))),
            Arc::new(StringArray::from_iter_values(ids.iter())),
            arrays::vector_array(flat, dim)?,
        ],
    )
    .ctx("building item_text_embeddings")?;
    let t = write_batches(
        &job.output,
        &job.work("item_text_embeddings"),
        "item_text_embeddings",
        schema,
        &[batch],
        &job.lineage,
        job.cfg.runtime.max_rows_per_file,
    )
    .await?;
    let facts = vec![("items embedded".into(), t.rows().to_string()), ("items without text".into(), empty.to_string())];
    Ok((vec![t], facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn shared_words_and_categories_are_closer() {
        let a = embed("Steel Frying Pan . Home > Kitchen > Pans . Acme", 64);
        let b = embed("Nonstick Frying Pan . Home > Kitchen > Pans . Brio", 64);
        let c = embed("Trail Running Shoe . Sports > Running > Shoes . Zoom", 64);
        assert!(cos(&a, &b) > cos(&a, &c) + 0.2, "{} vs {}", cos(&a, &b), cos(&a, &c));
    }

    #[test]
    fn empty_text_is_the_zero_vector_and_others_are_unit() {
        assert!(embed("", 16).iter().all(|x| *x == 0.0));
        let v = embed("x", 16);
        assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
