//! End-to-end: the real binary on generated data, outputs read back with
//! pyarrow and DuckDB (independent of nightrec's own Parquet code).

use crate::common::*;

const CHECK_CANDIDATES: &str = r#"
import sys, json, glob, os, csv
import pyarrow.parquet as pq
inp, out, date, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cand = pq.read_table(f"{out}/user_candidates/dt={date}").to_pylist()
users = pq.read_table(f"{out}/user_embeddings/dt={date}").column("user_id").to_pylist()
def raw_events():
    for f in glob.glob(f"{inp}/events/*/*"):
        if f.endswith(".parquet"):
            yield from pq.read_table(f).to_pylist()
        elif f.endswith(".csv"):
            yield from csv.DictReader(open(f))
        else:
            for line in open(f):
                try:
                    yield json.loads(line)
                except ValueError:
                    pass  # the generator's deliberately broken lines
# Purchases, read straight from the raw input files.
bought = set()
for r in raw_events():
    if r.get("event_type") == "purchase" and r.get("user_id") and r.get("item_id"):
        bought.add((r["user_id"], r["item_id"]))
by_user = {}
for r in cand:
    by_user.setdefault(r["user_id"], []).append(r)
assert len(users) > 50, len(users)
for u in users:
    rows = sorted(by_user.get(u, []), key=lambda r: r["rank"])
    assert len(rows) == k, (u, len(rows))
    assert [r["rank"] for r in rows] == list(range(1, k + 1)), u
    assert all(a["score"] >= b["score"] for a, b in zip(rows, rows[1:])), u
    assert all(r["source"] == "model" for r in rows), u
    assert all((u, r["item_id"]) not in bought for r in rows), (u, "purchased item recommended")
    assert all(r["reason_item_id"] for r in rows), u
cold = [u for u in by_user if u not in set(users)]
assert all(r["source"] == "popular" for u in cold for r in by_user[u])
# The manifest lists every published file with its true row count and checksum.
import hashlib
m = json.load(open(f"{out}/_runs/dt={date}/manifest.json"))
assert os.path.exists(f"{out}/_runs/dt={date}/_SUCCESS")
names = {t["name"] for t in m["tables"]}
assert {"user_candidates", "user_embeddings", "item_embeddings", "evaluation", "quarantine", "data_quality"} <= names, names
for t in m["tables"]:
    for f in t["files"]:
        p = f"{out}/{f['path']}"
        assert pq.ParquetFile(p).metadata.num_rows == f["rows"], p
        assert hashlib.sha256(open(p, "rb").read()).hexdigest() == f["sha256"], p
        kv = pq.ParquetFile(p).metadata.metadata or {}
        assert kv.get(b"nightrec.date") == date.encode(), kv
print(len(users), len(cand))
"#;

const CHECK_DUCKDB: &str = r#"
import sys, duckdb
out, date = sys.argv[1], sys.argv[2]
con = duckdb.connect()
q = f"select reason, count(*) from read_parquet('{out}/quarantine/dt={date}/*.parquet') group by reason order by reason"
print(dict(con.execute(q).fetchall()))
ev = con.execute(f"select model, metric, value from read_parquet('{out}/evaluation/dt={date}/*.parquet') where metric = 'ndcg'").fetchall()
print(dict((m, v) for m, _, v in ev))
"#;

#[test]
fn nightly_run_writes_valid_candidates_and_a_manifest() {
    let fx = Fixture::new("200", "150", "12000");
    let env = small_env();
    let args = ["--input", &fx.input(), "--output", &fx.output(), "run", "--date", DATE];
    let o = nightrec(&args, &env, fx.dir.path());
    assert!(o.status.success(), "run failed: {}", text(&o));
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(summary.contains("user_candidates"), "summary lacks tables: {summary}");

    py(CHECK_CANDIDATES, &[&fx.input(), &fx.output(), DATE, "20"]);

    // Every quarantine reason the generator injects shows up, counted by DuckDB.
    let dq = py(CHECK_DUCKDB, &[&fx.output(), DATE]);
    for reason in
        ["malformed", "duplicate", "missing_id", "unknown_event_type", "unknown_item", "bad_timestamp", "out_of_window"]
    {
        assert!(dq.contains(reason), "no {reason} rows in quarantine: {dq}");
    }

    // A rerun with nothing changed skips every stage and keeps the contents.
    let before =
        std::fs::read(fx.dir.path().join(format!("out/user_candidates/dt={DATE}/part-00000.parquet"))).unwrap();
    let o = nightrec(&args, &env, fx.dir.path());
    assert!(o.status.success(), "rerun failed: {}", text(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(!s.contains(" ran "), "a stage ran again although nothing changed:\n{s}");
    let after = std::fs::read(fx.dir.path().join(format!("out/user_candidates/dt={DATE}/part-00000.parquet"))).unwrap();
    assert_eq!(before, after);

    // Analysts' SQL sees the published tables; writes are refused (exit 2).
    let o = nightrec(
        &[
            "--output",
            &fx.output(),
            "--input",
            &fx.input(),
            "sql",
            "--format",
            "csv",
            "SELECT COUNT(DISTINCT user_id) AS n FROM user_embeddings",
        ],
        &[],
        fx.dir.path(),
    );
    assert!(o.status.success(), "sql failed: {}", text(&o));
    let n: usize = String::from_utf8_lossy(&o.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(n > 50);
    let (out, inp) = (fx.output(), fx.input());
    let sql = |args: &[&str]| {
        let mut all = vec!["--output", out.as_str(), "--input", inp.as_str(), "sql"];
        all.extend_from_slice(args);
        nightrec(&all, &[], fx.dir.path())
    };
    let copy_to = fx.dir.path().join("copied.csv");
    let copy = format!("COPY (SELECT 1 AS x) TO '{}' STORED AS CSV", copy_to.display());
    for statement in ["CREATE TABLE t AS SELECT 1", "INSERT INTO quarantine SELECT * FROM quarantine", copy.as_str()] {
        let o = sql(&[statement]);
        assert_eq!(o.status.code(), Some(2), "{statement} was not refused: {}", text(&o));
        assert!(text(&o).contains("--allow-writes"), "{}", text(&o));
    }
    assert!(!copy_to.exists());
    let o = sql(&["--allow-writes", &copy]);
    assert!(o.status.success() && copy_to.exists(), "COPY with --allow-writes: {}", text(&o));
    // Raw inputs, work tables and published tables side by side; results
    // as JSON lines and as a Parquet file.
    let o = sql(&[
        "--format",
        "json",
        "SELECT (SELECT COUNT(*) FROM raw_events) AS raw, (SELECT COUNT(*) FROM events_checked) AS checked, \
         (SELECT COUNT(*) FROM steps) AS steps",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(v["raw"], v["checked"], "{v}");
    assert!(v["steps"].as_u64().unwrap() > 1000, "{v}");
    let saved = fx.dir.path().join("q.parquet");
    let o = sql(&[
        "--format",
        "parquet",
        "--save",
        saved.to_str().unwrap(),
        "SELECT reason, COUNT(*) AS n FROM quarantine GROUP BY reason",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let got =
        py("import sys, pyarrow.parquet as pq; print(pq.read_table(sys.argv[1]).num_rows)", &[saved.to_str().unwrap()]);
    // The generator breaks every rule but the bot limits.
    assert_eq!(got.trim(), "7", "one row per reason code: {got}");
    let o = nightrec(&["--output", &fx.output(), "--input", &fx.input(), "tables"], &[], fx.dir.path());
    let listing = String::from_utf8_lossy(&o.stdout);
    for t in ["raw_events (raw)", "clean_events (work)", "user_candidates (published)", "_malformed"] {
        assert!(listing.contains(t), "tables lacks {t}:\n{listing}");
    }
}

#[test]
fn bad_data_above_the_threshold_exits_3_and_publishes_nothing() {
    let fx = Fixture::new("60", "50", "3000");
    let mut env = small_env();
    env.push(("NIGHTREC_CLEAN__MAX_BAD_ROW_FRACTION", "0.001"));
    let o = nightrec(&["--input", &fx.input(), "--output", &fx.output(), "run", "--date", DATE], &env, fx.dir.path());
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("worst file"), "{}", text(&o));
    assert!(!fx.dir.path().join(format!("out/_runs/dt={DATE}/_SUCCESS")).exists());
    assert!(!fx.dir.path().join(format!("out/user_candidates/dt={DATE}")).exists());
}

#[test]
fn usage_and_config_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = nightrec(&["run", "--date", "2026-13-01"], &[], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = nightrec(&["run", "--date", DATE], &[("NIGHTREC_CANDIDATES__K", "0")], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[storage]\ninput = 'x'\noutput = 'y'\ntypo = 1\n").unwrap();
    let o = nightrec(&["--config", cfg.to_str().unwrap(), "run", "--date", DATE], &[], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
