"""Cold items on MovieLens-100k: are held-out interactions with items the
model never trained on ranked well?

10% of the movies with at least 5 ratings (seeded choice) lose all their
ratings before the nightly job runs; they stay in the catalog with their
text. After the run, every hidden (user, cold movie) rating becomes a test
case: the user's published embedding scores every movie, the movies the
user rated (and kept) are masked, and the rank of the cold movie gives
HR@10 and NDCG@10 over the whole catalog, and HR@10 among the cold movies
only (random: 10 / number of cold movies). The same run's `evaluation`
table gives the warm test NDCG@10 and HR@10 (chronological leave-one-out
of the remaining ratings). Each variant runs with every seed of SEEDS;
mean ± standard deviation over the seeds.

Variants (as in bench/ml100k.sh): default (text projection + bounded delta,
refit), text-delta (no refit), fusion (free ID embedding + text
projection, the default before issue 12), id-only (no text: a cold movie
has only its untrained ID embedding), or NAME:VAR=VALUE,VAR=VALUE for any other
setting (VAR without the NIGHTREC_MODEL__ prefix).

usage: cold_items.py NIGHTREC_BIN ML100K_INPUT OUT_DIR     (make bench-cold-items)
       SEEDS="42" VARIANTS="default id-only" cold_items.py ...
"""

import csv
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq

nightrec, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
SEEDS = os.environ.get("SEEDS", "42 43 44").split()
VARIANTS = os.environ.get("VARIANTS", "id-only fusion text-delta default").split()
ENV = {
    "default": {},
    "text-delta": {"NIGHTREC_MODEL__REFIT_EPOCHS": "0"},
    "fusion": {"NIGHTREC_MODEL__TEXT_DELTA_MAX_NORM": "0", "NIGHTREC_MODEL__REFIT_EPOCHS": "0"},
    "id-only": {"NIGHTREC_MODEL__TEXT_FUSION": "false", "NIGHTREC_MODEL__REFIT_EPOCHS": "0"},
}
DATE = "1998-04-22"
# REPORT_ONLY=1: the table again from the outputs (and times) of an earlier run.
REPORT_ONLY = os.environ.get("REPORT_ONLY") == "1"
earlier = {}
if REPORT_ONLY:
    for v, rs in json.load(open(f"{out}/results.json")).items():
        for seed, r in zip(SEEDS, rs):
            earlier[f"{v}-seed{seed}"] = r["wall"]
for v in VARIANTS:
    if ":" in v:
        ENV[v.split(":")[0]] = {f"NIGHTREC_MODEL__{kv.split('=')[0]}": kv.split("=", 1)[1] for kv in v.split(":", 1)[1].split(",")}
VARIANTS = [v.split(":")[0] for v in VARIANTS]

rng = random.Random(7)
inp = f"{out}/input"
if not REPORT_ONLY:
    shutil.rmtree(out, ignore_errors=True)
    for d in ("events", "items", "users"):
        shutil.copytree(f"{src}/{d}", f"{inp}/{d}")
rows = list(csv.DictReader(open(f"{src}/events/ratings.csv")))
counts = {}
for r in rows:
    counts[r["item_id"]] = counts.get(r["item_id"], 0) + 1
eligible = sorted(i for i, n in counts.items() if n >= 5)
cold = set(rng.sample(eligible, len(eligible) // 10))
hidden = [(r["user_id"], r["item_id"]) for r in rows if r["item_id"] in cold]
if not REPORT_ONLY:
    with open(f"{inp}/events/ratings.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(r for r in rows if r["item_id"] not in cold)
kept = {}
for r in rows:
    if r["item_id"] not in cold:
        kept.setdefault(r["user_id"], set()).add(r["item_id"])


def ranked(scores, target):
    """HR@10 and NDCG@10 of a target scored `target` among `scores` (which
    hold it), ties broken at random: the expectation over the tied places."""
    greater = int((scores > target).sum())
    tied = int((scores == target).sum())
    places = range(greater, greater + max(tied, 1))
    hr = sum(p < 10 for p in places) / len(places)
    ndcg = sum(1.0 / math.log2(p + 2) for p in places if p < 10) / len(places)
    return hr, ndcg, greater + (max(tied, 1) - 1) / 2


def run(name, env):
    o = f"{out}/{name}"
    started = time.time()
    if not REPORT_ONLY:
        with open(f"{o}.log", "w") as log:
            cmd = [nightrec, "--config", "jobs/ml100k.toml", "--input", inp, "--output", o, "--log-format", "json",
                   "run", "--date", DATE, "--full-retrain"]
            subprocess.run(cmd, check=True, env={**os.environ, **env}, stdout=log, stderr=log)
    wall = time.time() - started if not REPORT_ONLY else earlier[name]
    items = pq.read_table(f"{o}/item_embeddings/dt={DATE}").to_pylist()
    ids = [r["item_id"] for r in items]
    col = {i: n for n, i in enumerate(ids)}
    e = np.array([r["embedding"] for r in items], dtype=np.float64)
    users = {r["user_id"]: np.array(r["embedding"], dtype=np.float64)
             for r in pq.read_table(f"{o}/user_embeddings/dt={DATE}").to_pylist()}
    cold_cols = np.array(sorted(col[i] for i in cold))
    hr = ndcg = hr_cold = 0.0
    cases, ranks = 0, []
    for u, item in hidden:
        if u not in users:
            continue
        s = e @ users[u]
        mask = [col[i] for i in kept.get(u, ()) if i in col]
        s[mask] = -np.inf
        target = s[col[item]]
        h, n, rank = ranked(s, target)
        cases += 1
        hr += h
        ndcg += n
        hr_cold += ranked(s[cold_cols], target)[0]
        ranks.append(rank)
    ev = pq.read_table(f"{o}/evaluation/dt={DATE}").to_pylist()
    warm = {r["metric"]: r["value"] for r in ev if r["model"] == "nightrec" and r["segment"] == "all" and r.get("k", 10) == 10}
    return {"cold_hr": hr / cases, "cold_ndcg": ndcg / cases, "cold_hr_among_cold": hr_cold / cases,
            "cold_median_rank": float(np.median(ranks)),
            "warm_ndcg": warm["ndcg"], "warm_hr": warm["hr"], "cases": cases, "wall": wall}


results = {}
for variant in VARIANTS:
    for seed in SEEDS:
        print(f"cold items: {variant} seed {seed} ...", file=sys.stderr, flush=True)
        results.setdefault(variant, []).append(run(f"{variant}-seed{seed}", {**ENV[variant], "NIGHTREC_RUN__SEED": seed}))


def spread(v):
    return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


n_cases = results[VARIANTS[0]][0]["cases"]
print(f"cold movies: {len(cold)} of {len(counts)} rated (all their ratings hidden); held-out (user, cold movie) "
      f"cases: {n_cases}; seeds {', '.join(SEEDS)}: mean ± standard deviation")
print(f"random ranking: HR@10 among all movies {10 / len(counts):.4f}, among the cold movies {10 / len(cold):.4f}")
print("| variant | cold HR@10 | cold NDCG@10 | cold median rank (of 1,682) | cold HR@10 among cold | warm NDCG@10 | warm HR@10 | wall s |")
print("|---|---|---|---|---|---|---|---|")
for variant, rs in results.items():
    c = lambda k: spread([r[k] for r in rs])  # noqa: E731
    meds = [r["cold_median_rank"] for r in rs]
    med = f"{statistics.mean(meds):.0f} ± {statistics.stdev(meds):.0f}" if len(meds) > 1 else f"{meds[0]:.0f}"
    print(f"| {variant} | {c('cold_hr')} | {c('cold_ndcg')} | {med} | {c('cold_hr_among_cold')} | {c('warm_ndcg')} | "
          f"{c('warm_hr')} | {statistics.mean(r['wall'] for r in rs):.0f} |")
if not REPORT_ONLY:
    json.dump(results, open(f"{out}/results.json", "w"), indent=1)
