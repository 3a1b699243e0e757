//! Stage `clean`: raw inputs → `items`, `users`, `clean_events`,
//! `quarantine`, `data_quality` (plus the `*_checked` tables that hold every
//! input row with its verdict).
//!
//! Every input row ends up either clean or in `quarantine` with its source
//! file, position and reason code; `data_quality` proves rows read = clean +
//! quarantined per file. Above `clean.max_bad_row_fraction` of bad event
//! rows the stage fails with exit 3 after writing `quarantine` and
//! `data_quality` (for a human to read) and nothing is published.
//!
//! Safe to re-run: every output folder is replaced whole.

use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use object_store::ObjectMeta;

use crate::arrays;
use crate::error::{DfContext, Error, Result};
use crate::ingest::{self, DATASETS};
use crate::job::Job;
use crate::parquet_io::{WrittenTable, write_batches};
use crate::sql::ts_param;

/// The input files of a run, per dataset, and their fingerprint.
pub struct InputFiles {
    /// (dataset name, files) in `DATASETS` order.
    pub files: Vec<(&'static str, Vec<ObjectMeta>)>,
    /// Fingerprint of all of them.
    pub snapshot: String,
}

/// First day of the lookback window.
pub fn window_start(job: &Job) -> crate::config::RunDate {
    job.date.minus_days(job.cfg.run.lookback_days.saturating_sub(1))
}

/// List the input files this run reads.
pub async fn list_inputs(job: &Job) -> Result<InputFiles> {
    let window = Some((window_start(job), job.date));
    let mut files = Vec::new();
    let mut all = Vec::new();
    for ds in DATASETS {
        let f = ingest::list_files(&job.input, ds, window).await?;
        all.extend(f.iter().cloned());
        files.push((ds.name, f));
    }
    Ok(InputFiles { snapshot: ingest::snapshot(&all), files })
}

/// A row of `data_quality`.
struct Check {
    source: String,
    check: String,
    value: f64,
    threshold: Option<f64>,
    passed: bool,
}

/// Run the stage; returns tables written and facts for the summary.
pub async fn run(job: &Job, inputs: &InputFiles) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let ctx = job.session()?;
    for (ds, (_, files)) in DATASETS.iter().zip(&inputs.files) {
        ingest::register(&ctx, &job.input, *ds, files).await?;
    }
    let start = window_start(job).start_millis();
    let end = job.date.plus_days(1).start_millis();
    let mut tables = Vec::new();
    tables.push(job.sql_to_work(&ctx, "clean", "items_checked", vec![]).await?);
    job.register_work(&ctx, &["items_checked"]).await?;
    tables.push(job.sql_to_work(&ctx, "clean", "items", vec![]).await?);
    job.register_work(&ctx, &["items"]).await?;
    let params = vec![
        ("window_start", ts_param(start)),
        ("window_end", ts_param(end)),
        ("bot_per_minute", ScalarValue::Int64(Some(i64::from(job.cfg.clean.bot_max_events_per_minute)))),
        ("bot_per_day", ScalarValue::Int64(Some(i64::from(job.cfg.clean.bot_max_events_per_day)))),
    ];
    tables.push(job.sql_to_work(&ctx, "clean", "events_checked", params).await?);
    job.register_work(&ctx, &["events_checked"]).await?;
    tables.push(job.sql_to_work(&ctx, "clean", "users_checked", vec![]).await?);
    job.register_work(&ctx, &["users_checked"]).await?;
    tables.push(job.sql_to_work(&ctx, "clean", "users", vec![]).await?);
    let gap = i64::from(job.cfg.clean.session_gap_minutes) * 60;
    tables.push(
        job.sql_to_work(&ctx, "clean", "clean_events", vec![("session_gap_seconds", ScalarValue::Int64(Some(gap)))])
            .await?,
    );
    tables.push(job.sql_to_work(&ctx, "clean", "quarantine", vec![]).await?);

    let counts = crate::sql::file("clean", "file_counts")?
        .plan(&ctx, vec![])
        .await?
        .collect()
        .await
        .ctx("counting rows per input file")?;
    let (checks, gate) = quality_checks(job, &counts)?;
    tables.push(write_quality(job, &checks).await?);

    let events_read: f64 = checks.iter().filter(|c| c.check == "events_read").map(|c| c.value).sum();
    let clean_rows = tables.iter().find(|t| t.name == "clean_events").map(|t| t.rows()).unwrap_or(0);
    let quarantined = tables.iter().find(|t| t.name == "quarantine").map(|t| t.rows()).unwrap_or(0);
    let facts = vec![
        ("input snapshot".into(), inputs.snapshot.clone()),
        ("event rows read".into(), format!("{events_read}")),
        ("clean events".into(), clean_rows.to_string()),
        ("quarantined rows".into(), quarantined.to_string()),
    ];
    if let Some(msg) = gate {
        return Err(Error::DataQuality(msg));
    }
    if clean_rows == 0 {
        return Err(Error::DataQuality(format!(
            "no clean events in the window {}..={} under {}",
            window_start(job),
            job.date,
            job.input.folder_url("events")
        )));
    }
    Ok((tables, facts))
}

fn quality_checks(job: &Job, counts: &[RecordBatch]) -> Result<(Vec<Check>, Option<String>)> {
    let sources = arrays::strings_required(counts, "source")?;
    let read = arrays::ints(counts, "rows_read")?;
    let clean = arrays::ints(counts, "clean")?;
    let bad = arrays::ints(counts, "quarantined")?;
    let events_prefix = job.input.folder_url("events");
    let threshold = job.cfg.clean.max_bad_row_fraction;
    let mut checks = Vec::new();
    let (mut ev_read, mut ev_bad) = (0i64, 0i64);
    let mut worst: Option<(String, f64)> = None;
    let mut unbalanced = 0;
    for i in 0..sources.len() {
        let balanced = read[i] == clean[i] + bad[i];
        if !balanced {
            unbalanced += 1;
        }
        checks.push(Check {
            source: sources[i].clone(),
            check: "read_equals_clean_plus_quarantined".into(),
            value: (read[i] - clean[i] - bad[i]) as f64,
            threshold: Some(0.0),
            passed: balanced,
        });
        let frac = if read[i] > 0 { bad[i] as f64 / read[i] as f64 } else { 0.0 };
        checks.push(Check {
            source: sources[i].clone(),
            check: "bad_row_fraction".into(),
            value: frac,
            threshold: None,
            passed: true,
        });
        if sources[i].starts_with(&events_prefix) {
            ev_read += read[i];
            ev_bad += bad[i];
            if worst.as_ref().is_none_or(|w| frac > w.1) {
                worst = Some((sources[i].clone(), frac));
            }
        }
    }
    let overall = if ev_read > 0 { ev_bad as f64 / ev_read as f64 } else { 0.0 };
    let passed = overall <= threshold;
    checks.push(Check { source: "*".into(), check: "events_read".into(), value: ev_read as f64, threshold: None, passed: true });
    checks.push(Check {
        source: "*".into(),
        check: "events_bad_row_fraction".into(),
        value: overall,
        threshold: Some(threshold),
        passed,
    });
    if unbalanced > 0 {
        return Err(Error::Internal(format!(
            "{unbalanced} input files lost rows between reading and cleaning (see data_quality)"
        )));
    }
    let gate = (!passed).then(|| {
        let (file, frac) = worst.unwrap_or_default();
        format!(
            "{:.2}% of event rows were quarantined, above clean.max_bad_row_fraction = {:.2}%; \
             worst file {file} ({:.1}% bad); see the quarantine and data_quality tables under {}",
            overall * 100.0,
            threshold * 100.0,
            frac * 100.0,
            job.output.folder_url(&job.work(""))
        )
    });
    Ok((checks, gate))
}

async fn write_quality(job: &Job, checks: &[Check]) -> Result<WrittenTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("check", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("threshold", DataType::Float64, true),
        Field::new("passed", DataType::Boolean, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(checks.iter().map(|c| c.source.as_str()))),
            Arc::new(StringArray::from_iter_values(checks.iter().map(|c| c.check.as_str()))),
            Arc::new(Float64Array::from_iter_values(checks.iter().map(|c| c.value))),
            Arc::new(Float64Array::from_iter(checks.iter().map(|c| c.threshold))),
            Arc::new(BooleanArray::from_iter(checks.iter().map(|c| Some(c.passed)))),
        ],
    )
    .ctx("building data_quality")?;
    write_batches(&job.output, &job.work("data_quality"), "data_quality", schema, &[batch], &job.lineage, job.cfg.runtime.max_rows_per_file).await
}
