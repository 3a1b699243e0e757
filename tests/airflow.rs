//! The Airflow DAG in a real Airflow 3 (a cached virtualenv made by
//! scripts/setup-airflow.sh, passed in NIGHTREC_AIRFLOW_PYTHON by `make
//! test`): loaded through Airflow's own DagBag; the run Airflow's scheduler
//! creates for a trigger time, executed with a stand-in binary, passes the
//! last complete day as `--date`; and the DAG runs the bundled sample with
//! `airflow dags test`.

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
for code in ("0", "1", "2", "3", "4", "kill"):
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
        serde_json::json!({"0": "ok", "1": "retry", "2": "fail", "3": "fail", "4": "retry", "kill": "retry"}),
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
    // `dags test` takes the logical date: the moment the night fires, 02:00
    // UTC the day after the date it processes.
    let o = run(&["dags", "test", "nightrec", "2026-11-22T02:00:00+00:00"]);
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

/// Ask Airflow's own scheduler logic (the serialized DAG's timetable and
/// `next_dagrun_info`, as the scheduler calls them) for the run it creates
/// when the DAG fires at argv[1], create that run, execute its tasks
/// in-process with a stand-in nightrec that records its arguments, and
/// print them. Then the date rule on the contexts other timetables and
/// manual triggers give.
const SCHEDULED_RUN: &str = r#"
import json, os, sys, stat, tempfile
from types import SimpleNamespace
import pendulum
from airflow import settings
from airflow.dag_processing.bundles.manager import DagBundlesManager
from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
from airflow.models.serialized_dag import SerializedDagModel
from airflow.sdk.definitions.dag import _run_task
from airflow.timetables.base import TimeRestriction
from airflow.utils.state import DagRunState, TaskInstanceState
from airflow.utils.types import DagRunTriggeredByType, DagRunType

fire = pendulum.parse(sys.argv[1])
calls = os.path.join(tempfile.mkdtemp(), "calls")
fake = os.path.join(os.path.dirname(calls), "nightrec")
with open(fake, "w") as f:
    f.write(f'#!/bin/sh\necho "$*" >> {calls}\n')
os.chmod(fake, stat.S_IRWXU)
os.environ["NIGHTREC_BIN"] = fake
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
dag = bag.dags["nightrec"]
session = settings.Session()
DagBundlesManager().sync_bundles_to_db(session=session)
session.commit()
sync_bag_to_db(bag, "dags-folder", None)
sdag = SerializedDagModel.get_dag("nightrec", session=session)
info = sdag.timetable.next_dagrun_info_v2(
    last_dagrun_info=None, restriction=TimeRestriction(fire.subtract(days=7), None, True))
while info.run_after < fire:
    info = sdag.next_dagrun_info(last_automated_run_info=info, restricted=False)
assert info.run_after == fire, f"no run fires at {fire}: the next one is {info}"
run_id = sdag.timetable.generate_run_id(
    run_type=DagRunType.SCHEDULED, run_after=info.run_after, data_interval=info.data_interval)
dr = sdag.create_dagrun(
    run_id=run_id, logical_date=info.logical_date, data_interval=info.data_interval, run_after=info.run_after,
    run_type=DagRunType.SCHEDULED, triggered_by=DagRunTriggeredByType.TIMETABLE, state=DagRunState.RUNNING,
    start_date=pendulum.now("UTC"), session=session,
)
session.commit()
while dr.state == DagRunState.RUNNING:
    session.expire_all()
    schedulable, _ = dr.update_state(session=session)
    for ti in schedulable:
        ti.try_number += 1
        ti.state = TaskInstanceState.SCHEDULED
    session.commit()
    for ti in [t for t in dr.get_task_instances(session=session) if t.state == TaskInstanceState.SCHEDULED]:
        _run_task(ti=ti, task=dag.task_dict[ti.task_id])
# The same rule for the contexts of a trigger timetable (Airflow 3's default
# for cron strings: the interval is the firing itself), of manual runs with
# and without a logical date, and of a conf that names the date.
import importlib.util
spec = importlib.util.spec_from_file_location("dag_module", os.path.join(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], "nightrec_dag.py"))
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
t = lambda s: pendulum.parse(s)
def ctx(end=None, run_after=None, conf=None):
    c = {"dag_run": SimpleNamespace(conf=conf or {}, run_after=t(run_after) if run_after else None, data_interval_end=None)}
    if end:
        c["data_interval_end"] = t(end)
    return c
rules = {
    "trigger timetable at the start hour": mod.night_date(ctx(end=sys.argv[1])),
    "manual, later that day": mod.night_date(ctx(end="2026-11-22T15:30:00Z")),
    "manual, no logical date, before the night starts": mod.night_date(ctx(run_after="2026-11-22T00:30:00Z")),
    "conf names the date": mod.night_date(ctx(end=sys.argv[1], conf={"date": "2026-11-02"})),
}
print(json.dumps({
    "state": str(dr.state), "run_type": str(dr.run_type), "run_after": info.run_after.isoformat(),
    "calls": sorted(open(calls).read().splitlines()), "rules": rules,
}))
"#;

/// Regression: the DAG used `schedule="@daily"` and `--date {{ ds }}`;
/// under Airflow 3 a cron schedule is a trigger timetable, so the run that
/// fires at midnight got the day that had just begun. The test before
/// passed an explicit logical date to `airflow dags test` and could not
/// see it: this one asks Airflow's scheduler logic which run it creates for
/// a firing, and checks the date every task of that run passes.
#[test]
fn the_run_airflow_schedules_for_a_trigger_processes_the_last_complete_day() {
    let python = airflow_python();
    let dir = tempfile::tempdir().unwrap();
    let migrated = dir.path().join("migrated.db");
    for (hour, fire, want) in [("2", "2026-11-22T02:00:00Z", "2026-11-21"), ("6", "2026-11-22T06:00:00Z", "2026-11-21")]
    {
        let home = dir.path().join(format!("airflow-{hour}"));
        std::fs::create_dir_all(&home).unwrap();
        let mut env = airflow_env(&home, &dir.path().join("out").display().to_string());
        env.push(("NIGHTREC_NIGHT_START_HOUR".into(), hour.into()));
        let run = |args: &[&str]| {
            Command::new(&python)
                .args(args)
                .current_dir(dir.path())
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .output()
                .unwrap()
        };
        // One migration; each case starts from a copy of its database.
        if !migrated.exists() {
            let o = run(&["-m", "airflow", "db", "migrate"]);
            assert!(o.status.success(), "airflow db migrate: {}", text(&o));
            std::fs::copy(home.join("airflow.db"), &migrated).unwrap();
        } else {
            std::fs::copy(&migrated, home.join("airflow.db")).unwrap();
        }
        let o = run(&["-c", SCHEDULED_RUN, fire]);
        assert!(o.status.success(), "start hour {hour}: {}", text(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        let got: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
        assert_eq!(got["state"], "success", "{got}");
        assert_eq!(got["run_type"], "scheduled", "{got}");
        let calls: Vec<&str> = got["calls"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(calls.len(), 4, "prepare, two shards, publish: {got}");
        assert!(calls.iter().all(|c| c.starts_with(&format!("run --date {want}"))), "start hour {hour}: {got}");
        assert_eq!(
            got["rules"],
            serde_json::json!({
                "trigger timetable at the start hour": want,
                "manual, later that day": "2026-11-21",
                "manual, no logical date, before the night starts": "2026-11-20",
                "conf names the date": "2026-11-02",
            }),
            "start hour {hour}"
        );
    }
}
