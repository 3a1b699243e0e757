//! The SQL files under `sql/<stage>/<table>.sql`, embedded in the binary so
//! that a deployed job runs exactly the statements it was tested with.
//! Parameters are bound as `$name` placeholders, never formatted into text.

use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;

use crate::error::{DfContext, Result};

/// One SQL statement producing one table.
#[derive(Debug, Clone, Copy)]
pub struct SqlFile {
    /// The stage folder under `sql/`.
    pub stage: &'static str,
    /// The table the statement produces (the file's stem).
    pub table: &'static str,
    /// The statement.
    pub text: &'static str,
}

macro_rules! sql_file {
    ($stage:literal, $table:literal) => {
        SqlFile { stage: $stage, table: $table, text: include_str!(concat!("../sql/", $stage, "/", $table, ".sql")) }
    };
}

/// Every statement, in the order the stages run them.
pub const ALL: &[SqlFile] = &[
    sql_file!("clean", "items_checked"),
    sql_file!("clean", "items"),
    sql_file!("clean", "events_ruled"),
    sql_file!("clean", "events_checked"),
    sql_file!("clean", "users_checked"),
    sql_file!("clean", "users"),
    sql_file!("clean", "clean_events"),
    sql_file!("clean", "quarantine"),
    sql_file!("clean", "file_counts"),
    sql_file!("clean", "quarantine_counts"),
    sql_file!("trainset", "item_index"),
    sql_file!("trainset", "steps"),
    sql_file!("trainset", "sequences"),
    sql_file!("trainset", "interactions"),
    sql_file!("trainset", "item_cooccurrence"),
    sql_file!("trainset", "item_text"),
    sql_file!("candidates", "popular_items"),
    sql_file!("candidates", "top_queries"),
    sql_file!("evaluate", "recent_popularity"),
    sql_file!("evaluate", "beyond_accuracy"),
    sql_file!("publish", "candidate_checks"),
    sql_file!("publish", "day_stats"),
    sql_file!("publish", "candidate_overlap"),
    sql_file!("report", "score_histogram"),
    sql_file!("read", "basket_steps"),
    sql_file!("read", "data_quality"),
    sql_file!("read", "evaluation"),
    sql_file!("read", "first_sources"),
    sql_file!("read", "histories"),
    sql_file!("read", "interactions"),
    sql_file!("read", "item_cooccurrence"),
    sql_file!("read", "item_embeddings"),
    sql_file!("read", "item_facts"),
    sql_file!("read", "item_ids"),
    sql_file!("read", "item_image_embeddings"),
    sql_file!("read", "item_images"),
    sql_file!("read", "item_stock"),
    sql_file!("read", "item_text"),
    sql_file!("read", "item_text_embeddings"),
    sql_file!("read", "item_text_vectors"),
    sql_file!("read", "sequences"),
    sql_file!("read", "training_epochs"),
    sql_file!("read", "user_embeddings"),
    sql_file!("read", "user_ids"),
];

/// A projection of one table that a stage or the report reads into
/// memory (`sql/read/<name>.sql`).
pub(crate) fn read(name: &str) -> Result<SqlFile> {
    file("read", name)
}

/// Look up a statement by stage and table.
pub fn file(stage: &str, table: &str) -> Result<SqlFile> {
    ALL.iter()
        .find(|f| f.stage == stage && f.table == table)
        .copied()
        .ok_or_else(|| crate::Error::Internal(format!("no SQL file sql/{stage}/{table}.sql")))
}

impl SqlFile {
    /// Plan the statement with its parameters bound.
    pub async fn plan(&self, ctx: &SessionContext, params: Vec<(&str, ScalarValue)>) -> Result<DataFrame> {
        let what = format!("sql/{}/{}.sql", self.stage, self.table);
        let df = ctx.sql(self.text).await.ctx(format!("planning {what}"))?;
        if params.is_empty() {
            Ok(df)
        } else {
            df.with_param_values(params).ctx(format!("binding parameters of {what}"))
        }
    }
}

impl SqlFile {
    /// Plan, run and collect the statement (for small results).
    pub async fn collect(
        &self,
        ctx: &SessionContext,
        params: Vec<(&str, ScalarValue)>,
    ) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        let what = format!("running sql/{}/{}.sql", self.stage, self.table);
        self.plan(ctx, params).await?.collect().await.ctx(what)
    }
}

/// A timestamp parameter (UTC, nanoseconds, no time zone) from epoch millis.
pub fn ts_param(millis: i64) -> ScalarValue {
    ScalarValue::TimestampNanosecond(Some(millis.saturating_mul(1_000_000)), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_under_sql_is_registered_and_every_registered_one_exists() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
        let mut on_disk = std::collections::BTreeSet::new();
        for stage in std::fs::read_dir(&root).unwrap() {
            let stage = stage.unwrap().path();
            for f in std::fs::read_dir(&stage).unwrap() {
                let f = f.unwrap().path();
                let dir = stage.file_name().unwrap().to_string_lossy().into_owned();
                assert_eq!(f.extension().and_then(|e| e.to_str()), Some("sql"), "not a .sql file: {}", f.display());
                on_disk.insert(format!("{dir}/{}", f.file_stem().unwrap().to_string_lossy()));
            }
        }
        let registered: std::collections::BTreeSet<String> =
            ALL.iter().map(|f| format!("{}/{}", f.stage, f.table)).collect();
        assert_eq!(registered.len(), ALL.len(), "a statement is registered twice");
        assert_eq!(on_disk, registered, "sql/ and sql::ALL differ");
    }
}
