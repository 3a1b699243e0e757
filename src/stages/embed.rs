//! Stage `embed`: checkpoint → `item_embeddings` (every catalog item,
//! interactions or not) and `user_embeddings` (every user with a sequence,
//! encoded from their most recent items), in memory-bounded batches. In
//! buy-again mode (`candidates.repeat_purchases`) it also chooses the
//! explore weight tomorrow's lists use ([`crate::basket::choose_explore_weight`],
//! recorded under the date's work folder), so that the candidates stage
//! evaluates nothing.
//!
//! Safe to re-run: both folders are replaced whole.

use std::sync::Arc;

use datafusion::arrow::array::{Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use tch::{Kind, Tensor};

use crate::arrays;
use crate::checkpoint;
use crate::error::{DfContext, Error, Result};
use crate::job::Job;
use crate::parquet_io::{PartWriter, WrittenTable};
use crate::seqdata::{self, left_pad};

/// Users encoded per forward pass.
const USER_BATCH: usize = 512;

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]))
        .map_err(|e| Error::torch("copying embeddings to host", e))
}

/// Run the stage.
pub(crate) async fn run(job: &Job, device: tch::Device) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let data = seqdata::load(job).await?;
    let (_vs, model, meta) = checkpoint::load(job, device, checkpoint::Weights::Published).await?;
    if meta.item_ids != data.item_ids {
        return Err(Error::Internal("checkpoint item map differs from this date's item_index".into()));
    }
    let dim = model.config().dim as usize;
    let max_len = model.config().max_len as usize;
    let feats = data.features(device);
    let items = tch::no_grad(|| model.item_table(&feats));
    let max_rows = job.cfg.runtime.max_rows_per_file;

    let item_schema = Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::Utf8, false),
        Field::new("item_idx", DataType::Int32, false),
        Field::new("embedding", arrays::vector_type(dim), false),
    ]));
    let mut w = PartWriter::create(
        &job.output,
        &job.work("item_embeddings"),
        "item_embeddings",
        item_schema.clone(),
        &job.lineage,
        max_rows,
    )
    .await?;
    let n = data.item_ids.len();
    for start in (0..n).step_by(65536) {
        let end = (start + 65536).min(n);
        let vals = to_vec(&items.narrow(0, start as i64 + 1, (end - start) as i64))?;
        let batch = RecordBatch::try_new(
            item_schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(data.item_ids[start..end].iter())),
                Arc::new(Int32Array::from_iter_values((start..end).map(|i| i as i32 + 1))),
                arrays::vector_array(vals, dim)?,
            ],
        )
        .ctx("building item_embeddings")?;
        w.write(&batch).await?;
    }
    let item_table = w.finish().await?;

    let user_schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("embedding", arrays::vector_type(dim), false),
    ]));
    let mut w = PartWriter::create(
        &job.output,
        &job.work("user_embeddings"),
        "user_embeddings",
        user_schema.clone(),
        &job.lineage,
        max_rows,
    )
    .await?;
    let order: Vec<usize> = (0..data.users.len()).filter(|u| !data.seqs[*u].is_empty()).collect();
    for chunk in order.chunks(USER_BATCH) {
        let seqs: Vec<&[i64]> = chunk.iter().map(|u| data.seqs[*u].as_slice()).collect();
        let h = tch::no_grad(|| model.encode_last(&left_pad(&seqs, max_len, device), &items));
        let batch = RecordBatch::try_new(
            user_schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(chunk.iter().map(|u| data.users[*u].as_str()))),
                arrays::vector_array(to_vec(&h)?, dim)?,
            ],
        )
        .ctx("building user_embeddings")?;
        w.write(&batch).await?;
    }
    let user_table = w.finish().await?;
    let facts = vec![
        ("users embedded".into(), user_table.rows().to_string()),
        ("items embedded".into(), item_table.rows().to_string()),
    ];
    if job.cfg.candidates.repeat_purchases {
        drop((model, items));
        crate::basket::choose_explore_weight(job, &data, device).await?;
    }
    Ok((vec![user_table, item_table], facts))
}
