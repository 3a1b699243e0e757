//! The report of a night: `_runs/dt=D/report.html`, one self-contained page
//! for the people who decide whether tomorrow's lists ship. Charts are SVG
//! drawn with plotters and inlined; styles are inline; the page runs no
//! script and fetches nothing when it is viewed.
//!
//! Sections: a headline; accuracy by model and cut-off with the baselines
//! beside the model (and the next-basket rows in repeat mode); slices;
//! tomorrow's lists (beyond-accuracy figures, the distribution of
//! candidate scores and of each user's overlap with the previous
//! publication); training (loss and validation NDCG per epoch); data
//! quality (rows read, clean and quarantined per dataset, the run-wide
//! checks, quarantined rows by reason); the day-over-day gate's checks; the
//! trend of the main figures over every date published up to this one
//! (read from their manifests); stage timings; and every row of
//! `evaluation`.
//!
//! Every number comes from a published table (or, while publishing, its
//! staged copy) or a manifest, so [`build`] gives the same page whether
//! `publish` writes it or `nightrec report` rebuilds it later. Numbers of
//! `evaluation` carry their key and full value in `data-` attributes, so a
//! test (or a person) can check the page against the table.

use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;

mod charts;
mod html;
mod sections;

use crate::arrays;
use crate::error::{DfContext, Result};
use crate::job::Job;
use crate::ledger::RunSummary;
use crate::published::{DayStats, GateCheck, Manifest};
use crate::tables::evaluation::{self, Row};

/// Bins of the score histogram.
pub(crate) const SCORE_BINS: i64 = 40;

/// What the page says about the run beyond the tables.
#[derive(Debug, Clone)]
pub(crate) struct About {
    /// The run that published the date.
    pub run_id: String,
    /// The model version of the published tables.
    pub model_version: String,
    /// The publication id.
    pub publication: String,
    /// The date the gate compared with.
    pub compared_with: Option<String>,
    /// The gate's checks.
    pub gate: Vec<GateCheck>,
    /// The date's figures.
    pub stats: DayStats,
    /// The run summary (`summary.json`), when there is a readable one.
    pub summary: Option<RunSummary>,
}

impl About {
    /// What a manifest says, with the run summary it lists.
    pub(crate) fn of(m: &Manifest, summary: Option<RunSummary>) -> About {
        About {
            run_id: m.lineage.run_id.clone(),
            model_version: m.lineage.model_version.clone(),
            publication: m.publication.clone(),
            compared_with: m.compared_with.clone(),
            gate: m.gate.clone(),
            stats: m.stats.clone().unwrap_or(DayStats {
                coverage: 0.0,
                cold_share: 0.0,
                ndcg: None,
                users: 0,
                recall: None,
                popularity_ndcg: None,
                novelty: None,
                diversity: None,
            }),
            summary,
        }
    }
}

/// One epoch of `training_epochs`.
#[derive(Debug, Clone, PartialEq)]
struct Epoch {
    phase: String,
    epoch: i64,
    loss: f64,
    valid_ndcg: Option<f64>,
}

/// Data quality: per dataset (read, clean, quarantined), the run-wide
/// checks, quarantined rows by reason, and every check that did not pass.
#[derive(Debug, Default)]
struct Quality {
    datasets: Vec<(String, f64, f64, f64)>,
    checks: Vec<(String, f64, Option<f64>, bool)>,
    reasons: Vec<(String, f64)>,
    failed: Vec<Failed>,
}

/// A `data_quality` row whose check did not pass, with its file.
#[derive(Debug, Clone, PartialEq)]
struct Failed {
    source: String,
    check: String,
    value: f64,
    threshold: Option<f64>,
    severity: String,
    detail: String,
}

/// Everything the page shows.
struct Page<'a> {
    date: String,
    about: &'a About,
    rows: Vec<Row>,
    epochs: Vec<Epoch>,
    /// (lowest score, highest score, count per bin).
    scores: Option<(f64, f64, Vec<u64>)>,
    /// The previous date and (bucket, users) of the overlap histogram.
    overlap: Option<(String, Vec<(i64, u64)>)>,
    quality: Quality,
    /// Every date published up to this one, with its figures.
    trend: Vec<(String, DayStats)>,
}

/// Build the page for `job.date`. `ctx` must have `evaluation`,
/// `user_candidates` and `data_quality` registered, and may have
/// `training_epochs` and `previous_candidates` (the list of the date
/// `about.compared_with`, or of the latest earlier publication).
pub(crate) async fn build(job: &Job, ctx: &SessionContext, about: &About, previous: Option<&str>) -> Result<String> {
    let evaluation = collect(ctx, "evaluation").await?;
    let mut rows = evaluation::rows_of(&evaluation)?;
    // One order whatever order the table's files are read in.
    rows.sort_by(|a, b| row_order(a).cmp(&row_order(b)));
    let epochs = if ctx.table_exist("training_epochs").ctx("looking up training_epochs")? {
        let b = collect(ctx, "training_epochs").await?;
        let (phase, epoch) = (arrays::strings_required(&b, "phase")?, arrays::ints(&b, "epoch")?);
        let (loss, valid) = (arrays::floats(&b, "loss")?, arrays::floats(&b, "valid_ndcg")?);
        let mut e: Vec<Epoch> = (0..phase.len())
            .map(|i| Epoch {
                phase: phase[i].clone(),
                epoch: epoch[i],
                loss: loss[i].unwrap_or(f64::NAN),
                valid_ndcg: valid[i],
            })
            .collect();
        let order = |p: &str| crate::tables::training_epochs::PHASES.iter().position(|x| *x == p).unwrap_or(usize::MAX);
        e.sort_by_key(|x| (order(&x.phase), x.epoch));
        e
    } else {
        Vec::new()
    };
    let b = crate::sql::file("report", "score_histogram")?
        .collect(ctx, vec![("bins", ScalarValue::Int64(Some(SCORE_BINS)))])
        .await?;
    let (bins, counts, lo, hi) = (
        arrays::ints(&b, "bin")?,
        arrays::ints(&b, "candidates")?,
        arrays::floats(&b, "lo")?,
        arrays::floats(&b, "hi")?,
    );
    let scores = match (lo.first().copied().flatten(), hi.first().copied().flatten()) {
        (Some(lo), Some(hi)) => {
            let mut per = vec![0u64; SCORE_BINS as usize];
            for (i, c) in bins.iter().zip(&counts) {
                if let Some(slot) = per.get_mut((*i).clamp(0, SCORE_BINS - 1) as usize) {
                    *slot += (*c).max(0) as u64;
                }
            }
            Some((lo, hi, per))
        }
        _ => None,
    };
    let overlap = match previous {
        Some(date) if ctx.table_exist("previous_candidates").ctx("looking up previous_candidates")? => {
            let o = crate::published::overlap(ctx).await?;
            Some((date.to_string(), o.into_iter().map(|(b, u, _)| (b, u)).collect()))
        }
        _ => None,
    };
    let quality = quality(&collect(ctx, "data_quality").await?)?;
    let mut trend = Vec::new();
    for d in crate::layout::dates(&job.output, crate::layout::RUNS).await?.into_iter().filter(|d| *d < job.date) {
        if let Some(m) = crate::published::read_manifest(&job.output, d).await?
            && let Some(s) = m.stats
        {
            trend.push((d.to_string(), s));
        }
    }
    trend.push((job.date.to_string(), about.stats.clone()));
    let page = Page { date: job.date.to_string(), about, rows, epochs, scores, overlap, quality, trend };
    render(&page)
}

/// Rows in reading order: by segment ([`evaluation::segment_order`], then
/// name), model (as evaluated), metric, k.
fn row_order(r: &Row) -> (usize, &str, usize, &str, usize, &str, i32) {
    let model = evaluation::MODELS
        .iter()
        .chain(evaluation::BASKET_MODELS.iter())
        .position(|m| *m == r.model)
        .unwrap_or(usize::MAX);
    let metric = crate::metrics::ACCURACY.iter().position(|m| *m == r.metric).unwrap_or(usize::MAX);
    (evaluation::segment_order(&r.segment), &r.segment, model, &r.model, metric, &r.metric, r.k)
}

/// A table the page shows, read by its statement under `sql/read/`.
async fn collect(ctx: &SessionContext, table: &str) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
    crate::sql::read(table)?.collect(ctx, vec![]).await
}

/// The dataset of a data-quality source: the input folder it was read
/// from (`events`, `items`, `users`), `*` for run-wide checks.
fn dataset(source: &str) -> String {
    if source == "*" {
        return "*".into();
    }
    // The last of the folders in the path: a bucket or home folder named
    // `users` above the input root does not count.
    ["events", "items", "users"]
        .iter()
        .filter_map(|d| source.rfind(&format!("/{d}/")).map(|at| (at, d)))
        .max()
        .map(|(_, d)| d.to_string())
        .unwrap_or_else(|| "other".into())
}

fn quality(b: &[datafusion::arrow::array::RecordBatch]) -> Result<Quality> {
    let (source, check) = (arrays::strings_required(b, "source")?, arrays::strings_required(b, "check")?);
    let (value, threshold) = (arrays::floats(b, "value")?, arrays::floats(b, "threshold")?);
    let passed = arrays::bools(b, "passed", true)?;
    // Publications of an older nightrec have neither column.
    let has = |c: &str| b.first().is_some_and(|b| b.schema().column_with_name(c).is_some());
    let severity = if has("severity") { arrays::strings(b, "severity")? } else { vec![None; source.len()] };
    let detail = if has("detail") { arrays::strings(b, "detail")? } else { vec![None; source.len()] };
    let mut q = Quality::default();
    for i in 0..source.len() {
        let v = value[i].unwrap_or(0.0);
        if !passed[i] {
            q.failed.push(Failed {
                source: source[i].clone(),
                check: check[i].clone(),
                value: v,
                threshold: threshold[i],
                severity: severity[i].clone().unwrap_or_else(|| "warning".into()),
                detail: detail[i].clone().unwrap_or_default(),
            });
        }
        let d = dataset(&source[i]);
        if d == "*" {
            q.checks.push((check[i].clone(), v, threshold[i], passed[i]));
            continue;
        }
        if let Some(reason) = check[i].strip_prefix("quarantined:") {
            match q.reasons.iter_mut().find(|r| r.0 == reason) {
                Some(r) => r.1 += v,
                None => q.reasons.push((reason.to_string(), v)),
            }
            continue;
        }
        let slot = match q.datasets.iter().position(|x| x.0 == d) {
            Some(p) => p,
            None => {
                q.datasets.push((d, 0.0, 0.0, 0.0));
                q.datasets.len() - 1
            }
        };
        let row = &mut q.datasets[slot];
        match check[i].as_str() {
            "rows_read" => row.1 += v,
            "rows_clean" => row.2 += v,
            "rows_quarantined" => row.3 += v,
            _ => {}
        }
    }
    q.datasets.sort_by(|a, b| a.0.cmp(&b.0));
    q.checks.sort_by(|a, b| a.0.cmp(&b.0));
    q.reasons.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let rank = |s: &str| ["error", "warning"].iter().position(|x| *x == s).unwrap_or(2);
    q.failed.sort_by(|a, b| {
        rank(&a.severity).cmp(&rank(&b.severity)).then(a.check.cmp(&b.check)).then(a.source.cmp(&b.source))
    });
    Ok(q)
}

use html::render;

#[cfg(test)]
mod tests {
    use super::charts::*;
    use super::html::esc;
    use super::*;
    use crate::ledger::{Stage, StageReport};
    use crate::metrics::KS;
    use crate::tables::evaluation::LISTS_SEGMENT;

    fn row(model: &str, segment: &str, metric: &str, k: i32, value: f64) -> Row {
        Row {
            model: model.into(),
            segment: segment.into(),
            metric: metric.into(),
            k,
            value,
            users: 40,
            ci_low: value - 0.01,
            ci_high: value + 0.01,
        }
    }

    fn stats(ndcg: f64) -> DayStats {
        DayStats {
            coverage: 0.5,
            cold_share: 0.1,
            ndcg: Some(ndcg),
            users: 100,
            recall: Some(0.3),
            popularity_ndcg: Some(0.1),
            novelty: Some(7.0),
            diversity: Some(0.6),
        }
    }

    #[test]
    fn the_page_holds_every_row_and_every_chart() {
        let mut rows = Vec::new();
        for model in ["nightrec", "popularity", "recent_popularity", "item_knn"] {
            for seg in ["all", "history cold (1-5)", "category Home & <Garden>"] {
                for metric in ["recall", "ndcg", "hr", "mrr"] {
                    for k in KS {
                        rows.push(row(model, seg, metric, k as i32, 0.1 + k as f64 / 1000.0));
                    }
                }
            }
        }
        rows.push(row("nightrec", LISTS_SEGMENT, "coverage", 10, 0.42));
        rows.push(row("nightrec", LISTS_SEGMENT, "novelty", 10, 7.25));
        let about = About {
            run_id: "run-1".into(),
            model_version: "abcd".into(),
            publication: "p1".into(),
            compared_with: Some("2026-11-20".into()),
            gate: vec![GateCheck { check: "ndcg_drop".into(), value: 0.01, threshold: 0.2, passed: true }],
            stats: stats(0.2),
            summary: Some(RunSummary {
                date: "2026-11-21".into(),
                run_id: "run-1".into(),
                output: "file:///out/".into(),
                device: "Cpu".into(),
                threads: crate::resources::Threads::default(),
                stages: vec![StageReport {
                    stage: Stage::Train,
                    ran: true,
                    seconds: 3.5,
                    cpu_seconds: 0.0,
                    peak_rss_mb: 0.0,
                    tables: Vec::new(),
                    facts: Vec::new(),
                }],
                report: None,
                warnings: Vec::new(),
            }),
        };
        let page = Page {
            date: "2026-11-21".into(),
            about: &about,
            rows: rows.clone(),
            epochs: vec![
                Epoch { phase: "pretrain".into(), epoch: 1, loss: 6.0, valid_ndcg: None },
                Epoch { phase: "fine-tune".into(), epoch: 1, loss: 5.0, valid_ndcg: Some(0.1) },
                Epoch { phase: "fine-tune".into(), epoch: 2, loss: 4.5, valid_ndcg: Some(0.12) },
            ],
            scores: Some((0.0, 2.0, vec![3, 0, 5, 1])),
            overlap: Some(("2026-11-20".into(), vec![(3, 10), (10, 4)])),
            quality: Quality {
                datasets: vec![("events".into(), 100.0, 97.0, 3.0)],
                checks: vec![("events_bad_row_fraction".into(), 0.03, Some(0.05), true)],
                reasons: vec![("duplicate".into(), 3.0)],
                failed: vec![Failed {
                    source: "s3://b/in/events/notes.xlsx".into(),
                    check: "file_not_read".into(),
                    value: 9.0,
                    threshold: None,
                    severity: "warning".into(),
                    detail: "not read".into(),
                }],
            },
            trend: vec![("2026-11-20".into(), stats(0.19)), ("2026-11-21".into(), stats(0.2))],
        };
        let html = render(&page).unwrap();
        // Regression: file_not_read rows were dropped from the page.
        assert!(
            html.contains("data-check=\"file_not_read\" data-source=\"s3://b/in/events/notes.xlsx\""),
            "a check that did not pass is missing from the page"
        );
        for chart in [
            "ndcg_by_k",
            "recall_by_k",
            "slices",
            "score_histogram",
            "overlap_histogram",
            "training_loss",
            "validation_ndcg",
            "quarantine",
            "trend",
        ] {
            let at = html.find(&format!("data-chart=\"{chart}\"")).unwrap_or_else(|| panic!("no chart {chart}"));
            let svg = &html[at..html[at..].find("</svg>").map(|e| at + e).unwrap()];
            assert!(
                svg.matches("<circle").count() + svg.matches("<rect").count() + svg.matches("<polyline").count() > 3,
                "{chart} is empty"
            );
        }
        // Every row of evaluation, with its key and full value.
        for r in &rows {
            let key = format!(
                "data-model=\"{}\" data-segment=\"{}\" data-metric=\"{}\" data-k=\"{}\" data-value=\"{:?}\"",
                esc(&r.model),
                esc(&r.segment),
                esc(&r.metric),
                r.k,
                r.value
            );
            assert!(html.contains(&key), "missing {key}");
        }
        // User text is escaped; nothing is fetched.
        assert!(html.contains("category Home &amp; &lt;Garden&gt;") && !html.contains("<Garden>"));
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("<script"));
        // No earlier date: the overlap and gate say so instead of drawing.
        let first =
            Page { overlap: None, about: &About { compared_with: None, gate: vec![], ..about.clone() }, ..page };
        let html = render(&first).unwrap();
        assert!(!html.contains("data-chart=\"overlap_histogram\"") && html.contains("No earlier publication"));
    }

    #[test]
    fn axis_numbers_are_short() {
        let shown: Vec<String> =
            [5_000_000.0, 12_500.0, 275.25, 10.0, 2.0, 0.05, 0.0, -0.0, 0.123456, -3.5].iter().map(tick).collect();
        assert_eq!(shown, ["5M", "12.5k", "275.25", "10", "2", "0.05", "0", "0", "0.1235", "-3.5"]);
    }

    #[test]
    fn data_quality_rows_are_summed_per_dataset_and_reason() {
        let rows = [
            ("s3://b/in/events/dt=1/a.csv", "rows_read", 10.0, None),
            ("s3://b/in/events/dt=2/b.csv", "rows_read", 5.0, None),
            ("s3://b/in/events/dt=1/a.csv", "quarantined:duplicate", 2.0, None),
            ("s3://b/in/events/dt=2/b.csv", "quarantined:duplicate", 1.0, None),
            ("s3://b/in/events/dt=2/b.csv", "quarantined:malformed", 4.0, None),
            ("s3://b/in/items/i.jsonl", "rows_clean", 7.0, None),
            ("*", "events_bad_row_fraction", 0.2, Some(0.05)),
        ];
        let mut checks: Vec<crate::quality::Check> = rows
            .iter()
            .map(|r| match r.3 {
                None => crate::quality::Check::info(r.0, r.1, r.2),
                Some(t) => crate::quality::Check::gated(r.0, r.1, r.2, t, false),
            })
            .collect();
        checks.push(crate::quality::Check::warning(
            "s3://b/in/events/notes.xlsx",
            "file_not_read",
            9.0,
            "not read".into(),
        ));
        let b = crate::quality::batch(&checks).unwrap();
        let q = quality(&[b]).unwrap();
        let failed: Vec<(&str, &str, &str)> =
            q.failed.iter().map(|f| (f.check.as_str(), f.source.as_str(), f.severity.as_str())).collect();
        assert_eq!(
            failed,
            [("events_bad_row_fraction", "*", "error"), ("file_not_read", "s3://b/in/events/notes.xlsx", "warning")]
        );
        assert_eq!(q.datasets, vec![("events".into(), 15.0, 0.0, 0.0), ("items".into(), 0.0, 7.0, 0.0)]);
        assert_eq!(q.reasons, vec![("malformed".into(), 4.0), ("duplicate".into(), 3.0)]);
        assert_eq!(q.checks, vec![("events_bad_row_fraction".into(), 0.2, Some(0.05), false)]);
    }
}
