//! Stage `trainset`: clean tables → `item_index`, `sequences`,
//! `interactions`, `item_popularity`, `item_text`.
//!
//! Safe to re-run: every output folder is replaced whole.

use datafusion::common::ScalarValue;

use crate::error::Result;
use crate::job::Job;
use crate::parquet_io::WrittenTable;
use crate::sql::ts_param;

/// Run the stage.
pub async fn run(job: &Job) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let ctx = job.session()?;
    job.register_work(&ctx, &["clean_events", "items"]).await?;
    let mut tables = vec![job.sql_to_work(&ctx, "trainset", "item_index", vec![]).await?];
    job.register_work(&ctx, &["item_index"]).await?;
    // Two extra steps beyond the model's window: the validation and test items.
    let max_length = job.cfg.trainset.max_sequence_length as i64 + 2;
    tables.push(
        job.sql_to_work(&ctx, "trainset", "sequences", vec![("max_length", ScalarValue::Int64(Some(max_length)))])
            .await?,
    );
    tables.push(job.sql_to_work(&ctx, "trainset", "interactions", vec![]).await?);
    let pop_start = job.date.minus_days(job.cfg.trainset.popularity_days.saturating_sub(1)).start_millis();
    tables.push(
        job.sql_to_work(&ctx, "trainset", "item_popularity", vec![("popularity_start", ts_param(pop_start))])
            .await?,
    );
    tables.push(job.sql_to_work(&ctx, "trainset", "item_text", vec![]).await?);
    let facts = tables.iter().map(|t| (t.name.clone(), t.rows().to_string())).collect();
    Ok((tables, facts))
}
