//! The Airflow DAG in a real Airflow 3 (a cached virtualenv made by
//! scripts/setup-airflow.sh, passed in NIGHTREC_AIRFLOW_PYTHON by `make
//! test`): loaded through Airflow's own DagBag, then run for one logical
//! date on the bundled sample with `airflow dags test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn airflow_python() -> PathBuf {
    PathBuf::from(
        std::env::var("NIGHTREC_AIRFLOW_PYTHON").expect(
            "NIGHTREC_AIRFLOW_PYTHON is not set: run the tests with `make test` (it makes the Airflow virtualenv)",
        ),
    )
}

/// Loads jobs/airflow through DagBag: no import errors, the expected tasks
/// and edges, one run at a time; then the task helper's exit-code policy
/// with a stand-in binary: 1 (and a signal) retried, 2 and 3 failed at once.
const CHECK_DAGBAG: &str = r#"
import sys, os, json, stat, tempfile, importlib.util
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import AirflowFailException
folder = sys.argv[1]
bag = DagBag(dag_folder=folder)
assert not bag.import_errors, bag.import_errors
dag = bag.dags.get("nightrec")
assert dag is not None, sorted(bag.dags)
edges = sorted((t.task_id, d) for t in dag.tasks for d in sorted(t.downstream_task_ids))
fake = os.path.join(tempfile.mkdtemp(), "nightrec")
with open(fake, "w") as f:
    f.write('#!/bin/sh\n[ "$FAKE_EXIT" = kill ] && kill -9 $$\nexit "$FAKE_EXIT"\n')
os.chmod(fake, stat.S_IRWXU)
os.environ["NIGHTREC_BIN"] = fake
spec = importlib.util.spec_from_file_location("nightrec_dag_check", os.path.join(folder, "nightrec_dag.py"))
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
outcomes = {}
for code in ("0", "1", "2", "3", "kill"):
    os.environ["FAKE_EXIT"] = code
    try:
        mod.nightrec("run")
        outcomes[code] = "ok"
    except AirflowFailException:
        outcomes[code] = "fail"
    except Exception:
        outcomes[code] = "retry"
print(json.dumps({
    "tasks": sorted(t.task_id for t in dag.tasks),
    "edges": edges,
    "mapped": type(dag.get_task("candidates_shard")).__name__,
    "max_active_runs": dag.max_active_runs,
    "outcomes": outcomes,
}))
"#;

fn airflow_env(home: &Path, out: &str) -> Vec<(String, String)> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut env: Vec<(String, String)> = vec![
        ("AIRFLOW_HOME".into(), home.display().to_string()),
        ("AIRFLOW__CORE__DAGS_FOLDER".into(), repo.join("jobs/airflow").display().to_string()),
        ("AIRFLOW__CORE__LOAD_EXAMPLES".into(), "False".into()),
        ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN".into(), format!("sqlite:///{}/airflow.db", home.display())),
        ("NIGHTREC_BIN".into(), bin().display().to_string()),
        ("NIGHTREC_INPUT".into(), repo.join("data/sample").display().to_string()),
        ("NIGHTREC_OUTPUT".into(), out.to_string()),
        ("NIGHTREC_SHARDS".into(), "2".into()),
        ("NIGHTREC_RETRIES".into(), "0".into()),
        ("NIGHTREC_LOG".into(), "warn".into()),
    ];
    env.extend(small_env().into_iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env.push(("NIGHTREC_MODEL__PRETRAIN_EPOCHS".into(), "1".into()));
    env
}

#[test]
fn the_airflow_dag_loads_and_publishes_one_date_of_the_sample() {
    let python = airflow_python();
    let airflow = python.with_file_name("airflow");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("airflow");
    std::fs::create_dir_all(&home).unwrap();
    let out = dir.path().join("out").display().to_string();
    let env = airflow_env(&home, &out);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));

    let o = Command::new(&python)
        .args(["-c", CHECK_DAGBAG, repo.join("jobs/airflow").to_str().unwrap()])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(o.status.success(), "DagBag: {}", text(&o));
    // Airflow may log on stdout too: the result is the last line.
    let stdout = String::from_utf8_lossy(&o.stdout);
    let bag: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(bag["tasks"], serde_json::json!(["candidates_shard", "prepare", "publish"]), "{bag}");
    assert_eq!(
        bag["edges"],
        serde_json::json!([["candidates_shard", "publish"], ["prepare", "candidates_shard"]]),
        "{bag}"
    );
    assert!(bag["mapped"].as_str().unwrap().ends_with("MappedOperator"), "{bag}");
    assert_eq!(bag["max_active_runs"], 1, "{bag}");
    assert_eq!(
        bag["outcomes"],
        serde_json::json!({"0": "ok", "1": "retry", "2": "fail", "3": "fail", "kill": "retry"}),
        "{bag}"
    );

    let run = |args: &[&str]| {
        Command::new(&airflow)
            .args(args)
            .current_dir(dir.path())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    };
    let o = run(&["db", "migrate"]);
    assert!(o.status.success(), "airflow db migrate: {}", text(&o));
    let o = run(&["dags", "test", "nightrec", DATE]);
    assert!(o.status.success(), "airflow dags test: {}", text(&o));

    // The date is published, its manifest lists files that exist with
    // their checksums, and the candidates were assembled from 2 shards.
    let checked = py(
        r#"
import sys, json, hashlib, os
import pyarrow.parquet as pq
out, date = sys.argv[1], sys.argv[2]
runs = f"{out}/_runs/dt={date}"
assert os.path.exists(f"{runs}/_SUCCESS"), os.listdir(out)
m = json.load(open(f"{runs}/manifest.json"))
for t in m["tables"]:
    for f in t["files"]:
        p = f"{out}/{f['path']}"
        assert hashlib.sha256(open(p, "rb").read()).hexdigest() == f["sha256"], p
        assert pq.ParquetFile(p).metadata.num_rows == f["rows"], p
rows = {t["name"]: t["rows"] for t in m["tables"]}
summary = json.load(open(f"{out}/{m['summary']['path']}"))
cand = next(s for s in summary["stages"] if s["stage"] == "candidates")
facts = dict(cand["facts"])
print(rows["user_candidates"], facts.get("assembled from shards"))
"#,
        &[&out, DATE],
    );
    let words: Vec<&str> = checked.split_whitespace().collect();
    assert!(words[0].parse::<u64>().unwrap() > 0, "{checked}");
    assert_eq!(words[1], "2", "the shards were not assembled: {checked}");
}
