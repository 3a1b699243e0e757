"""bench/shards.sh's report: each task's wall, CPU and peak RSS, the stages
of the publish task and of the unsharded run, and whether both published
the same lists.

usage: shards_report.py <run folder> <size> <shards> <threads> <commit> <command> [<epochs>]
"""

import datetime
import json
import os
import platform
import sys

import duckdb

root, size, shards, threads, commit, command = sys.argv[1:7]
epochs = sys.argv[7] if len(sys.argv) > 7 else ""
logs = f"{root}/logs"
STAGES = ["clean", "trainset", "text", "train", "embed", "candidates", "evaluate", "publish"]


def timing(name):
    with open(f"{logs}/{name}.time.json") as f:
        return json.load(f)


def stages(name):
    """(stage, status, seconds, cpu seconds, peak RSS MiB) from a run summary."""
    out = []
    with open(f"{logs}/{name}.summary") as f:
        for line in f:
            w = line.split()
            if len(w) >= 5 and w[0] in STAGES and w[1] in ("ran", "skipped"):
                out.append((w[0], w[1], float(w[2]), float(w[3]), float(w[4])))
    return out


def files(out, table):
    """The files of a published table, as its manifest lists them."""
    date = sorted(d for d in os.listdir(f"{out}/_runs") if d.startswith("dt="))[-1]
    with open(f"{out}/_runs/{date}/manifest.json") as f:
        m = json.load(f)
    t = next(t for t in m["tables"] if t["name"] == table)
    return [f"{out}/{f['path']}" for f in t["files"]]


def same(table):
    """Whether both ways published the same rows (DuckDB, spilling: 100M rows at L)."""
    con = duckdb.connect()
    con.execute(f"SET temp_directory = '{root}/duckdb_spill'")
    a, b = files(f"{root}/sharded", table), files(f"{root}/unsharded", table)
    diff = con.execute(
        "SELECT (SELECT COUNT(*) FROM (SELECT * FROM read_parquet(?) EXCEPT ALL SELECT * FROM read_parquet(?))) "
        "+ (SELECT COUNT(*) FROM (SELECT * FROM read_parquet(?) EXCEPT ALL SELECT * FROM read_parquet(?)))",
        [a, b, b, a],
    ).fetchone()[0]
    return diff == 0


tasks = ["prepare"] + [f"shard-{i}" for i in range(int(shards))] + ["publish", "unsharded"]
t = {name: timing(name) for name in tasks}
mib = lambda kb: kb / 1024
print(f"# The DAG's tasks at {size}, {shards} shards, one after another\n")
print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {threads} threads per process; commit {commit}; "
      f"{datetime.date.today().isoformat()}.")
print(f"Command: `{command}`.\n")
if epochs:
    print(f"Training capped at {epochs} pretraining and {epochs} fine-tuning epochs in every task: `prepare`'s time is "
          "not a night's; what candidates, evaluate and publish hold does not depend on it.\n")
print("| task | wall s | CPU s | peak RSS MiB |")
print("|---|---:|---:|---:|")
for name in tasks:
    x = t[name]
    print(f"| {name} | {x['wall']:.0f} | {x['user'] + x['sys']:.0f} | {mib(x['max_rss_kb']):.0f} |")
per_stage = {name: {s[0]: s for s in stages(name)} for name in ("publish", "unsharded")}
print("\nStages that ran after `prepare` (the run summaries; RSS is the process's peak during the stage):\n")
print("| stage | publish task: s / CPU s / RSS MiB | unsharded: s / CPU s / RSS MiB |")
print("|---|---|---|")
for stage in ["candidates", "evaluate", "publish"]:
    cells = []
    for name in ("publish", "unsharded"):
        s = per_stage[name].get(stage)
        cells.append(f"{s[2]:.0f} / {s[3]:.0f} / {s[4]:.0f}" if s else "–")
    print(f"| {stage} | {cells[0]} | {cells[1]} |")
shard_rss = max(mib(t[f"shard-{i}"]["max_rss_kb"]) for i in range(int(shards)))
cand = per_stage["unsharded"].get("candidates")
print()
if cand:
    # nightrec resets the RSS high-water mark per stage: /usr/bin/time sees the last stage's.
    peak = max([mib(t['publish']['max_rss_kb'])] + [s[4] for s in per_stage["publish"].values()])
    print(f"The publish task's peak RSS is {peak:.0f} MiB, "
          f"{peak / cand[4]:.2f}x the unsharded candidates stage's {cand[4]:.0f} MiB; "
          f"the largest shard peaked at {shard_rss:.0f} MiB.")
for table in ["user_candidates", "cross_category", "user_segments", "item_similar"]:
    print(f"- `{table}`: {'identical' if same(table) else 'DIFFERENT'} sharded and unsharded")
