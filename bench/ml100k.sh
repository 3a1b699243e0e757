#!/usr/bin/env bash
# MovieLens-100k, the whole nightly job (clean → publish) three ways:
# masked-item pretraining + fine-tuning with text fusion (the default), fine-
# tuning alone, and without text fusion. Prints test NDCG@10 / HR@10 / MRR@10
# (chronological leave-one-out, full ranking, history masked) beside the
# popularity and item-kNN baselines of the same run, and wall and CPU time.
# usage: bench/ml100k.sh   (make bench-ml100k builds and sets up first)
set -euo pipefail
cd "$(dirname "$0")/.."
INPUT="$(scripts/setup-ml100k.sh)"
PY="$(scripts/setup-python.sh)"
OUT="${OUT:-bench-out/ml100k}"
rm -rf "$OUT" && mkdir -p "$OUT"
run() {
  local name=$1; shift
  echo "ml100k: $name ..." >&2
  env "$@" /usr/bin/time -f '{"wall": %e, "user": %U, "sys": %S, "max_rss_kb": %M}' -o "$OUT/$name.time.json" \
    bin/nightrec --config jobs/ml100k.toml --input "$INPUT" --output "$OUT/$name" --log-format json \
    run --date 1998-04-22 --full-retrain > "$OUT/$name.log" 2>&1
}
run pretrain+finetune
run finetune-only NIGHTREC_MODEL__PRETRAIN_EPOCHS=0
run no-text-fusion NIGHTREC_MODEL__TEXT_FUSION=false
"$PY" - "$OUT" <<'PYEOF'
import json, sys, glob
import pyarrow.parquet as pq
out = sys.argv[1]
print("| variant | NDCG@10 | HR@10 | MRR@10 | popularity NDCG@10 | item-kNN NDCG@10 | epochs (pre+fine) | s/epoch | wall s | CPU s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name in ("pretrain+finetune", "finetune-only", "no-text-fusion"):
    ev = pq.read_table(f"{out}/{name}/evaluation/dt=1998-04-22").to_pylist()
    m = {(r["model"], r["metric"]): r["value"] for r in ev if r["segment"] == "all"}
    t = json.load(open(f"{out}/{name}.time.json"))
    epochs = [json.loads(l) for l in open(f"{out}/{name}.log") if l.startswith("{")]
    epochs = [e["fields"] for e in epochs if "epoch" in e.get("fields", {}).get("message", "")]
    pre = [e for e in epochs if "pretraining" in e["message"]]
    fine = [e for e in epochs if "fine-tuning" in e["message"]]
    spe = sum(e["seconds"] for e in fine) / max(len(fine), 1)
    print(f"| {name} | {m[('nightrec','ndcg')]:.4f} | {m[('nightrec','hr')]:.4f} | {m[('nightrec','mrr')]:.4f} | "
          f"{m[('popularity','ndcg')]:.4f} | {m[('item_knn','ndcg')]:.4f} | {len(pre)}+{len(fine)} | {spe:.2f} | "
          f"{t['wall']:.0f} | {t['user'] + t['sys']:.0f} |")
PYEOF
