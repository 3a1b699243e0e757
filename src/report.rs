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

use std::fmt::Write as _;

use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::arrays;
use crate::error::{DfContext, Error, Result};
use crate::job::Job;
use crate::ledger::RunSummary;
use crate::metrics::KS;
use crate::published::{DayStats, GateCheck, Manifest};
use crate::tables::evaluation::{self, BASKET_SEGMENT, LISTS_SEGMENT, Row};

/// Bins of the score histogram.
pub const SCORE_BINS: i64 = 40;

/// What the page says about the run beyond the tables.
#[derive(Debug, Clone)]
pub struct About {
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
    pub fn of(m: &Manifest, summary: Option<RunSummary>) -> About {
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
pub async fn build(job: &Job, ctx: &SessionContext, about: &About, previous: Option<&str>) -> Result<String> {
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

// ---------------------------------------------------------------- HTML

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A metric value as the page prints it.
pub fn fmt_value(v: f64) -> String {
    if v.is_finite() { format!("{v:.4}") } else { "–".into() }
}

/// A table cell holding one row of `evaluation`, keyed for checking.
fn cell(r: &Row) -> String {
    format!(
        "<td class=\"num\" data-model=\"{}\" data-segment=\"{}\" data-metric=\"{}\" data-k=\"{}\" data-value=\"{:?}\" \
         title=\"95% CI {} – {}; {} users\">{}</td>",
        esc(&r.model),
        esc(&r.segment),
        esc(&r.metric),
        r.k,
        r.value,
        fmt_value(r.ci_low),
        fmt_value(r.ci_high),
        r.users,
        fmt_value(r.value)
    )
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;\
padding:0 1.5rem 3rem;color:#1d2733;line-height:1.45}h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:2px solid \
#dde3ea;padding-bottom:.3rem}nav a{margin-right:1rem}table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.9rem;\
display:block;max-width:100%;overflow-x:auto}table.bare{margin:.2rem 0}.bare td{border:0;padding:0;font-size:1.5rem;\
font-weight:600}.legend{display:flex;flex-wrap:wrap;gap:.3rem 1.2rem;font-size:.85rem;margin:.2rem 0 .3rem 4.5rem}\
.legend i{display:inline-block;width:1.1rem;height:3px;margin-right:.4rem;vertical-align:middle}.legend i.dot{width:\
.6rem;height:.6rem;border-radius:50%}
th,td{border:1px solid #dde3ea;padding:.25rem .55rem;text-align:left}td.num{text-align:right;font-variant-numeric:\
tabular-nums}th{background:#f3f6f9}.meta{color:#5b6b7b;font-size:.9rem}.cards{display:flex;flex-wrap:wrap;gap:1rem}\
.card{border:1px solid #dde3ea;border-radius:8px;padding:.6rem 1rem;min-width:11rem}.card b{display:block;font-size:\
1.5rem}figure{margin:1rem 0}figcaption{color:#5b6b7b;font-size:.85rem}.pass{color:#1b7a3a}.fail{color:#b3261e;\
font-weight:bold}.note{color:#5b6b7b;font-style:italic}svg{max-width:100%;height:auto}";

fn render(p: &Page<'_>) -> Result<String> {
    let mut h = String::new();
    let a = p.about;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>nightrec report {date}</title><style>{STYLE}</style>\
         </head><body><header><h1>nightrec — night of {date}</h1><p class=\"meta\">run {run} · model {model} · \
         publication {publication}</p><nav><a href=\"#accuracy\">Accuracy</a><a href=\"#slices\">Slices</a><a \
         href=\"#lists\">Tomorrow's lists</a><a href=\"#training\">Training</a><a href=\"#data-quality\">Data \
         quality</a><a href=\"#gate\">Gate</a><a href=\"#trend\">Trend</a><a href=\"#stages\">Stages</a><a \
         href=\"#all-rows\">All rows</a></nav></header>",
        date = esc(&p.date),
        run = esc(&a.run_id),
        model = esc(&a.model_version),
        publication = esc(&a.publication),
    );
    headline(&mut h, p);
    accuracy(&mut h, p)?;
    slices(&mut h, p)?;
    lists(&mut h, p)?;
    training(&mut h, p)?;
    data_quality(&mut h, p)?;
    gate(&mut h, p);
    trend(&mut h, p)?;
    stages(&mut h, p);
    h.push_str(
        "<section><h2 id=\"all-rows\">Every row of <code>evaluation</code></h2><p>Each figure of the night's \
         evaluation with its 95% confidence interval and the users behind it.</p><details><summary>",
    );
    let _ =
        write!(h, "{} rows</summary><table><tr><th>model</th><th>segment</th><th>metric</th><th>k</th>", p.rows.len());
    h.push_str("<th>value</th><th>95% CI</th><th>users</th></tr>");
    for r in &p.rows {
        let _ = write!(
            h,
            "<tr class=\"row\"><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>{}<td class=\"num\">{} – {}</td>\
             <td class=\"num\">{}</td></tr>",
            esc(&r.model),
            esc(&r.segment),
            esc(&r.metric),
            r.k,
            cell(r),
            fmt_value(r.ci_low),
            fmt_value(r.ci_high),
            r.users
        );
    }
    h.push_str("</table></details></section></body></html>\n");
    Ok(h)
}

fn find<'a>(p: &'a Page<'_>, model: &str, segment: &str, metric: &str, k: i32) -> Option<&'a Row> {
    p.rows.iter().find(|r| r.model == model && r.segment == segment && r.metric == metric && r.k == k)
}

/// Models of the leave-one-out rows present, in [`evaluation::MODELS`] order.
fn models(p: &Page<'_>, segment: &str) -> Vec<String> {
    let mut m: Vec<String> = Vec::new();
    for r in p.rows.iter().filter(|r| r.segment == segment) {
        if !m.contains(&r.model) {
            m.push(r.model.clone());
        }
    }
    let order = |x: &String| {
        evaluation::MODELS
            .iter()
            .chain(evaluation::BASKET_MODELS.iter())
            .position(|y| *y == x.as_str())
            .unwrap_or(usize::MAX)
    };
    m.sort_by(|a, b| order(a).cmp(&order(b)).then(a.cmp(b)));
    m
}

fn headline(h: &mut String, p: &Page<'_>) {
    h.push_str("<section id=\"headline\"><div class=\"cards\">");
    let card = |h: &mut String, title: &str, r: Option<&Row>, note: String| {
        let value = r.map(cell).unwrap_or_else(|| "<td>–</td>".into());
        // The card shows the cell's number; the cell keeps the data- keys.
        let _ = write!(
            h,
            "<div class=\"card\">{}<table class=\"bare\"><tr>{value}</tr></table><span class=\"meta\">{}</span></div>",
            esc(title),
            esc(&note)
        );
    };
    let model = find(p, "nightrec", "all", "ndcg", 10);
    let pop = find(p, "popularity", "all", "ndcg", 10);
    let lift = match (model, pop) {
        (Some(m), Some(q)) if q.value > 0.0 => format!("{:.2}× popularity ({})", m.value / q.value, fmt_value(q.value)),
        _ => String::new(),
    };
    card(h, "NDCG@10, model", model, lift);
    card(h, "Recall@10, model", find(p, "nightrec", "all", "recall", 10), String::new());
    if let Some(b) = find(p, "nightrec", BASKET_SEGMENT, "recall", 10) {
        card(h, "next-basket Recall@10", Some(b), String::new());
    }
    card(h, "catalog coverage @10", find(p, "nightrec", LISTS_SEGMENT, "coverage", 10), String::new());
    let gate = if p.about.gate.is_empty() {
        "no earlier publication compared".to_string()
    } else {
        let failed = p.about.gate.iter().filter(|c| !c.passed).count();
        format!("{} checks, {failed} failed", p.about.gate.len())
    };
    let _ = write!(
        h,
        "<div class=\"card\">users with lists<b>{}</b><span class=\"meta\">gate: {}</span></div></div></section>",
        p.about.stats.users,
        esc(&gate)
    );
}

fn accuracy(h: &mut String, p: &Page<'_>) -> Result<()> {
    h.push_str(
        "<section><h2 id=\"accuracy\">Accuracy</h2><p>Each user's held-out items ranked against the whole \
        catalog, items the user already saw left out; every model scores the same users. The model is the \
        checkpoint's holdout model (it never saw a test step).</p>",
    );
    let ms = models(p, "all");
    if ms.is_empty() {
        h.push_str("<p class=\"note\">No user had a held-out step: nothing was evaluated.</p></section>");
        return Ok(());
    }
    for (metric, label) in [("ndcg", "NDCG@k"), ("recall", "Recall@k")] {
        let series: Vec<(String, Vec<(f64, f64)>)> = ms
            .iter()
            .map(|m| {
                let pts = KS
                    .iter()
                    .filter_map(|k| find(p, m, "all", metric, *k as i32).map(|r| (*k as f64, r.value)))
                    .collect();
                (m.clone(), pts)
            })
            .collect();
        figure(
            h,
            &format!("{metric}_by_k"),
            &format!("{label} by model, all users"),
            &lines_chart(label, "k", &series)?,
        );
    }
    metric_table(h, p, "all", &ms);
    if !models(p, BASKET_SEGMENT).is_empty() {
        h.push_str(
            "<h3>Next basket</h3><p>Repeat mode: each user's last basket held out; items bought before are \
            not masked.</p>",
        );
        metric_table(h, p, BASKET_SEGMENT, &models(p, BASKET_SEGMENT));
    }
    h.push_str("</section>");
    Ok(())
}

/// One row per metric and cut-off, one column per model (the table stays
/// narrow however many models there are).
fn metric_table(h: &mut String, p: &Page<'_>, segment: &str, ms: &[String]) {
    h.push_str("<table><tr><th>metric</th>");
    for model in ms {
        let _ = write!(h, "<th>{}</th>", esc(model));
    }
    h.push_str("</tr>");
    for m in ["recall", "ndcg", "hr", "mrr"] {
        for k in KS {
            let _ = write!(h, "<tr><td>{}@{k}</td>", evaluation::metric_label(m));
            for model in ms {
                h.push_str(&find(p, model, segment, m, k as i32).map(cell).unwrap_or_else(|| "<td>–</td>".into()));
            }
            h.push_str("</tr>");
        }
    }
    h.push_str("<tr><td>users</td>");
    for model in ms {
        let users = p.rows.iter().find(|r| &r.model == model && r.segment == segment).map(|r| r.users).unwrap_or(0);
        let _ = write!(h, "<td class=\"num\">{users}</td>");
    }
    h.push_str("</tr></table>");
}

fn slices(h: &mut String, p: &Page<'_>) -> Result<()> {
    h.push_str(
        "<section><h2 id=\"slices\">Slices</h2><p>The same cases cut by the user's history length, by \
        whether the held-out item is new (created within the trending window), by its category, and by what \
        serves the user tomorrow.</p>",
    );
    let mut segs: Vec<String> = Vec::new();
    for r in p.rows.iter().filter(|r| r.segment != LISTS_SEGMENT && r.segment != BASKET_SEGMENT) {
        if !segs.contains(&r.segment) {
            segs.push(r.segment.clone());
        }
    }
    // The order evaluate writes them in.
    let first = |s: &String| p.rows.iter().position(|r| &r.segment == s).unwrap_or(usize::MAX);
    segs.sort_by_key(first);
    let ms = models(p, "all");
    if segs.is_empty() || ms.is_empty() {
        h.push_str("<p class=\"note\">Nothing was evaluated.</p></section>");
        return Ok(());
    }
    let series: Vec<(String, Vec<(usize, f64)>)> = ms
        .iter()
        .map(|m| {
            let pts =
                segs.iter().enumerate().filter_map(|(i, s)| find(p, m, s, "ndcg", 10).map(|r| (i, r.value))).collect();
            (m.clone(), pts)
        })
        .collect();
    figure(h, "slices", "NDCG@10 by slice and model", &dots_chart("NDCG@10", &segs, &series)?);
    h.push_str("<table><tr><th>slice</th><th>users</th>");
    for m in &ms {
        let _ = write!(h, "<th>{} NDCG@10</th><th>{} Recall@10</th>", esc(m), esc(m));
    }
    h.push_str("</tr>");
    for s in &segs {
        let users = find(p, "nightrec", s, "ndcg", 10).map(|r| r.users).unwrap_or(0);
        let _ = write!(h, "<tr><td>{}</td><td class=\"num\">{users}</td>", esc(s));
        for m in &ms {
            for metric in ["ndcg", "recall"] {
                h.push_str(&find(p, m, s, metric, 10).map(cell).unwrap_or_else(|| "<td>–</td>".into()));
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></section>");
    Ok(())
}

fn lists(h: &mut String, p: &Page<'_>) -> Result<()> {
    h.push_str(
        "<section><h2 id=\"lists\">Tomorrow's lists</h2><p>Every user's published <code>user_candidates</code>: \
        catalog coverage (distinct listed items / in-stock items), novelty (mean self-information of the listed \
        items, in bits), category diversity (share of pairs of listed items in different categories), and the \
        users served by the fallbacks (k = 0: the first candidate's source).</p><table><tr><th>figure</th>",
    );
    for k in KS {
        let _ = write!(h, "<th>@{k}</th>");
    }
    h.push_str("</tr>");
    for metric in ["coverage", "novelty", "diversity"] {
        let _ = write!(h, "<tr><td>{metric}</td>");
        for k in KS {
            h.push_str(
                &find(p, "nightrec", LISTS_SEGMENT, metric, k as i32).map(cell).unwrap_or_else(|| "<td>–</td>".into()),
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table><table><tr><th>users whose list comes from</th><th>share</th></tr>");
    for (metric, label) in [("cold_start_users", "cold start"), ("popular_users", "popular items")] {
        let c = find(p, "nightrec", LISTS_SEGMENT, metric, 0).map(cell).unwrap_or_else(|| "<td>–</td>".into());
        let _ = write!(h, "<tr><td>{label}</td>{c}</tr>");
    }
    h.push_str("</table>");
    match &p.scores {
        Some((lo, hi, counts)) => {
            let width = (hi - lo) / counts.len() as f64;
            let labels: Vec<String> = (0..counts.len()).map(|i| format!("{:.3}", lo + width * i as f64)).collect();
            let bars: Vec<(usize, f64)> = counts.iter().enumerate().map(|(i, c)| (i, *c as f64)).collect();
            figure(
                h,
                "score_histogram",
                &format!(
                    "Candidate scores, {} candidates in {} bins from {:.4} to {:.4}",
                    counts.iter().sum::<u64>(),
                    counts.len(),
                    lo,
                    hi
                ),
                &bars_chart("candidates", "score (bin start)", &labels, &bars)?,
            );
        }
        None => h.push_str("<p class=\"note\">No candidates.</p>"),
    }
    match &p.overlap {
        Some((date, buckets)) if !buckets.is_empty() => {
            let labels: Vec<String> = (0..=10)
                .map(|b| if b == 10 { "all kept".to_string() } else { format!("{}–{}%", b * 10, b * 10 + 10) })
                .collect();
            let bars: Vec<(usize, f64)> =
                buckets.iter().map(|(b, u)| ((*b).clamp(0, 10) as usize, *u as f64)).collect();
            let users: u64 = buckets.iter().map(|b| b.1).sum();
            figure(
                h,
                "overlap_histogram",
                &format!(
                    "Share of each user's items that were in their list of {date} ({users} users listed both nights)"
                ),
                &bars_chart("users", "items kept", &labels, &bars)?,
            );
        }
        Some((date, _)) => {
            let _ = write!(h, "<p class=\"note\">No user has a list both tonight and on {}.</p>", esc(date));
        }
        None => h.push_str("<p class=\"note\">No earlier publication: no overlap to show.</p>"),
    }
    h.push_str("</section>");
    Ok(())
}

fn training(h: &mut String, p: &Page<'_>) -> Result<()> {
    h.push_str("<section><h2 id=\"training\">Training</h2>");
    if p.epochs.is_empty() {
        h.push_str("<p class=\"note\">No epochs recorded for this date.</p></section>");
        return Ok(());
    }
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (i, e) in p.epochs.iter().enumerate() {
        if series.last().is_none_or(|s| s.0 != e.phase) {
            series.push((e.phase.clone(), Vec::new()));
        }
        if let Some(s) = series.last_mut()
            && e.loss.is_finite()
        {
            s.1.push(((i + 1) as f64, e.loss));
        }
    }
    figure(
        h,
        "training_loss",
        "Mean training loss per epoch (pretraining, fine-tuning, refit)",
        &lines_chart("loss", "epoch", &series)?,
    );
    let valid: Vec<(f64, f64)> = p
        .epochs
        .iter()
        .filter(|e| e.phase == "fine-tune")
        .filter_map(|e| e.valid_ndcg.map(|v| (e.epoch as f64, v)))
        .collect();
    if valid.is_empty() {
        h.push_str("<p class=\"note\">No fine-tuning epochs.</p>");
    } else {
        let best = valid.iter().copied().fold((0.0, f64::NEG_INFINITY), |b, x| if x.1 > b.1 { x } else { b });
        figure(
            h,
            "validation_ndcg",
            &format!("Validation NDCG@10 per fine-tuning epoch (best: epoch {} at {:.4})", best.0, best.1),
            &lines_chart("NDCG@10", "epoch", &[("validation".into(), valid.clone())])?,
        );
    }
    let count = |phase: &str| p.epochs.iter().filter(|e| e.phase == phase).count();
    let _ = write!(
        h,
        "<p>{} pretraining, {} fine-tuning and {} refit epochs.</p></section>",
        count("pretrain"),
        count("fine-tune"),
        count("refit")
    );
    Ok(())
}

fn data_quality(h: &mut String, p: &Page<'_>) -> Result<()> {
    let q = &p.quality;
    h.push_str(
        "<section><h2 id=\"data-quality\">Data quality</h2><table><tr><th>dataset</th><th>rows read</th><th>clean</th>\
        <th>quarantined</th><th>share quarantined</th></tr>",
    );
    for (d, read, clean, bad) in &q.datasets {
        let share = if *read > 0.0 { bad / read } else { 0.0 };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{read:.0}</td><td class=\"num\">{clean:.0}</td><td class=\"num\">{bad:.0}</td>\
             <td class=\"num\">{:.2}%</td></tr>",
            esc(d),
            100.0 * share
        );
    }
    h.push_str("</table><table><tr><th>run-wide check</th><th>value</th><th>limit</th><th></th></tr>");
    for (c, v, t, ok) in &q.checks {
        let limit = t.map(|t| format!("{t}")).unwrap_or_else(|| "–".into());
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{limit}</td><td class=\"{}\">{}</td></tr>",
            esc(c),
            trim_number(*v),
            if *ok { "pass" } else { "fail" },
            if *ok { "ok" } else { "FAILED" }
        );
    }
    h.push_str("</table>");
    if q.failed.is_empty() {
        h.push_str("<p data-table=\"failed_checks\">Every data-quality check passed.</p>");
    } else {
        // Never hidden: every check that did not pass, with its file.
        h.push_str(
            "<table data-table=\"failed_checks\"><tr><th>check that did not pass</th><th>file</th><th>value</th>\
             <th>limit</th><th>severity</th><th>what it means</th></tr>",
        );
        for f in &q.failed {
            let limit = f.threshold.map(|t| format!("{t}")).unwrap_or_else(|| "–".into());
            let _ = write!(
                h,
                "<tr data-check=\"{}\" data-source=\"{}\"><td>{}</td><td class=\"path\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{limit}</td><td class=\"fail\">{}</td><td>{}</td></tr>",
                esc(&f.check),
                esc(&f.source),
                esc(&f.check),
                esc(&f.source),
                trim_number(f.value),
                esc(&f.severity),
                esc(&f.detail)
            );
        }
        h.push_str("</table>");
    }
    if q.reasons.is_empty() {
        h.push_str("<p class=\"note\">No row was quarantined.</p>");
    } else {
        // The most frequent reason on top.
        let labels: Vec<String> = q.reasons.iter().rev().map(|r| r.0.clone()).collect();
        let rows: Vec<f64> = q.reasons.iter().rev().map(|r| r.1).collect();
        figure(h, "quarantine", "Quarantined rows by reason (table quarantine)", &hbars_chart("rows", &labels, &rows)?);
    }
    h.push_str("</section>");
    Ok(())
}

fn trim_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.4}") }
}

fn gate(h: &mut String, p: &Page<'_>) {
    h.push_str("<section><h2 id=\"gate\">Day-over-day gate</h2>");
    match &p.about.compared_with {
        None => h.push_str("<p class=\"note\">No earlier publication to compare with (or the gate is off).</p>"),
        Some(d) => {
            let _ = write!(
                h,
                "<p>Compared with {}.</p><table><tr><th>check</th><th>value</th><th>limit</th><th></th></tr>",
                esc(d)
            );
            for c in &p.about.gate {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"num\">{:.4}</td><td class=\"num\">{}</td><td class=\"{}\">{}</td></tr>",
                    esc(&c.check),
                    c.value,
                    c.threshold,
                    if c.passed { "pass" } else { "fail" },
                    if c.passed { "passed" } else { "FAILED" }
                );
            }
            h.push_str("</table>");
        }
    }
    h.push_str("</section>");
}

fn trend(h: &mut String, p: &Page<'_>) -> Result<()> {
    h.push_str(
        "<section><h2 id=\"trend\">Trend</h2><p>The main figures of every date published up to this one, \
        from their manifests.</p>",
    );
    let dates: Vec<String> = p.trend.iter().map(|t| t.0.clone()).collect();
    let pick = |f: fn(&DayStats) -> Option<f64>| -> Vec<(usize, f64)> {
        p.trend.iter().enumerate().filter_map(|(i, t)| f(&t.1).map(|v| (i, v))).collect()
    };
    let series: Vec<(String, Vec<(usize, f64)>)> = vec![
        ("model NDCG@10".into(), pick(|s| s.ndcg)),
        ("model Recall@10".into(), pick(|s| s.recall)),
        ("popularity NDCG@10".into(), pick(|s| s.popularity_ndcg)),
        ("coverage".into(), pick(|s| Some(s.coverage))),
        ("cold-start share".into(), pick(|s| Some(s.cold_share))),
    ];
    figure(
        h,
        "trend",
        &format!("Main figures over {} published dates", dates.len()),
        &dots_over("value", &dates, &series)?,
    );
    h.push_str(
        "<table><tr><th>date</th><th>model NDCG@10</th><th>model Recall@10</th><th>popularity NDCG@10</th>\
        <th>coverage</th><th>cold-start share</th><th>novelty @10</th><th>diversity @10</th><th>users</th></tr>",
    );
    let opt = |v: Option<f64>| v.map(fmt_value).unwrap_or_else(|| "–".into());
    for (d, s) in &p.trend {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(d),
            opt(s.ndcg),
            opt(s.recall),
            opt(s.popularity_ndcg),
            fmt_value(s.coverage),
            fmt_value(s.cold_share),
            opt(s.novelty),
            opt(s.diversity),
            s.users
        );
    }
    h.push_str("</table></section>");
    Ok(())
}

fn stages(h: &mut String, p: &Page<'_>) {
    h.push_str(
        "<section><h2 id=\"stages\">Stages</h2><table><tr><th>stage</th><th>status</th><th>seconds</th>\
        <th>CPU seconds</th><th>peak RSS (MiB)</th></tr>",
    );
    let list = p.about.summary.as_ref().map(|s| s.stages.as_slice()).unwrap_or_default();
    for s in list {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.0}</td></tr>",
            esc(s.stage.name()),
            if s.ran { "ran" } else { "skipped (unchanged)" },
            s.seconds,
            s.cpu_seconds,
            s.peak_rss_mb
        );
    }
    h.push_str("</table></section>");
}

// -------------------------------------------------------------- charts

type Drawn = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(127, 127, 127),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

/// A drawn chart: the SVG and its legend (HTML beside the plot, where it
/// hides no data).
struct Chart {
    svg: String,
    legend: String,
}

/// How a series is marked in the legend.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    Line,
    Dot,
}

fn legend(names: &[&str], mark: Mark) -> String {
    if names.len() < 2 {
        return String::new();
    }
    let mut h = String::from("<div class=\"legend\">");
    for (i, name) in names.iter().enumerate() {
        let c = colour(i);
        let _ = write!(
            h,
            "<span><i class=\"{}\" style=\"background:#{:02x}{:02x}{:02x}\"></i>{}</span>",
            if mark == Mark::Dot { "dot" } else { "line" },
            c.0,
            c.1,
            c.2,
            esc(name)
        );
    }
    h.push_str("</div>");
    h
}

fn figure(h: &mut String, name: &str, caption: &str, chart: &Chart) {
    let _ = write!(
        h,
        "<figure class=\"chart\" data-chart=\"{}\">{}{}<figcaption>{}</figcaption></figure>",
        esc(name),
        chart.legend,
        chart.svg,
        esc(caption)
    );
}

fn svg(size: (u32, u32), draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Drawn) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(|e| e.into())
            .and_then(|_| draw(&root))
            .and_then(|_| root.present().map_err(|e| e.into()));
        drawn.map_err(|e| Error::Internal(format!("drawing a report chart: {e}")))?;
    }
    Ok(out)
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let lo = lo.min(0.0);
    let hi = if hi > lo { hi + (hi - lo) * 0.08 } else { lo + 1.0 };
    (lo, hi)
}

/// An axis number, short: 5000000 → 5M, 12500 → 12.5k, 10.0 → 10,
/// 0.0500 → 0.05.
fn tick(v: &f64) -> String {
    let a = v.abs();
    let (x, unit, places) = if a >= 1e6 {
        (v / 1e6, "M", 2)
    } else if a >= 1e4 {
        (v / 1e3, "k", 1)
    } else if a >= 1.0 {
        (*v, "", 3)
    } else {
        (*v, "", 4)
    };
    let mut s = format!("{x:.places$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if s == "-0" {
        s = "0".into();
    }
    s + unit
}

/// Pixels for the labels of a category axis: as wide as the longest label.
fn label_width(names: &[String]) -> u32 {
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) as u32;
    (longest * 7 + 16).clamp(60, 320)
}

/// The label of a category on a segmented axis.
fn category(names: &[String]) -> impl Fn(&SegmentValue<i32>) -> String + '_ {
    move |v| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names.get(*i as usize).cloned().unwrap_or_default(),
        SegmentValue::Last => String::new(),
    }
}

fn names_of<T>(series: &[(String, T)]) -> Vec<&str> {
    series.iter().map(|s| s.0.as_str()).collect()
}

/// Lines over a numeric x, one per named series.
fn lines_chart(y_desc: &str, x_desc: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<Chart> {
    let xs = bounds(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)));
    let (x0, x1) = (series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).fold(f64::INFINITY, f64::min), xs.1);
    let x0 = if x0.is_finite() { x0 - (x1 - x0).max(1.0) * 0.04 } else { 0.0 };
    let ys = bounds(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let svg = svg((720, 340), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, ys.0..ys.1)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .light_line_style(WHITE)
            .draw()?;
        for (i, (_, pts)) in series.iter().enumerate() {
            let c = colour(i);
            chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))?;
        }
        Ok(())
    })?;
    Ok(Chart { svg, legend: legend(&names_of(series), Mark::Line) })
}

/// One dot per (category, series) on a horizontal value axis.
fn dots_chart(x_desc: &str, names: &[String], series: &[(String, Vec<(usize, f64)>)]) -> Result<Chart> {
    let xs = bounds(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let n = names.len().max(1) as i32;
    let height = 60 + 26 * names.len() as u32;
    let svg = svg((720, height.max(160)), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(label_width(names))
            .build_cartesian_2d(xs.0..xs.1, (0..(n - 1).max(1)).into_segmented())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .x_label_formatter(&tick)
            .y_labels(names.len())
            .y_label_formatter(&category(names))
            .light_line_style(WHITE)
            .draw()?;
        for (i, (_, pts)) in series.iter().enumerate() {
            let c = colour(i);
            chart.draw_series(
                pts.iter().map(|(s, v)| Circle::new((*v, SegmentValue::CenterOf(*s as i32)), 5, c.filled())),
            )?;
        }
        Ok(())
    })?;
    Ok(Chart { svg, legend: legend(&names_of(series), Mark::Dot) })
}

/// Lines over categories (dates) on the x axis; at most 8 of them labelled
/// (a date label is about 65 pixels wide).
fn dots_over(y_desc: &str, names: &[String], series: &[(String, Vec<(usize, f64)>)]) -> Result<Chart> {
    let ys = bounds(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let n = names.len().max(1) as i32;
    let svg = svg((720, 340), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d((0..(n - 1).max(1)).into_segmented(), ys.0..ys.1)?;
        chart
            .configure_mesh()
            .y_desc(y_desc)
            .x_labels(names.len().min(8))
            .x_label_formatter(&category(names))
            .y_label_formatter(&tick)
            .light_line_style(WHITE)
            .draw()?;
        for (i, (_, pts)) in series.iter().enumerate() {
            let c = colour(i);
            let at = |(s, v): &(usize, f64)| (SegmentValue::CenterOf(*s as i32), *v);
            chart.draw_series(LineSeries::new(pts.iter().map(at), c.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|p| Circle::new(at(p), 4, c.filled())))?;
        }
        Ok(())
    })?;
    Ok(Chart { svg, legend: legend(&names_of(series), Mark::Line) })
}

/// Vertical bars over ordered bins (a histogram); at most 8 bins labelled.
fn bars_chart(y_desc: &str, x_desc: &str, labels: &[String], bars: &[(usize, f64)]) -> Result<Chart> {
    let ys = bounds(bars.iter().map(|b| b.1));
    let n = labels.len().max(1) as i32;
    let svg = svg((720, 340), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0..(n - 1).max(1)).into_segmented(), 0.0..ys.1)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(labels.len().min(8))
            .x_label_formatter(&category(labels))
            .y_label_formatter(&tick)
            .light_line_style(WHITE)
            .draw()?;
        // Drawn in index order (plotters' Histogram keeps its bars in a
        // HashMap, so the page would change from run to run).
        let c = colour(0);
        chart.draw_series(bars.iter().map(|(i, v)| {
            let i = *i as i32;
            let right = if i + 1 < n { SegmentValue::Exact(i + 1) } else { SegmentValue::Last };
            let mut r = Rectangle::new([(SegmentValue::Exact(i), *v), (right, 0.0)], c.mix(0.8).filled());
            r.set_margin(0, 0, 2, 2);
            r
        }))?;
        Ok(())
    })?;
    Ok(Chart { svg, legend: String::new() })
}

/// Horizontal bars, one per named category (labels of any length stay
/// readable).
fn hbars_chart(x_desc: &str, labels: &[String], values: &[f64]) -> Result<Chart> {
    let xs = bounds(values.iter().copied());
    let n = labels.len().max(1) as i32;
    let height = 60 + 26 * labels.len() as u32;
    let svg = svg((720, height.max(160)), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(label_width(labels))
            .build_cartesian_2d(0.0..xs.1, (0..(n - 1).max(1)).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(x_desc)
            .x_label_formatter(&tick)
            .y_labels(labels.len())
            .y_label_formatter(&category(labels))
            .light_line_style(WHITE)
            .draw()?;
        let c = colour(0);
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            let i = i as i32;
            let top = if i + 1 < n { SegmentValue::Exact(i + 1) } else { SegmentValue::Last };
            let mut r = Rectangle::new([(0.0, SegmentValue::Exact(i)), (*v, top)], c.mix(0.8).filled());
            r.set_margin(3, 3, 0, 0);
            r
        }))?;
        Ok(())
    })?;
    Ok(Chart { svg, legend: String::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Stage, StageReport};

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
