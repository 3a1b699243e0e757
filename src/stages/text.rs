//! Stage `text`: `item_text` → `item_text_embeddings` (with the encoders of
//! [`crate::encoders`]) and `item_image_embeddings`.
//!
//! The default encoder is the pretrained all-MiniLM-L6-v2 sentence encoder
//! ([`TextEncoder`]): `tokenizers` with its shipped `tokenizer.json` (padding
//! to the longest text of a batch and truncation at `text.max_tokens`
//! instead of the file's fixed 128-token padding), a BERT written with tch
//! ([`crate::model::bert`]), mean pooling over real tokens, L2 norm. Texts
//! are batched by length so that little padding is computed. The fallback
//! `hashing` encoder needs no model files: word unigrams and bigrams plus
//! every prefix of the category path, hashed into signed buckets.
//!
//! An item with no text at all gets the zero vector with either encoder
//! (documented, never NaN): the sequence model then places it by its ID
//! embedding alone.
//!
//! Safe to re-run: the output folder is replaced whole.

use std::sync::Arc;

use datafusion::arrow::array::{Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::arrays;
use crate::config::TextEncoderKind;
use crate::encoders::{TextEncoder, embed_texts, encoder_identity, model_dir};
use crate::error::{DfContext, Result};
use crate::job::Job;
use crate::parquet_io::WrittenTable;

/// Parse catalog image embeddings (JSON arrays of numbers as text). The
/// width is the most common length; vectors of another length, with
/// non-finite values, or unparsable are left out (and counted).
pub(crate) fn parse_images(raw: &[Option<String>]) -> (Vec<Option<Vec<f32>>>, usize, usize) {
    let parsed: Vec<Option<Vec<f32>>> = raw
        .iter()
        .map(|r| {
            let v: Vec<f32> = serde_json::from_str(r.as_deref()?).ok()?;
            (!v.is_empty() && v.iter().all(|x| x.is_finite())).then_some(v)
        })
        .collect();
    let mut lengths: std::collections::BTreeMap<usize, usize> = std::collections::BTreeMap::new();
    for v in parsed.iter().flatten() {
        *lengths.entry(v.len()).or_default() += 1;
    }
    let dim = lengths.iter().max_by_key(|(len, n)| (**n, std::cmp::Reverse(**len))).map(|(l, _)| *l).unwrap_or(0);
    let given = raw.iter().filter(|r| r.as_deref().is_some_and(|t| !t.trim().is_empty())).count();
    let kept: Vec<Option<Vec<f32>>> = parsed.into_iter().map(|v| v.filter(|v| v.len() == dim)).collect();
    let rejected = given - kept.iter().flatten().count();
    (kept, dim, rejected)
}

async fn write_images(
    job: &Job,
    ctx: &datafusion::prelude::SessionContext,
) -> Result<(Option<WrittenTable>, usize, usize)> {
    let table = "item_image_embeddings";
    job.output.delete_folder(&job.work(table)).await?;
    let b = job.read_work(ctx, "item_index", crate::sql::read("item_images")?).await?;
    let idx = arrays::ints(&b, "item_idx")?;
    let (vecs, dim, rejected) = parse_images(&arrays::strings(&b, "image_embedding")?);
    let keep: Vec<usize> = (0..vecs.len()).filter(|i| vecs[*i].is_some()).collect();
    if keep.is_empty() {
        return Ok((None, 0, rejected));
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("item_idx", DataType::Int32, false),
        Field::new("embedding", arrays::vector_type(dim), false),
    ]));
    let flat: Vec<f32> = keep.iter().flat_map(|i| vecs[*i].iter().flatten().copied()).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int32Array::from_iter_values(keep.iter().map(|i| idx[*i] as i32))),
            arrays::vector_array(flat, dim)?,
        ],
    )
    .ctx("building item_image_embeddings")?;
    let t = job.write_work_batches(table, schema, &[batch]).await?;
    Ok((Some(t), keep.len(), rejected))
}

/// Run the stage.
pub(crate) async fn run(job: &Job, device: tch::Device) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let ctx = job.session()?;
    let batches = job.read_work(&ctx, "item_text", crate::sql::read("item_text")?).await?;
    let idx = arrays::ints(&batches, "item_idx")?;
    let ids = arrays::strings_required(&batches, "item_id")?;
    let texts = arrays::strings(&batches, "text")?;
    let texts: Vec<&str> = texts.iter().map(|t| t.as_deref().unwrap_or("")).collect();
    let started = std::time::Instant::now();
    let (flat, dim, cache) = match job.cfg.text.encoder {
        TextEncoderKind::Minilm => {
            let dir = model_dir(&job.cfg);
            let key = encoder_identity(&job.cfg)?;
            let (flat, dim, used) = crate::text_cache::embed(job, &key, &texts, |missing| {
                let enc = TextEncoder::load(&dir, job.cfg.text.max_tokens, device)?;
                Ok((enc.embed(missing, job.cfg.text.batch_size)?, enc.dim()))
            })
            .await?;
            (flat, dim, Some((key, used)))
        }
        TextEncoderKind::Hashing => {
            let (flat, dim) = embed_texts(&job.cfg, &texts, device)?;
            (flat, dim, None)
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let empty = texts.iter().filter(|t| t.trim().is_empty()).count();
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
    let table = "item_text_embeddings";
    let t = job.write_work_batches(table, schema, &[batch]).await?;
    let (images, with_image, rejected) = write_images(job, &ctx).await?;
    let mut facts = vec![
        ("encoder".into(), format!("{:?} ({dim} dims)", job.cfg.text.encoder).to_lowercase()),
        ("items without text (zero vector)".into(), empty.to_string()),
        ("texts per second".into(), format!("{:.0}", texts.len() as f64 / secs.max(1e-9))),
    ];
    if let Some((key, used)) = cache {
        facts.push(("texts encoded / from cache".into(), format!("{} / {}", used.encoded, used.hits)));
        facts.push((
            "text cache".into(),
            format!(
                "{}{}",
                job.output.folder_url(&crate::text_cache::folder(&key)),
                if used.compacted { " (compacted)" } else { "" }
            ),
        ));
    }
    if with_image + rejected > 0 {
        facts.push(("image embeddings kept / rejected".into(), format!("{with_image} / {rejected}")));
    }
    Ok((std::iter::once(t).chain(images).collect(), facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_embeddings_keep_the_common_width_only() {
        let raw = vec![
            Some("[0.1, 0.2, 0.3]".to_string()),
            None,
            Some("[1, 2, 3]".to_string()),
            Some("[1, 2]".to_string()),
            Some("not json".to_string()),
            Some("[1, 2, 3e400]".to_string()),
        ];
        let (v, dim, rejected) = parse_images(&raw);
        assert_eq!(dim, 3);
        assert_eq!(rejected, 3);
        assert_eq!(v.iter().filter(|x| x.is_some()).count(), 2);
        assert_eq!(v[2].as_deref(), Some(&[1.0f32, 2.0, 3.0][..]));
    }
}
