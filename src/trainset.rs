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

use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;

use crate::error::{DfContext, Result};
use crate::job::Job;
use crate::parquet_io::WrittenTable;

fn int(v: usize) -> ScalarValue {
    ScalarValue::Int64(Some(v as i64))
}

/// Run the stage.
pub async fn run(job: &Job) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let cfg = &job.cfg.trainset;
    let ctx = job.session()?;
    job.register_work(&ctx, &["clean_events", "items"]).await?;
    ctx.register_batch("event_weights", event_weights(job)?).ctx("registering event_weights")?;
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

/// The configured event weights as a table for the SQL.
pub fn event_weights(job: &Job) -> Result<RecordBatch> {
    let pairs = job.cfg.trainset.event_weights.pairs();
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_type", DataType::Utf8, false),
        Field::new("weight", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(pairs.iter().map(|p| p.0.as_str()))),
            Arc::new(Float64Array::from_iter_values(pairs.iter().map(|p| p.1))),
        ],
    )
    .ctx("building event_weights")
}
