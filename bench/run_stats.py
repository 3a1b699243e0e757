"""What one benchmark run of the nightly job left behind: its evaluation
metrics, its /usr/bin/time record and its epochs, read from
OUT/NAME/evaluation/dt=DATE, OUT/NAME.time.json and the JSON log
OUT/NAME.log. Shared by bench/ml100k.sh and bench/ids_only.sh."""

import json
import statistics

import pyarrow.parquet as pq


def spread(v):
    """Mean ± sample standard deviation (the value alone for one run)."""
    return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


def run_stats(out, name, date, segment="all"):
    ev = pq.read_table(f"{out}/{name}/evaluation/dt={date}").to_pylist()
    metrics = {(r["model"], r["metric"]): r["value"] for r in ev if r["segment"] == segment and r.get("k", 10) == 10}
    users = {(r["model"], r["metric"]): r["users"] for r in ev if r["segment"] == segment and r.get("k", 10) == 10}
    time = json.load(open(f"{out}/{name}.time.json"))
    lines = open(f"{out}/{name}.log").read().splitlines()
    # JSON log lines are flat (message and fields at the top level); the
    # run summary on stdout is plain text in the same file.
    log = [json.loads(l) for l in lines if l.startswith("{")]
    log = [e.get("fields", e) for e in log]
    of = lambda kind: [e for e in log if kind in e.get("message", "")]  # noqa: E731
    fine = of("fine-tuning epoch")
    return {
        "metrics": metrics,
        "users": users,
        "wall": time["wall"],
        "cpu": time["user"] + time["sys"],
        "epochs": f"{len(of('pretraining epoch'))}+{len(fine)}+"
                  f"{len([e for e in of('refit epoch') if not e.get('held_out_test')])}",
        "s_per_epoch": statistics.mean(e["seconds"] for e in fine) if fine else 0.0,
        "loss": next((l.split("loss", 1)[1].strip(" :") for l in lines if not l.startswith("{") and "softmax" in l), "?"),
    }
