//! Stage `trainset`: clean tables → `item_index`, `steps`, `sequences`,
//! `interactions`, `item_cooccurrence`, `item_text`.
//!
//! `steps` is the time-based split: each user's chronological steps with
//! the last ones marked `test` and `valid`; `sequences` holds them as lists
//! for the model; co-occurrence feeds the item-kNN baseline. Only training
//! steps count towards co-occurrence, so baselines never see the held-out
//! items.
//!
//! Safe to re-run: every output folder is replaced whole.

use datafusion::common::ScalarValue;

use crate::error::{DfContext, Result};
use crate::job::Job;
use crate::parquet_io::WrittenTable;

fn int(v: usize) -> ScalarValue {
    ScalarValue::Int64(Some(v as i64))
}

/// Run the stage.
pub(crate) async fn run(job: &Job) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let cfg = &job.cfg.trainset;
    let ctx = job.session()?;
    job.register_work(&ctx, &["clean_events", "items"]).await?;
    ctx.register_batch("event_weights", crate::tables::event_weights::batch(&job.cfg)?)
        .ctx("registering event_weights")?;
    let mut tables = vec![job.sql_to_work(&ctx, "trainset", "item_index", vec![]).await?];
    job.register_work(&ctx, &["item_index"]).await?;
    let max_length = cfg.max_sequence_length + cfg.test_steps + cfg.valid_steps;
    let params = vec![
        ("max_length", int(max_length)),
        ("test_steps", int(cfg.test_steps)),
        ("valid_steps", int(cfg.valid_steps)),
        ("repeat", ScalarValue::Boolean(Some(job.cfg.candidates.repeat_purchases))),
    ];
    tables.push(job.sql_to_work(&ctx, "trainset", "steps", params).await?);
    job.register_work(&ctx, &["steps"]).await?;
    tables.push(job.sql_to_work(&ctx, "trainset", "sequences", vec![]).await?);
    tables.push(job.sql_to_work(&ctx, "trainset", "interactions", vec![]).await?);
    tables.push(
        job.sql_to_work(&ctx, "trainset", "item_cooccurrence", vec![("window", int(cfg.cooccurrence_window))]).await?,
    );
    tables.push(job.sql_to_work(&ctx, "trainset", "item_text", vec![]).await?);
    // Row counts are in the summary's table list already.
    Ok((tables, Vec::new()))
}
