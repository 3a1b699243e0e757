//! Ingest and clean: a bad-input corpus with every reason code in every
//! input format, counted exactly by an independent reader; an unreadable
//! file stops the run; memory:// stores work end to end through the SQL
//! stages.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;

use crate::common::*;

/// One corpus row: event_id, user_id, item_id, event_type, ts, rating.
type Row = [&'static str; 6];

/// Rows every format carries, with the reason each must get ("" = clean).
/// The run date is 2026-11-21 with 30 days of lookback.
fn corpus(bot: &'static str) -> Vec<(Row, &'static str)> {
    vec![
        (["c1", "u1", "I1", "view", "2026-11-21T10:00:00Z", ""], ""),
        (["c2", "u1", "I2", "purchase", "1795255500000", ""], ""),
        (["c3", "u2", "I1", "rating", "2026-11-20T11:00:00+02:00", "4"], ""),
        (["c1", "u1", "I1", "view", "2026-11-21T10:00:00Z", ""], "duplicate"),
        (["m1", "", "I1", "view", "2026-11-21T10:00:00Z", ""], "missing_id"),
        (["t1", "u3", "I1", "hover", "2026-11-21T10:00:00Z", ""], "unknown_event_type"),
        (["b1", "u3", "I1", "view", "yesterday", ""], "bad_timestamp"),
        (["o1", "u3", "I1", "view", "2026-09-01T00:00:00Z", ""], "out_of_window"),
        (["o2", "u3", "I1", "view", "2026-11-22T00:00:01Z", ""], "out_of_window"),
        (["x1", "u3", "NOPE", "view", "2026-11-21T10:00:00Z", ""], "unknown_item"),
        (["n1", "u4", "I1", "rating", "2026-11-21T10:00:00Z", "five"], "malformed"),
        ([bot, bot, "I1", "view", "2026-11-21T09:00:01Z", ""], "bot"),
        ([bot, bot, "I2", "view", "2026-11-21T09:00:02Z", ""], "bot"),
        ([bot, bot, "I1", "click", "2026-11-21T09:00:03Z", ""], "bot"),
        ([bot, bot, "I2", "click", "2026-11-21T09:00:04Z", ""], "bot"),
    ]
}

const COLS: [&str; 6] = ["event_id", "user_id", "item_id", "event_type", "ts", "rating"];

/// Event ids are unique per file (dedupe is global); bot rows, whose id
/// field holds the bot's name, get one per row.
fn event_id(tag: &str, r: &Row, i: usize) -> String {
    if r[0] == r[1] { format!("{tag}{}-{i}", r[0]) } else { format!("{tag}{}", r[0]) }
}

fn write_corpus(dir: &std::path::Path) {
    let ev = dir.join("events");
    std::fs::create_dir_all(&ev).unwrap();
    // NDJSON: epoch-millisecond timestamps as numbers, a broken line at line 16.
    let mut json = String::new();
    for (i, (r, _)) in corpus("botj").iter().enumerate() {
        let mut m = serde_json::Map::new();
        for (c, v) in COLS.iter().zip(r.iter()) {
            if v.is_empty() {
                continue;
            }
            let v = if *c == "event_id" { event_id("j", r, i) } else { v.to_string() };
            let value = match (*c, v.parse::<i64>()) {
                ("ts", Ok(n)) => serde_json::Value::from(n),
                _ => serde_json::Value::from(v),
            };
            m.insert(c.to_string(), value);
        }
        json.push_str(&serde_json::Value::Object(m).to_string());
        json.push('\n');
    }
    json.push_str("{\"event_id\": \"j-broken\", \"user_id\": \"u9\"\n");
    std::fs::write(ev.join("events.jsonl"), json).unwrap();

    // CSV: a header, then a row with a missing field at line 17.
    let mut csv = format!("{}\n", COLS.join(","));
    for (i, (r, _)) in corpus("botc").iter().enumerate() {
        let mut fields: Vec<String> = r.iter().map(|s| s.to_string()).collect();
        fields[0] = event_id("c", r, i);
        csv.push_str(&fields.join(","));
        csv.push('\n');
    }
    csv.push_str("short,u9,I1\n");
    std::fs::write(ev.join("events.csv"), csv).unwrap();

    // Parquet: every column text, empty values as NULL.
    let rows = corpus("botp");
    let schema = Arc::new(Schema::new(COLS.iter().map(|c| Field::new(*c, DataType::Utf8, true)).collect::<Vec<_>>()));
    let cols = (0..COLS.len())
        .map(|c| {
            let vals = rows.iter().enumerate().map(|(i, (r, _))| {
                if c == 0 { Some(event_id("p", r, i)) } else { (!r[c].is_empty()).then(|| r[c].to_string()) }
            });
            Arc::new(vals.collect::<StringArray>()) as _
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(ev.join("events.parquet")).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let items = dir.join("items");
    std::fs::create_dir_all(&items).unwrap();
    std::fs::write(
        items.join("items.csv"),
        "item_id,title,category\nI1,Steel Pan,Home > Kitchen\nI2,Kettle,Home > Kitchen\n",
    )
    .unwrap();
}

const CHECK_QUARANTINE: &str = r#"
import sys, json, collections
import pyarrow.parquet as pq
work = sys.argv[1]
q = pq.read_table(f"{work}/quarantine").to_pylist()
got = collections.Counter((r["source"].rsplit("/", 1)[-1], r["reason"]) for r in q)
print(json.dumps(sorted([list(k) + [v] for k, v in got.items()])))
dq = pq.read_table(f"{work}/data_quality").to_pylist()
per = collections.defaultdict(dict)
for r in dq:
    per[r["source"].rsplit("/", 1)[-1]][r["check"]] = r["value"]
for src in ("events.jsonl", "events.csv", "events.parquet", "items.csv"):
    c = per[src]
    assert c["rows_read"] == c["rows_clean"] + c["rows_quarantined"], (src, c)
print(json.dumps({s: [per[s]["rows_read"], per[s]["rows_clean"], per[s]["rows_quarantined"]] for s in ("events.jsonl", "events.csv", "events.parquet")}))
broken = [r for r in q if r["reason"] == "malformed" and r["source"].endswith("events.jsonl") and "j-broken" in r["raw"]]
assert len(broken) == 1 and broken[0]["position"] == 16, broken
short = [r for r in q if r["reason"] == "malformed" and r["source"].endswith("events.csv") and r["raw"] == "short,u9,I1"]
assert len(short) == 1 and short[0]["position"] == 17, short
"#;

#[test]
fn every_reason_code_in_every_format_is_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("in"));
    let out = dir.path().join("out");
    let env = [("NIGHTREC_CLEAN__MAX_BAD_ROW_FRACTION", "1.0"), ("NIGHTREC_CLEAN__BOT_MAX_EVENTS_PER_MINUTE", "3")];
    let o = nightrec(
        &[
            "--input",
            dir.path().join("in").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "run",
            "--date",
            DATE,
            "--stage",
            "clean",
        ],
        &env,
        dir.path(),
    );
    assert!(o.status.success(), "clean failed: {}", text(&o));
    let work = out.join(format!("_work/dt={DATE}"));
    let got = py(CHECK_QUARANTINE, &[work.to_str().unwrap()]);
    let mut lines = got.lines();
    let counts: Vec<(String, String, u64)> = serde_json::from_str(lines.next().unwrap()).unwrap();
    let mut want = Vec::new();
    for (file, extra_malformed) in [("events.csv", 1), ("events.jsonl", 1), ("events.parquet", 0)] {
        let mut per: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for (_, reason) in corpus("x") {
            if !reason.is_empty() {
                *per.entry(reason).or_default() += 1;
            }
        }
        *per.entry("malformed").or_default() += extra_malformed;
        for (reason, n) in per {
            want.push((file.to_string(), reason.to_string(), n));
        }
    }
    want.sort();
    assert_eq!(counts, want);
    let totals: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(totals["events.jsonl"], serde_json::json!([16.0, 3.0, 13.0]));
    assert_eq!(totals["events.csv"], serde_json::json!([16.0, 3.0, 13.0]));
    assert_eq!(totals["events.parquet"], serde_json::json!([15.0, 3.0, 12.0]));
}

#[test]
fn an_undecodable_parquet_file_stops_the_run_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("in"));
    let bad = dir.path().join("in/events/broken.parquet");
    let good = std::fs::read(dir.path().join("in/events/events.parquet")).unwrap();
    // A valid footer over a damaged body: the header parses, the pages do not.
    let mut damaged = good.clone();
    for b in damaged.iter_mut().skip(4).take(good.len() / 2) {
        *b = 0xAB;
    }
    std::fs::write(&bad, damaged).unwrap();
    let env = [("NIGHTREC_CLEAN__MAX_BAD_ROW_FRACTION", "1.0")];
    let out = dir.path().join("out");
    let o = nightrec(
        &["--input", dir.path().join("in").to_str().unwrap(), "--output", out.to_str().unwrap(), "run", "--date", DATE],
        &env,
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("broken.parquet"), "{}", text(&o));
    assert!(!out.join(format!("_runs/dt={DATE}/_SUCCESS")).exists());
}

#[tokio::test]
async fn memory_stores_carry_a_run_through_the_sql_stages() {
    use nightrec::config::{Config, DEFAULT_CONFIG_TOML};
    use nightrec::ledger::Stage;
    use nightrec::pipeline::{RunOptions, run};
    use nightrec::storage::Root;

    let input = Root::open("memory://ingest-test/in").unwrap();
    let opts = nightrec::datagen::GenOptions {
        users: 40,
        items: 30,
        events: 2000,
        days: 5,
        seed: 3,
        end_date: DATE.parse().unwrap(),
    };
    nightrec::datagen::generate(&input, &opts).await.unwrap();
    let mut cfg = Config::from_toml_with_env(DEFAULT_CONFIG_TOML, "test", &[]).unwrap();
    cfg.storage.input = "memory://ingest-test/in".into();
    cfg.storage.output = "memory://ingest-test/out".into();
    let summary =
        run(cfg, RunOptions { stages: vec![Stage::Clean, Stage::Trainset], ..RunOptions::new(DATE.parse().unwrap()) })
            .await
            .unwrap();
    let rows = |name: &str| {
        summary.stages.iter().flat_map(|s| s.tables.iter()).find(|t| t.0 == name).map(|t| t.1).unwrap_or(0)
    };
    assert!(rows("clean_events") > 1500, "{:?}", summary.stages);
    assert!(rows("quarantine") >= 7, "{:?}", summary.stages);
    assert_eq!(rows("item_index"), 30);
    // The work tables are real Parquet objects in the memory store.
    let out = Root::open("memory://ingest-test/out").unwrap();
    let files = out.list(&format!("_work/dt={DATE}/sequences")).await.unwrap();
    let bytes = out.get(&files[0].location).await.unwrap();
    assert_eq!(nightrec::parquet_io::row_count(bytes).unwrap(), rows("sequences"));
}

const CHECK_PSEUDONYMS: &str = r#"
import sys, json
import pyarrow.parquet as pq
work = sys.argv[1]
ev = pq.read_table(f"{work}/clean_events").to_pylist()
users = pq.read_table(f"{work}/users").to_pylist()
seqs = pq.read_table(f"{work}/sequences").to_pylist()
q = pq.read_table(f"{work}/quarantine").to_pylist()
assert ev and all(r["user_id"].startswith("p_") for r in ev)
assert all(r["user_id"].startswith("p_") for r in users + seqs)
# The same pseudonym in every table: users/ rows and events join.
signed_up = {r["user_id"] for r in users if r["signup_ts"] is not None}
assert {r["user_id"] for r in ev} <= {r["user_id"] for r in users}
assert len(signed_up & {r["user_id"] for r in ev}) > 10, len(signed_up)
# No raw id anywhere in the quarantine's raw text.
assert not any("U0" in r["raw"] for r in q), [r["raw"] for r in q if "U0" in r["raw"]][:3]
print(len(ev))
"#;

#[test]
fn privacy_mode_pseudonymises_user_ids_in_every_table() {
    let fx = Fixture::new("60", "40", "3000");
    let args = [
        "--input",
        &fx.input(),
        "--output",
        &fx.output(),
        "run",
        "--date",
        DATE,
        "--stage",
        "clean",
        "--stage",
        "trainset",
    ];
    let mut env = vec![("NIGHTREC_CLEAN__PSEUDONYMIZE_USER_IDS", "true")];
    // Without the key the run refuses to start (exit 2) rather than leak ids.
    let o = nightrec(&args, &env, fx.dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    env.push(("NIGHTREC_USER_ID_KEY", "a-secret-key-of-32-bytes-or-so!!"));
    let o = nightrec(&args, &env, fx.dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("a-secret-key"), "the key was logged: {}", text(&o));
    let work = fx.dir.path().join(format!("out/_work/dt={DATE}"));
    py(CHECK_PSEUDONYMS, &[work.to_str().unwrap()]);
}

/// A copy of the bundled sample under a temp folder, for tests that alter it.
fn sample_copy(dir: &std::path::Path) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
    let dst = dir.join("in");
    let status = std::process::Command::new("cp").arg("-r").arg(&src).arg(&dst).status().unwrap();
    assert!(status.success());
    dst
}

fn run_clean(
    input: &std::path::Path,
    out: &std::path::Path,
    date: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut args = vec!["--input", input.to_str().unwrap(), "--output", out.to_str().unwrap(), "run", "--date", date];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--stage", "clean"]);
    nightrec(&args, env, input.parent().unwrap())
}

const QUALITY: &str = r#"
import sys, json
import pyarrow.parquet as pq
dq = pq.read_table(sys.argv[1] + "/data_quality").to_pylist()
print(json.dumps({r["check"] + ("@" + r["source"].rsplit("/", 1)[-1] if r["source"] != "*" else ""): [r["value"], r["passed"]] for r in dq}))
"#;

fn quality(out: &std::path::Path, date: &str) -> serde_json::Value {
    let work = out.join(format!("_work/dt={date}"));
    serde_json::from_str(py(QUALITY, &[work.to_str().unwrap()]).trim()).unwrap()
}

/// Regression: the listing read a day of partitions past each end of the
/// window, and those rows (out_of_window) counted as bad rows, so a night
/// with neighbouring days on both sides failed the gate (17% "bad"). A
/// backfill has both neighbours: the day before is read (slack, expected
/// rows), the day after is never read (it is still being written on the
/// night itself, and reading it would make a rerun depend on when it ran).
#[test]
fn a_backfill_with_both_neighbouring_days_passes_and_reads_the_day_before_only() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_copy(dir.path());
    let out = dir.path().join("out");
    let o = run_clean(&input, &out, "2026-11-15", &["--lookback-days", "10"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let q = quality(&out, "2026-11-15");
    let outside = q["events_out_of_window"][0].as_f64().unwrap();
    let read = q["events_read"][0].as_f64().unwrap();
    // One neighbouring day of 11 read: about a tenth of the rows, no defects.
    assert!(outside > 0.05 * read && outside < 0.15 * read, "{q}");
    let bad = q["events_bad_row_fraction"][0].as_f64().unwrap();
    assert!(bad < 0.03, "the sample's own defects are about 1%: {q}");
    let sources = py(
        "import sys, pyarrow.parquet as pq\nprint(sorted({r['source'] for r in pq.read_table(sys.argv[1]).to_pylist()}))",
        &[out.join("_work/dt=2026-11-15/data_quality").to_str().unwrap()],
    );
    assert!(sources.contains("dt=2026-11-05/") && sources.contains("dt=2026-11-15/"), "{sources}");
    assert!(!sources.contains("dt=2026-11-16/") && !sources.contains("dt=2026-11-04/"), "{sources}");
}

/// Regression: since out-of-window rows stopped counting as defects, a
/// producer that wrote a day's `ts` in epoch seconds (January 1970) passed
/// every gate: the day left training and the run exited 0. Rows far from
/// their own partition's day are defects, and one file of them fails the
/// night however small a share of the window it is.
#[test]
fn a_day_written_in_epoch_seconds_fails_the_file_gate_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_copy(dir.path());
    let file = input.join("events/dt=2026-11-12/part-00000.csv");
    let csv = std::fs::read_to_string(&file).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    let at = header.split(',').position(|c| c == "ts").unwrap();
    let mut seconds = format!("{header}\n");
    for line in lines {
        let mut f: Vec<String> = line.split(',').map(str::to_string).collect();
        if let Some(ms) = f.get(at).and_then(|t| t.parse::<i64>().ok()) {
            f[at] = (ms / 1000).to_string();
        }
        seconds.push_str(&f.join(","));
        seconds.push('\n');
    }
    std::fs::write(&file, seconds).unwrap();
    let out = dir.path().join("out");
    let o = run_clean(&input, &out, DATE, &[], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("dt=2026-11-12/part-00000.csv") && err.contains("wrong_partition"), "{err}");
    assert!(err.contains("clean.max_bad_file_fraction"), "{err}");
    // The overall share alone would have passed: the file gate fired.
    let q = quality(&out, DATE);
    let overall = q["events_bad_row_fraction"][0].as_f64().unwrap();
    assert!(overall > 0.02 && overall < 0.05, "{q}");
    assert_eq!(q["events_bad_row_fraction"][1], serde_json::json!(true), "{q}");
    assert!(q["events_wrong_partition"][0].as_f64().unwrap() > 1000.0, "{q}");
    assert_eq!(q["event_files_over_bad_file_fraction"], serde_json::json!([1.0, false]), "{q}");
    assert!(!out.join(format!("_runs/dt={DATE}/_SUCCESS")).exists());
    // The untouched sample passes.
    std::fs::create_dir_all(dir.path().join("again")).unwrap();
    let clean_in = sample_copy(&dir.path().join("again"));
    let o = run_clean(&clean_in, &dir.path().join("out2"), DATE, &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Regression: bot-filtered rows counted as defects, so a storefront with
/// a third of its traffic from crawlers failed the gate every night.
#[test]
fn bot_traffic_has_its_own_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let ev = input.join("events");
    std::fs::create_dir_all(&ev).unwrap();
    std::fs::create_dir_all(input.join("items")).unwrap();
    std::fs::write(input.join("items/items.csv"), "item_id,title\nI1,Pan\nI2,Kettle\nI3,Knife\n").unwrap();
    let mut csv = String::from("user_id,item_id,event_type,ts\n");
    // 200 human rows over 100 users, and one crawler with 100 rows in a minute.
    for i in 0..200 {
        csv.push_str(&format!("u{},I{},view,2026-11-21T{:02}:{:02}:00Z\n", i % 100, i % 3 + 1, i / 60, i % 60));
    }
    for i in 0..100 {
        csv.push_str(&format!("crawler,I{},view,2026-11-21T05:00:{:02}.{:03}Z\n", i % 3 + 1, i % 60, i));
    }
    std::fs::write(ev.join("events.csv"), csv).unwrap();
    let out = dir.path().join("out");
    let o = run_clean(&input, &out, DATE, &[], &[]);
    assert!(o.status.success(), "a third of the rows from a crawler is no defect: {}", text(&o));
    let q = quality(&out, DATE);
    assert!((q["events_bot_fraction"][0].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9, "{q}");
    assert_eq!(q["events_bad_row_fraction"][0].as_f64().unwrap(), 0.0, "{q}");
    let o = run_clean(&input, &out, DATE, &[], &[("NIGHTREC_CLEAN__MAX_BOT_FRACTION", "0.2")]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("clean.max_bot_fraction"), "{}", text(&o));
}

fn clean_rows(out: &std::path::Path, date: &str) -> f64 {
    let work = out.join(format!("_work/dt={date}"));
    let script = "import sys, pyarrow.parquet as pq; print(pq.read_table(sys.argv[1] + '/clean_events').num_rows)";
    py(script, &[work.to_str().unwrap()]).trim().parse().unwrap()
}

/// Regression: `.csv.gz`, `.jsonl.gz` and other extensions were skipped
/// with no count and no log (a third of the sample's log was read).
#[test]
fn compressed_logs_are_read_and_unreadable_files_are_reported() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let input = sample_copy(dir.path());
    let plain_out = dir.path().join("plain");
    assert!(run_clean(&input, &plain_out, DATE, &[], &[]).status.success());
    let want = clean_rows(&plain_out, DATE);
    // Compress every CSV with gzip and every NDJSON file with zstd, in place.
    let mut compressed = (0, 0);
    for day in std::fs::read_dir(input.join("events")).unwrap() {
        for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let bytes = std::fs::read(&p).unwrap();
            if name.ends_with(".csv") {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&bytes).unwrap();
                std::fs::write(p.with_file_name(format!("{name}.gz")), enc.finish().unwrap()).unwrap();
                compressed.0 += 1;
            } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
                std::fs::write(p.with_file_name(format!("{name}.zst")), zstd::encode_all(bytes.as_slice(), 3).unwrap())
                    .unwrap();
                compressed.1 += 1;
            } else {
                continue;
            }
            std::fs::remove_file(&p).unwrap();
        }
    }
    assert!(compressed.0 > 5 && compressed.1 > 5, "{compressed:?}");
    std::fs::write(input.join("events/notes.xlsx"), b"not a log").unwrap();
    let out = dir.path().join("out");
    let o = run_clean(&input, &out, DATE, &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(clean_rows(&out, DATE), want, "compressed files lost rows");
    let q = quality(&out, DATE);
    assert_eq!(q["file_not_read@notes.xlsx"], serde_json::json!([9.0, false]), "{q}");
    assert!(text(&o).contains("notes.xlsx"), "the skipped file is not logged: {}", text(&o));
}

/// A gzip file cut short is an unreadable file (exit 3 by default), not a
/// silent loss or a retryable crash. Regression: it was also one pretend
/// quarantine row, so with `clean.max_unreadable_files` raised the rows its
/// tail held were lost without a trace; now `data_quality` names the file
/// and the byte range that was not decoded.
#[test]
fn a_truncated_gzip_file_stops_the_run_or_reports_its_unread_bytes() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("in"));
    let csv = std::fs::read(dir.path().join("in/events/events.csv")).unwrap();
    let header_end = csv.iter().position(|b| *b == b'\n').unwrap() + 1;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&csv[..header_end]).unwrap();
    for _ in 0..50 {
        enc.write_all(&csv[header_end..]).unwrap();
    }
    let mut gz = enc.finish().unwrap();
    gz.truncate(gz.len() * 2 / 3);
    std::fs::write(dir.path().join("in/events/cut.csv.gz"), gz).unwrap();
    let out = dir.path().join("out");
    let env = [("NIGHTREC_CLEAN__MAX_BAD_ROW_FRACTION", "1.0")];
    let o = run_clean(&dir.path().join("in"), &out, DATE, &[], &env);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("cut.csv.gz") && text(&o).contains("not decoded"), "{}", text(&o));
    // Tolerated: the run goes on, and says what it could not read.
    let env = [
        ("NIGHTREC_CLEAN__MAX_BAD_ROW_FRACTION", "1.0"),
        ("NIGHTREC_CLEAN__MAX_BAD_FILE_FRACTION", "1.0"),
        ("NIGHTREC_CLEAN__MAX_UNREADABLE_FILES", "1"),
    ];
    let o = run_clean(&dir.path().join("in"), &out, DATE, &[], &env);
    assert!(o.status.success(), "{}", text(&o));
    let got = py(
        r#"
import sys, json, pyarrow.parquet as pq
work = sys.argv[1]
dq = [r for r in pq.read_table(work + "/data_quality").to_pylist() if r["source"].endswith("cut.csv.gz")]
q = [r for r in pq.read_table(work + "/quarantine").to_pylist() if r["source"].endswith("cut.csv.gz")]
by = {r["check"]: r for r in dq}
u = by["unread_bytes"]
assert u["value"] > 0 and not u["passed"] and u["severity"] == "warning", u
assert "could not be decoded after row" in u["detail"] and "bytes " in u["detail"], u
assert by["rows_read"]["value"] == by["rows_clean"]["value"] + by["rows_quarantined"]["value"], by
assert not any("undecodable" in (r["raw"] or "") for r in q), "a pretend row"
print(json.dumps(u))
"#,
        &[out.join(format!("_work/dt={DATE}")).to_str().unwrap()],
    );
    assert!(got.contains("unread_bytes"), "{got}");
}

/// Regression: `run.threads` reached libtorch only inside `train`, never
/// rayon or tokio. The summary reports each pool's real size.
#[test]
fn one_thread_count_caps_every_pool() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_copy(dir.path());
    let out = dir.path().join("out");
    let o = run_clean(&input, &out, DATE, &[], &[("NIGHTREC_RUN__THREADS", "1")]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("threads: 1 (rayon 1, libtorch 1, tokio 1)"), "{stdout}");
}
