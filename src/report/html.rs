//! The page's HTML: escaping, number formats, the style sheet and the
//! page's frame around the sections.

use std::fmt::Write as _;

use super::Page;
use super::sections::*;
use crate::error::Result;
use crate::tables::evaluation::Row;

/// Escape text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
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
pub(crate) fn fmt_value(v: f64) -> String {
    if v.is_finite() { format!("{v:.4}") } else { "–".into() }
}

/// A table cell holding one row of `evaluation`, keyed for checking.
pub(super) fn cell(r: &Row) -> String {
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

pub(super) const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;\
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

pub(super) fn render(p: &Page<'_>) -> Result<String> {
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
