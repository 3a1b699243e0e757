//! Reading raw input datasets (`events/`, `items/`, `users/`) from object
//! storage into DataFusion, whatever their file format.
//!
//! Every file is read on its own and projected to the dataset's contract
//! columns as text (missing optional columns become NULL), plus `_source`
//! (the file's URL) and `_position` (1-based row number in the file), so
//! that cleaning SQL sees one shape and can report where each row came from.
//! Hive folders `dt=YYYY-MM-DD` outside the run's window (with a day of slack
//! either side) are not read at all.

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::array::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::prelude::{
    CsvReadOptions, Expr, JsonReadOptions, ParquetReadOptions, SessionContext, cast, col, lit,
};
use object_store::ObjectMeta;
use sha2::{Digest, Sha256};
use std::sync::Arc;

use crate::config::{RunDate, hex};
use crate::error::{DfContext, Error, Result};
use crate::storage::Root;

/// A raw input dataset and its contract columns.
#[derive(Debug, Clone, Copy)]
pub struct Dataset {
    /// Folder name under the input root, and `raw_<name>` as a table.
    pub name: &'static str,
    /// Columns of the input contract, read as text.
    pub columns: &'static [&'static str],
    /// Whether a run can go on without any file of it.
    pub required: bool,
}

/// Behaviour events.
pub const EVENTS: Dataset = Dataset {
    name: "events",
    columns: &[
        "event_id", "user_id", "item_id", "event_type", "ts", "session_id", "query", "rating",
        "quantity", "price",
    ],
    required: true,
};

/// The catalog.
pub const ITEMS: Dataset = Dataset {
    name: "items",
    columns: &["item_id", "title", "description", "category", "brand", "price", "in_stock", "created_at"],
    required: true,
};

/// Optional user attributes.
pub const USERS: Dataset = Dataset { name: "users", columns: &["user_id", "signup_ts"], required: false };

/// All raw datasets.
pub const DATASETS: [Dataset; 3] = [EVENTS, ITEMS, USERS];

/// File formats, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Apache Parquet.
    Parquet,
    /// CSV with a header row.
    Csv,
    /// Newline-delimited JSON.
    Json,
}

impl Format {
    /// The format of a file name, if it is a data file.
    pub fn of(name: &str) -> Option<(Format, &'static str)> {
        let lower = name.to_ascii_lowercase();
        [
            (".parquet", Format::Parquet, ".parquet"),
            (".csv", Format::Csv, ".csv"),
            (".jsonl", Format::Json, ".jsonl"),
            (".ndjson", Format::Json, ".ndjson"),
            (".json", Format::Json, ".json"),
        ]
        .into_iter()
        .find(|(ext, _, _)| lower.ends_with(ext))
        .map(|(_, f, e)| (f, e))
    }
}

/// The `dt=` partition date in a path, if any.
fn partition_date(path: &str) -> Option<RunDate> {
    path.split('/').find_map(|seg| seg.strip_prefix("dt=")).and_then(|d| d.parse().ok())
}

/// Data files of a dataset, sorted by path; `window` limits Hive partitions.
pub async fn list_files(root: &Root, ds: Dataset, window: Option<(RunDate, RunDate)>) -> Result<Vec<ObjectMeta>> {
    let all = root.list(ds.name).await?;
    Ok(all
        .into_iter()
        .filter(|m| {
            let name = m.location.filename().unwrap_or("");
            if name.starts_with('_') || name.starts_with('.') || Format::of(name).is_none() {
                return false;
            }
            match (window, partition_date(m.location.as_ref())) {
                (Some((start, end)), Some(d)) => d >= start.minus_days(1) && d <= end.plus_days(1),
                _ => true,
            }
        })
        .collect())
}

/// A stable fingerprint of the files a run reads: names, sizes, mtimes.
pub fn snapshot(files: &[ObjectMeta]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.location.as_ref().as_bytes());
        h.update(f.size.to_le_bytes());
        h.update(f.last_modified.timestamp_millis().to_le_bytes());
        if let Some(e) = &f.e_tag {
            h.update(e.as_bytes());
        }
    }
    hex(&h.finalize())[..16].to_string()
}

fn text_schema(ds: Dataset) -> Schema {
    let mut fields: Vec<Field> = ds.columns.iter().map(|c| Field::new(*c, DataType::Utf8, true)).collect();
    fields.push(Field::new("_source", DataType::Utf8, false));
    fields.push(Field::new("_position", DataType::UInt64, false));
    Schema::new(fields)
}

async fn read_file(ctx: &SessionContext, url: &str, format: Format, ext: &str) -> Result<DataFrame> {
    let what = format!("reading {url}");
    match format {
        Format::Parquet => ctx.read_parquet(url, ParquetReadOptions::default().file_extension(ext)).await,
        Format::Csv => {
            // Column types are inferred over the whole file so that a late
            // odd value cannot break the read; cleaning casts everything.
            let opts = CsvReadOptions::new().has_header(true).file_extension(ext).schema_infer_max_records(usize::MAX);
            ctx.read_csv(url, opts).await
        }
        Format::Json => {
            let opts = JsonReadOptions { file_extension: ext, schema_infer_max_records: usize::MAX, ..Default::default() };
            ctx.read_json(url, opts).await
        }
    }
    .ctx(what)
}

/// Project one file to the contract columns as text, plus source and position.
fn project(df: DataFrame, ds: Dataset, url: &str) -> Result<DataFrame> {
    let present: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
    let mut exprs: Vec<Expr> = ds
        .columns
        .iter()
        .map(|c| {
            if present.iter().any(|p| p == c) {
                cast(col(format!("\"{c}\"")), DataType::Utf8).alias(*c)
            } else {
                lit(ScalarValue::Utf8(None)).alias(*c)
            }
        })
        .collect();
    exprs.push(lit(url.to_string()).alias("_source"));
    exprs.push(cast(row_number(), DataType::UInt64).alias("_position"));
    df.select(exprs).ctx(format!("projecting {url}"))
}

/// Register `raw_<dataset>` over the given files; returns the row count of
/// files read. A dataset without files is an empty table (an error when the
/// dataset is required).
pub async fn register(ctx: &SessionContext, root: &Root, ds: Dataset, files: &[ObjectMeta]) -> Result<()> {
    if files.is_empty() && ds.required {
        return Err(Error::Data(format!(
            "no {} files (.parquet, .csv, .jsonl, .ndjson) under {}",
            ds.name,
            root.folder_url(ds.name)
        )));
    }
    let mut union: Option<DataFrame> = None;
    for f in files {
        let url = root.object_url(&f.location);
        let name = f.location.filename().unwrap_or("");
        let Some((format, ext)) = Format::of(name) else { continue };
        let df = project(read_file(ctx, &url, format, ext).await?, ds, &url)?;
        union = Some(match union {
            None => df,
            Some(u) => u.union(df).ctx(format!("combining {} files", ds.name))?,
        });
    }
    let df = match union {
        Some(df) => df,
        None => ctx
            .read_batch(RecordBatch::new_empty(Arc::new(text_schema(ds))))
            .ctx(format!("empty {}", ds.name))?,
    };
    ctx.register_table(format!("raw_{}", ds.name), df.into_view())
        .ctx(format!("registering raw_{}", ds.name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_extensions() {
        assert_eq!(Format::of("a/part-0.PARQUET").map(|f| f.0), Some(Format::Parquet));
        assert_eq!(Format::of("x.ndjson").map(|f| f.0), Some(Format::Json));
        assert_eq!(Format::of("x.csv").map(|f| f.0), Some(Format::Csv));
        assert!(Format::of("_SUCCESS").is_none());
    }

    #[test]
    fn partition_dates_are_found_in_paths() {
        assert_eq!(partition_date("events/dt=2026-11-21/part-0.parquet").map(|d| d.to_string()), Some("2026-11-21".into()));
        assert!(partition_date("events/part-0.parquet").is_none());
    }
}
