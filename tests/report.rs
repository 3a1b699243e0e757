//! The night's report as a person sees it: opened in headless Chromium
//! (Debian's package, driven by Selenium), with no console errors, every
//! chart drawn, every section filled, and every number equal to the
//! published `evaluation` table (read with pyarrow); a full-page
//! screenshot is left for people to look at. `nightrec report` rebuilds
//! the same bytes from the published tables.

use crate::common::*;

const BROWSE: &str = r#"
import sys, os, json
import pyarrow.parquet as pq
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
report, out, date, png, chromium = sys.argv[1:6]
opts = webdriver.ChromeOptions()
opts.binary_location = chromium
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
          "--disable-extensions", "--no-first-run"):
    opts.add_argument(a)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = os.path.join(os.path.dirname(chromium), "chromedriver")
d = webdriver.Chrome(service=Service(driver), options=opts)
try:
    d.get("file://" + os.path.abspath(report))
    assert d.execute_script("return document.readyState") == "complete"
    assert d.title == f"nightrec report {date}", d.title
    errors = [l for l in d.get_log("browser") if l["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    # Nothing outside the page: no script, no external image, style or frame.
    external = d.execute_script("""return [...document.querySelectorAll('[src],[href],script,link[rel=stylesheet],iframe')]
        .filter(e => !(e.tagName === 'A' && e.getAttribute('href').startsWith('#'))
                  && !(e.tagName === 'LINK' && e.getAttribute('href').startsWith('data:')))
        .map(e => e.outerHTML.slice(0, 120))""")
    assert not external, external
    # Every chart is there, drawn, and laid out with a size.
    charts = d.execute_script("""return [...document.querySelectorAll('figure.chart')].map(f => {
        const s = f.querySelector('svg'), r = s ? s.getBoundingClientRect() : {width: 0, height: 0};
        return {name: f.dataset.chart, width: r.width, height: r.height,
                marks: s ? s.querySelectorAll('circle, rect, polyline, path, line').length : 0,
                labels: s ? [...s.querySelectorAll('text')].filter(t => t.textContent.trim()).length : 0}; })""")
    names = [c["name"] for c in charts]
    want = ["ndcg_by_k", "recall_by_k", "slices", "score_histogram", "overlap_histogram", "training_loss",
            "validation_ndcg", "quarantine", "trend"]
    assert sorted(names) == sorted(want), names
    for c in charts:
        assert c["width"] > 300 and c["height"] > 100 and c["marks"] > 6 and c["labels"] > 3, c
    # Laid out to be read: nothing wider than the window (wide tables scroll
    # inside themselves), and no label of a chart drawn over another.
    wide = d.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert wide <= 0, wide
    overlaps = d.execute_script("""return [...document.querySelectorAll('figure.chart svg')].flatMap(s => {
        const name = s.closest('figure').dataset.chart, out = [];
        const ts = [...s.querySelectorAll('text')].filter(t => t.textContent.trim())
            .map(t => [t.textContent, t.getBoundingClientRect()]);
        for (let i = 0; i < ts.length; i++) for (let j = i + 1; j < ts.length; j++) {
            const a = ts[i][1], b = ts[j][1];
            if (Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1
                && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1) out.push([name, ts[i][0], ts[j][0]]);
        }
        return out; })""")
    assert not overlaps, overlaps[:5]
    # Every section has content and no "nothing to show" note on a second night.
    sections = d.execute_script("""return [...document.querySelectorAll('section')].map(s =>
        [s.querySelector('h2') ? s.querySelector('h2').id : 'headline', s.innerText.trim().length])""")
    for sid, n in sections:
        assert n > 40, (sid, n)
    assert {s for s, _ in sections} >= {"headline", "accuracy", "slices", "lists", "training", "data-quality", "gate",
                                         "trend", "stages", "all-rows"}, sections
    notes = d.execute_script("return [...document.querySelectorAll('.note')].map(n => n.innerText)")
    assert not notes, notes
    # The numbers are the published evaluation table's.
    ev = pq.read_table(f"{out}/evaluation/dt={date}").to_pylist()
    val = {(r["model"], r["segment"], r["metric"], r["k"]): r["value"] for r in ev}
    cells = d.execute_script("""return [...document.querySelectorAll('td[data-metric]')].map(t =>
        [t.dataset.model, t.dataset.segment, t.dataset.metric, +t.dataset.k, +t.dataset.value, t.textContent.trim()])""")
    seen = set()
    for model, segment, metric, k, value, shown in cells:
        key = (model, segment, metric, k)
        assert key in val, key
        assert value == val[key] and shown == f"{val[key]:.4f}", (key, value, shown, val[key])
        seen.add(key)
    assert seen == set(val), sorted(set(val) - seen)[:5]
    gate = json.load(open(f"{out}/_runs/dt={date}/manifest.json"))["gate"]
    shown = d.execute_script("return document.getElementById('gate').parentElement.innerText")
    assert gate and all(c["check"] in shown for c in gate), shown
    # A screenshot of the whole page.
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(1280, min(height + 120, 20000))
    assert d.save_screenshot(png) and os.path.getsize(png) > 50_000, png
    print(len(cells), len(charts), height)
finally:
    d.quit()
"#;

/// Chromium from Debian (`make test` sets NIGHTREC_CHROMIUM through
/// scripts/setup-chromium.sh); chromedriver sits beside it.
fn chromium() -> String {
    std::env::var("NIGHTREC_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Check the report of `date` (published in `fx`, compared with an
/// earlier night): listed in the manifest, linked from the run summary
/// (`run_stdout`), rebuilt byte for byte by `nightrec report`, and right
/// in a browser.
pub fn check_report(fx: &Fixture, date: &str, run_stdout: &str) {
    let out = fx.dir.path().join("out");
    let manifest_path = out.join(format!("_runs/dt={date}/manifest.json"));
    let manifest = std::fs::read(&manifest_path).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    // Named by its own checksum, listed in the manifest, the summary's last line.
    let rel = m["report"]["path"].as_str().unwrap().to_string();
    let sha16 = &m["report"]["sha256"].as_str().unwrap()[..16];
    assert_eq!(rel, format!("_runs/dt={date}/report-{sha16}.html"));
    let report = out.join(&rel);
    let last = run_stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("report: file://") && last.ends_with(&rel),
        "the run summary does not end with the report: {last}"
    );
    let bytes = std::fs::read(&report).unwrap();
    assert_eq!(m["report"]["bytes"], bytes.len() as u64);
    let sha = py(
        "import sys, hashlib; print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())",
        &[report.to_str().unwrap()],
    );
    assert_eq!(m["report"]["sha256"], sha.trim());

    // Rebuilt from the published tables: the same page, the same manifest.
    std::fs::remove_file(&report).unwrap();
    let o = nightrec(&["--input", &fx.input(), "--output", &fx.output(), "report", "--date", date], &[], fx.dir.path());
    assert!(o.status.success(), "nightrec report failed: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).trim().ends_with(&rel), "{}", text(&o));
    assert!(std::fs::read(&report).unwrap() == bytes, "the rebuilt report differs from the published one");
    assert_eq!(std::fs::read(&manifest_path).unwrap(), manifest, "an unchanged report rewrote the manifest");
    // A date that is not published has no report to rebuild (exit 2).
    let o = nightrec(
        &["--input", &fx.input(), "--output", &fx.output(), "report", "--date", "2026-11-30"],
        &[],
        fx.dir.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    let png = std::env::temp_dir().join(format!("nightrec-report-{date}.png"));
    let got = py(BROWSE, &[report.to_str().unwrap(), &fx.output(), date, png.to_str().unwrap(), &chromium()]);
    eprintln!("report checked in Chromium (cells, charts, page height): {}; screenshot: {}", got.trim(), png.display());
}
