#!/usr/bin/env bash
# Repeat-purchase mode (`--repeat-purchases`) on generated grocery logs
# (bench/grocery_gen.py), each SHAPE with each data seed of SEEDS (default
# 1 2 3): the whole nightly job, then next-basket Recall@10 / NDCG@10 of
# the user's held-out last basket (full catalog, history not masked) for
# nightrec's published blend, the sequence model alone, personal top
# frequency, TIFU-KNN and popularity, from the run's `evaluation` table, as
# mean ± standard deviation over the seeds.
#   repeat-heavy   ~10 personal staples a user, 2 items tried a basket, 35% follow-ups
#   explore-heavy  ~4 staples, 4 items tried a basket, 60% follow-ups
# usage: bench/repeat.sh   (make bench-repeat builds and sets up first)
#        SEEDS="1" SHAPES="repeat-heavy" bench/repeat.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(scripts/setup-python.sh)"
OUT="${OUT:-bench-out/repeat}"
SEEDS="${SEEDS:-1 2 3}"
SHAPES="${SHAPES:-repeat-heavy explore-heavy}"
[ "${REPORT_ONLY:-0}" = 1 ] || { rm -rf "$OUT" && mkdir -p "$OUT"; }
for shape in $SHAPES; do
  case "$shape" in
    repeat-heavy) gen=() ;;
    explore-heavy) gen=(--staples 1 --tried 4 --follow 0.6) ;;
    *) echo "unknown shape $shape" >&2; exit 2 ;;
  esac
  for seed in $SEEDS; do
    [ "${REPORT_ONLY:-0}" = 1 ] && continue
    name="$shape-seed$seed"
    echo "repeat: $name ..." >&2
    "$PY" bench/grocery_gen.py "$OUT/$name.input" --seed "$seed" "${gen[@]}" >&2
    /usr/bin/time -f '{"wall": %e, "user": %U, "sys": %S, "max_rss_kb": %M}' -o "$OUT/$name.time.json" \
      bin/nightrec --config bench/grocery.toml --input "$OUT/$name.input" --output "$OUT/$name" --log-format json \
      run --date 2026-11-21 --full-retrain --repeat-purchases > "$OUT/$name.log" 2>&1
    rm -rf "$OUT/$name.input"
  done
done
"$PY" - "$OUT" "$SHAPES" "$SEEDS" <<'PYEOF'
import sys
sys.path.insert(0, "bench")
from run_stats import run_stats, spread
out, shapes, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
models = ["nightrec", "sequence_model", "personal_top_frequency", "tifu_knn", "popularity"]
print(f"Next basket, generated grocery logs (3,000 users, 3,000 items), data seeds {', '.join(seeds)}: "
      "mean ± standard deviation over the seeds")
for shape in shapes:
    rows = [run_stats(out, f"{shape}-seed{seed}", "2026-11-21", segment="next basket") for seed in seeds]
    users = sorted({r["users"][("nightrec", "recall")] for r in rows})
    print(f"\n{shape} ({'/'.join(map(str, users))} users with a held-out basket; "
          f"wall {sum(r['wall'] for r in rows) / len(rows):.0f} s a run)\n")
    print("| model | Recall@10 | NDCG@10 | HR@10 |")
    print("|---|---|---|---|")
    for m in models:
        col = lambda metric: spread([r["metrics"][(m, metric)] for r in rows])  # noqa: E731
        print(f"| {m} | {col('recall')} | {col('ndcg')} | {col('hr')} |")
PYEOF
