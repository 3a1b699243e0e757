//! Stage `clean`: raw inputs → `items`, `users`, `clean_events`,
//! `quarantine`, `data_quality` (plus the `*_checked` tables that hold every
//! input row with its verdict).
//!
//! The input files are the date's pinned ones ([`crate::ingest::pin`]).
//! Every input row ends up either clean or in `quarantine` with its source
//! file, position and reason code; `data_quality` proves rows read = clean +
//! quarantined per file. A row of a `dt=D` partition stamped more than
//! `clean.partition_tolerance_hours` outside day D is a defect
//! (`wrong_partition`); rows outside the window otherwise (the partition
//! before it, unpartitioned files, history older than the lookback) are
//! expected and quarantined as `out_of_window`, not counted as defects, and
//! neither are bot rows. The run fails with exit 3, after writing
//! `quarantine` and `data_quality` (for a human to read) and before
//! anything is published, when:
//! - one event file (of at least [`MIN_FILE_ROWS_GATED`] rows inside the
//!   window) has more than `clean.max_bad_file_fraction` defective rows;
//! - more than `clean.max_bad_row_fraction` of all event rows in the window
//!   are defective;
//! - more than `clean.max_bot_fraction` are bot rows;
//! - more than `clean.max_unreadable_files` files cannot be decoded to
//!   their end (their unread byte ranges are in `data_quality`).
//!
//! Input files that are not read (an unknown extension) are listed in
//! `data_quality` as `file_not_read` (severity `warning`).
//!
//! Safe to re-run: every output folder is replaced whole.

use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::ScalarValue;

use crate::arrays;
use crate::config::MIN_FILE_ROWS_GATED;
use crate::error::{DfContext, Error, Result};
use crate::ingest::pin::InputPin;
use crate::ingest::{self, DATASETS, FileRead, ReadCounts};
use crate::job::Job;
use crate::parquet_io::WrittenTable;
use crate::quality::{self, Check, Severity};
use crate::sql::ts_param;

/// Rows per input file as counted by the readers themselves.
fn files_read(reads: &[FileRead]) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("dataset", DataType::Utf8, false),
        Field::new("rows_read", DataType::Int64, false),
        Field::new("unreadable", DataType::Boolean, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(reads.iter().map(|f| f.url.as_str()))),
            Arc::new(StringArray::from_iter_values(reads.iter().map(|f| f.dataset))),
            Arc::new(Int64Array::from_iter_values(reads.iter().map(|f| f.rows as i64))),
            Arc::new(BooleanArray::from_iter(reads.iter().map(|f| Some(f.unread.is_some())))),
        ],
    )
    .ctx("building files_read")
}

/// The timestamps each partitioned event file may hold
/// (`sql/clean/events_ruled.sql`): its `dt=` day widened by
/// `clean.partition_tolerance_hours` on both sides; NULL for files outside
/// any partition.
fn input_files(job: &Job, pin: &InputPin) -> Result<RecordBatch> {
    let tolerance = (job.cfg.clean.partition_tolerance_hours * 3_600_000.0) as i64;
    let files: Vec<_> = pin.files.iter().filter(|f| f.dataset == ingest::EVENTS.name && f.readable()).collect();
    let bound = |f: &&ingest::pin::PinnedFile, end: bool| {
        f.partition().map(|d| {
            let millis = if end { d.plus_days(1).start_millis() + tolerance } else { d.start_millis() - tolerance };
            millis.saturating_mul(1_000_000)
        })
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("ts_from", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("ts_to", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                files.iter().map(|f| job.input.object_url(&job.input.path(&f.path))),
            )),
            Arc::new(TimestampNanosecondArray::from_iter(files.iter().map(|f| bound(f, false)))),
            Arc::new(TimestampNanosecondArray::from_iter(files.iter().map(|f| bound(f, true)))),
        ],
    )
    .ctx("building input_files")
}

/// Run the stage over the date's pinned input files; returns tables written
/// and facts for the summary.
pub(crate) async fn run(job: &Job, pin: &InputPin) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let ctx = job.session()?;
    let counts = ReadCounts::default();
    let mapper = ingest::id_mapper(&job.cfg)?;
    for ds in DATASETS {
        ingest::register(&ctx, &job.input, ds, &pin.files_of(&job.input, ds.name), mapper.clone(), &counts)?;
    }
    ctx.register_batch("input_files", input_files(job, pin)?).ctx("registering input_files")?;
    let mut tables = Vec::new();
    tables.push(job.sql_to_work(&ctx, "clean", "items_checked", vec![]).await?);
    job.register_work(&ctx, &["items_checked"]).await?;
    tables.push(job.sql_to_work(&ctx, "clean", "items", vec![]).await?);
    job.register_work(&ctx, &["items"]).await?;
    let window =
        vec![("window_start", ts_param(job.window.start_millis())), ("window_end", ts_param(job.window.end_millis()))];
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

    let reads = counts.snapshot()?;
    ctx.register_batch("files_read", files_read(&reads)?).ctx("registering files_read")?;
    let counts = crate::sql::file("clean", "file_counts")?.collect(&ctx, vec![]).await?;
    job.register_work(&ctx, &["quarantine"]).await?;
    let reasons = crate::sql::file("clean", "quarantine_counts")?.collect(&ctx, vec![]).await?;
    let (mut checks, gate) = quality_checks(job, &reads, &counts, &reasons)?;
    // Never silent: a file nightrec cannot read is named, with its size.
    let not_read: Vec<_> = pin.not_read().collect();
    for f in &not_read {
        let url = job.input.object_url(&job.input.path(&f.path));
        tracing::warn!(file = %url, "not read: nightrec does not read this file's format ({})", ingest::READABLE);
        let detail = format!("not read: nightrec reads {}", ingest::READABLE);
        checks.push(Check::warning(&url, "file_not_read", f.size as f64, detail));
    }
    tables.push(write_quality(job, &checks).await?);

    let events_read: f64 = checks.iter().filter(|c| c.check == "events_read").map(|c| c.value).sum();
    let clean_rows = tables.iter().find(|t| t.name == "clean_events").map(|t| t.rows()).unwrap_or(0);
    let quarantined = tables.iter().find(|t| t.name == "quarantine").map(|t| t.rows()).unwrap_or(0);
    let mut facts = vec![
        ("input snapshot".into(), pin.snapshot(&job.input)),
        ("inputs pinned".into(), format!("{} files, by run {} at {}", pin.files.len(), pin.run_id, pin.pinned_at)),
        ("event rows read".into(), format!("{events_read}")),
        ("clean events".into(), clean_rows.to_string()),
        ("quarantined rows".into(), quarantined.to_string()),
    ];
    if !not_read.is_empty() {
        facts.push(("files not read (format)".into(), not_read.len().to_string()));
    }
    if let Some(msg) = gate {
        return Err(Error::DataQuality(msg));
    }
    if clean_rows == 0 {
        return Err(Error::DataQuality(format!(
            "no clean events in the window {} under {}",
            job.window,
            job.input.folder_url("events")
        )));
    }
    Ok((tables, facts))
}

/// Quarantine reasons that are not defects of the data: rows outside the
/// run's window that nothing says are misplaced (the partition read before
/// the window, unpartitioned files, history older than the lookback) and
/// bot traffic (the filter doing its job). Neither counts against
/// `clean.max_bad_row_fraction` or `max_bad_file_fraction`; bots have their
/// own threshold. A row far from its own partition's day
/// (`wrong_partition`) is a defect.
const NOT_DEFECTS: [&str; 2] = ["out_of_window", "bot"];

/// One event file's defects, as the file gate sees them.
struct FileDefects {
    source: String,
    fraction: f64,
    in_window: i64,
}

/// What the per-file checks found, for the run-wide checks and the gates.
#[derive(Default)]
struct Tally<'a> {
    /// The data_quality rows so far.
    checks: Vec<Check>,
    /// Event rows read, inside the window, defective, misplaced, from bots.
    ev_read: i64,
    ev_in_window: i64,
    ev_defects: i64,
    ev_misplaced: i64,
    ev_bots: i64,
    /// The event file with the largest share of defects, and that share.
    worst: Option<(String, f64)>,
    /// Event files over `clean.max_bad_file_fraction`.
    bad_files: Vec<FileDefects>,
    /// Files whose rows read ≠ clean + quarantined.
    unbalanced: usize,
    /// Files decoded only in part, with the place their row goes in `checks`.
    unread: Vec<(usize, &'a FileRead)>,
}

/// The per-file rows of every input file: rows read, clean, quarantined
/// (by reason), their balance and the file's share of defects.
fn file_checks<'a>(job: &Job, reads: &'a [FileRead], counts: &[RecordBatch], reasons: &Reasons) -> Result<Tally<'a>> {
    let sources = arrays::strings_required(counts, "source")?;
    let datasets = arrays::strings_required(counts, "dataset")?;
    let read = arrays::ints(counts, "rows_read")?;
    let clean = arrays::ints(counts, "clean")?;
    let bad = arrays::ints(counts, "quarantined")?;
    let c = &job.cfg.clean;
    let mut t = Tally::default();
    for i in 0..sources.len() {
        let balanced = read[i] == clean[i] + bad[i];
        if !balanced {
            t.unbalanced += 1;
        }
        let source = sources[i].as_str();
        t.checks.push(Check::info(source, "rows_read", read[i] as f64));
        t.checks.push(Check::info(source, "rows_clean", clean[i] as f64));
        t.checks.push(Check::info(source, "rows_quarantined", bad[i] as f64));
        t.checks.push(Check::gated(
            source,
            "read_minus_clean_minus_quarantined",
            (read[i] - clean[i] - bad[i]) as f64,
            0.0,
            balanced,
        ));
        let of_file: Vec<usize> = (0..reasons.source.len()).filter(|j| reasons.source[*j] == sources[i]).collect();
        let with_reason =
            |reason: &str| of_file.iter().filter(|j| reasons.reason[**j] == reason).map(|j| reasons.n[*j]).sum::<i64>();
        let (outside, bots) = (with_reason(NOT_DEFECTS[0]), with_reason(NOT_DEFECTS[1]));
        let defects = bad[i] - outside - bots;
        let in_window = read[i] - outside;
        let frac = if in_window > 0 { defects as f64 / in_window as f64 } else { 0.0 };
        if datasets[i] == ingest::EVENTS.name && in_window >= MIN_FILE_ROWS_GATED {
            let passed = frac <= c.max_bad_file_fraction;
            t.checks.push(Check::gated(source, "bad_row_fraction", frac, c.max_bad_file_fraction, passed));
            if !passed {
                t.bad_files.push(FileDefects { source: source.to_string(), fraction: frac, in_window });
            }
        } else {
            t.checks.push(Check::info(source, "bad_row_fraction", frac));
        }
        for j in &of_file {
            t.checks.push(Check::info(source, &format!("quarantined:{}", reasons.reason[*j]), reasons.n[*j] as f64));
        }
        if let Some(f) = reads.iter().find(|f| f.url == sources[i] && f.unread.is_some()) {
            t.unread.push((t.checks.len(), f));
        }
        if datasets[i] == ingest::EVENTS.name {
            t.ev_read += read[i];
            t.ev_in_window += in_window;
            t.ev_defects += defects;
            t.ev_misplaced += with_reason("wrong_partition");
            t.ev_bots += bots;
            if t.worst.as_ref().is_none_or(|w| frac > w.1) {
                t.worst = Some((sources[i].clone(), frac));
            }
        }
    }
    Ok(t)
}

/// Quarantined rows per (file, reason), sorted by count within a file.
struct Reasons {
    source: Vec<String>,
    reason: Vec<String>,
    n: Vec<i64>,
}

impl Reasons {
    /// The top defect of a file (not a reason that is no defect), with its rows.
    fn top_defect(&self, file: &str) -> Option<(&str, i64)> {
        (0..self.source.len())
            .find(|j| self.source[*j] == file && !NOT_DEFECTS.contains(&self.reason[*j].as_str()))
            .map(|j| (self.reason[j].as_str(), self.n[j]))
    }
}

/// The run-wide figures of the event files and whether each gate held.
struct Verdict {
    overall: f64,
    bot_share: f64,
    passed: bool,
    bots_ok: bool,
    files_ok: bool,
}

/// The data_quality rows of the clean stage, and the message of the first
/// gate that failed, if one did.
fn quality_checks(
    job: &Job,
    reads: &[FileRead],
    counts: &[RecordBatch],
    reasons: &[RecordBatch],
) -> Result<(Vec<Check>, Option<String>)> {
    let reasons = Reasons {
        source: arrays::strings_required(reasons, "source")?,
        reason: arrays::strings_required(reasons, "reason")?,
        n: arrays::ints(reasons, "n")?,
    };
    let c = &job.cfg.clean;
    let mut t = file_checks(job, reads, counts, &reasons)?;
    let share = |n: i64| if t.ev_in_window > 0 { n as f64 / t.ev_in_window as f64 } else { 0.0 };
    let (overall, bot_share) = (share(t.ev_defects), share(t.ev_bots));
    let v = Verdict {
        overall,
        bot_share,
        passed: overall <= c.max_bad_row_fraction,
        bots_ok: bot_share <= c.max_bot_fraction,
        files_ok: t.unread.len() <= c.max_unreadable_files,
    };
    // Files decoded only in part: the bytes nobody read, never a guessed row count.
    for (at, f) in t.unread.iter().rev() {
        let Some(u) = &f.unread else { continue };
        let detail = format!(
            "bytes {}..{} of {} could not be decoded after row {}: {}",
            u.from, u.size, u.size, f.rows, u.error
        );
        let mut check = Check::warning(&f.url, "unread_bytes", u.size.saturating_sub(u.from) as f64, detail);
        if !v.files_ok {
            check.severity = Severity::Error;
        }
        t.checks.insert(*at, check);
    }
    let all = "*";
    t.checks.push(Check::info(all, "events_read", t.ev_read as f64));
    let mut outside = Check::info(all, "events_out_of_window", (t.ev_read - t.ev_in_window) as f64);
    outside.detail = "outside the window, from the partition read before it, unpartitioned files or history \
         older than the lookback: expected, not defects"
        .into();
    t.checks.push(outside);
    let mut misplaced = Check::info(all, "events_wrong_partition", t.ev_misplaced as f64);
    misplaced.detail = format!(
        "stamped more than clean.partition_tolerance_hours = {} h outside their dt= partition's day: defects",
        c.partition_tolerance_hours
    );
    t.checks.push(misplaced);
    t.checks.push(Check::gated(all, "events_bad_row_fraction", overall, c.max_bad_row_fraction, v.passed));
    t.checks.push(Check::gated(
        all,
        "event_files_over_bad_file_fraction",
        t.bad_files.len() as f64,
        0.0,
        t.bad_files.is_empty(),
    ));
    t.checks.push(Check::gated(all, "events_bot_fraction", bot_share, c.max_bot_fraction, v.bots_ok));
    t.checks.push(Check::gated(
        all,
        "unreadable_files",
        t.unread.len() as f64,
        c.max_unreadable_files as f64,
        v.files_ok,
    ));
    if t.unbalanced > 0 {
        return Err(Error::Internal(format!(
            "{} input files lost rows between reading and cleaning (see data_quality)",
            t.unbalanced
        )));
    }
    let gate = gate_message(job, &t, &reasons, &v);
    Ok((t.checks, gate))
}

/// The message of the first clean gate that failed, if one did.
fn gate_message(job: &Job, t: &Tally, reasons: &Reasons, v: &Verdict) -> Option<String> {
    let c = &job.cfg.clean;
    let where_to_look = job.output.folder_url(&job.work(""));
    if !v.files_ok {
        let names: Vec<String> = t
            .unread
            .iter()
            .map(|(_, f)| match &f.unread {
                Some(u) => format!("{} (bytes {}..{} not decoded)", f.url, u.from, u.size),
                None => f.url.clone(),
            })
            .collect();
        Some(format!(
            "{} input files could not be decoded to their end, above clean.max_unreadable_files = {}: {}; \
             see the data_quality table (check unread_bytes) under {where_to_look}",
            t.unread.len(),
            c.max_unreadable_files,
            names.join(", ")
        ))
    } else if let Some(f) = t.bad_files.iter().max_by(|a, b| a.fraction.total_cmp(&b.fraction)) {
        let (reason, n) = reasons.top_defect(&f.source).unwrap_or(("none", 0));
        let hint = if reason == "wrong_partition" {
            format!(
                ": timestamps more than clean.partition_tolerance_hours = {} h outside the file's dt= day \
                 (epoch seconds where milliseconds were expected, or a shifted time zone?)",
                c.partition_tolerance_hours
            )
        } else {
            String::new()
        };
        Some(format!(
            "input file {} has {:.1}% defective rows among its {} event rows in the window, above \
             clean.max_bad_file_fraction = {:.1}% (whatever the share over all files): mostly {reason} ({n} rows){hint}; \
             {} file(s) over the limit; see the quarantine and data_quality tables under {where_to_look}",
            f.source,
            f.fraction * 100.0,
            f.in_window,
            c.max_bad_file_fraction * 100.0,
            t.bad_files.len(),
        ))
    } else if !v.passed {
        let (file, frac) = t.worst.clone().unwrap_or_default();
        let top = reasons.top_defect(&file).map(|(r, n)| format!("{r} ({n} rows)")).unwrap_or_else(|| "none".into());
        Some(format!(
            "{:.2}% of event rows in the window were quarantined as defective, above clean.max_bad_row_fraction = {:.2}%; \
             worst file {file} ({:.1}% bad, mostly {top}); see the quarantine and data_quality tables under {where_to_look}",
            v.overall * 100.0,
            c.max_bad_row_fraction * 100.0,
            frac * 100.0,
        ))
    } else if !v.bots_ok {
        Some(format!(
            "{:.2}% of event rows in the window came from users over the bot limits, above clean.max_bot_fraction = {:.2}%; \
             check clean.bot_max_events_per_minute / _per_day, and the quarantine table (reason bot) under {where_to_look}",
            v.bot_share * 100.0,
            c.max_bot_fraction * 100.0,
        ))
    } else {
        None
    }
}

async fn write_quality(job: &Job, checks: &[Check]) -> Result<WrittenTable> {
    let batch = quality::batch(checks)?;
    job.write_work_batches("data_quality", batch.schema(), &[batch]).await
}
