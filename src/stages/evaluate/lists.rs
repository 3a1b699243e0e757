//! Tomorrow's lists as the evaluation reads them: the published or staged
//! `user_candidates`, and their beyond-accuracy rows (coverage, novelty,
//! category diversity, the fallbacks' shares).

use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;

use crate::arrays;
use crate::error::Result;
use crate::job::Job;
use crate::metrics::Moments;
use crate::tables::evaluation::{LISTS_SEGMENT, Row};

/// Register `user_candidates`: the published files of the date when
/// `published` and the date has a manifest, else the work table.
pub(super) async fn register_lists(job: &Job, ctx: &SessionContext, published: bool) -> Result<&'static str> {
    if published
        && let Some(m) = crate::published::read_manifest(&job.output, job.date).await?
        && let Some(t) = m.tables.iter().find(|t| t.name == "user_candidates")
    {
        let files: Vec<String> = t.files.iter().map(|f| f.path.clone()).collect();
        crate::published::register_files(ctx, "user_candidates", &job.output, &files).await?;
        return Ok("published");
    }
    job.register_work(ctx, &["user_candidates"]).await?;
    Ok("staged")
}

/// The beyond-accuracy rows of tomorrow's lists (`sql/evaluate/beyond_accuracy.sql`).
pub(super) async fn beyond_accuracy(job: &Job, ctx: &SessionContext) -> Result<Vec<Row>> {
    job.register_work(ctx, &["item_index", "interactions"]).await?;
    let level = job.cfg.candidates.category_level as i64;
    let b = crate::sql::file("evaluate", "beyond_accuracy")?
        .collect(ctx, vec![("category_level", ScalarValue::Int64(Some(level)))])
        .await?;
    let (metric, k) = (arrays::strings_required(&b, "metric")?, arrays::ints(&b, "k")?);
    let (users, n) = (arrays::ints(&b, "users")?, arrays::ints(&b, "n")?);
    let (sum, sum_sq) = (arrays::floats(&b, "sum")?, arrays::floats(&b, "sum_sq")?);
    let mut rows = Vec::new();
    for i in 0..metric.len() {
        let m = Moments { sum: sum[i].unwrap_or(0.0), sum_sq: sum_sq[i].unwrap_or(0.0), n: n[i].max(0) as usize };
        let mut row = Row::mean("nightrec", LISTS_SEGMENT, &metric[i], k[i].max(0) as usize, m, metric[i] != "novelty");
        if metric[i] == "coverage" {
            // Not a sample: the catalog's share, without an interval.
            (row.ci_low, row.ci_high) = (row.value, row.value);
        }
        row.users = users[i];
        rows.push(row);
    }
    Ok(rows)
}
