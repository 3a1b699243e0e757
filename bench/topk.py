"""All users x all items exact top-K: nightrec against FAISS IndexFlatIP.

Random float32 vectors (seeded), USERS x DIM and ITEMS x DIM, K results per
user by inner product. nightrec runs its candidates path (`nightrec topk`:
memory-budgeted blocks, device top-K, exact host re-ranking); FAISS runs
IndexFlatIP.search with the same threads. Each engine runs in its own
process under /usr/bin/time: wall time, peak memory (max RSS), throughput
ratio, and the overlap of nightrec's top-K with FAISS's (1.0 up to ties:
the differing items are checked to score within float32 rounding of each
other).

usage: topk.py NIGHTREC_BIN OUT_DIR      (make bench-topk; USERS, ITEMS,
       DIM, K, THREADS, BUDGET_MB, REPEATS from the environment)
REPEATS (default 3) alternating runs of each; the median ratio is reported
with all of them, and the median run's figures. Once more: nightrec's f32
path (NIGHTREC_TOPK_FIRST_PASS=fp32, no bf16 first pass; its ids must equal
the default's), and this machine's f32 GEMM rate (numpy, same threads).
"""

import json
import os
import subprocess
import sys

import numpy as np

if len(sys.argv) > 1 and sys.argv[1] == "--sgemm":
    # This machine's single-precision GEMM rate with the same threads
    # (numpy's BLAS, threads fixed by the environment before import): the
    # best of 5 products of 4096 x 4096 matrices.
    import time

    a = np.random.default_rng(1).standard_normal((4096, 4096), dtype=np.float32)
    b = np.random.default_rng(2).standard_normal((4096, 4096), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    print(2.0 * 4096**3 / best / 1e9)
    sys.exit(0)

if len(sys.argv) > 1 and sys.argv[1] == "--faiss":
    import faiss

    _, _, users_p, items_p, k, threads, out_p = sys.argv
    faiss.omp_set_num_threads(int(threads))
    users, items = np.load(users_p, mmap_mode="r"), np.load(items_p)
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    _, ids = index.search(np.ascontiguousarray(users), int(k))
    np.save(out_p, ids.astype(np.int64))
    sys.exit(0)

nightrec, out = sys.argv[1], sys.argv[2]
USERS = int(os.environ.get("USERS", 1_000_000))
ITEMS = int(os.environ.get("ITEMS", 100_000))
DIM = int(os.environ.get("DIM", 64))
K = int(os.environ.get("K", 100))
THREADS = int(os.environ.get("THREADS", 2))
BUDGET_MB = int(os.environ.get("BUDGET_MB", 256))
os.makedirs(out, exist_ok=True)
users_p, items_p = f"{out}/users-{USERS}-{DIM}.npy", f"{out}/items-{ITEMS}-{DIM}.npy"
rng = np.random.default_rng(2026)
if not os.path.exists(items_p):
    np.save(items_p, rng.standard_normal((ITEMS, DIM), dtype=np.float32))
if not os.path.exists(users_p):
    users = np.empty((USERS, DIM), dtype=np.float32)
    for s in range(0, USERS, 100_000):
        users[s : s + 100_000] = rng.standard_normal((min(100_000, USERS - s), DIM), dtype=np.float32)
    np.save(users_p, users)
    del users

TIME = ["/usr/bin/time", "-f", '{"wall": %e, "user": %U, "sys": %S, "max_rss_kb": %M}', "-o"]


def timed(name, cmd, env=None):
    print(f"bench-topk: {name} ...", file=sys.stderr, flush=True)
    subprocess.run(TIME + [f"{out}/{name}.time.json"] + cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.load(open(f"{out}/{name}.time.json"))


REPEATS = int(os.environ.get("REPEATS", 3))
env = dict(os.environ, NIGHTREC_RUN__THREADS=str(THREADS), NIGHTREC_RUN__DEVICE="cpu", NIGHTREC_LOG="warn")
runs = []
# Alternating runs, so that both engines see the same machine state.
for r in range(REPEATS):
    n = timed(f"nightrec-{r}", [nightrec, "topk", "--queries", users_p, "--items", items_p, "--k", str(K),
                                "--memory-budget-mb", str(BUDGET_MB), "--out", f"{out}/nightrec-ids.npy"], env)
    f = timed(f"faiss-{r}", [sys.executable, __file__, "--faiss", users_p, items_p, str(K), str(THREADS),
                             f"{out}/faiss-ids.npy"], dict(os.environ, OMP_NUM_THREADS=str(THREADS)))
    runs.append((n, f))
# nightrec's f32 path once (no bf16 first pass): what the first pass gains.
f32 = timed("nightrec-f32", [nightrec, "topk", "--queries", users_p, "--items", items_p, "--k", str(K),
                             "--memory-budget-mb", str(BUDGET_MB), "--out", f"{out}/nightrec-f32-ids.npy"],
            dict(env, NIGHTREC_TOPK_FIRST_PASS="fp32"))
threads_env = {v: str(THREADS) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
sgemm = float(subprocess.run([sys.executable, __file__, "--sgemm"], check=True, capture_output=True, text=True,
                             env=dict(os.environ, **threads_env)).stdout)
ratios = sorted(f["wall"] / n["wall"] for n, f in runs)
n, f = sorted(runs, key=lambda nf: nf[1]["wall"] / nf[0]["wall"])[len(runs) // 2]

a, b = np.load(f"{out}/nightrec-ids.npy"), np.load(f"{out}/faiss-ids.npy")
users, items = np.load(users_p, mmap_mode="r"), np.load(items_p)
same_set = np.array([len(np.intersect1d(a[i], b[i], assume_unique=True)) for i in range(USERS)])
overlap = same_set.mean() / K
differ = np.nonzero(same_set < K)[0]
# Where the sets differ, items only FAISS returned must score (in float64)
# no better than nightrec's K-th item, up to float32 rounding: ties, not
# misses.
worst_gap = 0.0
for i in differ[:10_000]:
    u = users[i].astype(np.float64)
    kth = float((items[a[i]].astype(np.float64) @ u).min())
    only_b = np.setdiff1d(b[i], a[i])
    if len(only_b):
        worst_gap = max(worst_gap, float((items[only_b].astype(np.float64) @ u).max()) - kth)
exact_rank = float(np.mean(np.all(a == b, axis=1)))
result = {
    "users": USERS, "items": ITEMS, "dim": DIM, "k": K, "threads": THREADS, "budget_mb": BUDGET_MB,
    "nightrec": {"wall_s": n["wall"], "cpu_s": n["user"] + n["sys"], "peak_rss_mb": n["max_rss_kb"] / 1024,
                 "users_per_s": USERS / n["wall"]},
    "faiss": {"wall_s": f["wall"], "cpu_s": f["user"] + f["sys"], "peak_rss_mb": f["max_rss_kb"] / 1024,
              "users_per_s": USERS / f["wall"]},
    "throughput_ratio_nightrec_over_faiss": f["wall"] / n["wall"],
    "ratio_median_of_runs": ratios[len(ratios) // 2],
    "ratios_all_runs": [round(x, 3) for x in ratios],
    "gflops_nightrec": 2.0 * USERS * ITEMS * DIM / n["wall"] / 1e9,
    "gflops_faiss": 2.0 * USERS * ITEMS * DIM / f["wall"] / 1e9,
    "sgemm_peak_gflops": sgemm,
    "nightrec_f32_path": {"wall_s": f32["wall"], "cpu_s": f32["user"] + f32["sys"],
                          "peak_rss_mb": f32["max_rss_kb"] / 1024,
                          "gflops": 2.0 * USERS * ITEMS * DIM / f32["wall"] / 1e9,
                          "identical_to_bf16_path": bool(np.array_equal(np.load(f"{out}/nightrec-f32-ids.npy"),
                                                                        np.load(f"{out}/nightrec-ids.npy")))},
    "mean_overlap": overlap,
    "users_with_identical_set": float(np.mean(same_set == K)),
    "users_with_identical_order": exact_rank,
    "largest_score_gap_where_sets_differ": worst_gap,
}
json.dump(result, open(f"{out}/result.json", "w"), indent=1)
print(json.dumps(result, indent=1))
