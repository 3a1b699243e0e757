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
. bench/variant.sh
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
    *) variant_env "$variant" || exit 2; variant="$VARIANT_NAME"; extra=("${VARIANT_ENV[@]}") ;;
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
import statistics, sys
sys.path.insert(0, "bench")
from run_stats import run_stats, spread
out, variants, seeds = sys.argv[1], [v.split(":")[0] for v in sys.argv[2].split()], sys.argv[3].split()
print(f"MovieLens-100k, seeds {', '.join(seeds)}: mean ± standard deviation over the seeds")
print("| variant | NDCG@10 | HR@10 | MRR@10 | popularity NDCG@10 | item-kNN NDCG@10 | epochs (pre+fine+refit) | s/epoch | wall s | CPU s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for variant in variants:
    rows = [run_stats(out, f"{variant}-seed{seed}", "1998-04-22") for seed in seeds]
    col = lambda model, metric: spread([r["metrics"][(model, metric)] for r in rows])  # noqa: E731
    print(f"| {variant} | {col('nightrec', 'ndcg')} | {col('nightrec', 'hr')} | {col('nightrec', 'mrr')} | "
          f"{col('popularity', 'ndcg')} | {col('item_knn', 'ndcg')} | {'/'.join(r['epochs'] for r in rows)} | "
          f"{statistics.mean(r['s_per_epoch'] for r in rows):.2f} | {statistics.mean(r['wall'] for r in rows):.0f} | "
          f"{statistics.mean(r['cpu'] for r in rows):.0f} |")
PYEOF
