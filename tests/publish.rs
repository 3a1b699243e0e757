//! Candidates and publishing under failure: shards, SIGKILL at random
//! points, the day-over-day gate. Outputs are read with pyarrow.

use std::time::Instant;

use crate::common::*;

/// Every table of the date's manifest: sorted rows (as JSON) per table, and
/// a check that each listed file exists with its row count and sha256.
const READ_PUBLISHED: &str = r#"
import sys, json, hashlib, os
import pyarrow.parquet as pq
out, date = sys.argv[1], sys.argv[2]
tables = sys.argv[3].split(",")
m = json.load(open(f"{out}/_runs/dt={date}/manifest.json"))
result = {}
for t in m["tables"]:
    for f in t["files"]:
        p = f"{out}/{f['path']}"
        data = open(p, "rb").read()
        assert hashlib.sha256(data).hexdigest() == f["sha256"], p
        assert pq.ParquetFile(p).metadata.num_rows == f["rows"], p
    if t["name"] in tables:
        rows = []
        for f in t["files"]:
            rows += pq.read_table(f"{out}/{f['path']}").to_pylist()
        assert len(rows) == t["rows"], t["name"]
        result[t["name"]] = sorted(json.dumps(r, sort_keys=True) for r in rows)
print(json.dumps(result, sort_keys=True))
"#;

fn published(out: &str, tables: &str) -> String {
    py(READ_PUBLISHED, &[out, DATE, tables])
}

fn run_env() -> Vec<(&'static str, &'static str)> {
    let mut env = small_env();
    // Many small files, so that publishing takes a while to interrupt.
    env.push(("NIGHTREC_RUNTIME__MAX_ROWS_PER_FILE", "150"));
    env
}

#[test]
fn shards_assembled_equal_the_unsharded_run() {
    let fx = Fixture::new("150", "100", "8000");
    let env = run_env();
    let base = ["--input", &fx.input(), "--output", &fx.output(), "run", "--date", DATE];
    let o = nightrec(&base, &env, fx.dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let whole = published(&fx.output(), "user_candidates,cross_category");

    for i in 0..3 {
        let shard = format!("{i}/3");
        let o = nightrec(&[&base[..], &["--shard", &shard]].concat(), &env, fx.dir.path());
        assert!(o.status.success(), "shard {shard}: {}", text(&o));
    }
    let o = nightrec(
        &[&base[..], &["--force", "--stage", "candidates", "--stage", "publish"]].concat(),
        &env,
        fx.dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("assembled from shards: 3"), "{}", text(&o));
    assert_eq!(published(&fx.output(), "user_candidates,cross_category"), whole);

    // --shard with another stage is a usage error.
    let o = nightrec(&[&base[..], &["--shard", "0/3", "--stage", "train"]].concat(), &env, fx.dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn sigkill_during_candidates_and_publish_keeps_the_published_state() {
    let fx = Fixture::new("150", "100", "8000");
    let env = run_env();
    let base = ["--input", &fx.input(), "--output", &fx.output(), "run", "--date", DATE];
    let o = nightrec(&base, &env, fx.dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let all = "user_candidates,cross_category,item_similar,popular_items,user_segments,query_candidates";
    let first = published(&fx.output(), all);

    let both = [&base[..], &["--force", "--stage", "candidates", "--stage", "publish"]].concat();
    let publish_only = [&base[..], &["--force", "--stage", "publish"]].concat();
    // How long an uninterrupted rerun takes, to spread the kills over it.
    let timed = |args: &[&str]| {
        let t = Instant::now();
        let o = nightrec(args, &env, fx.dir.path());
        assert!(o.status.success(), "{}", text(&o));
        t.elapsed()
    };
    let spans = [(both.clone(), timed(&both)), (publish_only.clone(), timed(&publish_only))];
    let seed: u64 = std::env::var("NIGHTREC_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261123);
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut killed = 0;
    for round in 0..12 {
        let (args, span) = &spans[round % 2];
        let delay = span.mul_f64(0.05 + 0.9 * next());
        let mut child = std::process::Command::new(bin())
            .args(args)
            .current_dir(fx.dir.path())
            .env("NIGHTREC_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // Child::kill sends SIGKILL on Unix: no cleanup code runs.
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        // A manifest reader sees a whole publication with the same contents.
        assert_eq!(
            published(&fx.output(), all),
            first,
            "round {round} (seed {seed}, killed after {delay:?}): published state changed"
        );
    }
    assert!(killed >= 6, "only {killed} of 12 runs were still running when killed");
    let o = nightrec(&both, &env, fx.dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(published(&fx.output(), all), first);
    // Nothing but the manifest's files is left in the date's folders.
    let leftovers = py(
        r#"
import sys, json, glob, os
out, date = sys.argv[1], sys.argv[2]
m = json.load(open(f"{out}/_runs/dt={date}/manifest.json"))
listed = {f["path"] for t in m["tables"] for f in t["files"]}
on_disk = {os.path.relpath(p, out) for t in m["tables"] for p in glob.glob(f"{out}/{t['name']}/dt={date}/*")}
print(len(on_disk - listed), len(listed - on_disk), sorted(on_disk - listed)[:3])
"#,
        &[&fx.output(), DATE],
    );
    assert!(leftovers.starts_with("0 0 "), "{leftovers}");
}

#[test]
fn the_day_over_day_gate_stops_a_bad_day_and_publishes_nothing() {
    let fx = Fixture::new("150", "100", "8000");
    let env = run_env();
    let base = ["--input", &fx.input(), "--output", &fx.output(), "run", "--date", DATE];
    let o = nightrec(&base, &env, fx.dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let next_day = "2026-11-22";
    let next = ["--input", &fx.input(), "--output", &fx.output(), "run", "--date", next_day];
    // Demand more overlap with yesterday than is possible.
    let mut strict = env.clone();
    strict.push(("NIGHTREC_GATE__MIN_CANDIDATE_OVERLAP", "1.01"));
    let o = nightrec(&next, &strict, fx.dir.path());
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("candidate_overlap") && err.contains(DATE), "{err}");
    let day = fx.dir.path().join("out");
    assert!(!day.join(format!("_runs/dt={next_day}/manifest.json")).exists());
    assert!(!day.join(format!("user_candidates/dt={next_day}")).exists());
    // With the configured thresholds the same day passes, and its manifest
    // records what it was compared with.
    let o = nightrec(&next, &env, fx.dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(day.join(format!("_runs/dt={next_day}/manifest.json"))).unwrap())
            .unwrap();
    assert_eq!(m["compared_with"], DATE);
    let checks: Vec<&str> = m["gate"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(checks, ["candidate_overlap", "coverage_ratio", "cold_share_increase", "ndcg_drop"]);
    assert!(m["gate"].as_array().unwrap().iter().all(|c| c["passed"] == true));
    // Its report, as a person would look at it.
    crate::report::check_report(&fx, next_day, &String::from_utf8_lossy(&o.stdout));
}
