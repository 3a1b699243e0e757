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
  case "$variant" in
    default) extra=() ;;
    *:*) IFS=, read -ra kv <<< "${variant#*:}"; extra=("${kv[@]/#/NIGHTREC_MODEL__}"); variant="${variant%%:*}" ;;
    *) echo "unknown variant $variant" >&2; exit 2 ;;
  esac
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
import json, statistics, sys
import pyarrow.parquet as pq
out, variants, seeds, date = sys.argv[1], [v.split(":")[0] for v in sys.argv[2].split()], sys.argv[3].split(), sys.argv[4]
def spread(v):
    return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"
print("| variant | NDCG@10 | HR@10 | popularity NDCG@10 | item-kNN NDCG@10 | loss | epochs (pre+fine+refit) | s/epoch | wall s | CPU s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for variant in variants:
    rows = []
    for seed in seeds:
        name = f"{variant}-seed{seed}"
        ev = pq.read_table(f"{out}/{name}/evaluation/dt={date}").to_pylist()
        m = {(r["model"], r["metric"]): r["value"] for r in ev if r["segment"] == "all"}
        t = json.load(open(f"{out}/{name}.time.json"))
        log = [json.loads(l) for l in open(f"{out}/{name}.log") if l.startswith("{")]
        log = [e.get("fields", e) for e in log]
        pre = [e for e in log if "pretraining epoch" in e.get("message", "")]
        fine = [e for e in log if "fine-tuning epoch" in e.get("message", "")]
        refit = [e for e in log if "refit epoch" in e.get("message", "") and not e.get("held_out_test")]
        loss = next((l.split("loss", 1)[1].strip(" :") for l in open(f"{out}/{name}.log")
                     if not l.startswith("{") and "softmax" in l), "?")
        rows.append((m, t, f"{len(pre)}+{len(fine)}+{len(refit)}", statistics.mean(e["seconds"] for e in fine) if fine else 0, loss))
    col = lambda f: spread([f(r) for r in rows])  # noqa: E731
    print(f"| {variant} | {col(lambda r: r[0][('nightrec', 'ndcg')])} | {col(lambda r: r[0][('nightrec', 'hr')])} | "
          f"{col(lambda r: r[0][('popularity', 'ndcg')])} | {col(lambda r: r[0][('item_knn', 'ndcg')])} | {rows[0][4]} | "
          f"{'/'.join(r[2] for r in rows)} | {statistics.mean(r[3] for r in rows):.1f} | "
          f"{statistics.mean(r[1]['wall'] for r in rows):.0f} | {statistics.mean(r[1]['user'] + r[1]['sys'] for r in rows):.0f} |")
PYEOF
