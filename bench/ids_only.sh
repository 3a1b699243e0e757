#!/usr/bin/env bash
# An ids-only product catalogue, sparse like public review data: a
# generated shop (`nightrec gen`, default 20,000 users, 20,000 items,
# 300,000 events over 30 days) whose catalogue keeps only item_id, in_stock,
# created_at and price (no title, category, brand or description, so every
# item's text embedding is zero). The whole nightly job runs with the
# default configuration and with the variants of VARIANTS (NAME or
# NAME:VAR=VALUE,... with NIGHTREC_MODEL__ left off), each with every seed of
# SEEDS. Prints test NDCG@10 / HR@10 (chronological leave-one-out, full
# ranking, history masked) beside popularity and item-kNN, epochs and times.
# usage: bench/ids_only.sh   (after make build)
#        USERS=40000 ITEMS=55000 EVENTS=500000 VARIANTS="default full:LOSS=full" bench/ids_only.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/variant.sh
PY="$(scripts/setup-python.sh)"
OUT="${OUT:-bench-out/ids-only}"
USERS="${USERS:-20000}" ITEMS="${ITEMS:-20000}" EVENTS="${EVENTS:-300000}"
SEEDS="${SEEDS:-42}"
VARIANTS="${VARIANTS:-default}"
DATE=2026-11-21
INPUT="$OUT/input-$USERS-$ITEMS-$EVENTS"
if [ ! -d "$INPUT/items" ]; then
  rm -rf "$INPUT"
  bin/nightrec gen --out "$INPUT.tmp" --users "$USERS" --items "$ITEMS" --events "$EVENTS" --end-date "$DATE" >&2
  "$PY" - "$INPUT.tmp/items" <<'PYEOF'
import json, pathlib, sys
for f in pathlib.Path(sys.argv[1]).glob("*.jsonl"):
    rows = [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    keep = ("item_id", "in_stock", "created_at", "price")
    f.write_text("".join(json.dumps({k: r[k] for k in keep if k in r}) + "\n" for r in rows))
PYEOF
  mv "$INPUT.tmp" "$INPUT"
fi
for variant in $VARIANTS; do
  variant_env "$variant" || exit 2
  variant="$VARIANT_NAME"; extra=("${VARIANT_ENV[@]}")
  for seed in $SEEDS; do
    name="$variant-seed$seed"
    echo "ids-only: $name ..." >&2
    rm -rf "${OUT:?}/$name"
    env "${extra[@]}" NIGHTREC_RUN__SEED="$seed" \
      /usr/bin/time -f '{"wall": %e, "user": %U, "sys": %S, "max_rss_kb": %M}' -o "$OUT/$name.time.json" \
      bin/nightrec --input "$INPUT" --output "$OUT/$name" --log-format json \
      run --date "$DATE" --full-retrain > "$OUT/$name.log" 2>&1
  done
done
"$PY" - "$OUT" "$VARIANTS" "$SEEDS" "$DATE" <<'PYEOF'
import statistics, sys
sys.path.insert(0, "bench")
from run_stats import run_stats, spread
out, variants, seeds, date = sys.argv[1], [v.split(":")[0] for v in sys.argv[2].split()], sys.argv[3].split(), sys.argv[4]
print("| variant | NDCG@10 | HR@10 | popularity NDCG@10 | item-kNN NDCG@10 | loss | epochs (pre+fine+refit) | s/epoch | wall s | CPU s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for variant in variants:
    rows = [run_stats(out, f"{variant}-seed{seed}", date) for seed in seeds]
    col = lambda model, metric: spread([r["metrics"][(model, metric)] for r in rows])  # noqa: E731
    print(f"| {variant} | {col('nightrec', 'ndcg')} | {col('nightrec', 'hr')} | {col('popularity', 'ndcg')} | "
          f"{col('item_knn', 'ndcg')} | {rows[0]['loss']} | {'/'.join(r['epochs'] for r in rows)} | "
          f"{statistics.mean(r['s_per_epoch'] for r in rows):.1f} | {statistics.mean(r['wall'] for r in rows):.0f} | "
          f"{statistics.mean(r['cpu'] for r in rows):.0f} |")
PYEOF
