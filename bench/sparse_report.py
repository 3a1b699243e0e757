"""bench/sparse.sh's table: per dataset, the reference SASRec and each
nightrec variant side by side — NDCG@10 and HR@10 as mean ± std over the
seeds, the paired per-user difference against the reference (each user's
metric averaged over the seeds, nightrec minus reference, mean and 95% CI
over users), training CPU seconds and wall, epochs.

usage: sparse_report.py OUT "DATASETS" "VARIANTS" "SEEDS"
"""

import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(__file__))
from run_stats import run_stats, spread  # noqa: E402

out, datasets, variants, seeds = sys.argv[1], sys.argv[2].split(), [v.split(":")[0] for v in sys.argv[3].split()], sys.argv[4].split()
DATES = {"ml100k": "1998-04-22"}


def spread_s(v):
    """Seconds: mean ± standard deviation, whole seconds."""
    return f"{statistics.mean(v):.0f} ± {statistics.stdev(v):.0f}" if len(v) > 1 else f"{v[0]:.0f}"


def per_user(path, model=None):
    t = pq.read_table(path).to_pylist()
    if model is not None:
        t = [r for r in t if r["model"] == model]
    ndcg = {r["user_id"]: r.get("ndcg_10", r.get("ndcg10")) for r in t}
    hr = {r["user_id"]: r.get("hr_10", r.get("hr10")) for r in t}
    return ndcg, hr


def seed_mean(dicts):
    users = set.intersection(*(set(d) for d in dicts))
    return {u: statistics.mean(d[u] for d in dicts) for u in users}


def paired(a, b):
    """Mean and 95% CI half-width of a[u] - b[u] over the users both have."""
    d = [a[u] - b[u] for u in a.keys() & b.keys()]
    if len(d) < 2:
        return float("nan"), float("nan"), len(d)
    return statistics.mean(d), 1.96 * statistics.stdev(d) / math.sqrt(len(d)), len(d)


def train_cpu(log_path):
    """The train stage's CPU seconds from the run summary on stdout."""
    for line in open(log_path):
        m = re.match(r"^train\s+ran\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            return float(m.group(1)), float(m.group(2))
    return float("nan"), float("nan")


def fmt_diff(mean, ci):
    return f"{mean:+.4f} [{mean - ci:+.4f}, {mean + ci:+.4f}]"


commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print("# Sparse shop logs: nightrec's defaults vs the reference SASRec (issue 25)\n")
print(f"Measured {time.strftime('%Y-%m-%d')} at commit {commit} on {platform.node()} "
      f"({os.cpu_count()} cores), `make bench-sparse` (DATASETS=\"{' '.join(datasets)}\" "
      f"VARIANTS=\"{' '.join(variants)}\" SEEDS=\"{' '.join(seeds)}\").\n")
print("Chronological leave-one-out, every item ranked, the user's history masked, ties split "
      "(nightrec's rule; `nightrec eval --cases` and `bench/sasrec_ref.py --per-user`). "
      "Δ: the paired per-user difference against the reference (each user's metric averaged over "
      "the seeds; mean [95% CI] over users). Training CPU s: nightrec's train stage (pretraining, "
      "fine-tuning with validation, refit); the reference's training loop with validation.\n")
print("| dataset | model | seeds | NDCG@10 | HR@10 | Δ NDCG@10 | Δ HR@10 | training CPU s | training wall s | epochs |")
print("|---|---|---|---|---|---|---|---|---|---|")
verdicts = []
for ds in datasets:
    base = f"{out}/{ds}"
    date = DATES.get(ds, "2026-11-21")
    # Only the seeds whose runs are all there: a partial table says so.
    have = [s for s in seeds if os.path.exists(f"{base}/reference-seed{s}.cases.parquet")
            and all(os.path.exists(f"{base}/{v}-seed{s}.cases.parquet") for v in variants)]
    if not have:
        print(f"| {ds} | (not measured) | | | | | | | | |")
        verdicts.append(f"- {ds}: not measured")
        continue
    tag = " ".join(have)
    refs = [json.load(open(f"{base}/reference-seed{s}.json")) for s in have]
    ref_cases = [per_user(f"{base}/reference-seed{s}.cases.parquet") for s in have]
    ref_ndcg, ref_hr = seed_mean([c[0] for c in ref_cases]), seed_mean([c[1] for c in ref_cases])
    print(f"| {ds} | reference SASRec | {tag} | {spread([r['test']['ndcg10'] for r in refs])} | "
          f"{spread([r['test']['hr10'] for r in refs])} | | | "
          f"{spread_s([r['timing']['train_cpu_s'] for r in refs])} | {spread_s([r['timing']['train_wall_s'] for r in refs])} | "
          f"{', '.join(str(r['timing']['epochs_run']) for r in refs)} |")
    ref_cpu = statistics.mean(r["timing"]["train_cpu_s"] for r in refs)
    for v in variants:
        names = [f"{v}-seed{s}" for s in have]
        stats = [run_stats(base, n, date) for n in names]
        cases = [per_user(f"{base}/{n}.cases.parquet", "nightrec") for n in names]
        nd, hr = seed_mean([c[0] for c in cases]), seed_mean([c[1] for c in cases])
        dn, dh = paired(nd, ref_ndcg), paired(hr, ref_hr)
        cpu = [train_cpu(f"{base}/{n}.log") for n in names]
        print(f"| {ds} | nightrec {v} | {tag} | {spread([s['metrics'][('nightrec', 'ndcg')] for s in stats])} | "
              f"{spread([s['metrics'][('nightrec', 'hr')] for s in stats])} | {fmt_diff(*dn[:2])} | "
              f"{fmt_diff(*dh[:2])} | {spread_s([c[1] for c in cpu])} | {spread_s([c[0] for c in cpu])} | "
              f"{', '.join(s['epochs'] for s in stats)} |")
        low, high = dn[0] - dn[1], dn[0] + dn[1]
        word = ("better than the reference" if low > 0 else "below the reference" if high < 0
                else "level with the reference (the CI spans 0)")
        verdicts.append(f"- {ds}, nightrec {v}: NDCG@10 {word}, Δ {fmt_diff(*dn[:2])}; training CPU "
                        f"{statistics.mean(c[1] for c in cpu) / ref_cpu:.2f}x the reference's"
                        f"{'' if len(have) == 3 else f' ({len(have)} seed(s) only)'}")
    pop = [run_stats(base, f"{variants[0]}-seed{s}", date)["metrics"][("popularity", "ndcg")] for s in have]
    print(f"| {ds} | popularity | {tag} | {spread(pop)} | | | | | | |")
print("\nEpochs: the reference's epochs run (best + patience); nightrec's pretraining + fine-tuning + refit.\n")
print("Against the reference (NDCG@10: the paired difference's 95% CI above 0, spanning 0, or below 0):\n")
print("\n".join(verdicts))
print("\nThe factor-by-factor search that chose the defaults is in `bench/results/sparse_factors.md`.")
print("\nReproduce: `make bench-sparse` (all four datasets, 3 seeds), or e.g. "
      "`DATASETS=toys SEEDS=42 VARIANTS=\"default nopre:PRETRAIN_EPOCHS=0\" bench/sparse.sh`.")
