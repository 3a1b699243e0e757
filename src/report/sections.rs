//! The page's sections, in reading order: headline, accuracy, slices,
//! tomorrow's lists, training, data quality, the gate, the trend and the
//! stages.

use std::fmt::Write as _;

use super::Page;
use super::charts::*;
use super::html::*;
use crate::error::Result;
use crate::metrics::KS;
use crate::published::DayStats;
use crate::tables::evaluation::{self, BASKET_SEGMENT, LISTS_SEGMENT, Row};

pub(super) fn find<'a>(p: &'a Page<'_>, model: &str, segment: &str, metric: &str, k: i32) -> Option<&'a Row> {
    p.rows.iter().find(|r| r.model == model && r.segment == segment && r.metric == metric && r.k == k)
}

/// Models of the leave-one-out rows present, in [`evaluation::MODELS`] order.
pub(super) fn models(p: &Page<'_>, segment: &str) -> Vec<String> {
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

pub(super) fn headline(h: &mut String, p: &Page<'_>) {
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

pub(super) fn accuracy(h: &mut String, p: &Page<'_>) -> Result<()> {
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
pub(super) fn metric_table(h: &mut String, p: &Page<'_>, segment: &str, ms: &[String]) {
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

pub(super) fn slices(h: &mut String, p: &Page<'_>) -> Result<()> {
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

pub(super) fn lists(h: &mut String, p: &Page<'_>) -> Result<()> {
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

pub(super) fn training(h: &mut String, p: &Page<'_>) -> Result<()> {
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

pub(super) fn data_quality(h: &mut String, p: &Page<'_>) -> Result<()> {
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

pub(super) fn trim_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.4}") }
}

pub(super) fn gate(h: &mut String, p: &Page<'_>) {
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

pub(super) fn trend(h: &mut String, p: &Page<'_>) -> Result<()> {
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

pub(super) fn stages(h: &mut String, p: &Page<'_>) {
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
