//! Stage `clean`: raw inputs → `items`, `users`, `clean_events`,
//! `quarantine`, `data_quality` (plus the `*_checked` tables that hold every
//! input row with its verdict).
//!
//! Every input row ends up either clean or in `quarantine` with its source
//! file, position and reason code; `data_quality` proves rows read = clean +
//! quarantined per file. Above `clean.max_bad_row_fraction` of defective
//! event rows (among those inside the window; rows outside it and bot rows
//! are quarantined but are no defects), or above `clean.max_bot_fraction`
//! of bot rows, the stage fails with exit 3 after writing `quarantine` and
//! `data_quality` (for a human to read) and nothing is published. Input
//! files that are not read (an unknown extension) are listed in
//! `data_quality` as `file_not_read`.
//!
//! Safe to re-run: every output folder is replaced whole.

use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use object_store::ObjectMeta;

use crate::arrays;
use crate::error::{DfContext, Error, Result};
use crate::ingest::{self, DATASETS, IdMapper, ReadCounts};
use crate::job::Job;
use crate::parquet_io::WrittenTable;
use crate::sql::ts_param;

/// The input files of a run, per dataset, and their fingerprint.
pub struct InputFiles {
    /// (dataset name, files) in `DATASETS` order.
    pub files: Vec<(&'static str, Vec<ObjectMeta>)>,
    /// Files under the input folders that are not read (unknown extension).
    pub not_read: Vec<ObjectMeta>,
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
    let mut not_read = Vec::new();
    for ds in DATASETS {
        let listing = ingest::list_files(&job.input, ds, window).await?;
        all.extend(listing.files.iter().cloned());
        files.push((ds.name, listing.files));
        // Part of the snapshot, so that a new unreadable file is reported on a rerun.
        all.extend(listing.unreadable_format.iter().cloned());
        not_read.extend(listing.unreadable_format);
    }
    Ok(InputFiles { snapshot: ingest::snapshot(&all), files, not_read })
}

/// The user-id pseudonymiser of privacy mode, when it is on. The key comes
/// from the environment only, like every other secret.
pub fn id_mapper(cfg: &crate::config::Config) -> Result<Option<Arc<dyn IdMapper>>> {
    if !cfg.clean.pseudonymize_user_ids {
        return Ok(None);
    }
    match std::env::var(USER_ID_KEY_ENV) {
        Ok(k) if k.len() >= 16 => Ok(Some(Arc::new(ingest::KeyedHash::new(k.as_bytes())))),
        _ => Err(Error::Config(format!(
            "clean.pseudonymize_user_ids is on but {USER_ID_KEY_ENV} is unset or shorter than 16 bytes"
        ))),
    }
}

/// The environment variable holding the privacy-mode key.
pub const USER_ID_KEY_ENV: &str = "NIGHTREC_USER_ID_KEY";

/// Rows per input file as counted by the readers themselves.
fn files_read(counts: &ReadCounts) -> Result<RecordBatch> {
    let files = counts.snapshot()?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("dataset", DataType::Utf8, false),
        Field::new("rows_read", DataType::Int64, false),
        Field::new("unreadable", DataType::Boolean, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(files.iter().map(|f| f.0.as_str()))),
            Arc::new(StringArray::from_iter_values(files.iter().map(|f| f.1))),
            Arc::new(Int64Array::from_iter_values(files.iter().map(|f| f.2 as i64))),
            Arc::new(BooleanArray::from_iter(files.iter().map(|f| Some(f.3)))),
        ],
    )
    .ctx("building files_read")
}

/// A row of `data_quality`.
pub(crate) struct Check {
    pub source: String,
    pub check: String,
    pub value: f64,
    pub threshold: Option<f64>,
    pub passed: bool,
}

/// Run the stage; returns tables written and facts for the summary.
pub async fn run(job: &Job, inputs: &InputFiles) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let ctx = job.session()?;
    let counts = ReadCounts::default();
    let mapper = id_mapper(&job.cfg)?;
    for (ds, (_, files)) in DATASETS.iter().zip(&inputs.files) {
        ingest::register(&ctx, &job.input, *ds, files, mapper.clone(), &counts)?;
    }
    let start = window_start(job).start_millis();
    let end = job.date.plus_days(1).start_millis();
    let mut tables = Vec::new();
    tables.push(job.sql_to_work(&ctx, "clean", "items_checked", vec![]).await?);
    job.register_work(&ctx, &["items_checked"]).await?;
    tables.push(job.sql_to_work(&ctx, "clean", "items", vec![]).await?);
    job.register_work(&ctx, &["items"]).await?;
    let window = vec![("window_start", ts_param(start)), ("window_end", ts_param(end))];
    tables.push(job.sql_to_work(&ctx, "clean", "events_ruled", window).await?);
    job.register_work(&ctx, &["events_ruled"]).await?;
    let bots = vec![
        ("bot_per_minute", ScalarValue::Int64(Some(i64::from(job.cfg.clean.bot_max_events_per_minute)))),
        ("bot_per_day", ScalarValue::Int64(Some(i64::from(job.cfg.clean.bot_max_events_per_day)))),
    ];
    tables.push(job.sql_to_work(&ctx, "clean", "events_checked", bots).await?);
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

    ctx.register_batch("files_read", files_read(&counts)?).ctx("registering files_read")?;
    let counts = crate::sql::file("clean", "file_counts")?.collect(&ctx, vec![]).await?;
    job.register_work(&ctx, &["quarantine"]).await?;
    let reasons = crate::sql::file("clean", "quarantine_counts")?.collect(&ctx, vec![]).await?;
    let (mut checks, gate) = quality_checks(job, &counts, &reasons)?;
    // Never silent: a file nightrec cannot read is named, with its size.
    for f in &inputs.not_read {
        let url = job.input.object_url(&f.location);
        tracing::warn!(file = %url, "not read: nightrec does not read this file's format ({})", ingest::READABLE);
        checks.push(Check {
            source: url,
            check: "file_not_read".into(),
            value: f.size as f64,
            threshold: None,
            passed: false,
        });
    }
    tables.push(write_quality(job, &checks).await?);

    let events_read: f64 = checks.iter().filter(|c| c.check == "events_read").map(|c| c.value).sum();
    let clean_rows = tables.iter().find(|t| t.name == "clean_events").map(|t| t.rows()).unwrap_or(0);
    let quarantined = tables.iter().find(|t| t.name == "quarantine").map(|t| t.rows()).unwrap_or(0);
    let mut facts = vec![
        ("input snapshot".into(), inputs.snapshot.clone()),
        ("event rows read".into(), format!("{events_read}")),
        ("clean events".into(), clean_rows.to_string()),
        ("quarantined rows".into(), quarantined.to_string()),
    ];
    if !inputs.not_read.is_empty() {
        facts.push(("files not read (format)".into(), inputs.not_read.len().to_string()));
    }
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

/// Quarantine reasons that are not defects of the data: rows outside the
/// run's window (files and partitions often hold neighbouring days) and
/// bot traffic (the filter doing its job). Neither counts against
/// `clean.max_bad_row_fraction`; bots have their own threshold.
const NOT_DEFECTS: [&str; 2] = ["out_of_window", "bot"];

fn quality_checks(job: &Job, counts: &[RecordBatch], reasons: &[RecordBatch]) -> Result<(Vec<Check>, Option<String>)> {
    let r_source = arrays::strings_required(reasons, "source")?;
    let r_reason = arrays::strings_required(reasons, "reason")?;
    let r_n = arrays::ints(reasons, "n")?;
    let sources = arrays::strings_required(counts, "source")?;
    let datasets = arrays::strings_required(counts, "dataset")?;
    let read = arrays::ints(counts, "rows_read")?;
    let unreadable = arrays::bools(counts, "unreadable", false)?;
    let clean = arrays::ints(counts, "clean")?;
    let bad = arrays::ints(counts, "quarantined")?;
    let threshold = job.cfg.clean.max_bad_row_fraction;
    let bot_threshold = job.cfg.clean.max_bot_fraction;
    let mut checks = Vec::new();
    // Event rows read, inside the window, defective, and from bots.
    let (mut ev_read, mut ev_in_window, mut ev_defects, mut ev_bots) = (0i64, 0i64, 0i64, 0i64);
    let mut worst: Option<(String, f64)> = None;
    let mut unbalanced = 0;
    let mut broken_files = Vec::new();
    for i in 0..sources.len() {
        let balanced = read[i] == clean[i] + bad[i];
        if !balanced {
            unbalanced += 1;
        }
        let check = |name: &str, value: f64, threshold: Option<f64>, passed: bool| Check {
            source: sources[i].clone(),
            check: name.into(),
            value,
            threshold,
            passed,
        };
        checks.push(check("rows_read", read[i] as f64, None, true));
        checks.push(check("rows_clean", clean[i] as f64, None, true));
        checks.push(check("rows_quarantined", bad[i] as f64, None, true));
        checks.push(check(
            "read_minus_clean_minus_quarantined",
            (read[i] - clean[i] - bad[i]) as f64,
            Some(0.0),
            balanced,
        ));
        let of_file: Vec<usize> = (0..r_source.len()).filter(|j| r_source[*j] == sources[i]).collect();
        let with_reason =
            |reason: &str| of_file.iter().filter(|j| r_reason[**j] == reason).map(|j| r_n[*j]).sum::<i64>();
        let (outside, bots) = (with_reason(NOT_DEFECTS[0]), with_reason(NOT_DEFECTS[1]));
        let defects = bad[i] - outside - bots;
        let in_window = read[i] - outside;
        let frac = if in_window > 0 { defects as f64 / in_window as f64 } else { 0.0 };
        checks.push(check("bad_row_fraction", frac, None, true));
        for j in &of_file {
            checks.push(check(&format!("quarantined:{}", r_reason[*j]), r_n[*j] as f64, None, true));
        }
        if unreadable[i] {
            broken_files.push(sources[i].clone());
        }
        if datasets[i] == "events" {
            ev_read += read[i];
            ev_in_window += in_window;
            ev_defects += defects;
            ev_bots += bots;
            if worst.as_ref().is_none_or(|w| frac > w.1) {
                worst = Some((sources[i].clone(), frac));
            }
        }
    }
    let share = |n: i64| if ev_in_window > 0 { n as f64 / ev_in_window as f64 } else { 0.0 };
    let (overall, bot_share) = (share(ev_defects), share(ev_bots));
    let passed = overall <= threshold;
    let bots_ok = bot_share <= bot_threshold;
    let max_broken = job.cfg.clean.max_unreadable_files;
    let files_ok = broken_files.len() <= max_broken;
    let all = |name: &str, value: f64, threshold: Option<f64>, passed: bool| Check {
        source: "*".into(),
        check: name.into(),
        value,
        threshold,
        passed,
    };
    checks.push(all("events_read", ev_read as f64, None, true));
    checks.push(all("events_out_of_window", (ev_read - ev_in_window) as f64, None, true));
    checks.push(all("events_bad_row_fraction", overall, Some(threshold), passed));
    checks.push(all("events_bot_fraction", bot_share, Some(bot_threshold), bots_ok));
    checks.push(all("unreadable_files", broken_files.len() as f64, Some(max_broken as f64), files_ok));
    if unbalanced > 0 {
        return Err(Error::Internal(format!(
            "{unbalanced} input files lost rows between reading and cleaning (see data_quality)"
        )));
    }
    let where_to_look = job.output.folder_url(&job.work(""));
    let gate = if !files_ok {
        Some(format!(
            "{} input files could not be decoded to their end, above clean.max_unreadable_files = {max_broken}: {}; \
             see the quarantine table (reason malformed) under {where_to_look}",
            broken_files.len(),
            broken_files.join(", ")
        ))
    } else if !passed {
        let (file, frac) = worst.unwrap_or_default();
        // Reasons come sorted by count within a file: the first defect is the top one.
        let top = (0..r_source.len())
            .find(|j| r_source[*j] == file && !NOT_DEFECTS.contains(&r_reason[*j].as_str()))
            .map(|j| format!("{} ({} rows)", r_reason[j], r_n[j]))
            .unwrap_or_else(|| "none".into());
        Some(format!(
            "{:.2}% of event rows in the window were quarantined as defective, above clean.max_bad_row_fraction = {:.2}%; \
             worst file {file} ({:.1}% bad, mostly {top}); see the quarantine and data_quality tables under {where_to_look}",
            overall * 100.0,
            threshold * 100.0,
            frac * 100.0,
        ))
    } else if !bots_ok {
        Some(format!(
            "{:.2}% of event rows in the window came from users over the bot limits, above clean.max_bot_fraction = {:.2}%; \
             check clean.bot_max_events_per_minute / _per_day, and the quarantine table (reason bot) under {where_to_look}",
            bot_share * 100.0,
            bot_threshold * 100.0,
        ))
    } else {
        None
    };
    Ok((checks, gate))
}

async fn write_quality(job: &Job, checks: &[Check]) -> Result<WrittenTable> {
    let batch = quality_batch(checks)?;
    job.write_work_batches("data_quality", batch.schema(), &[batch]).await
}

/// The `data_quality` table of these checks.
pub(crate) fn quality_batch(checks: &[Check]) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("check", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("threshold", DataType::Float64, true),
        Field::new("passed", DataType::Boolean, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(checks.iter().map(|c| c.source.as_str()))),
            Arc::new(StringArray::from_iter_values(checks.iter().map(|c| c.check.as_str()))),
            Arc::new(Float64Array::from_iter_values(checks.iter().map(|c| c.value))),
            Arc::new(Float64Array::from_iter(checks.iter().map(|c| c.threshold))),
            Arc::new(BooleanArray::from_iter(checks.iter().map(|c| Some(c.passed)))),
        ],
    )
    .ctx("building data_quality")
}
