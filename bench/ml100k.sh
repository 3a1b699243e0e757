#!/usr/bin/env bash
# MovieLens-100k, the whole nightly job (clean → publish) with several item
# representations and schedules, each with every seed of SEEDS (default
# 42 43 44):
#   default     text projection + bounded delta, then the refit on every step
#   text-delta  the same without the refit (the best validation epoch is published)
#   fusion      free ID embedding + text projection (the default before issue 12), no refit
#   id-only     no text, no refit
#   finetune-only  the default without masked-item pretraining
# or NAME:VAR=VALUE,VAR=VALUE for any other setting (VAR without the
# NIGHTREC_MODEL__ prefix, e.g. "delta2:TEXT_DELTA_MAX_NORM=2"). Prints test NDCG@10 / HR@10 / MRR@10 (chronological
# leave-one-out, full ranking, history masked) as mean ± standard deviation
# over the seeds, beside the popularity and item-kNN baselines of the same
# runs, and wall and CPU time.
# usage: bench/ml100k.sh   (make bench-ml100k builds and sets up first)
#        SEEDS="42" VARIANTS="pretrain+finetune" bench/ml100k.sh
set -euo pipefail
cd "$(dirname "$0")/.."
INPUT="$(scripts/setup-ml100k.sh)"
PY="$(scripts/setup-python.sh)"
OUT="${OUT:-bench-out/ml100k}"
SEEDS="${SEEDS:-42 43 44}"
CONFIG="${CONFIG:-jobs/ml100k.toml}"
VARIANTS="${VARIANTS:-id-only fusion text-delta default}"
# REPORT_ONLY=1: only the table, from the outputs of an earlier run.
[ "${REPORT_ONLY:-0}" = 1 ] || { rm -rf "$OUT" && mkdir -p "$OUT"; }
for variant in $VARIANTS; do
  case "$variant" in
    default) extra=() ;;
    text-delta) extra=(NIGHTREC_MODEL__REFIT_EPOCHS=0) ;;
    fusion) extra=(NIGHTREC_MODEL__TEXT_DELTA_MAX_NORM=0 NIGHTREC_MODEL__REFIT_EPOCHS=0) ;;
    id-only) extra=(NIGHTREC_MODEL__TEXT_FUSION=false NIGHTREC_MODEL__REFIT_EPOCHS=0) ;;
    finetune-only) extra=(NIGHTREC_MODEL__PRETRAIN_EPOCHS=0) ;;
    *:*) IFS=, read -ra kv <<< "${variant#*:}"; extra=("${kv[@]/#/NIGHTREC_MODEL__}"); variant="${variant%%:*}" ;;
    *) echo "unknown variant $variant" >&2; exit 2 ;;
  esac
  for seed in $SEEDS; do
    [ "${REPORT_ONLY:-0}" = 1 ] && continue
    name="$variant-seed$seed"
    echo "ml100k: $name ..." >&2
    env "${extra[@]}" NIGHTREC_RUN__SEED="$seed" \
      /usr/bin/time -f '{"wall": %e, "user": %U, "sys": %S, "max_rss_kb": %M}' -o "$OUT/$name.time.json" \
      bin/nightrec --config "$CONFIG" --input "$INPUT" --output "$OUT/$name" --log-format json \
      run --date 1998-04-22 --full-retrain > "$OUT/$name.log" 2>&1
  done
done
"$PY" - "$OUT" "$VARIANTS" "$SEEDS" <<'PYEOF'
import json, statistics, sys
import pyarrow.parquet as pq
out, variants, seeds = sys.argv[1], [v.split(":")[0] for v in sys.argv[2].split()], sys.argv[3].split()
def spread(v):
    return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"
print(f"MovieLens-100k, seeds {', '.join(seeds)}: mean ± standard deviation over the seeds")
print("| variant | NDCG@10 | HR@10 | MRR@10 | popularity NDCG@10 | item-kNN NDCG@10 | epochs (pre+fine+refit) | s/epoch | wall s | CPU s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for variant in variants:
    rows = []
    for seed in seeds:
        name = f"{variant}-seed{seed}"
        ev = pq.read_table(f"{out}/{name}/evaluation/dt=1998-04-22").to_pylist()
        m = {(r["model"], r["metric"]): r["value"] for r in ev if r["segment"] == "all"}
        t = json.load(open(f"{out}/{name}.time.json"))
        epochs = [json.loads(l) for l in open(f"{out}/{name}.log") if l.startswith("{")]
        # JSON log lines are flat (message and fields at the top level).
        epochs = [e.get("fields", e) for e in epochs]
        epochs = [e for e in epochs if "epoch" in e.get("message", "")]
        pre = [e for e in epochs if "pretraining" in e["message"]]
        fine = [e for e in epochs if "fine-tuning" in e["message"]]
        refit = [e for e in epochs if "refit" in e["message"] and not e.get("held_out_test")]
        rows.append((m, t, len(pre), len(fine), sum(e["seconds"] for e in fine) / max(len(fine), 1), len(refit)))
    col = lambda f: spread([f(r) for r in rows])  # noqa: E731
    print(f"| {variant} | {col(lambda r: r[0][('nightrec', 'ndcg')])} | {col(lambda r: r[0][('nightrec', 'hr')])} | "
          f"{col(lambda r: r[0][('nightrec', 'mrr')])} | {col(lambda r: r[0][('popularity', 'ndcg')])} | "
          f"{col(lambda r: r[0][('item_knn', 'ndcg')])} | {'/'.join(f'{r[2]}+{r[3]}+{r[5]}' for r in rows)} | "
          f"{statistics.mean(r[4] for r in rows):.2f} | {statistics.mean(r[1]['wall'] for r in rows):.0f} | "
          f"{statistics.mean(r[1]['user'] + r[1]['sys'] for r in rows):.0f} |")
PYEOF
